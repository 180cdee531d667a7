#!/usr/bin/env bash
# Issue 4, acceptance 2 (foreign PVC, wrong-shape PVC): a PVC of the state
# volume's name that the VM does not control is never adopted, modified or
# deleted (spec byte-identical, resourceVersion unchanged) and the status
# says StateVolumeConflict naming its owner; an RWO PVC the VM does own is
# reported as StateVolumeWrongShape and left alone.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-43
. "$(dirname "$0")/lib-agent.sh"

plan 24

cls=e2e43-$NS
ok_here "StorageClass $cls" testbed_class "$cls"
provisioner_start
ok_here "agent starts" agent_start agent "$(agent_config agent "$cls")"

pvc() { # NAME ACCESSMODE [OWNER-YAML]
  k apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $1
  labels: {made-by: e2e-43}
${3:-}
spec:
  accessModes: [$2]
  volumeMode: Filesystem
  storageClassName: $cls
  resources: {requests: {storage: 1Mi}}
YAML
}
snapshot() { k get pvc "$1" -o json | jq -c '{spec, rv: .metadata.resourceVersion, owners: .metadata.ownerReferences, labels: .metadata.labels, ann: .metadata.annotations}'; }
phase_reason() { k get tpmstate "$1" -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].reason}'; }
is_phase_reason() { [ "$(phase_reason "$1")" = "$2" ]; }
has_event() { [ "$(event_count "$1" "$2")" -ge 1 ]; }
pvc_bound() { [ "$(k get pvc "$1" -o jsonpath='{.status.phase}')" = Bound ]; }

# --- foreign: owned by someone else, and not owned at all ---
ok "ConfigMap other-owner" k create configmap other-owner --from-literal=a=b
owner_uid=$(k get configmap other-owner -o jsonpath='{.metadata.uid}')
ok "PVC persistent-state-for-vm-foreign controlled by ConfigMap other-owner" pvc persistent-state-for-vm-foreign ReadWriteMany \
  "  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: other-owner, uid: $owner_uid, controller: true}]"
ok "PVC persistent-state-for-vm-unowned without owner" pvc persistent-state-for-vm-unowned ReadWriteMany
wait_until 30 pvc_bound persistent-state-for-vm-foreign
wait_until 30 pvc_bound persistent-state-for-vm-unowned
before_f=$(snapshot persistent-state-for-vm-foreign)
before_u=$(snapshot persistent-state-for-vm-unowned)

k apply -f - >/dev/null <<<"$(vm_yaml vm-foreign "{persistent: true}"; vm_yaml vm-unowned "{persistent: true}")"
if wait_until 30 is_phase_reason vm-foreign Conflict/StateVolumeConflict; then
  pass "vm-foreign: TPMState Conflict/StateVolumeConflict"
else
  fail "vm-foreign: TPMState Conflict/StateVolumeConflict" "got $(phase_reason vm-foreign)"
fi
like "$(k get tpmstate vm-foreign -o jsonpath='{.status.message}')" "controlled by ConfigMap other-owner \(uid $owner_uid\)" \
  "vm-foreign: the status names the PVC's owner"
if wait_until 30 is_phase_reason vm-unowned Conflict/StateVolumeConflict; then
  pass "vm-unowned: TPMState Conflict/StateVolumeConflict"
else
  fail "vm-unowned: TPMState Conflict/StateVolumeConflict" "got $(phase_reason vm-unowned)"
fi
like "$(k get tpmstate vm-unowned -o jsonpath='{.status.message}')" "no controlling owner" "vm-unowned: the status says it has no owner"
wait_until 15 has_event vm-foreign StateVolumeConflict
is "$(events_for vm-foreign | awk '{print $1, $2}')" "Warning StateVolumeConflict" "vm-foreign: a Warning event StateVolumeConflict"

# More reconciles (VM metadata change, agent restart) must not touch them either.
ok "label the VMs (another reconcile)" k label vm vm-foreign vm-unowned poke=1
ok_here "agent restarts" agent_stop agent
ok_here "agent restarted" agent_start agent "$AGENT_DIR/agent.yaml"
sleep 5 # proving that nothing happens
# resourceVersion unchanged, unless kube-controller-manager (binder,
# pvc-protection) wrote meanwhile: the audit log says who did.
same() { # NAME BEFORE
  local now; now=$(snapshot "$1")
  [ "$now" = "$2" ] && return 0
  [ "$(jq -c 'del(.rv)' <<<"$now")" = "$(jq -c 'del(.rv)' <<<"$2")" ] || { diag "changed: $now"; return 1; }
  local who; who=$(grep -F "\"namespace\":\"$NS\"" "$AUDIT_LOG" | jq -r --arg n "$1" 'select(.objectRef.resource == "persistentvolumeclaims" and .objectRef.name == $n and (.verb | test("update|patch")) and (.responseStatus.code // 0) < 300) | .user.username' | sort -u)
  diag "$1: resourceVersion changed; writers: $who"
  ! grep -qv '^system:serviceaccount:kube-system:' <<<"$who"
}
ok_here "foreign PVC: spec, owners, labels, annotations unchanged; resourceVersion too (or only kube-system wrote)" same persistent-state-for-vm-foreign "$before_f"
ok_here "unowned PVC: spec, owners, labels, annotations unchanged; resourceVersion too (or only kube-system wrote)" same persistent-state-for-vm-unowned "$before_u"

# --- wrong shape: owned by the VM, but RWO ---
k apply -f - >/dev/null <<<"$(vm_yaml vm-rwo)"
rwo_uid=$(k get vm vm-rwo -o jsonpath='{.metadata.uid}')
ok "PVC persistent-state-for-vm-rwo: RWO, controlled by VM vm-rwo" pvc persistent-state-for-vm-rwo ReadWriteOnce \
  "  ownerReferences: [{apiVersion: kubevirt.io/v1, kind: VirtualMachine, name: vm-rwo, uid: $rwo_uid, controller: true, blockOwnerDeletion: true}]"
wait_until 30 pvc_bound persistent-state-for-vm-rwo
before_r=$(snapshot persistent-state-for-vm-rwo)
ok "turn on persistence for vm-rwo" k patch vm vm-rwo --type json \
  -p '[{"op":"add","path":"/spec/template/spec/domain/devices/tpm","value":{"persistent":true}}]'
if wait_until 30 is_phase_reason vm-rwo Error/StateVolumeWrongShape; then
  pass "vm-rwo: TPMState Error/StateVolumeWrongShape"
else
  fail "vm-rwo: TPMState Error/StateVolumeWrongShape" "got $(phase_reason vm-rwo)"
fi
like "$(k get tpmstate vm-rwo -o jsonpath='{.status.message}')" 'accessModes \["ReadWriteOnce"\].*needs ReadWriteMany' \
  "vm-rwo: the status says what is wrong"
wait_until 15 has_event vm-rwo StateVolumeWrongShape
is "$(events_for vm-rwo | awk '{print $1, $2}')" "Warning StateVolumeWrongShape" "vm-rwo: a Warning event StateVolumeWrongShape"
sleep 3 # proving that nothing happens
ok_here "wrong-shape PVC: unchanged (resourceVersion too, or only kube-system wrote)" same persistent-state-for-vm-rwo "$before_r"

is "$(agent_pvc_writes create delete update patch)" "" "the agent never created, deleted, updated or patched a PVC here (audit log)"

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
