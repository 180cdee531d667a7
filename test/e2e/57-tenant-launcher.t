#!/usr/bin/env bash
# Tenant-proof launchers (holes 1 and 11): what a tenant's pod can do to make
# the agent work for the wrong process, on the real nodes.
#  (a) a hostile pod in another namespace takes over a victim launcher's
#      socket (the old shared socket directory: removes <pod-uid>.sock and
#      listens in its place): the victim's state must never be mounted into
#      the impostor, and the victim's vTPM runs in the victim's own pod;
#  (b) a launcher whose socket is a symlink to a host socket: refused
#      (LauncherIdentityRefused), nothing mounted into the host process;
#  (c) a real socket (not a symlink) in the launcher's socket directory whose
#      listener is not in the launcher's pod: refused the same way;
#  (d) an attachment pod pre-created by the tenant (vtpm-attach-<uid> with a
#      memory-backed volume named like the PV): refused
#      (AttachmentPodForeign), swtpm never runs on the tenant's tmpfs;
#  (e) a launcher replaces its swtpm control socket with a symlink to another
#      VM's control socket before teardown: the other VM's swtpm keeps running;
#  (f) the release binary carries no crash-injection hook.
# Every attack is planted in ways that work against both socket layouts (the
# shared hostPath directory of old, the pod's own emptyDir of KubeVirt's
# virt-handler), so this file ran unchanged against the code before the fix.
. "$(dirname "$0")/lib.sh"
setup_namespace e2e-tenant-launcher
. "$(dirname "$0")/lib-node.sh"
plan 31

EVIL=$NS-evil
kubectl create namespace "$EVIL" >/dev/null || bail_out "cannot create namespace $EVIL"
at_exit "kubectl delete namespace $EVIL --wait=false >/dev/null 2>&1"
N1=$(node_name a) N1DIR=$(node_host_dir a)
STATE_IN_NS=/var/lib/libvirt/swtpm

# hostile_pod NS NAME SCRIPT [LABELS]: a pod of the launcher image on node-1
# running SCRIPT (sh), with the pod's own emptyDir "sockets" where KubeVirt's
# launcher has it and the old shared socket directory (hostPath) at /shared.
hostile_pod() {
  local ns=$1 name=$2 script=$3 labels=${4:-"{app: hostile}"}
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: $labels
spec:
  nodeSelector: {kubernetes.io/hostname: $N1}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: compute
    image: $LAUNCHER_IMAGE
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
$(printf '%s\n' "$script" | sed 's/^/      /')
    env: [{name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}]
    volumeMounts: [{name: sockets, mountPath: /var/run/kubevirt/sockets}, {name: shared, mountPath: /shared}]
  volumes:
  - {name: sockets, emptyDir: {}}
  - {name: shared, hostPath: {path: /var/run/kubevirt/sockets, type: DirectoryOrCreate}}
EOF
}
_pod_running() { [ "$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; }
_planted() { local p; p=$(rn_container_pid "$1" "$2") && [ -e "/proc/$p/root/tmp/planted" ]; }
_phase_is() { [ "$(tpmstate_field "$1" .status.nodeState.phase)" = "$2" ]; }
_warned() { [ -n "$(events_for "$1" "$2" | grep '^Warning ')" ]; }
_no_swtpm_for() { [ -z "$(swtpm_pids "$1")" ]; }
# swtpm processes of VM whose mount namespace is that of pid $2.
_swtpm_in_ns_of() {
  local p want; want=$(readlink "/proc/$2/ns/mnt")
  for p in $(swtpm_pids "$1"); do [ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" != "$want" ] || echo "$p"; done
}
# A host process (no pod, the host's cgroups) listening on socket $1, in a
# throwaway mount namespace whose /run and /var/lib are private tmpfs: what
# an agent fooled into "its" launcher mounts there lands nowhere else.
HOST_LISTENERS=()
host_listener() {
  local sock=$1 pidfile=$NODE_TOP/host-listener.$RANDOM
  rm -f "$sock"
  # From the socket's directory: a kubelet path is longer than sun_path allows.
  unshare -m --propagation private -- sh -c 'mount -t tmpfs hostile /run && mount -t tmpfs hostile /var/lib &&
    echo $$ > "$1" && cd "$2" && exec socat UNIX-LISTEN:"$3",fork SYSTEM:"echo host"' sh "$pidfile" \
    "$(dirname "$sock")" "$(basename "$sock")" >/dev/null 2>&1 &
  wait_until 10 test -S "$sock" || return 1
  HOST_LISTENER=$(cat "$pidfile")
  HOST_LISTENERS+=("$HOST_LISTENER")
}
at_exit 'for p in "${HOST_LISTENERS[@]}"; do kill "$p" 2>/dev/null; done'

node_testbed_up
ok "node A up ($N1)" node_up a

# ---- (a) a hostile pod takes over the victim launcher's socket ----
vm_create victim "{persistent: true}" "" Ready
launcher_start a virt-launcher-victim-1 victim >/dev/null
ok "(a) the victim's first boot provisions its state (key and TPM state on its PVC)" wait_until 90 swtpm_running virt-launcher-victim-1
launcher_stop virt-launcher-victim-1
wait_until 30 _no_swtpm_for victim
# The impostor is in place before the agent looks: the agent is stopped
# while the victim's next launcher starts and the hostile pod strikes.
node_down a
victim_uid=$(launcher_start a virt-launcher-victim-2 victim)
hostile_pod "$EVIL" impostor "rm -f /shared/$victim_uid.sock
socat UNIX-LISTEN:/shared/$victim_uid.sock,fork SYSTEM:'echo pong' &
for i in \$(seq 100); do [ -S /shared/$victim_uid.sock ] && break; sleep 0.1; done
touch /tmp/planted
wait"
ok "(a) the impostor (another namespace) listens in place of the victim's socket in the shared directory" \
  wait_until 90 _planted "$EVIL" impostor
ipid=$(rn_container_pid "$EVIL" impostor)
ok "node A's agent started again" node_up a
wait_until 90 _phase_is victim Running
vmuid=$(vm_uid victim)
leaked=$(ls -la "/proc/$ipid/root$STATE_IN_NS/$vmuid/" 2>/dev/null)
if [ -e "/proc/$ipid/root$STATE_IN_NS/$vmuid/tpm2-00.permall" ] || [ -e "/proc/$ipid/root$STATE_IN_NS/$vmuid/vtpm-key.json" ]; then
  fail "(a) the victim's state is never mounted into the impostor's mount namespace" \
    "ATTACK WORKED: the impostor ($EVIL/impostor, pid $ipid) sees $STATE_IN_NS/$vmuid:" "$leaked"
else
  pass "(a) the victim's state is never mounted into the impostor's mount namespace"
fi
in_impostor=$(_swtpm_in_ns_of victim "$ipid")
if [ -n "$in_impostor" ]; then
  fail "(a) no swtpm with the victim's key runs in the impostor's mount namespace" \
    "ATTACK WORKED: swtpm $(ps -o pid=,args= -p "$in_impostor" | head -c 300)"
else
  pass "(a) no swtpm with the victim's key runs in the impostor's mount namespace"
fi
ok "(a) the victim's vTPM runs in the victim's own launcher" wait_until 30 swtpm_running virt-launcher-victim-2
kubectl -n "$EVIL" delete pod impostor --wait=true --timeout=60s >/dev/null 2>&1
launcher_stop virt-launcher-victim-2
wait_until 30 _no_swtpm_for victim

# ---- (b) a launcher whose socket is a symlink to a host socket ----
host_listener "$NODE_TOP/host.sock" || diag "the host listener did not start"
hpid=$HOST_LISTENER
vm_create evil "{}"
hostile_pod "$NS" virt-launcher-evil "ln -sf $NODE_TOP/host.sock /shared/\$POD_UID.sock
ln -sf $NODE_TOP/host.sock /var/run/kubevirt/sockets/launcher-sock
touch /tmp/planted
exec sleep infinity" "{kubevirt.io: virt-launcher, vm.kubevirt.io/name: evil}"
ok "(b) the launcher's socket is a symlink to a host process's socket" wait_until 90 _planted "$NS" virt-launcher-evil
if wait_until 60 _warned evil LauncherIdentityRefused; then
  pass "(b) refused: a Warning event LauncherIdentityRefused on the VM"
else
  fail "(b) refused: a Warning event LauncherIdentityRefused on the VM" "nodeState: $(tpmstate_field evil .status.nodeState)" \
    "events: $(events_for evil | tr '\n' ';')"
fi
sleep 3 # a refusal is final only if it stays so
mounted=$(grep -F " $STATE_IN_NS/$(vm_uid evil) " "/proc/$hpid/mountinfo")
if [ -n "$mounted" ]; then
  fail "(b) nothing is mounted into the host process's mount namespace" "ATTACK WORKED: /proc/$hpid/mountinfo:" "$mounted"
else pass "(b) nothing is mounted into the host process's mount namespace"; fi
if [ -n "$(_swtpm_in_ns_of evil "$hpid")" ]; then
  fail "(b) no swtpm runs in the host process's mount namespace" \
    "ATTACK WORKED: $(for p in $(_swtpm_in_ns_of evil "$hpid"); do ps -o pid=,args= -p "$p"; done | head -c 400)"
else pass "(b) no swtpm runs in the host process's mount namespace"; fi
k delete pod virt-launcher-evil --wait=true --timeout=60s >/dev/null 2>&1
wait_until 30 _no_swtpm_for evil

# ---- (c) a real socket in the launcher's directory, listened on outside its pod ----
vm_create evil2 "{}"
hostile_pod "$NS" virt-launcher-evil2 "touch /tmp/planted
exec sleep infinity" "{kubevirt.io: virt-launcher, vm.kubevirt.io/name: evil2}"
wait_until 90 _planted "$NS" virt-launcher-evil2
e2uid=$(k get pod virt-launcher-evil2 -o jsonpath='{.metadata.uid}')
# Both layouts: the pod's emptyDir as the kubelet has it, and the shared directory.
h2pid=0 h3pid=0
host_listener "$N1DIR/kubelet/pods/$e2uid/volumes/kubernetes.io~empty-dir/sockets/launcher-sock" && h2pid=$HOST_LISTENER
host_listener "$N1DIR/kubevirt/sockets/$e2uid.sock" && h3pid=$HOST_LISTENER
ok "(c) the launcher's socket is a real socket whose listener is a host process" \
  test -S "$N1DIR/kubelet/pods/$e2uid/volumes/kubernetes.io~empty-dir/sockets/launcher-sock"
if wait_until 60 _warned evil2 LauncherIdentityRefused; then
  pass "(c) refused: a Warning event LauncherIdentityRefused on the VM"
else
  fail "(c) refused: a Warning event LauncherIdentityRefused on the VM" "nodeState: $(tpmstate_field evil2 .status.nodeState)"
fi
sleep 3
mounted=$(grep -hF " $STATE_IN_NS/$(vm_uid evil2) " "/proc/$h2pid/mountinfo" "/proc/$h3pid/mountinfo" 2>/dev/null)
if [ -n "$mounted" ]; then
  fail "(c) nothing is mounted into the listener's mount namespace" "ATTACK WORKED:" "$mounted"
else pass "(c) nothing is mounted into the listener's mount namespace"; fi
swtpm_count_is evil2 0 "(c) no swtpm runs for that VM"
k delete pod virt-launcher-evil2 --wait=true --timeout=60s >/dev/null 2>&1
wait_until 30 _no_swtpm_for evil2

# ---- (d) an attachment pod pre-created by the tenant ----
vm_create att "{persistent: true}" "" Ready
pv=$(k get pvc "$(tpmstate_field att .status.pvcName)" -o jsonpath='{.spec.volumeName}')
node_down a
att_uid=$(launcher_start a virt-launcher-att att)
# What a tenant can write: the name, the labels and the owner the agent would
# use, and a memory-backed volume named like the PV (the kubelet publishes
# it at .../volumes/kubernetes.io~empty-dir/<pv>, a tmpfs mount point).
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: vtpm-attach-$att_uid
  labels: {vtpm-agent.io/attachment-for: "$att_uid", app.kubernetes.io/managed-by: vtpm-agent}
  ownerReferences: [{apiVersion: v1, kind: Pod, name: virt-launcher-att, uid: "$att_uid", controller: true}]
spec:
  nodeName: $N1
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: hold, image: registry.k8s.io/pause:3.10, imagePullPolicy: IfNotPresent, volumeMounts: [{name: "$pv", mountPath: /state}]}
  volumes:
  - {name: "$pv", emptyDir: {medium: Memory}}
EOF
ok "(d) the tenant's pod vtpm-attach-<launcher uid> runs first, with a tmpfs named like the PV" \
  wait_until 90 _pod_running "$NS" "vtpm-attach-$att_uid"
ok "node A's agent started again" node_up a
if wait_until 60 _warned att AttachmentPodForeign; then
  pass "(d) refused: a Warning event AttachmentPodForeign on the VM"
else
  fail "(d) refused: a Warning event AttachmentPodForeign on the VM" "nodeState: $(tpmstate_field att .status.nodeState)"
fi
sleep 3
apid=$(launcher_pid virt-launcher-att)
fstype=$(awk -v m="$STATE_IN_NS/$(vm_uid att)" '$5 == m { for (i = 7; $i != "-"; i++); print $(i + 1) }' "/proc/$apid/mountinfo")
if [ "$fstype" = tmpfs ]; then
  fail "(d) the launcher's TPM state is never the tenant's tmpfs" \
    "ATTACK WORKED: $STATE_IN_NS/$(vm_uid att) in the launcher is $fstype; swtpm: $(swtpm_pids att | tr '\n' ' ')" \
    "the PVC holds: $(ls -A "$(vm_store_dir att)" | tr '\n' ' ')"
else pass "(d) the launcher's TPM state is never the tenant's tmpfs"; fi
swtpm_count_is att 0 "(d) no swtpm runs for the VM while the foreign attachment pod stands"
k delete pod "vtpm-attach-$att_uid" --wait=true --timeout=60s >/dev/null 2>&1
ok "(d) once the tenant's pod is gone, the agent's own attachment pod publishes the PVC and swtpm starts" \
  wait_until 90 swtpm_running virt-launcher-att
launcher_stop virt-launcher-att
wait_until 30 _no_swtpm_for att

# ---- (e) a launcher points its control socket at another VM's swtpm ----
vm_create c1 "{}"
vm_create c2 "{}"
launcher_start a virt-launcher-c1 c1 >/dev/null
ok "(e) VM c1's swtpm runs" wait_until 60 swtpm_running virt-launcher-c1
# c2's launcher holds on through its pod's deletion (TERM ignored, 30 s
# grace), so the agent's teardown finds its swtpm still running.
echo c2 > "$NODE_TOP/launchers/virt-launcher-c2"
rn_launcher_yaml virt-launcher-c2 c2 "$N1" |
  sed -e 's/terminationGracePeriodSeconds: .*/terminationGracePeriodSeconds: 30/' \
      -e "/imagePullPolicy: Never/a\\    command: [sh, -c, \"trap '' TERM; /usr/local/bin/launcher \& while :; do sleep 1; done\"]" |
  k apply -f - >/dev/null
ok "(e) VM c2's swtpm runs" wait_until 90 swtpm_running virt-launcher-c2
c1pid=$(swtpm_pids c1) c2pid=$(swtpm_pids c2)
c1uid=$(vm_uid c1) c2uid=$(vm_uid c2)
# What c2's launcher (root in its container) does: its swtpm's control socket
# becomes a symlink to c1's, through the host's /proc.
# Since swtpm's sandbox the directory is a read-only bind in the launcher,
# so the swap fails at its first step; the teardown checks below hold either
# way (on the code before the sandbox the swap succeeded and c1 was stopped).
swap=$(nsenter -t "$(launcher_pid virt-launcher-c2)" -m -- sh -c \
  "rm -f /run/vtpm/$c2uid.sock && ln -s /proc/$c1pid/root/run/vtpm/$c1uid.sock /run/vtpm/$c2uid.sock" 2>&1)
if [ -L "/proc/$c2pid/root/run/vtpm/$c2uid.sock" ]; then
  pass "(e) c2's control socket is now a symlink to c1's (the teardown must not follow it)"
elif [[ "$swap" == *"Read-only file system"* ]] && [ -S "/proc/$c2pid/root/run/vtpm/$c2uid.sock" ]; then
  pass "(e) c2's launcher cannot replace its control socket: the directory is a read-only bind"
else
  fail "(e) c2's control socket is either swapped or protected" "swap: $swap" \
    "$(ls -l "/proc/$c2pid/root/run/vtpm/" 2>&1)"
fi
k delete pod virt-launcher-c2 --wait=false >/dev/null
_gone() { [ ! -e "/proc/$1" ]; }
ok "(e) c2's launcher goes: its swtpm is stopped" wait_until 30 _gone "$c2pid"
if [ -e "/proc/$c1pid" ] && swtpm_running virt-launcher-c1; then
  pass "(e) c1's swtpm is untouched by c2's teardown (same process, still answering)"
else
  fail "(e) c1's swtpm is untouched by c2's teardown (same process, still answering)" \
    "ATTACK WORKED: c1's swtpm $c1pid is $( [ -e "/proc/$c1pid" ] && echo "alive but not answering" || echo gone)" \
    "$(grep -E 'swtpm (stopped|did not stop)' "$(node_agent_log a)" | tail -3)"
fi
launcher_stop virt-launcher-c1
# The test is over: end c2's 30 s grace now, as its expiry would (SIGKILL to
# the container's init, which takes its PID namespace with it). Looked up
# here, not before the delete: only a task containerd still lists as running.
c2launcher=$(launcher_pid virt-launcher-c2) && kill -KILL "$c2launcher" 2>/dev/null
k delete pod virt-launcher-c2 --wait=true --timeout=60s >/dev/null 2>&1

# ---- (f) the release binary has no crash-injection hook ----
REL=$E2E_TOP/build/vtpm-agent
if [ -x "$REL" ]; then
  hook=$( (nm "$REL" | grep -w keyrot_fault; strings "$REL" | grep -x VTPM_AGENT_FAULT) 2>&1)
  is "$hook" "" "(f) the release build has neither the hook (nm) nor its variable (strings)"
else
  skip "(f) no release build at $REL (make all)"
fi
# grep without -q: nm must not die of SIGPIPE (pipefail).
if nm "$AGENT_BIN" | grep -w keyrot_fault >/dev/null; then pass "(f) the test build (ASan) keeps the hook for suite 54"
else fail "(f) the test build (ASan) keeps the hook for suite 54"; fi

node_no_leftovers
