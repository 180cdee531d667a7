#!/usr/bin/env bash
# Issue 5, acceptance 4: TPM version and model. tpm-crb with TPM 1.2 is
# refused (TPMModelUnsupported); TPM 1.2 with tpm-tis works end to end (raw
# TPM 1.2 commands through the guest's channel); the node labels match
# `swtpm socket --print-capabilities`; with `node: {enabled: false}` the labels
# say so and no swtpm starts. And (acceptance 5) nothing outlives its launcher.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-node-tpmver
. "$(dirname "$0")/lib-node.sh"
plan 24

node_testbed_up
ok "node A up" node_up a
ok "node D up with vTPM disabled" node_up d "enabled: false"

# ---- node labels ----
caps=$(swtpm socket --print-capabilities)
has() { if jq -e --arg f "$1" '.features | index($f)' <<<"$caps" >/dev/null; then echo true; else echo false; fi; }
label() { kubectl get node "$(node_name "$1")" -o json | jq -r --arg l "vtpm-agent.io/$2" '.metadata.labels[$l] // ""'; }
_labelled() { [ -n "$(label "$1" "$2")" ]; }
wait_until 30 _labelled a tpm-2.0
is "$(label a enabled) $(label a tpm-1.2) $(label a tpm-2.0)" "true $(has tpm-1.2) $(has tpm-2.0)" \
  "node A's labels (enabled, tpm-1.2, tpm-2.0) match swtpm --print-capabilities"
wait_until 30 _labelled d enabled
is "$(label d enabled) $(label d tpm-1.2) $(label d tpm-2.0)" "false false false" \
  "node D (node.enabled: false) is labelled as offering no vTPM"

# ---- 1.2 + tpm-crb: refused ----
ok "VM crb12: the state controller refuses it as well (TPMState phase Error)" vm_create crb12 "{persistent: true}" '{vtpm-agent.io/tpm-version: "1.2", vtpm-agent.io/tpm-model: tpm-crb}' Error
launcher_start a virt-launcher-crb12 crb12 >/dev/null
if wait_reason 60 crb12 TPMModelUnsupported; then pass "TPM 1.2 with tpm-crb: TPMState says TPMModelUnsupported"
else fail "TPM 1.2 with tpm-crb: TPMState says TPMModelUnsupported" "nodeState: $(tpmstate_field crb12 .status.nodeState)"; fi
like "$(tpmstate_field crb12 .status.nodeState.message)" "tpm-tis" "the message names the way out (tpm-tis)"
_warned() { [ -n "$(events_for "$1" "$2" | grep '^Warning ')" ]; }
ok "a Warning event TPMModelUnsupported on the VM" wait_until 30 _warned crb12 TPMModelUnsupported
sleep 2
swtpm_count_is crb12 0 "no swtpm for the refused VM"
is "$(k get pods -l vtpm-agent.io/attachment-for -o name)" "" "no attachment pod for the refused VM"
launcher_stop virt-launcher-crb12

# ---- 1.2 + tpm-tis: works ----
ok "VM tis12 created" vm_create tis12 "{persistent: true}" '{vtpm-agent.io/tpm-version: "1.2", vtpm-agent.io/tpm-model: tpm-tis}' Ready
launcher_start a virt-launcher-tis12 tis12 >/dev/null
if wait_until 60 swtpm_running virt-launcher-tis12; then pass "TPM 1.2 with tpm-tis: swtpm runs"
else fail "TPM 1.2 with tpm-tis: swtpm runs" "nodeState: $(tpmstate_field tis12 .status.nodeState)"; fi
pid=$(swtpm_pids tis12)
args=$(tr '\0' ' ' < "/proc/${pid:-0}/cmdline" 2>/dev/null)
if [ -n "$pid" ] && [[ $args != *--tpm2* ]]; then pass "it is a TPM 1.2 swtpm (no --tpm2)"
else fail "it is a TPM 1.2 swtpm (no --tpm2)" "pid '$pid': $args"; fi
guest_start virt-launcher-tis12
# tpm12 HEX: send one raw TPM 1.2 command as the guest, print the response in hex.
tpm12() { printf '%s' "$1" | xxd -r -p | socat -t 5 - "UNIX-CONNECT:$GUEST_SOCK" | xxd -p | tr -d '\n'; }
# TPM_Startup(TPM_ST_CLEAR): tag RQU_COMMAND, size 12, ordinal 0x99.
resp=$(tpm12 00c10000000c000000990001)
is "$resp" "00c40000000a00000000" "TPM_Startup(ST_CLEAR) answers TPM_SUCCESS (TPM 1.2 response tag)"
# TPM_GetRandom(16): ordinal 0x46.
resp=$(tpm12 00c10000000e0000004600000010)
like "$resp" "^00c40000001e0000000000000010[0-9a-f]{32}$" "TPM_GetRandom(16) answers TPM_SUCCESS with 16 bytes"
dir=$(vm_store_dir tis12)
if [ -f "$dir/tpm-00.permall" ] && [ ! -e "$dir/tpm2-00.permall" ]; then
  pass "TPM 1.2 state (tpm-00.permall) on the backing store"
else
  fail "TPM 1.2 state (tpm-00.permall) on the backing store" "$(ls -la "$dir" 2>&1)"
fi
like "$(tpmstate_field tis12 .status.nodeState.message)" "1\.2 \(tpm-tis\)" "TPMState's message says TPM 1.2 (tpm-tis)"
guest_stop
launcher_stop virt-launcher-tis12

# ---- a node with vTPM disabled starts nothing ----
ok "VM vm-off created" vm_create vm-off "{persistent: true}" "" Ready
launcher_start d virt-launcher-off vm-off >/dev/null
sleep 5 # nothing must happen: give it the time a start takes on node A
swtpm_count_is vm-off 0 "node D (disabled): no swtpm for a launcher there"
is "$(k get pods -l vtpm-agent.io/attachment-for -o name)" "" "node D (disabled): no attachment pod"
launcher_stop virt-launcher-off

node_no_leftovers
agent_sanitizer_check
