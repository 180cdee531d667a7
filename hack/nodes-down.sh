#!/usr/bin/env bash
# Undo hack/nodes-up.sh, whatever VTPM_NODES says now: every node found under
# $VTPM_RUN/nodes goes. In order: kubelets (so nothing restarts pods), every
# container task (through containerd, then runc directly for any left), the
# containerds and their shims, the scheduler, any process still in our pods'
# cgroups; then the nodes' namespace holders (their mounts and veths go with
# them), the host's address translation for them, any mount under
# $VTPM_RUN/nodes the host still sees, our pods' cgroups, and the state directories.
# Idempotent. Exits non-zero if a process, mount or cgroup survives.
# Called by hack/cluster-down.sh when $VTPM_RUN/nodes exists.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/testbed-lib.sh"
. "$top/hack/nodes-lib.sh"

[ -d "$NL_DIR" ] || { tb_log "nodes: nothing under $NL_DIR"; exit 0; }
if [ -z "${VTPM_LOCK_HELD:-}" ]; then  # cluster-down holds it when it calls us
  exec 9> "$VTPM_RUN/.lock"
  flock -w 300 9 || tb_die "another cluster-up/cluster-down holds $VTPM_RUN/.lock"
fi
t0=$(tb_now_ms)
tp=$t0
phase() { tb_log "nodes-down: $1 ($(( $(tb_now_ms) - tp )) ms)"; tp=$(tb_now_ms); }
present=$(nl_nodes_present)
ids=$(nl_container_ids)

for n in $present; do nl_stop "$(nl_name "$n")-kubelet" 20; done
phase "kubelets stopped"

# Containers through their containerd: the shim unmounts each root filesystem
# and runc removes each container's cgroups.
for n in $present; do
  [ -S "$(nl_sock "$n")" ] && timeout 5 "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" version >/dev/null 2>&1 || continue
  for id in $(timeout 10 "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" -n k8s.io tasks ls -q 2>/dev/null); do
    timeout 10 "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    timeout 20 "$CONTAINERD_BIN/ctr" --address "$(nl_sock "$n")" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
  done
done
phase "container tasks deleted"
for n in $present; do nl_stop "$(nl_name "$n")-containerd" 20; done
nl_stop kube-scheduler 20
phase "containerds and scheduler stopped"

# Anything left: runc's own view (a container whose containerd died), then
# any process in our pods' cgroups, then our binaries by command line (shims).
for n in $present; do
  r=$(nl_dir "$n")/runc/k8s.io
  [ -d "$r" ] || continue
  for id in $("$RUNC_BIN/runc" --root "$r" list -q 2>/dev/null); do
    "$RUNC_BIN/runc" --root "$r" delete -f "$id" >/dev/null 2>&1 || true
  done
done
for i in $(seq 50); do
  left="$(nl_cgroup_pids $ids) $(nl_our_bin_pids)"
  [ -n "${left// /}" ] || break
  [ "$i" -gt 1 ] || tb_log "nodes: killing leftover processes: $(echo $left)"
  kill -KILL $left 2>/dev/null || true
  sleep 0.1
done

phase "no process left"
# The nodes' namespaces: with their last process gone, every mount the
# kubelets and containers made inside, and each node's end of its veth, go too.
for n in $present; do nl_stop "node-$n-ns" 5; done
tag=$(nl_iptables_tag)
iptables -t nat -S PREROUTING 2>/dev/null | grep -F -- "\"$tag\"" | sed 's/^-A /-D /' |
  while read -r rule; do eval "iptables -t nat $rule" || true; done
for n in $present; do ip link del "$(nl_veth "$n")" 2>/dev/null || true; done
phase "namespaces, veths and address translation gone"
# Mounts, deepest first; a busy one is detached (its users are dead by now).
for i in 1 2 3; do
  m=$(nl_mounts)
  [ -n "$m" ] || break
  while read -r mp; do
    umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
  done <<<"$m"
done

phase "mounts gone"
for d in $(nl_cgroup_dirs $ids); do rmdir "$d" 2>/dev/null || true; done
for h in /sys/fs/cgroup/*/; do rmdir "${h}k8s.io" 2>/dev/null || true; done  # only if empty: shared

problems=()
p="$(nl_cgroup_pids $ids) $(nl_our_bin_pids)"; [ -z "${p// /}" ] || problems+=("processes: $(echo $p)")
m=$(nl_mounts); [ -z "$m" ] || problems+=("mounts: $(echo $m)")
for n in $present; do ip link show "$(nl_veth "$n")" >/dev/null 2>&1 && problems+=("veth $(nl_veth "$n")"); done
iptables -t nat -S PREROUTING 2>/dev/null | grep -qF -- "$tag" && problems+=("iptables rules tagged $tag")
c=$(nl_cgroup_dirs $ids); [ -z "$c" ] || problems+=("cgroups: $(echo $c)")
[ ${#problems[@]} -eq 0 ] || tb_die "nodes: left behind: ${problems[*]}"

# Host directories nodes-up created as mount points (nodes-lib.sh), unless
# another test bed's nodes use them now: only empty ones go.
while read -r h; do
  rmdir "$h" 2>/dev/null || true
  [ "$h" != /run/kubevirt/sockets ] || rmdir /run/kubevirt 2>/dev/null || true
done < <(cat "$NL_DIR/created-host-dirs" 2>/dev/null)
rm -rf "$NL_DIR"
phase "state directories removed"
# Their Node objects too, if the API server is still up (cluster-down wipes etcd anyway).
if tb_probe kube-apiserver; then
  names=$(for n in $present; do nl_name "$n"; done)
  # shellcheck disable=SC2086 # node names are single words
  tb_kubectl delete node $names --ignore-not-found --wait=false >/dev/null 2>&1 || true
fi
tb_log "nodes: down in $(( $(tb_now_ms) - t0 )) ms (nodes: $(echo $present))"
