#!/usr/bin/env bash
# Issue 3, acceptance 2: the informer (build/tools/informer-probe) loses no
# event when its connection dies mid-stream, and relists on 410 Gone.
#   A1  its TCP connections are killed (ss -K) while writes continue: the watch
#       resumes from its resourceVersion (resumes > 0, still one LIST).
#   A2  kube-apiserver is stopped and started while writes continue (vtpm-agent
#       --check names "connection refused" meanwhile): the cache ends equal to
#       the server's state (resumes grew).
#   B   the probe is frozen (SIGSTOP) across an apiserver restart, objects are
#       created, updated and deleted, etcd is compacted past the probe's
#       resourceVersion, then it thaws: its WATCH gets 410 Gone, it relists
#       (relistsGone grew) and its handlers see exactly the missed changes.
# The stats counters prove each path ran.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../tools/kube-probe.sh"

AGENT=${VTPM_AGENT:-$E2E_TOP/build/vtpm-agent}
[ -x "$AGENT" ] || bail_out "$AGENT missing: run 'make all'"
plan 20
setup_namespace e2e-kube-recovery
server_url=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
port=${server_url##*:}

gen_cms() { # PREFIX FROM TO VALUE
  jq -n --arg p "$1" --argjson a "$2" --argjson b "$3" --arg v "$4" \
    '{apiVersion: "v1", kind: "List", items: [range($a; $b) as $i |
      {apiVersion: "v1", kind: "ConfigMap", metadata: {name: "\($p)-\($i)"}, data: {v: $v}}]}'
}
stat_of() { jq -r ".$1" <<<"$2"; }

ok "create 300 ConfigMaps" bash -c "$(declare -f gen_cms); gen_cms cm 0 300 0 | kubectl -n $NS create -f - >/dev/null"
probe_start /v1/configmaps "$NS"
wait_until 60 grep -q '^SYNCED ' "$PROBE_OUT" && pass "the informer synced" ||
  fail "the informer synced" "$(tail -5 "$PROBE_ERR")"

# A writer that keeps going whatever happens to the API server: each round
# creates 5 ConfigMaps and updates one of the first 300.
stop_writer=$(mktemp -u /tmp/kube-writer-stop.XXXXXX)
writer() {
  local i=0
  while [ ! -e "$stop_writer" ]; do
    gen_cms "w$i" 0 5 "$i" | kubectl -n "$NS" create -f - >/dev/null 2>&1 || sleep 0.2
    kubectl -n "$NS" patch cm "cm-$((i % 300))" --type merge -p "{\"data\":{\"v\":\"w$i\"}}" >/dev/null 2>&1 || true
    i=$((i + 1))
  done
}
writer & writer_pid=$!
at_exit "touch $stop_writer; wait $writer_pid 2>/dev/null; rm -f $stop_writer"
events_over() { [ "$(probe_stats | jq .events)" -gt "$1" ]; }
wait_until 60 events_over 10 || diag "the writer is slow: fewer than 10 events in 60 s"

# ---- A1: kill the probe's connections mid-stream ----
s0=$(probe_stats)
socks=$(ss -tnpH "( dport = :$port )" | grep "pid=$PROBE_PID," | awk '{print $4}' | sed 's/.*://')
if [ -n "$socks" ]; then
  for sp in $socks; do ss -K -tn "( sport = :$sp and dport = :$port )" >/dev/null; done
  pass "killed the probe's $(wc -w <<<"$socks") TCP connection(s) to the API server (ss -K)"
else
  fail "killed the probe's TCP connections" "no connection of pid $PROBE_PID to port $port: $(ss -tnpH)"
fi
e0=$(stat_of events "$s0")
wait_until 60 events_over $((e0 + 10)) || diag "no new events within 60 s after the kill"
s1=$(probe_stats)
is "$(jq -c '{lists, relistsGone}' <<<"$s1")" '{"lists":1,"relistsGone":0}' "A1: no relist after the killed connection"
if [ "$(stat_of resumes "$s1")" -gt 0 ] && [ "$(stat_of watches "$s1")" -gt "$(stat_of watches "$s0")" ]; then
  pass "A1: the watch resumed (resumes=$(stat_of resumes "$s1"), watches=$(stat_of watches "$s1"))"
else fail "A1: the watch resumed" "$s0" "$s1"; fi

# ---- A2: stop and start kube-apiserver while writes continue ----
ok "stop kube-apiserver" "$E2E_TOP/hack/testbed.sh" stop-apiserver
out=$("$AGENT" --check --log-format text --kubeconfig "$KUBECONFIG" 2>&1); rc=$?
is "$rc" 1 "vtpm-agent --check exits 1 while the API server is down"
like "$out" "connection refused" "... naming the cause: connection refused"
ok "start kube-apiserver" "$E2E_TOP/hack/testbed.sh" start-apiserver
writes_before=$(k get cm -o name | wc -l)
wait_until 60 bash -c "[ \$(kubectl -n $NS get cm -o name | wc -l) -gt $((writes_before + 20)) ]" ||
  diag "the writer made little progress after the restart"
touch "$stop_writer"; wait "$writer_pid"
if wait_until 90 probe_matches configmaps; then pass "A2: after the restart the cache equals the server's state"
else fail "A2: after the restart the cache equals the server's state" "$(diff <(probe_dump) <(server_state configmaps) | head)"; fi
s2=$(probe_stats)
if [ "$(stat_of resumes "$s2")" -gt "$(stat_of resumes "$s1")" ]; then
  pass "A2: the informer reconnected by itself (resumes $(stat_of resumes "$s1") -> $(stat_of resumes "$s2"))"
else fail "A2: the informer reconnected by itself" "$s1" "$s2"; fi
hist=$(awk -f "$PROBE_CHECK_AWK" "$PROBE_OUT")
is "$(grep '^BAD' <<<"$hist" | head -10)" "" "A1+A2: per key rv strictly increasing, no (key, rv) twice, no callback out of order"
diag "after A1+A2: $s2"

# ---- B: 410 Gone after compaction ----
kill -STOP "$PROBE_PID"
mark=$(wc -l < "$PROBE_OUT")
probe_rv=$(stat_of resourceVersion "$s2")
ok "restart kube-apiserver while the probe is frozen" "$E2E_TOP/hack/testbed.sh" restart-apiserver
ok "meanwhile: 20 creates" bash -c "$(declare -f gen_cms); gen_cms gone 0 20 0 | kubectl -n $NS create -f - >/dev/null"
ok "meanwhile: 20 updates" bash -c "$(declare -f gen_cms); gen_cms cm 0 20 missed | kubectl -n $NS replace -f - >/dev/null"
ok "meanwhile: 20 deletes" kubectl -n "$NS" delete cm --wait=false $(seq -f 'cm-%g' 280 299)
rev=$("$E2E_TOP/hack/testbed.sh" compact-etcd)
if [ -n "$rev" ] && [ "$rev" -gt "$probe_rv" ]; then pass "etcd compacted to $rev, past the probe's resourceVersion $probe_rv"
else fail "etcd compacted past the probe's resourceVersion" "rev '$rev', probe at $probe_rv"; fi
kill -CONT "$PROBE_PID"
if wait_until 90 probe_matches configmaps; then pass "B: the cache converges on the server's state"
else fail "B: the cache converges on the server's state" "$(diff <(probe_dump) <(server_state configmaps) | head)"; fi
s3=$(probe_stats)
if [ "$(stat_of relistsGone "$s3")" -gt "$(stat_of relistsGone "$s2")" ] && [ "$(stat_of lists "$s3")" -gt "$(stat_of lists "$s2")" ]; then
  pass "B: 410 Gone made it relist (relistsGone $(stat_of relistsGone "$s2") -> $(stat_of relistsGone "$s3"))"
else fail "B: 410 Gone made it relist" "$s2" "$s3"; fi
# What the handlers saw after the thaw: exactly the missed changes.
after=$(tail -n +$((mark + 1)) "$PROBE_OUT" | grep -E '^(ADD|UPDATE|DELETE) ' | awk '{print $1, $2}' | sort)
want=$( { seq -f "ADD $NS/gone-%g" 0 19; seq -f "UPDATE $NS/cm-%g" 0 19; seq -f "DELETE $NS/cm-%g" 280 299; } | sort)
is "$after" "$want" "B: the relist delivered exactly 20 ADDs, 20 UPDATEs and 20 DELETEs for the missed changes"
diag "after B: $s3"
