#!/usr/bin/env bash
# Issue 5, acceptance 2 (real QEMU): a launcher pod on a real node runs
# libvirtd and a TCG q35 domain with OVMF (the test bed's launcher-libvirt
# image, hack/images/launcher-libvirt) whose TPM is libvirt's
# <tpm model='tpm-crb'><backend type='external'>, pointing at the control
# socket of the swtpm the agent started in the launcher's mount namespace.
# The firmware's TPM traffic must reach that swtpm and change the VM's TPM
# state on the PVC's backing store:
#   - live: the domain starts paused (QEMU has connected to swtpm and sent
#     CMD_INIT, no guest code ran): tpm2-00.permall on the backing store is
#     still what provisioning wrote; once resumed, the firmware runs and the
#     file changes;
#   - afterwards: a bare swtpm on a copy of the state, before and after,
#     reads the TPM's resetCount (TPM2_ReadClock): it went up, because the
#     firmware sent TPM2_Startup(CLEAR) - QEMU itself never sends that.
# And the state files are on the backing store (0600, owned by the VM's own swtpm uid) before and
# after, and nothing (swtpm, mounts, attachment pod, libvirtd, QEMU)
# outlives the launcher.
# VTPM_58_NO_TPM=1: the domain gets no <tpm> (tests 9, 11 and 14 must then
# fail: the check that this test can fail).
. "$(dirname "$0")/lib.sh"

[ -c /dev/kvm ] && virt=KVM || virt=TCG
for b in nsenter tpm2_readclock swtpm_ioctl; do
  command -v "$b" >/dev/null || skip_all "$b missing: run hack/install-deps.sh"
done

setup_namespace e2e-58
. "$(dirname "$0")/lib-node.sh"
[ -n "${LAUNCHER_LIBVIRT_IMAGE:-}" ] || skip_all "the nodes have no launcher-libvirt image (VTPM_NODES_AGENT_IMAGE=1 VTPM_NODES_LIBVIRT_IMAGE=1, as make test sets)"
plan 19

t_start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t_start )) s"; }

node_testbed_up
ok "node A up (node-1: kubelet, agent)" node_up a
ok "VM win11-qemu with a persistent TPM: TPMState Ready" vm_create win11-qemu "{persistent: true}" "" Ready
vm=win11-qemu
vmuid=$(vm_uid "$vm")

# ---- the launcher: a pod of the launcher-libvirt image; the test's work
# directory is mounted at the same path (progress, logs, the gate).
pod=virt-launcher-$vm-a
work=$NODE_TOP/qemu
gate=$work/gate
mkdir -p "$work"
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {kubevirt.io: virt-launcher, vm.kubevirt.io/name: "$vm"}
spec:
  nodeSelector: {kubernetes.io/hostname: $(node_name a)}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 40
  containers:
  - name: compute
    image: $LAUNCHER_LIBVIRT_IMAGE
    imagePullPolicy: Never
    env:
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: VM_UID, value: "$vmuid"}
    - {name: WORKDIR, value: "$work"}
    - {name: DOMAIN, value: "$vm"}
    - {name: GATE, value: "$gate"}
    - {name: PAUSED, value: "1"}
    - {name: TPM, value: "${VTPM_58_NO_TPM:+none}"}
    volumeMounts:
    - {name: sockets, mountPath: /var/run/kubevirt/sockets}
    - {name: work, mountPath: "$work"}
  volumes:
  - {name: sockets, emptyDir: {}}
  - {name: work, hostPath: {path: "$work", type: Directory}}
YAML
lpid= launcher_ns=

# Everything the launcher started runs in its mount namespace: find it there.
ns_procs() { # COMM...: pids in the launcher's namespace with one of these names
  local c p
  [ -n "$launcher_ns" ] || return 0
  for c in "$@"; do
    for p in $(pgrep -x "$c"); do
      [ "$(stat -L -c %i "/proc/$p/ns/mnt" 2>/dev/null)" = "$launcher_ns" ] && echo "$p"
    done
  done
  return 0
}
# /proc/PID/comm: at most 15 characters.
VM_PROCS=(qemu-system-x86 libvirtd virtlogd)
launcher_cleanup() {
  k delete pod "$pod" --grace-period=40 --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
  local p
  # The launcher destroys its domain and stops its daemons; if it could not:
  for p in $(ns_procs "${VM_PROCS[@]}"); do kill -KILL "$p" 2>/dev/null; done
  [ -z "${bare_pid:-}" ] || kill -KILL "$bare_pid" 2>/dev/null
  return 0
}
at_exit launcher_cleanup

phase_is() { [ "$(cat "$work/phase" 2>/dev/null)" = "$1" ]; }
phase_past_libvirt() { grep -qx 'waiting-tpm\|domain-paused\|domain-running' "$work/phase" 2>/dev/null; }
_launcher_pid() { lpid=$(launcher_pid "$pod") && [ -n "$lpid" ]; }
_libvirt_or_failed() { phase_past_libvirt || phase_is failed; }
if wait_until 90 _launcher_pid && launcher_ns=$(stat -L -c %i "/proc/$lpid/ns/mnt") &&
   wait_until 90 _libvirt_or_failed && phase_past_libvirt; then
  pass "launcher pod: own mount namespace, libvirtd answering inside it ($(elapsed))"
else
  fail "launcher pod: own mount namespace, libvirtd answering inside it" "$(k get pod "$pod" -o wide 2>&1)" \
    "$(tail -20 "$work/launcher.log" 2>&1)" "$(grep -v dmidecode "$work/libvirtd.log" 2>&1 | tail -10)"
  bail_out "no libvirt in the launcher: nothing else can be checked"
fi
[ "$launcher_ns" != "$(stat -L -c %i /proc/self/ns/mnt)" ] || bail_out "the launcher shares the host's mount namespace"

# ---- the agent: mount, provision, start swtpm in its sandbox (the agent's
# swtpm, the launcher's cgroup); its control socket is bound into the launcher
ctrl_in_ns=/var/run/vtpm/$vmuid.sock
swtpm_in_ns() { [ -n "$(rn_swtpm_pid "$vmuid")" ]; }
_ctrl_there() { nsenter -t "$lpid" -m test -S "$ctrl_in_ns"; }
if wait_until 90 swtpm_in_ns && wait_until 10 _ctrl_there; then
  pass "swtpm runs for the VM, control socket $ctrl_in_ns in the launcher ($(elapsed))"
else
  fail "swtpm runs for the VM, control socket $ctrl_in_ns in the launcher" \
    "nodeState: $(tpmstate_field "$vm" .status.nodeState)" "$(tail -10 "$(node_agent_log a)")"
  bail_out "no swtpm in the launcher: the VM cannot have a TPM"
fi
swtpm_pid=$(rn_swtpm_pid "$vmuid" | head -1)
swtpm_uid=$(stat -c %u "/proc/$swtpm_pid" 2>/dev/null)
own_uid() { [ -n "$swtpm_uid" ] && [ "$swtpm_uid" != 0 ] && [ "$swtpm_uid" != "$(id -u tss)" ] && echo own; }
_node_state() { echo "$(tpmstate_field "$vm" '.status.nodeState.node') $(tpmstate_field "$vm" '.status.nodeState.phase')"; }
_node_state_is() { [ "$(_node_state)" = "$1" ]; }
wait_until 20 _node_state_is "$(node_name a) Running"
is "$(own_uid) $(_node_state)" \
  "own $(node_name a) Running" "swtpm runs as the VM's own uid ($swtpm_uid); kubectl get tpmstate shows it Running on node A"

# The PVC's directory on the backing store: PVC -> PV -> local path.
pvc=$(tpmstate_field "$vm" .status.pvcName)
pv=$(k get pvc "$pvc" -o jsonpath='{.spec.volumeName}' 2>/dev/null)
store=$(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}' 2>/dev/null)
perm=$store/tpm2-00.permall
if [ -n "$store" ] && [ -f "$perm" ]; then
  is "$(stat -c '%a %u' "$perm")" "600 $swtpm_uid" "provisioned state on the backing store ($store): tpm2-00.permall, 0600, the VM's uid"
else
  fail "provisioned state on the backing store: tpm2-00.permall, 0600, the VM's uid" "pvc=$pvc pv=$pv dir=$store" \
    "$(ls -la "$store" 2>&1)"
fi

# What libvirt's swtpm state path in the launcher shows is that directory.
state_in_ns=/var/lib/libvirt/swtpm/$vmuid
is "$(nsenter -t "$lpid" -m stat -c '%d:%i' "$state_in_ns" 2>&1)" "$(stat -c '%d:%i' "$store" 2>&1)" \
  "in the launcher, $state_in_ns is the PVC's directory on the backing store (same device and inode)"

# A snapshot of the state before the VM boots (the gate holds the domain).
before=$work/state-before
mkdir -p "$before"
cp -a "$store"/. "$before"/ 2>/dev/null
sum_before=$(sha256sum < "$perm" 2>/dev/null)

# ---- the VM starts (paused first), then boots: OVMF talks to the TPM
touch "$gate"
lvirsh() { nsenter -t "$lpid" -m virsh -q -c qemu:///system "$@"; }
_domain_is() { [ "$(lvirsh domstate "$vm" 2>/dev/null)" = "$1" ]; }
_domain_paused() { phase_is domain-paused && _domain_is paused; }
_launcher_failed() { phase_is failed; }
_domain_paused_or_failed() { _domain_paused || _launcher_failed; }
domain_ok=
if wait_until 90 _domain_paused_or_failed && _domain_paused; then
  domain_ok=1
  pass "$virt q35 domain with OVMF and the external TPM backend started (paused) in the launcher ($(elapsed))"
else
  fail "$virt q35 domain with OVMF and the external TPM backend started (paused) in the launcher" \
    "phase: $(cat "$work/phase")" "$(tail -10 "$work/launcher.log")" "$(tail -20 "$work/qemu.log" 2>/dev/null)"
fi
qemu_pid=$(ns_procs qemu-system-x86 | head -1)
qemu_cmd=$(tr '\0' ' ' < "/proc/$qemu_pid/cmdline" 2>/dev/null)
like "$qemu_cmd" "path=$ctrl_in_ns.*-tpmdev emulator.*tpm-crb" \
  "QEMU (in the launcher's namespace) uses the agent's swtpm: chardev $ctrl_in_ns, tpmdev emulator, tpm-crb"

# QEMU has connected and initialised the TPM (CMD_INIT precedes the paused
# state), but no guest code ran: nothing may have written the state yet.
is "$(sha256sum < "$perm" 2>/dev/null)" "$sum_before" \
  "QEMU's own set-up of the TPM left the state alone (tpm2-00.permall unchanged while the guest is paused)"

# The firmware's serial console, without its escape sequences.
console() {
  sed -E 's/\x1b\[[0-9;=?]*[A-Za-z]//g' "$work/serial.log" 2>/dev/null | tr -cd '[:print:]\n' | grep -v '^ *$' | tail -3
}
_state_changed() { [ "$(sha256sum < "$perm" 2>/dev/null)" != "$sum_before" ]; }
if [ -z "$domain_ok" ]; then
  fail "the firmware's TPM commands reached the agent's swtpm: tpm2-00.permall on the backing store changed" \
    "no domain"
elif ! resumed=$(lvirsh resume "$vm" 2>&1); then
  fail "the firmware's TPM commands reached the agent's swtpm: tpm2-00.permall on the backing store changed" \
    "virsh resume: $resumed"
elif [ -n "$sum_before" ] && wait_until 90 _state_changed; then
  pass "the firmware's TPM commands reached the agent's swtpm: tpm2-00.permall on the backing store changed ($(elapsed))"
else
  fail "the firmware's TPM commands reached the agent's swtpm: tpm2-00.permall on the backing store changed" \
    "still $sum_before; domain $(lvirsh domstate "$vm" 2>&1)" \
    "firmware console: $(console)"
fi
[ -z "$(console)" ] || diag "firmware console so far: $(console)"

# ---- the VM stops: its launcher pod is deleted, the kubelet stops it
k delete pod "$pod" --wait=false >/dev/null 2>&1
qemu_gone() { [ -z "$(ns_procs "${VM_PROCS[@]}")" ]; }
if wait_until 45 qemu_gone && wait_until 10 phase_is stopped; then
  pass "VM stopped: the launcher destroyed the domain and stopped libvirtd and virtlogd (phase $(cat "$work/phase"))"
else
  fail "VM stopped: the launcher destroyed the domain and stopped libvirtd and virtlogd" \
    "phase: $(cat "$work/phase")" "$(ps -o pid,args -p "$(ns_procs "${VM_PROCS[@]}" | paste -sd,)")"
fi
_swtpm_gone() { [ -z "$(swtpm_pids "$vm")" ]; }
if wait_until 30 _swtpm_gone; then pass "swtpm gone once the VM stopped and its launcher went"
else fail "swtpm gone once the VM stopped and its launcher went" "$(ps -o pid,args -p "$(swtpm_pids "$vm" | paste -sd,)")"; fi

# ---- what the firmware did, read back from the state it left on the backing store
after=$work/state-after
mkdir -p "$after"
cp -a "$store"/. "$after"/ 2>/dev/null
# reset_count of STATE-DIR: a bare swtpm on it (a copy), TPM2_Startup(CLEAR) by
# swtpm itself, TPM2_ReadClock. Each TPM2_Startup(CLEAR) adds one.
# The state is encrypted at rest: the key comes from the header beside it and
# the namespace's KEK (build/tools/state-key, with the admin's credentials).
reset_count() {
  local dir=$1 s=$work/bare-$RANDOM out key=()
  if [ -f "$dir/vtpm-key.json" ]; then
    "$E2E_TOP/build/tools/state-key" --state-dir "$dir" --out "$s.key" >&2 || return 1
    key=(--key "file=$s.key,format=hex,mode=aes-256-cbc")
  fi
  swtpm socket --tpm2 --tpmstate "dir=$dir" --server "type=unixio,path=$s.data" "${key[@]}" \
    --ctrl "type=unixio,path=$s.ctrl" --flags not-need-init,startup-clear --log "file=$s.log" &
  bare_pid=$!
  wait_until 10 test -S "$s.data"
  out=$(TPM2TOOLS_TCTI="cmd:socat - UNIX-CONNECT:$s.data" tpm2_readclock 2>&1)
  swtpm_ioctl --unix "$s.ctrl" -s >/dev/null 2>&1 || kill -TERM "$bare_pid" 2>/dev/null
  wait "$bare_pid" 2>/dev/null
  bare_pid=
  sed -n 's/^ *reset_count: *//p' <<<"$out"
}
r_before=$(reset_count "$before")
r_after=$(reset_count "$after")
if [[ $r_before =~ ^[0-9]+$ && $r_after =~ ^[0-9]+$ ]] && [ "$r_after" -gt "$r_before" ]; then
  pass "the state the VM left holds the firmware's TPM2_Startup: resetCount $r_before before boot, $r_after after"
else
  fail "the state the VM left holds the firmware's TPM2_Startup: resetCount went up" \
    "before: '$r_before' after: '$r_after'" "$(ls -la "$before" "$after")"
fi
if [ -f "$perm" ]; then
  is "$(stat -c '%a %u' "$perm")" "600 $swtpm_uid" "state files still on the backing store after the launcher went (0600, the VM's uid)"
else
  fail "state files still on the backing store after the launcher went" "$(ls -la "$store" 2>&1)"
fi

node_no_leftovers
agent_sanitizer_check
diag "total $(elapsed)"
