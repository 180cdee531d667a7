#!/usr/bin/env bash
# Issue 7: what an operator installs. The manifests apply through kustomize
# and validate server-side; the DaemonSet's pod spec has what the README
# promises; the ServiceAccount can do exactly what the agent needs and none of
# the dangerous things (a table of kubectl auth can-i under the real RBAC
# authorizer).
. "$(dirname "$0")/lib.sh"
require_cluster
cd "$E2E_TOP"

# A server-side dry run of namespaced objects needs their namespace to exist.
ok "the namespace applies" kubectl apply -f manifests/namespace.yaml
ok "kubectl apply -k deploy/base --dry-run=server validates every object" \
  kubectl apply -k deploy/base --dry-run=server
ok "kubectl apply -k deploy/overlays/kmip --dry-run=server validates" \
  kubectl apply -k deploy/overlays/kmip --dry-run=server
out=$(kubectl apply -k deploy/overlays/testbed 2>&1); rc=$?
# The DaemonSet and the key broker's Deployment are not meant to run here
# (suite 04 runs them); the rest stays for later suites.
at_exit kubectl -n vtpm-system delete ds vtpm-agent --ignore-not-found --wait=false
at_exit kubectl -n vtpm-system delete deploy vtpm-controller --ignore-not-found --wait=false
if [ $rc -eq 0 ] && ! grep -qi error <<<"$out"; then pass "kubectl apply -k deploy/overlays/testbed creates every object without error"
else fail "kubectl apply -k deploy/overlays/testbed" "$out"; fi

ds=$(kubectl -n vtpm-system get ds vtpm-agent -o json)
q() { jq -r "$1" <<<"$ds"; }
is "$(q .spec.template.spec.hostPID)" true "DaemonSet: hostPID (launchers are found by pid)"
is "$(q '.spec.template.spec.containers[0].securityContext.privileged')" false "DaemonSet: not privileged"
is "$(q '.spec.template.spec.containers[0].securityContext.capabilities.drop[0]')" ALL "DaemonSet: drops all capabilities"
caps=$(q '.spec.template.spec.containers[0].securityContext.capabilities.add | sort | join(",")')
is "$caps" "CHOWN,DAC_OVERRIDE,FOWNER,IPC_LOCK,KILL,SETGID,SETUID,SYS_ADMIN,SYS_CHROOT,SYS_PTRACE" \
  "DaemonSet: exactly the capabilities the README justifies"
is "$(q '.spec.template.spec.containers[0].env[] | select(.name=="NODE_NAME") | .valueFrom.fieldRef.fieldPath')" \
  spec.nodeName "DaemonSet: NODE_NAME from the downward API"
is "$(q '.spec.template.spec.containers[0].volumeMounts[] | select(.name=="kubelet") | .mountPropagation')" \
  HostToContainer "DaemonSet: kubelet root with HostToContainer propagation"
like "$(q '.spec.template.spec.containers[0].resources.limits.memory')" '^[0-9]+Mi$' "DaemonSet: a memory limit"
like "$(q '.spec.template.spec.containers[0].resources.requests.cpu')" '^[0-9]+m$' "DaemonSet: a CPU request"
is "$(q '.spec.template.spec.containers[0].livenessProbe.httpGet.path')" /healthz "DaemonSet: liveness probe on /healthz"
is "$(q '.spec.template.spec.containers[0].readinessProbe.httpGet.path')" /readyz "DaemonSet: readiness probe on /readyz"
# The endpoint is on the node's loopback (hostNetwork): the probes must go there.
is "$(q '[.spec.template.spec.containers[0] | .livenessProbe.httpGet.host, .readinessProbe.httpGet.host] | join(" ")')" \
  "127.0.0.1 127.0.0.1" "DaemonSet: both probes at 127.0.0.1, where the agent listens"
is "$(kubectl kustomize deploy/base | yq -r 'select(.kind == "ConfigMap" and .metadata.name == "vtpm-agent-config") | .data["config.yaml"]' | yq -r .http.listen)" \
  127.0.0.1:9464 "ConfigMap: /metrics, /healthz, /readyz on loopback only (http.listen 127.0.0.1:9464)"
is "$(q '.spec.updateStrategy.type')/$(q '.spec.updateStrategy.rollingUpdate.maxUnavailable')" RollingUpdate/1 \
  "DaemonSet: rolling update, one node at a time"
is "$(q '.spec.template.spec.serviceAccountName')" vtpm-agent "DaemonSet: runs as the vtpm-agent ServiceAccount"
is "$(q '.spec.template.spec.containers[0].imagePullPolicy')" Never "test-bed overlay: image never pulled"

# The can-i tables: test/e2e/agent-can-i.txt (the node agents) and
# controller-can-i.txt (the key broker), under the real RBAC authorizer.
kubectl create ns e2e-60-tenant >/dev/null 2>&1 || true
at_exit kubectl delete ns e2e-60-tenant --wait=false
can_i_table() { # FILE SERVICEACCOUNT LABEL
  local row want verb res rest got
  diag "can-i as $2:"
  while read -r row; do
    [ -n "$row" ] && [[ $row != \#* ]] || continue
    read -r want verb res rest <<<"${row//TENANT/e2e-60-tenant}"
    # shellcheck disable=SC2086
    got=$(kubectl auth can-i "$verb" "$res" $rest --as "$2" 2>/dev/null)
    diag "$(printf '  %-7s %-58s want %-3s got %s' "$verb" "$res $rest" "$want" "$got")"
    is "$got" "$want" "$3can-i $verb $res $rest: $want"
  done < "$E2E_TOP/test/e2e/$1"
}
can_i_table agent-can-i.txt system:serviceaccount:vtpm-system:vtpm-agent ""
can_i_table controller-can-i.txt system:serviceaccount:vtpm-system:vtpm-controller "key broker "
dep=$(kubectl -n vtpm-system get deploy vtpm-controller -o json)
is "$(jq -r '.spec.template.spec.serviceAccountName' <<<"$dep")" vtpm-controller "key broker: its own ServiceAccount"
is "$(jq -r '.spec.template.spec.containers[0].securityContext | "\(.runAsNonRoot) \(.capabilities.drop[0]) \(.capabilities.add // [] | length)"' <<<"$dep")" \
  "true ALL 0" "key broker: not root, no capability"
is "$(jq -r '.spec.template.spec.volumes[] | select(.name == "broker") | .projected.sources[] | select(.serviceAccountToken) | .serviceAccountToken.audience' <<<"$ds")" \
  vtpm-controller "DaemonSet: a projected token for the key broker alone (audience vtpm-controller)"
is "$(kubectl kustomize deploy/base | yq -r 'select(.kind == "ConfigMap" and .metadata.name == "vtpm-agent-config") | .data["config.yaml"]' | yq -r .keys.provider)" \
  broker "ConfigMap: the node agents hold no KEK (keys.provider broker)"

# The node-scope admission policies (manifests/node-scope.yaml): bound to
# deny, and their CEL type-checks against the real schemas (the policy
# controller's status) clean: a misspelt field would fail every request.
for p in vtpm-agent-node-pods vtpm-agent-node-labels vtpm-agent-node-tpmstates vtpm-agent-state-pvcs vtpm-agent-tpmstate-users; do
  is "$(kubectl get validatingadmissionpolicybinding "$p" -o jsonpath='{.spec.policyName} {.spec.validationActions[*]}' 2>&1)" \
    "$p Deny" "admission policy $p is bound, validationActions Deny"
  _typechecked() { [ "$(kubectl get validatingadmissionpolicy "$1" -o jsonpath='{.status.observedGeneration}')" = \
    "$(kubectl get validatingadmissionpolicy "$1" -o jsonpath='{.metadata.generation}')" ]; }
  wait_until 30 _typechecked "$p"
  is "$(kubectl get validatingadmissionpolicy "$p" -o json | jq -c '.status.typeChecking.expressionWarnings // []')" "[]" \
    "admission policy $p: every CEL expression type-checks without a warning"
done
