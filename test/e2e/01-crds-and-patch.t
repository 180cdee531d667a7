#!/usr/bin/env bash
# Issue 2, acceptance 2: the hand-written CRDs are served, and the documented
# patch gives an existing Windows 11 style VM (no tpm section) a persistent TPM.
. "$(dirname "$0")/lib.sh"

plan 18
setup_namespace

# Every kind from manifests/crds/ is served under its group/version.
resources=$(kubectl api-resources --no-headers -o wide 2>&1)
for want in "virtualmachines .*kubevirt.io/v1 .*true .*VirtualMachine" \
            "kubevirts .*kubevirt.io/v1 .*true .*KubeVirt" \
            "tpmstates .*vtpm-agent.io/v1alpha1 .*true .*TPMState" \
            "virtualmachineclusterpreferences .*instancetype.kubevirt.io/v1beta1 .*false .*VirtualMachineClusterPreference" \
            "virtualmachinepreferences .*instancetype.kubevirt.io/v1beta1 .*true .*VirtualMachinePreference" \
            "hyperconvergeds .*hco.kubevirt.io/v1beta1 .*true .*HyperConverged" \
            "storageprofiles .*cdi.kubevirt.io/v1beta1 .*false .*StorageProfile"; do
  if grep -Eq "^$want( |$)" <<<"$resources"; then pass "served: ${want%% *}"
  else fail "served: ${want%% *}" "no line matching /^$want/ in kubectl api-resources"; fi
done

ok "kubectl get tpmstate works (empty namespace)" k get tpmstate

ok "apply manifests/examples/win11.yaml" k apply -f "$E2E_TOP/manifests/examples/win11.yaml"
is "$(k get vm win11 -o jsonpath='{.spec.template.spec.domain.devices.tpm}')" "" \
  "win11 starts without a tpm section"
# Fields without a schema are preserved, not pruned.
is "$(k get vm win11 -o jsonpath='{.spec.template.spec.domain.firmware.bootloader.efi.secureBoot}/{.spec.template.spec.domain.features.smm.enabled}')" \
  "true/true" "unschema'd fields (EFI secureBoot, SMM) survive the round trip"

# The exact command from the documentation, words unchanged; the namespace
# comes from -n.
ok "the documented kubectl patch is accepted" \
  kubectl -n "$NS" patch vm win11 --type json -p '[{"op": "add", "path": "/spec/template/spec/domain/devices/tpm", "value": {"persistent": true}}]'
is "$(k get vm win11 -o jsonpath='{.spec.template.spec.domain.devices.tpm.persistent}')" "true" \
  "reads true back at .spec.template.spec.domain.devices.tpm.persistent"

# tpm.persistent is a strict boolean: a string there is refused up front (422),
# so the agent never sees that bad input.
out=$(kubectl -n "$NS" patch vm win11 --type merge \
  -p '{"spec":{"template":{"spec":{"domain":{"devices":{"tpm":{"persistent":"yes"}}}}}}}' 2>&1)
like "$out" '(Invalid value.*persistent.*boolean|persistent in body must be of type boolean)' "a string for tpm.persistent is refused by the API server"
is "$(k get vm win11 -o jsonpath='{.spec.template.spec.domain.devices.tpm.persistent}')" "true" \
  "the refused patch changed nothing"

# TPMState: status subresource and the printer columns `kubectl get tpmstate` shows.
ok "create a TPMState" k apply -f - <<'YAML'
apiVersion: vtpm-agent.io/v1alpha1
kind: TPMState
metadata: {name: win11}
spec: {vmName: win11}
YAML
ok "its status is written through the status subresource" \
  kubectl -n "$NS" patch tpmstate win11 --subresource status --type merge -p '{"status":{"phase":"Ready","pvcName":"persistent-state-for-win11","storageClass":"nfs","encrypted":true,"node":"node-1","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-11-23T10:00:00Z","reason":"StateReady","message":""},{"type":"TPMRunning","status":"False","lastTransitionTime":"2026-11-23T10:00:00Z","reason":"KeyUnwrapFailed","message":"the state key does not unwrap"}]}}'
like "$(k get tpmstate win11 --no-headers)" \
  '^win11 +win11 +Ready +KeyUnwrapFailed +persistent-state-for-win11 +nfs +true +node-1 ' \
  "kubectl get tpmstate shows VM, Phase, TPM (the node's verdict), PVC, StorageClass, Encrypted, Node"
