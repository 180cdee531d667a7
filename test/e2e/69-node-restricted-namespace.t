#!/usr/bin/env bash
# Issue 24, acceptance 4: the attachment pod the node agent makes for a
# launcher (agent/attachment_pod.c) starts in a namespace that enforces Pod
# Security `restricted` and has a ResourceQuota on CPU and memory, which
# rejects any pod without requests and limits. The DaemonSet as shipped
# (deploy/overlays/testbed), the real kubelets and admission; the launcher is
# the test bed's, written to pass `restricted` itself. Both the policy and the
# quota are first shown to refuse a pod that lacks what they ask for.
. "$(dirname "$0")/lib.sh"
[[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 2 ] ||
  skip_all "needs the test bed's real nodes (VTPM_NODES=2, as make test brings them up)"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
rn_images_ready || skip_all "the nodes have no agent or launcher image (VTPM_NODES_AGENT_IMAGE=1)"
plan 8
setup_namespace e2e-restricted
. "$E2E_TOP/test/e2e/lib-agent.sh"  # vm_yaml
T=$(mktemp -d /tmp/vtpm-e2e-restricted.XXXXXX)
chmod 755 "$T"
n1=$(nl_name 1)
class=$NS-local
at_exit "kubectl -n $NS delete pods --all --wait=true --timeout=60s >/dev/null 2>&1;
  rn_agent_undeploy; rn_storage_down; kubectl delete storageclass $class --ignore-not-found >/dev/null 2>&1;
  kubectl get pv -o json | jq -r '.items[] | select((.spec.local.path // \"\") | startswith(\"$T/\")) | .metadata.name' |
    xargs -r kubectl delete pv --wait=false >/dev/null 2>&1; rm -rf '$T'"

ok "kubectl apply -k deploy/overlays/testbed: an agent pod Ready on every node" rn_agent_deploy
if rn_storage_up "$T/store" "$class"; then pass "storage: test-bed provisioner of local RWX volumes, class $class"
else fail "storage: test-bed provisioner of local RWX volumes, class $class"; fi

kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute}
spec:
  hard: {requests.cpu: "1", requests.memory: 512Mi, limits.cpu: "2", limits.memory: 1Gi, pods: "6"}
EOF
# A pod that asks for nothing: refused by both.
out=$(k run bare --image="$LAUNCHER_IMAGE" --image-pull-policy=Never --restart=Never 2>&1)
like "$out" 'violates PodSecurity "restricted' "the namespace enforces Pod Security restricted (a plain pod is refused)"
out=$(k run unbounded --image="$LAUNCHER_IMAGE" --image-pull-policy=Never --restart=Never --overrides='{"spec":{"securityContext":
  {"runAsNonRoot":true,"runAsUser":107,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"unbounded",
  "image":"'"$LAUNCHER_IMAGE"'","imagePullPolicy":"Never","securityContext":{"allowPrivilegeEscalation":false,
  "capabilities":{"drop":["ALL"]}}}]}}' 2>&1)
like "$out" 'exceeded quota|must specify' "its quota refuses a pod without CPU and memory requests and limits"

vm=win11
vm_yaml "$vm" '{persistent: true}' | k apply -f - >/dev/null
_phase_ready() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.phase}' 2>/dev/null)" = Ready ]; }
if wait_until 90 _phase_ready; then pass "the VM's state is provisioned (TPMState Ready)"
else fail "the VM's state is provisioned (TPMState Ready)" "$(k get pvc,tpmstate -o wide 2>&1)" \
  "$(k get events --sort-by=.lastTimestamp 2>&1 | tail -4)"; fi

# The test bed's launcher (a socket listener), as a restricted pod with resources.
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: launcher
  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: "$vm"}
spec:
  nodeSelector: {kubernetes.io/hostname: $n1}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
  securityContext: {runAsNonRoot: true, runAsUser: 107, runAsGroup: 107, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: compute
    image: $LAUNCHER_IMAGE
    imagePullPolicy: Never
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: 500m, memory: 128Mi}}
    volumeMounts: [{name: sockets, mountPath: /var/run/kubevirt/sockets}]
  volumes:
  - {name: sockets, emptyDir: {}}
EOF
luid=$(k get pod launcher -o jsonpath='{.metadata.uid}')
ok "a launcher pod that passes restricted listens on $n1" wait_until 90 _rn_listening "${n1#node-}" "$luid"
_attach_running() {
  [ "$(k get pods -l "vtpm-agent.io/attachment-for=$luid" -o jsonpath='{.items[0].spec.nodeName} {.items[0].status.phase}')" = "$n1 Running" ]
}
if wait_until 90 _attach_running; then
  pass "the agent's attachment pod was admitted (restricted, within the quota) and runs on $n1"
else
  fail "the agent's attachment pod was admitted (restricted, within the quota) and runs on $n1" \
    "$(k get pods -o wide 2>&1)" "$(k get events --sort-by=.lastTimestamp 2>&1 | tail -5)" \
    "$(grep -i attach "$(rn_agent_log "$n1")" | tail -3)"
fi
_running() { [ "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')" = "$n1 Running" ]; }
if wait_until 90 _running; then pass "the agent on $n1 started the vTPM (TPMState Running on $n1)"
else fail "the agent on $n1 started the vTPM" "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState}')"; fi
