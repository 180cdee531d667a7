#!/usr/bin/env bash
# Issue 4, acceptance 2 (missing class): a StorageClass that is named but
# does not exist, or no class at all, gives no PVC, a TPMState that says
# why, and a Warning event; the PVC appears by itself once a class exists.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-42
. "$(dirname "$0")/lib-agent.sh"

plan 17

provisioner_start
s=$(tr -dc 'a-z0-9' < /dev/urandom | head -c 6)
missing=e2e42-$s-later
phase_reason() { k get tpmstate "$1" -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].reason}'; }
is_phase_reason() { [ "$(phase_reason "$1")" = "$2" ]; }
has_event() { [ "$(event_count "$1" "$2")" -ge 1 ]; }

# --- a named class that does not exist ---
cfg=$(agent_config named "$missing")
ok_here "agent with state.storageClass $missing (absent) starts" agent_start named "$cfg"
k apply -f - >/dev/null <<<"$(vm_yaml vm-a "{persistent: true}")"
if wait_until 30 is_phase_reason vm-a Error/StorageClassNotFound; then
  pass "vm-a: TPMState Error/StorageClassNotFound"
else
  fail "vm-a: TPMState Error/StorageClassNotFound" "got $(phase_reason vm-a)"
fi
like "$(k get tpmstate vm-a -o jsonpath='{.status.message}')" "StorageClass \"$missing\", named by the agent's configuration.*does not exist" \
  "vm-a: the status names the class and where it was named"
wait_until 15 has_event vm-a StorageClassNotFound
is "$(events_for vm-a | awk '{print $1, $2}')" "Warning StorageClassNotFound" "vm-a: one Warning event StorageClassNotFound"
is "$(k get pvc -o name)" "" "no PVC while the class is missing"

ok_here "create StorageClass $missing" testbed_class "$missing"
pvc_exists() { k get pvc "persistent-state-for-$1" >/dev/null 2>&1; }
if wait_until 30 pvc_exists vm-a; then pass "vm-a: the PVC appeared by itself"; else fail "vm-a: the PVC appeared by itself"; fi
if wait_until 30 is_phase_reason vm-a Ready/StateVolumeBound; then
  pass "vm-a: TPMState Ready once the PVC bound"
else
  fail "vm-a: TPMState Ready once the PVC bound" "got $(phase_reason vm-a)"
fi
ok_here "agent stops" agent_stop named

# --- no class at all: needs a cluster without default classes or KubeVirt CRs ---
flagged=$(kubectl get storageclass -o json | jq -r '.items[] | select(.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true" or .metadata.annotations["storageclass.kubevirt.io/is-default-virt-class"] == "true") | .metadata.name')
kvs=$(kubectl get kubevirts.kubevirt.io -A -o name 2>/dev/null; kubectl get hyperconvergeds.hco.kubevirt.io -A -o name 2>/dev/null)
if [ -n "$flagged$kvs" ]; then
  for i in 1 2 3 4 5 6; do skip "NoStorageClass: the cluster has default classes or KubeVirt/HCO CRs: $flagged $kvs"; done
else
  cfg=$(agent_config plain)
  ok_here "agent without state.storageClass starts" agent_start plain "$cfg"
  k apply -f - >/dev/null <<<"$(vm_yaml vm-b "{persistent: true}")"
  if wait_until 30 is_phase_reason vm-b Error/NoStorageClass; then
    pass "vm-b: TPMState Error/NoStorageClass"
  else
    fail "vm-b: TPMState Error/NoStorageClass" "got $(phase_reason vm-b)"
  fi
  like "$(k get tpmstate vm-b -o jsonpath='{.status.message}')" "is-default-virt-class=true" \
    "vm-b: the status says how to provide a class"
  wait_until 15 has_event vm-b NoStorageClass
  is "$(events_for vm-b | awk '{print $1, $2}')" "Warning NoStorageClass" "vm-b: one Warning event NoStorageClass"
  ok_here "annotate a class is-default-virt-class" testbed_class "e2e42-$s-virt" storageclass.kubevirt.io/is-default-virt-class=true
  if wait_until 30 is_phase_reason vm-b Ready/StateVolumeBound; then
    pass "vm-b: PVC created and bound by itself once a default class exists"
  else
    fail "vm-b: PVC created and bound by itself once a default class exists" "got $(phase_reason vm-b)"
  fi
fi
ok_here "agents stop cleanly" agent_stop_all
agent_sanitizer_check
