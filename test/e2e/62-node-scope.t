#!/usr/bin/env bash
# Hole 5 (one node's agent can act cluster-wide), acceptance 2: with a token
# bound to the agent's own pod on node-1, the agent's ServiceAccount acts only
# on node-1 (manifests/node-scope.yaml, ValidatingAdmissionPolicies keyed on
# the token's authentication.kubernetes.io/node-name). Its RBAC still says
# "create pods" cluster-wide (suite 60's can-i table); admission refuses:
# a pod in kube-system, a pod with a hostPath, a pod pinned to node-2, a
# privileged pod, a pod of another image, a pod with a service-account token,
# deleting node-2's attachment pod, patching node-2, patching a label of
# node-1 that is not vtpm-agent.io/*, a TPMState nodeState naming node-2, and
# everything from a token that names no node, and reading another namespace's
# KEK (the KEKs are the key broker's; suite 65 tests the broker). The attachment pod the agent
# makes, its own node's vtpm-agent.io/* labels and a nodeState naming its own
# node are admitted; then the agent itself (this tree's build, as the suites
# 50-58 run it: a host process in node-1's mount namespace) serves a launcher
# on node-1 under the policies with that token: attachment pod, node labels,
# TPMState status, no refusal in its log.
#
# The token is a TokenRequest bound to a stand-in pod of the agent's
# ServiceAccount on node-1 (`kubectl create token --bound-object-kind Pod`):
# the API server puts the pod's node into it exactly as into the token the
# kubelet projects into the DaemonSet's pod (suite 04 checks that one).
# Requests are real (not dry runs): before the policies each one is carried
# out; every object made here is removed at exit.
. "$(dirname "$0")/lib.sh"
[[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 2 ] ||
  skip_all "needs the test bed's real nodes (VTPM_NODES=2, as make test brings them up)"
setup_namespace e2e-node-scope
cd "$E2E_TOP"
. hack/testbed-lib.sh
. hack/nodes-lib.sh
. test/e2e/lib-realnode.sh
rn_images_ready || skip_all "the nodes have no launcher image (VTPM_NODES_AGENT_IMAGE=1)"
plan 41

n1=$(nl_name 1) n2=$(nl_name 2)
ANS=vtpm-system
SA=system:serviceaccount:$ANS:vtpm-agent
IMAGE=registry.k8s.io/pause:3.10   # the agent's node.attachmentImage, tagged on every node
T=$(mktemp -d /tmp/vtpm-e2e-62.XXXXXX)
chmod 755 "$T"
LBL=e2e-node-scope=$NS

# The product's objects but the DaemonSet: namespace, ServiceAccount, RBAC,
# configuration and (where this tree has them) the admission policies.
# (The Namespace is not in the kustomization: README "Deploying".)
ok "the product's manifests (all but the DaemonSet) apply" \
  sh -c "kubectl apply -f manifests/namespace.yaml >/dev/null && kubectl kustomize deploy/overlays/testbed | yq -y 'select(.kind != \"DaemonSet\" and .kind != \"Deployment\")' | kubectl apply -f -"

# A stand-in for the agent's pod on node-1: the agent's ServiceAccount, no
# token mounted, the pause image. A token bound to it names node-1.
standin=vtpm-agent-standin-$NS
kubectl -n $ANS apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $standin, labels: {e2e-node-scope: "$NS"}}
spec:
  nodeName: $n1
  serviceAccountName: vtpm-agent
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers: [{name: hold, image: $IMAGE, imagePullPolicy: Never}]
EOF
at_exit "kubectl -n $ANS delete pod $standin --grace-period=0 --force --ignore-not-found >/dev/null 2>&1"
at_exit "kubectl delete pods -A -l $LBL --grace-period=0 --force --ignore-not-found >/dev/null 2>&1;
  kubectl label node $n1 $n2 e2e-node-scope- vtpm-agent.io/e2e-node-scope- >/dev/null 2>&1;
  kubectl annotate node $n1 e2e-node-scope- >/dev/null 2>&1; rm -rf '$T'"

kubeconfig_for() {  # TOKEN-FILE OUT
  local server ca
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  printf '%s\n' "apiVersion: v1" "kind: Config" "current-context: agent" \
    "clusters: [{name: tb, cluster: {server: \"$server\", certificate-authority-data: \"$ca\"}}]" \
    "users: [{name: agent, user: {tokenFile: \"$1\"}}]" \
    "contexts: [{name: agent, context: {cluster: tb, user: agent}}]" > "$2"
}
( umask 077; kubectl -n $ANS create token vtpm-agent --bound-object-kind Pod --bound-object-name "$standin" \
    --duration 1h > "$T/token" )
( umask 077; kubectl -n $ANS create token vtpm-agent --duration 1h > "$T/token-unbound" )
kubeconfig_for "$T/token" "$T/agent.kubeconfig"
kubeconfig_for "$T/token-unbound" "$T/unbound.kubeconfig"
A() { KUBECONFIG=$T/agent.kubeconfig kubectl "$@"; }
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$T/ca.crt"
# A merge patch of a TPMState's status as the agent sends it (kubectl patch
# would GET the status first, which the agent's RBAC does not allow).
status_patch() {  # TOKEN-FILE NAME JSON
  local out code
  out=$(curl -sS --cacert "$T/ca.crt" -H "Authorization: Bearer $(cat "$1")" -X PATCH \
    -H 'Content-Type: application/merge-patch+json' --data "$3" -w '\n%{http_code}' \
    "$server/apis/vtpm-agent.io/v1alpha1/namespaces/$NS/tpmstates/$2/status") || return 1
  code=$(tail -1 <<<"$out")
  if [ "$code" -lt 300 ]; then echo "HTTP $code"; else echo "HTTP $code: $(sed '$d' <<<"$out" | jq -r .message)"; return 1; fi
}
U() { KUBECONFIG=$T/unbound.kubeconfig kubectl "$@"; }

who=$(A auth whoami -o json 2>&1)
is "$(jq -r '.status.userInfo.username + " " + (.status.userInfo.extra["authentication.kubernetes.io/node-name"][0] // "-")' <<<"$who" 2>&1)" \
  "$SA $n1" "the token is the agent's ServiceAccount, bound to a pod on $n1: the API server sees node-name $n1"

# The attachment pod as node_controller.c (attachment_pod.c) makes it, owned
# by a launcher (a stand-in pod: the garbage collector must not remove pods
# whose owner does not exist while we look); jq filters make one change each.
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: virt-launcher-vm, labels: {e2e-node-scope: "$NS"}}
spec:
  nodeName: $n1
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers: [{name: hold, image: $IMAGE, imagePullPolicy: Never}]
EOF
owner_uid=$(kubectl -n "$NS" get pod virt-launcher-vm -o jsonpath='{.metadata.uid}')
attach_json() {  # NAME NAMESPACE NODE [JQ-FILTER]
  jq -n --arg name "$1" --arg ns "$2" --arg node "$3" --arg uid "$owner_uid" --arg image "$IMAGE" --arg nsl "$NS" '
  {apiVersion: "v1", kind: "Pod",
   metadata: {name: $name, namespace: $ns,
     labels: {"vtpm-agent.io/attachment-for": $uid, "vtpm-agent.io/vm": "vm", "app.kubernetes.io/managed-by": "vtpm-agent",
              "e2e-node-scope": $nsl},
     ownerReferences: [{apiVersion: "v1", kind: "Pod", name: "virt-launcher-vm", uid: $uid, controller: true,
                        blockOwnerDeletion: false}]},
   spec: {nodeName: $node, restartPolicy: "Always", automountServiceAccountToken: false,
     hostNetwork: false, hostPID: false, hostIPC: false, tolerations: [{operator: "Exists"}],
     securityContext: {runAsNonRoot: true, runAsUser: 65535, runAsGroup: 65535, seccompProfile: {type: "RuntimeDefault"}},
     containers: [{name: "hold", image: $image, imagePullPolicy: "IfNotPresent",
       volumeMounts: [{name: "state", mountPath: "/state"}],
       securityContext: {allowPrivilegeEscalation: false, privileged: false, readOnlyRootFilesystem: true,
                         capabilities: {drop: ["ALL"]}},
       resources: {requests: {cpu: "1m", memory: "4Mi"}, limits: {cpu: "100m", memory: "16Mi"}}}],
     volumes: [{name: "state", persistentVolumeClaim: {claimName: "persistent-state-for-vm"}}],
     terminationGracePeriodSeconds: 1}}' | jq "${4:-.}"
}

# expect WANT DESC CMD...: WANT "allowed" (exit 0) or "Forbidden" (the API
# server's refusal); the first line of the answer is shown either way.
expect() {
  local want=$1 desc=$2 out rc=0; shift 2
  out=$("$@" 2>&1) || rc=$?
  diag "  $desc: $(head -c 400 <<<"$out" | head -1)"
  if [ "$want" = allowed ]; then
    if [ $rc -eq 0 ]; then pass "$desc: allowed"; else fail "$desc: allowed" "$out"; fi
  elif [ $rc -ne 0 ] && grep -q 'forbidden: ValidatingAdmissionPolicy .* denied request' <<<"$out"; then pass "$desc: Forbidden"
  else fail "$desc: Forbidden" "exit status $rc" "$out"; fi
}
create() { attach_json "$@" | A create -f - -o name; }
create_unbound() { attach_json "$@" | U create -f - -o name; }

# ---- pods ---------------------------------------------------------------------
expect Forbidden "a pod in kube-system" create e2e-62-system kube-system "$n1" \
  '.spec.serviceAccountName = "default"'
expect Forbidden "a pod with a hostPath (the node's /)" create e2e-62-hostpath "$NS" "$n1" \
  '.spec.volumes += [{name: "host", hostPath: {path: "/", type: "Directory"}}] |
   .spec.containers[0].volumeMounts += [{name: "host", mountPath: "/host", readOnly: true}]'
expect Forbidden "a pod pinned to $n2" create e2e-62-node2 "$NS" "$n2"
expect Forbidden "a privileged pod, hostPID" create e2e-62-privileged "$NS" "$n1" \
  '.spec.hostPID = true | .spec.containers[0].securityContext = {privileged: true}'
expect Forbidden "a pod of another image" create e2e-62-image "$NS" "$n1" \
  '.spec.containers[0].image = "'"$LAUNCHER_IMAGE"'"'
expect Forbidden "a pod with a service-account token" create e2e-62-token "$NS" "$n1" \
  '.spec.automountServiceAccountToken = true'
expect Forbidden "a pod reading a Secret through env" create e2e-62-env "$NS" "$n1" \
  '.spec.containers[0].env = [{name: "X", valueFrom: {secretKeyRef: {name: "any", key: "k"}}}]'
expect allowed "the attachment pod on $n1" create e2e-62-attach "$NS" "$n1"
expect Forbidden "the same attachment pod with a token that names no node (not bound to a pod)" \
  create_unbound e2e-62-unbound "$NS" "$n1"

# As admin: node-2's attachment pod, and a pod in kube-system on node-1.
attach_json e2e-62-on-node2 "$NS" "$n2" | kubectl create -f - >/dev/null
attach_json e2e-62-sys-victim kube-system "$n1" 'del(.metadata.labels["vtpm-agent.io/attachment-for"]) | del(.metadata.ownerReferences)' |
  kubectl create -f - >/dev/null
expect Forbidden "deleting $n2's attachment pod" A -n "$NS" delete pod e2e-62-on-node2 --wait=false
expect Forbidden "deleting a pod of kube-system on $n1" A -n kube-system delete pod e2e-62-sys-victim --wait=false
expect allowed "deleting its own attachment pod on $n1" A -n "$NS" delete pod e2e-62-attach --wait=false

# ---- nodes --------------------------------------------------------------------
expect Forbidden "patching $n2 (a vtpm-agent.io label)" \
  A patch node "$n2" --type merge -p '{"metadata":{"labels":{"vtpm-agent.io/e2e-node-scope":"x"}}}'
expect Forbidden "patching $n1's label that is not vtpm-agent.io/*" \
  A patch node "$n1" --type merge -p '{"metadata":{"labels":{"e2e-node-scope":"x"}}}'
expect Forbidden "annotating $n1" \
  A patch node "$n1" --type merge -p '{"metadata":{"annotations":{"e2e-node-scope":"x"}}}'
expect Forbidden "patching $n1's vtpm-agent.io label with a token that names no node" \
  U patch node "$n1" --type merge -p '{"metadata":{"labels":{"vtpm-agent.io/e2e-node-scope":"x"}}}'
expect allowed "patching $n1's vtpm-agent.io/* label" \
  A patch node "$n1" --type merge -p '{"metadata":{"labels":{"vtpm-agent.io/e2e-node-scope":"x"}}}'

# ---- state PVCs ---------------------------------------------------------------
# RBAC lets the account delete and patch PVCs (its own state PVC that lost the
# race with KubeVirt's; KubeVirt's label on its own that a launcher mounts);
# vtpm-agent-state-pvcs (state-scope.yaml) narrows that to exactly those.
# Made as admin, Pending (no class).
pvc_json() {  # NAME LABELS-JSON
  jq -n --arg name "$1" --argjson labels "$2" '{apiVersion: "v1", kind: "PersistentVolumeClaim",
    metadata: {name: $name, labels: $labels, annotations: {"vtpm-agent.io/vm-name": ($name | ltrimstr("persistent-state-for-"))}},
    spec: {accessModes: ["ReadWriteMany"], storageClassName: "", resources: {requests: {storage: "10Mi"}}}}'
}
mine='{"app.kubernetes.io/managed-by":"vtpm-agent"}'
pvc_json persistent-state-for-e2e-foreign '{}' | kubectl -n "$NS" create -f - >/dev/null
pvc_json persistent-state-for-e2e-adopted '{"app.kubernetes.io/managed-by":"vtpm-agent","persistent-state-for":"e2e-adopted"}' |
  kubectl -n "$NS" create -f - >/dev/null
pvc_json e2e-data "$mine" | kubectl -n "$NS" create -f - >/dev/null
pvc_json persistent-state-for-e2e-lost "$mine" | kubectl -n "$NS" create -f - >/dev/null
expect Forbidden "deleting a state PVC the agent did not make" A -n "$NS" delete pvc persistent-state-for-e2e-foreign --wait=false
expect Forbidden "deleting its own state PVC that KubeVirt adopted (labelled persistent-state-for)" \
  A -n "$NS" delete pvc persistent-state-for-e2e-adopted --wait=false
expect Forbidden "deleting a PVC with its label but not a state PVC's name" A -n "$NS" delete pvc e2e-data --wait=false
expect allowed "deleting its own state PVC KubeVirt never adopted" A -n "$NS" delete pvc persistent-state-for-e2e-lost --wait=false
pvc_json persistent-state-for-e2e-mounted "$mine" | kubectl -n "$NS" create -f - >/dev/null
label() { A -n "$NS" patch pvc "$1" --type merge -p "{\"metadata\":{\"labels\":$2}}"; }
expect Forbidden "labelling its own state PVC persistent-state-for=<another VM>" \
  label persistent-state-for-e2e-mounted '{"persistent-state-for":"victim"}'
expect Forbidden "labelling its own state PVC and changing another label" \
  label persistent-state-for-e2e-mounted '{"persistent-state-for":"e2e-mounted","vtpm-agent.io/vm":"victim"}'
expect Forbidden "labelling a state PVC the agent did not make" \
  label persistent-state-for-e2e-foreign '{"persistent-state-for":"e2e-foreign"}'
expect allowed "labelling its own state PVC persistent-state-for=<its VM>" \
  label persistent-state-for-e2e-mounted '{"persistent-state-for":"e2e-mounted"}'

# ---- KEKs ---------------------------------------------------------------------
# The node agents hold no KEK (README "Keys off the nodes"): the key broker's
# ServiceAccount reads them, the agent's has no Secret rule at all. (Before
# the broker, the node-1 token read this Secret: a TODO test here.)
kek=vtpm-kek-e2e-other-$NS
kubectl -n $ANS create secret generic "$kek" --from-literal=kek-1="$(head -c 32 /dev/urandom | base64)" >/dev/null
at_exit "kubectl -n $ANS delete secret $kek --ignore-not-found >/dev/null 2>&1"
out=$(A -n $ANS get secret "$kek" -o name 2>&1)
like "$out" 'is forbidden: User "system:serviceaccount:vtpm-system:vtpm-agent" cannot get resource "secrets"' \
  "reading another namespace's KEK ($ANS/$kek) with the node-1 token is impossible (RBAC: Forbidden)"

# ---- TPMState status ----------------------------------------------------------
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: vtpm-agent.io/v1alpha1
kind: TPMState
metadata: {name: ghost}
spec: {vmName: ghost}
EOF
kubectl -n "$NS" patch tpmstate ghost --subresource=status --type merge \
  -p "{\"status\":{\"phase\":\"Ready\",\"nodeState\":{\"node\":\"$n2\",\"phase\":\"Running\"}}}" >/dev/null
expect Forbidden "TPMState status: a nodeState naming $n2" status_patch "$T/token" ghost \
  "{\"status\":{\"nodeState\":{\"node\":\"$n2\",\"phase\":\"Failed\",\"reason\":\"Forged\"}}}"
expect Forbidden "TPMState status: the keys of a VM served by $n2" status_patch "$T/token" ghost \
  '{"status":{"keys":{"message":"forged"}}}'
expect Forbidden "TPMState status: a nodeState naming $n1, with a token that names no node" status_patch "$T/token-unbound" ghost \
  "{\"status\":{\"nodeState\":{\"node\":\"$n1\",\"phase\":\"Starting\"}}}"
expect allowed "TPMState status: a nodeState naming $n1 (the VM starts here)" status_patch "$T/token" ghost \
  "{\"status\":{\"nodeState\":{\"node\":\"$n1\",\"phase\":\"Starting\"}}}"
kubectl -n "$NS" delete tpmstate ghost --wait=false >/dev/null 2>&1

# ---- the agent itself on node-1, under the policies, with that token -----------
kubectl -n "$NS" delete pods -l "$LBL" --grace-period=0 --force >/dev/null 2>&1
# Its own namespace is the test's (Leases, KEK Secret, state locks there, as in
# suites 50-58): the ServiceAccount gets its namespaced Role here too (the
# shipped Role's lease verbs: leader election, state locks, the Lease sweep).
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: vtpm-agent-e2e}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, list, watch, create, update, delete]}
  - {apiGroups: [""], resources: [secrets], verbs: [get, create, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: vtpm-agent-e2e}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: vtpm-agent-e2e}
subjects: [{kind: ServiceAccount, name: vtpm-agent, namespace: $ANS}]
EOF
export AGENT_KUBECONFIG=$T/agent.kubeconfig
. test/e2e/lib-node.sh
node_testbed_up
# The agent's own write must put it back (not an earlier run's).
kubectl label node "$n1" vtpm-agent.io/tpm-2.0- >/dev/null 2>&1
ok "the agent on $n1 runs as $SA with the node-bound token" node_up a
vm=win11
ok "$vm: TPMState Ready (the agent's state controller)" vm_create "$vm" '{persistent: true}' "" Ready
launcher_start a "virt-launcher-$vm" "$vm" >/dev/null
_running_on_n1() { [ "$(tpmstate_field "$vm" '.status.nodeState.node} {.status.nodeState.phase')" = "$n1 Running" ]; }
if wait_until 90 _running_on_n1; then pass "the agent started $vm's vTPM on $n1: TPMState nodeState says Running on $n1"
else fail "the agent started $vm's vTPM on $n1" "nodeState: $(tpmstate_field "$vm" .status.nodeState)" "$(tail -5 "$(node_agent_log a)")"; fi
like "$(k get pods -l vtpm-agent.io/attachment-for -o jsonpath='{.items[0].spec.nodeName} {.items[0].status.phase} {.items[0].spec.securityContext.runAsNonRoot}')" \
  "^$n1 Running true\$" "its attachment pod (restricted) was admitted and runs on $n1"
_labelled() { [ "$(kubectl get node "$n1" -o jsonpath='{.metadata.labels.vtpm-agent\.io/tpm-2\.0}')" = true ]; }
ok "it labelled $n1 (vtpm-agent.io/tpm-2.0)" wait_until 10 _labelled
launcher_stop "virt-launcher-$vm"
node_no_leftovers
is "$(grep -iE 'denied|forbidden|cannot (label|write the TPMState|delete attachment)' "$(node_agent_log a)" | head -3)" "" \
  "the agent's log shows no request refused"
