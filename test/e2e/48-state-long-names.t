#!/usr/bin/env bash
# Issue 4, acceptance 2 (long names): a VM whose name is too long for
# "persistent-state-for-<vm>" gets a deterministic shortened PVC name (<= 253,
# hash suffix) and a label value <= 63; the PVC is findable by label and
# from .status.pvcName, and two such VMs sharing a long prefix do not collide.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-48
. "$(dirname "$0")/lib-agent.sh"

plan 20

cls=e2e48-$NS
ok_here "StorageClass $cls" testbed_class "$cls"
provisioner_start
ok_here "agent starts" agent_start agent "$(agent_config agent "$cls")"

prefix=$(printf 'windows-11-enterprise-%.0s' $(seq 1 11))   # 242 characters
long1=${prefix}vm-one
long2=${prefix}vm-two
ok "VM names of ${#long1} and ${#long2} characters are accepted" k apply -f - <<<"$(vm_yaml "$long1" "{persistent: true}"; vm_yaml "$long2" "{persistent: true}"; vm_yaml "${prefix}eph" "{}")"

ready() { [ "$(k get tpmstate "$1" -o jsonpath='{.status.phase}')" = Ready ]; }
for vm in "$long1" "$long2"; do
  short=...${vm: -12}
  if wait_until 60 ready "$vm"; then pass "$short: TPMState Ready"; else fail "$short: TPMState Ready" "$(k get tpmstate "$vm" -o yaml 2>&1 | tail -20)"; fi
  pvc=$(k get tpmstate "$vm" -o jsonpath='{.status.pvcName}')
  ok "$short: .status.pvcName $pvc exists" k get pvc "$pvc"
  like "$pvc" '^persistent-state-for-windows-11-enterprise-.*-[0-9a-f]{10}$' "$short: PVC name shortened with a hash suffix"
  [ "${#pvc}" -le 253 ] && pass "$short: PVC name is ${#pvc} <= 253 characters" || fail "$short: PVC name ${#pvc} > 253"
  label=$(k get pvc "$pvc" -o jsonpath='{.metadata.labels.vtpm-agent\.io/vm}')
  [ -n "$label" ] && [ "${#label}" -le 63 ] && pass "$short: label vtpm-agent.io/vm=$label (${#label} <= 63)" || fail "$short: label length ${#label}"
  is "$(k get pvc -l "vtpm-agent.io/vm=$label" -o jsonpath='{.items[*].metadata.name}')" "$pvc" "$short: the PVC is found by its label"
  eval "pvc_${vm: -3}=\$pvc"
done
[ "$pvc_one" != "$pvc_two" ] && pass "distinct VMs with a common 242-character prefix get distinct PVCs" || fail "PVC names collide: $pvc_one"
is "$(k get pvc "$pvc_one" -o jsonpath='{.metadata.annotations.vtpm-agent\.io/vm-name}')" "$long1" \
  "the PVC's annotation carries the VM's full name"

# Events about a VM with a long name still get recorded (their names are
# derived from the VM's and must stay <= 253 characters).
eph_warned() { [ "$(event_count "${prefix}eph" NonPersistentTPM)" -ge 1 ]; }
if wait_until 30 eph_warned; then pass "a NonPersistentTPM Warning is recorded for a VM with a ${#prefix}+3-character name"
else fail "a NonPersistentTPM Warning for the long-named VM" "$(grep -i event "$(agent_log agent)" | tail -3)"; fi

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
