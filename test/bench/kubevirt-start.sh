#!/usr/bin/env bash
# The agent's added latency on a real KubeVirt VM start (issue 21,
# acceptance 6), for `make bench` (phase kubevirt): one VM of the TPM guest
# (hack/build-tpm-guest.sh) with `tpm: {persistent: true}` on node-1, started
# and stopped RUNS times with KubeVirt alone (its own swtpm through libvirt),
# then, the agent installed as shipped with its Plugin, RUNS times more: the
# same VM, the same run. Each start is timed from the moment the launcher
# pod exists (its ADDED event on a watch opened before `virtctl start`) to
#   qemu_s   QEMU's process start (/proc/<pid>/stat), where virt-handler
#            waited for the agent's PreVMStart answer before it;
#   tpm_s    the guest's TPM answering its first command from user space
#            (the guest's init runs tpm2_getcap after boot: the line
#            "TPM-GUEST: tpm2 present" in the console log, kubectl logs
#            --timestamps). Its kernel's probe a little earlier, the same in
#            both modes.
# Each mode's first start is not counted: KubeVirt's makes the state, the
# agent's takes it over and encrypts it (both cold). Prints one JSON object;
# without real KubeVirt on the test bed {"skipped": "<why>"} and exit 77.
#
# Usage: kubevirt-start.sh WORKDIR [RUNS]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
W=$1 RUNS=${2:-3}
. "$top/hack/testbed-lib.sh"
. "$top/hack/nodes-lib.sh"
. "$top/test/e2e/lib-realnode.sh"
export PATH=$K8S_BIN:$PATH
export KUBECONFIG=${KUBECONFIG:-$TB_KUBECONFIG}
say() { echo "kubevirt-start: $*" >&2; }
skipped() { jq -n -c --arg why "$1" '{skipped: $why}'; exit 77; }
kubectl get crd plugins.plugin.kubevirt.io >/dev/null 2>&1 || skipped "no KubeVirt with its Plugin CRD on the test bed"
rn_images_ready || skipped "the nodes have no agent or guest image (VTPM_NODES_AGENT_IMAGE=1)"
[ -n "${TPM_GUEST_IMAGE:-}" ] && [ -n "${KUBEVIRT_BIN:-}" ] || skipped "no TPM guest image or virtctl (hack/nodes-up.sh)"
mkdir -p "$W"
_exits=()
at_exit() { _exits+=("$*"); }
trap 'for ((i = ${#_exits[@]} - 1; i >= 0; i--)); do eval "${_exits[i]}" || true; done' EXIT
NS=bench-kv-$(date +%s)
kubectl create namespace "$NS" >/dev/null
at_exit "kubectl delete namespace $NS --wait=false >/dev/null 2>&1"
k() { kubectl -n "$NS" "$@"; }
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) vm=lat
rn_kubevirt_state_storage "$W/store" "$NS-rwx"
at_exit "k delete vm --all --wait=true --timeout=120s >/dev/null 2>&1; rn_agent_undeploy"
rn_guest_vm "$NS" "$vm" "$n1" "console=ttyS0 quiet tpmguest.stay=1"

epoch_of_rfc3339() { date -d "$1" +%s.%N; }
# start_once MODE N: one start and stop; appends a JSON line to $W/starts.jsonl.
start_once() {
  local mode=$1 n=$2 ev=$W/watch.$1.$2 t0 pod qpid qstart ttpm line chardev
  : > "$ev"
  # The watch first: its first event (--watch-only: the launcher pod's
  # ADDED; -o name prints no event type) is the clock's start.
  k get pods -l "kubevirt.io=virt-launcher,vm.kubevirt.io/name=$vm" --watch-only -o name 2>/dev/null |
    while read -r name; do echo "$(date +%s.%N) $name"; done > "$ev" &
  local watcher=$!
  sleep 1
  virtctl start "$vm" >/dev/null || { say "$mode $n: virtctl start failed"; kill $watcher 2>/dev/null; return 1; }
  rn_wait 60 test -s "$ev" || { say "$mode $n: no launcher pod"; kill $watcher 2>/dev/null; return 1; }
  t0=$(awk '{ print $1; exit }' "$ev")
  pod=$(awk '{ sub("^pod/", "", $2); print $2; exit }' "$ev")
  kill $watcher 2>/dev/null || true
  # Into a file: a `kubectl logs` that fails once must not end the run.
  local seen=$W/tpm-line.$mode.$n
  _guest_tpm() { k logs "$pod" -c guest-console-log --timestamps 2>/dev/null | grep -m1 'TPM-GUEST: tpm2 present' > "$seen"; }
  rn_wait 300 _guest_tpm || { say "$mode $n: the guest never saw its TPM"; return 1; }
  line=$(cat "$seen")
  ttpm=$(epoch_of_rfc3339 "${line%% *}") || { say "$mode $n: no timestamp in: $line"; return 1; }
  qpid=
  for p in $(pgrep -f qemu-system || true); do
    if tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "guest=${NS}_$vm,"; then qpid=$p; break; fi
  done
  [ -n "$qpid" ] || { say "$mode $n: no QEMU"; return 1; }
  qstart=$(awk -v btime="$(awk '$1 == "btime" { print $2 }' /proc/stat)" -v hz="$(getconf CLK_TCK)" \
    '{ sub(/.*\) /, ""); split($0, f, " "); printf "%.3f\n", btime + f[20] / hz }' "/proc/$qpid/stat")
  chardev=$(tr '\0' ' ' < "/proc/$qpid/cmdline" | grep -o 'chardev socket,id=chrtpm,path=[^ ,]*' || true)
  jq -n -c --arg mode "$mode" --argjson n "$n" --argjson q "$(echo "$qstart - $t0" | bc)" \
    --argjson t "$(echo "$ttpm - $t0" | bc)" --arg chardev "$chardev" \
    '{mode: $mode, n: $n, qemu_s: $q, tpm_s: $t, tpm_chardev: $chardev}' | tee -a "$W/starts.jsonl" >&2
  virtctl stop "$vm" >/dev/null || { say "$mode $n: virtctl stop failed"; return 1; }
  rn_wait 180 rn_vmi_gone "$NS" "$vm" || { say "$mode $n: the VMI did not go"; return 1; }
  _no_launcher() { [ -z "$(k get pods -l "kubevirt.io=virt-launcher,vm.kubevirt.io/name=$vm" -o name 2>/dev/null)" ]; }
  rn_wait 120 _no_launcher || { say "$mode $n: the launcher pod did not go"; return 1; }
}

: > "$W/starts.jsonl"
say "KubeVirt alone: $((RUNS + 1)) starts of $NS/$vm on $n1"
for i in $(seq 0 "$RUNS"); do start_once kubevirt "$i" || exit 1; done
say "installing the agent (deploy/overlays/testbed) and its Plugin"
rn_agent_deploy || { say "the agent did not deploy"; exit 1; }
kubectl apply -k "$top/deploy/kubevirt-plugin" >/dev/null
at_exit "kubectl delete -k '$top/deploy/kubevirt-plugin' --ignore-not-found >/dev/null 2>&1"
say "with the agent: $((RUNS + 1)) starts (the first takes KubeVirt's state over)"
for i in $(seq 0 "$RUNS"); do start_once agent "$i" || exit 1; done

jq -s -c --argjson runs "$RUNS" '
  def p50: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
           else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def mode($m): [.[] | select(.mode == $m and .n > 0)];
  (mode("kubevirt")) as $kv | (mode("agent")) as $ag |
  {runs: $runs,
   kubevirt: {qemu_p50_s: ([$kv[].qemu_s] | p50), tpm_p50_s: ([$kv[].tpm_s] | p50), starts: $kv},
   agent: {qemu_p50_s: ([$ag[].qemu_s] | p50), tpm_p50_s: ([$ag[].tpm_s] | p50), starts: $ag},
   cold: [.[] | select(.n == 0)]}
  | .added_tpm_p50_ms = (if .agent.tpm_p50_s and .kubevirt.tpm_p50_s then ((.agent.tpm_p50_s - .kubevirt.tpm_p50_s) * 1000 | round) else null end)
  | .added_qemu_p50_ms = (if .agent.qemu_p50_s and .kubevirt.qemu_p50_s then ((.agent.qemu_p50_s - .kubevirt.qemu_p50_s) * 1000 | round) else null end)
' "$W/starts.jsonl"
