# Shared shell helpers for real test-bed nodes (hack/nodes-up.sh, hack/nodes-down.sh):
# per node its own containerd (root, state, socket, runc root) and kubelet (root
# dir, ports, name, client certificate), plus the kube-scheduler. Sourced after
# hack/testbed-lib.sh; nothing here starts anything when sourced.
#
# Layout under $VTPM_RUN/nodes/ (exists only while or after nodes ran):
#   images.env            PAUSE_IMAGE=..., BUSYBOX_IMAGE=... (refs imported into every node;
#                         AGENT_IMAGE=... too with VTPM_NODES_AGENT_IMAGE=1)
#   created-host-dirs     fixed host paths nodes-up created (/run/containerd for the
#                         shims' sockets, /var/log/containers, /var/lib/kubelet): nodes-down removes them
#   node-N/containerd.sock, containerd/{config.toml,root,state,opt}, runc/ (runc --root),
#   node-N/kubelet/ (--root-dir), kubelet-config.yaml, kubelet-pki/, pod-logs/,
#   node-N/cni/net.d/ (loopback only), volume-plugins/
# Pids and logs: $TB_PIDS/node-N-{containerd,kubelet}.pid, kube-scheduler.pid; same names in $TB_LOGS.
# Cgroups: the kubelet passes no cgroup parent when cgroupsPerQOS is false, so
# containerd puts every container in /k8s.io/<container id> of each hierarchy
# (shared by all nodes and test beds); ours are known by their ids (nl_container_ids).
#
# Environment: VTPM_NODES (count; nodes are node-1..node-N), VTPM_KUBELET_PORT
# (node N listens on base+10*(N-1), healthz on that +1; default 10650),
# VTPM_SCHEDULER_PORT (default 10359).

NL_DIR=$VTPM_RUN/nodes
NL_KUBELET_PORT=${VTPM_KUBELET_PORT:-10650}
NL_SCHEDULER_PORT=${VTPM_SCHEDULER_PORT:-10359}
NL_CNI_BIN=/usr/lib/cni

nl_name() { echo "node-$1"; }
nl_dir() { echo "$NL_DIR/node-$1"; }
nl_sock() { echo "$NL_DIR/node-$1/containerd.sock"; }
nl_kubelet_port() { echo $(( NL_KUBELET_PORT + 10 * ($1 - 1) )); }
nl_healthz_port() { echo $(( NL_KUBELET_PORT + 10 * ($1 - 1) + 1 )); }
nl_ctr() { local n=$1; shift; "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" -n k8s.io "$@"; }

# nl_nodes_present: node numbers with a directory (what nodes-down must clean),
# whatever VTPM_NODES says now.
nl_nodes_present() {
  local d
  for d in "$NL_DIR"/node-*; do [ -d "$d" ] && echo "${d##*/node-}"; done
  return 0
}

# nl_is_ours PID: PID runs containerd, its shim, ctr, runc, the kubelet or the
# scheduler with this $VTPM_RUN on its command line.
nl_is_ours() {
  local pid=$1 exe cmd
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  case $exe in
    "$CONTAINERD_BIN"/*|"$RUNC_BIN"/*|"$K8S_BIN/kubelet"|"$K8S_BIN/kube-scheduler") ;;
    *) return 1 ;;
  esac
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $cmd in *"$VTPM_RUN/"*) return 0 ;; esac
  return 1
}

nl_our_bin_pids() {
  local dir exe
  find /proc -mindepth 2 -maxdepth 2 -name exe -printf '%h %l\n' 2>/dev/null |
    while read -r dir exe; do
      case ${exe% (deleted)} in
        "$CONTAINERD_BIN"/*|"$RUNC_BIN"/*|"$K8S_BIN/kubelet"|"$K8S_BIN/kube-scheduler")
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

# nl_log_links: /var/log/containers symlinks (a path the kubelet hard-codes) into our pod logs.
nl_log_links() {
  local l t
  for l in /var/log/containers/*.log; do
    [ -L "$l" ] || continue
    t=$(readlink "$l")
    case $t in "$NL_DIR/"*) echo "$l" ;; esac
  done
  return 0
}

# nl_start NAME HEALTH_CMD BIN ARGS...: start BIN in its own session (pid file
# $TB_PIDS/NAME.pid, log $TB_LOGS/NAME.log) unless running, then wait until
# HEALTH_CMD (a shell command string) succeeds.
nl_start() {
  local name=$1 health=$2 bin=$3 pid t0 deadline; shift 3
  mkdir -p "$TB_PIDS" "$TB_LOGS"
  if [ -s "$TB_PIDS/$name.pid" ] && pid=$(cat "$TB_PIDS/$name.pid") && nl_is_ours "$pid"; then
    :
  else
    echo "==== $(date -u +%FT%TZ) starting $name" >> "$TB_LOGS/$name.log"
    # fd 9 is the test bed's lock: the process must not inherit (and hold) it.
    PATH=$CONTAINERD_BIN:$PATH setsid "$bin" "$@" >> "$TB_LOGS/$name.log" 2>&1 < /dev/null 9>&- &
    pid=$!
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
