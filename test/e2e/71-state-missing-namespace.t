#!/usr/bin/env bash
# Issue 24, acceptance 5: the agent started by hand (the README's command
# line) against a cluster where its own namespace does not exist yet. Within
# 10 s its log has an error naming that namespace, and /readyz fails saying
# why; a VM asking for a persistent TPM gets no PVC meanwhile. Once the
# namespace is created, the same process wins its Lease and the VM gets its
# PVC: no restart. Before, the agent logged "state controller running" and
# then nothing, forever.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-71
# The product's ServiceAccount (lib-agent.sh: in $NS, with a TokenRequest
# token; suite 99 checks every agent request was made so). Its Lease Role is
# namespaced in the agent's own namespace, which cannot exist before that
# namespace does; an operator starting the agent by hand would use their own
# credentials. Here a test-only ClusterRole gives the ServiceAccount the verbs
# of its Lease Role (rbac.yaml) on Leases
# in any namespace, so what the agent meets is the API server's answer to a
# Lease in a namespace that does not exist (404), not a 403.
. "$(dirname "$0")/lib-agent.sh"
kubectl create clusterrole "vtpm-e2e-71-leases-$NS" --verb=get,list,watch,create,update,delete --resource=leases.coordination.k8s.io \
  >/dev/null
kubectl create clusterrolebinding "vtpm-e2e-71-leases-$NS" --clusterrole="vtpm-e2e-71-leases-$NS" \
  --serviceaccount="$NS:vtpm-agent" >/dev/null
at_exit "kubectl delete clusterrolebinding,clusterrole vtpm-e2e-71-leases-$NS --ignore-not-found --wait=false >/dev/null 2>&1"
plan 8

provisioner_start
class=$NS-class
testbed_class "$class"
later=$NS-agent   # the agent's namespace, created only later
at_exit "kubectl delete namespace $later --ignore-not-found --wait=false >/dev/null 2>&1"
cfg=$AGENT_DIR/by-hand.yaml
cat > "$cfg" <<YAML
namespace: $later
state: {leaseName: $AGENT_LEASE, storageClass: $class}
node: {enabled: false}
http: {listen: "127.0.0.1:0"}
YAML
started=$(date +%s)
ok_here "the agent starts (its namespace $later does not exist)" agent_start by-hand "$cfg"
log=$(agent_log by-hand)
_named() { grep -q "\"level\":\"error\".*cannot campaign for its Lease.*namespaces \\\\\"$later\\\\\" not found" "$log"; }
if wait_until 10 _named; then pass "within 10 s of its start the log names the missing namespace ($(( $(date +%s) - started )) s)"
else fail "within 10 s of its start the log names the missing namespace" "$(tail -5 "$log")"; fi
port=$(sed -n 's/.*"serving \/metrics, \/healthz and \/readyz".*"port":"\([0-9]*\)".*/\1/p' "$log" | tail -1)
ready=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/readyz")
like "$ready" "^not ready: the state controller cannot campaign for its Lease .*namespaces .$later. not found.* 503\$" \
  "/readyz fails and says why (port $port)"

k apply -f - >/dev/null <<<"$(vm_yaml win11 "{persistent: true}")"
sleep 5
is "$(k get pvc -o name)" "" "no state PVC while the agent cannot lead"

pid=$(agent_pid by-hand)
kubectl create namespace "$later" >/dev/null
_pvc() { k get pvc persistent-state-for-win11 >/dev/null 2>&1; }
ok "once the namespace exists the VM gets its state PVC" wait_until 30 _pvc
is "$(kill -0 "$pid" 2>/dev/null && echo alive)/$(grep -c '^=== start' "$log")" "alive/1" \
  "from the same agent process, never restarted"
_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; }
ok "/readyz answers 200" wait_until 30 _ready
agent_stop_all
agent_sanitizer_check
