#!/usr/bin/env bash
# Issue 19: the per-VM state Leases (vtpm-state-<vm uid>, agent/state_lock.h)
# are deleted when their VM goes, by the state controller's leader: a Lease
# whose VM uid is in no cached VM and whose resourceVersion it has seen
# unchanged for 2 x node.stateLeaseSeconds on its own clock, with that
# resourceVersion as a precondition. A Lease of a live VM, one still being
# renewed, and one that is not a state Lease are never removed.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-67
. "$(dirname "$0")/lib-agent.sh"

plan 14

LEASE_S=15 # node.stateLeaseSeconds: the smallest the configuration allows
port=$(free_port) || bail_out "no free TCP port"

cfg="$AGENT_DIR/agent.yaml"
cat > "$cfg" <<EOF
namespace: $NS
state:
  leaseName: $AGENT_LEASE
node: {enabled: false, stateLeaseSeconds: $LEASE_S}
http: {listen: "127.0.0.1:$port"}
EOF

lease_yaml() { # NAME
  cat <<EOF
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: $1, namespace: $NS}
spec: {holderIdentity: "", leaseDurationSeconds: $LEASE_S}
EOF
}
lease_there() { k get lease "$1" -o name >/dev/null 2>&1; }
lease_gone() { local out; out=$(k get lease "$1" 2>&1); [[ $out == *"(NotFound)"* ]]; }

k apply -f - >/dev/null <<<"$(vm_yaml vm-live; vm_yaml vm-gone)"
uid_live=$(k get vm vm-live -o jsonpath='{.metadata.uid}')
uid_gone=$(k get vm vm-gone -o jsonpath='{.metadata.uid}')
uid_renewed=$(cat /proc/sys/kernel/random/uuid) # a VM the cache does not know, whose Lease is held and renewed
k apply -f - >/dev/null <<<"$(lease_yaml "vtpm-state-$uid_live"; lease_yaml "vtpm-state-$uid_gone"
  lease_yaml "vtpm-state-$uid_renewed"; lease_yaml vtpm-state-not-a-vm-uid)"
is "$(k get lease -o name | grep -c vtpm-state-)" 4 "four state Leases: live VM, VM to delete, renewed, not a uid"

# A holder renews its Lease every retry period: here every 5 s (< 2 x 15 s).
( while sleep 5; do
    kubectl -n "$NS" annotate lease "vtpm-state-$uid_renewed" --overwrite "e2e/renewed=$(date +%s%N)" >/dev/null 2>&1
  done ) &
renewer=$!
at_exit "kill $renewer 2>/dev/null"

ok_here "agent starts" agent_start agent "$cfg"
is_leader() { [ "$(agent_leader)" = agent ]; }
wait_until 30 is_leader || diag "agent did not become leader in 30 s"

# While its VM exists, a Lease stays: longer than 2 x the lease duration.
sleep $((2 * LEASE_S + 5))
ok "vm-gone's Lease stays while the VM exists ($((2 * LEASE_S + 5)) s)" lease_there "vtpm-state-$uid_gone"

ok "delete VM vm-gone" k delete vm vm-gone --wait=false
t0=$(date +%s)
if wait_until $((3 * LEASE_S + 20)) lease_gone "vtpm-state-$uid_gone"; then
  took=$(( $(date +%s) - t0 ))
  pass "vm-gone's Lease removed ${took} s after the VM (bound $((3 * LEASE_S + 20)) s)"
  # Unchanged for 2 x the lease duration on the agent's clock, from when it saw the VM gone.
  if [ "$took" -ge $((2 * LEASE_S - 1)) ]; then
    pass "not before 2 x the lease duration ($((2 * LEASE_S)) s)"
  else
    fail "not before 2 x the lease duration ($((2 * LEASE_S)) s)" "removed after $took s"
  fi
else
  fail "vm-gone's Lease removed within $((3 * LEASE_S + 20)) s" "$(k get lease "vtpm-state-$uid_gone" -o yaml 2>&1 | head -20)"
  fail "not before 2 x the lease duration" "not removed at all"
fi

# The others have now been watched for over 3 x the lease duration.
ok "the live VM's Lease is never removed" lease_there "vtpm-state-$uid_live"
ok "a renewed Lease without a known VM is never removed" lease_there "vtpm-state-$uid_renewed"
ok "a Lease whose name is not a VM uid is never removed" lease_there vtpm-state-not-a-vm-uid
like "$(grep 'removed the state Lease of a deleted VM' "$(agent_log agent)")" "vtpm-state-$uid_gone" \
  "the agent's log names the Lease it removed"

# The API server's word: the agent deleted exactly that Lease.
agent_lease_deletes() {
  [ -r "$AUDIT_LOG" ] || { echo "no audit log at $AUDIT_LOG"; return 1; }
  grep -F "\"namespace\":\"$NS\"" "$AUDIT_LOG" | jq -r --arg ns "$NS" '
    select((.userAgent // "") | startswith("vtpm-agent/"))
    | select(.objectRef.resource == "leases" and .objectRef.namespace == $ns and .verb == "delete")
    | select((.stage // "ResponseComplete") == "ResponseComplete")
    | "\(.objectRef.name) \(.responseStatus.code)"' | sort -u
}
is "$(agent_lease_deletes)" "vtpm-state-$uid_gone 200" "the agent deleted that Lease only (audit log)"
is "$(curl -sf -m 5 "http://127.0.0.1:$port/metrics" | awk '$1 == "vtpm_agent_state_leases_deleted_total" {print $2}')" 1 \
  "its /metrics count one state Lease removed (vtpm_agent_state_leases_deleted_total)"

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
