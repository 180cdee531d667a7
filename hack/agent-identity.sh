#!/usr/bin/env bash
# hack/agent-identity.sh NAMESPACE DIR [CLUSTERROLEBINDING]
#
# The agent's own identity on a test bed: applies the product's ServiceAccount
# and least-privilege RBAC (manifests/serviceaccount.yaml, manifests/rbac.yaml)
# with NAMESPACE as the agent's own namespace, asks the API server for a token
# of that ServiceAccount (TokenRequest, `kubectl create token`), and writes
# DIR/agent.kubeconfig (token in DIR/token, mode 0600). Prints the kubeconfig's
# path (plus the key broker's KEK Role: see below). The rules are the manifests' rules, unchanged: only the namespace (and,
# for a namespace other than vtpm-system, the ClusterRoleBinding's name, so test
# namespaces never fight over one binding) differ. Uses $KUBECONFIG (admin).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 NAMESPACE DIR [CLUSTERROLEBINDING]" >&2; exit 2; }
ns=$1 dir=$2 crb=${3:-vtpm-agent}
mkdir -p "$dir"
yq -y --arg ns "$ns" --arg crb "$crb" '
    (if .metadata.namespace then .metadata.namespace = $ns else . end)
  | (if .kind == "ClusterRoleBinding" then .metadata.name = $crb else . end)
  | (if .subjects then .subjects |= map(.namespace = $ns) else . end)' \
  "$top/manifests/serviceaccount.yaml" "$top/manifests/rbac.yaml" | kubectl apply -f - >/dev/null
# The agents the suites run on the host use keys.provider secret (or kmip):
# they hold their namespace's KEKs themselves, as the key broker does in the
# product (the DaemonSet's agents have no Secret rule, manifests/rbac.yaml).
# So the test identity also gets the broker's namespaced Role
# (manifests/controller.yaml: the KEK Secrets), bound to it, never the
# broker's cluster-wide rules.
# Never in vtpm-system itself: there the DaemonSet's account must stay without
# Secrets (suites 62 and 65 check it).
[ "$ns" != vtpm-system ] || { echo "$0: a host agent's identity in vtpm-system would give the DaemonSet's account the KEKs" >&2; exit 2; }
yq -y --arg ns "$ns" '
    select(.kind == "Role" and .metadata.name == "vtpm-controller")
  | .metadata.namespace = $ns | .metadata.name = "vtpm-agent-keys"' "$top/manifests/controller.yaml" |
  kubectl apply -f - >/dev/null
kubectl -n "$ns" create rolebinding vtpm-agent-keys --role vtpm-agent-keys --serviceaccount "$ns:vtpm-agent" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
( umask 077; kubectl -n "$ns" create token vtpm-agent --duration 2h > "$dir/token" )
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat > "$dir/agent.kubeconfig" <<EOC
apiVersion: v1
kind: Config
current-context: agent
clusters: [{name: testbed, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: vtpm-agent, user: {tokenFile: "$dir/token"}}]
contexts: [{name: agent, context: {cluster: testbed, user: vtpm-agent}}]
EOC
echo "$dir/agent.kubeconfig"
