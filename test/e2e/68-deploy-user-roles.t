#!/usr/bin/env bash
# Issue 24, acceptance 2: a VM owner's view of TPMState, as shipped
# (manifests/user-roles.yaml, in deploy/base). Kubernetes' own namespace roles
# carry it: `view` reads TPMStates, `edit` also requests key rotations
# (annotations), through ClusterRoles aggregated into them by the real
# controller-manager, under the real RBAC authorizer. Everything else about a
# TPMState stays the agent's: an admission policy refuses any other change by
# a user, and no role reaches a KEK. Users are impersonated (kubectl --as),
# the way the API server treats a real user with that name.
# The rotation being carried out for such a request is suite
# 10-kubevirt-keys.t, whose rotation is requested by an `edit` user too.
. "$(dirname "$0")/lib.sh"
plan 23
setup_namespace
cd "$E2E_TOP"
other=$NS-other
kubectl create namespace "$other" >/dev/null
at_exit "kubectl delete namespace $other --wait=false >/dev/null 2>&1"

ok "the TPMState CRD and the user roles apply as shipped" \
  kubectl apply -f manifests/crds/ -f manifests/user-roles.yaml
kubectl wait --for condition=Established --timeout=60s crd/tpmstates.vtpm-agent.io >/dev/null
owner=vm-owner-$NS viewer=vm-viewer-$NS
k create rolebinding owner --clusterrole=edit --user="$owner" >/dev/null
k create rolebinding viewer --clusterrole=view --user="$viewer" >/dev/null
# A TPMState as the agent makes one (it is only read and annotated here).
for n in "$NS" "$other"; do
  kubectl -n "$n" apply -f - >/dev/null <<EOF
apiVersion: vtpm-agent.io/v1alpha1
kind: TPMState
metadata: {name: win11, labels: {app.kubernetes.io/managed-by: vtpm-agent}}
spec: {vmName: win11}
EOF
done
as_owner() { kubectl --as="$owner" "$@"; }
as_viewer() { kubectl --as="$viewer" "$@"; }
# The aggregation controller adds the rules to view and edit within moments.
_aggregated() { [ "$(as_owner -n "$NS" auth can-i patch tpmstates)" = yes ] &&
                [ "$(as_viewer -n "$NS" auth can-i list tpmstates)" = yes ]; }
ok "view and edit include TPMState (aggregated by the controller-manager)" wait_until 60 _aggregated

# ---- reading ----
is "$(as_owner -n "$NS" get tpmstate -o name)" "tpmstate.vtpm-agent.io/win11" \
  "edit: kubectl get tpmstate lists the namespace's TPMState"
is "$(as_viewer -n "$NS" get tpmstate win11 -o jsonpath='{.spec.vmName}')" win11 "view: reads it too"
out=$(as_owner -n "$other" get tpmstate 2>&1)
like "$out" "Forbidden|forbidden" "edit in one namespace: kubectl get tpmstate in another is forbidden"
is "$(as_owner -n "$NS" get vtpm -o name)" "tpmstate.vtpm-agent.io/win11" "the short name vtpm"
like "$(as_owner -n "$NS" get all -o name 2>/dev/null)" "tpmstate.vtpm-agent.io/win11" \
  "kubectl get all includes TPMStates (category all)"
# A category is expanded before a resource of that name is looked for: one
# named like KubeVirt's CR (kubevirt) would hide it. (A fresh discovery cache:
# kubectl keeps categories for hours.)
kcache=$(mktemp -d); at_exit "rm -rf '$kcache'"
out=$(kubectl get kubevirt -A -o name --cache-dir="$kcache" 2>&1)
if [[ $out != *tpmstate* ]]; then pass "kubectl get kubevirt is still KubeVirt's resource, not TPMStates (${out:-nothing})"
else fail "kubectl get kubevirt is still KubeVirt's resource, not TPMStates" "$out"; fi

# ---- rotation requests: the one thing a VM owner writes ----
ok "edit: requests a DEK rotation (annotation vtpm-agent.io/rotate-dek)" \
  as_owner -n "$NS" annotate tpmstate win11 vtpm-agent.io/rotate-dek=2026-12
ok "edit: requests a KEK rotation, and may change its request" \
  as_owner -n "$NS" annotate tpmstate win11 vtpm-agent.io/rotate-kek=a vtpm-agent.io/rotate-dek=2026-12b --overwrite
is "$(k get tpmstate win11 -o jsonpath='{.metadata.annotations.vtpm-agent\.io/rotate-dek}')" 2026-12b \
  "the request is on the TPMState, where the node agent reads it"
ok "edit: withdraws a request" as_owner -n "$NS" annotate tpmstate win11 vtpm-agent.io/rotate-kek-
out=$(as_viewer -n "$NS" annotate tpmstate win11 vtpm-agent.io/rotate-dek=x --overwrite 2>&1)
like "$out" "Forbidden|forbidden" "view: cannot request a rotation"

# ---- the rest is the agent's: the admission policy vtpm-agent-tpmstate-users ----
out=$(as_owner -n "$NS" annotate tpmstate win11 example.com/note=x 2>&1)
like "$out" "of its annotations you may set only vtpm-agent.io/rotate-kek and vtpm-agent.io/rotate-dek" \
  "edit: any other annotation is refused, and the message says which ones are allowed"
out=$(as_owner -n "$NS" label tpmstate win11 app.kubernetes.io/managed-by- 2>&1)
like "$out" "its spec, labels, owners and finalizers are the agent's" "edit: its labels are refused"
out=$(as_owner -n "$NS" patch tpmstate win11 --type merge -p '{"spec":{"vmName":"someone-else"}}' 2>&1)
like "$out" "its spec, labels, owners and finalizers are the agent's" "edit: its spec is refused"
out=$(as_owner -n "$NS" patch tpmstate win11 --type merge -p '{"metadata":{"finalizers":["example.com/hold"]}}' 2>&1)
like "$out" "its spec, labels, owners and finalizers are the agent's" "edit: a finalizer is refused"
out=$(as_owner -n "$NS" patch tpmstate win11 --subresource=status --type merge -p '{"status":{"phase":"Ready"}}' 2>&1)
like "$out" "Forbidden|forbidden" "edit: its status is forbidden (RBAC)"
out=$(as_owner -n "$NS" delete tpmstate win11 2>&1)
like "$out" "Forbidden|forbidden" "edit: deleting it is forbidden (RBAC)"
is "$(k get tpmstate win11 -o jsonpath='{.spec.vmName}/{.metadata.labels.app\.kubernetes\.io/managed-by}/{.metadata.finalizers}')" \
  "win11/vtpm-agent/" "the TPMState is as the agent made it, with the owner's rotation request only"

# ---- no KEK ----
is "$(as_owner -n vtpm-system auth can-i get secrets)/$(as_owner -n vtpm-system auth can-i list secrets)" "no/no" \
  "edit: no access to the KEK Secrets (namespace vtpm-system)"
out=$(as_owner -n vtpm-system get secret "vtpm-kek-$NS" 2>&1)
like "$out" "Forbidden|forbidden" "edit: reading the namespace's own KEK Secret is forbidden"

# A cluster admin (system:masters) is not held by the policy.
ok "a cluster admin still labels a TPMState" k label tpmstate win11 example.com/checked=yes
