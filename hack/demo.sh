#!/usr/bin/env bash
# `make demo`: a VM's vTPM state surviving a restart, on the real control plane
# and two real nodes.
#
# The control plane and two nodes (each its own containerd and kubelet, in its
# own namespaces: hack/nodes-up.sh); vtpm-agent deployed as the DaemonSet from
# manifests/ (deploy/overlays/testbed: the image built here from
# deploy/Containerfile), under its own ServiceAccount. A VM with a persistent
# TPM starts on node-1 (a launcher pod from the test bed's launcher image); a
# "guest" seals a secret with clevis through its vTPM; the VM stops and starts
# again on node-2; the secret unseals. Then the same with a non-persistent
# TPM, which cannot unseal: the problem the product fixes.
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
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $desc"
    sleep 0.3
  done
}

cleanup() {
  local rc=$?
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    echo "demo: DEMO_KEEP=1: leaving the test bed, its nodes and the agents running (state in $D)"
    exit $rc
  fi
  declare -F rn_guest_stop >/dev/null && { rn_guest_stop; rn_storage_down; }
  hack/cluster-down.sh >/dev/null 2>&1 || true
  rm -rf "$D" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT

step "1. The local control plane ($K8S_VERSION on loopback) and two real nodes"
echo "    (a first run builds containerd, runc, KubeVirt and the images: see README, test bed)"
hack/build-all.sh 2>"$D/build-all.log" || { tail -20 "$D/build-all.log"; die "the builds failed"; }
KUBECONFIG=$(hack/cluster-up.sh 2>"$D/cluster-up.log") || { tail -20 "$D/cluster-up.log"; die "cluster-up failed"; }
export KUBECONFIG
. hack/testbed-lib.sh
. hack/nodes-lib.sh
. test/e2e/lib-realnode.sh
rn_images_ready || die "the nodes have no agent or launcher image; see $D/cluster-up.log"
[ -x "$B/tools/tpm-guest-bridge" ] || die "build/tools missing: run make all tools"
show kubectl get nodes -o wide

step "2. Deploy vtpm-agent: the DaemonSet from manifests/, one pod per node, and the key broker"
printf '    $ kubectl apply -k deploy/overlays/testbed\n'
rn_agent_deploy || die "the agent's DaemonSet did not become Ready"
show kubectl -n vtpm-system get pods -o wide
who=$(grep -m1 'connected to the API server' "$(rn_agent_log node-1)" | sed 's/.*"user":"\([^"]*\)".*/\1/')
echo "    node-1's agent authenticated as $who, with its pod's own token"
echo "    It holds no key: the KEKs are the key broker's (vtpm-controller), which unwraps a VM's key only"
echo "    for the node its launcher runs on."
show sh -c "kubectl auth can-i get secrets -n vtpm-system --as system:serviceaccount:vtpm-system:vtpm-agent || true"
wait_for 30 "node labels" sh -c "kubectl get node node-1 -o jsonpath='{.metadata.labels}' | grep -q tpm-2.0"
show kubectl get nodes -L vtpm-agent.io/tpm-2.0 -L vtpm-agent.io/tpm-1.2

step "3. RWX storage shared by both nodes (the test bed's provisioner of local volumes)"
rn_storage_up "$D/storage" demo-rwx
show kubectl get storageclass demo-rwx

step "4. A Windows 11 style VM with a persistent TPM"
# Idempotent: a namespace left by an earlier DEMO_KEEP=1 run goes first.
kubectl delete ns demo --ignore-not-found --wait=true --timeout 120s >/dev/null
kubectl create ns demo >/dev/null
# Halted: KubeVirt itself runs on the test bed, and would start its own launcher
# for a running VM. The demo starts the test bed's launcher pods instead (the
# agent's launcher protocol; on KubeVirt's own launchers with issue 21).
echo "    (as manifests/examples/win11.yaml, with runStrategy Halted: the demo starts the VM's launcher pods itself)"
show sh -c "yq -y '.spec.runStrategy = \"Halted\"' manifests/examples/win11.yaml | kubectl -n demo apply -f -"
show kubectl -n demo patch vm win11 --type json -p '[{"op": "add", "path": "/spec/template/spec/domain/devices/tpm", "value": {"persistent": true}}]'
wait_for 60 "TPMState Ready" sh -c "kubectl -n demo get tpmstate win11 -o jsonpath='{.status.phase}' | grep -qx Ready"
show kubectl -n demo get pvc
show kubectl get tpmstate -A

# start_vm NODE POD VM: VM's launcher pod on NODE; then the guest (QEMU's side of
# the TPM) on swtpm's control socket in that pod, for tpm2-tools and clevis.
start_vm() {
  local node=$1 pod=$2 vm=$3
  rn_launcher_start demo "$pod" "$vm" "$node" || die "launcher $pod did not start"
  wait_for 90 "the vTPM on $node" sh -c "kubectl -n demo get tpmstate $vm -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}' | grep -qx '$node Running'"
  rn_guest_start "$(rn_swtpm_ctrl demo "$pod" "$vm")" "$D/$pod.data" "$D/$pod.bridge.log" || die "no guest TPM in $pod"
  export TPM2TOOLS_TCTI=$RN_TCTI
  tpm2_startup -c >/dev/null
}
_no_swtpm_for() { [ -z "$(rn_swtpm_pid "$(kubectl -n demo get vm "$1" -o jsonpath='{.metadata.uid}')")" ]; }
stop_vm() { # POD VM
  rn_guest_stop
  rn_launcher_stop demo "$1"
  wait_for 30 "swtpm to stop" _no_swtpm_for "$2"
}

step "5. Start the VM on node-1: the agent there mounts the state volume into the launcher pod, then starts swtpm"
start_vm node-1 virt-launcher-win11-a win11
show kubectl -n demo get pods -o wide
show kubectl -n demo get tpmstate win11 -o jsonpath='{.status.nodeState.message}{"\n"}'
echo "    guest: echo -n 'BitLocker recovery key 314159-265358' | clevis encrypt tpm2 '{}' > sealed.jwe"
echo -n 'BitLocker recovery key 314159-265358' | clevis encrypt tpm2 '{}' > "$D/sealed.jwe"
echo "    sealed to the vTPM: $(wc -c < "$D/sealed.jwe") bytes of JWE"

step "6. Stop the VM (its launcher pod is deleted); the agent shuts swtpm down through its control channel"
stop_vm virt-launcher-win11-a win11
echo "    the state stays on the volume:"
ls -l "$D"/storage/*/ | sed 's/^/      /'

step "7. Start the VM again, this time on node-2, and unseal"
start_vm node-2 virt-launcher-win11-b win11
echo "    guest: clevis decrypt < sealed.jwe"
secret=$(clevis decrypt < "$D/sealed.jwe") || die "the secret did not unseal on node-2"
echo "    -> ${bold}$secret${off}"
show kubectl get tpmstate -A
stop_vm virt-launcher-win11-b win11

step "8. The caveat: the same story with a TPM that is not persistent"
kubectl -n demo apply -f - >/dev/null <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: legacy}
spec:
  runStrategy: Halted
  template: {spec: {domain: {devices: {tpm: {}}}}}
EOF
wait_for 60 "TPMState" sh -c "kubectl -n demo get tpmstate legacy -o jsonpath='{.status.phase}' | grep -q ."
start_vm node-1 virt-launcher-legacy-a legacy
echo -n 'BitLocker recovery key 271828-182845' | clevis encrypt tpm2 '{}' > "$D/legacy.jwe"
echo "    sealed on node-1; stopping and starting on node-2..."
stop_vm virt-launcher-legacy-a legacy
start_vm node-2 virt-launcher-legacy-b legacy
if clevis decrypt < "$D/legacy.jwe" >/dev/null 2>&1; then die "a non-persistent TPM kept its secret?"; fi
echo "    -> clevis decrypt fails: the TPM's keys were lost with the launcher (a BitLocker recovery prompt)"
show kubectl -n demo get events --field-selector reason=NonPersistentTPM -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
stop_vm virt-launcher-legacy-b legacy

step "Done in $(( $(date +%s) - t_start ))s: the persistent vTPM kept its secret across a stop and a move between real nodes."
