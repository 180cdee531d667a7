#!/usr/bin/env bash
# Issue 4, acceptance 2 (restart-required) and 4 (one table): flipping TPM
# persistence while a virt-launcher pod for the VM exists sets the
# RestartRequired condition and records an event; the next launcher clears
# it. Then `kubectl get tpmstate -A` shows the picture in one table.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-46
. "$(dirname "$0")/lib-agent.sh"

plan 23

cls=e2e46-$NS
ok_here "StorageClass $cls" testbed_class "$cls"
provisioner_start
ok_here "agent starts" agent_start agent "$(agent_config agent "$cls")"
rr() { k get tpmstate "$1" -o jsonpath='{.status.conditions[?(@.type=="RestartRequired")].status}/{.status.conditions[?(@.type=="RestartRequired")].reason}'; }
rr_is() { [ "$(rr "$1")" = "$2" ]; }
field_is() { [ "$(k get tpmstate "$1" -o jsonpath="$2")" = "$3" ]; }
sa_ready() { k get serviceaccount default; }

k apply -f - >/dev/null <<<"$(vm_yaml vm-r "{persistent: true}"; vm_yaml vm-e "{persistent: false}"; vm_yaml vm-x "{persistent: true}" '{vtpm-agent.io/tpm-version: "3.0"}')"
if wait_until 60 field_is vm-r '{.status.phase}' Ready; then pass "vm-r: Ready"; else fail "vm-r: Ready"; fi
wait_until 30 sa_ready
pod1=$(launcher_pod vm-r) && pass "launcher pod $pod1 for vm-r (fake node)" || fail "launcher pod for vm-r"
if wait_until 30 field_is vm-r '{.status.node}' e2e-fake-node; then pass "vm-r: TPMState names the launcher's node"; else fail "vm-r: TPMState names the launcher's node"; fi
is "$(rr vm-r)" "False/NoRestartNeeded" "vm-r: RestartRequired False while nothing changed"

ok "vm-r: persistence turned off while the launcher runs" k patch vm vm-r --type merge -p '{"spec":{"template":{"spec":{"domain":{"devices":{"tpm":{"persistent":false}}}}}}}'
if wait_until 30 rr_is vm-r True/PersistenceChanged; then pass "vm-r: RestartRequired True/PersistenceChanged"; else fail "vm-r: RestartRequired True" "got $(rr vm-r)"; fi
has_event() { [ "$(event_count "$1" "$2")" -ge 1 ]; }
wait_until 15 has_event vm-r RestartRequired
is "$(events_for vm-r RestartRequired)" "Warning RestartRequired 1" "vm-r: one RestartRequired Warning event"
like "$(kubectl -n "$NS" get events.events.k8s.io -o json | jq -r '.items[] | select(.reason == "RestartRequired") | .note')" \
  "persistence was turned off while the VM runs" "the event says what changed and when it takes effect"
is "$(k get tpmstate vm-r -o jsonpath='{.status.phase}')" "Retained" "vm-r: state retained while non-persistent"

ok "the old launcher goes" k delete pod "$pod1" --grace-period=0 --force
pod2=$(launcher_pod vm-r) && pass "a new launcher pod $pod2" || fail "a new launcher pod"
if wait_until 30 rr_is vm-r False/NoRestartNeeded; then pass "vm-r: the new launcher clears RestartRequired"; else fail "vm-r: the new launcher clears RestartRequired" "got $(rr vm-r)"; fi

ok "vm-r: persistence back on under the new launcher" k patch vm vm-r --type merge -p '{"spec":{"template":{"spec":{"domain":{"devices":{"tpm":{"persistent":true}}}}}}}'
if wait_until 30 rr_is vm-r True/PersistenceChanged; then pass "vm-r: RestartRequired True again"; else fail "vm-r: RestartRequired True again" "got $(rr vm-r)"; fi
count_rr() { [ "$(event_count vm-r RestartRequired)" -ge 2 ]; }
if wait_until 15 count_rr; then pass "vm-r: a second RestartRequired event"; else fail "vm-r: a second RestartRequired event" "$(events_for vm-r)"; fi

# --- acceptance 4: the whole picture in one table ---
ready_all() { field_is vm-r '{.status.phase}' Ready && field_is vm-e '{.status.phase}' Ephemeral && field_is vm-x '{.status.phase}' Error; }
wait_until 30 ready_all
table=$(kubectl get tpmstate -A 2>&1)
diag "$table"
like "$(head -1 <<<"$table")" '^NAMESPACE +NAME +VM +PHASE +TPM +PVC +STORAGECLASS +ENCRYPTED +NODE +AGE$' \
  "kubectl get tpmstate -A: columns NAMESPACE NAME VM PHASE TPM PVC STORAGECLASS ENCRYPTED NODE AGE"
# cells ROW: the row's cells by the header's column positions (empty cells stay), "|"-joined.
cells() {
  awk -v row="$1" -v ns="$NS" 'NR == 1 { h = $0; n = 0; p = 1
      while (match(substr(h, p), /[A-Z]+/)) { n++; start[n] = p + RSTART - 1; p = start[n] + RLENGTH }
      next }
    $1 == ns && $2 == row { out = ""
      for (i = 1; i <= n; i++) { c = (i < n) ? substr($0, start[i], start[i+1] - start[i]) : substr($0, start[i])
        gsub(/^ +| +$/, "", c); out = out (i > 1 ? "|" : "") c }
      print out }' <<<"$table"
}
like "$(cells vm-r)" "^$NS\|vm-r\|vm-r\|Ready\|NotReported\|persistent-state-for-vm-r\|$cls\|false\|e2e-fake-node\|[0-9]+[smh]$" \
  "row vm-r: VM, Ready, no node agent's report on its launcher yet, its PVC, class, not (yet) encrypted, the launcher's node, age"
like "$(cells vm-e)" "^$NS\|vm-e\|vm-e\|Ephemeral\|(VMNotRunning|NotReported)\|\|\|false\|\|[0-9]+[smh]$" \
  "row vm-e: Ephemeral, no PVC, no class, no node"
like "$(cells vm-x)" "^$NS\|vm-x\|vm-x\|Error\|(VMNotRunning|NotReported)\|\|\|false\|\|[0-9]+[smh]$" \
  "row vm-x: Error, no PVC (the reason is in .status.message and events)"

ok_here "agent stops cleanly" agent_stop agent
agent_sanitizer_check
