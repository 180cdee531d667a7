#!/usr/bin/env bash
# Node path for `make bench` (issue 8): swtpm through the agent on a real
# test-bed node (hack/nodes-up.sh: node-1's containerd and kubelet), timed
# from the moment the launcher pods exist (kubectl create returned) until the
# agent's vtpm_agent_swtpm_starts_total counts them, which it does once swtpm
# answered on its control channel (polled every 10 ms).
#   cold   a VM's first launcher: attachment pod, bind mount, swtpm_setup, start
#   warm   the same VM's next launcher on existing state (the previous
#          launcher and its attachment pod gone first, as after a VM restart)
#   storm  N launchers created at once on one node (node.maxConcurrentStarts
#          from the configuration: default 4)
# Every time includes the kubelet's share: scheduling the launcher pod,
# starting its sandbox and container, until the launcher listens on
# launcher-sock in its pod's emptyDir (rn_launcher_socket). That share is reported on its own as
# launcher_listen_s (same clock start, until the socket exists), so
# cold_s - launcher_listen_s is roughly the agent's part.
#
# The agent, by BENCH_NODE_AGENT:
#   shipped  (the default) as shipped: deploy/overlays/testbed, the DaemonSet
#            on every node and the key broker (keys.provider broker: the node
#            agents hold no KEK), from the image the nodes run, which must be
#            this tree's (hack/build-image.sh --tag); /metrics on node-1's
#            loopback. The StorageClass is KubeVirt's default virt class
#            while the bench runs.
#   host     the release build (state + node controller) as a host process
#            inside node-1's mount namespace, where the kubelet's mounts are,
#            as the DaemonSet's pod sees them (test/e2e/lib-node.sh does the
#            same); the host's network, /metrics on 127.0.0.1. It holds the
#            KEKs itself (keys.provider secret): one GET of the KEK Secret on
#            every start. For measuring a change without an image build.
# Launchers are real pods of
# the test bed's launcher image (hack/images/launcher); attachment pods are
# published by the real kubelet. The testbed provisioner must be running
# with --local (hack/run-bench.sh starts it): the kubelet mounts only `local`
# PVs, not hostPath ones. Prints one JSON object on stdout.
#
# Without real nodes with the launcher image (VTPM_NODES=2
# VTPM_NODES_AGENT_IMAGE=1) it prints {"skipped": "<why>"} and exits 77.
#
# Usage: node-path.sh WORKDIR SYS_NAMESPACE STORAGECLASS [STORM_N] [RUNS]
#        node-path.sh --cleanup WORKDIR
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
B=$top/build
. "$top/hack/testbed-lib.sh"
. "$top/hack/nodes-lib.sh"
. "$top/test/e2e/lib-realnode.sh"  # rn_launcher_yaml: the suites' launcher pod
export PATH=$K8S_BIN:$PATH
export KUBECONFIG=${KUBECONFIG:-$TB_KUBECONFIG}
N=${BENCH_NODE:-1}  # the real node: node-1
NODE=$(nl_name "$N")
say() { echo "node-path: $*" >&2; }

# ---- cleanup: everything is found from files under WORKDIR ----
# $W/state.env: NS, AGENT (its pid), SHIPPED (1: the DaemonSet was deployed,
# CLS annotated); $W/vm-uids: the VMs' uids (their swtpm).
_gone() { [ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }
_swtpm_of() { # UID-FILE: swtpm/swtpm_setup processes working for those VMs
  local p
  [ -s "$1" ] || return 0
  for p in $(pgrep -x 'swtpm|swtpm_setup' 2>/dev/null); do
    grep -qaFf "$1" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
  done
  return 0
}
_mounts_under() { # MOUNTINFO DIR: mount points under DIR, deepest first
  awk -v p="$2/" 'index($5, p) == 1 { print length($5), $5 }' "$1" 2>/dev/null | sort -rn | cut -d' ' -f2-
}
cleanup() { # WORKDIR
  local w=$1 NS= AGENT= SHIPPED= CLS= p h i u
  [ -f "$w/state.env" ] && [ ! -e "$w/cleaned" ] || return 0
  . "$w/state.env"
  # The VM stops: launcher pods go (the kubelet stops them); the agent, still
  # running, stops their swtpm and deletes the attachment pods.
  if [ -n "$NS" ]; then
    kubectl -n "$NS" delete pods -l kubevirt.io=virt-launcher --grace-period=1 --wait=true --timeout=90s >/dev/null 2>&1 || true
    for i in $(seq 150); do [ -z "$(_swtpm_of "$w/vm-uids")" ] && break; sleep 0.2; done
    for i in $(seq 150); do
      [ -z "$(kubectl -n "$NS" get pods -l vtpm-agent.io/attachment-for -o name 2>/dev/null)" ] && break; sleep 0.2
    done
  fi
  if [ -n "$AGENT" ] && [ "$(readlink "/proc/$AGENT/exe" 2>/dev/null)" = "$w/vtpm-agent" ]; then
    kill -TERM "$AGENT" 2>/dev/null || true
    for i in $(seq 300); do _gone "$AGENT" && break; sleep 0.1; done
    _gone "$AGENT" || { say "agent ($AGENT) ignored TERM for 30 s: KILL"; kill -KILL "$AGENT" 2>/dev/null || true; }
  fi
  # What the agent could not finish: swtpm of our VMs, attachment pods (the
  # kubelet still tears their volumes down once they are gone from the API).
  for p in $(_swtpm_of "$w/vm-uids"); do kill -TERM "$p" 2>/dev/null || true; done
  if [ -n "$NS" ]; then
    kubectl -n "$NS" delete pods -l vtpm-agent.io/attachment-for --wait=true --timeout=60s >/dev/null 2>&1 ||
      kubectl -n "$NS" delete pods --all --grace-period=0 --force >/dev/null 2>&1 || true
  fi
  for p in $(_swtpm_of "$w/vm-uids"); do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "$SHIPPED" ]; then
    rn_agent_undeploy || true
    kubectl annotate storageclass "$CLS" storageclass.kubevirt.io/is-default-virt-class- >/dev/null 2>&1 || true
    kubectl -n "$RN_NS" delete secret "vtpm-kek-$NS" --ignore-not-found >/dev/null 2>&1 || true
    while read -r u; do
      [ -z "$u" ] || kubectl -n "$RN_NS" delete lease "vtpm-state-$u" --ignore-not-found >/dev/null 2>&1 || true
    done < "$w/vm-uids"
  fi
  # Mounts the agent left under the work dir (node.runDir's scratch binds), in
  # the node's mount namespace, and on the host if any.
  if h=$(nl_holder "$N"); then
    _mounts_under "/proc/$h/mountinfo" "$w" | while read -r m; do nsenter -t "$h" -m -- umount -l "$m" 2>/dev/null || true; done
  fi
  _mounts_under /proc/self/mountinfo "$w" | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  touch "$w/cleaned"
}
if [ "${1:-}" = --cleanup ]; then cleanup "$2"; exit 0; fi

W=$1 SYS_NS=$2 CLS=$3 STORM=${4:-20} RUNS=${5:-3}
id=${BENCH_ID:-$$}
NS=bench-$id-node
MODE=${BENCH_NODE_AGENT:-shipped}
case $MODE in shipped|host) ;; *) say "BENCH_NODE_AGENT is '$MODE': shipped or host"; exit 2 ;; esac

# ---- the node must be there ----
skip_node() { say "SKIPPED: $*"; jq -n -c --arg why "$*" '{skipped: $why}'; exit 77; }
holder=$(nl_holder "$N") ||
  skip_node "no real nodes in $VTPM_RUN ($NODE has no namespace holder): bring the test bed up with VTPM_NODES=2 VTPM_NODES_AGENT_IMAGE=1"
LAUNCHER_IMAGE=
rn_images_ready ||
  skip_node "$NODE has no launcher image ($NL_DIR/images.env): bring the nodes up with VTPM_NODES_AGENT_IMAGE=1"
ready=$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
[ "$ready" = True ] || skip_node "node $NODE is not Ready (Ready=${ready:-no such node})"
# Another agent on the node (the DaemonSet of `make demo` or suite 04) would
# serve our launchers too.
others=$(kubectl get pods -A -l app.kubernetes.io/name=vtpm-agent --field-selector "spec.nodeName=$NODE" -o name 2>/dev/null || true)
[ -z "$others" ] || { say "an agent pod already runs on $NODE ($others): remove it (kubectl delete -k deploy/overlays/testbed)"; exit 1; }

mkdir -p "$W/run"
# swtpm_setup runs as the swtpm user (tss) on a bind mount under run/: every
# directory above it must be traversable (mktemp -d makes 0700).
chmod o+x "$W" "$(dirname "$W")"
: > "$W/vm-uids"
printf 'NS=%s\nAGENT=\nSHIPPED=\nCLS=%s\n' "$NS" "$CLS" > "$W/state.env"
trap 'cleanup "$W"' EXIT
now_ns() { date +%s%N; }
if [ "$MODE" = shipped ]; then
  want=$("$top/hack/build-image.sh" --tag vtpm-agent)
  [ "${AGENT_IMAGE##*:}" = "$want" ] ||
    skip_node "the nodes run $AGENT_IMAGE, this tree would be vtpm-agent:$want: bring the test bed up again (it builds the image), or BENCH_NODE_AGENT=host"
fi
kubectl create namespace "$NS" >/dev/null

if [ "$MODE" = shipped ]; then
  sed -i 's/^SHIPPED=.*/SHIPPED=1/' "$W/state.env"
  kubectl annotate storageclass "$CLS" storageclass.kubevirt.io/is-default-virt-class=true --overwrite >/dev/null
  say "deploying the DaemonSet and the key broker (deploy/overlays/testbed, $AGENT_IMAGE)"
  rn_agent_deploy || { say "the shipped agents did not become Ready"; exit 1; }
  metrics() { nl_in "$N" curl -s --max-time 2 http://127.0.0.1:9464/metrics; }
  max_starts=$(yq -r 'select(.kind == "ConfigMap") | .data["config.yaml"]' "$top/manifests/configmap.yaml" |
    yq -r '.node.maxConcurrentStarts // 4')
else
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$W/agent.yaml" <<EOF
namespace: $SYS_NS
nodeName: $NODE
state:
  leaseName: bench-$id-node
  storageClass: $CLS
node:
  runDir: $W/run
http: {listen: "127.0.0.1:$port"}
log: {format: json, level: info}
EOF
  max_starts=$(awk '/maxConcurrentStarts/ {print $2}' "$W/agent.yaml"); max_starts=${max_starts:-4}
  metrics() { curl -s --max-time 2 "http://127.0.0.1:$port/metrics"; }
  cp "$B/vtpm-agent" "$W/vtpm-agent"
  # In node-1's mount namespace (nsenter execs the agent: $! is its pid), where
  # kubeletRoot (its default) is the node's own directory, with the launchers' sockets.
  env -u NODE_NAME nsenter -t "$holder" -m -- "$W/vtpm-agent" --kubeconfig "$KUBECONFIG" --config "$W/agent.yaml" \
    --identity "bench-node-$id" >"$W/agent.log" 2>&1 &
  agent=$!
  sed -i "s/^AGENT=.*/AGENT=$agent/" "$W/state.env"
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    kill -0 "$agent" 2>/dev/null || { say "agent exited: $(tail -5 "$W/agent.log")"; exit 1; }
    sleep 0.1
  done
fi
# The state controller reconciles every VM it finds first: let that finish.
for _ in $(seq 600); do
  metrics | grep -q '^vtpm_agent_workqueue_depth{controller="state"} 0$' && break
  sleep 0.5
done

# VMs: cold/warm runs use vm-c-1..RUNS, the storm vm-s-1..STORM; all wait for Ready first.
vms=()
for i in $(seq "$RUNS"); do vms+=("vm-c-$i"); done
for i in $(seq "$STORM"); do vms+=("vm-s-$i"); done
for v in "${vms[@]}"; do
  printf -- '---\napiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: %s}\nspec: {runStrategy: Always, template: {spec: {domain: {devices: {tpm: {persistent: true}}}}}}\n' "$v"
done > "$W/vms.yaml"
kubectl -n "$NS" create -f "$W/vms.yaml" >/dev/null
declare -A vmuid
while read -r name uid; do vmuid[$name]=$uid; echo "$uid" >> "$W/vm-uids"; done < <(kubectl -n "$NS" get vm -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}')
say "waiting for ${#vms[@]} TPMStates to be Ready (PVCs bound)"
for _ in $(seq 600); do
  n=$(kubectl -n "$NS" get tpmstate -o json | jq '[.items[] | select(.status.phase == "Ready")] | length')
  [ "$n" -ge "${#vms[@]}" ] && break
  sleep 1
done
[ "$n" -ge "${#vms[@]}" ] || { say "only $n of ${#vms[@]} TPMStates Ready after 600 s"; exit 1; }

declare -A puid  # launcher pod -> its uid
# launch POD...: create the launcher pods (one request) on the node. Sets
# $t0 (the clock: the pods exist) and $uids (their sockets to wait for).
launch() {
  local vm pod
  : > "$W/pods.yaml"
  for pod in "$@"; do
    vm=${pod%-l*}
    rn_launcher_yaml "$pod" "$vm" "$NODE" >> "$W/pods.yaml"
  done
  local out name uid
  out=$(kubectl -n "$NS" create -f "$W/pods.yaml" -o json |
    jq -r 'if .items then .items[] else . end | "\(.metadata.name) \(.metadata.uid)"')
  # The clock starts once the pods exist (what the agent can see), not before
  # kubectl's own start-up (a few hundred ms on a loaded machine).
  t0=$(now_ns)
  uids=()
  while read -r name uid; do puid[$name]=$uid; uids+=("$uid"); done <<<"$out"
}
# The agent counts a start only once swtpm answered on its control channel
# (CMD_GET_CAPABILITY through the launcher's namespace): poll that counter.
starts() { metrics | awk '$1 == "vtpm_agent_swtpm_starts_total" {print $2 + 0; f = 1} END {if (!f) print 0}'; }
secs_since_t0() { echo "$t0 $1" | awk '{printf "%.3f", ($2 - $1) / 1e9}'; }
# wait_starts N: until N more swtpm than $s0 answer. Sets $took (seconds from
# $t0) and $listen (seconds from $t0 until every launcher of the last launch
# listened on its socket: the kubelet's share).
wait_starts() {
  local want=$(( s0 + $1 )) deadline=$(( $(date +%s) + ${BENCH_NODE_TIMEOUT:-300} )) u all
  listen=
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ -z "$listen" ]; then
      all=1
      for u in "${uids[@]}"; do [ -S "$(rn_launcher_socket "$N" "$u")" ] || { all=; break; }; done
      [ -z "$all" ] || listen=$(secs_since_t0 "$(now_ns)")
    fi
    if [ "$(starts)" -ge "$want" ]; then
      took=$(secs_since_t0 "$(now_ns)")
      # Seen only now (both within one poll): no later than the start.
      [ -n "$listen" ] || listen=$took
      return 0
    fi
    sleep 0.01
  done
  say "only $(( $(starts) - s0 )) of $1 swtpm answering after ${BENCH_NODE_TIMEOUT:-300} s"
  kubectl -n "$NS" get pods -o wide >&2 || true
  return 1
}
_attach_gone() { [ -z "$(kubectl -n "$NS" get pods -l "vtpm-agent.io/attachment-for in ($1)" -o name 2>/dev/null)" ]; }
# stop_launchers POD...: the VMs stop: the pods are deleted; wait until they
# are gone, their swtpm stopped and their attachment pods gone.
stop_launchers() {
  local pod vm sel= pids
  kubectl -n "$NS" delete pod "$@" --wait=false >/dev/null
  kubectl -n "$NS" wait --for=delete pod "$@" --timeout=90s >/dev/null 2>&1 ||
    say "launcher pods still there 90 s after delete: $*"
  for pod in "$@"; do
    vm=${pod%-l*}
    sel+=${sel:+,}${puid[$pod]}
    printf '%s\n' "${vmuid[$vm]}"
  done > "$W/stopping"
  for _ in $(seq 300); do
    pids=$(_swtpm_of "$W/stopping")
    [ -z "$pids" ] && break
    sleep 0.1
  done
  [ -z "$pids" ] || say "swtpm still running 30 s after its launcher went: $pids"
  for _ in $(seq 300); do _attach_gone "$sel" && return 0; sleep 0.2; done
  say "attachment pods of $* still there 60 s after their launchers went"
}
stats() { sort -g | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2;
    printf "{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f,\"runs\":%d}", m, v[1], v[NR], NR}'; }

# get_counts: the agent's GETs so far, by resource ("resource count" lines).
get_counts() {
  metrics |
    sed -n 's/^vtpm_agent_api_requests_total{verb="GET",resource="\([a-z]*\)"} \([0-9.e+]*\)$/\1 \2/p'
}
# What the warm starts cost in GETs, by resource: issue 19 wants none of the
# VM, its TPMState, its PVC or a Secret (the node path reads caches).
declare -A warm_gets=([virtualmachines]=0 [tpmstates]=0 [persistentvolumeclaims]=0 [secrets]=0)
add_get_deltas() { # BEFORE-FILE AFTER-FILE
  local r n b
  while read -r r n; do
    b=$(awk -v r="$r" '$1 == r {print $2}' "$1"); b=${b:-0}
    warm_gets[$r]=$(( ${warm_gets[$r]:-0} + ${n%.*} - ${b%.*} ))
  done < "$2"
}
four_gets() { # COUNTS-FILE -> "virtualmachines N tpmstates N persistentvolumeclaims N secrets N"
  local r; for r in virtualmachines tpmstates persistentvolumeclaims secrets; do
    printf '%s %s ' "$r" "$(awk -v r="$r" '$1 == r {print $2 + 0; f = 1} END {if (!f) print 0}' "$1")"
  done
}
cold=() warm=() listens=()
for i in $(seq "$RUNS"); do
  s0=$(starts); launch "vm-c-$i-l1"; wait_starts 1
  cold+=("$took") listens+=("$listen")
  say "cold start vm-c-$i: $took s (launcher listening after $listen s)"
  stop_launchers "vm-c-$i-l1"
  get_counts > "$W/gets-before"
  s0=$(starts); launch "vm-c-$i-l2"; wait_starts 1
  get_counts > "$W/gets-after"
  add_get_deltas "$W/gets-before" "$W/gets-after"
  say "warm start vm-c-$i: the agent's GETs (/metrics) before: $(four_gets "$W/gets-before"); after: $(four_gets "$W/gets-after")"
  warm+=("$took") listens+=("$listen")
  say "warm start vm-c-$i: $took s (launcher listening after $listen s)"
  stop_launchers "vm-c-$i-l2"
done

pods=()
for i in $(seq "$STORM"); do pods+=("vm-s-$i-l1"); done
s0=$(starts); launch "${pods[@]}"; wait_starts "$STORM"
storm=$took storm_listen=$listen
say "storm of $STORM: $storm s (every launcher listening after $storm_listen s)"
m=$(metrics)
hist_mean() { # NAME -> sum/count
  awk -v n="$1" '$1 == n "_sum" {s = $2} $1 == n "_count" {c = $2} END {if (c > 0) printf "%.3f", s / c; else print "null"}' <<<"$m"
}
stop_launchers "${pods[@]}"
# launcher_listen_s: the single launches (cold and warm), plus storm_last:
# until the storm's last launcher listened.
warm_gets_json=$(for r in "${!warm_gets[@]}"; do printf '%s %s\n' "$r" "${warm_gets[$r]}"; done |
  jq -Rn '[inputs | split(" ") | {(.[0]): (.[1] | tonumber)}] | add // {}')
say "GETs during the $RUNS warm start(s), by resource: $(jq -c . <<<"$warm_gets_json")"
printf '{"agent":"%s","warm_gets":%s,"cold_s":%s,"warm_s":%s,"storm_s":%s,"storm_n":%d,"max_concurrent_starts":%d,"provision_s":%s,"swtpm_start_s":%s,"provisions":%s,"starts":%s,"launcher_listen_s":%s,"node":"%s"}\n' "$MODE" "$warm_gets_json" \
  "$(printf '%s\n' "${cold[@]}" | stats)" "$(printf '%s\n' "${warm[@]}" | stats)" "$storm" "$STORM" "$max_starts" \
  "$(hist_mean vtpm_agent_swtpm_provision_seconds)" "$(hist_mean vtpm_agent_swtpm_start_seconds)" \
  "$(awk '$1 == "vtpm_agent_swtpm_provisions_total" {print $2}' <<<"$m")" \
  "$(awk '$1 == "vtpm_agent_swtpm_starts_total" {print $2}' <<<"$m")" \
  "$(printf '%s\n' "${listens[@]}" | stats | sed "s/}\$/,\"storm_last\":$storm_listen}/")" "$NODE"
