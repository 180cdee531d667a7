#!/usr/bin/env bash
# Hole 9: the agent's HTTP endpoint (/metrics, /healthz, /readyz) cannot be
# stalled. The kubelet's liveness probe (timeout 1 s) must keep getting its
# answer while hostile clients are connected: one that sends a byte every 2 s
# and never finishes its headers, 200 that connect and send nothing, 64 from
# one address. Slow and idle connections are cut off within seconds, one
# address gets at most 16 connections, oversized headers and other methods are
# refused, and SIGTERM still stops the agent promptly with a slow client
# connected. (Before libmicrohttpd, one slow client held the single serving
# thread for hours: every probe timed out, and SIGTERM waited for it.)
#
# AGENT_BIN=... runs another build (the attack against the unfixed code).
. "$(dirname "$0")/lib.sh"
plan 18
require_cluster
setup_namespace e2e-62
agent=${AGENT_BIN:-$E2E_TOP/build/asan/vtpm-agent}
clients=$E2E_TOP/test/e2e/http-clients.py
tmp=$(mktemp -d); at_exit rm -rf "$tmp"
[ -x "$agent" ] || bail_out "$agent missing: run 'make asan'"

akc=$("$E2E_TOP/hack/agent-identity.sh" "$NS" "$tmp/identity" "vtpm-agent-e2e-$NS") ||
  bail_out "cannot set up the agent's ServiceAccount identity"
at_exit "kubectl delete clusterrolebinding vtpm-agent-e2e-$NS --ignore-not-found --wait=false >/dev/null"
port=$(free_port) || bail_out "no free TCP port"
url=http://127.0.0.1:$port
cat > "$tmp/config.yaml" <<EOF
namespace: $NS
state:
  leaseName: e2e-62-$RANDOM
http:
  listen: "127.0.0.1:$port"
EOF
"$agent" --kubeconfig "$akc" --config "$tmp/config.yaml" --identity e2e-62 --log-format json > "$tmp/agent.log" 2>&1 &
apid=$!
at_exit "kill -KILL $apid 2>/dev/null"
bg=()
at_exit 'for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done'
wait_until 60 sh -c "curl -sf $url/readyz | grep -q ok" || bail_out "the agent never became ready: $(tail -5 "$tmp/agent.log")"

# N probes one second apart, as the kubelet sends them (timeout 1 s): their
# status codes ("000": no answer in time), the slowest time on stderr.
probes() {
  local n=$1 src=${2:-127.0.0.1} i codes=() out slowest=0
  for (( i = 0; i < n; i++ )); do
    out=$(curl -s -m 1 --interface "$src" -o /dev/null -w '%{http_code} %{time_total}' "$url/healthz")
    codes+=("${out%% *}")
    slowest=$(awk -v a="$slowest" -v b="${out##* }" 'BEGIN { print (b > a ? b : a) }')
    [ $i -eq $((n - 1)) ] || sleep 1
  done
  echo "${codes[*]}"
  diag "slowest /healthz: ${slowest} s"
}

# ---- 1. one slow client: a byte every 2 s, headers that never end ----------
python3 "$clients" slow "$port" 2 30 > "$tmp/slow.out" 2>&1 & bg+=($!)
wait_until 10 grep -q connected "$tmp/slow.out" || bail_out "the slow client did not connect: $(cat "$tmp/slow.out")"
is "$(probes 5)" "200 200 200 200 200" \
  "/healthz answers within 1 s, 5 times over 5 s, while a client sends one byte every 2 s"
wait_until 35 grep -q ' after ' "$tmp/slow.out"
diag "slow client: $(tail -1 "$tmp/slow.out")"
like "$(tail -1 "$tmp/slow.out")" '^closed by the server after [0-7]\.[0-9] s$' \
  "the slow client is cut off by the 5 s deadline, not served for hours"

# ---- 2. 200 idle connections from 13 other addresses -------------------------
python3 "$clients" idle "$port" 200 2 16 20 > "$tmp/idle.out" 2>&1 & bg+=($!)
wait_until 30 grep -q '^opened' "$tmp/idle.out"
is "$(probes 3)" "200 200 200" "/healthz answers within 1 s while 200 idle connections are open ($(head -1 "$tmp/idle.out"))"
wait_until 25 grep -q '^open 0 after\|after 2[0-9]\.' "$tmp/idle.out"
diag "idle clients: $(head -1 "$tmp/idle.out"), then $(tail -1 "$tmp/idle.out")"
like "$(tail -1 "$tmp/idle.out")" '^open 0 after [0-7]\.[0-9] s$' "the server closed every idle connection within seconds"

# ---- 3. one address: at most 16 connections at once -------------------------
python3 "$clients" idle "$port" 64 20 64 2.2 > "$tmp/one.out" 2>&1 & bg+=($!)
wait_until 15 grep -q 'after 2\.' "$tmp/one.out"
diag "one address: $(grep -m1 '^opened' "$tmp/one.out"), then $(grep -m1 'after 1\.' "$tmp/one.out")"
like "$(grep -m1 '^opened' "$tmp/one.out")" '^opened 64$' "64 connections from 127.0.0.20 connect"
like "$(grep -m1 'after 1\.' "$tmp/one.out")" '^open 16 after ' "a second later, 16 of them are still open: the per-address limit"
is "$(probes 2)" "200 200" "/healthz from another address answers within 1 s meanwhile"

# ---- 4. what is refused -------------------------------------------------------
big=$(head -c 12000 /dev/zero | tr '\0' a)
is "$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H "X-Big: $big" "$url/healthz")" 431 \
  "request headers over the per-connection memory: 431"
is "$(curl -s -m 2 -o /dev/null -w '%{http_code}' -X POST "$url/healthz")" 405 "POST: 405"
if m=$(curl -sf -m 2 "$url/metrics" | "$E2E_TOP/test/e2e/metrics-check.py" vtpm_agent_leader); then
  like "$m" "vtpm_agent_leader 1" "/metrics still parses as Prometheus text after all that"
else fail "/metrics still parses as Prometheus text after all that" "$m"; fi

# ---- 5. SIGTERM with a slow client connected ---------------------------------
python3 "$clients" slow "$port" 1 60 > "$tmp/slow2.out" 2>&1 & bg+=($!)
wait_until 10 grep -q connected "$tmp/slow2.out"
kill -TERM "$apid"
if wait_until 10 sh -c "! kill -0 $apid 2>/dev/null"; then
  wait "$apid"; is "$?" 0 "SIGTERM with a slow client connected: the agent exits 0 within 10 s"
else
  fail "SIGTERM with a slow client connected: the agent exits 0 within 10 s" "still running after 10 s"
  kill -KILL "$apid" 2>/dev/null; wait "$apid" 2>/dev/null
fi
ok "the agent logged a clean stop" grep -q '"stopped cleanly"' "$tmp/agent.log"
ok "no sanitizer report" sh -c "! grep -q 'ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer' $tmp/agent.log"

# ---- 6. as shipped, on the real nodes: loopback only, probed there ----------
# The ConfigMap listens on 127.0.0.1:9464 and the DaemonSet's probes say host
# 127.0.0.1 (a hostNetwork pod's IP is the node's address). The pods turning
# Ready is the kubelet's readiness probe answering on loopback; the node's
# address does not answer; a scraper on the node reads /metrics.
if [[ ${VTPM_NODES:-0} =~ ^[0-9]+$ ]] && [ "${VTPM_NODES:-0}" -ge 1 ] && {
     . "$E2E_TOP/hack/testbed-lib.sh"; . "$E2E_TOP/hack/nodes-lib.sh"; . "$E2E_TOP/test/e2e/lib-realnode.sh"
     rn_images_ready; }; then
  at_exit rn_agent_undeploy
  ok "as shipped (deploy/overlays/testbed): the agent's pods turn Ready, probed at 127.0.0.1" rn_agent_deploy
  n1=$(nl_name 1)
  p1=$(rn_agent_pod "$n1")
  ok "inside $n1, 127.0.0.1:9464/healthz answers" nl_in 1 curl -sf -m 2 -o /dev/null "http://127.0.0.1:9464/healthz"
  is "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$(nl_ip 1):9464/metrics")" 000 \
    "$n1's address $(nl_ip 1):9464 does not answer: nothing off the node reaches the endpoint"
  # A scraper on the node (kubectl port-forward would be the other way, but
  # the test bed's API server cannot resolve node names to reach a kubelet).
  if m=$(nl_in 1 curl -sf -m 5 "http://127.0.0.1:9464/metrics" | "$E2E_TOP/test/e2e/metrics-check.py" vtpm_agent_launchers); then
    pass "a scraper on $n1 reads /metrics at 127.0.0.1:9464"
  else fail "a scraper on $n1 reads /metrics at 127.0.0.1:9464" "$m"; fi
  is "$(kubectl -n vtpm-system get pod "$p1" -o jsonpath='{.status.containerStatuses[0].restartCount}')" 0 \
    "the liveness probe (same host) never restarted it"
else
  for d in "pods Ready, probed at 127.0.0.1" "127.0.0.1:9464 answers in the node" "the node's address does not answer" \
           "a scraper on the node reads /metrics" "no liveness restart"; do skip "needs the real nodes and their images: $d"; done
fi
