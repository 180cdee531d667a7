#!/usr/bin/env bash
# Issue 4, acceptance 2 (class resolution order): the state PVC's
# StorageClass is, first match wins, the agent's config; the KubeVirt CR's
# spec.configuration.vmStateStorageClass; a class annotated
# storageclass.kubevirt.io/is-default-virt-class; the cluster default. Each
# case takes the next source away; .status.storageClassSource says which won.
. "$(dirname "$0")/lib.sh"
# Sort first: with several KubeVirt CRs or flagged classes the alphabetically
# first wins, so this test's own ones must, whatever else the cluster holds.
setup_namespace 0e2e-41
. "$(dirname "$0")/lib-agent.sh"

plan 18

s=$(tr -dc 'a-z0-9' < /dev/urandom | head -c 6)
c_cfg=00-e2e41-$s-config c_kv=00-e2e41-$s-kubevirt c_virt=00-e2e41-$s-virt c_def=00-e2e41-$s-default
classes() {
  testbed_class "$c_cfg" && testbed_class "$c_kv" &&
    testbed_class "$c_virt" storageclass.kubevirt.io/is-default-virt-class=true &&
    testbed_class "$c_def" storageclass.kubernetes.io/is-default-class=true
}
ok_here "four StorageClasses: one per source" classes
ok_here "KubeVirt CR naming $c_kv" kubevirt_cr_set "$c_kv"
provisioner_start

# check VM CLASS SOURCE: PVC in CLASS, TPMState says CLASS and SOURCE, Ready.
source_of() { k get tpmstate "$1" -o jsonpath='{.status.storageClass}/{.status.storageClassSource}/{.status.phase}'; }
check() {
  local vm=$1 cls=$2 src=$3 got
  k apply -f - >/dev/null <<<"$(vm_yaml "$vm" "{persistent: true}")"
  if wait_until 30 test_source "$vm" "$cls/$src/Ready"; then
    pass "$vm: TPMState says $cls from $src, Ready"
  else
    fail "$vm: TPMState says $cls from $src, Ready" "got: $(source_of "$vm")" "$(k get tpmstate "$vm" -o yaml 2>&1 | tail -25)"
  fi
  is "$(k get pvc "persistent-state-for-$vm" -o jsonpath='{.spec.storageClassName}')" "$cls" "$vm: its PVC is in $cls"
}
test_source() { [ "$(source_of "$1")" = "$2" ]; }

cfg=$(agent_config with-class "$c_cfg")
ok_here "agent with state.storageClass $c_cfg starts" agent_start cfg "$cfg"
check vm-config "$c_cfg" AgentConfig
ok_here "agent stops" agent_stop cfg

cfg=$(agent_config without-class)
ok_here "agent without state.storageClass starts" agent_start plain "$cfg"
check vm-kubevirt "$c_kv" KubeVirt

ok_here "the KubeVirt CR names no class (real KubeVirt: the field removed; the stand-in: the CR deleted)" kubevirt_cr_unset
check vm-virt "$c_virt" DefaultVirtClass

ok "remove the is-default-virt-class annotation" \
  kubectl annotate storageclass "$c_virt" storageclass.kubevirt.io/is-default-virt-class-
check vm-cluster "$c_def" ClusterDefault

# Existing state volumes never move when the resolution changes.
is "$(k get pvc persistent-state-for-vm-config -o jsonpath='{.spec.storageClassName}')" "$c_cfg" \
  "vm-config's PVC is still in $c_cfg"

ok_here "agent stops cleanly" agent_stop plain
agent_sanitizer_check
