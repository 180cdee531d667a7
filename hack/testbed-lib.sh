# Shared shell helpers for the local test bed (etcd, kube-apiserver,
# kube-controller-manager on loopback). Sourced by hack/cluster-up.sh,
# hack/cluster-down.sh, hack/gen-certs.sh and hack/testbed.sh; suites may source
# it too. Nothing here starts anything when sourced.
#
# Everything lives under $VTPM_RUN (default /tmp/vtpm-testbed):
#   pki/                  CA, serving and client certificates, service-account keys
#   admin.kubeconfig      admin credential (O=system:masters), embedded *-data fields
#   kube-controller-manager.kubeconfig
#   pids/NAME.pid         one per process we started (setsid, so each leads its session)
#   logs/NAME.log         stdout+stderr of each process (appended across restarts)
#   certs/                scratch cert dirs the components insist on having
#   testbed.env           ports and paths of the running test bed (sourceable)
# etcd's data directory is on tmpfs: $TB_ETCD_DATA (/dev/shm/vtpm<VTPM_RUN with / as ->.etcd,
# e.g. /dev/shm/vtpm-tmp-vtpm-testbed.etcd). Ports: etcd 23790 (peer 23800), kube-apiserver
# 16443, kube-controller-manager 10357; override with VTPM_{ETCD,ETCD_PEER,APISERVER,KCM}_PORT.
#
# Functions (on failure: a message on stderr and non-zero; tb_start, tb_wait_healthy
# and tb_restart_apiserver exit the calling shell: call them via hack/testbed.sh from tests):
#   tb_pid NAME            print the pid of our live NAME process (etcd, kube-apiserver,
#                          kube-controller-manager); fails if not running
#   tb_start NAME          start NAME if not running, wait until it is healthy
#   tb_stop NAME [SECS]    TERM, then KILL after SECS (default 20); idempotent
#   tb_probe NAME          one quiet health check (etcd /health, apiserver /readyz, kcm /healthz)
#   tb_wait_healthy NAME [SECS]
#   tb_restart_apiserver   stop and start kube-apiserver only (etcd keeps its data)
#   tb_etcd_revision       print etcd's current revision
#   tb_compact_etcd        compact etcd (physically) to its current revision; print it
#   tb_our_pids            pids of any process running one of our binaries for this $VTPM_RUN
#   tb_bin_pids            pids of any process running one of our binaries (any test bed)
#   tb_kubectl ARGS...     kubectl with the admin kubeconfig
#   tb_kubevirt_wait_serving [SECS]  KubeVirt admits and runs VMs (after its nodes came back)

here_tb=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here_tb/versions.sh"

VTPM_RUN=${VTPM_RUN:-/tmp/vtpm-testbed}
# tb_kubevirt: the test bed runs real KubeVirt (built from ../shared/kubevirt/,
# installed by virt-operator): the default whenever it has nodes. VTPM_KUBEVIRT=0,
# or a bed without nodes, uses the hand-written stand-ins of KubeVirt's CRDs
# (hack/stand-ins/) instead: a quick control-plane-only run.
tb_kubevirt() { [ "${VTPM_KUBEVIRT:-1}" != 0 ] && [[ ${VTPM_NODES:-0} =~ ^[1-9] ]]; }
# tb_agent_images: the images hack/build-image.sh makes for the nodes when
# VTPM_NODES_AGENT_IMAGE is set (hack/nodes-up.sh imports them, hack/build-all.sh
# builds them ahead): the agent, a second one to roll to, the test launcher,
# and the one with libvirt and QEMU only with VTPM_NODES_LIBVIRT_IMAGE (~480 MB).
tb_agent_images() { echo vtpm-agent vtpm-agent-next launcher ${VTPM_NODES_LIBVIRT_IMAGE:+launcher-libvirt}; }
# tb_kubevirt_wait_serving [SECS]: wait until KubeVirt admits and runs VMs:
# virt-api, virt-controller and virt-handler rolled out, and virt-api's webhooks
# admit a VirtualMachine (a server-side dry run). After nodes-down and nodes-up the
# API keeps KubeVirt's objects and the CR still says Available while virt-api's new
# pod starts: for half a minute every VM is refused ("failed calling webhook").
tb_kubevirt_wait_serving() {
  local secs=${1:-300} deadline out
  deadline=$(( $(date +%s) + secs ))
  tb_kubectl -n kubevirt rollout status deployment/virt-api deployment/virt-controller \
    daemonset/virt-handler --timeout "${secs}s" >&2 || { tb_log "KubeVirt's components not rolled out"; return 1; }
  until out=$(tb_kubectl apply --dry-run=server -f - 2>&1 <<'EOF'
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: testbed-admission-probe, namespace: default}
spec:
  runStrategy: Halted
  template: {spec: {domain: {devices: {}, resources: {requests: {memory: 64Mi}}}}}
EOF
  ); do
    [ "$(date +%s)" -lt "$deadline" ] || { tb_log "virt-api's webhooks refuse a VM: $out"; return 1; }
    sleep 2
  done
}
TB_PKI=$VTPM_RUN/pki
TB_PIDS=$VTPM_RUN/pids
TB_LOGS=$VTPM_RUN/logs
TB_KUBECONFIG=$VTPM_RUN/admin.kubeconfig
# Non-default ports, so the test bed never meets a real cluster's components.
TB_ETCD_PORT=${VTPM_ETCD_PORT:-23790}
TB_ETCD_PEER_PORT=${VTPM_ETCD_PEER_PORT:-23800}
TB_APISERVER_PORT=${VTPM_APISERVER_PORT:-16443}
TB_KCM_PORT=${VTPM_KCM_PORT:-10357}
TB_SERVICE_CIDR=10.96.0.0/16
TB_SERVICE_IP=10.96.0.1
TB_ETCD_URL=http://127.0.0.1:$TB_ETCD_PORT
TB_APISERVER_URL=https://127.0.0.1:$TB_APISERVER_PORT
# One data directory per $VTPM_RUN, so two test beds never share etcd state.
TB_ETCD_DATA=${VTPM_ETCD_DATA:-/dev/shm/vtpm$(printf %s "$VTPM_RUN" | tr -c 'A-Za-z0-9\n' -).etcd}
TB_COMPONENTS=(etcd kube-apiserver kube-controller-manager)

tb_log() { echo "testbed: $*" >&2; }
tb_die() { echo "testbed: error: $*" >&2; exit 1; }
tb_now_ms() { date +%s%3N; }

tb_bin() {
  case $1 in
    etcd) echo "$ETCD_BIN/etcd" ;;
    *) echo "$K8S_BIN/$1" ;;
  esac
}

tb_port() {
  case $1 in
    etcd) echo "$TB_ETCD_PORT" ;;
    kube-apiserver) echo "$TB_APISERVER_PORT" ;;
    kube-controller-manager) echo "$TB_KCM_PORT" ;;
  esac
}

# tb_is_ours PID: PID runs one of our binaries with this $VTPM_RUN (or our etcd
# data dir) on its command line: a recycled pid or another test bed never matches.
tb_is_ours() {
  local pid=$1 exe cmd
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}  # a binary rebuilt while running still counts
  case $exe in "$K8S_BIN"/*|"$ETCD_BIN"/*) ;; *) return 1 ;; esac
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $cmd in *"$VTPM_RUN/"*|*" $TB_ETCD_DATA "*) return 0 ;; esac
  return 1
}

tb_pid() {
  local f=$TB_PIDS/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  # A zombie (exited, not yet reaped) is not running.
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  tb_is_ours "$pid" || return 1
  echo "$pid"
}

# One find over /proc for the exe links, then the full check on candidates only.
tb_bin_pids() {
  find /proc -mindepth 2 -maxdepth 2 -name exe -printf '%h %l\n' 2>/dev/null |
    while read -r dir exe; do
      case ${exe% (deleted)} in "$K8S_BIN"/*|"$ETCD_BIN"/*) echo "${dir#/proc/}" ;; esac
    done
  return 0  # find complains about processes that vanish mid-scan
}

tb_our_pids() {
  local pid
  for pid in $(tb_bin_pids); do
    tb_is_ours "$pid" && echo "$pid"
  done
  return 0
}

tb_curl() { # URL, authenticated as the admin over TLS
  curl -sS --max-time 5 --cacert "$TB_PKI/ca.crt" --cert "$TB_PKI/admin.crt" \
    --key "$TB_PKI/admin.key" "$@"
}

# tb_probe NAME: one health check, quiet; 0 when healthy.
tb_probe() {
  case $1 in
    etcd) curl -s --max-time 3 "$TB_ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) [ "$(tb_curl "$TB_APISERVER_URL/readyz" 2>/dev/null)" = ok ] ;;
    kube-controller-manager)
      [ "$(curl -s --max-time 3 -k "https://127.0.0.1:$TB_KCM_PORT/healthz" 2>/dev/null)" = ok ] ;;
  esac
}

tb_wait_healthy() {
  local name=$1 secs=${2:-60} deadline
  deadline=$(( $(date +%s) + secs ))
  while ! tb_probe "$name"; do
    if ! tb_pid "$name" >/dev/null; then
      tail -n 20 "$TB_LOGS/$name.log" >&2 2>/dev/null || true
      tb_die "$name exited while starting; see $TB_LOGS/$name.log"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 20 "$TB_LOGS/$name.log" >&2 2>/dev/null || true
      tb_die "$name not healthy after ${secs}s; see $TB_LOGS/$name.log"
    fi
    sleep 0.2
  done
}

# Opt-in knobs for the benchmark's own test bed (defaults: as the tests need):
#   VTPM_TB_AUDIT=0      no audit log (suites count requests from it; `make bench`
#                        counts them from the agent's /metrics instead)
#   VTPM_TB_KCM_QPS=N    kube-controller-manager's client limit (burst twice
#                        that). The test bed's default is 200, not upstream's 20
#                        (burst 30), under which its PV binder, a few writes per
#                        claim, took 56 s to bind suite 49's 300 claims (14 s at
#                        200). The benchmark binds thousands: it sets 500.
tb_audit_args() {
  [ "${VTPM_TB_AUDIT:-1}" = 0 ] && return 0
  echo --audit-policy-file "$VTPM_RUN/audit-policy.yaml" --audit-log-path "$TB_LOGS/audit.log" \
    --audit-log-maxsize 2000 --audit-log-maxbackup 1
}
# The suites read audit.log from an offset taken when they start: a rotation
# in the middle of one loses what it counts (suite 70 read nothing after the
# log passed 200 MB during a full `make test`, which writes about 215 MB).
# 2,000 MB: no rotation in a run, with room for the suites to grow tenfold.

# kube-apiserver's aggregation layer (front-proxy certificates, made by
# gen-certs.sh) serves KubeVirt's subresource API (virt-api). There is no
# kube-proxy, so ClusterIPs mean nothing on the host: with
# --enable-aggregator-routing the API server dials a Service's endpoints (the
# pod's address, routed to its node by nodes-up.sh), for APIServices and
# admission webhooks alike. Kubelets (kubectl logs, exec) are reached at their
# node's InternalIP: there is no DNS for node names.
tb_args() {
  case $1 in
    etcd)
      echo --name vtpm-testbed --data-dir "$TB_ETCD_DATA" \
        --listen-client-urls "$TB_ETCD_URL" --advertise-client-urls "$TB_ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$TB_ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$TB_ETCD_PEER_PORT" \
        --initial-cluster "vtpm-testbed=http://127.0.0.1:$TB_ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level warn ;;
    kube-apiserver)
      echo --etcd-servers "$TB_ETCD_URL" \
        --bind-address 127.0.0.1 --secure-port "$TB_APISERVER_PORT" \
        --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
        --tls-cert-file "$TB_PKI/apiserver.crt" --tls-private-key-file "$TB_PKI/apiserver.key" \
        --client-ca-file "$TB_PKI/ca.crt" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$TB_PKI/sa.pub" \
        --service-account-signing-key-file "$TB_PKI/sa.key" \
        --authorization-mode Node,RBAC \
        --service-cluster-ip-range "$TB_SERVICE_CIDR" \
        --allow-privileged=true \
        --requestheader-client-ca-file "$TB_PKI/front-proxy-ca.crt" \
        --requestheader-allowed-names front-proxy-client \
        --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
        --requestheader-extra-headers-prefix X-Remote-Extra- \
        --proxy-client-cert-file "$TB_PKI/front-proxy-client.crt" \
        --proxy-client-key-file "$TB_PKI/front-proxy-client.key" \
        --enable-aggregator-routing=true \
        --kubelet-client-certificate "$TB_PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$TB_PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --shutdown-watch-termination-grace-period 2s \
        $(tb_audit_args) \
        --cert-dir "$VTPM_RUN/certs/kube-apiserver" ;;
    kube-controller-manager)
      local kc=$VTPM_RUN/kube-controller-manager.kubeconfig
      echo --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
        --bind-address 127.0.0.1 --secure-port "$TB_KCM_PORT" \
        --service-account-private-key-file "$TB_PKI/sa.key" --root-ca-file "$TB_PKI/ca.crt" \
        --cluster-signing-cert-file "$TB_PKI/ca.crt" --cluster-signing-key-file "$TB_PKI/ca.key" \
        --use-service-account-credentials --leader-elect=false \
        --client-ca-file "$TB_PKI/ca.crt" --authentication-skip-lookup \
        --kube-api-qps "${VTPM_TB_KCM_QPS:-200}" --kube-api-burst $((${VTPM_TB_KCM_QPS:-200} * 2)) \
        --cert-dir "$VTPM_RUN/certs/kube-controller-manager" ;;
  esac
}

# tb_start NAME: start NAME (if not already running) in its own session, record
# its pid, and wait until it answers its health check.
tb_start() {
  local name=$1 bin pid port holder t0
  bin=$(tb_bin "$name")
  [ -x "$bin" ] || tb_die "$bin missing: build the control plane first (make control-plane)"
  if pid=$(tb_pid "$name"); then
    tb_wait_healthy "$name" 60
    return 0
  fi
  port=$(tb_port "$name")
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
  [ -z "$holder" ] || tb_die "port $port (for $name) is taken by a process that is not ours: $holder"
  mkdir -p "$TB_PIDS" "$TB_LOGS"
  if [ "$name" = etcd ]; then mkdir -p -m 700 "$TB_ETCD_DATA"; else mkdir -p "$VTPM_RUN/certs/$name"; fi
  # Audit log (one JSON line per request, with its userAgent): suites count a
  # client's requests from it. Metadata only: no bodies, so no secrets.
  [ "$name" != kube-apiserver ] || printf '%s\n' 'apiVersion: audit.k8s.io/v1' 'kind: Policy' \
    'omitStages: [RequestReceived]' 'rules: [{level: Metadata}]' > "$VTPM_RUN/audit-policy.yaml"
  echo "==== $(date -u +%FT%TZ) starting $name" >> "$TB_LOGS/$name.log"
  t0=$(tb_now_ms)
  # shellcheck disable=SC2046 # tb_args words are paths without spaces
  # No descriptor but the log may be inherited: fd 9 is cluster-up's lock, and
  # `flock FILE cmd` (the suites' shared lock) opens FILE as fd 3; a component
  # restarted by a suite (tb_restart_apiserver) would hold either for its life.
  setsid "$bin" $(tb_args "$name") >> "$TB_LOGS/$name.log" 2>&1 < /dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  # setsid execs in place here (a background child is not a group leader),
  # so $! is the component's own pid.
  pid=$!
  echo "$pid" > "$TB_PIDS/$name.pid"
  # Until the exec, /proc/$pid/exe is still bash: wait for it (or its death).
  local i
  for i in $(seq 50); do
    tb_is_ours "$pid" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  tb_wait_healthy "$name" "${TB_START_TIMEOUT:-90}"
  tb_log "$name healthy after $(( $(tb_now_ms) - t0 )) ms (pid $(cat "$TB_PIDS/$name.pid"), log $TB_LOGS/$name.log)"
}

tb_stop() {
  local name=$1 secs=${2:-20} pid deadline
  if pid=$(tb_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + secs ))
    while tb_pid "$name" >/dev/null; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        tb_log "$name (pid $pid) ignored TERM for ${secs}s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.1
    done
  fi
  rm -f "$TB_PIDS/$name.pid"
}

tb_restart_apiserver() {
  local kcm_was_up=
  ! tb_pid kube-controller-manager >/dev/null || kcm_was_up=1
  tb_stop kube-apiserver
  tb_start kube-apiserver
  # kube-controller-manager rides out an API server restart once its
  # controllers run, but exits if it was still starting them: bring it back.
  if [ -n "$kcm_was_up" ] && ! tb_pid kube-controller-manager >/dev/null; then
    tb_log "kube-controller-manager exited during the restart: starting it again"
    tb_start kube-controller-manager
  fi
}

tb_etcd_revision() {
  local out rev
  out=$(curl -sS --max-time 5 -X POST "$TB_ETCD_URL/v3/kv/range" -d '{"key":"AA=="}') ||
    { echo "testbed: etcd at $TB_ETCD_URL unreachable" >&2; return 1; }
  rev=$(jq -r '.header.revision // empty' <<<"$out")
  [ -n "$rev" ] || { echo "testbed: unexpected etcd reply: $out" >&2; return 1; }
  echo "$rev"
}

# tb_compact_etcd: compact to the current revision, so any watch or list that
# asks etcd for an older resourceVersion gets "compacted" (410 Gone upstream).
tb_compact_etcd() {
  local rev out
  rev=$(tb_etcd_revision) || return 1
  out=$(curl -sS --max-time 30 -X POST "$TB_ETCD_URL/v3/kv/compaction" \
    -d "{\"revision\":\"$rev\",\"physical\":true}") || return 1
  if jq -e '.header.revision' >/dev/null 2>&1 <<<"$out"; then
    echo "$rev"
  elif grep -q 'required revision has been compacted' <<<"$out"; then
    echo "$rev"  # already compacted to exactly this revision
  else
    echo "testbed: etcd compaction to $rev failed: $out" >&2
    return 1
  fi
}

tb_kubectl() { KUBECONFIG=$TB_KUBECONFIG "$K8S_BIN/kubectl" "$@"; }

tb_write_env() {
  cat > "$VTPM_RUN/testbed.env.tmp" <<EOF
# Written by hack/cluster-up.sh: the running test bed. Sourceable.
VTPM_RUN=$VTPM_RUN
KUBECONFIG=$TB_KUBECONFIG
TB_APISERVER_URL=$TB_APISERVER_URL
TB_ETCD_URL=$TB_ETCD_URL
TB_ETCD_DATA=$TB_ETCD_DATA
TB_KCM_PORT=$TB_KCM_PORT
TB_CA=$TB_PKI/ca.crt
K8S_BIN=$K8S_BIN
ETCD_BIN=$ETCD_BIN
EOF
  mv "$VTPM_RUN/testbed.env.tmp" "$VTPM_RUN/testbed.env"
}
