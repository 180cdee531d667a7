#!/usr/bin/env bash
# `make bench` (issue 8): scale, latency and footprint of vtpm-agent against
# baselines taken in the same run, printed as one table and written as JSON to
# bench-results/<timestamp>.json. Measurements, not assertions: the goals are
# printed next to the numbers.
#
# Uses the release build (build/vtpm-agent) and build/tools/bench-*; run after
# `make all tools` (the Makefile's bench target does). If $VTPM_RUN names a
# running test bed it is reused (and left running); otherwise one is brought
# up and taken down again. Everything the bench creates lives in namespaces
# bench-<id>-* (left behind on a reused test bed: delete them with
#   kubectl get ns -o name | grep bench- | xargs kubectl delete --wait=false).
#
# Phases (each prints progress on stderr):
#   footprint  VMs created with no agent running; a stand-by agent (its Lease
#              held by someone else: it caches everything, writes nothing)
#              started at 0, 1,000, 5,000 and 10,000 VMs: RSS at /readyz
#   burst      1,000 then 5,000 VMs (half persistent) created at once while
#              the agent leads: all state PVCs, statuses, Ready; per-VM latency
#   steady     60 s with nothing changing: CPU, API requests and writes
#   restart    agent restarted over the 6,000 VMs: /readyz, queue drained, writes
#              (CREATE counts one SelfSubjectReview at start: not a write, subtracted)
#   node       swtpm through the agent on the test bed's real node-1 (its
#              kubelet, real launcher pods: cold, warm, storm of 20) vs bare
#              swtpm; needs nodes with the launcher image (a test bed the bench
#              brings up has them; a reused one without them: the node path is
#              skipped, and says so)
#   baseline   the same numbers of bare PVC creates, 16 in flight (the API
#              server's limit), after the agents are gone (their caches must
#              not hold them); last, because kube-controller-manager keeps
#              working through these never-binding PVCs for minutes
#   callgrind  instructions per watch event (decode + vm_trim) and per
#              unchanged reconcile (pure part)
#
# Knobs: BENCH_SIZES ("1000 5000"), BENCH_FOOTPRINT ("1000 5000 10000"),
# BENCH_STEADY_SECONDS (60), BENCH_READY_TIMEOUT (300: seconds to wait for
# Ready after every status is written; binding is kube-controller-manager's
# work, not the agent's, a few PVCs a second on 2 cores; the next size and
# the steady phase must wait for it anyway, so a shorter wait saves no time), BENCH_KCM_QPS (500: its client limit, on a test bed
# the bench brings up itself), BENCH_SKIP ("" or phase names),
# BENCH_PHASES (all, or a comma/space separated list, e.g. "burst,baseline":
# only those run; steady and restart need burst's agent), BENCH_STORM (20),
# BENCH_KUBEVIRT_RUNS (3: warm starts per mode in phase kubevirt).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. "$top/hack/testbed-lib.sh"
export PATH=$K8S_BIN:$PATH

SIZES=${BENCH_SIZES:-1000 5000}
FOOTPRINT=${BENCH_FOOTPRINT:-1000 5000 10000}
STEADY=${BENCH_STEADY_SECONDS:-60}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-300}
STORM=${BENCH_STORM:-20}
SKIP=" ${BENCH_SKIP:-} "
PHASES=${BENCH_PHASES:-}
PHASES=" ${PHASES//,/ } "
skip() { [[ $SKIP == *" $1 "* ]] || { [ -n "${BENCH_PHASES:-}" ] && [[ $PHASES != *" $1 "* ]]; }; }

AGENT=$top/build/vtpm-agent
BK=$top/build/tools/bench-kube
HOT=$top/build/tools/bench-hotpath
PROV=$top/build/tools/testbed-provisioner
for b in "$AGENT" "$BK" "$HOT" "$PROV"; do
  [ -x "$b" ] || { echo "run-bench: $b missing: run 'make all tools'" >&2; exit 1; }
done

id=$(date +%H%M%S)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$top/bench-results"
work=$(mktemp -d "/tmp/vtpm-bench-$stamp.XXXX")
parts=$work/parts
mkdir -p "$parts" "$work/volumes"
# A private copy of the agent: a rebuild during the run must not swap it.
cp "$AGENT" "$work/vtpm-agent"
AGENT=$work/vtpm-agent
say() { echo "bench: $*" >&2; }
now_ms() { date +%s%3N; }
t_start=$(now_ms)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_phase=$t_start
# phase_done NAME: how long the phase took (printed in the table's last rows)
phase_done() {
  local t; t=$(now_ms)
  echo "{\"phase\":\"$1\",\"s\":$(( (t - t_phase) / 1000 ))}" >> "$parts/phases.jsonl"
  say "phase $1 took $(( (t - t_phase) / 1000 )) s"
  t_phase=$t
}

# ---- test bed ----
started_cluster=0
pids_to_stop=()
cleanup() {
  local p
  # The node path's pods and agent first (the provisioner still serving).
  [ -z "${node_cleanup:-}" ] || $node_cleanup || true
  for p in "${pids_to_stop[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids_to_stop[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$started_cluster" = 1 ]; then "$top/hack/cluster-down.sh" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [ -f "$VTPM_RUN/testbed.env" ] && tb_probe kube-apiserver; then
  say "reusing the running test bed $VTPM_RUN"
else
  say "bringing up a test bed in $VTPM_RUN"
  # No audit log (the bench counts requests from the agent's /metrics), and a
  # kube-controller-manager allowed enough requests to bind thousands of PVCs
  # (its default 20 qps binds ~6 a second, which the Ready times would measure).
  # The node path runs on real nodes with the launcher image (the agent's
  # images come with it: the first build takes minutes).
  nodes_env=(VTPM_NODES=0)
  skip node || nodes_env=(VTPM_NODES=2 VTPM_NODES_AGENT_IMAGE=1)
  # Ours from here: a bring-up that fails half-way is taken down too.
  started_cluster=1
  env "${nodes_env[@]}" VTPM_TB_AUDIT=0 VTPM_TB_KCM_QPS=${BENCH_KCM_QPS:-500} "$top/hack/cluster-up.sh" >/dev/null ||
    { say "the test bed did not come up (see above): taking it down"; exit 1; }
fi
export KUBECONFIG=$TB_KUBECONFIG
phase_done testbed

sys_ns=bench-$id-sys
kubectl create namespace "$sys_ns" >/dev/null
cls=bench-$id-rwx
kubectl apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $cls}
provisioner: vtpm-agent.io/testbed
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- the agent ----
agent_pid=
agent_port=
agent_log=
agent_start() { # LEASE LOGNAME [EXTRA-STATE-YAML]
  agent_port=$(free_port)
  local cfg=$work/$2.yaml
  cat > "$cfg" <<YAML
namespace: $sys_ns
state:
  leaseName: $1
  storageClass: $cls
${3:-}
node: {enabled: false}
http: {listen: "127.0.0.1:$agent_port"}
log: {format: json, level: warn}
YAML
  agent_log=$work/$2.log
  env -u NODE_NAME "$AGENT" --kubeconfig "$KUBECONFIG" --config "$cfg" --identity "bench-$2" >>"$agent_log" 2>&1 &
  agent_pid=$!
  pids_to_stop+=("$agent_pid")
}
agent_readyz() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$agent_port/readyz")" = 200 ]; }
wait_ready() { # -> ms from now until /readyz
  local t0; t0=$(now_ms)
  for _ in $(seq 6000); do
    agent_readyz && { echo $(( $(now_ms) - t0 )); return 0; }
    kill -0 "$agent_pid" 2>/dev/null || { say "agent exited: $(tail -5 "$agent_log")"; return 1; }
    sleep 0.05
  done
  say "agent not ready within 300 s"; return 1
}
agent_stop() {
  [ -n "$agent_pid" ] || return 0
  kill -TERM "$agent_pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$agent_pid" 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=
}
metrics() { curl -s --max-time 5 "http://127.0.0.1:$agent_port/metrics"; }
# metric NAME [LABELS] from a metrics dump on stdin (0 when absent)
metric() { awk -v n="$1" -v l="${2:-}" '
  { key = $1; name = key; sub(/\{.*/, "", name); lab = ""; if (key ~ /\{/) { lab = key; sub(/^[^{]*\{/, "", lab); sub(/\}$/, "", lab) } }
  name == n && (l == "" || lab == l) { v = $2; found = 1 } END { print found ? v + 0 : 0 }'; }
verbs_json() { # metrics dump on stdin -> {"GET":n,...}, summed over the resource label
  awk 'BEGIN { split("GET LIST WATCH CREATE UPDATE PATCH DELETE", vs, " "); for (i in vs) n[vs[i]] = 0 }
    /^vtpm_agent_api_requests_total\{/ { match($1, /verb="[A-Z]+"/); n[substr($1, RSTART + 6, RLENGTH - 7)] += $2 }
    END { for (v in n) out = out (out ? "," : "") "\"" v "\":" (n[v] + 0); print "{" out "}" }'; }
# metrics dump on stdin -> {"GET pods":n,...}: what the counts by verb are made of
resources_json() {
  awk '/^vtpm_agent_api_requests_total\{/ { match($1, /verb="[A-Z]+"/); v = substr($1, RSTART + 6, RLENGTH - 7);
    r = "other"; if (match($1, /resource="[a-z0-9.-]+"/)) r = substr($1, RSTART + 10, RLENGTH - 11);
    out = out (out ? "," : "") "\"" v " " r "\":" ($2 + 0) } END { print "{" out "}" }'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$agent_pid/status"; }
# {"rss_kb":..,"anon_kb":..,"file_kb":..}: RssFile is the shared libraries' pages (libvirt, OpenSSL...)
rss_json() { awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "{\"rss_kb\":%d,\"anon_kb\":%d,\"file_kb\":%d}", r, a, f}' "/proc/$agent_pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
clk_tck=$(getconf CLK_TCK)
wait_drained() { # -> ms from now until the queue is empty and reconciles stop moving for 1 s
  local t0 last=-1 stable=0 m d r
  t0=$(now_ms)
  for _ in $(seq 3000); do
    m=$(metrics)
    d=$(metric vtpm_agent_workqueue_depth 'controller="state"' <<<"$m")
    r=$(metric vtpm_agent_reconciles_total 'controller="state"' <<<"$m")
    l=$(metric vtpm_agent_leader <<<"$m")
    if [ "$l" = 1 ] && [ "$d" = 0 ] && [ "$r" = "$last" ]; then
      stable=$((stable + 1))
      [ $stable -ge 5 ] && { echo $(( $(now_ms) - t0 - 1000 )); return 0; }
    else
      stable=0
    fi
    last=$r
    sleep 0.2
  done
  say "queue did not drain within 600 s"; echo -1
}

# ---- phase: footprint (stand-by agent, nothing written) ----
if ! skip footprint; then
  fp_ns=bench-$id-fp
  # A Lease someone else holds for an hour: the agent caches, stands by, never writes.
  kubectl apply -f - >/dev/null <<YAML
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: bench-$id-held, namespace: $sys_ns}
spec: {holderIdentity: someone-else, leaseDurationSeconds: 3600, renewTime: "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)"}
YAML
  fp_measure() { # N
    agent_start "bench-$id-held" "standby-$1"
    local ms rss
    ms=$(wait_ready)
    sleep 1  # let the first renew attempt and the HTTP thread settle
    rss=$(rss_json)
    agent_stop
    say "footprint: $1 VMs: $rss, ready in $ms ms"
    jq -c --argjson vms "$1" --argjson ms "$ms" '. + {vms: $vms, ready_ms: $ms}' <<<"$rss" >> "$parts/footprint.jsonl"
  }
  fp_measure 0
  have=0
  for n in $FOOTPRINT; do
    t0=$(now_ms)
    "$BK" vm-create --namespace "$fp_ns" --n $((n - have)) --start "$have" > "$work/fp-create-$n.json"
    # VM creates with no agent running: what the bench tool alone gets from the API server.
    cat "$work/fp-create-$n.json" >> "$parts/vm-create.jsonl"
    say "footprint: created $((n - have)) VMs in $(( $(now_ms) - t0 )) ms"
    have=$n
    fp_measure "$n"
  done
  # Its VMs must leave the caches before the burst (half ask for a state PVC):
  # one DELETE of the collection (no finalizers: they go at once), instead of
  # waiting for the namespace controller to work through them.
  kubectl delete --raw "/apis/kubevirt.io/v1/namespaces/$fp_ns/virtualmachines" >/dev/null
  kubectl delete namespace "$fp_ns" --wait=false >/dev/null
  kubectl delete lease -n "$sys_ns" "bench-$id-held" >/dev/null
  for _ in $(seq 600); do
    [ "$(kubectl get --raw "/apis/kubevirt.io/v1/namespaces/$fp_ns/virtualmachines?limit=1" | jq '.items | length')" = 0 ] && break
    sleep 0.5
  done
  phase_done footprint
fi

# ---- phase: burst (agent leads; the provisioner binds) ----
# `local` PVs: the node path's real kubelet mounts those (a hostPath PV is
# used in place, never mounted); for the burst it is the same one object per claim.
"$PROV" --kubeconfig "$KUBECONFIG" --root "$work/volumes" --local >>"$work/provisioner.log" 2>&1 &
pids_to_stop+=("$!")
total_vms=0
if ! skip burst; then
  for n in $SIZES; do
    agent_stop
    agent_start "bench-$id" "leader-$n"
    wait_ready >/dev/null
    # Leader, and done with what exists already (an earlier size's VMs).
    wait_drained >/dev/null
    m0=$(metrics)
    c0=$(cpu_ticks)
    say "burst: $n VMs into bench-$id-vm-$n"
    "$BK" vm-burst --namespace "bench-$id-vm-$n" --n "$n" --timeout 600 --ready-timeout "$READY_TIMEOUT" \
      > "$work/burst-$n.json" || say "burst $n: not every TPMState got a status in time"
    total_vms=$((total_vms + n))
    m1=$(metrics)
    c1=$(cpu_ticks)
    jq -c --argjson v0 "$(verbs_json <<<"$m0")" --argjson v1 "$(verbs_json <<<"$m1")" \
      --argjson cpu "$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / t}')" \
      --argjson rss "$(rss_kb)" \
      '. + {agent_requests: ($v1 | with_entries(.value -= ($v0[.key] // 0))), agent_cpu_s: $cpu, agent_rss_kb: $rss}' \
      "$work/burst-$n.json" > "$parts/burst-$n.json"
    say "burst $n: $(cat "$parts/burst-$n.json")"
  done
  phase_done burst
fi

# ---- phase: steady state ----
if ! skip steady && [ -n "$agent_pid" ]; then
  wait_drained >/dev/null
  sleep 2
  # The Lease watcher's window covers the metrics' window (a renewal just
  # before the first scrape may count on its side only: clamped below).
  "$BK" count-updates --namespace "$sys_ns" --resource coordination.k8s.io/v1/leases --name "bench-$id" \
    --seconds $((STEADY + 600)) > "$work/steady-lease.json" &
  lc=$!
  sleep 1
  m0=$(metrics); c0=$(cpu_ticks)
  say "steady: ${STEADY} s with nothing changing"
  sleep "$STEADY"
  m1=$(metrics); c1=$(cpu_ticks)
  # A renewal sent just before the scrape reaches the watcher; one sent after
  # it is seen by the watcher only (hence the UPDATE difference floored at 0).
  sleep 0.3
  kill -TERM "$lc" 2>/dev/null || true
  wait "$lc" || true
  jq -n -c --argjson v0 "$(verbs_json <<<"$m0")" --argjson v1 "$(verbs_json <<<"$m1")" \
    --argjson lease "$(jq .updates "$work/steady-lease.json" 2>/dev/null || echo null)" \
    --argjson cpu "$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / t}')" \
    --argjson rss "$(rss_kb)" --argjson secs "$STEADY" --argjson vms "$total_vms" \
    --argjson rec "$(( $(metric vtpm_agent_reconciles_total 'controller="state"' <<<"$m1") - $(metric vtpm_agent_reconciles_total 'controller="state"' <<<"$m0") ))" \
    '{seconds: $secs, vms: $vms, cpu_s: $cpu, rss_kb: $rss, reconciles: $rec, lease_updates: $lease,
      requests: ($v1 | with_entries(.value -= ($v0[.key] // 0)))}
     | .writes_beyond_lease = (.requests.CREATE + .requests.PATCH + .requests.DELETE
         + ([.requests.UPDATE - (.lease_updates // 0), 0] | max))' \
    > "$parts/steady.json"
  say "steady: $(cat "$parts/steady.json")"
  phase_done steady
fi

# ---- phase: restart ----
if ! skip restart && [ -n "$agent_pid" ]; then
  agent_stop
  "$BK" count-updates --namespace "$sys_ns" --resource coordination.k8s.io/v1/leases --name "bench-$id" \
    --seconds 600 > "$work/restart-lease.json" &
  lc=$!
  sleep 1.5
  agent_start "bench-$id" "restart"
  ready_ms=$(wait_ready)
  drained_ms=$(wait_drained)
  drained_ms=$((drained_ms + ready_ms))
  m=$(metrics)
  # A renewal sent just before the scrape reaches the watcher; one sent after
  # it is seen by the watcher only (hence the UPDATE difference floored at 0).
  sleep 0.3
  kill -TERM "$lc" 2>/dev/null || true
  wait "$lc" || true
  jq -n -c --argjson v "$(verbs_json <<<"$m")" --argjson vr "$(resources_json <<<"$m")" \
    --argjson lease "$(jq .updates "$work/restart-lease.json")" \
    --argjson ready "$ready_ms" --argjson drained "$drained_ms" --argjson vms "$total_vms" \
    --argjson rec "$(metric vtpm_agent_reconciles_total 'controller="state"' <<<"$m")" \
    --argjson rss "$(rss_kb)" \
    '{vms: $vms, ready_ms: $ready, drained_ms: $drained, reconciles: $rec, rss_kb: $rss, requests: $v,
      requests_by_resource: $vr,
      lease_updates: $lease,
      vm_writes: (($v.CREATE // 0) - 1 + ($v.PATCH // 0) + ($v.DELETE // 0) + ([($v.UPDATE // 0) - $lease, 0] | max))}' \
    > "$parts/restart.json"
  say "restart: $(cat "$parts/restart.json")"
  phase_done restart
fi
agent_stop

# ---- phase: node path ----
if ! skip node; then
  node_cleanup="$top/test/bench/node-path.sh --cleanup $work/node"
  rc=0
  BENCH_ID=$id "$top/test/bench/node-path.sh" "$work/node" "$sys_ns" "$cls" "$STORM" > "$parts/node.json" || rc=$?
  if [ "$rc" = 0 ]; then
    say "node: $(cat "$parts/node.json")"
  elif [ "$rc" = 77 ]; then  # no real nodes: its reason is in the JSON
    say "node path SKIPPED: $(jq -r .skipped "$parts/node.json")"
  else
    say "node path failed; see $work/node"
    echo '{"error":"node path failed"}' > "$parts/node.json"
  fi
  "$top/test/bench/swtpm-bare.sh" "$work/swtpm-bare" 5 "$STORM" > "$parts/swtpm-bare.json" ||
    echo '{"error":"bare swtpm failed"}' > "$parts/swtpm-bare.json"
  say "bare swtpm: $(cat "$parts/swtpm-bare.json")"
  # A live migration's downtime: the TPM's part of the switchover (issue 22).
  python3 "$top/test/bench/swtpm-handover.py" "$work/swtpm-handover" 20 > "$parts/swtpm-handover.json" ||
    echo '{"error":"the swtpm switchover failed"}' > "$parts/swtpm-handover.json"
  say "migration switchover: $(cat "$parts/swtpm-handover.json")"
  phase_done node
fi

# ---- phase: kubevirt (a real VM's start with and without the agent) ----
if ! skip kubevirt; then
  rc=0
  "$top/test/bench/kubevirt-start.sh" "$work/kubevirt" "${BENCH_KUBEVIRT_RUNS:-3}" > "$parts/kubevirt.json" || rc=$?
  if [ "$rc" = 0 ]; then say "kubevirt: $(jq -c 'del(.kubevirt.starts, .agent.starts, .cold)' "$parts/kubevirt.json")"
  elif [ "$rc" = 77 ]; then say "kubevirt phase SKIPPED: $(jq -r .skipped "$parts/kubevirt.json")"
  else
    say "kubevirt phase failed; see $work/kubevirt"
    echo '{"error":"kubevirt phase failed"}' > "$parts/kubevirt.json"
  fi
  phase_done kubevirt
fi

# ---- phase: baseline (bare PVC creates, 16 in flight) ----
if ! skip baseline; then
  for n in $SIZES; do
    "$BK" pvc-burst --namespace "bench-$id-pvc-$n" --n "$n" --inflight 16 > "$parts/baseline-$n.json"
    say "baseline $n: $(cat "$parts/baseline-$n.json")"
  done
  phase_done baseline
fi

# ---- phase: callgrind ----
if ! skip callgrind; then
  stream=$work/vm-watch.json
  ns1=bench-$id-vm-$(echo "$SIZES" | awk '{print $1}')
  kubectl get --raw "/apis/kubevirt.io/v1/namespaces/$ns1/virtualmachines?watch=1&resourceVersion=0&timeoutSeconds=3" \
    > "$stream" 2>/dev/null || true
  [ -s "$stream" ] || stream=
  cg() { # MODE -> {"instructions":..,"events":..}
    local out=$work/cg.$1 res
    res=$(valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$out" \
      "$HOT" "$1" ${stream:+--stream "$stream"} 2>/dev/null)
    jq -c --argjson ir "$(awk '/^summary:/ {print $2}' "$out")" \
      '. + {instructions: $ir, per_event: (($ir / (if .mode == "reconcile" then .persistent else .events end)) | floor)}' <<<"$res"
  }
  jq -n -c --argjson d "$(cg decode)" --argjson r "$(cg reconcile)" --arg src "${stream:+recorded from $ns1}" \
    '{decode: $d, reconcile: $r, stream: (if $src == "" then "synthetic" else $src end)}' > "$parts/callgrind.json"
  say "callgrind: $(cat "$parts/callgrind.json")"
  phase_done callgrind
fi

# ---- the table ----
load="$(cut -d' ' -f1-3 /proc/loadavg) (at start $load_start)"
result=$top/bench-results/$stamp.json
"$top/test/bench/report.sh" "$parts" "$stamp" "$load" "$(( ($(now_ms) - t_start) / 1000 ))" "$result"
say "wrote $result (scratch: $work)"
