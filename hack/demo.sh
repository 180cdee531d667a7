#!/usr/bin/env bash
# `make demo`: a VM's vTPM state surviving a restart, on the real control plane.
#
# Two test nodes on this machine (an agent and a kubelet stand-in each, one
# shared RWX backing store), the agents running as the vtpm-agent
# ServiceAccount under the real RBAC authorizer. A VM with a persistent TPM
# starts on node-a; a "guest" seals a secret with clevis through its vTPM; the
# VM stops and starts again on node-b; the secret unseals. Then the same with a
# non-persistent TPM, which cannot unseal: the problem the product fixes.
#
# Everything it starts is stopped at the end (DEMO_KEEP=1 keeps it running).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. hack/versions.sh
export VTPM_RUN=${VTPM_RUN:-/tmp/vtpm-testbed}
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

pids=()
cleanup() {
  local rc=$?
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    echo "demo: DEMO_KEEP=1: leaving agents, stand-ins and the test bed running (state in $D)"
    exit $rc
  fi
  pkill -f "tpm-guest-bridge --ctrl /proc/.*--listen $D/" 2>/dev/null || true
  pkill -f "launcher-standin --socket $D/" 2>/dev/null || true
  kubectl delete ns demo --wait=false >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Give the agents a moment to stop swtpm for the launchers that went.
  for _ in $(seq 50); do pgrep -f "swtpm socket.*--tpmstate dir=/var/lib/libvirt/swtpm" >/dev/null || break; sleep 0.1; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  grep " $D/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  hack/cluster-down.sh >/dev/null 2>&1 || true
  rm -rf "$D" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT

step "1. The local control plane (etcd, kube-apiserver, kube-controller-manager $K8S_VERSION on loopback)"
export KUBECONFIG=$(hack/cluster-up.sh 2>"$D/cluster-up.log") || { cat "$D/cluster-up.log"; die "cluster-up failed"; }
show kubectl version
[ -x "$B/vtpm-agent" ] || die "build/vtpm-agent missing: run make all tools"

step "2. Install vtpm-agent's namespace, ServiceAccount, least-privilege RBAC and config"
show kubectl apply -f manifests/namespace.yaml -f manifests/serviceaccount.yaml -f manifests/rbac.yaml -f manifests/configmap.yaml
# The agents authenticate with the ServiceAccount's own token (TokenRequest), not as admin.
hack/agent-identity.sh vtpm-system "$D" >/dev/null
show "$B/vtpm-agent" --check --kubeconfig "$D/agent.kubeconfig" --log-format text

step "3. Two nodes with their own agent and kubelet stand-in; RWX storage shared between them"
kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: demo-rwx
  annotations: {storageclass.kubevirt.io/is-default-virt-class: "true"}
provisioner: vtpm-agent.io/testbed
EOF
"$B/tools/testbed-provisioner" --root "$D/storage" >"$D/provisioner.log" 2>&1 & pids+=($!)
for n in a b; do
  mkdir -p "$D/$n/kubelet" "$D/$n/sockets" "$D/$n/run"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata: {name: demo-node-$n}
EOF
  cat > "$D/$n/config.yaml" <<EOF
namespace: vtpm-system
node:
  kubeletRoot: $D/$n/kubelet
  socketDir: $D/$n/sockets
  runDir: $D/$n/run
http:
  listen: "127.0.0.1:0"
log:
  format: text
EOF
  "$B/tools/kubelet-standin" --node "demo-node-$n" --root "$D/$n/kubelet" >"$D/$n/kubelet.log" 2>&1 & pids+=($!)
  NODE_NAME=demo-node-$n "$B/vtpm-agent" --kubeconfig "$D/agent.kubeconfig" --config "$D/$n/config.yaml" \
    --identity "agent-$n" >"$D/$n/agent.log" 2>&1 & pids+=($!)
done
wait_for 30 "node labels" sh -c "kubectl get node demo-node-a -o jsonpath='{.metadata.labels}' | grep -q tpm-2.0"
show kubectl get nodes -L vtpm-agent.io/tpm-2.0 -L vtpm-agent.io/tpm-1.2

step "4. A Windows 11 style VM with a persistent TPM"
# Idempotent: a namespace left by an earlier DEMO_KEEP=1 run goes first.
kubectl delete ns demo --ignore-not-found --wait=true --timeout 120s >/dev/null
kubectl create ns demo >/dev/null
show kubectl -n demo apply -f manifests/examples/win11.yaml
show kubectl -n demo patch vm win11 --type json -p '[{"op": "add", "path": "/spec/template/spec/domain/devices/tpm", "value": {"persistent": true}}]'
wait_for 60 "TPMState Ready" sh -c "kubectl -n demo get tpmstate win11 -o jsonpath='{.status.phase}' | grep -qx Ready"
show kubectl -n demo get pvc
show kubectl get tpmstate -A

# launcher NODE POD VM: the virt-launcher pod and its process: a private mount
# namespace (with its own tmpfs where libvirt keeps swtpm state and sockets)
# listening on the launcher socket, as virt-launcher does.
launcher() {
  local node=$1 pod=$2 vm=$3
  kubectl -n demo apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: $vm}
spec:
  nodeName: demo-node-$node
  containers: [{name: compute, image: virt-launcher:standin}]
EOF
  local uid; uid=$(kubectl -n demo get pod "$pod" -o jsonpath='{.metadata.uid}')
  setsid "$B/tools/launcher-standin" --socket "$D/$node/sockets/$uid.sock" --tmpfs /var/lib/libvirt \
    --tmpfs /run/vtpm </dev/null >/dev/null 2>&1 &
  echo "$!"
}
# guest NODE VM LAUNCHER_PID: QEMU's side of the TPM (the data channel), for tpm2-tools and clevis.
guest() {
  local node=$1 vm=$2 lpid=$3 uid ctrl
  uid=$(kubectl -n demo get vm "$vm" -o jsonpath='{.metadata.uid}')
  ctrl=/proc/$lpid/root/run/vtpm/$uid.sock
  wait_for 60 "swtpm in the launcher on node-$node" test -S "$ctrl"
  "$B/tools/tpm-guest-bridge" --ctrl "$ctrl" --listen "$D/$node-$vm.data" >"$D/$node-$vm.bridge.log" 2>&1 &
  wait_for 10 "the guest's TPM" test -S "$D/$node-$vm.data"
  export TPM2TOOLS_TCTI="cmd:socat - UNIX-CONNECT:$D/$node-$vm.data"
  tpm2_startup -c >/dev/null
}
stop_vm() { # POD LAUNCHER_PID
  pkill -f "tpm-guest-bridge --ctrl /proc/$2/root" 2>/dev/null || true   # QEMU goes with its launcher
  kill "$2" 2>/dev/null || true
  kubectl -n demo delete pod "$1" --wait=false >/dev/null
}

step "5. Start the VM on node-a; the agent mounts the state volume into the launcher, then starts swtpm"
lpid=$(launcher a virt-launcher-win11-a win11)
guest a win11 "$lpid"
show kubectl -n demo get tpmstate win11 -o jsonpath='{.status.nodeState.message}{"\n"}'
echo "    guest: echo -n 'BitLocker recovery key 314159-265358' | clevis encrypt tpm2 '{}' > sealed.jwe"
echo -n 'BitLocker recovery key 314159-265358' | clevis encrypt tpm2 '{}' > "$D/sealed.jwe"
echo "    sealed to the vTPM: $(wc -c < "$D/sealed.jwe") bytes of JWE"

step "6. Stop the VM (its launcher goes away); the agent shuts swtpm down through its control channel"
stop_vm virt-launcher-win11-a "$lpid"
wait_for 30 "swtpm to stop" sh -c "! pgrep -f '[s]wtpm socket.*$(kubectl -n demo get vm win11 -o jsonpath='{.metadata.uid}')'"
echo "    the state stays on the volume:"
ls -l "$D"/storage/*/ | sed 's/^/      /'

step "7. Start the VM again, this time on node-b, and unseal"
lpid=$(launcher b virt-launcher-win11-b win11)
guest b win11 "$lpid"
echo "    guest: clevis decrypt < sealed.jwe"
secret=$(clevis decrypt < "$D/sealed.jwe") || die "the secret did not unseal on node-b"
echo "    -> ${bold}$secret${off}"
show kubectl get tpmstate -A
stop_vm virt-launcher-win11-b "$lpid"

step "8. The caveat: the same story with a TPM that is not persistent"
kubectl -n demo apply -f - >/dev/null <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: legacy}
spec:
  runStrategy: Always
  template: {spec: {domain: {devices: {tpm: {}}}}}
EOF
wait_for 60 "TPMState" sh -c "kubectl -n demo get tpmstate legacy -o jsonpath='{.status.phase}' | grep -q ."
lpid=$(launcher a virt-launcher-legacy-a legacy)
guest a legacy "$lpid"
echo -n 'BitLocker recovery key 271828-182845' | clevis encrypt tpm2 '{}' > "$D/legacy.jwe"
echo "    sealed on node-a; stopping and starting on node-b..."
stop_vm virt-launcher-legacy-a "$lpid"
wait_for 30 "swtpm to stop" sh -c "! pgrep -f '[s]wtpm socket.*$(kubectl -n demo get vm legacy -o jsonpath='{.metadata.uid}')'"
lpid=$(launcher b virt-launcher-legacy-b legacy)
guest b legacy "$lpid"
if clevis decrypt < "$D/legacy.jwe" >/dev/null 2>&1; then die "a non-persistent TPM kept its secret?"; fi
echo "    -> clevis decrypt fails: the TPM's keys were lost with the launcher (a BitLocker recovery prompt)"
show kubectl -n demo get events --field-selector reason=NonPersistentTPM -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
stop_vm virt-launcher-legacy-b "$lpid"

step "Done in $(( $(date +%s) - t_start ))s: the persistent vTPM kept its secret across a stop and a move."
