#!/usr/bin/env bash
# Tenant-proof, holes 2 and 10, on the real nodes.
#
# Hole 2: a tenant owns its launcher's filesystem. It replaces the launcher's
# /usr/bin/swtpm (through /proc/<launcher>/root, as its own image would) by
# test/e2e/hostile-swtpm.sh, which records what it can reach and then becomes
# the real swtpm. The agent must never run it; and whatever runs as a VM's
# swtpm (the same script run with exactly that swtpm's namespaces, root and
# uid, as a swtpm compromised through its guest would be) must not reach the
# node's network (a listener on 127.0.0.1 in the agent's network namespace),
# another VM's swtpm (its /proc/<pid>/root, state, control socket, memory, or
# a signal) or run with privileges.
#
# Hole 10: the agent in its own cgroup and a private cgroup namespace (as a
# container on a cgroup v2 host: /proc/<launcher>/cgroup then reads
# "0::/../.."). swtpm must land in its launcher's cgroup in every hierarchy,
# and survive the agent's cgroup being killed (what the runtime does when the
# agent's container is replaced). An agent that cannot reach the launcher's
# cgroup at all (its cgroup2 mount shows only its own subtree) must refuse the
# start with an event, not leave swtpm in the agent's cgroup.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-59
. "$(dirname "$0")/lib-node.sh"
for b in socat unshare; do command -v "$b" >/dev/null || bail_out "$b missing"; done
plan 28

HOSTILE=$E2E_TOP/test/e2e/hostile-swtpm.sh
# The tenant's own helper (any binary can be in its image): ptrace and
# process_vm_readv of another process, no /proc needed.
PEEK=$NODE_TOP/peek
cc -static -O2 -o "$PEEK" "$E2E_TOP/test/e2e/hostile-peek.c" || bail_out "cannot build the hostile helper"
node_testbed_up
ok "node A up (node-1: kubelet, agent)" node_up a
agent_pid() { _tracked agent-a; }

# A listener only the node itself should reach: 127.0.0.1 in the agent's
# network namespace (the node's, for the DaemonSet's hostNetwork pod).
port=$(free_port) || bail_out "no free TCP port"
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:'echo node-only-banner' 2>/dev/null &
_track listener $!
_listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -n1 <&3" 2>/dev/null | grep -q node-only; }
wait_until 10 _listening || bail_out "the node-only listener on 127.0.0.1:$port does not answer"

# ---- the victim: another tenant's VM on the same node, its TPM running.
vm_create victim "{persistent: true}" "" Ready >/dev/null || bail_out "the victim's TPMState is not Ready"
launcher_start a virt-launcher-victim-a victim >/dev/null
ok "victim VM: swtpm runs" wait_until 60 swtpm_running virt-launcher-victim-a
vuid=$(vm_uid victim)
vpid=$(rn_swtpm_pid "$vuid" | head -1)
[ -n "$vpid" ] || bail_out "no swtpm for the victim"

# ---- hole 2: the tenant's launcher carries a hostile swtpm.
# Its state is provisioned first: agent A is the only state controller, and
# it is stopped while the tenant's launcher starts and the binary is planted.
vm_create tenant "{persistent: true}" "" Ready >/dev/null || bail_out "the tenant's TPMState is not Ready"
node_agent_stop a
launcher_start a virt-launcher-tenant-a tenant >/dev/null
lp=$(launcher_pid virt-launcher-tenant-a)
lroot=/proc/$lp/root
plant() {
  mkdir -p "$lroot/usr/lib/hostile" && mv "$lroot/usr/bin/swtpm" "$lroot/usr/lib/hostile/swtpm" &&
  install -m 0755 "$HOSTILE" "$lroot/usr/bin/swtpm" && install -m 0755 "$PEEK" "$lroot/usr/lib/hostile/peek" &&
  printf 'HOSTILE_PORT=%s\nVICTIM_PID=%s\nVICTIM_STATE=/var/lib/libvirt/swtpm/%s\nVICTIM_CTRL=/run/vtpm/%s.sock\n' \
    "$port" "$vpid" "$vuid" "$vuid" > "$lroot/etc/hostile.env"
}
ok "the tenant replaced its launcher's /usr/bin/swtpm by a hostile one" plant
node_agent_start a
if wait_until 90 swtpm_running virt-launcher-tenant-a; then pass "tenant VM: its TPM runs"
else fail "tenant VM: its TPM runs" "$(tail -5 "$(node_agent_log a)")" "nodeState: $(tpmstate_field tenant .status.nodeState)"; fi
tuid=$(vm_uid tenant)
tpid=$(rn_swtpm_pid "$tuid" | head -1)

record=$lroot/tmp/hostile-swtpm.out
if [ -e "$record" ]; then
  fail "the agent never executes the launcher's swtpm" "the hostile swtpm ran and recorded:" "$(cat "$record")"
  rec=$(cat "$record")
else
  pass "the agent never executes the launcher's swtpm"
  # What a compromised swtpm would reach: the same script, in exactly the
  # running swtpm's namespaces, root, uid and gid, with no capabilities.
  suid=$(awk '/^Uid:/ { print $2 }' "/proc/$tpid/status") sgid=$(awk '/^Gid:/ { print $2 }' "/proc/$tpid/status")
  rec=$(HOSTILE_OUT=- HOSTILE_PORT=$port VICTIM_PID=$vpid VICTIM_STATE=/var/lib/libvirt/swtpm/$vuid \
        VICTIM_CTRL=/run/vtpm/$vuid.sock nsenter -t "$tpid" -m -n -i -u -p -S "$suid" -G "$sgid" -- \
        /bin/bash -s < "$HOSTILE" 2>&1)
  # Its helper, with swtpm's PID, network, IPC and UTS namespaces and uid (from
  # our filesystem: the sandbox has no place for it).
  rec+=$'\n'$(nsenter -t "$tpid" -n -i -u -p -S "$suid" -G "$sgid" -- "$PEEK" "$vpid" 2>&1)
  diag "the hostile script run as the tenant's swtpm (nsenter -t $tpid, uid $suid):" "$rec"
fi
field() { printf '%s\n' "$rec" | sed -n "s/^$1: //p" | head -1; }

# Which binary serves the tenant: the agent's (its root's /usr/bin/swtpm) or the launcher's.
exe_id() { stat -L -c '%d:%i' "$1" 2>/dev/null; }
agent_swtpm=$(exe_id "/proc/$(agent_pid)/root/usr/bin/swtpm")
is "$(exe_id "/proc/$tpid/exe")" "$agent_swtpm" "the tenant's swtpm is the agent's binary, not one from the launcher's filesystem"

is "$(field node_listener)" unreachable "swtpm cannot reach a listener on 127.0.0.1 in the node's network namespace"
net=$(field netns)
if [ -n "$net" ] && [ "$net" != "$(readlink "/proc/$(agent_pid)/ns/net")" ] && [ "$net" != "$(readlink "/proc/$lp/ns/net")" ]; then
  pass "swtpm has a network namespace of its own (neither the node's nor the launcher's)"
else fail "swtpm has a network namespace of its own (neither the node's nor the launcher's)" "swtpm: $net" \
  "agent: $(readlink "/proc/$(agent_pid)/ns/net")" "launcher: $(readlink "/proc/$lp/ns/net")"; fi
is "$(field victim_visible)/$(field victim_signal)" no/no "swtpm cannot see or signal another VM's swtpm"
is "$(field victim_state_list)/$(field victim_state_read_bytes)" denied/0 "swtpm cannot list or read another VM's state (its /proc/<pid>/root)"
is "$(field victim_ctrl_connect)" no "swtpm cannot connect to another VM's control socket"
is "$(field victim_ptrace | cut -d" " -f1)/$(field victim_mem_read_bytes)" "no/0" "swtpm cannot ptrace or read another VM's swtpm memory (where its key is)"
diag "own key on fd 5: $(field own_key_fd_bytes) bytes (its own VM's key only)"

# What the kernel says about the running swtpm.
st() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
vu=$(st "$vpid" Uid) tu=$(st "$tpid" Uid)
tss=$(id -u tss)
if [ -n "$tu" ] && [ "$tu" != 0 ] && [ "$tu" != "$tss" ] && [ "$tu" != "$vu" ]; then
  pass "each VM's swtpm has its own uid (tenant $tu, victim $vu; not root, not $tss)"
else fail "each VM's swtpm has its own uid (tenant $tu, victim $vu; not root, not $tss)"; fi
is "$(st "$tpid" CapEff)/$(st "$tpid" NoNewPrivs)/$(st "$tpid" Seccomp)" 0000000000000000/1/2 \
  "swtpm: no capabilities, no_new_privs, a seccomp filter"
same_ns() { [ "$(readlink "/proc/$1/ns/$3")" = "$(readlink "/proc/$2/ns/$3")" ]; }
shared=
for t in pid ipc uts mnt; do same_ns "$tpid" "$(agent_pid)" "$t" && shared="$shared $t"; done
is "${shared:-none}" none "swtpm shares no pid, ipc, uts or mount namespace with the agent"
ok "the victim's TPM still answers" swtpm_running virt-launcher-victim-a

# ---- hole 10: the agent in a cgroup and cgroup namespace of its own.
cg_name=vtpm-e2e-59-$$
cg_dirs=()
for h in /sys/fs/cgroup/*/; do
  h=${h%/}
  [ -e "$h/cgroup.procs" ] || continue
  name=$(basename "$h")
  case $name in unified) line=$(grep '^0::' /proc/self/cgroup) ;; systemd) line=$(grep ':name=systemd:' /proc/self/cgroup) ;;
    *) line=$(grep -E "^[0-9]+:([^:]*,)?$name(,[^:]*)?:" /proc/self/cgroup) ;; esac
  d=$h${line##*:}/$cg_name
  d=${d//\/\//\/}
  mkdir -p "$d" || continue
  if [ "$name" = cpuset ]; then cat "$(dirname "$d")/cpuset.cpus" > "$d/cpuset.cpus"; cat "$(dirname "$d")/cpuset.mems" > "$d/cpuset.mems"; fi
  cg_dirs+=("$d")
done
cg_cleanup() { local d; for d in "${cg_dirs[@]}"; do rmdir "$d" 2>/dev/null; done; }
at_exit cg_cleanup
# Wrappers (they exec the agent): into that cgroup, then a private cgroup
# namespace; the second also mounts cgroup2 afresh in a mount namespace of its
# own (a slave: the kubelet's mounts still arrive), as a container's runtime would.
join=$NODE_TOP/cg-join.sh own=$NODE_TOP/cg-own.sh
printf '#!/bin/sh\nfor d in %s; do echo $$ > "$d/cgroup.procs" || exit 1; done\nexec unshare -C "$@"\n' "${cg_dirs[*]}" > "$join"
printf '#!/bin/sh\nfor d in %s; do echo $$ > "$d/cgroup.procs" || exit 1; done\nexec unshare -C -m --propagation slave sh -c %s sh "$@"\n' \
  "${cg_dirs[*]}" "'umount -l /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified && exec \"\$@\"'" > "$own"
chmod 755 "$join" "$own"

node_agent_stop a
node_agent_wrap a "$join"
ok "agent A restarted in its own cgroup and a private cgroup namespace" node_agent_start a
vm_create cg "{persistent: true}" "" Ready >/dev/null
launcher_start a virt-launcher-cg-a cg >/dev/null
ok "VM cg: swtpm runs" wait_until 90 swtpm_running virt-launcher-cg-a
cpid=$(rn_swtpm_pid "$(vm_uid cg)" | head -1)
clp=$(launcher_pid virt-launcher-cg-a)
# Read from here (the host's cgroup namespace): absolute paths.
if [ -n "$cpid" ] && diff <(sort "/proc/$clp/cgroup") <(sort "/proc/$cpid/cgroup") >/dev/null; then
  pass "swtpm is in its launcher's cgroup in every hierarchy"
else fail "swtpm is in its launcher's cgroup in every hierarchy" "launcher:" "$(sort "/proc/$clp/cgroup")" \
  "swtpm:" "$(sort "/proc/$cpid/cgroup" 2>&1)"; fi
# The runtime replacing the agent's container kills every process in its cgroup.
kill_agent_cgroup() {
  local d p
  for d in "${cg_dirs[@]}"; do for p in $(cat "$d/cgroup.procs"); do kill -KILL "$p" 2>/dev/null; done; done
  _stop agent-a KILL 10
}
kill_agent_cgroup
ok "the VM's TPM survives every process of the agent's cgroup being killed" swtpm_running virt-launcher-cg-a

# An agent that cannot reach the launcher's cgroup: its cgroup2 mount is its
# own namespace's, showing its own subtree only.
node_agent_wrap a "$own"
ok "agent A restarted: its cgroup2 mount shows only its own cgroup" node_agent_start a
# (A non-persistent TPM: its scratch state is the agent's own mount, so this
# does not depend on the kubelet's mounts reaching the agent's namespace.)
vm_create cgx "{}" "" Ephemeral >/dev/null
launcher_start a virt-launcher-cgx-a cgx >/dev/null
if wait_reason 60 cgx SwtpmCgroupUnavailable; then pass "the start is refused (SwtpmCgroupUnavailable)"
else fail "the start is refused (SwtpmCgroupUnavailable)" "nodeState: $(tpmstate_field cgx .status.nodeState)"; fi
like "$(k get events --field-selector involvedObject.name=cgx,reason=SwtpmCgroupUnavailable -o jsonpath='{.items[0].message}')" \
  "cgroup" "a Warning event on the VM says why"
is "$(rn_swtpm_pid "$(vm_uid cgx)")" "" "no swtpm runs for it (none left in the agent's cgroup)"

# ---- the end: everything goes with its launcher.
node_agent_stop a
node_agent_wrap a
node_agent_start a
for p in victim tenant cg cgx; do launcher_stop "virt-launcher-$p-a"; done
node_no_leftovers
agent_sanitizer_check
