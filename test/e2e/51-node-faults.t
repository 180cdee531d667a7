#!/usr/bin/env bash
# Issue 5, acceptance 3: the node controller's fault tests.
#  (a) the state volume is not mounted: swtpm never starts, the status says why;
#  (b) the state is corrupted: not started, bytes unchanged, StateUnreadable;
#  (c) the agent is killed -9 and restarted while a guest keeps using its
#      vTPM: the guest sees no error, the same swtpm runs on, it is adopted;
#  (d) two launchers for one VM on two nodes: the second never starts a
#      swtpm on the same state.
# And (acceptance 5) nothing outlives its launcher.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-node-faults
. "$(dirname "$0")/lib-node.sh"
plan 38

node_testbed_up
ok "node A up (node-1)" node_up a
ok "node C up (node-2), its attachment image one the node does not have" \
  node_up c "attachmentImage: localhost/vtpm-e2e-absent:none"

# ---- (a) the state volume is not mounted ----
ok "VM fa created" vm_create fa "{persistent: true}" "" Ready
launcher_start c virt-launcher-fa fa >/dev/null
if wait_reason 60 fa WaitingForAttachment; then
  pass "(a) the kubelet cannot run the attachment pod (no such image): TPMState says WaitingForAttachment"
else
  fail "(a) the kubelet cannot run the attachment pod (no such image): TPMState says WaitingForAttachment" \
    "nodeState: $(tpmstate_field fa .status.nodeState)" "$(k get pods -o wide 2>&1)"
fi
launcher_stop virt-launcher-fa
# The kubelet publishes the volume, but not where the agent looks (its
# node.kubeletRoot is not the kubelet's --root-dir): the attachment pod is
# Running and nothing is mounted at its volume path. The agent must check the
# mount, not trust the pod's phase.
mkdir -p "$NODE_TOP/not-the-kubelet-root"
ok "node C's agent restarted with a kubeletRoot that is not the kubelet's" \
  node_reconfigure c "kubeletRoot: $NODE_TOP/not-the-kubelet-root"
fa2_uid=$(launcher_start c virt-launcher-fa-2 fa)
# The agent finds launchers under kubeletRoot too (each in its pod's emptyDir):
# this one's socket is linked there (a hard link: the same socket, no
# symlink), its state volume is not.
fa2_dir=$NODE_TOP/not-the-kubelet-root/pods/$fa2_uid/volumes/kubernetes.io~empty-dir/sockets
mkdir -p "$fa2_dir" && ln "$(rn_launcher_socket "$(_node_real c)" "$fa2_uid")" "$fa2_dir/launcher-sock" ||
  diag "cannot link the launcher's socket into the other kubeletRoot"
if wait_reason 60 fa StateVolumeNotMounted; then
  pass "(a) attachment pod Running, volume not mounted: TPMState says StateVolumeNotMounted"
else
  fail "(a) attachment pod Running, volume not mounted: TPMState says StateVolumeNotMounted" \
    "nodeState: $(tpmstate_field fa .status.nodeState)" "$(k get pods -o wide 2>&1)"
fi
_warned() { [ -n "$(events_for "$1" "$2" | grep '^Warning ')" ]; }
ok "(a) a Warning event StateVolumeNotMounted on the VM" wait_until 30 _warned fa StateVolumeNotMounted
sleep 3 # a refusal is final only if it stays so: give a wrong start the chance to happen
swtpm_count_is fa 0 "(a) no swtpm (nor swtpm_setup) runs for the VM"
is "$(ls -A "$(vm_store_dir fa)" 2>&1)" "" "(a) nothing was written to the state volume"
launcher_stop virt-launcher-fa-2
ok "node C down: node-2 is free for node B" node_down c
ok "node B up (node-2)" node_up b

# ---- (b) corrupted state ----
ok "VM fb created" vm_create fb "{persistent: true}" "" Ready
launcher_start a virt-launcher-fb-1 fb >/dev/null
ok "(b) first boot on node A provisions the state" wait_until 60 swtpm_running virt-launcher-fb-1
launcher_stop virt-launcher-fb-1
_no_swtpm_for() { [ -z "$(swtpm_pids "$1")" ]; }
wait_until 30 _no_swtpm_for fb
store=$(vm_store_dir fb)
head -c 2048 /dev/urandom > "$store/tpm2-00.permall"
sums_before=$(cd "$store" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
launcher_start b virt-launcher-fb-2 fb >/dev/null
if wait_reason 60 fb StateUnreadable; then
  pass "(b) corrupted state: TPMState says StateUnreadable"
else
  fail "(b) corrupted state: TPMState says StateUnreadable" "nodeState: $(tpmstate_field fb .status.nodeState)"
fi
ok "(b) a Warning event StateUnreadable on the VM" wait_until 30 _warned fb StateUnreadable
sleep 3
swtpm_count_is fb 0 "(b) no swtpm runs on the corrupted state"
if swtpm_running virt-launcher-fb-2; then fail "(b) nothing answers on the launcher's TPM control socket"
else pass "(b) nothing answers on the launcher's TPM control socket"; fi
sums_after=$(cd "$store" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
is "$sums_after" "$sums_before" "(b) the state files are byte-identical afterwards (sha256)"
launcher_stop virt-launcher-fb-2

# ---- (c) agent killed -9 and restarted under a busy guest ----
ok "VM fc created" vm_create fc "{persistent: true}" "" Ready
launcher_start a virt-launcher-fc fc >/dev/null
ok "(c) swtpm runs for the guest on node A" wait_until 60 swtpm_running virt-launcher-fc
guest_start virt-launcher-fc
guest_tpm tpm2_startup -c >/dev/null 2>&1
pid_before=$(swtpm_pids fc)
loop_dir=$NODE_TOP/loop
mkdir -p "$loop_dir"
(
  n=0
  while [ ! -e "$loop_dir/stop" ]; do
    if out=$(guest_tpm tpm2_getrandom --hex 8 2>&1); then n=$((n + 1)); echo "$n" > "$loop_dir/count"
    else printf '%s\n' "$out" >> "$loop_dir/errors"; fi
  done
) &
loop=$!
_count_at_least() { [ "$(cat "$loop_dir/count" 2>/dev/null || echo 0)" -ge "$1" ]; }
wait_until 30 _count_at_least 3
node_agent_kill a
before_restart=$(cat "$loop_dir/count" 2>/dev/null || echo 0)
ok "(c) agent on node A restarted after kill -9" node_agent_start a
_adopted() { awk '/^=== start/ { a = 0 } /adopted/ { a = 1 } END { exit !a }' "$(node_agent_log a)"; }
ok "(c) the restarted agent's log says it adopted the running swtpm" wait_until 30 _adopted
ok "(c) the guest kept using its vTPM across the restart" wait_until 30 _count_at_least $((before_restart + 5))
touch "$loop_dir/stop"
wait "$loop"
is "$(cat "$loop_dir/errors" 2>/dev/null)" "" "(c) the guest saw no error ($(cat "$loop_dir/count") tpm2_getrandom calls)"
is "$(swtpm_pids fc)" "$pid_before" "(c) the same swtpm process runs on (pid $pid_before)"
like "$(tpmstate_field fc .status.nodeState.phase)" "^Running$" "(c) TPMState still says Running"
guest_stop
launcher_stop virt-launcher-fc
ok "(c) the adopted swtpm stops with its launcher" wait_until 30 _no_swtpm_for fc

# ---- (d) two launchers for one VM on two nodes ----
ok "VM fd created" vm_create fd "{persistent: true}" "" Ready
launcher_start a virt-launcher-fd-a fd >/dev/null
ok "(d) the first launcher's swtpm runs on node A" wait_until 60 swtpm_running virt-launcher-fd-a
launcher_start b virt-launcher-fd-b fd >/dev/null
ok "(d) the second launcher (node B) is refused: StateInUse Warning event" wait_until 60 _warned fd StateInUse
sleep 3
swtpm_count_is fd 1 "(d) one swtpm process only for the VM"
if swtpm_running virt-launcher-fd-a && ! swtpm_running virt-launcher-fd-b; then
  pass "(d) it is the first launcher's; nothing answers in the second"
else
  fail "(d) it is the first launcher's; nothing answers in the second"
fi
# When the first launcher goes, the second one may have the state.
launcher_stop virt-launcher-fd-a
ok "(d) once the first launcher is gone, the second one's swtpm starts" wait_until 90 swtpm_running virt-launcher-fd-b
swtpm_count_is fd 1 "(d) still one swtpm process only"
launcher_stop virt-launcher-fd-b

node_no_leftovers
agent_sanitizer_check
