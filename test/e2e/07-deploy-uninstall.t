#!/usr/bin/env bash
# Issue 21, acceptance 1: installing and uninstalling vtpm-agent as shipped
# (`kubectl apply -k deploy/base`, then `kubectl delete -k deploy/base`, the
# README's steps) on a cluster running real KubeVirt leaves every KubeVirt CRD,
# every VM and every state PVC KubeVirt made as it was, and the namespace
# vtpm-system with its KEK Secrets (the `secret` key provider's): without
# them every encrypted vTPM state is lost for good. Compared before and after
# by uid and generation (a deleted and re-created object has a new uid).
# The VM's state PVC is KubeVirt's own: a VM with `tpm: {persistent: true}`
# whose VMI cannot be scheduled (a nodeSelector no node has), so KubeVirt
# makes the PVC (before the launcher pod) and nothing boots. deploy/base's
# image (vtpm-agent:latest) is not on the nodes and is never pulled here, so
# no agent runs: this is about what the manifests touch.
# At the end the TPMState CRD the test bed had (manifests/crds/) is put back.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_kubevirt
plan 12
setup_namespace
cd "$E2E_TOP"
T=$(mktemp -d "$VTPM_RUN/e2e-07.XXXXXX")
at_exit "rm -rf '$T'"
# Whatever happens, the test bed keeps its TPMState CRD for the suites after this one.
at_exit "kubectl apply -f manifests/crds/ >/dev/null 2>&1 &&
  kubectl wait --for condition=Established --timeout=60s crd/tpmstates.vtpm-agent.io >/dev/null 2>&1"

class=$NS-rwx
rn_storage_up "$T/store" "$class"   # the default class for VM state (is-default-virt-class)
at_exit rn_storage_down
at_exit "kubectl delete storageclass $class --ignore-not-found >/dev/null 2>&1"

# ---- what an operator has before installing vtpm-agent ----
k apply -f - >/dev/null <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: win11}
spec:
  runStrategy: Always
  template:
    spec:
      nodeSelector: {kubernetes.io/hostname: no-such-node}
      domain:
        devices: {tpm: {persistent: true}}
        resources: {requests: {memory: 64Mi}}
EOF
pvc_bound() { [ "$(k get pvc -l persistent-state-for=win11 -o jsonpath='{.items[*].status.phase}')" = Bound ]; }
ok "KubeVirt made the VM's state PVC (label persistent-state-for=win11), Bound" wait_until 60 pvc_bound
diag "state PVC: $(k get pvc -l persistent-state-for=win11 -o jsonpath='{.items[0].metadata.name}')"
# The step before `apply -k` (README: Deploying): the namespace, on its own.
ok "kubectl apply -f manifests/namespace.yaml" kubectl apply -f manifests/namespace.yaml
# A KEK Secret as the secret provider makes it (pkg/keys/provider_secret.c).
kek=vtpm-kek-$NS
kubectl -n vtpm-system create secret generic "$kek" --from-literal=kek-1="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  >/dev/null && kubectl -n vtpm-system label secret "$kek" app.kubernetes.io/managed-by=vtpm-agent >/dev/null &&
  kubectl -n vtpm-system annotate secret "$kek" vtpm-agent.io/kek-for="$NS" vtpm-agent.io/current-kek=1 >/dev/null
at_exit "kubectl -n vtpm-system delete secret $kek --ignore-not-found >/dev/null 2>&1"

# snapshot: one line per object that must outlive the agent: KubeVirt's CRDs
# (every *kubevirt.io group: KubeVirt's, and CDI's and HCO's as the test bed
# has them), every VM, every state PVC KubeVirt made, the namespace and its
# KEK Secrets (with a digest of their data).
snapshot() {
  kubectl get crd -o json | jq -r '.items[] | select(.spec.group | test("(^|\\.)kubevirt\\.io$"))
    | "crd \(.metadata.name) \(.metadata.uid) \(.metadata.generation)"'
  kubectl get vm -A -o json | jq -r '.items[] | "vm \(.metadata.namespace)/\(.metadata.name) \(.metadata.uid) \(.metadata.generation)"'
  kubectl get pvc -A -l persistent-state-for -o json |
    jq -r '.items[] | "pvc \(.metadata.namespace)/\(.metadata.name) \(.metadata.uid) \(.spec.volumeName) \(.status.phase)"'
  kubectl get ns vtpm-system -o json 2>/dev/null | jq -r '"namespace \(.metadata.name) \(.metadata.uid) \(.status.phase)"'
  kubectl -n vtpm-system get secret -l app.kubernetes.io/managed-by=vtpm-agent -o json |
    jq -r '.items[] | "secret \(.metadata.name) \(.metadata.uid) \(.data | tostring | @base64)"' |
    while read -r a b c d; do echo "$a $b $c $(printf '%s' "$d" | sha256sum | cut -c1-16)"; done
}
# Every VM and state PVC in the cluster is compared, so the suites before this
# one must be done deleting theirs (a suite deletes its namespace at exit
# without waiting): nothing else changes them while this one runs.
terminating() { kubectl get ns -o jsonpath='{range .items[?(@.status.phase=="Terminating")]}{.metadata.name} {end}'; }
_calm() { [ -z "$(terminating)" ]; }
wait_until 300 _calm || diag "namespaces still being deleted after 300 s: $(terminating)"
snapshot | sort > "$T/before"
diag "before: $(cut -d' ' -f1 "$T/before" | sort | uniq -c | tr -s ' \n' ' ')"
like "$(grep -c '^crd ' "$T/before")" '^[1-9][0-9]*$' "KubeVirt's CRDs are there to compare"
ok "the KEK Secret is there to compare" grep -q "^secret $kek " "$T/before"

# ---- install, then uninstall, as the README says ----
ok "kubectl apply -k deploy/base" kubectl apply -k deploy/base
kinds=$(kubectl kustomize deploy/base | yq -r '.kind' | sort | uniq -c | tr -s ' \n' ' ')
diag "deploy/base: $kinds"
if grep -q ' CustomResourceDefinition' <<<"$kinds" &&
   [ "$(kubectl kustomize deploy/base | yq -r 'select(.kind == "CustomResourceDefinition") | .spec.group' | sort -u)" = vtpm-agent.io ]; then
  pass "deploy/base's only CRD is vtpm-agent.io's own (TPMState)"
else fail "deploy/base's only CRD is vtpm-agent.io's own" "$(kubectl kustomize deploy/base | yq -r 'select(.kind == "CustomResourceDefinition") | .metadata.name')"; fi
if grep -q ' Namespace' <<<"$kinds"; then
  fail "deploy/base holds no Namespace (deleting it would delete the KEK Secrets in it)" "$kinds"
else pass "deploy/base holds no Namespace (deleting it would delete the KEK Secrets in it)"; fi
ok "kubectl delete -k deploy/base (waits for what it deletes)" kubectl delete -k deploy/base --wait=true --timeout=120s
snapshot | sort > "$T/after"
d=$(diff "$T/before" "$T/after")
is "$d" "" "every KubeVirt CRD, VM and state PVC, the namespace and its KEK Secret: same uid, generation, data" ||
  diag "before:" "$(cat "$T/before")" "after:" "$(cat "$T/after")"
ok "deploy/base's own objects are gone (the TPMState CRD with them)" \
  bash -c "! kubectl get -f <(kubectl kustomize deploy/base) -o name 2>/dev/null | grep -q ."
ok "the VM still asks for its persistent TPM" \
  bash -c "[ \"\$(kubectl -n $NS get vm win11 -o jsonpath='{.spec.template.spec.domain.devices.tpm.persistent}')\" = true ]"

ok "the VM is deleted" k delete vm win11 --wait=true --timeout=60s
