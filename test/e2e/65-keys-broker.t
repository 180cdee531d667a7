#!/usr/bin/env bash
# Hole 5, the keys off the nodes (README "Keys off the nodes"): the node
# agents hold no KEK. The key broker (the vtpm-controller Deployment, its own
# ServiceAccount) holds them and gives a VM's DEK to a node agent only while
# that VM's launcher pod runs on the agent's node, proven by the agent's
# pod-bound token (audience vtpm-controller, TokenReview) and by the launcher
# pod as the API server has it.
#
# Everything as shipped (deploy/overlays/testbed: the DaemonSet and the
# broker, its TLS material made as an operator would), real launcher pods on
# the two real nodes. With the node agents' own tokens, read from their
# containers: node-1 cannot read a KEK Secret; node-1 asking for the key of a
# VM that runs on node-2 is refused, node-2's own request for it succeeds; a
# token for the API server's audience, one bound to a pod that is not the
# DaemonSet's, and one bound to no pod are refused. The broker down: the VM
# waits (KeyProviderUnavailable) and starts when it is back.
. "$(dirname "$0")/lib.sh"
[[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 2 ] ||
  skip_all "needs the test bed's real nodes (VTPM_NODES=2, as make test brings them up)"
cd "$E2E_TOP"
. hack/testbed-lib.sh
. hack/nodes-lib.sh
. test/e2e/lib-realnode.sh
rn_images_ready || skip_all "the nodes have no agent or launcher image (VTPM_NODES_AGENT_IMAGE=1)"
command -v curl >/dev/null || skip_all "no curl on this machine"
plan 27
setup_namespace e2e-keys-broker
. "$E2E_TOP/test/e2e/lib-agent.sh"  # vm_yaml

ANS=vtpm-system
T=$(mktemp -d /tmp/vtpm-e2e-65.XXXXXX)
chmod 755 "$T"
n1=$(nl_name 1) n2=$(nl_name 2)
class=$NS-local
standin=vtpm-agent-standin-$NS
at_exit "rn_guest_stop; kubectl -n $NS delete pods -l kubevirt.io=virt-launcher --wait=true --timeout=60s >/dev/null 2>&1;
  kubectl -n $ANS delete pod $standin --ignore-not-found --grace-period=0 --force >/dev/null 2>&1;
  rn_agent_undeploy; rn_storage_down; kubectl delete storageclass $class --ignore-not-found >/dev/null 2>&1;
  kubectl -n $ANS delete secret vtpm-kek-$NS --ignore-not-found >/dev/null 2>&1;
  kubectl get pv -o json | jq -r '.items[] | select((.spec.local.path // \"\") | startswith(\"$T/\")) | .metadata.name' |
    xargs -r kubectl delete pv --wait=false >/dev/null 2>&1; rm -rf '$T'"

ok "as shipped (deploy/overlays/testbed): the agents on every node and the key broker Ready" rn_agent_deploy
if rn_storage_up "$T/store" "$class"; then pass "storage: test-bed provisioner of local RWX volumes, class $class"
else fail "storage: test-bed provisioner of local RWX volumes, class $class"; fi

# The broker's address and what a client verifies it with.
BROKER=https://vtpm-controller.vtpm-system.svc:8443
CA=${VTPM_RUN:-/tmp/vtpm-testbed}/broker-pki/ca.crt
# broker TOKENFILE PATH BODY: prints the HTTP status, the answer in $T/answer.
broker() {
  curl -sS -o "$T/answer" -w '%{http_code}' --max-time 20 --cacert "$CA" \
    --resolve "vtpm-controller.vtpm-system.svc:8443:$(nl_ip 1)" \
    -H "Authorization: Bearer $(cat "$1")" -H 'Content-Type: application/json' \
    --data-binary "$3" "$BROKER$2" 2>"$T/curl.err"
}
# A token file of an agent container, as the kubelet projected it there.
agent_file() { # NODE PATH-IN-CONTAINER
  local apid
  apid=$(rn_container_pid $ANS "$(rn_agent_pod "$1")") || return 1
  cat "/proc/$apid/root$2"
}

# ---- a VM on node-2: its key comes from the broker ------------------------------
vm=win11
vm_yaml "$vm" '{persistent: true}' | k apply -f - >/dev/null
_phase_ready() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.phase}' 2>/dev/null)" = Ready ]; }
wait_until 90 _phase_ready || diag "TPMState $vm is not Ready: $(k get tpmstate "$vm" -o jsonpath='{.status}' 2>&1)"
_running_on() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')" = "$1 Running" ]; }
ok "a launcher pod for $vm on $n2" rn_launcher_start "$NS" launcher-b "$vm" "$n2"
if wait_until 90 _running_on "$n2"; then pass "the agent on $n2 started the vTPM with a key from the broker (TPMState Running on $n2)"
else fail "the agent on $n2 started the vTPM with a key from the broker" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')" "$(tail -5 "$(rn_agent_log "$n2")")"; fi
pvc=$(k get tpmstate "$vm" -o jsonpath='{.status.pvcName}')
store=$(kubectl get pv "$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.local.path}')
is "$(jq -r '.provider + " " + .kekId' "$store/vtpm-key.json" 2>&1)" "secret $ANS/vtpm-kek-$NS#1" \
  "the VM's key header: its DEK wrapped by the broker under the namespace's KEK (made by the broker on first use)"
ok "the KEK Secret $ANS/vtpm-kek-$NS exists (the broker's ServiceAccount made it)" kubectl -n $ANS get secret "vtpm-kek-$NS"

# ---- the agents' own tokens -----------------------------------------------------
agent_file "$n1" /run/secrets/vtpm-controller/token > "$T/n1-broker.token" &&
  agent_file "$n1" /run/secrets/kubernetes.io/serviceaccount/token > "$T/n1-api.token" &&
  agent_file "$n2" /run/secrets/vtpm-controller/token > "$T/n2-broker.token"
is "$(for f in n1-broker n1-api n2-broker; do [ -s "$T/$f.token" ] && echo -n "$f "; done)" "n1-broker n1-api n2-broker " \
  "the agents' projected tokens, read from their containers (one for the broker, one for the API server)"

# The node-1 agent and the KEK Secret, with its own API token.
printf '%s\n' "apiVersion: v1" "kind: Config" \
  "clusters: [{name: tb, cluster: {server: \"https://127.0.0.1:$TB_APISERVER_PORT\", certificate-authority: \"$TB_PKI/ca.crt\"}}]" \
  "users: [{name: agent, user: {tokenFile: \"$T/n1-api.token\"}}]" \
  "contexts: [{name: agent, context: {cluster: tb, user: agent}}]" "current-context: agent" > "$T/n1.kubeconfig"
out=$(KUBECONFIG=$T/n1.kubeconfig kubectl -n $ANS get secret "vtpm-kek-$NS" -o name 2>&1)
like "$out" 'Forbidden' "the $n1 agent's own token cannot read the KEK Secret $ANS/vtpm-kek-$NS (no Secret in its RBAC)"

# What a node sends: the VM, the launcher on node-2, the header from the volume.
lb_uid=$(k get pod launcher-b -o jsonpath='{.metadata.uid}')
body=$(jq -cn --arg ns "$NS" --arg vm "$vm" --arg uid "$lb_uid" --rawfile h "$store/vtpm-key.json" \
  '{subject: {namespace: $ns, vm: $vm, launcherUid: $uid}, header: $h}')
code=$(broker "$T/n1-broker.token" /v1/unwrap "$body")
is "$code $(jq -r .message "$T/answer" 2>/dev/null)" "403 key access refused" \
  "$n1's agent asking for the key of $vm, whose launcher runs on $n2: refused"
code=$(broker "$T/n2-broker.token" /v1/unwrap "$body")
is "$code $(jq -r .dek "$T/answer" 2>/dev/null | base64 -d 2>/dev/null | wc -c)" "200 32" \
  "$n2's agent asking for it: a 256-bit key (the launcher runs on $n2)"
rm -f "$T/answer"
code=$(broker "$T/n1-broker.token" /v1/kek-version "$(jq -cn --arg ns "$NS" --arg vm "$vm" --arg uid "$lb_uid" \
  '{subject: {namespace: $ns, vm: $vm, launcherUid: $uid}, version: "e2e-65"}')")
is "$code" 403 "$n1's agent asking to make a KEK version for $vm's namespace: refused"
ok "and no KEK version was made for it" sh -c "! kubectl -n $ANS get secret vtpm-kek-$NS -o json | jq -e '.data[\"kek-e2e-65\"]' >/dev/null"

# Tokens that are not a live DaemonSet pod's, for the broker's audience.
code=$(broker "$T/n1-api.token" /v1/unwrap "$body")
is "$code" 401 "a token for the API server's audience (the agent's own): refused"
kubectl -n $ANS apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $standin}
spec:
  nodeName: $n2
  serviceAccountName: vtpm-agent
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers: [{name: pause, image: registry.k8s.io/pause:3.10, imagePullPolicy: Never}]
EOF
kubectl -n $ANS create token vtpm-agent --audience vtpm-controller --bound-object-kind Pod \
  --bound-object-name "$standin" --duration 10m > "$T/standin.token" 2>"$T/token.err"
code=$(broker "$T/standin.token" /v1/unwrap "$body")
is "$code" 401 "the agent's ServiceAccount, bound to a pod on $n2 that is not the DaemonSet's: refused"
kubectl -n $ANS create token vtpm-agent --audience vtpm-controller --duration 10m > "$T/unbound.token" 2>>"$T/token.err"
code=$(broker "$T/unbound.token" /v1/unwrap "$body")
is "$code" 401 "the agent's ServiceAccount, bound to no pod: refused"

# The broker's own log (the kubelet's file on node-1): one line per request,
# the refusal with its reason, and never a token.
bpod=$(kubectl -n $ANS get pods -l app.kubernetes.io/name=vtpm-controller -o jsonpath='{.items[0].metadata.name} {.items[0].metadata.uid}')
blog=$(ls -t "$(nl_dir 1)/pod-logs/${ANS}_${bpod% *}_${bpod#* }/controller/"*.log 2>/dev/null | head -1)
like "$(grep '"verdict":"refused"' "$blog" 2>/dev/null | grep "\"node\":\"$n1\"" | grep -m1 "\"vm\":\"$vm\"")" \
  "\"launcherUid\":\"$lb_uid\".*\"status\":\"403\".*\"reason\":\"[^\"]*the launcher pod is not on the asking node" \
  "the broker logged the refusal: $n1, $vm, the launcher, 403, and why (the launcher is not on $n1)"
leaked=0
for f in n1-broker n1-api n2-broker standin unbound; do grep -qF "$(cat "$T/$f.token")" "$blog" && leaked=$((leaked + 1)); done
is "$leaked $(grep -c '"msg":"key broker request"' "$blog")" "0 $(grep -c '"msg":"key broker request"' "$blog")" \
  "no token in the broker's log ($(grep -c '"msg":"key broker request"' "$blog") request lines)"

# ---- the broker down: the VM waits, and starts when it is back ------------------
ok "the VM stops on $n2" rn_launcher_stop "$NS" launcher-b
kubectl -n $ANS scale deploy vtpm-controller --replicas 0 >/dev/null
_broker_gone() { [ -z "$(kubectl -n $ANS get pods -l app.kubernetes.io/name=vtpm-controller -o name)" ]; }
wait_until 60 _broker_gone || diag "the broker's pod is still there"
ok "a launcher pod for $vm on $n1, the broker down" rn_launcher_start "$NS" launcher-a "$vm" "$n1"
_waiting_key() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.reason}')" = "$n1 KeyProviderUnavailable" ]; }
if wait_until 90 _waiting_key; then pass "the VM waits: KeyProviderUnavailable on $n1 ($(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.message}' | cut -c1-120))"
else fail "the VM waits: KeyProviderUnavailable on $n1" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')"; fi
kubectl -n $ANS scale deploy vtpm-controller --replicas 1 >/dev/null
if wait_until 180 _running_on "$n1"; then pass "the broker back: the vTPM starts on $n1 from the same state"
else fail "the broker back: the vTPM starts on $n1" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')" "$(tail -5 "$(rn_agent_log "$n1")")"; fi
is "$(jq -r '.provider + " " + .kekId + " " + (.dekGeneration | tostring)' "$store/vtpm-key.json" 2>&1)" "secret $ANS/vtpm-kek-$NS#1 1" \
  "the key header is unchanged (same KEK, same DEK generation): nothing was re-initialised"
ok "the VM stops on $n1" rn_launcher_stop "$NS" launcher-a

# ---- a warm start reads caches (issue 19) ----------------------------------------
# The agent on $n1 started this VM before: its informers hold the VM, its
# TPMState and its PVC, and it holds no Secret (the broker does). Its /metrics
# count the requests it sent by verb and resource: the start adds no GET.
_gets() { # NODE -> "virtualmachines N tpmstates N persistentvolumeclaims N secrets N"
  local m r
  m=$(nl_in "${1#node-}" curl -sf -m 5 http://127.0.0.1:9464/metrics) || return 1
  for r in virtualmachines tpmstates persistentvolumeclaims secrets; do
    printf '%s %s ' "$r" "$(awk -v s="vtpm_agent_api_requests_total{verb=\"GET\",resource=\"$r\"}" \
      '$1 == s {print $2 + 0; f = 1} END {if (!f) print 0}' <<<"$m")"
  done
}
_started_by() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.launcher} {.status.nodeState.phase}')" = "$NS/$1 Running" ]; }
g0=$(_gets "$n1")
ok "a launcher pod for $vm on $n1 again (a warm start)" rn_launcher_start "$NS" launcher-c "$vm" "$n1"
if wait_until 90 _started_by launcher-c; then pass "the vTPM started on $n1 for launcher-c"
else fail "the vTPM started on $n1 for launcher-c" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')"; fi
g1=$(_gets "$n1")
is "$(paste -d' ' <(xargs -n2 <<<"$g0") <(xargs -n2 <<<"$g1") | awk '{printf "%s %d ", $1, $4 - $2}')" \
  "virtualmachines 0 tpmstates 0 persistentvolumeclaims 0 secrets 0 " \
  "the warm start issued no GET of the VM, its TPMState, its PVC or a Secret (the agent's GETs before: $g0; after: $g1)"
ok "the VM stops on $n1" rn_launcher_stop "$NS" launcher-c
