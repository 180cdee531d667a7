#!/usr/bin/env bash
# Test bed only (not product code): the entrypoint of the launcher-libvirt
# image, a virt-launcher that runs a real libvirt + QEMU the way KubeVirt's
# does, with the VM's TPM backed by the swtpm the vtpm-agent starts in this
# pod's mount namespace.
#
# From the pod's environment:
#   (listens on /var/run/kubevirt/sockets/launcher-sock, the pod's own emptyDir
#              "sockets", as virt-launcher does: the agent finds this pod's namespace there)
#   VM_UID     the VM's uid: the agent's control socket is CTRL_DIR/VM_UID.sock
#   WORKDIR    a hostPath mounted at the same path: progress and logs for the test
#   DOMAIN     domain name (default vtpm-VM_UID)
#   CTRL_DIR   swtpm's control socket directory (default /var/run/vtpm, node.swtpmSocketDir)
#   GATE       if set, a file that must exist before the domain starts (so a
#              test can look at the state first)
#   PAUSED     if non-empty, start the domain paused: QEMU has connected to
#              swtpm and initialised it (CMD_INIT) but no guest code ran;
#              `virsh resume` runs it
#   TPM_WAIT   seconds to wait for the control socket (default 300)
#   MEMORY     MiB (default 256)
#   TPM        "none": the domain gets no <tpm> (for a test's check that it can fail)
#
# What it does: a private libvirtd.conf and qemu.conf (QEMU as root: swtpm's
# control socket is 0660 tss; no security driver, no namespaces/cgroups: no
# systemd here), virtlogd and libvirtd in the foreground; waits for the
# agent's control socket (and GATE), then defines and starts a q35 domain
# (KVM when /dev/kvm exists, TCG otherwise) with OVMF, no disk, no NIC, serial
# console to WORKDIR/serial.log, and
#   <tpm model='tpm-crb'><backend type='external'>
#     <source type='unix' mode='connect' path='CTRL_DIR/VM_UID.sock'/>
# The firmware finds the TPM (TPM2_Startup, PCR extends) and ends in its boot
# manager / EFI shell: no guest OS is needed to exercise the TPM.
# On SIGTERM (the pod is deleted): destroys and undefines the domain, stops
# libvirtd, virtlogd and the listener, exits.
#
# Progress goes to WORKDIR/phase (one word: starting, libvirt-up, waiting-tpm,
# domain-paused, domain-running, failed, stopped) and WORKDIR/launcher.log;
# libvirtd's and virtlogd's logs to WORKDIR/libvirtd.log and WORKDIR/virtlogd.log;
# QEMU's log is copied to WORKDIR/qemu.log when the domain stops.
set -euo pipefail

sock=/var/run/kubevirt/sockets/launcher-sock
uid=${VM_UID:?set VM_UID} work=${WORKDIR:?set WORKDIR}
name=${DOMAIN:-vtpm-$uid} ctrl_dir=${CTRL_DIR:-/var/run/vtpm} gate=${GATE:-}
paused=${PAUSED:+--paused} tpm_wait=${TPM_WAIT:-300} memory=${MEMORY:-256}
[[ $uid =~ ^[A-Za-z0-9-]+$ ]] || { echo "$0: bad VM_UID '$uid'" >&2; exit 2; }
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "$0: bad DOMAIN '$name'" >&2; exit 2; }
[[ $tpm_wait =~ ^[0-9]+$ ]] && [[ $memory =~ ^[0-9]+$ ]] || { echo "$0: TPM_WAIT and MEMORY are numbers" >&2; exit 2; }
[ -d "$work" ] || { echo "$0: WORKDIR $work is not mounted" >&2; exit 2; }

exec >> "$work/launcher.log" 2>&1
log() { echo "$(date -u +%T.%3N) $*"; }
phase() { echo "$1" > "$work/phase.tmp" && mv -f "$work/phase.tmp" "$work/phase"; log "phase: $1"; }

virsh() { command virsh -q -c qemu:///system "$@"; }
ctrl="$ctrl_dir/$uid.sock"
libvirtd_pid= virtlogd_pid= listener_pid=

stop_all() {
  trap - TERM INT
  log "stopping"
  # Every domain of this libvirtd, not only ours: libvirtd leaves running
  # QEMU processes behind when it stops.
  local d
  for d in $(virsh list --name 2>/dev/null); do
    virsh destroy "$d" >/dev/null || log "virsh destroy $d failed"
  done
  cp -f "/var/log/libvirt/qemu/$name.log" "$work/qemu.log" 2>/dev/null || true
  for d in $(virsh list --all --name 2>/dev/null); do
    virsh undefine --nvram "$d" >/dev/null 2>&1 || true
  done
  local p
  for p in $libvirtd_pid $virtlogd_pid $listener_pid; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -f "$sock"
  phase "${final_phase:-stopped}"
  exit 0
}
trap stop_all TERM INT
fail_out() { final_phase=failed; phase failed; stop_all; }

phase starting
# The listener first: the agent starts swtpm in this namespace as soon as it
# finds it, while libvirtd comes up.
socat UNIX-LISTEN:"$sock",unlink-early,fork SYSTEM:'echo pong' &
listener_pid=$!
mkdir -p /run/libvirt /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu/nvram /var/cache/libvirt/qemu
cat > /etc/libvirt/libvirtd.conf <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
log_outputs = "3:stderr"
EOF
# QEMU as root: the agent's swtpm control socket is 0660 tss:tss. No
# security driver, no per-VM namespace or cgroup: no systemd or machined here.
cat > /etc/libvirt/qemu.conf <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "logd"
EOF
cat > /etc/libvirt/virtlogd.conf <<EOF
log_outputs = "3:stderr"
EOF

virtlogd -p /run/libvirt/virtlogd.pid >> "$work/virtlogd.log" 2>&1 &
virtlogd_pid=$!
libvirtd -p /run/libvirt/libvirtd.pid >> "$work/libvirtd.log" 2>&1 &
libvirtd_pid=$!
log "virtlogd pid $virtlogd_pid, libvirtd pid $libvirtd_pid"

# Sleep in the background and `wait`, so SIGTERM is handled at once.
nap() { sleep "$1" & wait $! || true; }

for i in $(seq 300); do
  virsh version >/dev/null 2>&1 && break
  kill -0 "$libvirtd_pid" 2>/dev/null || { log "libvirtd exited"; fail_out; }
  nap 0.2
done
virsh version >/dev/null 2>&1 || { log "libvirtd did not answer in 60 s"; fail_out; }
phase libvirt-up

phase waiting-tpm
deadline=$(( $(date +%s) + tpm_wait ))
until [ -S "$ctrl" ] && { [ -z "$gate" ] || [ -e "$gate" ]; }; do
  [ "$(date +%s)" -lt "$deadline" ] || { log "no swtpm control socket $ctrl after $tpm_wait s"; fail_out; }
  nap 0.2
done
log "swtpm control socket $ctrl is there"

if [ -c /dev/kvm ]; then
  dom_type=kvm cpu="<cpu mode='host-passthrough'/>"
else
  dom_type=qemu cpu="<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>"
fi
tpm_xml="<tpm model='tpm-crb'><backend type='external'><source type='unix' mode='connect' path='$ctrl'/></backend></tpm>"
[ "${TPM:-}" != none ] || { tpm_xml=; log "TPM=none: the domain has no TPM"; }
cat > "$work/domain.xml" <<EOF
<domain type='$dom_type'>
  <name>$name</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <memory unit='MiB'>$memory</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/${name}_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  $cpu
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='$work/serial.log'/>
      <target port='0'/>
    </serial>
    $tpm_xml
    <memballoon model='none'/>
  </devices>
</domain>
EOF
if ! virsh define "$work/domain.xml" || ! virsh start $paused "$name"; then
  log "the domain did not start"
  cp -f "/var/log/libvirt/qemu/$name.log" "$work/qemu.log" 2>/dev/null || true
  fail_out
fi
if [ -n "$paused" ]; then phase domain-paused; else phase domain-running; fi

while :; do
  nap 1
  if ! kill -0 "$libvirtd_pid" 2>/dev/null; then log "libvirtd exited"; fail_out; fi
  if [ -n "$paused" ] && [ "$(virsh domstate "$name" 2>/dev/null)" = running ]; then
    paused=
    phase domain-running
  fi
done
