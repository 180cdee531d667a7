# Pinned versions of the test bed's upstream components. Sourced by hack/ scripts.
K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.14
GO=${GO:-/usr/local/go/bin/go}
VTPM_CACHE=${VTPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vtpm-agent}
K8S_BIN=$VTPM_CACHE/kubernetes-$K8S_VERSION/bin
ETCD_BIN=$VTPM_CACHE/etcd-$ETCD_VERSION/bin
# Real nodes (VTPM_NODES>0, hack/nodes-up.sh): built by hack/build-nodes.sh.
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.2
CONTAINERD_BIN=$VTPM_CACHE/containerd-$CONTAINERD_VERSION/bin
RUNC_BIN=$VTPM_CACHE/runc-$RUNC_VERSION/bin
