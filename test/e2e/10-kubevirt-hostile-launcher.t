#!/usr/bin/env bash
# Issue 21, acceptance 5 (a hostile launcher): suite 59's attack on real
# KubeVirt launchers, the agent installed as shipped with its Plugin.
# A victim VM runs on node-1. The tenant's VM starts there while no agent
# runs on node-1 (the DaemonSet kept off it): virt-handler waits at the
# PreVMStart hook, and meanwhile the tenant replaces /usr/bin/swtpm in its
# real virt-launcher (through /proc/<compute>/root: what a compromised
# launcher image, or a guest escaped into it as root, can do) by
# test/e2e/hostile-swtpm.sh. The agent comes back; the VM must start on the
# agent's own swtpm, never the launcher's. Then whatever runs as that VM's
# swtpm (the same script in exactly the running swtpm's namespaces, root,
# uid and gid: a swtpm compromised through its guest) must not reach the
# node's network, the victim's swtpm (its /proc, state, control socket,
# memory, signals) or any privilege.
. "$(dirname "$0")/lib.sh"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
. "$E2E_TOP/test/e2e/lib-realnode.sh"
require_agent_on_kubevirt
for b in socat cc; do command -v "$b" >/dev/null || skip_all "$b missing"; done
plan 19
setup_namespace
virtctl() { "$KUBEVIRT_BIN/virtctl" -n "$NS" "$@"; }
n1=$(nl_name 1)
HOSTILE=$E2E_TOP/test/e2e/hostile-swtpm.sh
PEEK=$(mktemp -d /tmp/vtpm-e2e-peek.XXXXXX)/peek # where swtpm's uid can enter ($VTPM_RUN is 0700)
at_exit "rm -rf '${PEEK%/peek}'"
chmod 0755 "${PEEK%/peek}"
cc -static -O2 -o "$PEEK" "$E2E_TOP/test/e2e/hostile-peek.c" || bail_out "cannot build the hostile helper"
rn_agent_on_kubevirt_up 10h

# A listener only the node itself should reach: 127.0.0.1 in node-1's
# network namespace (the agent's: the DaemonSet runs with hostNetwork).
port=$(free_port) || bail_out "no free TCP port"
nl_in 1 socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:'echo node-only-banner' >/dev/null 2>&1 &
listener=$!
at_exit "pkill -f 'TCP-LISTEN:$port,' 2>/dev/null; kill $listener 2>/dev/null"
_listening() { nl_in 1 timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -n1 <&3" 2>/dev/null | grep -q node-only; }
wait_until 10 _listening || bail_out "the node-only listener on 127.0.0.1:$port in $n1 does not answer"

# compute_pid POD: the launcher's compute container, as the machine sees it.
compute_pid() {
  local id pid
  id=$(k get pod "$1" -o jsonpath='{.status.containerStatuses[?(@.name=="compute")].containerID}')
  id=${id#containerd://}
  pid=$(nl_ctr 1 tasks ls 2>/dev/null | awk -v id="$id" '$1 == id && $3 == "RUNNING" { print $2 }' | grep .) &&
    nl_host_pid 1 "$pid"
}
launcher_of() { rn_vm_launcher "$NS" "$1" | sed 's|^pod/||'; }
vm_uid_of() { k get vm "$1" -o jsonpath='{.metadata.uid}'; }

# ---- the victim: another VM on node-1, its TPM running ----
rn_guest_vm "$NS" victim "$n1" "console=ttyS0 quiet tpmguest.stay=1"
virtctl start victim >/dev/null
ok "victim VM runs on $n1 (its guest sees the TPM)" wait_until 300 rn_vm_said "$NS" victim 'tpm2 present'
vuid=$(vm_uid_of victim)
vpid=$(rn_swtpm_pid "$vuid" | head -1)
[ -n "$vpid" ] || bail_out "no swtpm for the victim"

# ---- no agent on node-1 while the tenant's VM starts ----
no_agent_on_n1='{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"NotIn","values":["'$n1'"]}]}]}}}}}}}'
kubectl -n "$RN_NS" patch ds vtpm-agent --type merge -p "$no_agent_on_n1" >/dev/null
_no_agent_n1() { ! rn_agent_pod "$n1" >/dev/null 2>&1; }
ok "the agent's DaemonSet kept off $n1 (its pod there gone)" wait_until 120 _no_agent_n1
rn_guest_vm "$NS" tenant "$n1" "console=ttyS0 quiet tpmguest.stay=1"
virtctl start tenant >/dev/null
_compute_up() { local p; p=$(launcher_of tenant) && [ -n "$p" ] && compute_pid "$p" >/dev/null; }
ok "the tenant's virt-launcher runs on $n1, its VM held at the PreVMStart hook" wait_until 180 _compute_up
lp=$(compute_pid "$(launcher_of tenant)")
lroot=/proc/$lp/root
vsock=/run/vtpm/$vuid.sock
plant() {
  [ -x "$lroot/usr/bin/swtpm" ] || { echo "the launcher has no /usr/bin/swtpm"; return 1; }
  mkdir -p "$lroot/usr/lib/hostile" && mv "$lroot/usr/bin/swtpm" "$lroot/usr/lib/hostile/swtpm" &&
  install -m 0755 "$HOSTILE" "$lroot/usr/bin/swtpm" && install -m 0755 "$PEEK" "$lroot/usr/lib/hostile/peek" &&
  printf 'HOSTILE_PORT=%s\nVICTIM_PID=%s\nVICTIM_STATE=/var/lib/libvirt/swtpm/%s\nVICTIM_CTRL=%s\n' \
    "$port" "$vpid" "$vuid" "$vsock" > "$lroot/etc/hostile.env"
}
ok "the tenant replaced its real launcher's /usr/bin/swtpm by a hostile one" plant
if rn_vm_said "$NS" tenant 'tpm2'; then fail "no guest runs before the agent answers" "$(rn_vm_console "$NS" tenant | head -3)"
else pass "no guest runs before the agent answers"; fi
kubectl -n "$RN_NS" patch ds vtpm-agent --type json -p '[{"op":"remove","path":"/spec/template/spec/affinity"}]' >/dev/null
ok "the agent is back on $n1" rn_wait 180 rn_agent_pod "$n1"
if wait_until 300 rn_vm_said "$NS" tenant 'tpm2 present'; then pass "tenant VM: it starts, its guest sees a TPM"
else fail "tenant VM: it starts, its guest sees a TPM" "VMI: $(k get vmi tenant -o jsonpath='{.status.phase}')" \
  "nodeState: $(k get tpmstate tenant -o jsonpath='{.status.nodeState}')"; fi
tuid=$(vm_uid_of tenant)
tpid=$(rn_swtpm_pid "$tuid" | head -1)
[ -n "$tpid" ] || bail_out "no swtpm for the tenant's VM"

# The launcher's own programs may run its swtpm (libvirt in the launcher
# probes it: `swtpm socket --print-capabilities`); that is the launcher
# running its own code as itself. The agent must never run it: no run as
# another user, none with a key.
record=$lroot/tmp/hostile-swtpm.out
luid=$(awk '/^Uid:/ { print $2 }' "/proc/$lp/status")
runs=$(grep -c '^ran: ' "$record" 2>/dev/null)
[ -z "$runs" ] || [ "$runs" = 0 ] || diag "the launcher's swtpm ran $runs time(s), as:" "$(grep -E '^(id|args|parent|own_key_fd_bytes): ' "$record")"
if [ "${runs:-0}" = 0 ] || { [ -z "$(grep '^id: ' "$record" | grep -vx "id: $luid:[0-9]*")" ] &&
     [ -z "$(grep '^own_key_fd_bytes: ' "$record" | grep -vx 'own_key_fd_bytes: none')" ] &&
     ! grep -q '^args: .*--key' "$record"; }; then
  pass "the agent never executes the launcher's swtpm (it ran only as the launcher's own uid $luid, with no key)"
else fail "the agent never executes the launcher's swtpm" "the hostile swtpm recorded:" "$(cat "$record")"; fi
apid=$(rn_container_pid "$RN_NS" "$(rn_agent_pod "$n1")")
exe_id() { stat -L -c '%d:%i' "$1" 2>/dev/null; }
is "$(exe_id "/proc/$tpid/exe")" "$(exe_id "/proc/$apid/root/usr/bin/swtpm")" \
  "the tenant's swtpm is the agent's binary, not one from the launcher's filesystem"

# What a compromised swtpm would reach: the script in exactly the running
# swtpm's namespaces, root, uid and gid, with no capabilities.
suid=$(awk '/^Uid:/ { print $2 }' "/proc/$tpid/status") sgid=$(awk '/^Gid:/ { print $2 }' "/proc/$tpid/status")
rec=$(HOSTILE_OUT=- HOSTILE_PORT=$port VICTIM_PID=$vpid VICTIM_STATE=/var/lib/libvirt/swtpm/$vuid \
      VICTIM_CTRL=$vsock nsenter -t "$tpid" -m -n -i -u -p -S "$suid" -G "$sgid" -- /bin/bash -s < "$HOSTILE" 2>&1)
rec+=$'\n'$(nsenter -t "$tpid" -n -i -u -p -S "$suid" -G "$sgid" -- "$PEEK" "$vpid" 2>&1)
diag "the hostile script run as the tenant's swtpm in a real launcher (nsenter -t $tpid, uid $suid):" "$rec"
field() { printf '%s\n' "$rec" | sed -n "s/^$1: //p" | head -1; }
is "$(field node_listener)" unreachable "swtpm cannot reach a listener on 127.0.0.1 in the node's network namespace"
is "$(field victim_visible)/$(field victim_signal)" no/no "swtpm cannot see or signal the victim's swtpm"
is "$(field victim_state_list)/$(field victim_state_read_bytes)" denied/0 "swtpm cannot list or read the victim's state (its /proc/<pid>/root)"
is "$(field victim_ctrl_connect)" no "swtpm cannot connect to the victim's control socket"
is "$(field victim_ptrace | cut -d" " -f1)/$(field victim_mem_read_bytes)" "no/0" "swtpm cannot ptrace or read the victim's swtpm memory (where its key is)"
st() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
vu=$(st "$vpid" Uid) tu=$(st "$tpid" Uid)
if [ -n "$tu" ] && [ "$tu" != 0 ] && [ "$tu" != 107 ] && [ "$tu" != "$vu" ]; then
  pass "each VM's swtpm has its own uid (tenant $tu, victim $vu; not root, not the launcher's 107)"
else fail "each VM's swtpm has its own uid (tenant $tu, victim $vu; not root, not the launcher's 107)"; fi
is "$(st "$tpid" CapEff)/$(st "$tpid" NoNewPrivs)/$(st "$tpid" Seccomp)" 0000000000000000/1/2 \
  "swtpm: no capabilities, no_new_privs, a seccomp filter"
ok "the victim's VM still runs on its TPM (VMI Running, its swtpm the same process)" \
  sh -c "[ -e /proc/$vpid ] && [ \"\$(kubectl -n $NS get vmi victim -o jsonpath='{.status.phase}')\" = Running ]"
virtctl stop tenant >/dev/null
virtctl stop victim >/dev/null
wait_until 180 rn_vmi_gone "$NS" tenant
wait_until 180 rn_vmi_gone "$NS" victim
