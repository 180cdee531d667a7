#!/usr/bin/env bash
# Issue 6, acceptance 1 and 3 with the `kmip` KEK provider and a REAL key
# server (Debian's PyKMIP over TLS with client certificates, hack/kmip-server.sh):
#  (a) the clevis story across a VM restart passes with the state key wrapped
#      by a KEK that lives on the key server: the key header on the volume names
#      provider kmip and a kekId, and PyKMIP's own client finds that KEK object;
#  (b) key server stopped: the running VM's guest keeps using its vTPM; a restart
#      of that VM and the start of a new VM wait with KeyProviderUnavailable (a
#      Warning event, no swtpm); once the server is back (same database, same
#      port) both start by themselves, with no agent restart, and the secret
#      sealed before still unseals.
. "$(dirname "$0")/lib.sh"
[ -x /usr/bin/pykmip-server ] || skip_all "no pykmip-server (python3-pykmip)"
setup_namespace e2e-keys-kmip
. "$(dirname "$0")/lib-node.sh"
plan 31

KMIP_DIR=$NODE_TOP/kmip
KMIP=$E2E_TOP/hack/kmip-server.sh
at_exit "$KMIP stop $KMIP_DIR >/dev/null 2>&1"
# PyKMIP's own client (Debian's python, not the pyenv one on PATH): prints one
# line "UID ALGORITHM LENGTH STATE" per object named $1 on the server.
kmip_locate() {
  /usr/bin/python3 - "$KMIP_DIR" "$1" <<'PY'
import logging, sys
logging.disable(logging.CRITICAL)
from kmip.core import enums
from kmip.core.factories.attributes import AttributeFactory
from kmip.pie.client import ProxyKmipClient
d, name = sys.argv[1], sys.argv[2]
c = ProxyKmipClient(hostname="127.0.0.1", port=int(open(d + "/port").read()), cert=d + "/client.pem",
                    key=d + "/client.key", ca=d + "/ca.pem", config_file="/dev/null")
with c:
    for uid in c.locate(attributes=[AttributeFactory().create_attribute(enums.AttributeType.NAME, name)]):
        key = c.get(uid)
        _, attrs = c.get_attributes(uid, ["State"])
        print(uid, key.cryptographic_algorithm.name, key.cryptographic_length,
              " ".join(str(a.attribute_value) for a in attrs))
PY
}
declare -A _store=()
header_field() { # VM FIELD: a field of the key header on VM's backing store
  [ -n "${_store[$1]:-}" ] || _store[$1]=$(vm_store_dir "$1")
  jq -r ".$2 // empty" "${_store[$1]}/vtpm-key.json" 2>/dev/null
}
swtpm_up_for() { # VM POD: swtpm answers in POD's launcher
  wait_until "${3:-60}" swtpm_running "$2" && return 0
  diag "nodeState of $1: $(tpmstate_field "$1" .status.nodeState)" "$(tail -5 "$(node_agent_log a)")"
  return 1
}

node_testbed_up
# Its own port, away from the script's default range (other suites' servers);
# kmip-server.sh takes the port file's port when it is free, and keeps it on restart.
mkdir -p "$KMIP_DIR" && echo $(( 15800 + RANDOM % 200 )) > "$KMIP_DIR/port"
ok "PyKMIP server up (TLS 1.2, client certificates)" "$KMIP" start "$KMIP_DIR"
NODE_CONFIG_TOP="keys:
  provider: kmip
  kmip:
    endpoint: 127.0.0.1:$(cat "$KMIP_DIR/port")
    caFile: $KMIP_DIR/ca.pem
    certFile: $KMIP_DIR/client.pem
    keyFile: $KMIP_DIR/client.key"
ok "node A up, its agent with keys.provider kmip" node_up a
agent_pid_a=$(_tracked agent-a)

# ---- (a) seal, restart, unseal, with the KEK on the key server
secret="kmip-secret-$RANDOM$RANDOM"
ok "kv: TPMState Ready" vm_create kv "{persistent: true}" "" Ready
launcher_start a virt-launcher-kv-1 kv >/dev/null
ok "kv: swtpm runs in its launcher (first boot, state key made and wrapped by the key server)" \
  swtpm_up_for kv virt-launcher-kv-1
guest_start virt-launcher-kv-1
guest_tpm tpm2_startup -c >/dev/null 2>&1
if printf '%s' "$secret" | guest_tpm clevis encrypt tpm2 '{}' > "$NODE_TOP/kv.jwe" 2>"$NODE_TOP/kv.err" &&
   [ -s "$NODE_TOP/kv.jwe" ]; then pass "kv: clevis sealed a secret through the vTPM"
else fail "kv: clevis sealed a secret through the vTPM" "$(cat "$NODE_TOP/kv.err")"; fi

kek_id=$(header_field kv kekId)
like "$(header_field kv provider) $(header_field kv algorithm) $kek_id" '^kmip [A-Za-z0-9-]+ [^ ]+$' \
  "kv: the key header on the backing store names provider kmip, the algorithm ($(header_field kv algorithm)) and a kekId ($kek_id)"
is "$(tpmstate_field kv .status.nodeState.encrypted)" "true" "kv: TPMState says the running state is encrypted"
# The KEK object the agent made on the server, found by PyKMIP's client by its
# Name (vtpm-agent-kek/<vm namespace>): exactly one, and it is the header's kekId.
located=$(kmip_locate "vtpm-agent-kek/$NS" 2>&1)
like "$located" "^$kek_id AES 256 " "PyKMIP's client: Locate(Name=vtpm-agent-kek/$NS) + Get find the KEK $kek_id (AES-256) on the server"

# The VM restarts: its launcher goes and a new one comes.
guest_stop
launcher_stop virt-launcher-kv-1
_no_swtpm_for() { [ -z "$(swtpm_pids "$1")" ]; }
ok "kv: swtpm stopped with its launcher" wait_until 30 _no_swtpm_for kv
launcher_start a virt-launcher-kv-2 kv >/dev/null
ok "kv: swtpm runs in the new launcher (DEK unwrapped by the key server)" swtpm_up_for kv virt-launcher-kv-2
guest_start virt-launcher-kv-2
guest_tpm tpm2_startup -c >/dev/null 2>&1
unsealed=$(guest_tpm clevis decrypt < "$NODE_TOP/kv.jwe" 2>"$NODE_TOP/kv.err")
is "$unsealed" "$secret" "kv: clevis decrypt after the VM restart returns the sealed secret"

# ---- (b) the key server goes away
"$KMIP" stop "$KMIP_DIR" >/dev/null
if ! "$KMIP" status "$KMIP_DIR"; then pass "key server stopped (it no longer answers TLS)"
else fail "key server stopped (it no longer answers TLS)"; fi
# The running VM is not affected: its swtpm has its key.
if rnd=$(guest_tpm tpm2_getrandom --hex 16 2>&1) && [[ $rnd =~ ^[0-9a-f]{32}$ ]]; then
  pass "kv: with the key server down, the running guest still uses its vTPM (tpm2_getrandom)"
else fail "kv: with the key server down, the running guest still uses its vTPM (tpm2_getrandom)" "$rnd"; fi
unsealed=$(guest_tpm clevis decrypt < "$NODE_TOP/kv.jwe" 2>"$NODE_TOP/kv.err")
is "$unsealed" "$secret" "kv: with the key server down, clevis decrypt in the running guest still works"

# kv restarts, and a new VM kv2 starts, while the server is down.
guest_stop
launcher_stop virt-launcher-kv-2
ok "kv: swtpm stopped with its launcher" wait_until 30 _no_swtpm_for kv
ok "kv2: TPMState Ready (a new VM)" vm_create kv2 "{persistent: true}" "" Ready
t_down=$(date +%s)
launcher_start a virt-launcher-kv-3 kv >/dev/null
launcher_start a virt-launcher-kv2-1 kv2 >/dev/null
for vm in kv kv2; do
  if wait_reason 60 "$vm" KeyProviderUnavailable; then
    pass "$vm: start waits with status.nodeState.reason KeyProviderUnavailable"
  else fail "$vm: start waits with status.nodeState.reason KeyProviderUnavailable" \
    "nodeState: $(tpmstate_field "$vm" .status.nodeState)"; fi
done
like "$(tpmstate_field kv .status.nodeState.phase) $(tpmstate_field kv .status.nodeState.message)" \
  '^Waiting .*kmip' "kv: the waiting status names the kmip provider: $(tpmstate_field kv .status.nodeState.message)"
_warned() { [ "$(events_for "$1" KeyProviderUnavailable | awk '$1 == "Warning"' | wc -l)" -ge 1 ]; }
if wait_until 20 _warned kv && wait_until 20 _warned kv2; then
  pass "kv and kv2: a Warning event KeyProviderUnavailable each"
else fail "kv and kv2: a Warning event KeyProviderUnavailable each" "$(events_for kv; events_for kv2)"; fi
# No swtpm while waiting (neither running nor answering in the launchers).
n_swtpm=$(( $(swtpm_pids kv | grep -c .) + $(swtpm_pids kv2 | grep -c .) ))
if [ "$n_swtpm" -eq 0 ] && ! swtpm_running virt-launcher-kv-3 && ! swtpm_running virt-launcher-kv2-1; then
  pass "kv and kv2: swtpm is not started while the key server is down"
else fail "kv and kv2: swtpm is not started while the key server is down" "$(ps -o pid,args -C swtpm)"; fi

# The server comes back: same database (the KEK survives), same port.
ok "key server restarted (same database and port)" "$KMIP" start "$KMIP_DIR"
t_up=$(date +%s)
for vm in kv kv2; do
  pod=virt-launcher-kv-3; [ "$vm" = kv ] || pod=virt-launcher-kv2-1
  if wait_until 60 swtpm_running "$pod"; then
    pass "$vm: starts by itself once the key server is back ($(( $(date +%s) - t_up )) s after it, $(( $(date +%s) - t_down )) s after the first refusal)"
  else fail "$vm: starts by itself once the key server is back" "nodeState: $(tpmstate_field "$vm" .status.nodeState)" \
    "$(tail -5 "$(node_agent_log a)")"; fi
done
is "$(_tracked agent-a) $(grep -c '^=== start' "$(node_agent_log a)")" "$agent_pid_a 1" \
  "no agent restart was needed (same agent process, started once)"
is "$(tpmstate_field kv .status.nodeState.reason) $(header_field kv2 provider) $(header_field kv2 kekId)" \
  "VTPMStarted kmip $kek_id" "kv Running again; kv2's key is wrapped by the same namespace KEK $kek_id"
guest_start virt-launcher-kv-3
guest_tpm tpm2_startup -c >/dev/null 2>&1
unsealed=$(guest_tpm clevis decrypt < "$NODE_TOP/kv.jwe" 2>"$NODE_TOP/kv.err")
is "$unsealed" "$secret" "kv: clevis decrypt after the outage returns the sealed secret"
guest_stop

launcher_stop virt-launcher-kv-3
launcher_stop virt-launcher-kv2-1
node_no_leftovers
agent_sanitizer_check
