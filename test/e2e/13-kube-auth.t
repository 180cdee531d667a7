#!/usr/bin/env bash
# Issue 3, acceptance 4: pkg/kube authenticates to the real API server with
#   - a client certificate (the admin kubeconfig),
#   - a kubeconfig tokenFile that is REWRITTEN while the client runs: the first
#     token is revoked (its ServiceAccount deleted and recreated), the running
#     client fails with Unauthorized, then succeeds once the file holds a new
#     token,
#   - in-cluster config (KUBERNETES_SERVICE_HOST/PORT + a service-account
#     directory laid out as the kubelet does, ..data symlink and all), whose
#     token is swapped atomically for another account's: the same client
#     becomes the new identity;
# and fails with a message naming the cause for a wrong CA and an expired
# client certificate. vtpm-agent --check: exit status and message for a good
# configuration and a wrong CA (a stopped server is in 11-kube-informer-recovery.t).
. "$(dirname "$0")/lib.sh"

TOOLS=${VTPM_TOOLS:-$E2E_TOP/build/tools}
KC=$TOOLS/kube-call
AGENT=${VTPM_AGENT:-$E2E_TOP/build/vtpm-agent}
[ -x "$KC" ] || bail_out "$KC missing: run 'make tools'"
[ -x "$AGENT" ] || bail_out "$AGENT missing: run 'make all'"

plan 27
setup_namespace e2e-kube-auth
work=$(mktemp -d /tmp/kube-auth.XXXXXX)
at_exit "rm -rf $work"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
hostport=${server#https://}
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$work/ca.crt"
[ -s "$work/ca.crt" ] || bail_out "no certificate-authority-data in $KUBECONFIG"

# A long-lived kube-call reading commands from a fifo: kc_send CMD prints the answer line.
kc_session() { # NAME ARGS...
  local name=$1; shift
  mkfifo "$work/$name.in"
  "$KC" "$@" < "$work/$name.in" > "$work/$name.out" 2> "$work/$name.err" &
  eval "${name}_pid=$!"
  eval "exec {${name}_fd}>\"$work/$name.in\""
  at_exit "exec {${name}_fd}>&-; wait \$${name}_pid 2>/dev/null"
}
kc_send() { # NAME CMD
  local name=$1 fdvar="${1}_fd" n; shift
  n=$(wc -l < "$work/$name.out")
  echo "$*" >&"${!fdvar}"
  wait_until 30 bash -c "[ \$(wc -l < '$work/$name.out') -gt $n ]" || { echo "TIMEOUT"; return; }
  tail -n 1 "$work/$name.out"
}

# ---- client certificate ----
admin_user=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
is "$("$KC" --kubeconfig "$KUBECONFIG" whoami)" "OK $admin_user" "client certificate (admin kubeconfig): the server sees $admin_user"

# ---- ServiceAccounts allowed to read ConfigMaps in $NS ----
ok "ServiceAccounts probe, probe2 with a Role to list ConfigMaps" bash -c "
  kubectl -n $NS create serviceaccount probe && kubectl -n $NS create serviceaccount probe2 &&
  kubectl -n $NS create role cm-reader --verb=get,list --resource=configmaps &&
  kubectl -n $NS create rolebinding cm-reader --role=cm-reader --serviceaccount=$NS:probe --serviceaccount=$NS:probe2" 
LIST=/api/v1/namespaces/$NS/configmaps

# ---- kubeconfig with a tokenFile (relative: resolved next to the kubeconfig) ----
mkdir -p "$work/kc/tokens"
cat > "$work/kc/config" <<EOF
apiVersion: v1
kind: Config
current-context: sa
clusters:
- name: c
  cluster:
    server: $server
    certificate-authority: ../ca.crt
contexts:
- name: sa
  context: {cluster: c, user: sa, namespace: $NS}
users:
- name: sa
  user:
    tokenFile: tokens/token
EOF
kubectl -n "$NS" create token probe --duration 10m > "$work/kc/tokens/token"
tok1=$(cat "$work/kc/tokens/token")
kc_session tf --kubeconfig "$work/kc/config"
is "$(kc_send tf whoami)" "OK system:serviceaccount:$NS:probe" "tokenFile: authenticated as the ServiceAccount"
like "$(kc_send tf list "$LIST")" '^OK \[' "tokenFile: the Role lets it list ConfigMaps"
like "$(kc_send tf list /api/v1/namespaces/kube-system/secrets)" '^ERROR reason=Forbidden errno=EACCES: .*cannot list resource "secrets"' \
  "tokenFile: what the Role does not allow is Forbidden (EACCES), with the server's message"

# Revoke the first token: a recreated ServiceAccount has a new uid.
ok "delete and recreate ServiceAccount probe (revokes the first token)" bash -c \
  "kubectl -n $NS delete serviceaccount probe && kubectl -n $NS create serviceaccount probe"
old_token_refused() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/ca.crt" -H "Authorization: Bearer $tok1" "$server$LIST")" = 401 ]
}
wait_until 30 old_token_refused && pass "the server now refuses the first token (401, checked with curl)" ||
  fail "the server now refuses the first token (401, checked with curl)"
like "$(kc_send tf whoami)" '^ERROR reason=Unauthorized errno=EKEYREJECTED: ' \
  "the running client, file unchanged, is refused: Unauthorized/EKEYREJECTED"
kubectl -n "$NS" create token probe --duration 10m > "$work/kc/tokens/token.new"
cat "$work/kc/tokens/token.new" > "$work/kc/tokens/token"   # rewritten in place
rm -f "$work/kc/tokens/token.new"
is "$(kc_send tf whoami)" "OK system:serviceaccount:$NS:probe" "after the token file is rewritten the SAME client authenticates again"
like "$(kc_send tf list "$LIST")" '^OK \[' "... and lists ConfigMaps"
like "$(kc_send tf stats)" '"tokenReloads":[1-9]' "the client counted token file reloads"

# ---- in-cluster: env + service-account directory (kubelet's atomic layout) ----
sa=$work/serviceaccount
mkdir -p "$sa/..v1"
kubectl -n "$NS" create token probe --duration 10m > "$sa/..v1/token"
cp "$work/ca.crt" "$sa/..v1/ca.crt"
printf '%s' "$NS" > "$sa/..v1/namespace"
ln -s ..v1 "$sa/..data"
for f in token ca.crt namespace; do ln -s "..data/$f" "$sa/$f"; done
KUBERNETES_SERVICE_HOST=${hostport%:*} KUBERNETES_SERVICE_PORT=${hostport##*:} kc_session ic --incluster "$sa"
is "$(kc_send ic namespace)" "OK $NS" "in-cluster: the namespace comes from the namespace file"
is "$(kc_send ic whoami)" "OK system:serviceaccount:$NS:probe" "in-cluster: authenticated with the token file and ca.crt"
like "$(kc_send ic list "$LIST")" '^OK \[' "in-cluster: lists ConfigMaps"
# Rotate as the kubelet does: new directory, then rename a new ..data link over the old.
mkdir -p "$sa/..v2"
kubectl -n "$NS" create token probe2 --duration 10m > "$sa/..v2/token"
cp "$sa/..v1/ca.crt" "$sa/..v1/namespace" "$sa/..v2/"
ln -s ..v2 "$sa/..data.tmp" && mv -T "$sa/..data.tmp" "$sa/..data"
is "$(kc_send ic whoami)" "OK system:serviceaccount:$NS:probe2" \
  "in-cluster: after the atomic ..data swap the same client is the new token's account"
out=$(env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT "$KC" --incluster "$sa" version)
like "$out" '^ERROR .*KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT not set' "in-cluster without the environment: says which variables are missing"

# ---- wrong CA ----
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/other-ca.key" -out "$work/other-ca.crt" \
  -days 2 -subj "/CN=some-other-ca" 2>/dev/null
kubectl config view --raw --minify > "$work/wrong-ca.kubeconfig"
KUBECONFIG=$work/wrong-ca.kubeconfig kubectl config set clusters."$(kubectl config view --minify -o jsonpath='{.clusters[0].name}')".certificate-authority-data \
  "$(base64 -w0 < "$work/other-ca.crt")" >/dev/null
out=$("$KC" --kubeconfig "$work/wrong-ca.kubeconfig" version); rc=$?
is "$rc" 1 "wrong CA: the request fails"
like "$out" '^ERROR reason=TLSVerificationFailed errno=EPROTO: TLS verification of the API server .* failed: its certificate is not trusted by certificate authority \(inline certificate-authority-data\)' \
  "wrong CA: the message names TLS verification and where the CA came from"
out=$("$AGENT" --check --log-format text --kubeconfig "$work/wrong-ca.kubeconfig" 2>&1); rc=$?
is "$rc" 1 "vtpm-agent --check with a wrong CA exits 1"
like "$out" 'TLS verification .* not trusted by certificate authority' "... naming TLS and the certificate authority"

# ---- expired client certificate, signed by the real CA ----
pki=$VTPM_RUN/pki
if [ -r "$pki/ca.key" ]; then
  mkdir -p "$work/ca-db"; : > "$work/ca-db/index.txt"; echo 1000 > "$work/ca-db/serial"
  printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nserial=%s/serial\nnew_certs_dir=%s\npolicy=p\ndefault_md=sha256\n[p]\ncommonName=supplied\norganizationName=optional\n' \
    "$work/ca-db" "$work/ca-db" "$work/ca-db" > "$work/ca-db/ca.cnf"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$work/expired.key" -out "$work/expired.csr" \
    -subj "/O=system:masters/CN=expired-admin" 2>/dev/null
  openssl ca -batch -config "$work/ca-db/ca.cnf" -cert "$pki/ca.crt" -keyfile "$pki/ca.key" -notext \
    -startdate 20200101000000Z -enddate 20200102000000Z -in "$work/expired.csr" -out "$work/expired.crt" >/dev/null 2>&1
  kubectl config view --raw --minify > "$work/expired.kubeconfig"
  user=$(kubectl config view --minify -o jsonpath='{.users[0].name}')
  KUBECONFIG=$work/expired.kubeconfig kubectl config set-credentials "$user" --embed-certs \
    --client-certificate "$work/expired.crt" --client-key "$work/expired.key" >/dev/null
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/ca.crt" --cert "$work/expired.crt" --key "$work/expired.key" "$server$LIST")
  is "$code" 401 "the expired certificate (signed by the cluster CA) is refused by the server too (curl: 401)"
  out=$("$KC" --kubeconfig "$work/expired.kubeconfig" version); rc=$?
  like "$out" '^ERROR reason=- errno=EKEYEXPIRED: .*the client certificate .*CN ?= ?expired-admin.* expired on Jan  2 00:00:00 2020 GMT' \
    "expired client certificate: refused up front, the message says it expired and when"
  out=$("$AGENT" --check --log-format text --kubeconfig "$work/expired.kubeconfig" 2>&1); rc=$?
  is "$rc" 1 "vtpm-agent --check with an expired client certificate exits 1"
  like "$out" 'client certificate .* expired' "... saying the client certificate expired"
else
  for d in "expired cert refused by the server" "expired cert message" "--check exit" "--check message"; do
    skip "$d: no readable cluster CA key at $pki/ca.key"
  done
fi

# ---- vtpm-agent --check with the good kubeconfig ----
want_version=$(kubectl get --raw /version | jq -r .gitVersion)
out=$("$AGENT" --check --log-format text --kubeconfig "$KUBECONFIG" 2>&1); rc=$?
is "$rc" 0 "vtpm-agent --check with the admin kubeconfig exits 0"
like "$out" "connected to the API server .*serverVersion=$want_version user=$admin_user" \
  "... printing the server version ($want_version) and who it is"
out=$("$AGENT" --check --log-format text --kubeconfig "$work/kc/config" 2>&1); rc=$?
like "$rc:$out" "^0:.*user=system:serviceaccount:$NS:probe" "vtpm-agent --check with the tokenFile kubeconfig: exit 0 as the ServiceAccount"
