#!/usr/bin/env bash
# Issue 4, acceptance 2 (non-persistent warning): a VM whose TPM is not
# persistent gets exactly one Warning per spec generation: none again after
# a status-only or metadata change or an agent restart, a new one after a
# spec change that bumps metadata.generation.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-45
. "$(dirname "$0")/lib-agent.sh"

plan 17

cls=e2e45-$NS
ok_here "StorageClass $cls" testbed_class "$cls"
provisioner_start
ok_here "agent starts" agent_start agent-a "$(agent_config agent "$cls")"
count() { event_count vm-n NonPersistentTPM; }
count_is() { [ "$(count)" -eq "$1" ]; }
gen() { k get vm vm-n -o jsonpath='{.metadata.generation}'; }

k apply -f - >/dev/null <<<"$(vm_yaml vm-n "{}")"
if wait_until 30 count_is 1; then pass "one NonPersistentTPM Warning for generation $(gen)"; else fail "one NonPersistentTPM Warning" "got $(count)"; fi
like "$(kubectl -n "$NS" get events.events.k8s.io -o json | jq -r '.items[] | select(.reason == "NonPersistentTPM") | "\(.type): \(.note)"')" \
  "^Warning: .*BitLocker keys.*lost when the VM stops" "the Warning explains that sealed secrets are lost"
is "$(k get tpmstate vm-n -o jsonpath='{.status.phase}/{.status.warnedGeneration}')" "Ephemeral/$(gen)" \
  "TPMState: Ephemeral, warnedGeneration = the VM's generation"

g0=$(gen)
ok "status-only change (status subresource)" k patch vm vm-n --subresource=status --type merge -p '{"status":{"printableStatus":"Stopped"}}'
ok "metadata-only change (label)" k label vm vm-n poke=1
is "$(gen)" "$g0" "generation unchanged ($g0)"
sleep 5 # proving that nothing happens
is "$(count)" 1 "no new Warning after status and metadata changes"

ok_here "agent stops" agent_stop agent-a
ok_here "another agent (fresh event recorder) starts" agent_start agent-b "$AGENT_DIR/agent.yaml"
# A canary proves the new agent leads and works through its queue.
k apply -f - >/dev/null <<<"$(vm_yaml canary "{persistent: true}")"
canary_ready() { [ "$(k get tpmstate canary -o jsonpath='{.status.phase}')" = Ready ]; }
wait_until 60 canary_ready || diag "canary not Ready"
sleep 3 # proving that nothing happens
is "$(count)" 1 "no new Warning after an agent restart"

ok "spec change (runStrategy) bumps generation" k patch vm vm-n --type merge -p '{"spec":{"runStrategy":"Manual"}}'
if wait_until 30 count_is 2; then pass "a new Warning for generation $(gen)"; else fail "a new Warning for the new generation" "got $(count)"; fi
sleep 3 # proving that nothing happens
is "$(count)" 2 "and only one"

ok_here "agent stops cleanly" agent_stop agent-b
agent_sanitizer_check
