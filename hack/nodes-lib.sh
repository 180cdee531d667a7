# Shared shell helpers for real test-bed nodes (hack/nodes-up.sh, hack/nodes-down.sh):
# per node its own containerd (root, state, socket, runc root) and kubelet (root
# dir, name, client certificate), plus the kube-scheduler. Sourced after
# hack/testbed-lib.sh; nothing here starts anything when sourced.
#
# A node is a set of namespaces, as a machine would be: a holder process
# ("vtpm-node-ns:<dir>", a sleep) owns a mount, network and UTS namespace, and
# the node's containerd and kubelet (so every pod of the node) run inside them.
#   mount: the host's fixed paths a kubelet and the agent's DaemonSet use are
#          binds of the node's own directories (NL_NODE_PATHS), so manifests'
#          hostPaths (/var/lib/kubelet, /var/run/kubevirt/sockets, ...) mean
#          this node's, and nothing the kubelet mounts shows up on the host.
#   network: lo and eth0 ($NL_NET.N.2/24), a veth to the host ($NL_NET.N.1),
#          default route through it. hostNetwork pods (the agent) share it, so
#          two nodes' agents both listen on :9464. The API server is reached
#          as a pod reaches it: the `kubernetes` Service's ClusterIP:443, DNATed
#          in the node (what kube-proxy does) to the host side, and there (with
#          route_localnet on that veth only) to the API server on 127.0.0.1.
#          Other pods: on a bridge cni0 in the node (nl_pod_net N), whose first
#          address is their gateway; the host routes nl_pod_net N to node N.
#   uts:   the node's hostname is its name.
#
# Layout under $VTPM_RUN/nodes/ (exists only while or after nodes ran):
#   images.env            PAUSE_IMAGE=..., BUSYBOX_IMAGE=... (refs imported into every node;
#                         AGENT_IMAGE, AGENT_IMAGE_NEXT, LAUNCHER_IMAGE, LAUNCHER_LIBVIRT_IMAGE
#                         too with VTPM_NODES_AGENT_IMAGE=1)
#   created-host-dirs     fixed host paths nodes-up created (/run/containerd for the
#                         shims' sockets, /var/log/containers, /var/lib/kubelet): nodes-down removes them
#   node-N/containerd.sock, containerd/{config.toml,root,state,opt}, runc/ (runc --root),
#   node-N/kubelet/ (--root-dir), kubelet-config.yaml, kubelet-pki/, pod-logs/,
#   node-N/cni/net.d/ (a bridge inside the node), cni/ipam/, volume-plugins/
# Pids and logs: $TB_PIDS/node-N-{containerd,kubelet}.pid, kube-scheduler.pid; same names in $TB_LOGS.
# Cgroups: the kubelet passes no cgroup parent when cgroupsPerQOS is false, so
# containerd puts every container in /k8s.io/<container id> of each hierarchy
# (shared by all nodes and test beds); ours are known by their ids (nl_container_ids).
#
# Environment: VTPM_NODES (count; nodes are node-1..node-N), VTPM_SCHEDULER_PORT
# (default 10359), VTPM_NODE_NET (first two octets of the nodes' /24s, default
# 10.213; another test bed with nodes on this machine needs another).

NL_DIR=$VTPM_RUN/nodes
NL_SCHEDULER_PORT=${VTPM_SCHEDULER_PORT:-10359}
NL_NET=${VTPM_NODE_NET:-10.213}
NL_CNI_BIN=/usr/lib/cni
# SRC:PATH - the node's directory $NL_DIR/node-N/SRC is PATH inside the node.
# /run/kubevirt (KubeVirt's share directory, whose sockets/ the stand-in launchers
# use), /run/kubevirt-private, /run/kubevirt-libvirt-runtimes and
# /var/lib/kubevirt-node-labeller are virt-handler's hostPaths: one per node, as
# on a machine (two virt-handlers in one directory would take each other's VMs).
NL_NODE_PATHS="kubelet:/var/lib/kubelet kubevirt:/run/kubevirt agent-run:/run/vtpm-agent
  agent-lib:/var/lib/vtpm-agent log-containers:/var/log/containers pod-logs:/var/log/pods
  run-containerd:/run/containerd kubevirt-private:/run/kubevirt-private
  kubevirt-runtimes:/run/kubevirt-libvirt-runtimes kubevirt-labeller:/var/lib/kubevirt-node-labeller"

# A node with its own PID namespace (VTPM_NODES_PIDNS=1) has this as its init:
# hack/images/pause.c (reaps the orphans the namespace gets, exits on TERM).
NL_INIT=$NL_DIR/node-init
nl_name() { echo "node-$1"; }
nl_dir() { echo "$NL_DIR/node-$1"; }
nl_sock() { echo "$NL_DIR/node-$1/containerd.sock"; }
nl_ctr() { local n=$1; shift; "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" -n k8s.io "$@"; }
nl_ip() { echo "$NL_NET.$1.2"; }
nl_pod_net() { echo "$NL_NET.$((100 + $1)).0/24"; }  # pods' addresses on node N's bridge
nl_gw() { echo "$NL_NET.$1.1"; }
nl_veth() { echo "vt${TB_APISERVER_PORT}n$1"; }  # the host's end (at most 15 characters)
nl_iptables_tag() { echo "vtpm-testbed:$VTPM_RUN"; }
# nl_holder N: pid of node N's namespace holder, if it runs.
nl_holder() {
  local pid
  pid=$(cat "$TB_PIDS/node-$1-ns.pid" 2>/dev/null) && nl_is_ours "$pid" && echo "$pid"
}
# nl_has_pidns H: the node whose holder is H has a PID namespace of its own
# (VTPM_NODES_PIDNS=1, nodes-up.sh): its holder is that namespace's init.
nl_has_pidns() { [ "$(readlink "/proc/$1/ns/pid")" != "$(readlink /proc/self/ns/pid)" ]; }
# nl_enter_args H: nsenter's options to enter the node whose holder is H: its
# mount, network and UTS namespaces, and its PID namespace if it has one (its
# mount namespace has that namespace's /proc: a process outside it would read
# the wrong processes there). Entering a PID namespace makes nsenter fork.
nl_enter_args() {
  echo -t "$1" -m -n -u
  if nl_has_pidns "$1"; then echo -p; fi
}
# nl_in N CMD...: run CMD inside node N (its namespaces, as nl_enter_args).
nl_in() {
  local n=$1 h; shift
  h=$(nl_holder "$n") || { echo "nodes: node-$n has no namespace holder" >&2; return 1; }
  # shellcheck disable=SC2046 # options, one per word
  nsenter $(nl_enter_args "$h") -- "$@"
}
# nl_nsenter_child PID: into a PID namespace nsenter (PID) forks and waits:
# the process to keep (and to signal: nsenter forwards no signal) is its
# child, as the machine sees it. Waits up to 5 s for the fork.
nl_nsenter_child() {
  local child=
  for _ in $(seq 100); do
    child=$(cat "/proc/$1/task/$1/children" 2>/dev/null) && [ -n "$child" ] && { echo "${child%% *}"; return 0; }
    sleep 0.05
  done
  return 1
}
# nl_host_pid N PID: the machine's pid of node N's process PID (as node N's
# containerd reports it); PID itself when the node has no PID namespace. A
# pod's processes sit one namespace deeper (each pod has its own), so match
# PID at the node's level of NSpid (its holder's last), and the start time
# that node's own /proc gives for PID (another node may use the same pid).
nl_host_pid() {
  local h k t c
  h=$(nl_holder "$1") || return 1
  nl_has_pidns "$h" || { echo "$2"; return 0; }
  k=$(awk '/^NSpid:/ { print NF }' "/proc/$h/status") || return 1
  t=$(_nl_start_time "/proc/$h/root/proc/$2") || return 1
  for c in $(awk -v k="$k" -v want="$2" '/^NSpid:/ && NF >= k && $k == want { f = FILENAME; sub("/status$", "", f); print f }' \
               /proc/[0-9]*/status 2>/dev/null); do
    [ "$(_nl_start_time "$c")" = "$t" ] && { echo "${c#/proc/}"; return 0; }
  done
  return 1
}
# _nl_start_time /proc/PID: the process's start time (stat's 22nd field; after
# the command name, which may hold spaces, the 20th).
_nl_start_time() { local st; st=$(cat "$1/stat" 2>/dev/null) && [ -n "$st" ] && { st=${st##*) }; cut -d' ' -f20 <<<"$st"; }; }

# nl_nodes_present: node numbers with a directory (what nodes-down must clean),
# whatever VTPM_NODES says now.
nl_nodes_present() {
  local d
  for d in "$NL_DIR"/node-*; do [ -d "$d" ] && echo "${d##*/node-}"; done
  return 0
}

# nl_is_ours PID: PID runs containerd, its shim, ctr, runc, the kubelet, the
# scheduler or a node's namespace holder with this $VTPM_RUN on its command line.
nl_is_ours() {
  local pid=$1 exe cmd
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  case $exe in
    "$CONTAINERD_BIN"/*|"$RUNC_BIN"/*|"$K8S_BIN/kubelet"|"$K8S_BIN/kube-scheduler"|*/sleep|"$NL_INIT") ;;
    *) return 1 ;;
  esac
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $exe in */sleep) [[ $cmd == "vtpm-node-ns:$NL_DIR/"* ]]; return ;; esac
  case $cmd in *"$VTPM_RUN/"*) return 0 ;; esac
  return 1
}

nl_our_bin_pids() {
  local dir exe
  find /proc -mindepth 2 -maxdepth 2 -name exe -printf '%h %l\n' 2>/dev/null |
    while read -r dir exe; do
      case ${exe% (deleted)} in
        "$CONTAINERD_BIN"/*|"$RUNC_BIN"/*|"$K8S_BIN/kubelet"|"$K8S_BIN/kube-scheduler"|*/sleep)
          nl_is_ours "${dir#/proc/}" && echo "${dir#/proc/}" ;;
      esac
    done
  return 0
}

# nl_container_ids: ids of every container (pod sandboxes included) our nodes
# know of: containerd's list if it answers, plus runc's and the shims' state
# directories (a container whose containerd is gone). Take them before teardown.
nl_container_ids() {
  local n d
  for n in $(nl_nodes_present); do
    d=$(nl_dir "$n")
    timeout 10 "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" -n k8s.io containers ls -q 2>/dev/null
    ls "$d/runc/k8s.io" "$d/containerd/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null
  done | grep -E '^[0-9a-f]{64}$' | sort -u
  return 0
}

# nl_cgroup_dirs ID...: the cgroup directories of those containers, in any hierarchy.
nl_cgroup_dirs() {
  local id h
  for id in "$@"; do
    for h in /sys/fs/cgroup/*/; do
      [ -d "${h}k8s.io/$id" ] && find "${h}k8s.io/$id" -depth -type d 2>/dev/null
    done
  done
  return 0
}

# nl_cgroup_pids ID...: processes in those containers' cgroups, whatever their binary.
nl_cgroup_pids() {
  local d
  for d in $(nl_cgroup_dirs "$@"); do cat "$d/cgroup.procs" 2>/dev/null; done | sort -un
  return 0
}

# nl_mounts: mount points under $NL_DIR, deepest first (mountinfo field 5;
# octal escapes such as \040 stay as they are: our paths have none).
nl_mounts() {
  awk -v p="$NL_DIR/" 'index($5, p) == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2- | uniq
}

# nl_start NAME HEALTH_CMD BIN ARGS...: start BIN in its own session (pid file
# $TB_PIDS/NAME.pid, log $TB_LOGS/NAME.log) unless running, then wait until
# HEALTH_CMD (a shell command string) succeeds. With NL_IN=N, BIN runs inside
# node N's namespaces (nsenter execs it: the pid is BIN's).
nl_start() {
  local name=$1 health=$2 bin=$3 pid t0 deadline; shift 3
  mkdir -p "$TB_PIDS" "$TB_LOGS"
  if [ -s "$TB_PIDS/$name.pid" ] && pid=$(cat "$TB_PIDS/$name.pid") && nl_is_ours "$pid"; then
    :
  else
    echo "==== $(date -u +%FT%TZ) starting $name" >> "$TB_LOGS/$name.log"
    # fd 9 is the test bed's lock: the process must not inherit (and hold) it.
    local enter=() h=
    if [ -n "${NL_IN:-}" ]; then
      h=$(nl_holder "$NL_IN")
      # shellcheck disable=SC2207 # options, one per word
      enter=(nsenter $(nl_enter_args "$h") --)
    fi
    PATH=$CONTAINERD_BIN:$PATH setsid "${enter[@]}" "$bin" "$@" >> "$TB_LOGS/$name.log" 2>&1 < /dev/null 9>&- &
    pid=$!
    if [ -n "$h" ] && nl_has_pidns "$h"; then
      pid=$(nl_nsenter_child "$pid") || tb_die "$name: nsenter made no process in node $NL_IN"
    fi
    echo "$pid" > "$TB_PIDS/$name.pid"
  fi
  t0=$(tb_now_ms)
  deadline=$(( $(date +%s) + ${TB_START_TIMEOUT:-90} ))
  until eval "$health" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$TB_LOGS/$name.log" >&2 || true
      tb_die "$name exited while starting; see $TB_LOGS/$name.log"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$TB_LOGS/$name.log" >&2; tb_die "$name not healthy in time; see $TB_LOGS/$name.log"; }
    sleep 0.2
  done
  tb_log "$name healthy after $(( $(tb_now_ms) - t0 )) ms (pid $pid, log $TB_LOGS/$name.log)"
}

# nl_stop NAME [SECS]: TERM the process of NAME.pid, KILL after SECS (default 20).
nl_stop() {
  local name=$1 secs=${2:-20} pid deadline
  if [ -s "$TB_PIDS/$name.pid" ] && pid=$(cat "$TB_PIDS/$name.pid") && nl_is_ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + secs ))
    while nl_is_ours "$pid"; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        tb_log "$name (pid $pid) ignored TERM for ${secs}s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.1
    done
  fi
  rm -f "$TB_PIDS/$name.pid"
}
