#!/usr/bin/env bash
# Issue 6, acceptance 4 (rotation part): KEK rotation on a running VM, DEK
# rotation at the next start, a crash injected in the middle of each, and the
# one-time encryption of state written before encryption was on. Every step
# is judged by what a user would notice: a secret sealed with clevis through
# the vTPM still unseals, the key header and the state bytes on the volume
# change as promised, and status/events say so.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-keys-rotation
. "$(dirname "$0")/lib-node.sh"
plan 47

STATE_KEY_BIN=${STATE_KEY_BIN:-$E2E_TOP/build/tools/state-key}
[ -x "$STATE_KEY_BIN" ] || bail_out "$STATE_KEY_BIN missing: run 'make tools'"
command -v jq >/dev/null || bail_out "jq missing"

node_testbed_up
# The smallest state Lease the configuration allows: after the agent is killed
# half-way through a rotation, its restart waits out the Lease it held (15 s,
# not the default 40).
ok "node A up" node_up a "stateLeaseSeconds: 15"

hdr() { jq -r "$2" "$(vm_store_dir "$1")/vtpm-key.json" 2>/dev/null; }
keys_field() { tpmstate_field "$1" ".status.keys$2"; }
_keys_field_is() { [ "$(keys_field "$1" "$2")" = "$3" ]; }
permall_sum() { sha256sum < "$(vm_store_dir "$1")/tpm2-00.permall" | cut -d' ' -f1; }
_swtpm_gone() { [ -z "$(swtpm_pids "$1")" ]; }
_agent_gone() { _proc_gone "$1"; }

# loads DIR [KEYFILE]: does a bare swtpm load a COPY of the state in DIR
# (with the hex key in KEYFILE, or without a key)? Nothing touches DIR.
loads() {
  local copy rc=0 keyopt=()
  copy=$(mktemp -d "$NODE_TOP/copy.XXXXXX")
  cp "$1"/tpm2-00.permall "$copy/"
  [ -z "${2:-}" ] || keyopt=(--key "file=$2,format=hex,mode=aes-256-cbc")
  swtpm socket --tpm2 --tpmstate "dir=$copy" --ctrl "type=unixio,path=$copy/c.sock" "${keyopt[@]}" \
    --log "file=$copy/log" --daemon || return 2
  wait_until 5 test -S "$copy/c.sock"
  swtpm_ioctl --unix "$copy/c.sock" -i >/dev/null 2>&1 || rc=1
  swtpm_ioctl --unix "$copy/c.sock" -s >/dev/null 2>&1
  rm -rf "$copy"
  return $rc
}

# seal VM: a secret through the running guest's vTPM; unseal VM: must give it back.
seal() {
  printf '%s' "$secret" | guest_tpm clevis encrypt tpm2 '{}' > "$NODE_TOP/$1.jwe" 2>"$NODE_TOP/$1.err" &&
    [ -s "$NODE_TOP/$1.jwe" ]
}
unsealed() { guest_tpm clevis decrypt < "$NODE_TOP/$1.jwe" 2>"$NODE_TOP/$1.err"; }

# vm_boot VM POD: launcher on node A, swtpm answers, guest attached.
vm_boot() {
  launcher_start a "$2" "$1" >/dev/null || return 1
  wait_until 90 swtpm_running "$2" || { diag "nodeState: $(tpmstate_field "$1" .status.nodeState)" \
    "$(tail -5 "$(node_agent_log a)")"; return 1; }
  guest_start "$2" && guest_tpm tpm2_startup -c >/dev/null 2>&1
  return 0
}
vm_halt() {
  # As a guest OS does on shutdown: without it every stop is a non-orderly
  # one and the TPM's dictionary-attack counter soon locks clevis out.
  guest_tpm tpm2_shutdown >/dev/null 2>&1
  guest_stop
  launcher_stop "$2"
  wait_until 30 _swtpm_gone "$1"
}

# ---- KEK rotation on a running VM ----
ok "VM r1 created" vm_create r1 "{persistent: true}" "" Ready
if vm_boot r1 virt-launcher-r1-1; then pass "r1 boots (first boot: encrypted state)"; else fail "r1 boots (first boot: encrypted state)"; fi
secret="secret-r1-$RANDOM"
ok "r1: clevis sealed a secret through the vTPM" seal r1
kek0=$(hdr r1 .kekId)
like "$kek0" "^$NS/vtpm-kek-$NS#1\$" "r1: the key header names the namespace's first KEK ($kek0)"
pid0=$(swtpm_pids r1)
sum0=$(permall_sum r1)
k annotate tpmstate r1 vtpm-agent.io/rotate-kek=2026-q4 >/dev/null
if wait_until 30 _keys_field_is r1 .kekRotation.completed 2026-q4; then
  pass "KEK rotation on the running VM: status.keys.kekRotation.completed = 2026-q4"
else
  fail "KEK rotation on the running VM: status.keys.kekRotation.completed = 2026-q4" \
    "status.keys: $(keys_field r1 '')" "$(tail -5 "$(node_agent_log a)")"
fi
is "$(permall_sum r1)" "$sum0" "the state file was not rewritten by the KEK rotation"
is "$(hdr r1 .kekId)" "$NS/vtpm-kek-$NS#2026-q4" "the header's kekId names the new KEK version"
is "$(keys_field r1 .kekId)" "$NS/vtpm-kek-$NS#2026-q4" "status.keys.kekId reports it"
is "$(swtpm_pids r1)" "$pid0" "the same swtpm keeps running (no restart for a KEK rotation)"
is "$(unsealed r1)" "$secret" "the guest keeps using its vTPM: clevis unseals while running"
is "$(kubectl -n "$NS" get secret "vtpm-kek-$NS" -o json | jq -r '(.data | keys | join(",")) + " " + .metadata.annotations["vtpm-agent.io/current-kek"]')" \
  "kek-1,kek-2026-q4 2026-q4" "the KEK Secret keeps the old KEK, adds the new one and marks it current"
like "$(events_for r1 KEKRotated)" "^Normal KEKRotated" "a Normal KEKRotated event on the VM"

# ---- DEK rotation: pending while running, done at the next start ----
k annotate tpmstate r1 vtpm-agent.io/rotate-dek=d1 --overwrite >/dev/null
if wait_until 30 _keys_field_is r1 .dekRotation.pending true; then
  pass "DEK rotation requested on a running VM: status says it is pending"
else
  fail "DEK rotation requested on a running VM: status says it is pending" "status.keys: $(keys_field r1 '')"
fi
gen0=$(hdr r1 .dekGeneration)
vm_halt r1 virt-launcher-r1-1
sum1=$(permall_sum r1)
if vm_boot r1 virt-launcher-r1-2; then pass "r1 boots again (KEK rotated, DEK rotation due)"; else fail "r1 boots again (KEK rotated, DEK rotation due)"; fi
is "$(keys_field r1 .dekRotation.completed)" "d1" "status.keys.dekRotation.completed = d1"
is "$(hdr r1 .dekGeneration) $(hdr r1 .kekId)" "$((gen0 + 1)) $NS/vtpm-kek-$NS#2026-q4" \
  "dekGeneration went from $gen0 to $((gen0 + 1)), still under the rotated KEK"
isnt_sum=$(permall_sum r1)
if [ "$isnt_sum" != "$sum1" ]; then pass "the state file differs byte-wise (re-encrypted)"
else fail "the state file differs byte-wise (re-encrypted)" "sha256 $isnt_sum before and after"; fi
is "$(unsealed r1)" "$secret" "after the KEK and DEK rotations and a restart: clevis unseals the secret"
like "$(events_for r1 DEKRotated)" "^Normal DEKRotated" "a Normal DEKRotated event on the VM"
"$STATE_KEY_BIN" --kubeconfig "$KUBECONFIG" --state-dir "$(vm_store_dir r1)" --out "$NODE_TOP/r1.key" >/dev/null 2>&1
if loads "$(vm_store_dir r1)" "$NODE_TOP/r1.key" && ! loads "$(vm_store_dir r1)"; then
  pass "swtpm loads the new state with the header's key only (not without a key)"
else fail "swtpm loads the new state with the header's key only (not without a key)"; fi

# ---- a crash in the middle of a KEK rotation (running VM) ----
node_agent_kill a
VTPM_AGENT_FAULT=kek-header-tmp node_agent_start a
apid=$(_tracked agent-a)
k annotate tpmstate r1 vtpm-agent.io/rotate-kek=2027-q1 --overwrite >/dev/null
ok "KEK rotation with a fault injected: the agent exits at kek-header-tmp" wait_until 30 _agent_gone "$apid"
_stop agent-a KILL 5 # gone already, unless the fault point was never reached
is "$(hdr r1 .kekId)" "$NS/vtpm-kek-$NS#2026-q4" "after the crash the old header stands (temp file not renamed)"
if [ -f "$(vm_store_dir r1)/vtpm-key.json.tmp" ]; then pass "the crash came after the new header was written as a temp file"
else fail "the crash came after the new header was written as a temp file" "$(ls -la "$(vm_store_dir r1)")"; fi
is "$(unsealed r1)" "$secret" "the guest keeps using its vTPM through the agent's crash"
# The next agent finishes the KEK rotation, and itself crashes half-way
# through the DEK rotation below.
VTPM_AGENT_FAULT=dek-renamed node_agent_start a
apid=$(_tracked agent-a)
if wait_until 30 _keys_field_is r1 .kekRotation.completed 2027-q1; then
  pass "the restarted agent finishes the KEK rotation (2027-q1)"
else
  fail "the restarted agent finishes the KEK rotation (2027-q1)" "status.keys: $(keys_field r1 '')"
fi
is "$(hdr r1 .kekId)" "$NS/vtpm-kek-$NS#2027-q1" "the header now names KEK 2027-q1"
if [ ! -e "$(vm_store_dir r1)/vtpm-key.json.tmp" ]; then pass "no temp header is left behind"
else fail "no temp header is left behind"; fi
vm_halt r1 virt-launcher-r1-2

# ---- a crash in the middle of a DEK rotation: new files, old header ----
k annotate tpmstate r1 vtpm-agent.io/rotate-dek=d2 --overwrite >/dev/null
gen0=$(hdr r1 .dekGeneration)
launcher_start a virt-launcher-r1-3 r1 >/dev/null
ok "DEK rotation with a fault injected: the agent exits at dek-renamed" wait_until 60 _agent_gone "$apid"
_stop agent-a KILL 5 # gone already, unless the fault point was never reached
dir=$(vm_store_dir r1)
if [ -f "$dir/.vtpm-rekey/COMPLETE" ] && [ "$(hdr r1 '.next.dekGeneration')" = "$((gen0 + 1))" ]; then
  pass "crashed half-way: staging complete, header still has the new key as 'next'"
else
  fail "crashed half-way: staging complete, header still has the new key as 'next'" "$(ls -la "$dir" "$dir/.vtpm-rekey" 2>&1)" "$(cat "$dir/vtpm-key.json")"
fi
swtpm_count_is r1 0 "no swtpm was started on the half-rotated state"
launcher_stop virt-launcher-r1-3
node_agent_start a
if vm_boot r1 virt-launcher-r1-4; then pass "after the agent restarts, r1 boots (recovery rolls forward)"; else fail "after the agent restarts, r1 boots (recovery rolls forward)"; fi
is "$(hdr r1 '.dekGeneration, .next, .kekId')" "$((gen0 + 1))
null
$NS/vtpm-kek-$NS#2027-q1" "the header was promoted: dekGeneration $((gen0 + 1)), no 'next', KEK 2027-q1"
if [ ! -e "$dir/.vtpm-rekey" ]; then pass "the staging directory is gone"; else fail "the staging directory is gone"; fi
is "$(unsealed r1)" "$secret" "clevis unseals after the interrupted KEK and DEK rotations"
is "$(keys_field r1 .dekRotation.completed)" "d2" "status.keys.dekRotation.completed = d2"
like "$(events_for r1 KeyRotationRecovered)" "^Normal KeyRotationRecovered" "a KeyRotationRecovered event says what recovery did"
vm_halt r1 virt-launcher-r1-4

# ---- state from before encryption is encrypted once ----
ok "VM u1 created" vm_create u1 "{persistent: true}" "" Ready
udir=$(vm_store_dir u1)
chown tss: "$udir"; chmod 700 "$udir"
swtpm_setup --tpm2 --tpmstate "$udir" --runas tss --createek --overwrite >/dev/null 2>&1
# A secret sealed into it by a swtpm without a key, as the VM would have.
swtpm socket --tpm2 --tpmstate "dir=$udir,mode=0600" --ctrl "type=unixio,path=$NODE_TOP/u1.sock" \
  --log "file=$NODE_TOP/u1.log" --daemon
wait_until 5 test -S "$NODE_TOP/u1.sock"
GUEST_SOCK=$NODE_TOP/guest-u1.sock
"$BRIDGE_BIN" --ctrl "$NODE_TOP/u1.sock" --listen "$GUEST_SOCK" > "$AGENT_DIR/guest-u1.out" 2>&1 &
_track guest $!
GUEST_TCTI="cmd:socat - UNIX-CONNECT:$GUEST_SOCK"
wait_until 10 _guest_ready "$AGENT_DIR/guest-u1.out"
guest_tpm tpm2_startup -c >/dev/null 2>&1
secret="secret-u1-$RANDOM"
ok "u1: clevis sealed a secret into unencrypted state" seal u1
guest_tpm tpm2_shutdown >/dev/null 2>&1
guest_stop
swtpm_ioctl --unix "$NODE_TOP/u1.sock" -s >/dev/null 2>&1
_no_u1_swtpm() { ! pgrep -f "$NODE_TOP/u1.sock" >/dev/null; }
wait_until 10 _no_u1_swtpm
chown -R tss: "$udir"
if [ ! -e "$udir/vtpm-key.json" ] && loads "$udir"; then pass "u1's state is unencrypted (no header, loads without a key)"
else fail "u1's state is unencrypted (no header, loads without a key)"; fi
if vm_boot u1 virt-launcher-u1-1; then pass "u1 boots (its state is encrypted first)"; else fail "u1 boots (its state is encrypted first)"; fi
is "$(hdr u1 .dekGeneration) $(keys_field u1 .encrypted)" "1 true" "a key header appeared (dekGeneration 1), status.keys.encrypted"
is "$(hdr u1 .kekId)" "$NS/vtpm-kek-$NS#2027-q1" "u1 is wrapped by the namespace's current KEK (the last rotated one)"
if ! loads "$udir"; then pass "swtpm without a key can no longer load u1's state"
else fail "swtpm without a key can no longer load u1's state"; fi
is "$(unsealed u1)" "$secret" "u1: the secret sealed before encryption unseals"
like "$(events_for u1 StateEncrypted)" "^Normal StateEncrypted" "a Normal StateEncrypted event on the VM"
vm_halt u1 virt-launcher-u1-1

agent_sanitizer_check
