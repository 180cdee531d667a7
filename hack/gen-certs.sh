#!/usr/bin/env bash
# Certificates and kubeconfigs for the local test bed, made with openssl.
# Idempotent: a file that already exists is kept, so re-running never
# invalidates credentials a running control plane or test already holds.
#
#   hack/gen-certs.sh                          the test bed's own set (below)
#   hack/gen-certs.sh client NAME CN [ORG...]  a client cert signed by the test bed CA
#                                              and $VTPM_RUN/NAME.kubeconfig for it
#                                              (e.g. a non-admin user for RBAC tests)
#   hack/gen-certs.sh server NAME SAN...       a serving cert signed by the test bed CA
#                                              (SANs like IP:127.0.0.1 DNS:localhost)
#
# Layout under $VTPM_RUN/pki: ca.{crt,key}; apiserver.{crt,key} (SANs 127.0.0.1,
# localhost, kubernetes.default.svc...); admin.{crt,key} (CN=vtpm-admin,
# O=system:masters); kube-controller-manager.{crt,key}
# (CN=system:kube-controller-manager); sa.{key,pub} (RSA, service-account tokens);
# apiserver-kubelet-client.{crt,key}; front-proxy-ca.{crt,key} and
# front-proxy-client.{crt,key} (the aggregation layer).
# Kubeconfigs with embedded *-data fields: $VTPM_RUN/admin.kubeconfig and
# $VTPM_RUN/kube-controller-manager.kubeconfig.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/testbed-lib.sh"

umask 077
mkdir -p "$TB_PKI"

# new_key FILE: an RSA key (RSA rather than EC: what kubeadm issues, and what
# every client library, including the agent's libcurl/OpenSSL, loads).
new_key() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.tmp" 2>/dev/null
  mv "$1.tmp" "$1"
}

# gen_ca [NAME [CN]]: a self-signed CA NAME.{crt,key} (default the test bed's own, ca).
gen_ca() {
  local ca=${1:-ca} cn=${2:-vtpm-testbed-ca}
  [ -s "$TB_PKI/$ca.crt" ] && [ -s "$TB_PKI/$ca.key" ] && return 0
  new_key "$TB_PKI/$ca.key"
  openssl req -x509 -new -key "$TB_PKI/$ca.key" -sha256 -days 3650 \
    -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$TB_PKI/$ca.crt.tmp"
  mv "$TB_PKI/$ca.crt.tmp" "$TB_PKI/$ca.crt"
}

# sign NAME SUBJECT EXTENSIONS [CA]: key + certificate NAME.{key,crt} signed by
# the CA (default the test bed's own, ca).
sign() {
  local name=$1 subj=$2 ext=$3 ca=${4:-ca}
  [ -s "$TB_PKI/$name.crt" ] && [ -s "$TB_PKI/$name.key" ] && return 0
  new_key "$TB_PKI/$name.key"
  openssl req -new -key "$TB_PKI/$name.key" -subj "$subj" -out "$TB_PKI/$name.csr"
  printf '%s\n' "$ext" > "$TB_PKI/$name.ext"
  openssl x509 -req -in "$TB_PKI/$name.csr" -CA "$TB_PKI/$ca.crt" -CAkey "$TB_PKI/$ca.key" \
    -CAcreateserial -CAserial "$TB_PKI/$ca.srl" -sha256 -days 825 \
    -extfile "$TB_PKI/$name.ext" -out "$TB_PKI/$name.crt.tmp" 2>/dev/null
  rm -f "$TB_PKI/$name.csr" "$TB_PKI/$name.ext"
  mv "$TB_PKI/$name.crt.tmp" "$TB_PKI/$name.crt"
}

client_ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

server_ext() { # SAN...
  local san
  san=$(IFS=,; echo "$*")
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san"
}

# subject CN ORG...: an openssl -subj string (orgs first, as Kubernetes reads O= as groups).
subject() {
  local cn=$1 s="" o; shift
  for o in "$@"; do s+="/O=$o"; done
  echo "$s/CN=$cn"
}

# kubeconfig NAME USER: $VTPM_RUN/NAME.kubeconfig for the client cert USER.{crt,key}.
kubeconfig() {
  local name=$1 user=$2 out="$VTPM_RUN/$1.kubeconfig"
  # Kept unless the port changed (a $VTPM_RUN reused with other VTPM_*_PORT).
  grep -qx "    server: https://127.0.0.1:$TB_APISERVER_PORT" "$out" 2>/dev/null && return 0
  cat > "$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vtpm-testbed
  cluster:
    server: https://127.0.0.1:$TB_APISERVER_PORT
    certificate-authority-data: $(base64 -w0 < "$TB_PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 < "$TB_PKI/$user.crt")
    client-key-data: $(base64 -w0 < "$TB_PKI/$user.key")
contexts:
- name: $name@vtpm-testbed
  context:
    cluster: vtpm-testbed
    user: $name
current-context: $name@vtpm-testbed
EOF
  mv "$out.tmp" "$out"
}

gen_all() {
  gen_ca
  sign apiserver "/CN=kube-apiserver" "$(server_ext IP:127.0.0.1 DNS:localhost \
    IP:$TB_SERVICE_IP DNS:kubernetes DNS:kubernetes.default DNS:kubernetes.default.svc \
    DNS:kubernetes.default.svc.cluster.local)"
  sign admin "$(subject vtpm-admin system:masters)" "$client_ext"
  sign kube-controller-manager "$(subject system:kube-controller-manager)" "$client_ext"
  # The API server's client to kubelets (logs, exec, port-forward), as kubeadm's
  # apiserver-kubelet-client.
  sign apiserver-kubelet-client "$(subject kube-apiserver-kubelet-client system:masters)" "$client_ext"
  # The aggregation layer, as kubeadm sets it up: a CA of its own, whose one
  # client (front-proxy-client) is what the API server presents when it proxies
  # to an extension API server (KubeVirt's virt-api), which then trusts the
  # X-Remote-User headers of that client only.
  gen_ca front-proxy-ca vtpm-testbed-front-proxy-ca
  sign front-proxy-client "/CN=front-proxy-client" "$client_ext" front-proxy-ca
  if [ ! -s "$TB_PKI/sa.key" ] || [ ! -s "$TB_PKI/sa.pub" ]; then
    new_key "$TB_PKI/sa.key"
    openssl pkey -in "$TB_PKI/sa.key" -pubout -out "$TB_PKI/sa.pub"
  fi
  kubeconfig admin admin
  kubeconfig kube-controller-manager kube-controller-manager
}

case "${1:-all}" in
  all) gen_all ;;
  client)
    [ $# -ge 3 ] || { echo "usage: $0 client NAME CN [ORG...]" >&2; exit 2; }
    name=$2 cn=$3; shift 3
    gen_ca
    sign "$name" "$(subject "$cn" "$@")" "$client_ext"
    kubeconfig "$name" "$name"
    echo "$VTPM_RUN/$name.kubeconfig" ;;
  server)
    [ $# -ge 3 ] || { echo "usage: $0 server NAME SAN..." >&2; exit 2; }
    name=$2; shift 2
    gen_ca
    sign "$name" "/CN=$name" "$(server_ext "$@")"
    echo "$TB_PKI/$name.crt" ;;
  *) echo "usage: $0 [all | client NAME CN [ORG...] | server NAME SAN...]" >&2; exit 2 ;;
esac
