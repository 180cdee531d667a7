#!/usr/bin/env bash
# Issue "Tenant-proof", holes 3 and 4, on the real nodes: the state volume's
# files belong to the tenant, who writes them from a pod of theirs that
# mounts the VM's state PVC (the launcher image with a shell, as any tenant
# workload could be). The agent (root on the node) must not be turned by them.
#  (a) hole 3: a header with a "next" key plus ".vtpm-rekey" as a symlink to a
#      host directory: the recovery at the VM's next start must not delete the
#      host directory's files; the VM starts on its old key (rolled back).
#  (b) hole 3: vtpm-key.json as a symlink to a host file: the agent refuses,
#      and the host file's content appears in no status and no event.
#  (c) hole 4: namespace A's vtpm-key.json and state copied onto namespace B's
#      PVC: the agent must refuse to unwrap it for B (KeyUnwrapFailed, the one
#      generic message); before the fix B's swtpm started on A's state with A's
#      KEK.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-tenant-files
. "$(dirname "$0")/lib-node.sh"
plan 23

NSB=$NS-b
kubectl create namespace "$NSB" >/dev/null || bail_out "cannot create namespace $NSB"
_nsb_cleanup() {
  kubectl -n "$NSB" delete pods --all --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
  [ -n "${VTPM_KEEP_NS:-}" ] || kubectl delete namespace "$NSB" --wait=false >/dev/null 2>&1
}
at_exit _nsb_cleanup
in_ns() { local ns=$1; shift; (NS=$ns; "$@"); }
unlike() { if [[ $1 =~ $2 ]]; then fail "$3" "found /$2/ in: '$1'"; else pass "$3"; fi; }

_pod_done() { [ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null)" = Succeeded ]; }
# tenant_pod NS NAME PVC CONFIGMAP SCRIPT: a pod of the tenant on node-1 with the
# VM's state PVC at /state and CONFIGMAP's files at /payload runs SCRIPT as
# root and ends; waits for it, then deletes it.
tenant_pod() {
  local ns=$1 pod=$2 pvc=$3 cm=$4 script=$5
  kubectl -n "$ns" apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Pod
metadata: {name: $pod, labels: {e2e-role: tenant}}
spec:
  nodeSelector: {kubernetes.io/hostname: $(node_name a)}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: tenant
    image: $LAUNCHER_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", $(jq -Rn --arg s "$script" '$s')]
    volumeMounts: [{name: state, mountPath: /state}, {name: payload, mountPath: /payload}]
  volumes:
  - {name: state, persistentVolumeClaim: {claimName: $pvc}}
  - {name: payload, configMap: {name: $cm}}
EOF
  if ! wait_until 90 _pod_done "$ns" "$pod"; then
    echo "tenant pod $pod: $(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status}')" >&2
    kubectl -n "$ns" logs "$pod" >&2 2>/dev/null
    return 1
  fi
  kubectl -n "$ns" delete pod "$pod" --wait=true --timeout=60s >/dev/null
}
_no_swtpm_for() { [ -z "$(swtpm_pids "$1")" ]; }
# VM POD: the node state is about POD (launcher "<ns>/<pod>") and says Running, Refused or Failed.
_settled() {
  [[ $(tpmstate_field "$1" .status.nodeState.launcher) == */"$2" ]] || return 1
  case "$(tpmstate_field "$1" .status.nodeState.phase)" in Running | Refused | Failed) return 0 ;; esac
  return 1
}
start_once() { # POD VM: a launcher, until the VM's node state settles for it
  launcher_start a "$1" "$2" >/dev/null || return 1
  wait_until 90 _settled "$2" "$1" || diag "$2: node state $(tpmstate_field "$2" .status.nodeState)"
}

node_testbed_up
ok "node A up, its agent with the default (secret) key provider" node_up a

# ---- (a) symlinked staging directory + a header with "next"
ok "vc: TPMState Ready" vm_create vc "{persistent: true}" "" Ready
start_once virt-launcher-vc-1 vc
is "$(tpmstate_field vc .status.nodeState.reason)" VTPMStarted "vc: first start (key header and state made)"
launcher_stop virt-launcher-vc-1
wait_until 30 _no_swtpm_for vc
store=$(vm_store_dir vc)
victim=$(node_dir a)/victim
mkdir -p "$victim" && echo precious > "$victim/precious-1" && echo precious > "$victim/precious-2"
jq '.next = (del(.version) | .dekGeneration += 1)' "$store/vtpm-key.json" > "$NODE_TOP/hdr-next.json"
k create configmap vc-payload --from-file=vtpm-key.json="$NODE_TOP/hdr-next.json" >/dev/null
ok "(a) a tenant pod writes a header with \"next\" and .vtpm-rekey -> $victim onto vc's PVC" \
  tenant_pod "$NS" tenant-a "$(tpmstate_field vc .status.pvcName)" vc-payload \
  "cp /payload/vtpm-key.json /state/vtpm-key.json && ln -sfn '$victim' /state/.vtpm-rekey"
start_once virt-launcher-vc-2 vc
left=$(find "$victim" -type f | wc -l)
is "$left" 2 "(a) the agent's recovery left the host directory's files alone ($left of 2 left)"
is "$(tpmstate_field vc .status.nodeState.reason)" VTPMStarted \
  "(a) vc starts on its old key (the interrupted rotation rolled back): $(tpmstate_field vc .status.nodeState.message)"
ok "(a) the symlink is gone from the volume, its target stays" test ! -L "$store/.vtpm-rekey" -a -d "$victim"
launcher_stop virt-launcher-vc-2
wait_until 30 _no_swtpm_for vc

# ---- (b) the key header as a symlink to a host file
hostfile=$(node_dir a)/host-secret
# Letters only: the JSON parser's error quoted the run of letters it choked on.
needle="HOSTSECRET$(tr -dc 'A-Z' < /dev/urandom | head -c 8)"
printf '%s:x:0:0:root:/root:/bin/bash\n' "$needle" > "$hostfile"
k create configmap vc-empty >/dev/null
ok "(b) a tenant pod replaces vtpm-key.json by a symlink to $hostfile" \
  tenant_pod "$NS" tenant-b "$(tpmstate_field vc .status.pvcName)" vc-empty \
  "mv /state/vtpm-key.json /state/vtpm-key.json.saved && ln -s '$hostfile' /state/vtpm-key.json"
start_once virt-launcher-vc-3 vc
msg=$(tpmstate_field vc .status.nodeState.message)
like "$(tpmstate_field vc .status.nodeState.phase)" '^(Refused|Failed)$' "(b) vc is not started: $msg"
unlike "$(tpmstate_field vc .status)" "$needle" "(b) the host file's content is in no part of the TPMState's status"
sleep 2
unlike "$(kubectl -n "$NS" get events -o json | jq -r '.items[].message')" "$needle" \
  "(b) ... nor in any event"
ok "(b) no swtpm for vc" _no_swtpm_for vc
launcher_stop virt-launcher-vc-3

# ---- (c) namespace A's key header and state on namespace B's PVC
ok "va (namespace A = $NS): TPMState Ready" vm_create va "{persistent: true}" "" Ready
start_once virt-launcher-va-1 va
is "$(tpmstate_field va .status.nodeState.reason)" VTPMStarted "va: started, its state encrypted under A's KEK"
launcher_stop virt-launcher-va-1
wait_until 30 _no_swtpm_for va
store_a=$(vm_store_dir va)
kek_a=$(jq -r .kekId "$store_a/vtpm-key.json")
ok "vb (namespace B = $NSB): TPMState Ready" in_ns "$NSB" vm_create vb "{persistent: true}" "" Ready
kubectl -n "$NSB" create configmap a-files --from-file=vtpm-key.json="$store_a/vtpm-key.json" \
  --from-file=tpm2-00.permall="$store_a/tpm2-00.permall" >/dev/null
# Owned by the swtpm user, as on A's volume (a tenant sees that uid on any state of theirs).
owner=$(stat -c %u:%g "$store_a/tpm2-00.permall")
ok "(c) a tenant pod in B copies A's vtpm-key.json (kekId $kek_a) and state onto vb's PVC" \
  tenant_pod "$NSB" tenant-c "$(in_ns "$NSB" tpmstate_field vb .status.pvcName)" a-files \
  "cp /payload/vtpm-key.json /payload/tpm2-00.permall /state/ && chown $owner /state/tpm2-00.permall && chmod 600 /state/tpm2-00.permall"
in_ns "$NSB" start_once virt-launcher-vb-1 vb
reason_b=$(in_ns "$NSB" tpmstate_field vb .status.nodeState.reason)
msg_b=$(in_ns "$NSB" tpmstate_field vb .status.nodeState.message)
is "$reason_b" KeyUnwrapFailed "(c) B's VM is refused: the header names A's KEK ($msg_b; keys: $(in_ns "$NSB" tpmstate_field vb .status.keys))"
like "$msg_b" "cannot be unwrapped with a KEK of this VM's namespace" "(c) ... with the one unwrap-failure message"
ok "(c) no swtpm runs on A's state for B" _no_swtpm_for vb
in_ns "$NSB" launcher_stop virt-launcher-vb-1

node_no_leftovers
agent_sanitizer_check
