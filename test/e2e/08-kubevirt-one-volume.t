#!/usr/bin/env bash
# One state volume per VM on real KubeVirt (issue 21, acceptance 2). KubeVirt
# makes a state PVC for every VMI with a persistent TPM (generateName
# persistent-state-for-<vm>-, label persistent-state-for=<vm>) right before
# its launcher pod; the agent makes persistent-state-for-<vm> for every VM
# with one. 100 VMs with `tpm: {persistent: true}` and runStrategy Always are
# created at once while the agent runs, so virt-controller and the agent race
# for every VM. Afterwards: exactly one state volume per VM (labelled or of the
# agent's name, not being deleted), the one its launcher pod mounts as
# vm-state; the TPMState names it and says who made it; no
# StateVolumeDuplicate; every launcher runs (the VMs start paused: QEMU is
# created, swtpm runs on the volume, no guest CPU is spent under TCG).
# Skipped unless the test bed runs KubeVirt (the default; not VTPM_KUBEVIRT=0).
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_kubevirt
setup_namespace e2e-08
. "$(dirname "$0")/lib-agent.sh"
N=${E2E_RACE_VMS:-100}
plan 13

# Storage: the test bed's RWX provisioner; the same class for KubeVirt (the
# CR's vmStateStorageClass, put back at the end) and for the agent.
class=$NS-rwx
rn_storage_up "$AGENT_DIR/store" "$class"
at_exit rn_storage_down
at_exit "kubectl delete storageclass $class --ignore-not-found >/dev/null 2>&1"
old=$(kubectl -n kubevirt get kv kubevirt -o jsonpath='{.spec.configuration.vmStateStorageClass}')
kubectl -n kubevirt patch kv kubevirt --type merge \
  -p "{\"spec\":{\"configuration\":{\"vmStateStorageClass\":\"$class\"}}}" >/dev/null
if [ -n "$old" ]; then
  at_exit "kubectl -n kubevirt patch kv kubevirt --type merge -p '{\"spec\":{\"configuration\":{\"vmStateStorageClass\":\"$old\"}}}' >/dev/null"
else
  at_exit "kubectl -n kubevirt patch kv kubevirt --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/configuration/vmStateStorageClass\"}]' >/dev/null"
fi

cfg=$(agent_config agent "$class")
ok_here "the agent's state controller starts" agent_start agent "$cfg"

# Small VMs: no disk, no NIC, 32Mi, started paused; a CPU request of 5m so
# that 100 launchers fit the two test-bed nodes' allocatable CPU.
manifest="$AGENT_DIR/vms.yaml"
for i in $(seq -w 1 "$N"); do
  cat <<EOF
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: race-$i, namespace: $NS}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 0
      startStrategy: Paused
      domain:
        memory: {guest: 32Mi}
        resources: {requests: {cpu: 5m}}
        devices:
          tpm: {persistent: true}
          autoattachPodInterface: false
          autoattachGraphicsDevice: false
          autoattachSerialConsole: false
          autoattachMemBalloon: false
EOF
done > "$manifest"
t0=$(date +%s)
ok "$N VMs with a persistent TPM and runStrategy Always, created at once" kubectl create -f "$manifest"

# Every VM's state volumes: "vm pvc" lines, PVCs not being deleted, labelled
# persistent-state-for=<vm> (KubeVirt's, or ours once adopted) or of our name.
volumes() {
  kubectl -n "$NS" get pvc -o json | jq -r '.items[] | select(.metadata.deletionTimestamp == null)
    | (.metadata.labels["persistent-state-for"] // (.metadata.name | capture("^persistent-state-for-(?<vm>race-[0-9]+)$").vm // empty)) + " " + .metadata.name' |
    sort -u
}
launchers() {  # "vm claim phase" of every launcher pod not being deleted
  kubectl -n "$NS" get pods -l kubevirt.io=virt-launcher -o json | jq -r '.items[] | select(.metadata.deletionTimestamp == null)
    | .metadata.labels["vm.kubevirt.io/name"] + " " + ((.spec.volumes[] | select(.name == "vm-state") | .persistentVolumeClaim.claimName) // "-")
      + " " + .status.phase'
}
one_each() { [ "$(volumes | awk '{print $1}' | sort | uniq -d | wc -l)" -eq 0 ] && [ "$(volumes | wc -l)" -eq "$N" ]; }
all_running() { [ "$(launchers | awk '$3 == "Running"' | wc -l)" -eq "$N" ]; }
vmis_paused() {
  [ "$(kubectl -n "$NS" get vmi -o json | jq '[.items[] | select(.status.phase == "Running" and
    any(.status.conditions[]?; .type == "Paused" and .status == "True"))] | length')" -eq "$N" ]
}

if wait_until 900 all_running; then
  pass "all $N launcher pods are Running ($(( $(date +%s) - t0 )) s after the first VM)"
else
  fail "all $N launcher pods are Running" "$(launchers | awk '{print $3}' | sort | uniq -c)"
fi
ok "all $N VMIs are Running, paused (QEMU started with the TPM)" wait_until 300 vmis_paused
diag "load: $(cut -d' ' -f1-3 /proc/loadavg); memory available: $(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo) MiB"

# The agent deletes its own PVCs that lost the race: give it until then.
if wait_until 120 one_each; then
  pass "exactly one state volume per VM ($N volumes, no VM with two)"
else
  fail "exactly one state volume per VM" "$(volumes | awk '{print $1}' | sort | uniq -c | awk '$1 != 1' | head)" \
    "$(volumes | wc -l) volumes"
fi
vols=$(volumes) ls=$(launchers)
is "$(join <(sort <<<"$vols") <(awk '{print $1, $2}' <<<"$ls" | sort) | awk '$2 == $3' | wc -l)" "$N" \
  "every VM's launcher mounts that one volume (its vm-state claim)"

# Who made them: the agent (its name, adopted by KubeVirt: labelled) or KubeVirt.
by_agent=$(awk '$2 ~ /^persistent-state-for-race-[0-9]+$/' <<<"$vols" | wc -l)
by_kv=$(( $(wc -l <<<"$vols") - by_agent ))
deleted=$(grep -c 'own state volume deleted unused' "$(agent_log agent)" || true)
diag "state volumes made by the agent: $by_agent, by KubeVirt: $by_kv; the agent's deleted after losing the race: $deleted"
adopted=$(kubectl -n "$NS" get pvc -o json | jq '[.items[] | select(.metadata.name | test("^persistent-state-for-race-[0-9]+$"))
  | select(.metadata.labels["persistent-state-for"] == (.metadata.name | ltrimstr("persistent-state-for-")))] | length')
is "$adopted" "$by_agent" "every state volume the agent made was adopted by KubeVirt (labelled persistent-state-for=<vm>)"

# The TPMState names the volume and who made it.
ts_matches() {
  local want
  want=$(awk '{ print $1, $2, ($2 ~ /^persistent-state-for-race-[0-9]+$/ ? "vtpm-agent" : "KubeVirt") }' <<<"$vols" | sort)
  [ "$(kubectl -n "$NS" get tpmstates -o json | jq -r '.items[] | "\(.metadata.name) \(.status.pvcName) \(.status.pvcCreatedBy)"' | sort)" = "$want" ]
}
ok "every TPMState names its VM's volume and who made it (status.pvcName, status.pvcCreatedBy)" wait_until 60 ts_matches
is "$(kubectl -n "$NS" get tpmstates -o json | jq '[.items[] | select(.status.phase == "Ready")] | length')" "$N" \
  "every TPMState is Ready"
is "$(kubectl -n "$NS" get events.events.k8s.io -o json | jq '[.items[] | select(.reason == "StateVolumeDuplicate")] | length')" 0 \
  "no StateVolumeDuplicate warning"

# Stop them all and wait until the launchers are gone: the suites after this
# one must not share the nodes with $N terminating launchers.
kubectl -n "$NS" delete vm --all --wait=false >/dev/null
no_launchers() { [ "$(kubectl -n "$NS" get pods -l kubevirt.io=virt-launcher -o name | wc -l)" -eq 0 ]; }
t1=$(date +%s)
ok "the $N VMs are deleted and their launchers gone" wait_until 600 no_launchers
diag "teardown: $(( $(date +%s) - t1 )) s"
ok_here "the agent stops cleanly" agent_stop agent
agent_sanitizer_check
