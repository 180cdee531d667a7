#!/usr/bin/env bash
# Issue 4, acceptance 1: 200 VMs created at once (100 with a persistent TPM,
# 50 with a non-persistent one, 50 without a TPM) while three agent
# processes run: exactly 100 state PVCs, all correctly shaped and owned, no
# Warning but the expected NonPersistentTPM ones (one per VM), a Ready
# TPMState for every persistent VM once its PVC binds, and one writer.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-40
. "$(dirname "$0")/lib-agent.sh"

plan 16

cls="e2e40-$NS"
ok_here "StorageClass $cls (test-bed RWX provisioner)" testbed_class "$cls"
provisioner_start
# A per-class minimum above the default 10Mi: the PVC must ask for 20Mi.
AGENT_STATE_EXTRA="  minimumSizes: {$cls: 20Mi}"
cfg=$(agent_config agent "$cls")
ok_here "three agents start (distinct identities)" agent_start_n 3 "$cfg" burst

manifest="$AGENT_DIR/vms.yaml"
: > "$manifest"
for i in $(seq -w 0 199); do
  case $(( 10#$i % 4 )) in
    0|2) vm_yaml "vm-$i" "{persistent: true}" ;;
    1) vm_yaml "vm-$i" "{persistent: false}" ;;
    3) vm_yaml "vm-$i" ;;
  esac >> "$manifest"
done
t0=$(date +%s)
ok "create 200 VMs in one request stream" kubectl create -f "$manifest"

pvc_count() { k get pvc -o name | wc -l; }
pvcs_are() { [ "$(pvc_count)" -eq "$1" ]; }
if wait_until 120 pvcs_are 100; then
  pass "100 PVCs exist ($(( $(date +%s) - t0 )) s after the first VM)"
else
  fail "100 PVCs exist" "got $(pvc_count)"
fi

k get pvc -o json > "$AGENT_DIR/pvcs.json"
k get vm -o json > "$AGENT_DIR/vms.json"
pvcs=$(cat "$AGENT_DIR/pvcs.json")
want_names=$(for i in $(seq -w 0 199); do (( 10#$i % 2 == 0 )) && echo "persistent-state-for-vm-$i"; done)
is "$(jq -r '.items[].metadata.name' <<<"$pvcs" | sort)" "$want_names" \
  "exactly the persistent VMs have a PVC, named persistent-state-for-<vm>"

# Every PVC: RWX, Filesystem, 20Mi, our class, labels naming VM and manager.
bad_shape=$(jq -c --arg cls "$cls" '[.items[] | select(
    (.spec.accessModes != ["ReadWriteMany"]) or (.spec.volumeMode != "Filesystem")
    or (.spec.resources.requests.storage != "20Mi") or (.spec.storageClassName != $cls)
    or (.metadata.labels["app.kubernetes.io/managed-by"] != "vtpm-agent")
    or ("persistent-state-for-" + .metadata.labels["vtpm-agent.io/vm"] != .metadata.name)
  ) | .metadata.name]' <<<"$pvcs")
is "$bad_shape" "[]" "all PVCs RWX, Filesystem, 20Mi (class minimum), class $cls, labelled with VM and manager"

# Every PVC: exactly one ownerReference, to its VM's uid, controller and blockOwnerDeletion.
bad_owner=$(jq -c --slurpfile vms "$AGENT_DIR/vms.json" '
  ($vms[0].items | map({key: .metadata.name, value: .metadata.uid}) | from_entries) as $uid
  | [.items[] | select(
      (.metadata.ownerReferences | length) != 1
      or .metadata.ownerReferences[0].kind != "VirtualMachine"
      or .metadata.ownerReferences[0].apiVersion != "kubevirt.io/v1"
      or .metadata.ownerReferences[0].name != (.metadata.name | ltrimstr("persistent-state-for-"))
      or .metadata.ownerReferences[0].uid != $uid[.metadata.ownerReferences[0].name]
      or .metadata.ownerReferences[0].controller != true
      or .metadata.ownerReferences[0].blockOwnerDeletion != true
  ) | .metadata.name]' "$AGENT_DIR/pvcs.json")
is "$bad_owner" "[]" "all PVCs controlled by their VM (uid, controller, blockOwnerDeletion)"

ready_count() {
  k get tpmstate -o json | jq '[.items[] | select(.status.conditions // [] | any(.type == "Ready" and .status == "True"))] | length'
}
ready_is() { [ "$(ready_count)" -eq "$1" ]; }
if wait_until 120 ready_is 100; then
  pass "100 TPMStates Ready once the PVCs bound ($(( $(date +%s) - t0 )) s)"
else
  fail "100 TPMStates Ready" "got $(ready_count)" "$(k get pvc --no-headers | awk '{print $2}' | sort | uniq -c)"
fi
ts=$(k get tpmstate -o json)
is "$(jq -r '.items[] | select(.status.phase == "Ready") | .spec.vmName' <<<"$ts" | sort)" \
  "$(for i in $(seq -w 0 199); do (( 10#$i % 2 == 0 )) && echo "vm-$i"; done)" \
  "the Ready TPMStates are exactly the persistent VMs'"
is "$(jq -r '[.items[] | select(.status.phase == "Ready") | select(.status.pvcName != "persistent-state-for-" + .spec.vmName or .status.storageClass != "'"$cls"'" or .status.storageClassSource != "AgentConfig")] | length' <<<"$ts")" \
  0 "Ready TPMStates name their PVC, class and class source"
is "$(jq -r '[.items[] | select(.spec.vmName | test("^vm-[0-9]+$")) | select((.spec.vmName | ltrimstr("vm-") | tonumber) % 4 == 3)] | length' <<<"$ts")" \
  0 "VMs without a TPM get no TPMState"

# Events: only the expected NonPersistentTPM warnings, one per such VM.
nonpersistent_warned() {
  [ "$(k get events.events.k8s.io -o json | jq '[.items[] | select(.reason == "NonPersistentTPM")] | length')" -eq 50 ]
}
wait_until 30 nonpersistent_warned
ev=$(k get events.events.k8s.io -o json)
is "$(jq -c '[.items[] | select(.type == "Warning" and .reason != "NonPersistentTPM") | "\(.regarding.name) \(.reason): \(.note)"]' <<<"$ev")" \
  "[]" "no Warning event except NonPersistentTPM"
is "$(jq -r '.items[] | select(.reason == "NonPersistentTPM") | "\(.regarding.name) \(.series.count // 1)"' <<<"$ev" | sort)" \
  "$(for i in $(seq -w 0 199); do (( 10#$i % 4 == 1 )) && echo "vm-$i 1"; done)" \
  "exactly one NonPersistentTPM Warning per non-persistent VM"

# One writer: only the Lease holder created PVCs.
leader=$(agent_leader)
writers=$(grep -l '"state volume created"' "$AGENT_DIR"/burst-*.log | xargs -rn1 basename | sed 's/\.log$//' | tr '\n' ' ')
is "$writers" "$leader " "only the Lease holder ($leader) created PVCs"

ok_here "the agents stop cleanly on SIGTERM" agent_stop_all
agent_sanitizer_check
