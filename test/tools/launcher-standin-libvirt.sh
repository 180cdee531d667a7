#!/usr/bin/env bash
# Test bed only (not product code): a virt-launcher stand-in that runs a real
# libvirt + QEMU, the way KubeVirt's virt-launcher does, with the VM's TPM
# backed by the swtpm the vtpm-agent starts in the launcher's namespace.
#
#   launcher-standin-libvirt.sh --socket SOCK --vm-uid UID --workdir DIR
#                               [--name DOMAIN] [--ctrl-dir /var/run/vtpm]
#                               [--gate FILE] [--paused] [--tpm-wait SECS] [--memory MIB]
#
# What it does:
#  1. build/tools/launcher-standin creates a private mount namespace, listens
#     on SOCK (the agent finds this process by SO_PEERCRED and works on its
#     namespace) and runs this script again inside (--inside).
#  2. Inside, tmpfs on /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
#     /var/cache/libvirt and /etc/libvirt (launcher-standin mounts them, before
#     the agent can mount anything, so the agent's later mount at
#     /var/lib/libvirt/swtpm/<UID> lands on top and is never hidden; whatever
#     the agent creates on the way there stays in this tmpfs, as it would in
#     the launcher container's own filesystem). /run itself is shared with the
#     host, so the agent's control socket directory (/var/run/vtpm) resolves
#     the same from both sides.
#  3. A private qemu.conf (QEMU as root: swtpm's control socket is 0660 tss;
#     no security driver, no namespaces/cgroups: there is no systemd here),
#     then virtlogd and libvirtd in the foreground with private pid files, so
#     a system libvirtd on the same machine is never touched.
#  4. Waits for the agent's swtpm control socket CTRL_DIR/UID.sock (and for
#     --gate FILE, if given, so a test can look at the state first), then
#     defines and starts a q35 domain (KVM when /dev/kvm exists, TCG
#     otherwise) with OVMF, no disk, no NIC, serial
#     console to DIR/serial.log, and
#       <tpm model='tpm-crb'><backend type='external'>
#         <source type='unix' mode='connect' path='CTRL_DIR/UID.sock'/>
#     The firmware finds the TPM (TPM2_Startup, PCR extends) and ends in its
#     boot manager / EFI shell: no guest OS is needed to exercise the TPM.
#     With --paused the domain starts paused: QEMU has connected to swtpm and
#     initialised it (CMD_INIT) but no guest code ran; `virsh resume` runs it.
#  5. On SIGTERM/SIGINT (launcher-standin forwards it, or a client writes
#     "quit" to SOCK): destroys and undefines the domain, stops libvirtd and
#     virtlogd, exits; the namespace and its tmpfs go with it.
#
# Progress goes to DIR/phase (one word: starting, libvirt-up, waiting-tpm,
# domain-paused, domain-running, failed, stopped) and DIR/standin.log; libvirtd's and
# virtlogd's logs to DIR/libvirtd.log and DIR/virtlogd.log; QEMU's log is
# copied to DIR/qemu.log when the domain stops. On stdout: "ready pid=N"
# (launcher-standin's pid: nsenter -t N -m reaches the namespace, e.g.
# `nsenter -t N -m virsh -c qemu:///system domstate DOMAIN`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
top=$(cd "$here/../.." && pwd)
LAUNCHER_STANDIN=${LAUNCHER_STANDIN:-$top/build/tools/launcher-standin}

usage() {
  echo "usage: $0 --socket SOCK --vm-uid UID --workdir DIR [--name DOMAIN] [--ctrl-dir DIR] [--gate FILE] [--paused] [--tpm-wait SECS] [--memory MIB]" >&2
  exit 2
}

inside=0 sock= uid= work= name= ctrl_dir=/var/run/vtpm gate= paused= tpm_wait=300 memory=256
args=("$@")
while [ $# -gt 0 ]; do
  case $1 in
    --inside) inside=1; shift ;;
    --socket) sock=${2:?}; shift 2 ;;
    --vm-uid) uid=${2:?}; shift 2 ;;
    --workdir) work=${2:?}; shift 2 ;;
    --name) name=${2:?}; shift 2 ;;
    --ctrl-dir) ctrl_dir=${2:?}; shift 2 ;;
    --gate) gate=${2:?}; shift 2 ;;
    --paused) paused=--paused; shift ;;
    --tpm-wait) tpm_wait=${2:?}; shift 2 ;;
    --memory) memory=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[ -n "$sock" ] && [ -n "$uid" ] && [ -n "$work" ] || usage
[[ $uid =~ ^[A-Za-z0-9-]+$ ]] || { echo "$0: bad --vm-uid '$uid'" >&2; exit 2; }
name=${name:-vtpm-$uid}
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "$0: bad --name '$name'" >&2; exit 2; }
case $work in /*) ;; *) echo "$0: --workdir must be absolute" >&2; exit 2 ;; esac

if [ "$inside" -eq 0 ]; then
  [ -x "$LAUNCHER_STANDIN" ] || { echo "$0: $LAUNCHER_STANDIN missing: run 'make tools'" >&2; exit 1; }
  mkdir -p "$work"
  echo starting > "$work/phase"
  exec "$LAUNCHER_STANDIN" --socket "$sock" \
    --tmpfs /run/libvirt --tmpfs /var/lib/libvirt --tmpfs /var/log/libvirt \
    --tmpfs /var/cache/libvirt --tmpfs /etc/libvirt \
    --exec "$self" --inside "${args[@]}"
fi

# ---- inside the launcher's mount namespace ----
exec >> "$work/standin.log" 2>&1
log() { echo "$(date -u +%T.%3N) $*"; }
phase() { echo "$1" > "$work/phase.tmp" && mv -f "$work/phase.tmp" "$work/phase"; log "phase: $1"; }

# The tmpfs mounts must be ours, or we would write into the host's libvirt.
for d in /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt; do
  mountpoint -q "$d" || { log "$d is not a private mount: refusing to run libvirtd"; phase failed; exit 1; }
done

virsh() { command virsh -q -c qemu:///system "$@"; }
ctrl="$ctrl_dir/$uid.sock"
libvirtd_pid= virtlogd_pid=

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
  for p in $libvirtd_pid $virtlogd_pid; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  phase "${final_phase:-stopped}"
  exit 0
}
trap stop_all TERM INT
fail_out() { final_phase=failed; phase failed; stop_all; }

phase starting
# Debian's libvirt resolves its built-in QEMU user (libvirt-qemu) before it
# reads qemu.conf, and that user comes with libvirt-daemon-system, which the
# test bed does not install (its maintainer scripts would start a system
# libvirtd). A private passwd/group in this namespace gives libvirtd the name;
# QEMU still runs as root (qemu.conf below). The host's files are untouched.
mkdir -p "$work/etc"
for f in passwd group; do
  cp "/etc/$f" "$work/etc/$f"
done
if ! getent passwd libvirt-qemu >/dev/null; then
  id=$(awk -F: 'BEGIN{u=64055} {seen[$3]=1} END{while (u in seen) u++; print u}' /etc/passwd /etc/group)
  echo "libvirt-qemu:x:$id:$id:Libvirt Qemu (test bed):/var/lib/libvirt:/usr/sbin/nologin" >> "$work/etc/passwd"
  getent group libvirt-qemu >/dev/null || echo "libvirt-qemu:x:$id:" >> "$work/etc/group"
  mount --bind "$work/etc/passwd" /etc/passwd
  mount --bind "$work/etc/group" /etc/group
fi
mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu/nvram /var/cache/libvirt/qemu
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
    <tpm model='tpm-crb'>
      <backend type='external'>
        <source type='unix' mode='connect' path='$ctrl'/>
      </backend>
    </tpm>
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
