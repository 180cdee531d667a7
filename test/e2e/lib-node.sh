# Helpers for the node controller's end-to-end suites (50-59), on the test
# bed's real nodes (hack/nodes-up.sh: containerd and kubelet per node, the
# launcher image). A suite's test nodes (a, b, ...) are roles played by real
# nodes: a is node-1, every other letter node-2; one role per real node at a
# time (node_down frees it). Each role runs this test's agent (the ASan/UBSan
# build, as a host process inside its node's mount namespace, where the
# kubelet's mounts are, exactly as the DaemonSet's pod sees them) for this
# test's namespace only. Launchers are real pods of the launcher image;
# attachment pods are published by the real kubelet; state volumes are `local`
# PVs over one backing store. Source it after lib.sh and setup_namespace:
#   . "$(dirname "$0")/lib.sh"; setup_namespace; . "$(dirname "$0")/lib-node.sh"
# (it sources lib-agent.sh and lib-realnode.sh itself). Without real nodes
# (VTPM_NODES=0) the suite is skipped.
#
#   node_testbed_up          the backing store, the test-bed provisioner (local
#                            PVs) and a StorageClass ($NODE_CLASS) served by it
#   node_up N [YAML]         role N on its real node: agent "agent-N" (extra YAML
#                            lines appended to the `node:` section of its config)
#                            NODE_CONFIG_TOP (if set): extra top-level YAML lines
#                            for every role's config written after it is set,
#                            e.g. a `keys:` section
#   node_down N              stop role N's agent: its real node is free again
#   node_reconfigure N YAML  restart role N's agent with other `node:` YAML
#   node_name N              the real node's name (node-1, node-2)
#   node_dir N               the role's directory: config.yaml, run/
#   node_host_dir N          the real node's directory (kubelet/, sockets/, ...)
#   node_agent_start N / node_agent_stop N / node_agent_kill N (SIGKILL) / node_agent_log N
#                            (roles in NODE_NETNS_ROLES run in their node's network
#                            namespace too, reaching the API server at the Service address)
#   node_agent_wrap N [PROG] role N's agent is started as PROG AGENT ARGS (inside the node's
#                            mount namespace; PROG must exec its arguments, so the tracked
#                            pid stays the agent's); no PROG: started directly again
#   vm_create NAME TPM [ANN] a VM (TPM/ANN as vm_yaml), wait for its TPMState;
#                            records its uid for the leftover checks
#   vm_uid NAME
#   tpmstate_field VM JSONPATH   one field of the VM's TPMState
#   vm_store_dir VM          its state directory on the backing store
#   wait_reason SECS VM REASON   until .status.nodeState.reason is REASON
#   launcher_start N POD VM  a launcher pod on N's node; waits until it listens
#                            on launcher-sock in its emptyDir; prints the pod uid
#   launcher_pid POD / launcher_ctrl POD   its container's process; swtpm's
#                            control socket as the host reaches it (/proc/<pid>/root/...)
#   launcher_stop POD        the pod is deleted; waits until it is gone
#   swtpm_running POD        0 when swtpm answers on the launcher's control socket
#   swtpm_pids VM            pids of swtpm processes working for VM (by its uid)
#   swtpm_count_is VM N DESC   TAP: exactly N of them
#   guest_start POD          QEMU's side: tpm-guest-bridge on the launcher's
#                            control socket; the guest's TCTI is then $GUEST_TCTI
#   guest_stop               the bridge goes (QEMU exits)
#   guest_tpm CMD...         run a tpm2-tools/clevis command as the guest
#   node_no_leftovers        TAP (3 tests): no swtpm for any VM of this test, no
#                            mount of the backing store on any node, no attachment pod
#   node_teardown            (at exit) delete this test's pods and PVs, stop its
#                            agents, remove the directories

[[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 2 ] ||
  skip_all "needs the test bed's real nodes (VTPM_NODES=2, as make test brings them up)"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
rn_images_ready || skip_all "the nodes have no launcher image (VTPM_NODES_AGENT_IMAGE=1)"

NODE_TOP=$(mktemp -d /tmp/vtpm-e2e-node.XXXXXX)
chmod 755 "$NODE_TOP"
export AGENT_DIR=$NODE_TOP/agents
. "$(dirname "${BASH_SOURCE[0]}")/lib-agent.sh"
BRIDGE_BIN=${BRIDGE_BIN:-$E2E_TOP/build/tools/tpm-guest-bridge}
[ -x "$BRIDGE_BIN" ] || bail_out "$BRIDGE_BIN missing: run 'make tools'"
for _b in swtpm_ioctl socat tpm2_startup clevis nsenter; do
  command -v "$_b" >/dev/null || bail_out "$_b missing: run hack/install-deps.sh"
done
NODE_CLASS=$(printf '%s' "$NS" | cut -c1-50)-local
NODE_STORE=$NODE_TOP/store
GUEST_TCTI=

declare -A _node_cfg_extra=()
declare -A _node_wrap=()
node_agent_wrap() { _node_wrap[$1]=${2:-}; }
# Everything this file starts is tracked in files under $NODE_TOP/pids (not
# shell variables: helpers often run in a subshell, e.g. under `ok`), and
# stopped by pid, never by name. $NODE_TOP/roles/<real node> names the role
# playing it.
mkdir -p "$NODE_TOP/pids" "$NODE_TOP/vms" "$NODE_TOP/launchers" "$NODE_TOP/roles"
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

# The real node playing role N.
_node_real() { case $1 in a) echo 1 ;; *) echo 2 ;; esac; }
node_name() { nl_name "$(_node_real "$1")"; }
node_dir() { echo "$NODE_TOP/n-$1"; }
node_host_dir() { nl_dir "$(_node_real "$1")"; }
node_agent_log() { agent_log "agent-$1"; }

node_testbed_up() {
  mkdir -p "$NODE_STORE"
  "$PROVISIONER_BIN" --kubeconfig "$KUBECONFIG" --root "$NODE_STORE" --local >> "$AGENT_DIR/provisioner.log" 2>&1 &
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
    echo "  runDir: $d/run"
    [ -z "${_node_cfg_extra[$n]:-}" ] || printf '%s\n' "${_node_cfg_extra[$n]}" | sed 's/^/  /'
    echo 'http: {listen: ""}'
    [ -z "${NODE_CONFIG_TOP:-}" ] || printf '%s\n' "$NODE_CONFIG_TOP"
  } > "$d/config.yaml"
}

# The agent's kubeconfig with the API server at the `kubernetes` Service's
# address, as a pod on a node reaches it (NODE_NETNS_ROLES).
_node_service_kubeconfig() {
  local kc=$NODE_TOP/agent-service.kubeconfig
  [ -s "$kc" ] || sed -E "s|server: \"[^\"]*\"|server: \"https://$TB_SERVICE_IP:443\"|" "$AGENT_KUBECONFIG" > "$kc"
  echo "$kc"
}

node_agent_start() {
  local n=$1 id="agent-$1" log pid holder ns=(-m) kc=$AGENT_KUBECONFIG
  log=$(agent_log "$id")
  holder=$(nl_holder "$(_node_real "$n")") || { diag "$(node_name "$n") has no namespace holder: are the nodes up?"; return 1; }
  echo "=== start $(date -u +%FT%TZ)" >> "$log"
  # In the node's mount namespace, and its PID namespace if it has one (that
  # mount namespace's /proc is the node's: the agent reads its launchers' pids
  # there); the host's network, so the API server is where AGENT_KUBECONFIG says.
  # Roles named in NODE_NETNS_ROLES (e.g. "a") run in the node's network
  # namespace too, reaching the API server as the DaemonSet's pod does (the
  # Service address, DNATed in the node): a partition of the node cuts them off.
  if [[ " ${NODE_NETNS_ROLES:-} " == *" $n "* ]]; then
    ns=(-m -n)
    kc=$(_node_service_kubeconfig)
  fi
  local pidns=; ! nl_has_pidns "$holder" || { pidns=1; ns+=(-p); }
  local wrap=(); [ -z "${_node_wrap[$n]:-}" ] || wrap=("${_node_wrap[$n]}")
  _node_agent_leftovers "$n" "before its start"
  env -u NODE_NAME nsenter -t "$holder" "${ns[@]}" -- "${wrap[@]}" "$AGENT_BIN" --kubeconfig "$kc" \
    --config "$(node_dir "$n")/config.yaml" --identity "$id" >> "$log" 2>&1 &
  pid=$!
  # Into a PID namespace nsenter forks: the agent is its child (nsenter execs it otherwise).
  if [ -n "$pidns" ]; then
    pid=$(nl_nsenter_child "$pid") || { diag "nsenter made no agent in $(node_name "$n")"; return 1; }
  fi
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
# _node_agent_leftovers N WHEN: agent processes running with role N's configuration: an
# agent that outlived its stop (or a fork of one) would go on acting on the
# node's launchers beside the next one (suite 57 (d) once saw a second
# agent's swtpm); said with what they are, then killed.
_node_agent_leftovers() {
  local n=$1 what=$2 pids p
  pids=$(ps -C vtpm-agent -o pid=,args= | grep -F -- "--config $(node_dir "$n")/config.yaml" | awk '{ print $1 }')
  [ -n "$pids" ] || return 0
  diag "agent-$n: $what, still running with its configuration (killed now):" \
    "$(ps -o pid,ppid,stat,lstart,args -p "$(echo $pids | tr ' ' ,)" 2>&1 | cut -c1-300)"
  kill -KILL $pids 2>/dev/null
  for p in $pids; do wait_until 5 _proc_gone "$p"; done
}
node_agent_stop() { _stop "agent-$1" TERM 30; _node_agent_leftovers "$1" "after its stop"; }

# node_up N [YAML]
node_up() {
  local n=$1 d real other; d=$(node_dir "$n") real=$(_node_real "$n")
  other=$(cat "$NODE_TOP/roles/$real" 2>/dev/null)
  if [ -n "$other" ] && [ "$other" != "$n" ]; then
    diag "node_up $n: $(nl_name "$real") is already role $other (node_down $other first)"
    return 1
  fi
  echo "$n" > "$NODE_TOP/roles/$real"
  _node_cfg_extra[$n]=${2:-}
  mkdir -p "$d/run"
  _node_config "$n"
  node_agent_start "$n"
}

node_down() {
  node_agent_stop "$1"
  rm -f "$NODE_TOP/roles/$(_node_real "$1")"
}

# node_reconfigure N YAML: role N's agent again, with other `node:` lines.
node_reconfigure() {
  node_agent_stop "$1"
  _node_cfg_extra[$1]=$2
  _node_config "$1"
  node_agent_start "$1"
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

# The VM's state directory on the shared backing store (its `local` PV's path).
vm_store_dir() {
  local pvc pv
  pvc=$(tpmstate_field "$1" .status.pvcName)
  pv=$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}' 2>/dev/null)
  [ -n "$pv" ] || return 1
  local d
  d=$(kubectl get pv "$pv" -o jsonpath='{.spec.local.path}')
  # Never an empty answer: callers write into it.
  [ -n "$d" ] && [ -d "$d" ] || { echo "vm_store_dir $1: PV $pv has no local directory" >&2; echo /nonexistent; return 1; }
  echo "$d"
}

_reason_is() { [ "$(tpmstate_field "$1" .status.nodeState.reason)" = "$2" ]; }
# wait_reason SECS VM REASON: the node state of VM's TPMState says REASON.
wait_reason() { wait_until "$1" _reason_is "$2" "$3"; }

_launcher_vm() { cat "$NODE_TOP/launchers/$1" 2>/dev/null; }
# The launcher container's process (the kubelet's, through its node's containerd).
launcher_pid() { rn_container_pid "$NS" "$1"; }

# swtpm's control socket (node.swtpmSocketDir, default /run/vtpm, inside the
# launcher) as the host reaches it.
launcher_ctrl() {
  echo "/proc/$(launcher_pid "$1")/root/run/vtpm/$(_uid_of "$(_launcher_vm "$1")").sock"
}

launcher_start() {
  local n=$1 pod=$2 vm=$3
  echo "$vm" > "$NODE_TOP/launchers/$pod"
  rn_launcher_start "$NS" "$pod" "$vm" "$(node_name "$n")" || return 1
  k get pod "$pod" -o jsonpath='{.metadata.uid}'
}

launcher_stop() {
  rn_launcher_stop "$NS" "$1"
}

# 0 when swtpm answers on POD's control socket (CMD_GET_CAPABILITY).
swtpm_running() {
  local c; c=$(launcher_ctrl "$1")
  [ -S "$c" ] && swtpm_ioctl --unix "$c" -c >/dev/null 2>&1
}

# swtpm (and swtpm_setup) processes whose command line names VM's uid.
swtpm_pids() { rn_swtpm_pid "$(_uid_of "$1")" 'swtpm|swtpm_setup'; }

# TAP: exactly N swtpm processes for VM (shown on failure).
swtpm_count_is() {
  local vm=$1 n=$2 desc=$3 pids
  pids=$(swtpm_pids "$vm")
  if [ "$(printf '%s' "$pids" | grep -c .)" -eq "$n" ]; then pass "$desc"
  else fail "$desc" "want $n, got (and their parents):" "$(for p in $pids; do ps -o pid,ppid,lstart,args -p "$p" | tail -n +2
    ps -o pid,ppid,lstart,args -p "$(ps -o ppid= -p "$p" | tr -d ' ')" | tail -n +2 | cut -c1-300; done)"; fi
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

# Mounts of the backing store (mountinfo's root field: the bind's source
# directory) in any real node's mount namespace or on the host.
_our_mounts() {
  local n h
  for n in $(nl_nodes_present); do
    h=$(nl_holder "$n" 2>/dev/null) || continue
    awk -v p="$NODE_STORE/" -v node="$(nl_name "$n")" 'index($4, p) == 1 { print node ": " $5 " (" $4 ")" }' "/proc/$h/mountinfo"
  done
  awk -v p="$NODE_TOP/" 'index($5, p) == 1 { print "host: " $5 }' /proc/self/mountinfo
  return 0
}
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
  _no_mounts() { [ -z "$(_our_mounts)" ]; }
  if wait_until 60 _no_mounts; then pass "no mount of the state volumes outlives its launcher (every node's mountinfo)"
  else fail "no mount of the state volumes outlives its launcher (every node's mountinfo)" "$(_our_mounts)"; fi
  if wait_until 60 _no_attach_pods; then pass "no attachment pod outlives its launcher"
  else fail "no attachment pod outlives its launcher" "$(k get pods -l vtpm-agent.io/attachment-for 2>&1)"; fi
}

node_teardown() {
  local p vm
  guest_stop
  # The kubelets stop the launchers (and the swtpm in their cgroups).
  k delete pods -l kubevirt.io=virt-launcher --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
  # Give the agents a moment to stop their swtpm cleanly, then make sure.
  wait_until 15 _no_swtpm
  for p in $(ls "$NODE_TOP/pids"); do [[ $p != agent-* ]] || _stop "$p" TERM 30; done
  for vm in $(_vms); do
    for p in $(swtpm_pids "$vm"); do kill -KILL "$p" 2>/dev/null; done
  done
  k delete pods -l vtpm-agent.io/attachment-for --grace-period=0 --force >/dev/null 2>&1
  for p in $(ls "$NODE_TOP/pids"); do _stop "$p" TERM 10; done
  provisioner_stop
  # The provisioner is gone: its PVs go here (their claims go with the namespace).
  kubectl get pv -o json | jq -r --arg p "$NODE_STORE/" '.items[] | select((.spec.local.path // "") | startswith($p)) | .metadata.name' |
    xargs -r kubectl delete pv --wait=false >/dev/null 2>&1
  if [ -z "${VTPM_KEEP_NS:-}" ]; then
    rm -rf --one-file-system -- "$NODE_TOP"
  else
    diag "kept $NODE_TOP"
  fi
}
at_exit node_teardown
