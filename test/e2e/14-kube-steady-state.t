#!/usr/bin/env bash
# Issue 3, acceptance 5: with its cache in a steady state, an informer issues
# no request besides its open watch, and a resync re-delivers the cache
# without any API call. Counted on the server side, from kube-apiserver's
# audit log (hack/testbed-lib.sh starts it with a Metadata-level policy), by
# the probe's user agent "informer-probe", over QUIET_SECS (default 20) of quiet.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../tools/kube-probe.sh"

QUIET_SECS=${QUIET_SECS:-20}
AUDIT=${VTPM_AUDIT_LOG:-$VTPM_RUN/logs/audit.log}
require_cluster
[ -s "$AUDIT" ] || skip_all "no kube-apiserver audit log at $AUDIT (test bed started without --audit-log-path)"

plan 8
setup_namespace e2e-kube-steady
UA=informer-probe

# Audit events by our user agent from byte offset $1 on, as "verb stage uri".
audit_since() {
  tail -c +"$(($1 + 1))" "$AUDIT" | jq -r --arg ua "$UA" 'select(.userAgent == $ua) |
    "\(.verb) \(.stage) \(.requestURI)"' 2>/dev/null | grep "/namespaces/$NS/" || true
}

ok "create 50 ConfigMaps" bash -c "for i in \$(seq 0 49); do printf '{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"s-%d\"}}\n' \$i; done |
  jq -s '{apiVersion: \"v1\", kind: \"List\", items: .}' | kubectl -n $NS create -f - >/dev/null"
start=$(stat -c %s "$AUDIT")
probe_start /v1/configmaps "$NS"
wait_until 60 grep -q '^SYNCED ' "$PROBE_OUT" && pass "the informer synced" ||
  fail "the informer synced" "$(tail -5 "$PROBE_ERR")"
wait_until 30 probe_matches configmaps || diag "cache not equal to the server's state"

# The counting works: the probe's LIST and its WATCH are in the log.
got_list_and_watch() {
  local a; a=$(audit_since "$start")
  grep -q '^list ResponseComplete ' <<<"$a" && grep -q '^watch ResponseStarted .*watch=1' <<<"$a"
}
if wait_until 10 got_list_and_watch; then pass "the audit log shows the probe's LIST and WATCH (user agent $UA)"
else fail "the audit log shows the probe's LIST and WATCH (user agent $UA)" "$(audit_since "$start")"; fi

# Quiet period. This sleep is the measurement window itself, not a wait for
# something to happen. Halfway through, a resync.
s0=$(probe_stats)
mark=$(stat -c %s "$AUDIT")
sleep $((QUIET_SECS / 2))
n_upd=$(grep -c '^UPDATE ' "$PROBE_OUT")
probe_cmd resync '^RESYNCED$'
is "$(( $(grep -c '^UPDATE ' "$PROBE_OUT") - n_upd ))" 51 \
  "resync re-delivered the 51 cached objects (50 + kube-root-ca.crt) as updates"
sleep $((QUIET_SECS - QUIET_SECS / 2))
s1=$(probe_stats)
# The apiserver writes each audit event when its stage ends: one more second
# for the file to hold anything still in flight.
sleep 1
quiet=$(audit_since "$mark")
n=$(grep -c . <<<"$quiet")
is "$n" 0 "no request by $UA in ${QUIET_SECS}s of steady state, resync included (audit log)"
diag "requests by $UA during ${QUIET_SECS}s of steady state: $n (server side, audit log)"
[ "$n" -eq 0 ] || diag "$quiet"
is "$(jq .requests <<<"$s1")" "$(jq .requests <<<"$s0")" "the client's own request counter did not move either ($(jq .requests <<<"$s1"))"
is "$(jq -c '{watches, resumes, lists}' <<<"$s1")" '{"watches":1,"resumes":0,"lists":1}' "still the one WATCH opened after the one LIST"
# The watch is still open: a change arrives through it, with no new request.
mark2=$(stat -c %s "$AUDIT")
k create configmap s-late >/dev/null
if wait_until 30 grep -q "^ADD $NS/s-late " "$PROBE_OUT"; then
  is "$(audit_since "$mark2")" "" "a later change arrives through the open watch, with no new request"
else fail "a later change arrives through the open watch"; fi
