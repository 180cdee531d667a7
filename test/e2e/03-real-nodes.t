#!/usr/bin/env bash
# Real nodes (issue 11, foundation): with VTPM_NODES>=2, hack/nodes-up.sh gives
# Ready nodes whose own kubelet and containerd run pods from locally built
# images, each node its own mount, network and UTS namespace; a `local` PV
# whose node affinity names two nodes carries a file
# written by a pod on node-1 to a pod on node-2; pods reach each other across
# nodes, the API server, and the API server reaches them (the pod network);
# and hack/nodes-down.sh, called
# while pods still run with a volume mounted, leaves no process, mount, cgroup
# directory, namespace, veth or address translation behind. The nodes are
# brought back up at the end if they were up.
# Without VTPM_NODES>=2 (the default) the whole suite is skipped.
. "$(dirname "$0")/lib.sh"
[[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 2 ] ||
  skip_all "needs the test bed's real nodes (VTPM_NODES=2, as make test brings them up)"
. "$E2E_TOP/hack/testbed-lib.sh"
. "$E2E_TOP/hack/nodes-lib.sh"
plan 29
setup_namespace

n1=$(nl_name 1) n2=$(nl_name 2)
was_up=
tb_kubectl get node "$n1" "$n2" >/dev/null 2>&1 && was_up=1

t0=$(tb_now_ms)
ok "hack/nodes-up.sh brings up (or finds) $VTPM_NODES nodes" "$E2E_TOP/hack/nodes-up.sh"
diag "nodes-up took $(( $(tb_now_ms) - t0 )) ms (already up: ${was_up:-no})"
. "$NL_DIR/images.env"

for n in "$n1" "$n2"; do
  is "$(kubectl get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" True "$n is Ready"
done
like "$(kubectl get node "$n1" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion} {.status.nodeInfo.kubeletVersion}')" \
  "^containerd://${CONTAINERD_VERSION#v} $K8S_VERSION\$" "$n1 runs our containerd and kubelet"
is "$(kubectl get node "$n1" "$n2" -o jsonpath='{.items[*].status.addresses[?(@.type=="InternalIP")].address}')" \
  "$(nl_ip 1) $(nl_ip 2)" "each node has its own address, on its own network namespace"

# pod_yaml NAME NODE SCRIPT [PVC]: a busybox pod pinned to NODE by the scheduler
# (nodeSelector), the node's network, never pulled; SCRIPT's output is its
# termination message, read back from the pod's status.
pod_yaml() {
  local name=$1 node=$2 script=$3 pvc=${4:-}
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name}
spec:
  nodeSelector: {kubernetes.io/hostname: $node}
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "$script"]
    env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
EOF
  [ -z "$pvc" ] || cat <<EOF
    volumeMounts: [{name: shared, mountPath: /data}]
  volumes: [{name: shared, persistentVolumeClaim: {claimName: $pvc}}]
EOF
}
phase_is() { [ "$(k get pod "$1" -o jsonpath='{.status.phase}')" = "$2" ]; }
message() { k get pod "$1" -o jsonpath='{.status.containerStatuses[0].state.terminated.message}'; }

# A pod on each node: it runs, sees its node through the downward API, and
# shares the node's network and hostname (hostNetwork), not the machine's.
for n in "$n1" "$n2"; do
  pod_yaml "hello-$n" "$n" 'echo \"hello from $NODE_NAME on $(hostname)\" > /dev/termination-log' | k apply -f - >/dev/null
done
for n in "$n1" "$n2"; do
  if wait_until 60 phase_is "hello-$n" Succeeded; then pass "a busybox pod ran to completion on $n"
  else fail "a busybox pod ran to completion on $n" "$(k get pod "hello-$n" -o yaml | tail -40)"; fi
  is "$(message "hello-$n")" "hello from $n on $n" "the pod on $n saw its node name and the node's hostname"
done

# The pod network (pods that are not hostNetwork): a pod on each node gets an
# address on its node's bridge; a pod on node-2 reaches the pod on node-1, a pod
# reaches the API server at the `kubernetes` Service, and the API server reaches
# a pod (its pod proxy dials the pod's address), as in a cluster.
for n in "$n1" "$n2"; do
  pod_yaml "web-$n" "$n" 'echo from-$NODE_NAME > /tmp/hello; exec httpd -f -p 8080 -h /tmp' |
    sed '/hostNetwork: true/d' | k apply -f - >/dev/null
done
ok "a pod on each node is Running on the pod network" wait_until 60 sh -c \
  "[ \"\$(kubectl -n $NS get pod web-$n1 web-$n2 -o jsonpath='{.items[*].status.phase}')\" = 'Running Running' ]"
ip1=$(k get pod "web-$n1" -o jsonpath='{.status.podIP}')
is "$(k exec "web-$n2" -- sh -c "printf 'GET /hello HTTP/1.0\r\n\r\n' | nc -w 5 $ip1 8080 | tail -1")" "from-$n1" \
  "the pod on $n2 reaches the pod on $n1 at its address $ip1 (kubectl exec: the API server reaches the kubelet)"
ok "a pod reaches the API server at the kubernetes Service ($TB_SERVICE_IP:443)" \
  k exec "web-$n1" -- nc -w 5 "$TB_SERVICE_IP" 443 </dev/null
is "$(kubectl get --raw "/api/v1/namespaces/$NS/pods/web-$n2:8080/proxy/hello")" "from-$n2" \
  "the API server reaches a pod on $n2 at its address (pod proxy)"

# The agent's image (deploy/Containerfile, built by buildah without a Docker
# engine: hack/build-image.sh), if nodes-up imported it
# (VTPM_NODES_AGENT_IMAGE=1): the agent and swtpm_setup run in a pod.
if [ -n "${AGENT_IMAGE:-}" ]; then
  pod_yaml agent-image "$n1" 'echo \"$(vtpm-agent --version) | $(swtpm_setup --version | head -1)\" > /dev/termination-log' |
    sed "s|image: $BUSYBOX_IMAGE|image: $AGENT_IMAGE|" | k apply -f - >/dev/null
  wait_until 60 phase_is agent-image Succeeded
  like "$(message agent-image)" '^vtpm-agent [^ ]+ \| TPM emulator setup tool version 0\.7' \
    "the agent image runs vtpm-agent and swtpm_setup on $n1"
else
  skip "the agent image was not imported (VTPM_NODES_AGENT_IMAGE unset)"
fi

# Shared storage: one host directory, a `local` PV reachable from both nodes, an RWX claim.
store=$(mktemp -d /tmp/vtpm-e2e-localpv.XXXXXX)
at_exit "rm -rf '$store'"
pv=$NS-shared
at_exit "kubectl delete pv $pv --ignore-not-found --wait=false >/dev/null 2>&1"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $NS-local
  local: {path: $store}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$n1, $n2]}]
EOF
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: $NS-local
  volumeName: $pv
  resources: {requests: {storage: 1Gi}}
EOF
ok "the RWX claim binds to the local PV" wait_until 30 \
  sh -c "[ \"\$(kubectl -n $NS get pvc shared -o jsonpath='{.status.phase}')\" = Bound ]"

token=$(tr -dc 'a-z0-9' < /dev/urandom | head -c 16)
pod_yaml writer "$n1" "echo $token from \$NODE_NAME > /data/msg" shared | k apply -f - >/dev/null
ok "a pod on $n1 writes to the claim" wait_until 60 phase_is writer Succeeded
pod_yaml reader "$n2" 'cat /data/msg > /dev/termination-log' shared | k apply -f - >/dev/null
ok "a pod on $n2 reads the claim" wait_until 60 phase_is reader Succeeded
is "$(message reader)" "$token from $n1" "the pod on $n2 read what the pod on $n1 wrote"

# Teardown under load: a pod on each node still runs, one with the claim mounted.
pod_yaml holder-1 "$n1" 'exec sleep 3600' | k apply -f - >/dev/null
pod_yaml holder-2 "$n2" 'exec sleep 3600' shared | k apply -f - >/dev/null
ok "long-running pods are Running on both nodes" wait_until 60 sh -c \
  "[ \"\$(kubectl -n $NS get pod holder-1 holder-2 -o jsonpath='{.items[*].status.phase}')\" = 'Running Running' ]"
uid2=$(k get pod holder-2 -o jsonpath='{.metadata.uid}')
vol=/var/lib/kubelet/pods/$uid2/volumes/kubernetes.io~local-volume/$pv
kubelet2=$(cat "$TB_PIDS/$n2-kubelet.pid")
like "$(awk -v m="$vol" '$5 == m' "/proc/$kubelet2/mountinfo")" " $vol " \
  "$n2's kubelet bind-mounted the local PV into its pod's volume directory (in $n2's mount namespace)"
is "$(awk -v m="$vol" '$5 == m' /proc/self/mountinfo)" "" "the machine's own mount table does not see it"

# Independent of nodes-lib: our binaries by command line; our containers (their
# ids from each node's runc state, taken now) by their cgroups, which containerd
# puts at /k8s.io/<id> in every hierarchy; mounts under this test bed's paths.
ids=$(ls "$NL_DIR"/node-*/runc/k8s.io 2>/dev/null | grep -E '^[0-9a-f]{64}$')
our_procs() {
  local p exe id
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case $exe in "$CONTAINERD_BIN"/*|"$RUNC_BIN"/*|*/kubelet|*/kube-scheduler|*/sleep|"$NL_INIT"*) ;; *) continue ;; esac
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF "$VTPM_RUN/" && echo "${p#/proc/} $exe"
  done
  for id in $ids; do
    grep -l ":/k8s.io/$id\$" /proc/[0-9]*/cgroup 2>/dev/null | sed "s|/proc/\([0-9]*\)/cgroup|\1 (in container ${id:0:12})|"
  done
  return 0
}
holders=$(cat "$TB_PIDS"/node-*-ns.pid 2>/dev/null)
# Mounts the machine sees under our paths, and every mount inside a node's namespace.
our_mounts() {
  local h
  grep -F " $VTPM_RUN/nodes/" /proc/self/mountinfo; grep -F " $store " /proc/self/mountinfo
  for h in $holders; do
    [[ $(tr '\0' ' ' 2>/dev/null < "/proc/$h/cmdline") == vtpm-node-ns:* ]] && grep -E ' /var/lib/kubelet/pods/| /run/kubevirt/' "/proc/$h/mountinfo"
  done
  return 0
}
our_net() {
  local n
  for n in 1 2; do ip -o link show "$(nl_veth "$n")" 2>/dev/null; done
  iptables -t nat -S PREROUTING | grep -F "$(nl_iptables_tag)"
  for n in 1 2; do ip route show "$(nl_pod_net "$n")"; done
  return 0
}
our_cgroups() { local id; for id in $ids; do ls -d /sys/fs/cgroup/*/k8s.io/"$id" 2>/dev/null; done; return 0; }
diag "before nodes-down: $(echo $ids | wc -w) containers, $(our_procs | wc -l) processes, $(our_mounts | wc -l) mounts, $(our_cgroups | wc -l) cgroup dirs, $(our_net | wc -l) links and NAT rules"
[ -n "$ids" ] && [ -n "$(our_procs)" ] && [ -n "$(our_mounts)" ] && [ -n "$(our_cgroups)" ] && [ "$(our_net | wc -l)" -ge 3 ] &&
  pass "before nodes-down there are containers, processes, mounts, cgroups, veths and NAT rules to clean up" ||
  fail "before nodes-down there are containers, processes, mounts, cgroups, veths and NAT rules to clean up" "ids: $ids"

host_dirs=$(cat "$NL_DIR/created-host-dirs" 2>/dev/null)
diag "host directories nodes-up created: $(echo $host_dirs)"
t0=$(tb_now_ms)
ok "hack/nodes-down.sh succeeds with pods running" "$E2E_TOP/hack/nodes-down.sh"
diag "nodes-down took $(( $(tb_now_ms) - t0 )) ms"
is "$(our_procs)" "" "no containerd, shim, runc, kubelet, scheduler or pod process of this test bed remains"
is "$(our_mounts)" "" "no mount under $VTPM_RUN/nodes (pod volumes, root filesystems, shm) remains, no node namespace"
is "$(our_cgroups)" "" "no pod cgroup directory remains in any hierarchy"
is "$(our_net)" "" "no veth and no address translation of the nodes remains"
left=$(ls -d "$NL_DIR" $host_dirs 2>/dev/null)
is "$left" "" "no node directory and no host directory nodes-up created remains"

if [ -n "$was_up" ]; then
  ok "nodes come back up for the suites after this one" "$E2E_TOP/hack/nodes-up.sh"
else
  skip "nodes were not up before this suite"
fi
