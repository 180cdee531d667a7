#!/usr/bin/env bash
# Issue 21: the TPM model and version annotations take effect in the real
# domain. Set in the VM's template (spec.template.metadata.annotations, which
# KubeVirt copies to the VMI), vtpm-agent.io/tpm-model reaches the domain
# through the Plugin's domain hook and vtpm-agent.io/tpm-version the agent's
# swtpm (the external backend has no version: QEMU asks swtpm). Three VMs at
# once, the agent installed as shipped with its Plugin:
#   tis20: TPM 2.0 on tpm-tis: the guest's kernel finds a TPM 2.0 through tpm_tis;
#   tis12: TPM 1.2 on tpm-tis: a TPM 1.2 through tpm_tis, swtpm without --tpm2;
#   crb12: TPM 1.2 on the default tpm-crb: refused before the domain is
#          defined (TPMModelUnsupported, in TPMState and in virt-handler's
#          SyncFailed event), no guest runs.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_agent_on_kubevirt
plan 12
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) n2=$(nl_name 2)
rn_agent_on_kubevirt_up 10m

# vm NAME NODE ANNOTATIONS(JSON object): the TPM guest with these template annotations, started.
vm() {
  rn_guest_vm "$NS" "$1" "$2" "console=ttyS0 quiet tpmguest.stay=1" &&
    k patch vm "$1" --type merge -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":$3}}}}" >/dev/null &&
    virtctl start "$1" >/dev/null
}
qemu_cmdline() {
  local p
  for p in $(pgrep -f 'qemu-system' 2>/dev/null); do
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -F "guest=${NS}_$1," && return 0
  done
  return 1
}
swtpm_args() { tr '\0' ' ' < "/proc/$(rn_swtpm_pid "$(k get vm "$1" -o jsonpath='{.metadata.uid}')" | head -1)/cmdline" 2>/dev/null; }
said() { rn_vm_console "$NS" "$1" | grep "^TPM-GUEST: $2"; }
reason_is() { [ "$(k get tpmstate "$1" -o jsonpath='{.status.nodeState.reason}' 2>/dev/null)" = "$2" ]; }
sync_failed_says() { k get events --field-selector "involvedObject.name=$1,reason=SyncFailed" \
  -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | grep -qF "$2"; }

vm tis20 "$n1" '{"vtpm-agent.io/tpm-model":"tpm-tis"}'
vm tis12 "$n2" '{"vtpm-agent.io/tpm-version":"1.2","vtpm-agent.io/tpm-model":"tpm-tis"}'
vm crb12 "$n1" '{"vtpm-agent.io/tpm-version":"1.2"}'

# ---- tis20 ----
if wait_until 300 rn_vm_said "$NS" tis20 'tpm2 '; then
  like "$(said tis20 'tpm2 ')" 'tpm2 present family=2\.0 .*driver=tpm_tis ' "tis20: the guest finds a TPM 2.0 through tpm_tis"
else fail "tis20: the guest finds a TPM 2.0 through tpm_tis" "VMI: $(k get vmi tis20 -o jsonpath='{.status.phase}')" \
  "nodeState: $(k get tpmstate tis20 -o jsonpath='{.status.nodeState}')"; fi
diag "tis20's guest: $(said tis20 'tpm2 ')"
like "$(qemu_cmdline tis20)" '-device (\{"driver":"tpm-tis"|tpm-tis,)' "tis20: QEMU's TPM device is tpm-tis"
like "$(swtpm_args tis20)" ' --tpm2 ' "tis20: the agent's swtpm is a TPM 2.0"

# ---- tis12 ----
if wait_until 300 rn_vm_said "$NS" tis12 'tpm'; then
  like "$(said tis12 'tpm')" 'tpm present version_major=1 driver=tpm_tis ' "tis12: the guest finds a TPM 1.2 through tpm_tis"
else fail "tis12: the guest finds a TPM 1.2 through tpm_tis" "VMI: $(k get vmi tis12 -o jsonpath='{.status.phase}')" \
  "nodeState: $(k get tpmstate tis12 -o jsonpath='{.status.nodeState}')"; fi
diag "tis12's guest: $(said tis12 'tpm')"
like "$(qemu_cmdline tis12)" '-device (\{"driver":"tpm-tis"|tpm-tis,)' "tis12: QEMU's TPM device is tpm-tis"
args=$(swtpm_args tis12)
if [ -n "$args" ] && [[ $args != *" --tpm2 "* ]]; then pass "tis12: the agent's swtpm is a TPM 1.2 (no --tpm2)"
else fail "tis12: the agent's swtpm is a TPM 1.2 (no --tpm2)" "swtpm: $args"; fi
like "$(k get tpmstate tis12 -o jsonpath='{.status.nodeState.message}')" '1\.2' "tis12: TPMState says TPM 1.2 runs"

# ---- crb12 ----
ok "crb12: TPMState says TPMModelUnsupported" wait_until 120 reason_is crb12 TPMModelUnsupported
ok "crb12: the start is refused at the node hook, SyncFailed says TPMModelUnsupported" \
  wait_until 120 sync_failed_says crb12 TPMModelUnsupported
if [ "$(k get vmi crb12 -o jsonpath='{.status.phase}')" != Running ] && ! rn_vm_said "$NS" crb12 'tpm'; then
  pass "crb12: no guest runs"
else fail "crb12: no guest runs" "VMI: $(k get vmi crb12 -o jsonpath='{.status.phase}')"; fi
diag "$(k get events --field-selector involvedObject.name=crb12,reason=SyncFailed -o jsonpath='{.items[-1:].message}' | cut -c1-300)"
for v in tis20 tis12 crb12; do virtctl stop "$v" >/dev/null 2>&1; done
for v in tis20 tis12 crb12; do wait_until 180 rn_vmi_gone "$NS" "$v"; done
