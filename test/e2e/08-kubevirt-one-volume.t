#!/usr/bin/env bash
# One state volume per VM on real KubeVirt (issue 21, acceptance 2). KubeVirt
# makes a state PVC for every VMI with a persistent TPM (generateName
# persistent-state-for-<vm>-, label persistent-state-for=<vm>) right before
# its launcher pod; the agent makes persistent-state-for-<vm> for every VM
# with one. 100 VMs with `tpm: {persistent: true}` and runStrategy Always are
# created at once, and the agent starts as KubeVirt's first state PVC
# appears, so virt-controller and the agent race for the VMs after it (an
# agent already running wins every race: its path is one step, KubeVirt's is
# VM -> VMI -> PVC; one started before the VMs made all 100 here). Afterwards: exactly one state
# volume per VM (labelled or of the agent's name, not being deleted), the one
# its launcher pod mounts as vm-state; the TPMState names it and says who made
# it; no StateVolumeDuplicate. 10 of the launchers run (the VMs start paused:
# QEMU is created, swtpm runs on the volume, no guest CPU is spent under TCG);
# the other 90 are pinned to a node label no node has, so they stay Pending
# with their volume in their spec: 100 running launchers take the test bed's
# two cores 13 minutes to start.
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
rn_kubevirt_state_storage "$AGENT_DIR/store" "$class"

cfg=$(agent_config agent "$class")

# Small VMs: no disk, no NIC, 32Mi, started paused, a CPU request of 5m; all
# but the last RUN pinned to a node label no node has.
RUN=${E2E_RACE_RUNNING:-10}
manifest="$AGENT_DIR/vms.yaml"
for i in $(seq -w 1 "$N"); do
  if [ $(( 10#$i )) -le $(( N - RUN )) ]; then pin='nodeSelector: {vtpm-agent.io/e2e-no-such-node: "true"}'; else pin='nodeSelector: {}'; fi
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
      $pin
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
kubectl create -f "$manifest" > "$AGENT_DIR/create.out" 2>&1 &
creating=$!
kubevirt_made_one() { kubectl -n "$NS" get pvc -l persistent-state-for -o name | grep -q .; }
wait_until 120 kubevirt_made_one
diag "KubeVirt's first state PVC $(( $(date +%s) - t0 )) s after the first VM; $(kubectl -n "$NS" get vm -o name | wc -l) VMs exist"
ok_here "the agent's state controller starts while the VMs are being created" agent_start agent "$cfg"
ok_here "$N VMs with a persistent TPM and runStrategy Always, created at once" wait "$creating"

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
all_launchers() { [ "$(launchers | wc -l)" -eq "$N" ] && [ "$(launchers | awk '$3 == "Running"' | wc -l)" -eq "$RUN" ]; }
vmis_running() { [ "$(kubectl -n "$NS" get vmi -o json | jq '[.items[] | select(.status.phase == "Running")] | length')" -eq "$RUN" ]; }

if wait_until 600 all_launchers; then
  pass "KubeVirt made all $N launcher pods; the $RUN schedulable ones are Running ($(( $(date +%s) - t0 )) s after the first VM)"
else
  fail "KubeVirt made all $N launcher pods; the $RUN schedulable ones are Running" "$(launchers | awk '{print $3}' | sort | uniq -c)"
fi
ok "their $RUN VMIs are Running (QEMU started, paused, with the TPM on its volume)" wait_until 300 vmis_running

# The agent deletes its own PVCs that lost the race: give it until then.
if wait_until 120 one_each; then
  pass "exactly one state volume per VM ($N volumes, no VM with two)"
else
  fail "exactly one state volume per VM" "$(volumes | wc -l) volumes"
  for vm in $(volumes | awk '{print $1}' | sort | uniq -d | head -3); do
    diag "$vm: $(kubectl -n "$NS" get pvc -o json | jq -c --arg vm "$vm" '[.items[] | select(.metadata.labels["persistent-state-for"] == $vm
      or .metadata.name == "persistent-state-for-" + $vm) | {name: .metadata.name, created: .metadata.creationTimestamp,
      labels: .metadata.labels, rv: .metadata.resourceVersion}]')" \
      "launcher: $(launchers | awk -v vm="$vm" '$1 == vm')" \
      "TPMState: $(kubectl -n "$NS" get tpmstate "$vm" -o jsonpath='{.status.message}')"
  done
fi
vols=$(volumes) ls=$(launchers)
is "$(join <(sort <<<"$vols") <(awk '{print $1, $2}' <<<"$ls" | sort) | awk '$2 == $3' | wc -l)" "$N" \
  "every VM's launcher mounts that one volume (its vm-state claim)"

# Who made them: the agent (its name, adopted by KubeVirt: labelled) or KubeVirt.
by_agent=$(awk '$2 ~ /^persistent-state-for-race-[0-9]+$/' <<<"$vols" | wc -l)
by_kv=$(( $(wc -l <<<"$vols") - by_agent ))
deleted=$(grep -c 'own state volume deleted unused' "$(agent_log agent)" || true)
diag "state volumes made by the agent: $by_agent, by KubeVirt: $by_kv; the agent's deleted after losing the race: $deleted"
# KubeVirt mounts the agent's PVC by its name and does not label it; the agent
# adds KubeVirt's label once the launcher mounts it (KubeVirt's snapshot,
# export and migration paths find a VM's state volume by that label).
labelled() {
  [ "$(kubectl -n "$NS" get pvc -o json | jq '[.items[] | select(.metadata.name | test("^persistent-state-for-race-[0-9]+$"))
    | select(.metadata.labels["persistent-state-for"] == (.metadata.name | ltrimstr("persistent-state-for-")))] | length')" -eq "$by_agent" ]
}
ok "every state volume the agent made carries KubeVirt's label persistent-state-for=<vm>" wait_until 60 labelled

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
