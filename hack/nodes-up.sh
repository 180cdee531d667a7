#!/usr/bin/env bash
# Start $VTPM_NODES real nodes (default 2) beside the running control plane:
# per node its own containerd and kubelet, plus one kube-scheduler; import the
# locally built images (hack/build-images.sh) into every node; wait until all
# nodes are Ready. Called by hack/cluster-up.sh when VTPM_NODES>0 (or run it
# directly after cluster-up). Idempotent: healthy processes are left alone.
# Layout and ports: hack/nodes-lib.sh. hack/nodes-down.sh undoes all of it.
#
# Host facts this relies on (issue 11): cgroup v1 without CAP_SYS_RESOURCE, so
# kubelet runs with failCgroupV1 false, cgroupfs, no per-QoS cgroups, no node
# allocatable enforcement, swap allowed; containerd with restrict_oom_score_adj.
# Each node is its own mount, network and UTS namespace (nodes-lib.sh).
# hostNetwork pods use the node's network; the others get an address on a
# bridge inside their node ($NL_NET.(100+N).0/24), routed between nodes and
# to the host (the API server) through the host, as a pod network is.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/testbed-lib.sh"
. "$top/hack/nodes-lib.sh"

nodes=${VTPM_NODES:-2}
VTPM_NODES=$nodes   # (tb_kubevirt reads it)
NL_PIDNS=${VTPM_NODES_PIDNS:-$(tb_kubevirt && echo 1 || echo 0)}
[[ $nodes =~ ^[1-9][0-9]?$ ]] || tb_die "VTPM_NODES=$nodes: want a count from 1 to 99"
t0=$(tb_now_ms)

if [ -z "${VTPM_LOCK_HELD:-}" ]; then  # cluster-up holds it when it calls us
  mkdir -p "$VTPM_RUN"
  exec 9> "$VTPM_RUN/.lock"
  flock -w 300 9 || tb_die "another cluster-up/cluster-down holds $VTPM_RUN/.lock"
fi
tb_probe kube-apiserver || tb_die "no API server at $TB_APISERVER_URL: run hack/cluster-up.sh first"

"$top/hack/build-nodes.sh" >&2
built=$("$top/hack/build-images.sh" pause busybox)  # (a failure stops us here: set -e)
mapfile -t imgs <<<"$built"
declare -A img_ref img_tar
for l in "${imgs[@]}"; do
  read -r name ref tar <<<"$l"
  img_ref[$name]=$ref img_tar[$name]=$tar
done
mkdir -p "$NL_DIR"
chmod 755 "$NL_DIR"
printf 'PAUSE_IMAGE=%s\nBUSYBOX_IMAGE=%s\n' "${img_ref[pause]}" "${img_ref[busybox]}" > "$NL_DIR/images.env.new"
# The agent's own image (hack/build-image.sh: deploy/Containerfile built by
# buildah), a second one to roll to, and the test bed's launcher images (one
# with swtpm only, one with libvirt and QEMU if VTPM_NODES_LIBVIRT_IMAGE=1),
# only when asked for: the first build downloads ~400 MB of Debian packages.
declare -A extra_ref=() extra_tar=()
if [ -n "${VTPM_NODES_AGENT_IMAGE:-}" ]; then
  # The libvirt launcher (~480 MB) only for the suite that boots QEMU in it.
  for what in $(tb_agent_images); do
    built=$("$top/hack/build-image.sh" "$what")
    read -r _ extra_ref[$what] extra_tar[$what] <<<"$built"
  done
  printf 'AGENT_IMAGE=%s\nAGENT_IMAGE_NEXT=%s\nLAUNCHER_IMAGE=%s\nLAUNCHER_LIBVIRT_IMAGE=%s\n' "${extra_ref[vtpm-agent]}" \
    "${extra_ref[vtpm-agent-next]}" "${extra_ref[launcher]}" "${extra_ref[launcher-libvirt]:-}" >> "$NL_DIR/images.env.new"
elif [ -s "$NL_DIR/images.env" ]; then  # imported by an earlier run: still there
  grep -E '^(AGENT_IMAGE|AGENT_IMAGE_NEXT|LAUNCHER_IMAGE|LAUNCHER_LIBVIRT_IMAGE)=' "$NL_DIR/images.env" >> "$NL_DIR/images.env.new" || true
fi
# Real KubeVirt (the default; VTPM_KUBEVIRT=0 for the stand-ins; issue 20): its components built from source
# (hack/build-kubevirt.sh), their images (hack/build-kubevirt-images.sh) and the
# TPM guest's kernel-boot and disk images (hack/build-tpm-guest.sh); hack/kubevirt-up.sh
# installs it once the nodes are Ready.
if tb_kubevirt; then
  "$top/hack/build-kubevirt.sh" >&2
  kv_bin=$("$top/hack/build-kubevirt.sh" --dir)/bin
  built=$("$top/hack/build-kubevirt-images.sh")   # (a failure stops us here: set -e)
  built+=$'\n'$("$top/hack/build-tpm-guest.sh")
  while read -r what ref tar; do extra_ref[$what]=$ref extra_tar[$what]=$tar; done <<<"$built"
  printf 'KUBEVIRT_BIN=%s\nKUBEVIRT_TAG=%s\nTPM_GUEST_IMAGE=%s\nTPM_GUEST_DISK_IMAGE=%s\n' "$kv_bin" \
    "${extra_ref[virt-operator]##*:}" "${extra_ref[tpm-guest]}" "${extra_ref[tpm-guest-disk]}" >> "$NL_DIR/images.env.new"
fi
# The names manifests use for them: deploy/overlays/testbed's agent image, the
# agent's default attachment image (config node.attachmentImage).
TESTBED_AGENT=localhost/vtpm-agent:testbed
ATTACH_IMAGE=registry.k8s.io/pause:3.10
mv "$NL_DIR/images.env.new" "$NL_DIR/images.env"
# Mount points for the binds inside every node (NL_NODE_PATHS): they must exist
# on the host. Those we create are listed for nodes-down to remove.
for p in $NL_NODE_PATHS; do
  h=${p#*:}
  if [ ! -e "$h" ]; then
    mkdir -p "$h"
    grep -qxF "$h" "$NL_DIR/created-host-dirs" 2>/dev/null || echo "$h" >> "$NL_DIR/created-host-dirs"
  fi
done

# kube-scheduler: pods need one, and the control plane runs none.
"$top/hack/gen-certs.sh" client kube-scheduler system:kube-scheduler >/dev/null
sk=$VTPM_RUN/kube-scheduler.kubeconfig
nl_start kube-scheduler "curl -sfk https://127.0.0.1:$NL_SCHEDULER_PORT/healthz" "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$sk" --authentication-kubeconfig "$sk" --authorization-kubeconfig "$sk" \
  --bind-address 127.0.0.1 --secure-port "$NL_SCHEDULER_PORT" --leader-elect=false \
  --cert-dir "$VTPM_RUN/certs/kube-scheduler"

write_containerd_config() { # N
  local n=$1 d
  d=$(nl_dir "$n")
  cat > "$d/containerd/config.toml" <<EOF
# Written by hack/nodes-up.sh for $(nl_name "$n"). Every path is this node's own:
# two nodes sharing a containerd would kill each other's pods.
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"

[grpc]
  address = "$(nl_sock "$n")"

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "$d/containerd/opt"
  # NRI's socket is a fixed host path (/var/run/nri): not for one of several nodes.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "${img_ref[pause]}"
  [plugins.'io.containerd.cri.v1.runtime']
    # No CAP_SYS_RESOURCE here: without it every sandbox fails writing oom_score_adj.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []  # no /etc/cdi, /var/run/cdi: host paths
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["$NL_CNI_BIN"]
      conf_dir = "$d/cni/net.d"
      max_conf_num = 1
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$RUNC_BIN/runc"
          Root = "$d/runc"
          SystemdCgroup = false
EOF
  # Pods get an address on a bridge inside the node, whose first address is
  # their default gateway (the node forwards). The host routes each node's pod
  # network to that node, so pods reach each other across nodes and the API
  # server reaches them (KubeVirt's webhooks, virt-handler to virt-handler in a
  # migration), as a cluster's pod network does. The bridge goes with the
  # node's namespace.
  rm -f "$d/cni/net.d/10-loopback.conflist"
  cat > "$d/cni/net.d/10-vtpm-pods.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "vtpm-pods", "plugins": [{"type": "bridge", "bridge": "cni0",
  "isDefaultGateway": true,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$(nl_pod_net "$n")"}]], "dataDir": "$d/cni/ipam"}}]}
EOF
}

write_kubelet_config() { # N
  local n=$1 d
  d=$(nl_dir "$n")
  cat > "$d/kubelet-config.yaml" <<EOF
# Written by hack/nodes-up.sh for $(nl_name "$n"). The kubelet runs in the node's
# own network namespace: default ports, the node's address $(nl_ip "$n").
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $TB_PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$(nl_sock "$n")
# cgroup v1, no CAP_SYS_RESOURCE, no systemd (issue 11).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
volumePluginDir: $d/volume-plugins
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Imported images are not pullable: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
registerNode: true
EOF
}

# import_image N REF TAR: the layout's manifest carries the tag as its
# org.opencontainers.image.ref.name; --base-name makes that REF. (With
# --index-name, ctr also keeps a temporary "import-<date>:<tag>" name that
# expires, and CRI then fails "image ... not found" creating containers.)
# name_by_id N REF: give node N's image REF a second name, REPO@<image id>.
# KubeVirt starts a migration target's container disks by the digest the
# source pod's status reported (its imageID): for a pulled image that is a
# registry digest; for an imported one, containerd reports the image id (the
# config's digest), which names nothing until this gives it that name.
name_by_id() {
  local n=$1 ref=$2 target id
  target=$(nl_ctr "$n" images ls 2>/dev/null | awk -v r="$ref" '$1 == r { print $3 }')
  id=$(nl_ctr "$n" content get "$target" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])') ||
    tb_die "$(nl_name "$n"): no image id for $ref"
  nl_ctr "$n" images tag --force "$ref" "${ref%:*}@$id" >/dev/null
}

import_image() {
  local n=$1 ref=$2 tar=$3 out
  out=$(nl_ctr "$n" images import --base-name "${ref%:*}" "$tar" 2>&1) ||
    tb_die "importing $tar into $(nl_name "$n") failed: $out"
  # grep reads the whole list: with `grep -q` it could stop at the match and
  # ctr, still writing, die of SIGPIPE, which pipefail reported as a missing
  # image (and the import was done again, after a second's sleep).
  nl_ctr "$n" images ls -q 2>/dev/null | grep -xF "$ref" > /dev/null ||
    tb_die "importing $tar into $(nl_name "$n") made no $ref: $out"
}

# start_ns N: node N's namespaces (see nodes-lib.sh): a holder process that
# binds the node's directories over the fixed host paths inside its private
# mount namespace, then sleeps; a veth between it and the host; the routes
# and address translation that take the node to the API server.
start_ns() {
  local n=$1 d h p veth gw ip
  d=$(nl_dir "$n") veth=$(nl_veth "$n") gw=$(nl_gw "$n") ip=$(nl_ip "$n")
  nl_holder "$n" >/dev/null && return 0
  for p in $NL_NODE_PATHS; do mkdir -p "$d/${p%%:*}"; done
  rm -f "$d/ns-ready"
  # shellcheck disable=SC2016 # expanded by the inner shell
  # With VTPM_NODES_PIDNS=1 (the default with real KubeVirt) the node also
  # gets a PID namespace, as a machine (or a kind node) has: KubeVirt's
  # virt-handler works through /proc/1 (/proc/1/root/dev for its device plugins,
  # /proc/1/ns/mnt for virt-chroot, pid 1's mountinfo for container disks),
  # which must be the node's own init. The holder is that init (NL_INIT, which
  # reaps), with the namespace's own /proc mounted in the node.
  local pidns=() init=(sleep infinity)
  if [ "$NL_PIDNS" = 1 ]; then pidns=(--pid --fork --mount-proc) init=("$NL_INIT"); fi
  setsid unshare --mount --net --uts "${pidns[@]}" --propagation private -- bash -c '
    set -e
    d=$1 name=$2 init=$3; shift 3
    hostname "$name"
    for p in "$@"; do mount --bind "$d/${p%%:*}" "${p#*:}"; done
    # Volumes the kubelet mounts under its root reach containers that ask for
    # HostToContainer propagation (the agent): a shared mount, in this node only.
    mount --make-rshared /var/lib/kubelet
    # virt-handler mounts /run/kubevirt Bidirectional (runc wants a shared source).
    mount --make-rshared /run/kubevirt
    mkdir -p /run/kubevirt/sockets
    ip link set lo up
    : > "$d/ns-ready"
    exec -a "vtpm-node-ns:$d" $init' vtpm-node-ns "$d" "$(nl_name "$n")" "${init[*]}" $NL_NODE_PATHS \
    >> "$TB_LOGS/node-$n-ns.log" 2>&1 < /dev/null 9>&- &
  h=$!
  for _ in $(seq 100); do [ -e "$d/ns-ready" ] && break; kill -0 "$h" 2>/dev/null || break; sleep 0.05; done
  [ -e "$d/ns-ready" ] || tb_die "node-$n's namespaces did not come up; see $TB_LOGS/node-$n-ns.log"
  # unshare --fork waits for its child, the holder (pid 1 of the node).
  [ "$NL_PIDNS" != 1 ] || h=$(cat "/proc/$h/task/$h/children") h=${h%% *}
  for _ in $(seq 100); do nl_is_ours "$h" && break; sleep 0.05; done
  echo "$h" > "$TB_PIDS/node-$n-ns.pid"
  ip link del "$veth" 2>/dev/null || true   # from a holder that died
  ip link add "$veth" type veth peer name eth0 netns "$h"
  ip addr add "$gw/24" dev "$veth"
  ip link set "$veth" up
  # The host side: the API server listens on loopback; let this veth reach it.
  sysctl -qw "net.ipv4.conf.$veth.route_localnet=1"
  # Node to node (the key broker runs in node-1's network): forward what
  # arrives on the nodes' veths only; the machine's ip_forward stays as it is.
  sysctl -qw "net.ipv4.conf.$veth.forwarding=1"
  iptables -t nat -A PREROUTING -i "$veth" -d "$gw" -p tcp --dport "$TB_APISERVER_PORT" \
    -m comment --comment "$(nl_iptables_tag)" -j DNAT --to-destination "127.0.0.1:$TB_APISERVER_PORT"
  # The node's pods: routed to the node (the route goes with the veth).
  ip route replace "$(nl_pod_net "$n")" via "$ip" dev "$veth"
  # The `kubernetes` Service, from the node (OUTPUT) and from its pods
  # (PREROUTING, they come in on the bridge): what kube-proxy would do.
  nl_in "$n" sh -c "ip addr add $ip/24 dev eth0 && ip link set eth0 up && ip route add default via $gw &&
    iptables -t nat -A OUTPUT -d $TB_SERVICE_IP -p tcp --dport 443 -j DNAT --to-destination $gw:$TB_APISERVER_PORT &&
    iptables -t nat -A PREROUTING -d $TB_SERVICE_IP -p tcp --dport 443 -j DNAT --to-destination $gw:$TB_APISERVER_PORT"
}

# node_runtime N: node N's namespaces and containerd.
node_runtime() {
  local n=$1 d name
  d=$(nl_dir "$n") name=$(nl_name "$n")
  mkdir -p "$d/containerd" "$d/runc" "$d/kubelet-pki" "$d/cni/net.d" "$d/volume-plugins"
  start_ns "$n"
  write_containerd_config "$n"
  NL_IN=$n nl_start "$name-containerd" "nl_ctr $n version" "$CONTAINERD_BIN/containerd" --config "$d/containerd/config.toml"
}

# node_images N: the images node N's containerd lacks, imported and named.
node_images() {
  local n=$1 have i what
  have=$(nl_ctr "$n" images ls -q 2>/dev/null)
  for i in pause busybox; do
    grep -qxF "${img_ref[$i]}" <<<"$have" || import_image "$n" "${img_ref[$i]}" "${img_tar[$i]}"
  done
  for what in "${!extra_ref[@]}"; do
    grep -qxF "${extra_ref[$what]}" <<<"$have" || import_image "$n" "${extra_ref[$what]}" "${extra_tar[$what]}"
  done
  for what in tpm-guest tpm-guest-disk; do
    [ -z "${extra_ref[$what]:-}" ] || name_by_id "$n" "${extra_ref[$what]}"
  done
  nl_ctr "$n" images tag --force "${img_ref[pause]}" "$ATTACH_IMAGE" >/dev/null
  if [ -n "${extra_ref[vtpm-agent]:-}" ]; then
    nl_ctr "$n" images tag --force "${extra_ref[vtpm-agent]}" "$TESTBED_AGENT" >/dev/null
    nl_ctr "$n" images tag --force "${extra_ref[vtpm-agent-next]}" "$TESTBED_AGENT-next" >/dev/null
  fi
}

# node_kubelet N: node N's kubelet, with its client certificate.
node_kubelet() {
  local n=$1 d name
  d=$(nl_dir "$n") name=$(nl_name "$n")
  "$top/hack/gen-certs.sh" client "$name" "system:node:$name" system:nodes >/dev/null
  # The node reaches the API server as its pods do: the Service address.
  sed "s|server: https://.*|server: https://$TB_SERVICE_IP:443|" "$VTPM_RUN/$name.kubeconfig" > "$d/kubelet.kubeconfig"
  write_kubelet_config "$n"
  NL_IN=$n nl_start "$name-kubelet" "nl_in $n curl -sf http://127.0.0.1:10248/healthz" "$K8S_BIN/kubelet" \
    --config "$d/kubelet-config.yaml" --kubeconfig "$d/kubelet.kubeconfig" \
    --root-dir /var/lib/kubelet --cert-dir "$d/kubelet-pki" \
    --hostname-override "$name" --node-ip "$(nl_ip "$n")"
}

if [ "$NL_PIDNS" = 1 ]; then
  gcc -std=gnu17 -Wall -Wextra -Werror -Os -static -s "$top/hack/images/pause.c" -o "$NL_INIT.tmp"
  mv "$NL_INIT.tmp" "$NL_INIT"
fi
for n in $(seq "$nodes"); do node_runtime "$n"; done
# The images into every node at once: an import is mostly one core
# decompressing layers (1.3 GB of image archives per node with KubeVirt), and the nodes'
# containerds are independent. Each node in a subshell; its failure is its own
# tb_die message, then ours, once every import has ended (none is left running
# against a containerd that cluster-down stops).
pids=() failed=()
for n in $(seq "$nodes"); do node_images "$n" & pids+=($!); done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("$(nl_name $((i + 1)))"); done
[ ${#failed[@]} = 0 ] || tb_die "images not imported into ${failed[*]} (above)"
for n in $(seq "$nodes"); do node_kubelet "$n"; done

t1=$(tb_now_ms)
for n in $(seq "$nodes"); do
  tb_kubectl wait --for condition=Ready --timeout "${VTPM_NODES_READY_TIMEOUT:-120}s" node "$(nl_name "$n")" >&2 ||
    tb_die "$(nl_name "$n") not Ready; see $TB_LOGS/$(nl_name "$n")-kubelet.log"
done
# virt-operator's Deployments require a control-plane node, and the test bed's
# control plane runs on the machine, outside any node: node-1 carries the role
# (a node that comes back, e.g. after nodes-down, is a new Node object).
! tb_kubevirt || tb_kubectl label --overwrite node "$(nl_name 1)" node-role.kubernetes.io/control-plane= >&2
tb_log "$nodes node(s) Ready $(( $(tb_now_ms) - t1 )) ms after their kubelets answered; nodes up in $(( $(tb_now_ms) - t0 )) ms"
# Nodes that come back to a KubeVirt installed before (suite 03 takes them down
# and up): done when KubeVirt serves again, or the next VM is refused.
if tb_kubevirt && tb_kubectl -n kubevirt get kubevirt kubevirt >/dev/null 2>&1; then
  t1=$(tb_now_ms)
  tb_kubevirt_wait_serving || tb_die "KubeVirt does not serve again; kubectl -n kubevirt get pods -o wide"
  tb_log "KubeVirt serves again $(( $(tb_now_ms) - t1 )) ms after the nodes were Ready"
fi
