#!/usr/bin/env bash
# Issue 21, acceptance 4: a VM that KubeVirt already ran with its own
# (plaintext) persistent TPM keeps its sealed secret once vtpm-agent serves
# it. The TPM guest seals a secret on node-1 with KubeVirt alone; the VM
# stops; the agent's DaemonSet and Plugin are installed; the VM starts on
# node-2 and unseals the secret: the agent took KubeVirt's state over
# (events KubeVirtStateTakenOver, KubeVirtStateEncrypted), encrypted it in
# place, and put the ciphertext where KubeVirt's plaintext was, so neither
# copy loads in a swtpm without the key (and a KubeVirt swtpm started there
# without the agent fails instead of making a new, empty TPM).
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_agent_on_kubevirt
plan 12
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) n2=$(nl_name 2)
T=$(mktemp -d "$VTPM_RUN/e2e-10.XXXXXX")
at_exit "rm -rf '$T'"
rn_kubevirt_state_storage "$T/store" "$NS-rwx"
at_exit "k delete vm --all --wait=true --timeout=120s >/dev/null 2>&1; rn_agent_undeploy"
rn_agent_undeploy   # KubeVirt alone first: no agent, no Plugin

# ---- KubeVirt alone: seal on node-1 ----
secret=s3cret-$RANDOM$RANDOM
rn_guest_vm "$NS" vm "$n1" "console=ttyS0 quiet tpmguest.seal=$secret tpmguest.stay=1"
virtctl start vm >/dev/null
ok "KubeVirt alone: the VM runs on $n1" wait_until 300 rn_vmi_on "$NS" vm "$n1"
ok "the guest sealed a secret with clevis" wait_until 120 rn_vm_said "$NS" vm 'sealed '
jwe=$(rn_vm_console "$NS" vm | sed -n 's/^TPM-GUEST: sealed //p' | head -1)
virtctl stop vm >/dev/null
ok "virtctl stop: the VMI is gone" wait_until 180 rn_vmi_gone "$NS" vm
pvc=$(k get pvc -l persistent-state-for=vm -o jsonpath='{.items[0].metadata.name}')
vol=$T/store/$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}')
kv_state=$(find "$vol/swtpm" -path '*/tpm2/tpm2-00.permall' | head -1)
ok "KubeVirt's state is plaintext on its volume: a bare swtpm with no key loads it" rn_state_loads "$kv_state"

# ---- the agent: start on node-2, unseal ----
deploy_agent() { rn_agent_deploy && kubectl apply -k "$E2E_TOP/deploy/kubevirt-plugin" >/dev/null; }
ok "kubectl apply -k deploy/overlays/testbed and deploy/kubevirt-plugin" deploy_agent
rn_guest_vm "$NS" vm "$n2" "console=ttyS0 quiet tpmguest.unseal=$jwe tpmguest.stay=1"
virtctl start vm >/dev/null
if wait_until 300 rn_vmi_on "$NS" vm "$n2"; then pass "with the agent: the VM runs on $n2"
else fail "with the agent: the VM runs on $n2" "$(k get tpmstate vm -o jsonpath='{.status.nodeState}')"; fi
ok "the guest printed an unseal result" wait_until 120 rn_vm_said "$NS" vm 'unseal'
is "$(rn_vm_console "$NS" vm | sed -n 's/^TPM-GUEST: unsealed //p')" "$secret" \
  "the secret KubeVirt's TPM sealed unseals through the agent's: the state was taken over"
like "$(k get tpmstate vm -o jsonpath='{.status.nodeState.phase} {.status.nodeState.encrypted}')" '^Running true$' \
  "TPMState: Running, encrypted"
reasons=$(k get events --field-selector involvedObject.name=vm -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' | sort -u | tr '\n' ' ')
like "$reasons" 'KubeVirtStateTakenOver.*KubeVirtStateEncrypted|KubeVirtStateEncrypted.*KubeVirtStateTakenOver' \
  "events: KubeVirtStateTakenOver, KubeVirtStateEncrypted"
rn_state_loads "$vol/tpm2-00.permall"; rc=$?
is "$rc" 1 "the agent's state on the volume is ciphertext (a bare swtpm cannot load it: $RN_STATE_LOG)"
rn_state_loads "$kv_state"; rc=$?
is "$rc" 1 "KubeVirt's copy is now the ciphertext too: no plaintext left, and no KubeVirt swtpm could start afresh on it"
virtctl stop vm >/dev/null
