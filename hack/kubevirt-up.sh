#!/usr/bin/env bash
# Install real KubeVirt on the running test bed (issue 20), the way its users
# install it: KubeVirt's own operator manifest (virt-operator's Deployment,
# RBAC and the KubeVirt CRD, filled in by KubeVirt's manifest-templator from
# the release template in its source), then a KubeVirt CR
# (hack/kubevirt/kubevirt-cr.yaml); virt-operator deploys the rest (virt-api,
# virt-controller, virt-handler, the CRDs). Waits until the CR is Available.
# Called by cluster-up.sh with VTPM_KUBEVIRT=1, after nodes-up.sh imported the
# images (hack/build-kubevirt-images.sh) into every node. Idempotent.
#
# What the test bed adds, as a real cluster would have it:
# - node-1 carries node-role.kubernetes.io/control-plane (nodes-up.sh):
#   virt-operator's Deployment requires a control-plane node (the test bed's
#   control plane runs on the machine, outside any node).
# - the API server reaches virt-api (webhooks, the subresource API) at its pod's
#   address: --enable-aggregator-routing and the pod network's routes
#   (testbed-lib.sh, nodes-up.sh).
# - virt-handler runs with VIRT_IN_CONTAINER (below).
# Output: the generated operator manifest in $VTPM_RUN/kubevirt/; progress on stderr.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/testbed-lib.sh"
. "$top/hack/nodes-lib.sh"
t0=$(tb_now_ms)

tb_probe kube-apiserver || tb_die "no API server at $TB_APISERVER_URL: run hack/cluster-up.sh first"
# shellcheck disable=SC1091
. "$NL_DIR/images.env"
[ -n "${KUBEVIRT_TAG:-}" ] || tb_die "no KubeVirt images on the nodes: run cluster-up with VTPM_KUBEVIRT=1"
bin=$KUBEVIRT_BIN
src=$(dirname "$bin")/src

out=$VTPM_RUN/kubevirt
mkdir -p "$out"
# KubeVirt's hack/build-manifests.sh, with the test bed's registry and tag.
"$bin/manifest-templator" --process-files --generated-manifests-dir="$src/manifests/generated/" \
  --input-file="$src/manifests/release/kubevirt-operator.yaml.in" > "$out/operator.yaml.in"
"$bin/manifest-templator" --process-vars --input-file="$out/operator.yaml.in" \
  --namespace=kubevirt --container-prefix="${KUBEVIRT_REGISTRY:-localhost/kubevirt}" \
  --container-tag="$KUBEVIRT_TAG" --image-pull-policy=IfNotPresent --verbosity=2 \
  --infra-replicas=1 --csv-version=1.9.0 --kubevirt-logo-path="$src/assets/kubevirt_logo.png" \
  > "$out/operator.yaml.tmpl"
# KubeVirt's knob for Kubernetes running inside a container: virt-handler enters
# its parent's (the container shim's, in the node) mount namespace instead of
# pid 1's. The test bed's nodes share the machine's PID namespace, whose pid 1
# (this machine's init) is not in any node, and not even openable
# (`virt-chroot --mount /proc/1/ns/mnt selinux getenforce`: "open
# /proc/1/ns/mnt: permission denied", virt-handler panics). virt-operator
# passes KV_IO_EXTRA_ENV_* to the components (pkg/virt-handler/virt-chroot).
sed '/^        - name: KUBEVIRT_VERSION$/{n;a\
        - name: KV_IO_EXTRA_ENV_VIRT_IN_CONTAINER\
          value: "true"
}' "$out/operator.yaml.tmpl" > "$out/operator.yaml"
[ "$(grep -c KV_IO_EXTRA_ENV_VIRT_IN_CONTAINER "$out/operator.yaml")" = 1 ] ||
  tb_die "KubeVirt's operator manifest changed shape: no single KUBEVIRT_VERSION env to add VIRT_IN_CONTAINER after"
rm -f "$out/operator.yaml.in" "$out/operator.yaml.tmpl"

tb_kubectl apply --server-side -f "$out/operator.yaml" >&2
tb_kubectl -n kubevirt rollout status deployment/virt-operator --timeout 300s >&2 ||
  tb_die "virt-operator not ready; kubectl -n kubevirt describe pods -l kubevirt.io=virt-operator"
tb_kubectl apply -f "$top/hack/kubevirt/kubevirt-cr.yaml" >&2
tb_kubectl -n kubevirt wait kv kubevirt --for condition=Available --timeout "${VTPM_KUBEVIRT_TIMEOUT:-600}s" >&2 ||
  tb_die "KubeVirt not Available; kubectl -n kubevirt get kv,pods -o wide"
tb_kubevirt_wait_serving || tb_die "KubeVirt does not admit VMs; kubectl -n kubevirt get pods -o wide"
tb_log "KubeVirt $KUBEVIRT_TAG deployed in $(( $(tb_now_ms) - t0 )) ms"
