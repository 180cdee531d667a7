#!/usr/bin/env bash
# Issue 4, acceptance 2 (persistence turned off, VM deleted): turning
# persistence off or removing the TPM keeps the PVC byte-identical and the
# TPMState says Retained and how to release it; deleting the VM lets the
# real garbage collector remove PVC and TPMState.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-44
. "$(dirname "$0")/lib-agent.sh"

plan 20

cls=e2e44-$NS
ok_here "StorageClass $cls" testbed_class "$cls"
provisioner_start
ok_here "agent starts" agent_start agent "$(agent_config agent "$cls")"
phase_reason() { k get tpmstate "$1" -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].reason}'; }
is_phase_reason() { [ "$(phase_reason "$1")" = "$2" ]; }
# resourceVersion is left out: kube-controller-manager's PV binder and
# pvc-protection controller may still write to a fresh PVC; that the agent
# never does is checked in the audit log below.
snapshot() { k get pvc "$1" -o json | jq -c '{spec, owners: .metadata.ownerReferences, labels: .metadata.labels}'; }

k apply -f - >/dev/null <<<"$(vm_yaml vm-off "{persistent: true}"; vm_yaml vm-gone "{persistent: true}"; vm_yaml vm-del "{persistent: true}")"
for vm in vm-off vm-gone vm-del; do
  if wait_until 60 is_phase_reason $vm Ready/StateVolumeBound; then pass "$vm: Ready"; else fail "$vm: Ready" "got $(phase_reason $vm)"; fi
done
before_off=$(snapshot persistent-state-for-vm-off)
before_gone=$(snapshot persistent-state-for-vm-gone)

ok "vm-off: persistent: false" k patch vm vm-off --type merge -p '{"spec":{"template":{"spec":{"domain":{"devices":{"tpm":{"persistent":false}}}}}}}'
ok "vm-gone: TPM removed" k patch vm vm-gone --type json -p '[{"op":"remove","path":"/spec/template/spec/domain/devices/tpm"}]'
for vm in vm-off vm-gone; do
  if wait_until 30 is_phase_reason $vm Retained/StateRetained; then pass "$vm: TPMState Retained/StateRetained"; else fail "$vm: TPMState Retained/StateRetained" "got $(phase_reason $vm)"; fi
done
like "$(k get tpmstate vm-off -o jsonpath='{.status.message}')" "retained in PVC persistent-state-for-vm-off. Delete that PVC to release it on purpose" \
  "vm-off: the status says the state is retained and how to release it"
sleep 3 # proving that nothing happens
is "$(snapshot persistent-state-for-vm-off)" "$before_off" "vm-off: PVC spec byte-identical, owner and labels unchanged"
is "$(snapshot persistent-state-for-vm-gone)" "$before_gone" "vm-gone: PVC spec byte-identical, owner and labels unchanged"

# Deleting the VM: the garbage collector (kube-controller-manager) removes
# the dependents through their ownerReferences; it discovers new CRDs about
# 20 s after they appear, hence the deadline.
pvc_uid=$(k get pvc persistent-state-for-vm-del -o jsonpath='{.metadata.uid}')
ok "delete VM vm-del" k delete vm vm-del --wait=false
gone() { local out; out=$(k get "$1" "$2" 2>&1); [[ $out == *"(NotFound)"* ]]; }
t0=$(date +%s)
if wait_until 90 gone pvc persistent-state-for-vm-del; then
  pass "vm-del: PVC garbage-collected ($(( $(date +%s) - t0 )) s)"
else
  fail "vm-del: PVC garbage-collected" "$(k get pvc persistent-state-for-vm-del -o yaml 2>&1 | head -30)"
fi
if wait_until 60 gone tpmstate vm-del; then pass "vm-del: TPMState garbage-collected"; else fail "vm-del: TPMState garbage-collected"; fi
# And the agent did not recreate them (the VM is gone, not flapping).
sleep 2
is "$(k get pvc -o name | sort | tr '\n' ' ')" "persistentvolumeclaim/persistent-state-for-vm-gone persistentvolumeclaim/persistent-state-for-vm-off " \
  "only the retained PVCs remain"
is "$(agent_pvc_writes delete update patch)" "" "the agent never deleted, updated or patched a PVC (audit log)"
is "$(agent_pvc_writes create | sort | tr '\n' ' ')" \
  "create persistent-state-for-vm-del create persistent-state-for-vm-gone create persistent-state-for-vm-off " \
  "the agent created each PVC once (audit log)"

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
