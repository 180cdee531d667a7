#!/usr/bin/env bash
# Issue 3, acceptance 3: pkg/kube's writes against the real API server. A stale
# UPDATE comes back as the server's Conflict (reason, ESTALE, the server's
# message), server-side apply from two field managers keeps both managers'
# fields, and the other verbs (JSON/merge patch, the status subresource,
# preconditioned DELETE) report what the server said.
# Driven by build/tools/kube-call (test/tools/kube-call.c): one pkg/kube call
# per invocation, printing "OK <json>" or "ERROR reason=R errno=E: message".
. "$(dirname "$0")/lib.sh"

KC=${VTPM_TOOLS:-$E2E_TOP/build/tools}/kube-call
[ -x "$KC" ] || bail_out "$KC missing: run 'make tools'"

plan 28
setup_namespace e2e-kube-write
P=/api/v1/namespaces/$NS/configmaps

kc() { "$KC" --kubeconfig "$KUBECONFIG" "$@"; }
body() { printf '%s' "${1#OK }"; }

# ---- Conflict on a stale resourceVersion ----
out=$(kc create "$P" '{"metadata":{"name":"c1"},"data":{"v":"1"}}')
like "$out" '^OK \{' "create c1 through the client"
rv1=$(body "$out" | jq -r .metadata.resourceVersion)
ok "someone else changes c1 (kubectl)" k patch cm c1 --type merge -p '{"data":{"v":"2"}}'

out=$(kc update "$P/c1" "{\"metadata\":{\"name\":\"c1\",\"resourceVersion\":\"$rv1\"},\"data\":{\"v\":\"stale\"}}"); rc=$?
is "$rc" 1 "an UPDATE carrying the old resourceVersion fails"
like "$out" '^ERROR reason=Conflict errno=ESTALE: PUT /api/v1/namespaces/[^ ]*/configmaps/c1: Conflict \(409\): ' \
  "... with the Status reason Conflict and errno ESTALE"
like "$out" 'Operation cannot be fulfilled on configmaps "c1": the object has been modified; please apply your changes to the latest version and try again' \
  "... and the server's own message"
is "$(k get cm c1 -o jsonpath='{.data.v}')" 2 "the refused update changed nothing"

rv2=$(k get cm c1 -o jsonpath='{.metadata.resourceVersion}')
out=$(kc update "$P/c1" "{\"metadata\":{\"name\":\"c1\",\"resourceVersion\":\"$rv2\"},\"data\":{\"v\":\"3\"}}")
like "$out" '^OK ' "the same UPDATE with the current resourceVersion succeeds"
is "$(k get cm c1 -o jsonpath='{.data.v}')" 3 "... and the server has the new value"

# ---- other Status errors keep their reason ----
out=$(kc create "$P" '{"metadata":{"name":"c1"}}')
like "$out" '^ERROR reason=AlreadyExists errno=EEXIST: .*configmaps "c1" already exists' "create of an existing name: AlreadyExists/EEXIST"
out=$(kc get "$P/no-such")
like "$out" '^ERROR reason=NotFound errno=ENOENT: GET .*configmaps "no-such" not found' "get of a missing object: NotFound/ENOENT"
out=$(kc create "$P" '{"metadata":{"name":"Bad_Name"}}')
like "$out" '^ERROR reason=Invalid errno=EINVAL: .*Bad_Name' "an invalid name: Invalid/EINVAL with the server's field message"

# ---- preconditioned DELETE ----
out=$(kc delete "$P/c1" uid=00000000-0000-0000-0000-000000000000)
like "$out" '^ERROR reason=Conflict errno=ESTALE: DELETE .*the UID in the precondition \(0{8}-0{4}-0{4}-0{4}-0{12}\) does not match' \
  "DELETE with a wrong uid precondition: Conflict naming the precondition"
out=$(kc delete "$P/c1" "rv=$rv1")
like "$out" '^ERROR reason=Conflict errno=ESTALE: DELETE .*the ResourceVersion in the precondition \('"$rv1"'\) does not match' \
  "DELETE with a stale resourceVersion precondition: Conflict"
ok "c1 survived both refused deletes" k get cm c1
uid=$(k get cm c1 -o jsonpath='{.metadata.uid}'); rv=$(k get cm c1 -o jsonpath='{.metadata.resourceVersion}')
is "$(kc delete "$P/c1" "uid=$uid" "rv=$rv" propagation=Foreground)" "OK deleted" "DELETE with matching preconditions and a propagation policy"
# Foreground: the API server marks c1 for the garbage collector (or it is already gone).
out=$(k get cm c1 -o jsonpath='{.metadata.deletionTimestamp} {.metadata.finalizers}' 2>&1)
like "$out" '(^20.*foregroundDeletion|NotFound)' "c1 is being deleted in the foreground (propagation policy honoured)"

# ---- JSON patch and merge patch ----
kc create "$P" '{"metadata":{"name":"p1"},"data":{"a":"1","b":"2"}}' >/dev/null
out=$(kc patch-json "$P/p1" '[{"op":"test","path":"/data/a","value":"1"},{"op":"replace","path":"/data/a","value":"10"},{"op":"remove","path":"/data/b"}]')
like "$out" '^OK ' "a JSON patch (test, replace, remove) applies"
is "$(k get cm p1 -o json | jq -c .data)" '{"a":"10"}' "... with exactly its effect"
out=$(kc patch-json "$P/p1" '[{"op":"test","path":"/data/a","value":"1"}]')
like "$out" '^ERROR reason=Invalid errno=EINVAL: PATCH .*/p1: Invalid \(422\): the server rejected our request' \
  "a failing JSON-patch test op: Invalid (422) with the server's (generic) message"
is "$(k get cm p1 -o json | jq -c .data)" '{"a":"10"}' "... and the object is unchanged"
out=$(kc patch-merge "$P/p1" '{"data":{"a":null,"c":"3"}}')
is "$(k get cm p1 -o json | jq -c .data)" '{"c":"3"}' "a merge patch (null deletes a key) applies"

# ---- server-side apply from two field managers ----
out=$(kc apply "$P/s1" mgr-a 0 '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s1","labels":{"owner-a":"yes"}},"data":{"a":"from-a"}}')
like "$out" '^OK ' "server-side apply by field manager mgr-a creates s1"
out=$(kc apply "$P/s1" mgr-b 0 '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s1"},"data":{"b":"from-b"}}')
like "$out" '^OK ' "server-side apply by mgr-b of another field"
obj=$(k get cm s1 -o json --show-managed-fields)
is "$(jq -c '[.data, .metadata.labels]' <<<"$obj")" '[{"a":"from-a","b":"from-b"},{"owner-a":"yes"}]' \
  "both managers' fields are kept"
is "$(jq -c '[.metadata.managedFields[] | select(.operation=="Apply") | {m: .manager, f: (.fieldsV1["f:data"] // {} | keys)}] | sort_by(.m)' <<<"$obj")" \
  '[{"m":"mgr-a","f":["f:a"]},{"m":"mgr-b","f":["f:b"]}]' \
  "managedFields: mgr-a owns data.a, mgr-b owns data.b"
out=$(kc apply "$P/s1" mgr-b 0 '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s1"},"data":{"a":"taken","b":"from-b"}}')
like "$out" '^ERROR reason=Conflict errno=ESTALE: PATCH .*conflict with "mgr-a".*\.data\.a' \
  "mgr-b applying mgr-a's field without force: Conflict naming mgr-a and the field"
out=$(kc apply "$P/s1" mgr-b 1 '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s1"},"data":{"a":"taken","b":"from-b"}}')
is "$(k get cm s1 -o json --show-managed-fields | jq -c '[.data.a, .data.b, ([.metadata.managedFields[] | select(.manager=="mgr-a") | .fieldsV1["f:data"] // {} | keys] | add // [])]')" \
  '["taken","from-b",[]]' "with force mgr-b takes data.a over (mgr-a no longer owns it)"

# ---- status subresource (TPMState has one) ----
T=/apis/vtpm-agent.io/v1alpha1/namespaces/$NS/tpmstates
kc create "$T" '{"apiVersion":"vtpm-agent.io/v1alpha1","kind":"TPMState","metadata":{"name":"t1"},"spec":{"vmName":"t1"}}' >/dev/null
kc patch-merge "$T/t1" '{"status":{"phase":"Ignored"}}' >/dev/null
out=$(kc patch-merge "$T/t1/status" '{"status":{"phase":"Ready"}}')
is "$(k get tpmstate t1 -o jsonpath='{.status.phase}')" Ready \
  "status is written only through the status subresource (a main-resource patch of status is ignored)"
