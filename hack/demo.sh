#!/usr/bin/env bash
# `make demo`: a VM's vTPM state surviving a restart, on the real control plane,
# two real nodes and real KubeVirt, side by side with KubeVirt on its own.
#
# The control plane and two nodes (each its own containerd and kubelet, in its
# own namespaces: hack/nodes-up.sh) run KubeVirt built from ../shared/kubevirt.
# First KubeVirt alone: a VM with `tpm: {persistent: true}` (the TPM guest,
# hack/build-tpm-guest.sh, a Linux that seals with clevis as BitLocker would)
# seals a secret; KubeVirt keeps its TPM state in plaintext. Then vtpm-agent
# as shipped: the DaemonSet and key broker (deploy/overlays/testbed: the image
# built here from deploy/Containerfile) and its KubeVirt Plugin
# (deploy/kubevirt-plugin). The same story: seal on node-1, stop, start on
# node-2, unseal; the state is ciphertext. The two state files side by side.
# Last, the caveat: a TPM that is not persistent loses the secret.
#
# Everything it starts is stopped at the end (DEMO_KEEP=1 keeps it running).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. hack/versions.sh
export VTPM_RUN=${VTPM_RUN:-/tmp/vtpm-testbed}
export VTPM_NODES=${VTPM_NODES:-2} VTPM_NODES_AGENT_IMAGE=1
export PATH=$K8S_BIN:$PATH
B=$top/build
D=$(mktemp -d /tmp/vtpm-demo.XXXXXX)
chmod 711 "$D"
t_start=$(date +%s)

bold=$(tput bold 2>/dev/null || true); off=$(tput sgr0 2>/dev/null || true)
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
show() { printf '    $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/    /'; }
die() { echo "demo: $*" >&2; exit 1; }
wait_for() { # SECS DESC CMD...
  local secs=$1 desc=$2; shift 2
  local t0 end next; t0=$(date +%s); end=$((t0 + secs)) next=$((t0 + 30))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $desc"
    # A VM boots in about a minute under TCG: say so rather than go quiet.
    if [ "$(date +%s)" -ge "$next" ]; then
      echo "    still waiting for $desc ($(( $(date +%s) - t0 )) s)"; next=$((next + 30))
    fi
    sleep 0.3
  done
}

cleanup() {
  local rc=$?
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    echo "demo: DEMO_KEEP=1: leaving the test bed, its nodes and the agents running (state in $D)"
    exit $rc
  fi
  declare -F rn_storage_down >/dev/null && rn_storage_down
  hack/cluster-down.sh >/dev/null 2>&1 || true
  rm -rf "$D" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT

step "1. The local control plane ($K8S_VERSION on loopback) and two real nodes"
echo "    (a first run builds containerd, runc, KubeVirt and the images: see README, test bed)"
# Each build step says when it starts and ends, and every 30 s while it runs.
hack/build-all.sh 2> >(tee "$D/build-all.log" | sed 's/^/    /' >&2) || { sleep 1; die "the builds failed (above; $D/build-all.log)"; }
. hack/testbed-lib.sh
. hack/progress-lib.sh
echo "    starting the control plane, the nodes and KubeVirt (about 3 min; $D/cluster-up.log)"
with_progress "$D/cluster-up.log" "    the test bed" hack/cluster-up.sh || { tail -20 "$D/cluster-up.log"; die "cluster-up failed"; }
echo "    the test bed is up ($(progress_elapsed "$t_start") since the start)"
export KUBECONFIG=$TB_KUBECONFIG
. hack/nodes-lib.sh
. test/e2e/lib-realnode.sh
rn_images_ready || die "the nodes have no agent or launcher image; see $D/cluster-up.log"
[ -n "${KUBEVIRT_TAG:-}" ] || die "the test bed runs no KubeVirt (VTPM_KUBEVIRT=0?); see $D/cluster-up.log"
show kubectl get nodes -o wide
virtctl() { "$KUBEVIRT_BIN/virtctl" -n demo "$@"; }

step "2. RWX storage shared by both nodes, as KubeVirt's class for VM state"
rn_storage_up "$D/storage" demo-rwx
kubectl -n kubevirt patch kv kubevirt --type merge -p '{"spec":{"configuration":{"vmStateStorageClass":"demo-rwx"}}}' >/dev/null
show kubectl get storageclass demo-rwx
# Idempotent: a namespace left by an earlier DEMO_KEEP=1 run goes first.
kubectl delete ns demo --ignore-not-found --wait=true --timeout 180s >/dev/null
kubectl create ns demo >/dev/null

# boot VM NODE ARGS [TPM]: the TPM guest's VM pinned to NODE, started; waits until it ran.
boot() {
  local vm=$1 node=$2 args=$3 tpm=${4:-persistent}
  rn_guest_vm demo "$vm" "$node" "console=ttyS0 quiet $args tpmguest.stay=1" "$tpm" || die "cannot make VM $vm"
  virtctl start "$vm" >/dev/null
  wait_for 300 "VM $vm running on $node" rn_vmi_on demo "$vm" "$node"
  wait_for 120 "the guest of $vm" sh -c "kubectl -n demo logs \$(kubectl -n demo get pod -l kubevirt.io=virt-launcher,vm.kubevirt.io/name=$vm --field-selector status.phase=Running -o name | head -1) -c guest-console-log 2>/dev/null | grep -q 'TPM-GUEST: \(sealed\|unseal\)'"
  rn_vm_console demo "$vm" | grep -E '^TPM-GUEST: (tpm2|sealed|unsealed|unseal failed)' | cut -c1-110 | sed 's/^/    guest: /'
}
halt() {
  virtctl stop "$1" >/dev/null
  wait_for 180 "VM $1 to stop" rn_vmi_gone demo "$1"
}
sealed() { rn_vm_console demo "$1" | sed -n 's/^TPM-GUEST: sealed //p' | head -1; }
state_file() { # VM: its state file on the volume (the agent's at the volume's root, KubeVirt's under swtpm/)
  local pv; pv=$(kubectl -n demo get pvc -l "persistent-state-for=$1" -o jsonpath='{.items[0].spec.volumeName}')
  find "$D/storage/$pv" -name tpm2-00.permall 2>/dev/null | head -1
}

step "3. KubeVirt alone: a VM with a persistent TPM seals a secret on node-1"
boot kubevirt-only node-1 "tpmguest.seal=BitLocker-recovery-key-111111"
halt kubevirt-only
plain=$(state_file kubevirt-only)
echo "    its TPM state, written by the swtpm KubeVirt's libvirt runs: ${plain#$D/storage/}"

step "4. Deploy vtpm-agent: the DaemonSet, the key broker and its KubeVirt Plugin"
printf '    $ kubectl apply -k deploy/overlays/testbed\n'
rn_agent_deploy || die "the agent's DaemonSet did not become Ready"
show kubectl apply -k deploy/kubevirt-plugin
show kubectl -n vtpm-system get pods -o wide
echo "    The agents hold no key: the KEKs are the key broker's (vtpm-controller), which unwraps a VM's"
echo "    key only for the node its launcher runs on."
show sh -c "kubectl auth can-i get secrets -n vtpm-system --as system:serviceaccount:vtpm-system:vtpm-agent || true"

step "5. The same VM with vtpm-agent: seal a secret on node-1"
boot win11 node-1 "tpmguest.seal=BitLocker-recovery-key-314159"
uid=$(kubectl -n demo get vm win11 -o jsonpath='{.metadata.uid}')
for p in $(pgrep -f qemu-system); do
  tr '\0' ' ' < "/proc/$p/cmdline" | grep -q "guest=demo_win11," &&
    echo "    QEMU's TPM: $(tr '\0' ' ' < "/proc/$p/cmdline" | grep -o -- '-chardev socket,id=chrtpm[^ ]*') (the agent's swtpm, in the launcher)"
done
grep -o '"msg":"PreVMStart[^}]*' "$(rn_agent_log node-1)" | tail -1 | sed 's/^/    node-1 agent log: /'
show kubectl -n demo get tpmstate win11 -o wide
jwe=$(sealed win11)
[ -n "$jwe" ] || die "the guest did not seal"

step "6. Stop it; start it again on node-2 and unseal"
halt win11
boot win11 node-2 "tpmguest.unseal=$jwe"
secret=$(rn_vm_console demo win11 | sed -n 's/^TPM-GUEST: unsealed //p')
[ "$secret" = BitLocker-recovery-key-314159 ] || die "the secret did not unseal on node-2"
echo "    -> ${bold}$secret${off}, sealed on node-1, unsealed on node-2"
halt win11
[ -z "$(rn_swtpm_pid "$uid")" ] || die "swtpm outlived the VM"

step "7. Side by side: the two VMs' state files, loaded by a bare swtpm that has no key"
enc=$(state_file win11)
for f in "$plain" "$enc"; do
  if rn_state_loads "$f"; then verdict="loads: plaintext, anyone with the volume has the TPM"
  else verdict="does not load: ciphertext ($RN_STATE_LOG)"; fi
  printf '    %-72s %s\n' "${f#$D/storage/}" "$verdict"
done

step "8. The caveat: a TPM that is not persistent (tpm: {}), sealed on node-1, unsealed on node-2"
boot legacy node-1 "tpmguest.seal=BitLocker-recovery-key-271828" ephemeral
jwe=$(sealed legacy)
halt legacy
boot legacy node-2 "tpmguest.unseal=$jwe" ephemeral
rn_vm_said demo legacy 'unsealed' && die "a non-persistent TPM kept its secret?"
echo "    -> the unseal fails: the TPM's keys went with the launcher (a BitLocker recovery prompt)"
halt legacy

step "Done in $(( $(date +%s) - t_start ))s: the vTPM kept its secret across a stop and a move between real nodes, encrypted at rest."
