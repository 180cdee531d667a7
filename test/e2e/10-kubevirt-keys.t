#!/usr/bin/env bash
# Issue 21, acceptance 5 (keys): the key faults and rotation on real
# KubeVirt VMIs, the agent installed as shipped (deploy/overlays/testbed: the
# DaemonSet and its key broker, KEKs in Secrets) with its KubeVirt Plugin.
# The TPM guest seals a secret on node-1 and stops; then, in one start:
#   - key server down (the broker scaled to 0): the VM does not start; the
#     TPMState says KeyProviderUnavailable and virt-handler's SyncFailed
#     event carries the agent's reason (the PreVMStart hook's answer);
#   - key server back with a wrong KEK in the namespace's Secret: still not
#     started, KeyUnwrapFailed, not one byte of the state volume changed;
#   - the right KEK back: the same start goes through on its own (virt-handler
#     retries, the agent retries) and the guest unseals its secret.
# Then, while the VM runs, a KEK rotation (done at once, the VM keeps
# running) and a DEK rotation requested for the next start; stopped and
# started on node-2, the state is under the new DEK and KEK, still
# ciphertext, and the guest unseals the secret again.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_agent_on_kubevirt
plan 27
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1) n2=$(nl_name 2)
rn_agent_on_kubevirt_up 10k
broker() { kubectl -n "$RN_NS" scale deploy vtpm-controller --replicas="$1" >/dev/null; }
at_exit "broker 1"

vm=kguest
tpmstate() { k get tpmstate "$vm" -o jsonpath="{$1}" 2>/dev/null; }
reason_is() { [ "$(tpmstate .status.nodeState.reason)" = "$1" ]; }
sync_failed_says() { k get events --field-selector "involvedObject.name=$vm,reason=SyncFailed" \
  -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | grep -qF "$1"; }
why_not() {
  diag "VMI: $(k get vmi "$vm" -o jsonpath='{.status.phase} {.status.conditions[?(@.type=="Synchronized")].message}' 2>&1 | head -c 600)"
  diag "TPMState nodeState: $(tpmstate .status.nodeState)"
  diag "events: $(k get events --field-selector involvedObject.name="$vm" -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' | tail -4 | cut -c1-300)"
}
# started_on NODE DESC: the VMI Running on NODE (why not, on failure).
started_on() {
  if wait_until 300 rn_vmi_on "$NS" "$vm" "$1"; then pass "$2"; else fail "$2"; why_not; fi
}
unsealed() { rn_vm_console "$NS" "$vm" | sed -n 's/^TPM-GUEST: unsealed //p'; }
sums() { (cd "$1" && find . -type f ! -name .lock -print0 | sort -z | xargs -0 sha256sum); }

# ---- boot 1 on node-1: seal ----
secret=k3y-$RANDOM$RANDOM
rn_guest_vm "$NS" "$vm" "$n1" "console=ttyS0 quiet tpmguest.seal=$secret tpmguest.stay=1"
virtctl start "$vm" >/dev/null
started_on "$n1" "boot 1: the VM runs on $n1"
ok "boot 1: the guest sealed a secret with clevis" wait_until 120 rn_vm_said "$NS" "$vm" 'sealed '
jwe=$(rn_vm_console "$NS" "$vm" | sed -n 's/^TPM-GUEST: sealed //p' | head -1)
vol=$T/store/$(k get pvc "$(tpmstate .status.pvcName)" -o jsonpath='{.spec.volumeName}')
kek_id=$(tpmstate .status.keys.kekId)
like "$kek_id" "^$RN_NS/vtpm-kek-$NS#[0-9]+\$" "the state key is wrapped by the namespace's KEK in a Secret ($kek_id)"
virtctl stop "$vm" >/dev/null
wait_until 180 rn_vmi_gone "$NS" "$vm"

# ---- key server down ----
broker 0
_broker_gone() { [ -z "$(kubectl -n "$RN_NS" get pods -l app.kubernetes.io/name=vtpm-controller -o name)" ]; }
ok "the key server is down (vtpm-controller scaled to 0, its pod gone)" wait_until 60 _broker_gone
sums "$vol" > "$T/sums.before"
rn_guest_vm "$NS" "$vm" "$n1" "console=ttyS0 quiet tpmguest.unseal=$jwe tpmguest.stay=1"
virtctl start "$vm" >/dev/null
ok "key server down: TPMState says KeyProviderUnavailable" wait_until 120 reason_is KeyProviderUnavailable
if wait_until 120 sync_failed_says "KeyProviderUnavailable"; then
  pass "key server down: virt-handler did not start the domain, its SyncFailed event gives the agent's reason"
else fail "key server down: virt-handler did not start the domain, its SyncFailed event gives the agent's reason"; why_not; fi
diag "$(k get events --field-selector involvedObject.name=$vm,reason=SyncFailed -o jsonpath='{.items[-1:].message}' | cut -c1-300)"

# ---- key server back, with a wrong KEK ----
kek_secret=vtpm-kek-$NS kek_field=kek-${kek_id##*#}
kubectl -n "$RN_NS" get secret "$kek_secret" -o json > "$T/kek-secret.json"
set_kek() { # B64 value of the VM's KEK in the Secret (the value goes through stdin)
  jq --arg f "$kek_field" --arg v "$1" '.data[$f] = $v | del(.metadata.resourceVersion)' "$T/kek-secret.json" |
    kubectl replace -f - >/dev/null
}
ok "the KEK in Secret $RN_NS/$kek_secret ($kek_field) replaced by other bytes" set_kek "$(openssl rand 32 | base64 -w0)"
broker 1
ok "wrong KEK: TPMState says KeyUnwrapFailed" wait_until 180 reason_is KeyUnwrapFailed
# The node agent's /metrics (127.0.0.1:9464 in the node's network namespace) counts the refusal by reason (KeyProviderUnavailable is a wait, not a refusal).
_refusal_counted() { nl_in "${n1#node-}" curl -sf -m 2 http://127.0.0.1:9464/metrics |
                       grep -q '^vtpm_agent_swtpm_refusals_total{reason="KeyUnwrapFailed"} [1-9]'; }
ok "$n1's agent counts the refusal: vtpm_agent_swtpm_refusals_total{reason=\"KeyUnwrapFailed\"}" \
  wait_until 30 _refusal_counted
if wait_until 120 sync_failed_says "KeyUnwrapFailed"; then pass "wrong KEK: the start is refused, SyncFailed says KeyUnwrapFailed"
else fail "wrong KEK: the start is refused, SyncFailed says KeyUnwrapFailed"; why_not; fi
sleep 5
sums "$vol" > "$T/sums.after"
if ! rn_vm_said "$NS" "$vm" 'tpm2 present' && cmp -s "$T/sums.before" "$T/sums.after"; then
  pass "no guest ran, and every file on the state volume is byte-identical ($(wc -l < "$T/sums.after") files)"
else fail "no guest ran, and every file on the state volume is byte-identical" "$(diff "$T/sums.before" "$T/sums.after")" \
  "$(rn_vm_console "$NS" "$vm" | head -3)"; fi

# ---- the right KEK back: the same start goes through ----
ok "the right KEK restored" set_kek "$(jq -r --arg f "$kek_field" '.data[$f]' "$T/kek-secret.json")"
started_on "$n1" "the right KEK back: the same start goes through, nobody restarted anything (VMI Running on $n1)"
ok "the guest printed an unseal result" wait_until 120 rn_vm_said "$NS" "$vm" 'unseal'
is "$(unsealed)" "$secret" "the guest unseals the secret it sealed before the faults"

# ---- rotation ----
# Requested by the VM's owner: a user with the namespace's `edit` role, which
# includes rotation requests (manifests/user-roles.yaml; suite 68).
owner=vm-owner-$NS
k create rolebinding vm-owner --clusterrole=edit --user="$owner" >/dev/null
_owner_can() { [ "$(kubectl --as="$owner" -n "$NS" auth can-i patch tpmstates)" = yes ]; }
wait_until 60 _owner_can
ok "the VM's owner (edit in the namespace) requests a KEK and a DEK rotation" \
  kubectl --as="$owner" -n "$NS" annotate tpmstate "$vm" vtpm-agent.io/rotate-kek=r1 vtpm-agent.io/rotate-dek=r1
_kek_rotated() { [ "$(tpmstate .status.keys.kekRotation.completed)" = r1 ]; }
ok "KEK rotation on the running VM: status.keys.kekRotation.completed r1" wait_until 120 _kek_rotated
new_kek=$(tpmstate .status.keys.kekId)
is "$new_kek" "$RN_NS/vtpm-kek-$NS#r1" "the state key is now wrapped by the new KEK (kekId $new_kek)"
ok "the VM kept running through the KEK rotation" rn_vmi_on "$NS" "$vm" "$n1"
is "$(tpmstate .status.keys.dekRotation.requested) $(tpmstate .status.keys.dekRotation.pending)" "r1 true" \
  "the DEK rotation waits for the next start (dekRotation requested r1, pending)"
gen=$(tpmstate .status.keys.dekGeneration)
virtctl stop "$vm" >/dev/null
wait_until 180 rn_vmi_gone "$NS" "$vm"
sum_before=$(sha256sum < "$vol/tpm2-00.permall")
rn_guest_vm "$NS" "$vm" "$n2" "console=ttyS0 quiet tpmguest.unseal=$jwe tpmguest.stay=1"
virtctl start "$vm" >/dev/null
started_on "$n2" "after the rotations, started on $n2"
ok "the guest printed an unseal result" wait_until 120 rn_vm_said "$NS" "$vm" 'unseal'
is "$(unsealed)" "$secret" "on $n2 the guest unseals the same secret: new KEK, new DEK, same TPM"
is "$(tpmstate .status.keys.dekGeneration) $(tpmstate .status.keys.dekRotation.completed)" "$((gen + 1)) r1" \
  "the DEK was rotated at that start (dekGeneration $gen -> $((gen + 1)), dekRotation.completed r1)"
rn_state_loads "$vol/tpm2-00.permall"; rc=$?
if [ $rc = 1 ] && [ "$(sha256sum < "$vol/tpm2-00.permall")" != "$sum_before" ]; then
  pass "the state was re-encrypted, and is still ciphertext: a bare swtpm without the key cannot load a copy"
else fail "the state was re-encrypted, and is still ciphertext" "loads: rc $rc; $RN_STATE_LOG"; fi
virtctl stop "$vm" >/dev/null
wait_until 180 rn_vmi_gone "$NS" "$vm"
