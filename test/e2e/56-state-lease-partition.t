#!/usr/bin/env bash
# Issue "Tenant-proof", hole 7: two writers after a partition. A VM's swtpm
# runs on node A (node-1) and its guest has sealed a secret; node A is cut
# off from the API server (its traffic to the `kubernetes` Service is dropped
# inside its network namespace: the kubelet and the agent, which runs there
# as the DaemonSet's pod would); the launcher pod is force-deleted, as an
# operator does with a pod on an unreachable node, and the VM's new launcher
# starts on node B (node-2).
#
# Wanted: node A's agent, unable to renew the VM's state Lease, stops its
# swtpm before the Lease can expire; node B waits for the expiry, then
# starts; never two swtpm on the state at any instant (both nodes' swtpm
# processes are polled throughout); the secret still unseals on node B; once
# the partition heals, node A's agent tears down without a word about lost
# state.
#
# The test bed's nodes share one kernel, so swtpm's own lock file (a POSIX
# lock on <state>/.lock) would be seen by both nodes; hosts sharing an RWX
# volume do not see each other's locks (README: swtpm has no storage locking
# across hosts). The test unlinks the lock file node A's swtpm holds, so node
# B's swtpm locks a fresh one, as it would on its own host.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-lease-partition
NODE_NETNS_ROLES=a
. "$(dirname "$0")/lib-node.sh"
plan 25

# The lease settings (an agent from before them has no such key).
LEASE_YAML=
if grep -aq stateLeaseSeconds "$AGENT_BIN"; then
  LEASE_YAML="stateLeaseSeconds: 30"
else
  diag "this agent has no node.stateLeaseSeconds: its state Lease has no duration"
fi

# ---- the partition: node A's traffic to the API server is dropped ----
PART_TAG="vtpm-e2e-partition:$NS"
_part_rules() { # -I / -D
  local op=$1 chain
  for chain in OUTPUT INPUT; do
    nl_in 1 iptables "$op" "$chain" -p tcp -m conntrack --ctorigdst "$TB_SERVICE_IP" --ctorigdstport 443 \
      -m comment --comment "$PART_TAG" -j DROP
  done
}
partition() { _part_rules -I; }
heal() {
  # every copy, however many were inserted
  while nl_in 1 iptables -S 2>/dev/null | grep -qF "$PART_TAG"; do _part_rules -D 2>/dev/null || break; done
  return 0
}
at_exit heal
_api_reachable_from_a() { nl_in 1 curl -sk --max-time 3 -o /dev/null "https://$TB_SERVICE_IP/healthz"; }

node_testbed_up
ok "node A up (node-1; its agent in the node's network namespace)" node_up a "$LEASE_YAML"
ok "node B up (node-2)" node_up b "$LEASE_YAML"
ok "node A's agent reaches the API server through the node's network" _api_reachable_from_a

ok "VM pv created" vm_create pv "{persistent: true}" "" Ready
uid_a=$(launcher_start a virt-launcher-pv-a pv)
ok "swtpm runs for the VM on node A" wait_until 60 swtpm_running virt-launcher-pv-a
guest_start virt-launcher-pv-a
guest_tpm tpm2_startup -c >/dev/null 2>&1
secret="partition-secret-$RANDOM"
if printf '%s' "$secret" | guest_tpm clevis encrypt tpm2 '{}' > "$NODE_TOP/pv.jwe" 2>"$NODE_TOP/pv.err" &&
   [ -s "$NODE_TOP/pv.jwe" ]; then pass "the guest sealed a secret through its vTPM on node A (clevis)"
else fail "the guest sealed a secret through its vTPM on node A (clevis)" "$(cat "$NODE_TOP/pv.err")"; fi
pid_a=$(swtpm_pids pv)
store=$(vm_store_dir pv)
store_id=$(stat -c %d:%i "$store")
diag "node A's swtpm: pid $pid_a; state $store ($(ls -A "$store" | tr '\n' ' '))"

# ---- the processes working on the VM's state, whichever node ----
# swtpm (and swtpm_setup) whose --tpmstate directory, seen through its own
# root, is the VM's state directory: the probe's private swtpm included.
_state_dir_arg() {
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | awk '
    prev == "--tpmstate" || prev == "--tpm-state" { v = $0; sub(/^dir=/, "", v); sub(/,.*/, "", v); print v; exit }
    { prev = $0 }'
}
state_procs() {
  local p d
  for p in $(pgrep -x 'swtpm|swtpm_setup' 2>/dev/null); do
    d=$(_state_dir_arg "$p")
    [ -n "$d" ] && [ "$(stat -L -c %d:%i "/proc/$p/root$d" 2>/dev/null)" = "$store_id" ] && echo "$p"
  done
  return 0
}
poll_log=$NODE_TOP/state-procs.log
( while [ ! -e "$NODE_TOP/poll-stop" ]; do
    echo "$(date +%s.%N | cut -c1-14) $(state_procs | tr '\n' ' ')"
    sleep 0.1
  done ) > "$poll_log" 2>/dev/null &
poller=$!
_track poller "$poller"
is "$(state_procs)" "$pid_a" "the poller sees node A's swtpm (and nothing else) on the VM's state"

# ---- partition, force-delete, new launcher on B ----
t0=$(date +%s.%N | cut -c1-14)
partition
if _api_reachable_from_a; then fail "node A is cut off from the API server"; else pass "node A is cut off from the API server"; fi
k delete pod virt-launcher-pv-a --force --grace-period=0 >/dev/null 2>&1
# What a second host would not see: node A's lock (see the top).
rm -f "$store/.lock"
t_del=$(date +%s.%N | cut -c1-14)
launcher_start b virt-launcher-pv-b pv >/dev/null
ok "node B's swtpm runs for the VM" wait_until 150 swtpm_running virt-launcher-pv-b
t_b=$(date +%s.%N | cut -c1-14)
sleep 2
touch "$NODE_TOP/poll-stop"
_stop poller TERM 5

# The timeline: first and last sample of each process, most at once.
timeline=$(awk -v t0="$t0" '{ for (i = 2; i <= NF; i++) { if (!($i in first)) first[$i] = $1; last[$i] = $1 }
    if (NF - 1 > max) { max = NF - 1; at = $1 } }
  END { for (p in first) printf "pid %s on the state from +%.1f s to +%.1f s\n", p, first[p] - t0, last[p] - t0
        printf "most at once: %d (at +%.1f s)\n", max, (max ? at - t0 : 0) }' "$poll_log")
diag "partition at +0 s; launcher deleted at +$(echo "$t_del - $t0" | bc) s; node B's swtpm answering at +$(echo "$t_b - $t0" | bc) s" "$timeline"
most=$(awk '{ if (NF - 1 > max) max = NF - 1 } END { print max + 0 }' "$poll_log")
if [ "$most" -le 1 ]; then pass "never two swtpm on the VM's state at any instant ($(wc -l < "$poll_log") samples)"
else fail "never two swtpm on the VM's state at any instant ($(wc -l < "$poll_log") samples)" \
  "$(awk 'NF > 2' "$poll_log" | head -5)"; fi
a_last=$(awk -v p="$pid_a" '{ for (i = 2; i <= NF; i++) if ($i == p) l = $1 } END { print l }' "$poll_log")
b_first=$(awk -v p="$pid_a" '{ for (i = 2; i <= NF; i++) if ($i != p) { print $1; exit } }' "$poll_log")
if [ -n "$a_last" ] && [ -n "$b_first" ] && [ "$(echo "$a_last < $b_first" | bc)" = 1 ]; then
  pass "node A's swtpm was gone before node B started one (A last seen +$(echo "$a_last - $t0" | bc) s, B first +$(echo "$b_first - $t0" | bc) s)"
else
  fail "node A's swtpm was gone before node B started one" "A last seen ${a_last:-never}, B first ${b_first:-never} (t0 $t0)"
fi
if [ -n "$LEASE_YAML" ] && [ -n "$a_last" ]; then
  # Renewed every 4 s, stopped 20 s after the last renewal: well within 30 s.
  if [ "$(echo "$a_last - $t0 < 30" | bc)" = 1 ]; then pass "node A stopped its swtpm within the lease duration (30 s) of the partition"
  else fail "node A stopped its swtpm within the lease duration (30 s) of the partition" "last seen +$(echo "$a_last - $t0" | bc) s"; fi
else
  fail "node A stopped its swtpm within the lease duration of the partition" "the agent has no lease duration"
fi

# What the guest on node A sees: its TPM is gone (QEMU's backend lost swtpm).
if guest_tpm tpm2_getrandom --hex 8 >/dev/null 2>&1; then
  fail "the guest on node A has lost its TPM (tpm2_getrandom fails)" "its swtpm still answers"
else pass "the guest on node A has lost its TPM (tpm2_getrandom fails)"; fi
guest_stop

# ---- the secret on node B ----
guest_start virt-launcher-pv-b
guest_tpm tpm2_startup -c >/dev/null 2>&1
unsealed=$(guest_tpm clevis decrypt < "$NODE_TOP/pv.jwe" 2>"$NODE_TOP/pv.err")
is "$unsealed" "$secret" "clevis decrypt on node B returns the secret sealed on node A"
holder=$(k get lease "vtpm-state-$(vm_uid pv)" -o jsonpath='{.spec.holderIdentity} {.spec.leaseDurationSeconds}')
like "$holder" "^$(node_name b)/$NS/virt-launcher-pv-b/[0-9a-f-]+ 30\$" \
  "the VM's state Lease names node B's launcher, with a duration of 30 s"

# ---- heal: node A's agent tears down, no word of lost state ----
heal_line=$(wc -l < "$(node_agent_log a)")
heal
ok "node A reaches the API server again" wait_until 30 _api_reachable_from_a
_a_record_gone() { [ ! -e "$(node_dir a)/run/launchers/$uid_a.json" ]; }
ok "node A's agent tore the deleted launcher down (its record is gone)" wait_until 120 _a_record_gone
_a_attach_gone() { [ -z "$(k get pods -l "vtpm-agent.io/attachment-for=$uid_a" -o name 2>/dev/null)" ]; }
ok "node A's attachment pod is gone" wait_until 60 _a_attach_gone
vm_uid_pv=$(vm_uid pv)
after=$(tail -n +"$((heal_line + 1))" "$(node_agent_log a)" | grep -E '"level":"(warn|error)"' |
  grep -E "$vm_uid_pv|\"vm\":\"pv\"" || true)
is "$after" "" "node A's agent logs no warning about the VM after the heal"
_fenced_event() { events_for pv TPMFenced | grep -q '^Warning '; }
ok "a Warning event TPMFenced on the VM says its TPM on node A was stopped" wait_until 90 _fenced_event
diag "events: $(events_for pv | tr '\n' ';')"
swtpm_count_is pv 1 "one swtpm for the VM: node B's"

guest_stop
launcher_stop virt-launcher-pv-b
node_no_leftovers
agent_sanitizer_check
