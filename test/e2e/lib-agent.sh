# Helpers for the end-to-end suites that run the agent itself (40-49 and
# later): start and stop agent processes, the test-bed RWX provisioner, and
# scratch StorageClasses; make VMs; check the agents' logs for sanitizer
# reports. Source it after lib.sh and setup_namespace:
#   . "$(dirname "$0")/lib.sh"; setup_namespace; . "$(dirname "$0")/lib-agent.sh"
#
# The agent is the ASan/UBSan build (`make asan`), so every e2e run is also a
# sanitizer run; agent_sanitizer_check (one TAP test) fails on any report.
#
# Helpers that start processes or remember objects must run in the test's own
# shell, not inside lib.sh's `ok` (a subshell): use `ok_here DESC CMD...`.
#
#   ok_here DESC CMD...      like ok, but CMD runs in this shell
#   agent_config NAME [STORAGECLASS]  write a config (namespace $NS, lease
#                            $AGENT_LEASE, no HTTP listener), print its path;
#                            extra YAML for the `state:` section on stdin if
#                            AGENT_STATE_EXTRA is set
#   agent_start ID CONFIG    start an agent with --identity ID; wait until it runs
#   agent_start_n N CONFIG [PREFIX]   N agents: PREFIX-1 .. PREFIX-N
#   agent_stop ID            SIGTERM, wait (KILL after 20 s); 0 if it exited 0
#   agent_kill ID            SIGKILL (no clean shutdown, no LSan report)
#   agent_stop_all           stop every agent still running (registered at exit)
#   agent_pid ID / agent_log ID
#   agent_leader             the Lease's holderIdentity ("" if none)
#   agent_sanitizer_check    TAP: no ASan/LSan/UBSan report in any agent log
#   provisioner_start / provisioner_stop   build/tools/testbed-provisioner
#   testbed_class NAME [ANNOTATION=VALUE...]  a StorageClass served by the
#                            provisioner; deleted at exit
#   vm_yaml NAME [TPM-YAML [ANNOTATIONS-YAML]]  a VM manifest (Halted)
#   events_for VM [REASON]   "type reason count" lines of the VM's events
#                            (count = series count or 1)
#
# Environment:
#   AGENT_KUBECONFIG  the kubeconfig the agent uses (default: the product's
#                     ServiceAccount in $NS with a TokenRequest token, made by
#                     hack/agent-identity.sh; set it to $KUBECONFIG for admin)
#   AGENT_BIN         default build/asan/vtpm-agent
#   AGENT_DIR         logs and configs (default $VTPM_RUN/e2e/<test>-<ns>)

AGENT_BIN=${AGENT_BIN:-$E2E_TOP/build/asan/vtpm-agent}
PROVISIONER_BIN=${PROVISIONER_BIN:-$E2E_TOP/build/tools/testbed-provisioner}
AGENT_DIR=${AGENT_DIR:-$VTPM_RUN/e2e/$(basename "$0" .t)-${NS:-nons}}
AGENT_LEASE=${AGENT_LEASE:-vtpm-e2e-${NS:-nons}}
TESTBED_PROVISIONER=vtpm-agent.io/testbed
mkdir -p "$AGENT_DIR"

# The agents run as the product's own ServiceAccount, with a TokenRequest
# token, under the real RBAC authorizer: manifests/rbac.yaml applied with this
# test's namespace as the agent's own namespace (its Lease, KEK Secrets and
# state locks live there). Anything the agent does beyond its RBAC fails here.
if [ -z "${AGENT_KUBECONFIG:-}" ]; then
  [ -n "${NS:-}" ] || bail_out "lib-agent.sh: call setup_namespace before sourcing it"
  AGENT_KUBECONFIG=$("$E2E_TOP/hack/agent-identity.sh" "$NS" "$AGENT_DIR/identity" "vtpm-agent-e2e-$NS") ||
    bail_out "cannot set up the agent's ServiceAccount identity in $NS"
  at_exit "kubectl delete clusterrolebinding vtpm-agent-e2e-$NS --ignore-not-found --wait=false >/dev/null"
fi

[ -x "$AGENT_BIN" ] || bail_out "$AGENT_BIN missing: run 'make asan'"
[ -x "$PROVISIONER_BIN" ] || bail_out "$PROVISIONER_BIN missing: run 'make tools'"
# A private copy: a rebuild during the test must not swap the binary under
# agents started later (or leave it half-written when they start).
cp "$AGENT_BIN" "$AGENT_DIR/vtpm-agent" && AGENT_BIN=$AGENT_DIR/vtpm-agent
"$AGENT_BIN" --version >/dev/null 2>&1 || bail_out "$AGENT_BIN does not run"

declare -A _agent_pid=()

ok_here() {
  local desc=$1; shift
  if "$@"; then pass "$desc"; else fail "$desc" "command: $*"; fi
}
_provisioner_pid=
_testbed_classes=()

# ASan: report leaks at exit, keep going on errors so the log has them all
# (UBSan is built with -fno-sanitize-recover: it aborts, which we see too).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

agent_config() {
  local name=$1 cls=${2:-} f="$AGENT_DIR/$1.yaml"
  {
    echo "namespace: $NS"
    echo "state:"
    echo "  leaseName: $AGENT_LEASE"
    [ -z "$cls" ] || echo "  storageClass: $cls"
    [ -z "${AGENT_STATE_EXTRA:-}" ] || printf '%s\n' "$AGENT_STATE_EXTRA"
    echo "node: {enabled: false}"
    echo 'http: {listen: ""}'
  } > "$f"
  echo "$f"
}

agent_pid() { echo "${_agent_pid[$1]:-}"; }
agent_log() { echo "$AGENT_DIR/$1.log"; }

_agent_launch() {
  local id=$1 cfg=$2 log
  log=$(agent_log "$id")
  # Append: a restarted agent keeps one log per identity.
  echo "=== start $(date -u +%FT%TZ)" >> "$log"
  env -u NODE_NAME "$AGENT_BIN" --kubeconfig "$AGENT_KUBECONFIG" --config "$cfg" --identity "$id" >> "$log" 2>&1 &
  _agent_pid[$id]=$!
}

# Running: its log says so since the last start, and it is alive.
# (awk reads it all: `tac | sed q` would kill tac with SIGPIPE, a failure under pipefail.)
_agent_up() { awk '/^=== start/ { up = 0 } /state controller running/ { up = 1 } END { exit !up }' "$(agent_log "$1")"; }

_agent_wait_up() {
  local id=$1 pid=${_agent_pid[$1]}
  if ! wait_until 60 _agent_up "$id"; then
    diag "agent $id did not start within 60 s; its log:" "$(tail -20 "$(agent_log "$id")")"
    return 1
  fi
  kill -0 "$pid" 2>/dev/null || { diag "agent $id exited:" "$(tail -20 "$(agent_log "$id")")"; return 1; }
}

agent_start() { _agent_launch "$1" "$2" && _agent_wait_up "$1"; }

# N agents started together (they race for the Lease as replicas would).
agent_start_n() {
  local n=$1 cfg=$2 prefix=${3:-agent} i rc=0
  for (( i=1; i<=n; i++ )); do _agent_launch "$prefix-$i" "$cfg"; done
  for (( i=1; i<=n; i++ )); do _agent_wait_up "$prefix-$i" || rc=1; done
  return $rc
}

_agent_exited() { ! kill -0 "$1" 2>/dev/null; }

_agent_reap() {
  local id=$1 pid=${_agent_pid[$1]} rc=0
  if ! wait_until 20 _agent_exited "$pid"; then
    diag "agent $id did not stop within 20 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || rc=$?
  unset "_agent_pid[$id]"
  echo "=== exit status $rc" >> "$(agent_log "$id")"
  return $rc
}

agent_stop() {
  [ -n "${_agent_pid[$1]:-}" ] || return 0
  kill -TERM "${_agent_pid[$1]}" 2>/dev/null
  _agent_reap "$1"
}

agent_kill() {
  local id=$1 pid
  pid=${_agent_pid[$id]:-}
  [ -n "$pid" ] || return 1
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  unset "_agent_pid[$id]"
  echo "=== killed (SIGKILL)" >> "$(agent_log "$id")"
}

# SIGTERM to all at once, then collect them; 1 if any exited non-zero.
agent_stop_all() {
  local id rc=0 r
  for id in "${!_agent_pid[@]}"; do kill -TERM "${_agent_pid[$id]}" 2>/dev/null; done
  for id in "${!_agent_pid[@]}"; do
    r=0; _agent_reap "$id" || r=$?
    [ "$r" -eq 0 ] || { diag "agent $id exited with status $r"; rc=1; }
  done
  return $rc
}

agent_leader() {
  kubectl -n "$NS" get lease "$AGENT_LEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null
}

# Any AddressSanitizer, LeakSanitizer or UBSan report in any agent log.
agent_sanitizer_check() {
  local hits
  hits=$(grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer' \
    "$AGENT_DIR"/*.log 2>/dev/null)
  if [ -z "$hits" ]; then
    pass "no sanitizer report in the agents' logs ($AGENT_DIR)"
  else
    local f d=()
    for f in $hits; do d+=("$f:" "$(grep -E -A30 'ERROR: |runtime error:' "$f" | head -60)"); done
    fail "no sanitizer report in the agents' logs ($AGENT_DIR)" "${d[@]}"
  fi
}

provisioner_start() {
  mkdir -p "$AGENT_DIR/volumes"
  "$PROVISIONER_BIN" --kubeconfig "$KUBECONFIG" --root "$AGENT_DIR/volumes" >> "$AGENT_DIR/provisioner.log" 2>&1 &
  _provisioner_pid=$!
}

provisioner_stop() {
  [ -n "$_provisioner_pid" ] || return 0
  kill -TERM "$_provisioner_pid" 2>/dev/null
  wait_until 10 _agent_exited "$_provisioner_pid" || kill -KILL "$_provisioner_pid" 2>/dev/null
  wait "$_provisioner_pid" 2>/dev/null
  _provisioner_pid=
}

testbed_class() {
  local name=$1 a ann=""; shift
  for a in "$@"; do ann+="    ${a%%=*}: \"${a#*=}\""$'\n'; done
  kubectl apply -f - >/dev/null <<YAML || return 1
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $name
  annotations:
$ann    vtpm-agent.io/e2e: "$NS"
provisioner: $TESTBED_PROVISIONER
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
  _testbed_classes+=("$name")
}

_testbed_cleanup() {
  local c
  for c in "${_testbed_classes[@]}"; do kubectl delete storageclass "$c" --ignore-not-found --wait=false >/dev/null 2>&1; done
}

# kubevirt_cr_set CLASS / kubevirt_cr_unset (run them with ok_here: they
# register the restore at exit): the KubeVirt CR's
# spec.configuration.vmStateStorageClass. On real KubeVirt its own CR
# (kubevirt/kubevirt: a second one is refused, and deleting it uninstalls
# KubeVirt), its value put back at exit; on the stand-in test bed
# (VTPM_KUBEVIRT=0) a CR of the suite's own in $NS, deleted to unset.
kubevirt_cr_is_real() { kubectl -n kubevirt get kubevirt kubevirt >/dev/null 2>&1; }
_kubevirt_cr_saved=
_kubevirt_cr_save() {
  [ -z "$_kubevirt_cr_saved" ] || return 0
  _kubevirt_cr_saved=1
  local old restore
  old=$(kubectl -n kubevirt get kubevirt kubevirt -o jsonpath='{.spec.configuration.vmStateStorageClass}')
  if [ -n "$old" ]; then restore="[{\"op\":\"add\",\"path\":\"/spec/configuration/vmStateStorageClass\",\"value\":\"$old\"}]"
  else restore='[{"op":"remove","path":"/spec/configuration/vmStateStorageClass"}]'; fi
  at_exit "kubectl -n kubevirt patch kubevirt kubevirt --type json -p '$restore' >/dev/null 2>&1"
}
kubevirt_cr_set() {
  if kubevirt_cr_is_real; then
    _kubevirt_cr_save
    kubectl -n kubevirt patch kubevirt kubevirt --type merge -p "{\"spec\":{\"configuration\":{\"vmStateStorageClass\":\"$1\"}}}" >/dev/null
  else
    kubectl -n "$NS" apply -f - <<<"{\"apiVersion\":\"kubevirt.io/v1\",\"kind\":\"KubeVirt\",\"metadata\":{\"name\":\"kubevirt\"},\"spec\":{\"configuration\":{\"vmStateStorageClass\":\"$1\"}}}" >/dev/null
  fi
}
kubevirt_cr_unset() {
  if kubevirt_cr_is_real; then
    _kubevirt_cr_save
    kubectl -n kubevirt patch kubevirt kubevirt --type json -p '[{"op":"remove","path":"/spec/configuration/vmStateStorageClass"}]' >/dev/null
  else
    kubectl -n "$NS" delete kubevirt kubevirt --wait=true >/dev/null
  fi
}

# vm_yaml NAME [TPM] [ANNOTATIONS]: TPM is a flow mapping such as
# "{persistent: true}" (empty: no tpm), ANNOTATIONS a flow mapping.
vm_yaml() {
  local name=$1 tpm=${2:-} ann=${3:-}
  echo "---"
  echo "apiVersion: kubevirt.io/v1"
  echo "kind: VirtualMachine"
  echo "metadata:"
  echo "  name: $name"
  echo "  namespace: $NS"
  [ -z "$ann" ] || echo "  annotations: $ann"
  echo "spec:"
  echo "  runStrategy: Halted"
  if [ -n "$tpm" ]; then
    echo "  template: {spec: {domain: {devices: {tpm: $tpm}}}}"
  else
    echo "  template: {spec: {domain: {devices: {}}}}"
  fi
}

# "TYPE REASON COUNT" per event about VM $1 in $NS (events.k8s.io/v1; COUNT
# is the series count, 1 for a single occurrence), optionally only REASON $2;
# only the agent's (KubeVirt's virt-controller reports on VMs too).
events_for() {
  kubectl -n "$NS" get events.events.k8s.io -o json |
    jq -r --arg vm "$1" --arg reason "${2:-}" '.items[]
      | select(.regarding.kind == "VirtualMachine" and .regarding.name == $vm)
      | select((.reportingController // "") | startswith("vtpm-agent.io/"))
      | select($reason == "" or .reason == $reason)
      | "\(.type) \(.reason) \(.series.count // 1)"'
}

# Total occurrences of REASON for VM (sum of series counts).
event_count() { events_for "$1" "$2" | awk '{n += $3} END {print n + 0}'; }

# A launcher pod stand-in for VM $1: never runs (fake node), only exists.
launcher_pod() {
  local vm=$1 pod=${2:-virt-launcher-$1-$RANDOM}
  k apply -f - >/dev/null <<YAML || return 1
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: "$vm"}
spec:
  nodeName: e2e-fake-node
  automountServiceAccountToken: false
  containers: [{name: compute, image: registry.k8s.io/pause:3.10}]
YAML
  echo "$pod"
}

at_exit "_testbed_cleanup"
at_exit "provisioner_stop"
at_exit "agent_stop_all"

# The API server's audit log (hack/cluster-up.sh writes one): who really did what.
AUDIT_LOG=${AUDIT_LOG:-$VTPM_RUN/logs/audit.log}
# agent_pvc_writes VERB...: "verb name" of each request the agent (user agent
# vtpm-agent/...) made on PVCs in $NS with one of these verbs and that succeeded.
agent_pvc_writes() {
  local verbs
  verbs=$(printf '"%s",' "$@"); verbs="[${verbs%,}]"
  [ -r "$AUDIT_LOG" ] || { echo "no audit log at $AUDIT_LOG"; return 1; }
  grep -F "\"namespace\":\"$NS\"" "$AUDIT_LOG" | jq -r --arg ns "$NS" --argjson verbs "$verbs" '
    select((.userAgent // "") | startswith("vtpm-agent/"))
    | select(.objectRef.resource == "persistentvolumeclaims" and .objectRef.namespace == $ns)
    | select(.verb as $v | $verbs | index($v))
    | select((.responseStatus.code // 0) < 300)
    | "\(.verb) \(.objectRef.name)"'
}
