# Helpers for the node controller's end-to-end suites (50-59): test nodes
# (a Node object, a kubelet stand-in and an agent each, all sharing one RWX
# backing store), virt-launcher stand-ins, a "guest" that talks to the VM's
# vTPM the way QEMU's external TPM backend does, and the checks that nothing
# outlives its launcher. Source it after lib.sh and setup_namespace:
#   . "$(dirname "$0")/lib.sh"; setup_namespace; . "$(dirname "$0")/lib-node.sh"
# (it sources lib-agent.sh itself).
#
#   node_testbed_up          the backing store, the test-bed provisioner and a
#                            StorageClass ($NODE_CLASS) served by it
#   node_up N [YAML]         a test node N (a, b, ...): Node object $(node_name N),
#                            kubelet stand-in, agent "agent-N" (extra YAML lines
#                            appended to the `node:` section of its config)
#                            NODE_CONFIG_TOP (if set): extra top-level YAML lines
#                            for every node's config written after it is set,
#                            e.g. a `keys:` section
#   node_name N              the Node object's name
#   node_dir N               its directory: kubelet/ sockets/ run/ config.yaml
#   node_agent_start N / node_agent_stop N / node_agent_kill N (SIGKILL) / node_agent_log N
#   node_kubelet_start N / node_kubelet_stop N
#   vm_create NAME TPM [ANN] a VM (TPM/ANN as vm_yaml), wait for its TPMState;
#                            records its uid for the leftover checks
#   vm_uid NAME
#   tpmstate_field VM JSONPATH   one field of the VM's TPMState
#   vm_store_dir VM          its state directory on the backing store
#   wait_reason SECS VM REASON   until .status.nodeState.reason is REASON
#   launcher_start N POD VM  a virt-launcher pod on node N and its process (its own
#                            mount namespace, listening on <sockets>/<pod-uid>.sock);
#                            prints the pod uid
#   launcher_pid POD / launcher_ctrl POD   the process; swtpm's control socket
#                            as the host reaches it (/proc/<pid>/root/...)
#   launcher_stop POD        the launcher goes: process killed, pod deleted (as
#                            the kubelet would report a finished pod)
#   swtpm_running POD        0 when swtpm answers on the launcher's control socket
#   swtpm_pids VM            pids of swtpm processes working for VM (by its uid)
#   swtpm_count_is VM N DESC   TAP: exactly N of them
#   guest_start POD          QEMU's side: tpm-guest-bridge on the launcher's
#                            control socket; the guest's TCTI is then $GUEST_TCTI
#   guest_stop               the bridge goes (QEMU exits)
#   guest_tpm CMD...         run a tpm2-tools/clevis command as the guest
#   node_no_leftovers        TAP (3 tests): no swtpm for any VM of this test, no
#                            mount under this test's directories, no attachment pod
#   node_teardown            (at exit) kill everything started here, unmount what
#                            the stand-ins and agents mounted, remove the directories

NODE_TOP=$(mktemp -d /tmp/vtpm-e2e-node.XXXXXX)
chmod 755 "$NODE_TOP"
export AGENT_DIR=$NODE_TOP/agents
. "$(dirname "${BASH_SOURCE[0]}")/lib-agent.sh"
KUBELET_BIN=${KUBELET_BIN:-$E2E_TOP/build/tools/kubelet-standin}
LAUNCHER_BIN=${LAUNCHER_BIN:-$E2E_TOP/build/tools/launcher-standin}
BRIDGE_BIN=${BRIDGE_BIN:-$E2E_TOP/build/tools/tpm-guest-bridge}
for _b in "$KUBELET_BIN" "$LAUNCHER_BIN" "$BRIDGE_BIN"; do
  [ -x "$_b" ] || bail_out "$_b missing: run 'make tools'"
done
for _b in swtpm swtpm_setup socat tpm2_startup clevis unshare; do
  command -v "$_b" >/dev/null || bail_out "$_b missing: run hack/install-deps.sh"
done
# Unique per test run: Node objects are cluster-scoped.
NODE_PREFIX=${NODE_PREFIX:-$(printf '%s' "$NS" | cut -c1-40)}
NODE_CLASS=$NODE_PREFIX-rwx
NODE_STORE=$NODE_TOP/store
GUEST_TCTI=

declare -A _node_cfg_extra=()
# Everything this file starts is tracked in files under $NODE_TOP/pids (not
# shell variables: helpers often run in a subshell, e.g. under `ok`), and
# stopped by pid, never by name.
mkdir -p "$NODE_TOP/pids" "$NODE_TOP/vms" "$NODE_TOP/launchers"
_track() { echo "$2" > "$NODE_TOP/pids/$1"; }
_tracked() { cat "$NODE_TOP/pids/$1" 2>/dev/null; }
_untrack() { rm -f "$NODE_TOP/pids/$1"; }
# Gone: no such process, or a zombie (children of a subshell are not reaped here).
_proc_gone() { [ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }
# _stop NAME [SIG] [SECS]: signal a tracked process, wait until gone, KILL if not.
_stop() {
  local name=$1 sig=${2:-TERM} secs=${3:-20} pid
  pid=$(_tracked "$name")
  [ -n "$pid" ] || return 0
  kill -"$sig" "$pid" 2>/dev/null
  wait_until "$secs" _proc_gone "$pid" || { diag "$name ($pid) ignored SIG$sig; killing it"; kill -KILL "$pid" 2>/dev/null; wait_until 5 _proc_gone "$pid"; }
  wait "$pid" 2>/dev/null
  _untrack "$name"
  return 0
}

node_name() { echo "$NODE_PREFIX-$1"; }
node_dir() { echo "$NODE_TOP/n-$1"; }
node_agent_log() { agent_log "agent-$1"; }

node_testbed_up() {
  mkdir -p "$NODE_STORE"
  "$PROVISIONER_BIN" --kubeconfig "$KUBECONFIG" --root "$NODE_STORE" >> "$AGENT_DIR/provisioner.log" 2>&1 &
  _provisioner_pid=$!
  testbed_class "$NODE_CLASS"
}

_node_config() {
  local n=$1 d; d=$(node_dir "$n")
  {
    echo "namespace: $NS"
    echo "nodeName: $(node_name "$n")"
    echo "state:"
    echo "  leaseName: $AGENT_LEASE"
    echo "  storageClass: $NODE_CLASS"
    echo "node:"
    echo "  kubeletRoot: $d/kubelet"
    echo "  socketDir: $d/sockets"
    echo "  runDir: $d/run"
    [ -z "${_node_cfg_extra[$n]:-}" ] || printf '%s\n' "${_node_cfg_extra[$n]}" | sed 's/^/  /'
    echo 'http: {listen: ""}'
    [ -z "${NODE_CONFIG_TOP:-}" ] || printf '%s\n' "$NODE_CONFIG_TOP"
  } > "$d/config.yaml"
}

_node_running_log() { grep -q 'node controller running' "$1"; }

node_agent_start() {
  local n=$1 id="agent-$1" log pid
  log=$(agent_log "$id")
  echo "=== start $(date -u +%FT%TZ)" >> "$log"
  env -u NODE_NAME "$AGENT_BIN" --kubeconfig "$AGENT_KUBECONFIG" --config "$(node_dir "$n")/config.yaml" \
    --identity "$id" >> "$log" 2>&1 &
  pid=$!
  _track "$id" "$pid"
  # Count starts: a restarted agent appends to the same log.
  local want; want=$(grep -c '^=== start' "$log")
  _started() { [ "$(grep -c 'node controller running' "$1")" -ge "$2" ]; }
  if ! wait_until 60 _started "$log" "$want"; then
    diag "agent $id did not start within 60 s; its log:" "$(tail -20 "$log")"
    return 1
  fi
}

node_agent_kill() {
  [ -n "$(_tracked "agent-$1")" ] || { diag "agent-$1 is not running"; return 1; }
  _stop "agent-$1" KILL 10
  echo "=== killed (SIGKILL)" >> "$(node_agent_log "$1")"
}
node_agent_stop() { _stop "agent-$1" TERM 30; }

node_kubelet_start() {
  local n=$1
  "$KUBELET_BIN" --kubeconfig "$KUBECONFIG" --node "$(node_name "$n")" --root "$(node_dir "$n")/kubelet" \
    >> "$AGENT_DIR/kubelet-$n.log" 2>&1 &
  _track "kubelet-$n" $!
}

node_kubelet_stop() {
  _stop "kubelet-$1" TERM 10
}

# node_up N [YAML] [nokubelet]
node_up() {
  local n=$1 d; d=$(node_dir "$n")
  _node_cfg_extra[$n]=${2:-}
  mkdir -p "$d/kubelet" "$d/sockets" "$d/run"
  kubectl apply -f - >/dev/null <<YAML || return 1
apiVersion: v1
kind: Node
metadata:
  name: $(node_name "$n")
  labels: {vtpm-agent.io/e2e: "$NS"}
YAML
  _node_config "$n"
  [ "${3:-}" = nokubelet ] || node_kubelet_start "$n"
  node_agent_start "$n"
}

vm_uid() { k get vm "$1" -o jsonpath='{.metadata.uid}'; }
# VMs made by vm_create, and their uids (kept after the VM is deleted).
_vms() { ls "$NODE_TOP/vms" 2>/dev/null; }
_uid_of() { cat "$NODE_TOP/vms/$1" 2>/dev/null || vm_uid "$1"; }
tpmstate_field() { k get tpmstate "$1" -o jsonpath="{$2}" 2>/dev/null; }
_tpmstate_exists() { k get tpmstate "$1" >/dev/null 2>&1; }
_tpmstate_phase_is() { [ "$(tpmstate_field "$1" .status.phase)" = "$2" ]; }

# vm_create NAME TPM [ANNOTATIONS] [WANT_PHASE]
vm_create() {
  local name=$1
  vm_yaml "$name" "$2" "${3:-}" | k apply -f - >/dev/null || return 1
  # A file, not a variable: vm_create often runs in a subshell (ok ...).
  mkdir -p "$NODE_TOP/vms"
  vm_uid "$name" > "$NODE_TOP/vms/$name"
  if [ -n "${4:-}" ]; then
    wait_until 120 _tpmstate_phase_is "$name" "$4" ||
      { echo "TPMState $name: $(tpmstate_field "$name" .status)"; k get pvc -o wide; return 1; }
  else
    wait_until 120 _tpmstate_exists "$name"
  fi
}

# The VM's state directory on the shared backing store (its PV's hostPath).
vm_store_dir() {
  local pvc pv
  pvc=$(tpmstate_field "$1" .status.pvcName)
  pv=$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}' 2>/dev/null)
  [ -n "$pv" ] || return 1
  local d
  d=$(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
  # Never an empty answer: callers write into it.
  [ -n "$d" ] && [ -d "$d" ] || { echo "vm_store_dir $1: PV $pv has no hostPath directory" >&2; echo /nonexistent; return 1; }
  echo "$d"
}

_reason_is() { [ "$(tpmstate_field "$1" .status.nodeState.reason)" = "$2" ]; }
# wait_reason SECS VM REASON: the node state of VM's TPMState says REASON.
wait_reason() { wait_until "$1" _reason_is "$2" "$3"; }

launcher_pid() { _tracked "launcher-$1"; }
_launcher_vm() { cat "$NODE_TOP/launchers/$1" 2>/dev/null; }

# The control socket swtpm listens on inside the launcher, as the host reaches it.
# swtpm's control socket (node.swtpmSocketDir, default /run/vtpm, inside the
# launcher) as the host reaches it.
launcher_ctrl() {
  echo "/proc/$(launcher_pid "$1")/root/run/vtpm/$(_uid_of "$(_launcher_vm "$1")").sock"
}

launcher_start() {
  local n=$1 pod=$2 vm=$3 uid out
  k apply -f - >/dev/null <<YAML || return 1
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: "$vm"}
spec:
  nodeName: $(node_name "$n")
  automountServiceAccountToken: false
  tolerations: [{operator: Exists}]
  containers: [{name: compute, image: virt-launcher:standin}]
YAML
  uid=$(k get pod "$pod" -o jsonpath='{.metadata.uid}')
  # A pod's own mount namespace, with tmpfs where libvirt keeps swtpm's state
  # directory and sockets (the container's filesystem, not the host's).
  out=$AGENT_DIR/launcher-$pod.out
  setsid "$LAUNCHER_BIN" --socket "$(node_dir "$n")/sockets/$uid.sock" \
    --tmpfs /var/lib/libvirt --tmpfs /run/vtpm </dev/null > "$out" 2>&1 &
  _track "launcher-$pod" $!
  echo "$vm" > "$NODE_TOP/launchers/$pod"
  wait_until 10 grep -q '^ready' "$out" || { diag "launcher $pod did not start:" "$(cat "$out")"; return 1; }
  # A running launcher, as the kubelet would report it.
  k patch pod "$pod" --subresource status --type merge -p '{"status":{"phase":"Running"}}' >/dev/null
  echo "$uid"
}

launcher_kill() {
  _stop "launcher-$1" TERM 10
}

launcher_stop() {
  launcher_kill "$1"
  k delete pod "$1" --grace-period=0 --force --ignore-not-found >/dev/null 2>&1
}

# 0 when swtpm answers on POD's control socket (CMD_GET_CAPABILITY).
swtpm_running() {
  local c; c=$(launcher_ctrl "$1")
  [ -S "$c" ] && swtpm_ioctl --unix "$c" -c >/dev/null 2>&1
}

# swtpm (and swtpm_setup) processes whose command line names VM's uid.
swtpm_pids() {
  local u p
  u=$(_uid_of "$1")
  [ -n "$u" ] || return 0
  for p in $(pgrep -x 'swtpm|swtpm_setup' 2>/dev/null); do
    grep -qF "$u" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
  done
  return 0
}

# TAP: exactly N swtpm processes for VM (shown on failure).
swtpm_count_is() {
  local vm=$1 n=$2 desc=$3 pids
  pids=$(swtpm_pids "$vm")
  if [ "$(printf '%s' "$pids" | grep -c .)" -eq "$n" ]; then pass "$desc"
  else fail "$desc" "want $n, got:" "$(for p in $pids; do ps -o pid,ppid,lstart,args -p "$p" | tail -n +2; done)"; fi
}

_guest_ready() { grep -q '^ready' "$1"; }

guest_start() {
  local pod=$1 out=$AGENT_DIR/guest-$1.out
  GUEST_SOCK=$NODE_TOP/guest-$pod.sock
  "$BRIDGE_BIN" --ctrl "$(launcher_ctrl "$pod")" --listen "$GUEST_SOCK" > "$out" 2>&1 &
  _track guest $!
  GUEST_TCTI="cmd:socat - UNIX-CONNECT:$GUEST_SOCK"
  wait_until 10 _guest_ready "$out" || { diag "guest bridge for $pod did not start:" "$(cat "$out")"; return 1; }
}

guest_stop() {
  _stop guest TERM 5
}

guest_tpm() { TPM2TOOLS_TCTI=$GUEST_TCTI "$@"; }

_our_mounts() { awk '{print $5}' /proc/self/mountinfo | grep "^$NODE_TOP/" || true; }
_no_attach_pods() { [ -z "$(k get pods -l vtpm-agent.io/attachment-for -o name 2>/dev/null)" ]; }
_no_swtpm() {
  local vm
  for vm in $(_vms); do [ -z "$(swtpm_pids "$vm")" ] || return 1; done
}

# Acceptance 5: call once every launcher of the test has gone.
node_no_leftovers() {
  if wait_until 30 _no_swtpm; then pass "no swtpm outlives its launcher ($(_vms | wc -l) VMs)"
  else
    local vm ps=()
    for vm in $(_vms); do ps+=($(swtpm_pids "$vm")); done
    fail "no swtpm outlives its launcher" "$(ps -o pid,args -p "$(IFS=,; echo "${ps[*]}")" 2>&1)"
  fi
  local m
  _no_mounts() { [ -z "$(_our_mounts)" ]; }
  if wait_until 30 _no_mounts; then pass "no mount outlives its launcher (host mountinfo under $NODE_TOP)"
  else fail "no mount outlives its launcher (host mountinfo under $NODE_TOP)" "$(_our_mounts)"; fi
  if wait_until 30 _no_attach_pods; then pass "no attachment pod outlives its launcher"
  else fail "no attachment pod outlives its launcher" "$(k get pods -l vtpm-agent.io/attachment-for 2>&1)"; fi
}

node_teardown() {
  local p n vm
  guest_stop
  for p in $(ls "$NODE_TOP/launchers"); do
    launcher_kill "$p"
    kubectl -n "$NS" delete pod "$p" --grace-period=0 --force --ignore-not-found >/dev/null 2>&1
  done
  # Give the agents a moment to stop their swtpm cleanly, then make sure.
  wait_until 15 _no_swtpm
  for p in $(ls "$NODE_TOP/pids"); do [[ $p != agent-* ]] || _stop "$p" TERM 30; done
  for vm in $(_vms); do
    for p in $(swtpm_pids "$vm"); do kill -KILL "$p" 2>/dev/null; done
  done
  kubectl -n "$NS" delete pods -l vtpm-agent.io/attachment-for --grace-period=0 --force >/dev/null 2>&1
  for p in $(ls "$NODE_TOP/pids"); do _stop "$p" TERM 10; done
  provisioner_stop
  kubectl delete node -l "vtpm-agent.io/e2e=$NS" --wait=false >/dev/null 2>&1
  # Deepest first.
  _our_mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ -z "${VTPM_KEEP_NS:-}" ] && [ -z "$(_our_mounts)" ]; then
    rm -rf --one-file-system -- "$NODE_TOP"
  else
    diag "kept $NODE_TOP"
  fi
}
at_exit node_teardown
