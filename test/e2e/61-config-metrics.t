#!/usr/bin/env bash
# Issue 7: the configuration refuses bad input at start with file:line:column;
# /metrics parses as Prometheus text and its counters move as the agent works;
# /healthz and /readyz answer; SIGTERM ends the agent cleanly.
. "$(dirname "$0")/lib.sh"
require_cluster
setup_namespace e2e-61
agent=$E2E_TOP/build/asan/vtpm-agent
check=$E2E_TOP/test/e2e/metrics-check.py
tmp=$(mktemp -d); at_exit rm -rf "$tmp"

# --- configuration errors: each fails fast, naming file:line:column
bad() { # NAME TEXT WANT-REGEX DESC
  printf '%s' "$2" > "$tmp/$1.yaml"
  local out rc
  out=$("$agent" --config "$tmp/$1.yaml" --check 2>&1); rc=$?
  if [ $rc -eq 2 ] && [[ $out =~ $3 ]]; then pass "$4"; else fail "$4" "exit $rc: $out"; fi
}
bad unknown $'namespace: vtpm-system\nstate:\n  worker: 4\n' \
  "$tmp/unknown.yaml:3:3: unknown key \"state.worker\"" "unknown key refused with file:line:column"
bad type $'state:\n  enabled: yes-please\n' \
  "$tmp/type.yaml:2:12: \"state.enabled\" must be true or false" "wrong type refused with file:line:column"
bad path $'node:\n  kubeletRoot: var/lib/kubelet\n' \
  "$tmp/path.yaml:2:16: \"node.kubeletRoot\" must be an absolute path" "relative path refused with file:line:column"
bad file $'keys:\n  provider: kmip\n  kmip:\n    endpoint: k:5696\n    caFile: /nonexistent/ca.pem\n' \
  "$tmp/file.yaml:5:13: \"keys.kmip.caFile\": cannot read /nonexistent/ca.pem" "unreadable file refused with file:line:column"
bad syntax $'state: [\n' "$tmp/syntax.yaml:2:1:" "YAML syntax error with file:line:column"

# --- a running agent: probes, metrics, clean stop
# As the product's ServiceAccount (TokenRequest token), this namespace its own.
akc=$("$E2E_TOP/hack/agent-identity.sh" "$NS" "$tmp/identity" "vtpm-agent-e2e-$NS") ||
  bail_out "cannot set up the agent's ServiceAccount identity"
at_exit "kubectl delete clusterrolebinding vtpm-agent-e2e-$NS --ignore-not-found --wait=false >/dev/null"
port=$(free_port) || bail_out "no free TCP port"
cat > "$tmp/config.yaml" <<EOF
namespace: $NS
state:
  leaseName: e2e-61-$RANDOM
http:
  listen: "127.0.0.1:$port"
EOF
"$agent" --kubeconfig "$akc" --config "$tmp/config.yaml" --identity e2e-61 --log-format json > "$tmp/agent.log" 2>&1 &
apid=$!
at_exit "kill $apid 2>/dev/null"
ok "/readyz answers ok once the caches are synced" wait_until 60 sh -c "curl -sf http://127.0.0.1:$port/readyz | grep -q ok"
ok "/healthz answers ok" sh -c "curl -sf http://127.0.0.1:$port/healthz | grep -q ok"
if m1=$(curl -sf "http://127.0.0.1:$port/metrics" | "$check" vtpm_agent_reconciles_total); then
  pass "/metrics parses as Prometheus text (strict parser: test/e2e/metrics-check.py)"
else
  fail "/metrics parses as Prometheus text" "$m1"
fi
r1=$(awk '/^vtpm_agent_reconciles_total/ {print $2}' <<<"$m1")

k apply -f - >/dev/null <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: metered}
spec: {runStrategy: Halted, template: {spec: {domain: {devices: {tpm: {persistent: true}}}}}}
EOF
_moved() {
  local m; m=$(curl -sf "http://127.0.0.1:$port/metrics" | "$check" vtpm_agent_reconciles_total) || return 1
  [ "$(awk '{print $2}' <<<"$m")" -gt "${r1:-0}" ]
}
ok "reconcile counter moves when a VM appears (was $r1)" wait_until 60 _moved
m2=$(curl -sf "http://127.0.0.1:$port/metrics" | "$check" vtpm_agent_api_requests_total vtpm_agent_leader)
like "$m2" "vtpm_agent_leader 1" "this agent is the state controller's leader"
like "$m2" "vtpm_agent_api_requests_total [1-9]" "API request counters are exported"
# What every exporter has: the version, and the process_* family (from /proc/self).
raw=$(curl -sf "http://127.0.0.1:$port/metrics")
ok "/metrics still parses with them" sh -c "printf '%s\\n' \"\$1\" | '$check' >/dev/null" _ "$raw"
like "$raw" "vtpm_agent_build_info\\{version=\"$("$agent" --version | awk '{print $2}')\"\\} 1" \
  "vtpm_agent_build_info names the running version"
metric() { awk -v n="$1" '$1 == n {print $2}' <<<"$raw"; }
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$apid/status")
is "$(awk -v m="$(metric process_resident_memory_bytes)" -v k="$rss_kib" 'BEGIN { d = m - k * 1024; if (d < 0) d = -d; print (d < 8 * 1048576) ? "yes" : "no: " m " vs " k " KiB" }')" \
  yes "process_resident_memory_bytes is the agent's RSS (within 8 MiB of VmRSS)"
started=$(( $(date +%s) - $(ps -o etimes= -p "$apid") ))
is "$(awk -v m="$(metric process_start_time_seconds)" -v s="$started" 'BEGIN { d = m - s; if (d < 0) d = -d; print (d < 5) ? "yes" : "no: " m " vs " s }')" \
  yes "process_start_time_seconds is when the agent started"
is "$(awk -v o="$(metric process_open_fds)" -v n="$(ls "/proc/$apid/fd" | wc -l)" -v x="$(metric process_max_fds)" \
  'BEGIN { print (o > 3 && o - n < 10 && n - o < 10 && x >= o) ? "yes" : "no: " o " of " x ", " n " in /proc" }')" \
  yes "process_open_fds and process_max_fds are the agent's"

# --- logs are JSON lines with levels; SIGTERM ends cleanly
kill -TERM "$apid"
wait "$apid"; rc=$?
is "$rc" 0 "SIGTERM: the agent exits 0"
ok "every log line is a JSON object with ts, level and msg" \
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("{"):
        o=json.loads(l); assert {"ts","level","msg"} <= o.keys(), l
    elif l.strip(): raise SystemExit("not JSON: "+l)' "$tmp/agent.log"
ok "the agent logged a clean stop" grep -q '"stopped cleanly"' "$tmp/agent.log"
ok "no sanitizer report" sh -c "! grep -q 'ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer' $tmp/agent.log"
