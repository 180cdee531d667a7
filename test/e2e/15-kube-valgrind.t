#!/usr/bin/env bash
# Issue 3, acceptance 6 (valgrind): pkg/kube client lifecycles against the
# real API server under `valgrind --leak-check=full`, with definite leaks and
# memory errors failing the test (valgrind's own exit status 99):
#   - informer-probe: LIST, WATCH, events, a killed connection and its resume,
#     resync, dump, stats, quit;
#   - kube-call: requests of every verb with successes and Status errors, on
#     a client certificate; and on a token file that turns invalid and is
#     rewritten (the 401 retry and the token reload paths).
. "$(dirname "$0")/lib.sh"
# Valgrind needs the tools without ASan: the release build, whatever VTPM_TOOLS says.
VTPM_TOOLS=${VTPM_VALGRIND_TOOLS:-$E2E_TOP/build/tools}
. "$(dirname "$0")/../tools/kube-probe.sh"

command -v valgrind >/dev/null || skip_all "valgrind not installed"
VG="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=30"
KC=$KUBE_TOOLS/kube-call
[ -x "$KC" ] || bail_out "$KC missing: run 'make tools'"

plan 10
setup_namespace e2e-kube-valgrind
work=$(mktemp -d /tmp/kube-vg.XXXXXX)
at_exit "rm -rf $work"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
port=${server##*:}
P=/api/v1/namespaces/$NS/configmaps
admin=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
version=$(kubectl get --raw /version | jq -r .gitVersion)

# ---- request lifecycle on a client certificate (in the background, meanwhile) ----
cat > "$work/cmds" <<EOF
whoami
version
create $P {"metadata":{"name":"a"},"data":{"v":"1"}}
create $P {"metadata":{"name":"a"}}
get $P/a
get $P/nope
update $P/a {"metadata":{"name":"a","resourceVersion":"1"},"data":{"v":"stale"}}
patch-merge $P/a {"data":{"v":"2"}}
patch-json $P/a [{"op":"replace","path":"/data/v","value":"3"}]
apply $P/b mgr-a 0 {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"},"data":{"x":"1"}}
apply $P/b mgr-b 0 {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"},"data":{"x":"2"}}
list $P
delete $P/a uid=wrong
delete $P/a propagation=Background
stats
EOF
# shellcheck disable=SC2086
$VG --log-file="$work/kc.vg" "$KC" --kubeconfig "$KUBECONFIG" < "$work/cmds" > "$work/kc.out" 2>&1 &
kc_pid=$!

# ---- informer lifecycle ----
k create configmap first >/dev/null
PROBE_WRAP="$VG --log-file=$work/probe.vg" probe_start /v1/configmaps "$NS"
wait_until 120 grep -q '^SYNCED ' "$PROBE_OUT" && pass "informer-probe under valgrind synced" ||
  fail "informer-probe under valgrind synced" "$(tail -5 "$PROBE_ERR")"
k create configmap second >/dev/null
k delete configmap first >/dev/null
wait_until 60 grep -q "^DELETE $NS/first " "$PROBE_OUT" || diag "no DELETE event within 60 s"
# Kill its connections: the resume path runs too.
for sp in $(ss -tnpH "( dport = :$port )" | grep "pid=$PROBE_PID," | awk '{print $4}' | sed 's/.*://'); do
  ss -K -tn "( sport = :$sp and dport = :$port )" >/dev/null
done
k create configmap third >/dev/null
wait_until 60 grep -q "^ADD $NS/third " "$PROBE_OUT" && pass "after a killed connection the watch resumed (event delivered)" ||
  fail "after a killed connection the watch resumed" "$(tail -5 "$PROBE_ERR")"
probe_cmd resync '^RESYNCED$' >/dev/null
is "$(probe_dump)" "$(server_state configmaps)" "its cache equals the server's state"
like "$(probe_stats)" '"resumes":[1-9]' "its stats count the resume"
probe_stop; rc=$?
is "$rc" 0 "informer-probe exits 0 under valgrind: no definite leak, no memory error"
[ "$rc" -eq 0 ] || diag "$(cat "$work/probe.vg")"

wait "$kc_pid"; rc=$?
is "$rc" 1 "kube-call under valgrind ran every verb (exit 1: some answers are errors on purpose, 99 would be valgrind)"
[ "$rc" -ne 99 ] || diag "$(cat "$work/kc.vg")"
is "$(cut -d' ' -f1-2 "$work/kc.out" | sed 's/ {.*//; s/ \[.*//' | tr '\n' ' ')" \
  "OK $admin OK $version OK ERROR reason=AlreadyExists OK ERROR reason=NotFound ERROR reason=Conflict OK OK OK ERROR reason=Conflict OK ERROR reason=Conflict OK deleted OK " \
  "... with the expected answers (whoami, version, create, AlreadyExists, get, NotFound, stale update Conflict, patches, apply, apply Conflict, list, precondition Conflict, delete, stats)"

# ---- token file: invalid, then rewritten ----
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$work/ca.crt"
cat > "$work/tok.kubeconfig" <<EOF
apiVersion: v1
kind: Config
current-context: t
clusters: [{name: c, cluster: {server: "$server", certificate-authority: ca.crt}}]
contexts: [{name: t, context: {cluster: c, user: t}}]
users: [{name: t, user: {tokenFile: token}}]
EOF
k create token default --duration 10m > "$work/token"
mkfifo "$work/tok.in"
# shellcheck disable=SC2086
$VG --log-file="$work/tok.vg" "$KC" --kubeconfig "$work/tok.kubeconfig" < "$work/tok.in" > "$work/tok.out" 2>&1 &
tok_pid=$!
exec 8> "$work/tok.in"
say() { local n; n=$(wc -l < "$work/tok.out"); echo "$1" >&8; wait_until 60 bash -c "[ \$(wc -l < '$work/tok.out') -gt $n ]"; }
say whoami
echo not-a-token > "$work/token"
say whoami
k create token default --duration 10m > "$work/token"
say whoami
say stats
exec 8>&-
wait "$tok_pid"; rc=$?
is "$(sed 's/: POST .*//; s/ {.*//' "$work/tok.out")" "OK system:serviceaccount:$NS:default
ERROR reason=Unauthorized errno=EKEYREJECTED
OK system:serviceaccount:$NS:default
OK" "token file: valid, then Unauthorized, then valid again after the rewrite"
is "$rc" 1 "kube-call on a token file under valgrind: no definite leak, no memory error (exit 1 for the one refused request, not 99)"
[ "$rc" -ne 99 ] || diag "$(cat "$work/tok.vg")"
like "$(tail -1 "$work/tok.out")" '"tokenReloads":[1-9]' "the token file was re-read"
