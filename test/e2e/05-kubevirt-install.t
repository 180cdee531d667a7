#!/usr/bin/env bash
# Real KubeVirt on the test bed (issue 20, acceptance 1 and 4): built from the
# source in ../shared/kubevirt/ and installed by hack/kubevirt-up.sh the way
# users install it (virt-operator's manifest from KubeVirt's own template, then
# a KubeVirt CR). The CR is Deployed; virt-api and virt-controller are Ready;
# virt-handler is Ready on every node; the CRDs are KubeVirt's own (installed by
# virt-operator, not the test bed's stand-ins); the API server reaches virt-api
# (its admission webhooks refuse a bad VM, its subresource API answers); and
# KubeVirt's own examples are accepted by the real API and webhooks (server-side
# dry run: nothing is started), except those that need what the test bed does
# not run (listed below, each with the refusal it must get).
# Skipped unless the test bed runs KubeVirt (the default; not VTPM_KUBEVIRT=0).
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
require_kubevirt
plan 11
setup_namespace
kv() { kubectl -n kubevirt "$@"; }
src=$(dirname "$KUBEVIRT_BIN")/src

# (After suite 03 took the nodes down and up, KubeVirt's pods come back first.)
kv_deployed() { [ "$(kv get kv kubevirt -o jsonpath='{.status.phase}')" = Deployed ] &&
  kv wait kv kubevirt --for condition=Available --timeout 5s >/dev/null 2>&1; }
ok "the KubeVirt CR is Deployed and Available" wait_until 600 kv_deployed
is "$(kv get ds virt-handler -o jsonpath='{.spec.template.spec.containers[0].image}')" \
  "localhost/kubevirt/virt-handler:$KUBEVIRT_TAG" "virt-operator deployed the images built here (tag $KUBEVIRT_TAG)"
for d in virt-api virt-controller; do
  ok "$d is Ready" wait_until 300 sh -c \
    "r=\$(kubectl -n kubevirt get deploy $d -o jsonpath='{.status.readyReplicas}/{.spec.replicas}'); [ \"\${r%/*}\" = \"\${r#*/}\" ] && [ \"\${r%/*}\" -ge 1 ]"
done
ready_on() {
  kv get pods -l kubevirt.io=virt-handler --field-selector "spec.nodeName=$1" \
    -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}'
}
for n in $(nl_name 1) $(nl_name 2); do
  ok "virt-handler is Ready on $n" wait_until 60 sh -c "[ \"\$(kubectl -n kubevirt get pods -l kubevirt.io=virt-handler --field-selector spec.nodeName=$n -o jsonpath='{.items[*].status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
done
is "$(kubectl get crd virtualmachines.kubevirt.io -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')" \
  virt-operator "the VirtualMachine CRD is KubeVirt's own (managed by virt-operator)"

# The webhooks: a VM whose disk names no volume is refused by virt-api.
out=$(k apply -f - 2>&1 <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: no-volume}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices: {disks: [{name: missing, disk: {bus: virtio}}]}
        resources: {requests: {memory: 64Mi}}
EOF
)
like "$out" "disks\[0\]\.Name 'missing' not found" \
  "virt-api's validating webhook refuses a VM whose disk has no volume (the API server reaches virt-api)"
# The subresource API (aggregated, served by virt-api): what virtctl uses.
like "$("$KUBEVIRT_BIN/virtctl" version 2>&1)" "Server Version: .*GitVersion:\"v1\.9\.0" \
  "virtctl reaches virt-api's subresource API through the API server (aggregation layer)"

# KubeVirt's own examples, server-side dry run (the API server runs the
# webhooks; nothing is created). Some need what the test bed does not have;
# each must be refused for that reason, not another.
declare -A needs=(
  [migration-job.yaml]='the VMI "[^"]*/vmi-migratable" does not exist'
  [vmi-usb.yaml]='Host Devices feature gate is not enabled'
  [vm-cirros-with-sidecar-hook-configmap.yaml]='Sidecar'
  [vmi-with-sidecar-hook-configmap.yaml]='Sidecar'
  [vmi-with-sidecar-hook.yaml]='Sidecar'
  [vmi-host-disk.yaml]='HostDisk'
)
accepted=0 refused_ok=0 wrong=()
for f in "$src"/examples/*.yaml; do
  b=${f##*/}
  out=$(k create --dry-run=server -f "$f" 2>&1)
  if [ $? -eq 0 ] && [ -z "${needs[$b]:-}" ]; then accepted=$((accepted + 1))
  elif [ -n "${needs[$b]:-}" ] && grep -qE "${needs[$b]}" <<<"$out"; then refused_ok=$((refused_ok + 1))
  else wrong+=("$b: $(head -c 300 <<<"$out")"); fi
done
diag "examples: $accepted accepted, $refused_ok refused for what the test bed lacks"
is "${#wrong[@]}" 0 "KubeVirt's examples are accepted by the real API and webhooks ($accepted), or refused for the missing piece only ($refused_ok)"
for w in "${wrong[@]}"; do diag "$w"; done
ok "more than 30 examples accepted" [ "$accepted" -gt 30 ]
