#!/usr/bin/env bash
# Issue 21, acceptance 3: the BitLocker story on real KubeVirt VMIs with
# vtpm-agent installed as shipped (deploy/overlays/testbed, the DaemonSet and
# key broker) and its KubeVirt Plugin (deploy/kubevirt-plugin). The TPM guest
# (hack/build-tpm-guest.sh) in a VM with `tpm: {persistent: true}` seals a
# secret with clevis on node-1; `virtctl stop`; pinned to node-2, `virtctl
# start`: it unseals the secret. On the way:
#   - the real domain's TPM is external: QEMU's chardev is the agent's control
#     socket in the launcher, /run/vtpm/<vm uid>.sock, not libvirt's swtpm;
#   - virt-handler asked the agent (PreVMStart) before it started the domain;
#   - TPMState says Running on the node, encrypted;
#   - the state on the volume is ciphertext: a bare swtpm without the key
#     cannot load a copy of tpm2-00.permall, and KubeVirt's own swtpm
#     directory on the volume holds no state;
#   - with the Plugin removed, KubeVirt's own swtpm does not start the VM on
#     a new, empty TPM: the agent left a note where that swtpm looks
#     (swtpm/<firmware uuid>/tpm2/tpm2-00.permall), libvirt's swtpm set-up
#     fails there (on the test bed at the directory, which is not libvirt's
#     own), the start fails loudly, and the VM's state is untouched.
# Suite 06 is the same story without the agent: KubeVirt's plaintext.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_agent_on_kubevirt
plan 24
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) n2=$(nl_name 2)

gates=$(kubectl -n kubevirt get kv kubevirt -o jsonpath='{.spec.configuration.developerConfiguration.featureGates}')
like "$gates" '"Plugins"' "the test bed's KubeVirt has the Plugins feature gate on (hack/kubevirt/kubevirt-cr.yaml)"
rn_agent_on_kubevirt_up 09

vm_apply() { rn_guest_vm "$NS" "$@"; }
vmi_on() { rn_vmi_on "$NS" "$@"; }
console() { rn_vm_console "$NS" "$1"; }
said() { rn_vm_said "$NS" "$@"; }
vmi_gone() { rn_vmi_gone "$NS" "$1"; }
why_not() {
  diag "VMI: $(k get vmi "$1" -o jsonpath='{.status.phase} {.status.conditions[?(@.type=="Synchronized")].message}' 2>&1 | head -c 600)"
  diag "TPMState nodeState: $(k get tpmstate "$1" -o jsonpath='{.status.nodeState}' 2>&1)"
  diag "events: $(k get events --field-selector involvedObject.name="$1" -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' | tail -4 | cut -c1-300)"
}
# qemu_cmdline NS_NAME: QEMU's command line (the node shares the machine's PID namespace).
qemu_cmdline() {
  local p
  for p in $(pgrep -f 'qemu-system' 2>/dev/null); do
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -F "guest=$1," && return 0
  done
  return 1
}

# ---- boot 1 on node-1: seal ----
secret=s3cret-$RANDOM$RANDOM
vm_apply tpm-guest "$n1" "console=ttyS0 quiet tpmguest.seal=$secret tpmguest.stay=1"
vm_uid=$(k get vm tpm-guest -o jsonpath='{.metadata.uid}')
t0=$(date +%s)
virtctl start tpm-guest >/dev/null
if wait_until 300 vmi_on tpm-guest "$n1"; then pass "the VM with a persistent TPM runs on $n1 (VMI Running)"
else fail "the VM with a persistent TPM runs on $n1 (VMI Running)"; why_not tpm-guest; fi
ok "the guest sealed a secret with clevis" wait_until 120 said tpm-guest 'sealed '
diag "boot 1: start to sealed in $(( $(date +%s) - t0 )) s"
like "$(console tpm-guest | grep '^TPM-GUEST: tpm2 ')" 'tpm2 present family=2\.0 .*driver=tpm_crb' \
  "the guest sees a TPM 2.0 (tpm_crb)"
jwe=$(console tpm-guest | sed -n 's/^TPM-GUEST: sealed //p' | head -1)

cmd=$(qemu_cmdline "${NS}_tpm-guest")
like "$cmd" "-chardev socket,id=chrtpm,path=/run/vtpm/$vm_uid\\.sock" \
  "the real domain's TPM is the agent's swtpm: QEMU's TPM chardev is /run/vtpm/<vm uid>.sock in the launcher"
like "$(k get tpmstate tpm-guest -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase} {.status.nodeState.encrypted} {.status.encrypted}')" \
  "^$n1 Running true true$" "TPMState: Running on $n1, encrypted"
_tpm_column() { kubectl get tpmstate -n "$NS" tpm-guest --no-headers | grep -Eq '^tpm-guest +tpm-guest +Ready +VTPMStarted '; }
if wait_until 30 _tpm_column; then pass "kubectl get tpmstate: Ready, and the TPM column says VTPMStarted (condition TPMRunning True)"
else fail "kubectl get tpmstate: Ready, and the TPM column says VTPMStarted (condition TPMRunning True)" \
  "$(kubectl get tpmstate -n "$NS" tpm-guest 2>&1)" "$(k get tpmstate tpm-guest -o jsonpath='{.status.conditions}')"; fi
is "$(k get pods -l vtpm-agent.io/attachment-for -o name)" "" \
  "no attachment pod: the agent uses the state volume KubeVirt's launcher mounts itself (pod volume vm-state)"
ok "virt-handler asked the agent first: its PreVMStart hook answered once the vTPM ran" \
  grep -q '"msg":"PreVMStart: the vTPM runs, the VM may start","vm":"tpm-guest"' "$(rn_agent_log "$n1")"
diag "$(grep -o '"msg":"PreVMStart[^}]*' "$(rn_agent_log "$n1")" | tail -1)"

# ---- what is on the volume ----
pvc=$(k get tpmstate tpm-guest -o jsonpath='{.status.pvcName}')
pv=$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}')
vol=$T/store/$pv
ok "the state file is on the VM's state volume ($pvc)" test -s "$vol/tpm2-00.permall"
diag "state files: $(cd "$vol" && find . -type f | sort | tr '\n' ' ')"
fw=$(k get vm tpm-guest -o jsonpath='{.spec.template.spec.domain.firmware.uuid}')
like "$(head -1 "$vol/swtpm/$fw/tpm2/tpm2-00.permall" 2>&1)" '^vtpm-agent: this VM.s TPM state is encrypted' \
  "KubeVirt's own swtpm directory on the volume holds no TPM state, only the agent's note (firmware uuid $fw)"
rn_state_loads "$vol/tpm2-00.permall"; rc=$?
if [ $rc = 1 ]; then pass "the state is ciphertext: a bare swtpm without the key cannot load a copy"
else fail "the state is ciphertext: a bare swtpm without the key cannot load a copy" \
  "$([ $rc = 2 ] && echo "no state file to copy" || echo "swtpm_ioctl -i succeeded")"; fi
diag "swtpm on the copy said: $RN_STATE_LOG"

# ---- stop; boot 2 on node-2: unseal ----
virtctl stop tpm-guest >/dev/null
ok "virtctl stop: the VMI is gone" wait_until 120 vmi_gone tpm-guest
_no_swtpm() { [ -z "$(rn_swtpm_pid "$vm_uid")" ]; }
ok "the agent's swtpm stopped with the launcher" wait_until 60 _no_swtpm
vm_apply tpm-guest "$n2" "console=ttyS0 quiet tpmguest.unseal=$jwe tpmguest.stay=1"
virtctl start tpm-guest >/dev/null
if wait_until 300 vmi_on tpm-guest "$n2"; then pass "started again, pinned to $n2 (VMI Running there)"
else fail "started again, pinned to $n2 (VMI Running there)"; why_not tpm-guest; fi
ok "the guest printed an unseal result" wait_until 120 said tpm-guest 'unseal'
is "$(console tpm-guest | sed -n 's/^TPM-GUEST: unsealed //p')" "$secret" \
  "on $n2 the guest unseals the secret sealed on $n1: the encrypted state carried the TPM"
is "$(k get pvc -l persistent-state-for=tpm-guest -o jsonpath='{.items[*].metadata.name}')" "$pvc" \
  "one state volume, the same one"
virtctl stop tpm-guest >/dev/null
ok "virtctl stop: the VMI is gone again" wait_until 180 vmi_gone tpm-guest

# ---- the Plugin removed: no silent new TPM ----
sum_before=$(sha256sum < "$vol/tpm2-00.permall")
ok "kubectl delete -k deploy/kubevirt-plugin" sh -c "kubectl delete -k '$E2E_TOP/deploy/kubevirt-plugin' >/dev/null"
virtctl start tpm-guest >/dev/null
swtpm_refused() { k get events --field-selector involvedObject.name=tpm-guest,reason=SyncFailed \
  -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | grep -qi 'swtpm'; }
if wait_until 180 swtpm_refused; then
  pass "without the Plugin, KubeVirt's own swtpm set-up fails where the agent left its note: the start fails, loudly"
else fail "without the Plugin, KubeVirt's own swtpm set-up fails where the agent left its note: the start fails, loudly"; why_not tpm-guest; fi
diag "$(k get events --field-selector involvedObject.name=tpm-guest,reason=SyncFailed -o jsonpath='{.items[-1:].message}' | cut -c1-400)"
if ! rn_vm_said "$NS" tpm-guest 'tpm2 present' && [ "$(sha256sum < "$vol/tpm2-00.permall")" = "$sum_before" ]; then
  pass "no guest ran on a new TPM, and the VM's encrypted state is untouched"
else fail "no guest ran on a new TPM, and the VM's encrypted state is untouched" "$(rn_vm_console "$NS" tpm-guest)"; fi
virtctl stop tpm-guest >/dev/null

