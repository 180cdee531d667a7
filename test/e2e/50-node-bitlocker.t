#!/usr/bin/env bash
# Issue 5, acceptance 1 (the BitLocker story, told with clevis): a VM with a
# persistent TPM seals a secret through its vTPM on node A; the VM stops; it
# starts again on node B and the secret unseals. The same story with a
# non-persistent TPM fails to unseal: the caveat the product exists to fix.
# Also: the state files are on the shared backing store (0600, owned by the
# VM's own swtpm uid), `kubectl get tpmstate` shows the node, and (acceptance 5)
# nothing outlives its launcher.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-node-bitlocker
. "$(dirname "$0")/lib-node.sh"
plan 21

node_testbed_up
ok "node A up (node-1: kubelet, agent)" node_up a
ok "node B up (node-2: kubelet, agent)" node_up b

# story VM TPM: seal on A, stop, start on B, unseal; prints nothing, sets
# $sealed_ok, $unsealed (the decrypted text or empty) and $unseal_rc.
story() {
  local vm=$1 tpm=$2 want_phase=$3 secret
  secret="secret-$vm-$RANDOM"
  ok "$vm: TPMState $want_phase" vm_create "$vm" "$tpm" "" "$want_phase"
  launcher_start a "virt-launcher-$vm-a" "$vm" >/dev/null
  if wait_until 60 swtpm_running "virt-launcher-$vm-a"; then pass "$vm: swtpm runs in the launcher on node A"
  else fail "$vm: swtpm runs in the launcher on node A" "$(tail -5 "$(node_agent_log a)")" \
    "nodeState: $(tpmstate_field "$vm" .status.nodeState)"; fi
  guest_start "virt-launcher-$vm-a"
  guest_tpm tpm2_startup -c >/dev/null 2>&1
  if printf '%s' "$secret" | guest_tpm clevis encrypt tpm2 '{}' > "$NODE_TOP/$vm.jwe" 2>"$NODE_TOP/$vm.err" &&
     [ -s "$NODE_TOP/$vm.jwe" ]; then pass "$vm: clevis sealed a secret through the vTPM on node A"
  else fail "$vm: clevis sealed a secret through the vTPM on node A" "$(cat "$NODE_TOP/$vm.err")"; fi

  if [ "$vm" = win11 ]; then
    local dir; dir=$(vm_store_dir "$vm")
    if [ -n "$dir" ] && [ -f "$dir/tpm2-00.permall" ] && [[ $dir == "$NODE_STORE"/* ]]; then
      local su; su=$(awk '/^Uid:/ { print $2 }' "/proc/$(swtpm_pids "$vm" | head -1)/status" 2>/dev/null)
      if [ -n "$su" ] && [ "$su" != 0 ] && [ "$su" != "$(id -u tss)" ]; then
        is "$(stat -c '%a %u' "$dir/tpm2-00.permall")" "600 $su" \
          "$vm: tpm2-00.permall on the shared backing store, mode 0600, owner the VM's own swtpm uid ($su)"
      else
        fail "$vm: tpm2-00.permall on the shared backing store, mode 0600, owner the VM's own swtpm uid" "swtpm uid '$su'"
      fi
    else
      fail "$vm: tpm2-00.permall on the shared backing store, mode 0600, owner the VM's own swtpm uid" "dir '$dir'" "$(find "$NODE_STORE" -ls)"
    fi
    like "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')" \
      "^$(node_name a) Running$" "$vm: kubectl get tpmstate shows it running on node A"
  fi

  # The VM stops: QEMU goes, the launcher goes, its pod is finished.
  guest_stop
  launcher_stop "virt-launcher-$vm-a"
  _no_swtpm_for() { [ -z "$(swtpm_pids "$1")" ]; }
  if wait_until 30 _no_swtpm_for "$vm"; then pass "$vm: swtpm stopped with its launcher on node A"
  else fail "$vm: swtpm stopped with its launcher on node A" "$(swtpm_pids "$vm")"; fi

  # Starts again on node B.
  launcher_start b "virt-launcher-$vm-b" "$vm" >/dev/null
  if wait_until 60 swtpm_running "virt-launcher-$vm-b"; then pass "$vm: swtpm runs in the launcher on node B"
  else fail "$vm: swtpm runs in the launcher on node B" "$(tail -5 "$(node_agent_log b)")" \
    "nodeState: $(tpmstate_field "$vm" .status.nodeState)"; fi
  guest_start "virt-launcher-$vm-b"
  guest_tpm tpm2_startup -c >/dev/null 2>&1
  unseal_rc=0
  unsealed=$(guest_tpm clevis decrypt < "$NODE_TOP/$vm.jwe" 2>"$NODE_TOP/$vm.err") || unseal_rc=$?
  want_secret=$secret
  if [ "$vm" = win11 ]; then
    like "$(k get tpmstate "$vm" -o jsonpath='{.status.nodeState.node} {.status.nodeState.phase}')" \
      "^$(node_name b) Running$" "$vm: kubectl get tpmstate shows it running on node B"
  fi
  guest_stop
  launcher_stop "virt-launcher-$vm-b"
}

story win11 "{persistent: true}" Ready
is "$unsealed" "$want_secret" "win11 (persistent TPM): clevis decrypt on node B returns the secret sealed on node A"

story win11-scratch "{}" Ephemeral
if [ "$unseal_rc" -ne 0 ] && [ "$unsealed" != "$want_secret" ]; then
  pass "win11-scratch (non-persistent TPM): clevis decrypt on node B fails (fresh TPM state)"
else
  fail "win11-scratch (non-persistent TPM): clevis decrypt on node B fails (fresh TPM state)" \
    "exit status $unseal_rc, output '$unsealed'"
fi

node_no_leftovers
agent_sanitizer_check
