#!/usr/bin/env bash
# Issue 6 with the default `secret` KEK provider:
#  (a) acceptance 4, wrong KEK: the KEK in the agent namespace's Secret is
#      replaced by other bytes; the VM restarts: swtpm is not started, the status
#      says KeyUnwrapFailed with the one unwrap-failure message (no key bytes,
#      no kekId read from the volume: that is tenant data), and every
#      file of the state on the backing store is byte-identical. With the right
#      KEK back, the VM starts and clevis unseals.
#  (b) acceptance 2, the state on the backing store is not plaintext: a bare
#      swtpm on a copy of it cannot load it without the key, and loads it (and
#      clevis unseals from it) with the DEK unwrapped by build/tools/state-key.
#  (c) acceptance 2, key scan while the VM runs: the DEK and the KEK (raw, hex,
#      HEX, base64) appear in none of: the agent's and the launchers' logs, the
#      events and TPMStates of every namespace, the API server's audit log,
#      /proc/<pid>/cmdline and environ of every process on the machine, every
#      file on the backing store (PVCs) and under the node's directories. The
#      scanner is first shown to find planted copies (a file, a process's
#      environment), so a clean result means something.
# Keys handled by this script travel through pipes and 0600 files under
# $NODE_TOP/keys only (never argv or the environment), or the scan would find
# the test itself.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-keys-scan
. "$(dirname "$0")/lib-node.sh"
plan 29

SCAN="/usr/bin/python3 $E2E_TOP/test/e2e/key-scan.py"
STATE_KEY=$E2E_TOP/build/tools/state-key
[ -x "$STATE_KEY" ] || bail_out "$STATE_KEY missing: run 'make tools'"
KEYS=$NODE_TOP/keys
mkdir -m 0700 "$KEYS"
NEEDLES=$KEYS/needles # "label hex" lines for key-scan.py
hex_of() { od -An -v -tx1 | tr -d ' \n'; } # stdin bytes -> hex, via pipes only
kek_secret=vtpm-kek-$NS # provider_secret.c: <agent-ns>/vtpm-kek-<vm-ns>, data kek-<version>
# set_kek FIELD B64FILE: replace one KEK in the Secret (the value goes through a file and stdin).
set_kek() {
  k get secret "$kek_secret" -o json |
    jq --arg f "$1" --rawfile v "$2" '.data[$f] = ($v | rtrimstr("\n")) | del(.metadata.resourceVersion)' |
    k replace -f - >/dev/null
}
store_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
_no_swtpm_for() { [ -z "$(swtpm_pids "$1")" ]; }
swtpm_up_for() { # VM POD
  wait_until 60 swtpm_running "$2" && return 0
  diag "nodeState of $1: $(tpmstate_field "$1" .status.nodeState)" "$(tail -5 "$(node_agent_log a)")"
  return 1
}
# bare_swtpm DIR NAME [KEYFILE]: swtpm on DIR, as QEMU's backend would run it
# (control channel, PTM_INIT from outside), data channel at $NODE_TOP/NAME.srv.
bare_swtpm() {
  local dir=$1 n=$2 key=()
  [ -z "${3:-}" ] || key=(--key "file=$3,format=hex,mode=aes-256-cbc")
  swtpm socket --tpm2 --tpmstate "dir=$dir" "${key[@]}" --ctrl "type=unixio,path=$NODE_TOP/$n.ctrl" \
    --server "type=unixio,path=$NODE_TOP/$n.srv" --log "file=$NODE_TOP/$n.log,level=5" &
  _track "bare-$n" $!
  wait_until 10 test -S "$NODE_TOP/$n.ctrl"
}
bare_tpm() { local n=$1; shift; TPM2TOOLS_TCTI="cmd:socat - UNIX-CONNECT:$NODE_TOP/$n.srv" "$@"; }

node_testbed_up
ok "node A up, its agent with the default (secret) key provider" node_up a

# ---- seal a secret in a VM whose state is encrypted
secret="scan-secret-$RANDOM$RANDOM"
ok "kw: TPMState Ready" vm_create kw "{persistent: true}" "" Ready
launcher_start a virt-launcher-kw-1 kw >/dev/null
ok "kw: swtpm runs in its launcher" swtpm_up_for kw virt-launcher-kw-1
guest_start virt-launcher-kw-1
guest_tpm tpm2_startup -c >/dev/null 2>&1
if printf '%s' "$secret" | guest_tpm clevis encrypt tpm2 '{}' > "$NODE_TOP/kw.jwe" 2>"$NODE_TOP/kw.err" &&
   [ -s "$NODE_TOP/kw.jwe" ]; then pass "kw: clevis sealed a secret through the vTPM"
else fail "kw: clevis sealed a secret through the vTPM" "$(cat "$NODE_TOP/kw.err")"; fi
guest_stop
launcher_stop virt-launcher-kw-1
ok "kw: swtpm stopped with its launcher" wait_until 30 _no_swtpm_for kw

store=$(vm_store_dir kw)
kek_id=$(jq -r .kekId "$store/vtpm-key.json")
kek_field=kek-${kek_id##*#}
like "$(jq -r .provider "$store/vtpm-key.json") $kek_id" "^secret $NS/$kek_secret#[0-9]+\$" \
  "kw: the key header names provider secret and kekId $kek_id"

# The keys, for the scans: the KEK from its Secret, the DEK unwrapped by state-key.
k get secret "$kek_secret" -o json | jq -r --arg f "$kek_field" '.data[$f]' > "$KEYS/kek.b64"
{ printf 'kek '; base64 -d < "$KEYS/kek.b64" | hex_of; printf '\n'; } > "$NEEDLES"
"$STATE_KEY" --kubeconfig "$KUBECONFIG" --state-dir "$store" --out "$KEYS/dek.hex" 2>"$KEYS/state-key.err"
if [ "$(wc -c < "$KEYS/dek.hex" 2>/dev/null)" = 64 ] && grep -qx '[0-9a-f]\{64\}' "$KEYS/dek.hex"; then
  pass "state-key unwraps kw's 256-bit DEK with the KEK from the Secret"
else fail "state-key unwraps kw's 256-bit DEK with the KEK from the Secret" "$(cat "$KEYS/state-key.err")"; fi
{ printf 'dek '; cat "$KEYS/dek.hex"; printf '\n'; } >> "$NEEDLES"

# ---- (b) the state on the backing store is not plaintext TPM state
cp -a "$store" "$NODE_TOP/copy-nokey"
cp -a "$store" "$NODE_TOP/copy-key"
bare_swtpm "$NODE_TOP/copy-nokey" nokey
init_out=$(swtpm_ioctl --unix "$NODE_TOP/nokey.ctrl" -i 2>&1); init_rc=$?
startup_out=$(bare_tpm nokey tpm2_startup -c 2>&1); startup_rc=$?
_stop bare-nokey TERM 5
if [ "$init_rc" -ne 0 ] && [ "$startup_rc" -ne 0 ] && grep -q 'GetDecryptedData' "$NODE_TOP/nokey.log"; then
  pass "(b) bare swtpm on a copy of the state WITHOUT the key cannot load it ($init_out; log: $(grep -m1 -o 'SWTPM_NVRAM_LoadData: Error.*' "$NODE_TOP/nokey.log"))"
else fail "(b) bare swtpm on a copy of the state WITHOUT the key cannot load it" "PTM_INIT: rc $init_rc $init_out" \
  "tpm2_startup: rc $startup_rc $startup_out" "$(cat "$NODE_TOP/nokey.log")"; fi
bare_swtpm "$NODE_TOP/copy-key" withkey "$KEYS/dek.hex"
init_out=$(swtpm_ioctl --unix "$NODE_TOP/withkey.ctrl" -i 2>&1); init_rc=$?
startup_out=$(bare_tpm withkey tpm2_startup -c 2>&1); startup_rc=$?
is "$init_rc $startup_rc" "0 0" "(b) bare swtpm on a copy of the state WITH the DEK from state-key loads it (PTM_INIT, TPM2_Startup)"
unsealed=$(bare_tpm withkey clevis decrypt < "$NODE_TOP/kw.jwe" 2>"$NODE_TOP/kw.err")
is "$unsealed" "$secret" "(b) ... and clevis unseals the VM's secret from that copy"
swtpm_ioctl --unix "$NODE_TOP/withkey.ctrl" -s >/dev/null 2>&1
_stop bare-withkey TERM 5
rm -f "$KEYS/dek.hex"

# ---- (a) wrong KEK: not started, state untouched, a clear status
store_sums "$store" > "$NODE_TOP/sums.before"
openssl rand 32 | base64 -w0 > "$KEYS/wrong.b64"
{ printf 'wrong-kek '; base64 -d < "$KEYS/wrong.b64" | hex_of; printf '\n'; } >> "$NEEDLES"
ok "(a) the KEK in Secret $kek_secret ($kek_field) replaced by other bytes" set_kek "$kek_field" "$KEYS/wrong.b64"
launcher_start a virt-launcher-kw-2 kw >/dev/null
if wait_reason 60 kw KeyUnwrapFailed; then pass "(a) kw restarts: status.nodeState.reason KeyUnwrapFailed"
else fail "(a) kw restarts: status.nodeState.reason KeyUnwrapFailed" "nodeState: $(tpmstate_field kw .status.nodeState)"; fi
# Let the agent retry a few times: no attempt may touch the state.
_retried() { [ "$(grep -c 'will retry.*virt-launcher-kw-2\|virt-launcher-kw-2.*will retry' "$(node_agent_log a)")" -ge 3 ]; }
wait_until 30 _retried || diag "fewer than 3 attempts seen in the agent log"
msg=$(tpmstate_field kw .status.nodeState.message)
tpmstate_field kw .status > "$NODE_TOP/kw-status.json"
like "$(tpmstate_field kw .status.nodeState.phase) $msg" "^Refused .*cannot be unwrapped with a KEK of this VM's namespace" \
  "(a) the status says the one unwrap-failure message: $msg"
if $SCAN "$NEEDLES" "$NODE_TOP/kw-status.json" > "$NODE_TOP/scan-status.out" 2>&1; then
  pass "(a) ... and holds no key bytes (right KEK, wrong KEK, DEK; raw/hex/base64)"
else fail "(a) ... and holds no key bytes (right KEK, wrong KEK, DEK; raw/hex/base64)" "$(cat "$NODE_TOP/scan-status.out")"; fi
_warned() { [ -n "$(events_for kw KeyUnwrapFailed | grep '^Warning ')" ]; }
ok "(a) a Warning event KeyUnwrapFailed" wait_until 20 _warned
if [ -z "$(swtpm_pids kw)" ] && ! swtpm_running virt-launcher-kw-2; then pass "(a) swtpm is not started"
else fail "(a) swtpm is not started" "$(ps -o pid,args -C swtpm,swtpm_setup)"; fi
store_sums "$store" > "$NODE_TOP/sums.after"
if [ -s "$NODE_TOP/sums.before" ] && cmp -s "$NODE_TOP/sums.before" "$NODE_TOP/sums.after"; then
  pass "(a) every state file on the backing store is byte-identical ($(wc -l < "$NODE_TOP/sums.after") files, header included, after $(grep -c 'will retry.*virt-launcher-kw-2' "$(node_agent_log a)") attempts)"
else fail "(a) every state file on the backing store is byte-identical" "$(diff "$NODE_TOP/sums.before" "$NODE_TOP/sums.after")"; fi

# The right KEK back; the VM starts (again) and the secret unseals.
launcher_stop virt-launcher-kw-2
ok "(a) the right KEK restored in the Secret" set_kek "$kek_field" "$KEYS/kek.b64"
launcher_start a virt-launcher-kw-3 kw >/dev/null
ok "(a) kw starts with the right KEK" swtpm_up_for kw virt-launcher-kw-3
guest_start virt-launcher-kw-3
guest_tpm tpm2_startup -c >/dev/null 2>&1
unsealed=$(guest_tpm clevis decrypt < "$NODE_TOP/kw.jwe" 2>"$NODE_TOP/kw.err")
is "$unsealed" "$secret" "(a) clevis decrypt returns the sealed secret"

# ---- (c) key scan, while the VM runs
# The scanner can fail: it finds a planted file (hex DEK) and a planted
# process environment (base64 KEK).
mkdir -m 0700 "$NODE_TOP/plant"
"$STATE_KEY" --kubeconfig "$KUBECONFIG" --state-dir "$store" --out "$NODE_TOP/plant/dek.txt" 2>/dev/null
# (Started from a subshell: not a job of this shell, so killing it is not reported.)
planted=$(bash -c 'IFS= read -r V < "$1"; export V; exec sleep 60' _ "$KEYS/kek.b64" >/dev/null 2>&1 & echo $!)
_track planted "$planted"
_env_planted() { grep -q '^V=' <(tr '\0' '\n' < "/proc/$planted/environ"); }
wait_until 5 _env_planted
$SCAN "$NEEDLES" "$NODE_TOP/plant" proc > "$NODE_TOP/scan-plant.out" 2>&1
if grep -q "^HIT dek hex $NODE_TOP/plant/dek.txt" "$NODE_TOP/scan-plant.out" &&
   grep -q "^HIT kek base64 /proc/$planted/environ" "$NODE_TOP/scan-plant.out"; then
  pass "(c) the scanner finds a planted hex DEK in a file and a planted base64 KEK in a process's environ"
else fail "(c) the scanner finds a planted hex DEK in a file and a planted base64 KEK in a process's environ" \
  "$(cat "$NODE_TOP/scan-plant.out")"; fi
_stop planted KILL 5
rm -rf "$NODE_TOP/plant"

# The real places. The test bed's audit policy (hack/testbed-lib.sh) is
# Metadata level: no request or response bodies, so the whole log is scanned.
# Were it to log bodies, the entries about Secrets would hold the KEK
# legitimately (it is stored there): only those would be left out.
audit=$VTPM_RUN/logs/audit.log
if [[ $(tr -d ' \n' < "$VTPM_RUN/audit-policy.yaml" 2>/dev/null) =~ rules:\[\{level:Metadata\}\]$ ]]; then
  audit_note="audit log (Metadata level, whole)"
else
  jq -c 'select(.objectRef.resource != "secrets")' "$audit" > "$NODE_TOP/audit-no-secrets.log"
  audit=$NODE_TOP/audit-no-secrets.log
  audit_note="audit log (logs bodies: Secret entries left out)"
fi
kubectl get events -A -o json > "$NODE_TOP/events.json"
kubectl get events.events.k8s.io -A -o json > "$NODE_TOP/events-v1.json"
kubectl get tpmstates -A -o json > "$NODE_TOP/tpmstates.json"
like "$(jq '[.items[] | select(.reason == "KeyUnwrapFailed")] | length' "$NODE_TOP/events.json")" '^[1-9]' \
  "(c) the events scanned include the KeyUnwrapFailed ones"
# (Not swtpm_ioctl: the guest's bridge holds swtpm's one control connection.)
if [ -n "$(swtpm_pids kw)" ] && guest_tpm tpm2_getrandom --hex 8 >/dev/null 2>&1; then
  pass "(c) kw runs during the scan (its swtpm answers the guest)"
else fail "(c) kw runs during the scan (its swtpm answers the guest)" "swtpm: $(swtpm_pids kw)"; fi
$SCAN "$NEEDLES" "$AGENT_DIR" "$NODE_TOP/events.json" "$NODE_TOP/events-v1.json" "$NODE_TOP/tpmstates.json" \
  "$audit" proc "$NODE_STORE" "$(node_dir a)" "$(node_host_dir a)/kubelet" "$(node_host_dir a)/pod-logs" > "$NODE_TOP/scan.out" 2>&1
scan_rc=$?
summary=$(tail -1 "$NODE_TOP/scan.out")
if [ "$scan_rc" -eq 0 ] && [[ $summary =~ ^scanned\ ([0-9]+)\ files,\ ([0-9]+)\ processes ]] &&
   [ "${BASH_REMATCH[1]}" -ge 10 ] && [ "${BASH_REMATCH[2]}" -ge 20 ]; then
  pass "(c) no DEK or KEK bytes (raw/hex/HEX/base64) in logs, events, TPMStates, $audit_note, /proc/*/{cmdline,environ}, backing store, node dirs: $summary"
else fail "(c) no DEK or KEK bytes in logs, events, TPMStates, audit log, /proc/*/{cmdline,environ}, backing store, node dirs" \
  "exit status $scan_rc" "$(head -40 "$NODE_TOP/scan.out")"; fi
# The key header is on the store, wrapped: it is the one place the DEK is, and not in the clear.
ok "(c) the backing store holds kw's key header (wrapped DEK) beside the encrypted state" \
  test -s "$store/vtpm-key.json" -a -s "$store/tpm2-00.permall"

guest_stop
launcher_stop virt-launcher-kw-3
node_no_leftovers
agent_sanitizer_check
rm -rf "$KEYS"
