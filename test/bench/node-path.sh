#!/usr/bin/env bash
# Node path for `make bench` (issue 8): swtpm through the agent, timed from
# the moment the launcher pod exists (kubectl create returned; its process listening right after,
# as virt-launcher would) until the agent's vtpm_agent_swtpm_starts_total
# counts it, which it does once swtpm answered on its control channel
# (polled every 10 ms).
#   cold   a VM's first launcher: attachment pod, bind mount, swtpm_setup, start
#   warm   the same VM's next launcher on existing state
#   storm  N launchers created at once on one node (node.maxConcurrentStarts
#          from the configuration: default 4)
# One agent (state + node controller) for node "bench-node-<id>", the
# kubelet stand-in for the attachment pods; the testbed provisioner must be
# running (hack/run-bench.sh starts it). Prints one JSON object on stdout.
#
# Usage: node-path.sh WORKDIR SYS_NAMESPACE STORAGECLASS [STORM_N] [RUNS]
#        node-path.sh --cleanup WORKDIR
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
B=$top/build

cleanup() { # WORKDIR: stop what we started, in order, by recorded pid
  local w=$1 p
  [ -d "$w" ] || return 0
  for p in $(cat "$w/launcher.pids" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(cat "$w/daemon.pids" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  # swtpm the agent started (its records): stop them cleanly if still there.
  for f in "$w"/run/launchers/*.json; do
    [ -f "$f" ] || continue
    p=$(jq -r .swtpmPid "$f")
    [ "$p" -gt 0 ] 2>/dev/null && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/bin/swtpm ] && kill -TERM "$p" 2>/dev/null || true
  done
  # Mounts the agent or the kubelet stand-in left under the work dir.
  awk -v w="$w" '$5 ~ "^" w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -f "$w/launcher.pids" "$w/daemon.pids"
}
if [ "${1:-}" = --cleanup ]; then cleanup "$2"; exit 0; fi

W=$1 SYS_NS=$2 CLS=$3 STORM=${4:-20} RUNS=${5:-3}
id=${BENCH_ID:-$$}
NODE=bench-node-$id NS=bench-$id-node
mkdir -p "$W/kubelet" "$W/sockets" "$W/run"
# swtpm_setup runs as the swtpm user (tss) on a bind mount under run/: every
# directory above it must be traversable (mktemp -d makes 0700).
chmod o+x "$W" "$(dirname "$W")"
trap 'cleanup "$W"' EXIT
say() { echo "node-path: $*" >&2; }
now_ns() { date +%s%N; }

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$W/agent.yaml" <<EOF
namespace: $SYS_NS
nodeName: $NODE
state:
  leaseName: bench-$id-node
  storageClass: $CLS
node:
  kubeletRoot: $W/kubelet
  socketDir: $W/sockets
  runDir: $W/run
http: {listen: "127.0.0.1:$port"}
log: {format: json, level: info}
EOF
max_starts=$(awk '/maxConcurrentStarts/ {print $2}' "$W/agent.yaml"); max_starts=${max_starts:-4}

kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata: {name: $NODE}
EOF
"$B/tools/kubelet-standin" --kubeconfig "$KUBECONFIG" --node "$NODE" --root "$W/kubelet" >"$W/kubelet.log" 2>&1 &
echo $! >> "$W/daemon.pids"
cp "$B/vtpm-agent" "$W/vtpm-agent"
"$W/vtpm-agent" --kubeconfig "$KUBECONFIG" --config "$W/agent.yaml" --identity "bench-node-$id" >"$W/agent.log" 2>&1 &
echo $! >> "$W/daemon.pids"
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break; sleep 0.1
done
# The state controller reconciles every VM it finds first: let that finish.
for _ in $(seq 600); do
  curl -s "http://127.0.0.1:$port/metrics" | grep -q '^vtpm_agent_workqueue_depth{controller="state"} 0$' && break
  sleep 0.5
done

# VMs: cold/warm runs use vm-c-1..RUNS, the storm vm-s-1..STORM; all wait for Ready first.
vms=()
for i in $(seq "$RUNS"); do vms+=("vm-c-$i"); done
for i in $(seq "$STORM"); do vms+=("vm-s-$i"); done
for v in "${vms[@]}"; do
  printf -- '---\napiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: %s}\nspec: {runStrategy: Always, template: {spec: {domain: {devices: {tpm: {persistent: true}}}}}}\n' "$v"
done > "$W/vms.yaml"
kubectl -n "$NS" create -f "$W/vms.yaml" >/dev/null
say "waiting for ${#vms[@]} TPMStates to be Ready (PVCs bound)"
for _ in $(seq 600); do
  n=$(kubectl -n "$NS" get tpmstate -o json | jq '[.items[] | select(.status.phase == "Ready")] | length')
  [ "$n" -ge "${#vms[@]}" ] && break
  sleep 1
done
[ "$n" -ge "${#vms[@]}" ] || { say "only $n of ${#vms[@]} TPMStates Ready after 600 s"; exit 1; }
declare -A vmuid
while read -r name uid; do vmuid[$name]=$uid; done < <(kubectl -n "$NS" get vm -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}')

declare -A lpid
# launch VM POD...: create the launcher pods (one request), then their processes.
launch() {
  local vm pod
  : > "$W/pods.yaml"
  for pod in "$@"; do
    vm=${pod%-l*}
    printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: %s}\nspec:\n  nodeName: %s\n  automountServiceAccountToken: false\n  containers: [{name: compute, image: virt-launcher:standin}]\n' "$pod" "$vm" "$NODE" >> "$W/pods.yaml"
  done
  local out name uid
  out=$(kubectl -n "$NS" create -f "$W/pods.yaml" -o json |
    jq -r 'if .items then .items[] else . end | "\(.metadata.name) \(.metadata.uid)"')
  # The clock starts once the pods exist (what the agent can see), not before
  # kubectl's own start-up (a few hundred ms on a loaded machine).
  t0=$(now_ns)
  while read -r name uid; do
    setsid "$B/tools/launcher-standin" --socket "$W/sockets/$uid.sock" --tmpfs /var/lib/libvirt \
      --tmpfs /var/run/vtpm </dev/null >/dev/null 2>&1 &
    lpid[$name]=$!
    echo $! >> "$W/launcher.pids"
  done <<<"$out"
}
# The agent counts a start only once swtpm answered on its control channel
# (CMD_GET_CAPABILITY through the launcher's namespace): poll that counter.
starts() { curl -s --max-time 2 "http://127.0.0.1:$port/metrics" | awk '$1 == "vtpm_agent_swtpm_starts_total" {print $2 + 0; f = 1} END {if (!f) print 0}'; }
# wait_starts N: seconds (from $t0) until N more swtpm than $s0 answer
wait_starts() {
  local want=$(( s0 + $1 )) deadline=$(( $(date +%s) + 120 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ "$(starts)" -ge "$want" ] && { echo "$t0 $(now_ns)" | awk '{printf "%.3f", ($2 - $1) / 1e9}'; return 0; }
    sleep 0.01
  done
  say "only $(( $(starts) - s0 )) of $1 swtpm answering after 120 s"; return 1
}
stop_launcher() { # POD: the VM stops: process and pod go; wait until its swtpm is gone
  local pod=$1 vm=${1%-l*}
  kill -TERM "${lpid[$pod]}" 2>/dev/null || true
  kubectl -n "$NS" delete pod "$pod" --wait=false >/dev/null
  for _ in $(seq 300); do
    pgrep -f "swtpm socket.*${vmuid[$vm]}" >/dev/null || return 0
    sleep 0.1
  done
  say "swtpm of $vm still running 30 s after its launcher went"
}
stats() { sort -g | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2;
    printf "{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f,\"runs\":%d}", m, v[1], v[NR], NR}'; }

cold=() warm=()
for i in $(seq "$RUNS"); do
  s0=$(starts); t0=$(now_ns); launch "vm-c-$i-l1"; cold+=("$(wait_starts 1)")
  say "cold start vm-c-$i: ${cold[-1]} s"
  stop_launcher "vm-c-$i-l1"
  s0=$(starts); t0=$(now_ns); launch "vm-c-$i-l2"; warm+=("$(wait_starts 1)")
  say "warm start vm-c-$i: ${warm[-1]} s"
  stop_launcher "vm-c-$i-l2"
done

pods=()
for i in $(seq "$STORM"); do pods+=("vm-s-$i-l1"); done
s0=$(starts); t0=$(now_ns); launch "${pods[@]}"; storm=$(wait_starts "$STORM")
say "storm of $STORM: $storm s"
m=$(curl -s "http://127.0.0.1:$port/metrics")
hist_mean() { # NAME -> sum/count
  awk -v n="$1" '$1 == n "_sum" {s = $2} $1 == n "_count" {c = $2} END {if (c > 0) printf "%.3f", s / c; else print "null"}' <<<"$m"
}
stoppers=()
for p in "${pods[@]}"; do stop_launcher "$p" & stoppers+=($!); done
wait "${stoppers[@]}"  # not a bare `wait`: the agent and kubelet stand-in are our children too
printf '{"cold_s":%s,"warm_s":%s,"storm_s":%s,"storm_n":%d,"max_concurrent_starts":%d,"provision_s":%s,"swtpm_start_s":%s,"provisions":%s,"starts":%s}\n' \
  "$(printf '%s\n' "${cold[@]}" | stats)" "$(printf '%s\n' "${warm[@]}" | stats)" "$storm" "$STORM" "$max_starts" \
  "$(hist_mean vtpm_agent_swtpm_provision_seconds)" "$(hist_mean vtpm_agent_swtpm_start_seconds)" \
  "$(awk '$1 == "vtpm_agent_swtpm_provisions_total" {print $2}' <<<"$m")" \
  "$(awk '$1 == "vtpm_agent_swtpm_starts_total" {print $2}' <<<"$m")"
