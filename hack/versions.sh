# Pinned versions of the test bed's upstream components. Sourced by hack/ scripts.
K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.14
GO=${GO:-/usr/local/go/bin/go}
# Compiler flags for every Go build of the test bed: the linker drops DWARF
# (-ldflags -w), so the compiler need not make it; 10-20% less compile time
# on this machine (k8s.io/client-go/kubernetes and k8s.io/apiserver/pkg/server
# from an empty cache, twice each: 320 and 325 s with it, 288 and 262 s
# without).
GO_GCFLAGS=all=-dwarf=false
VTPM_CACHE=${VTPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vtpm-agent}
K8S_BIN=$VTPM_CACHE/kubernetes-$K8S_VERSION/bin
ETCD_BIN=$VTPM_CACHE/etcd-$ETCD_VERSION/bin
# Real nodes (VTPM_NODES>0, hack/nodes-up.sh): built by hack/build-nodes.sh.
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.2
CONTAINERD_BIN=$VTPM_CACHE/containerd-$CONTAINERD_VERSION/bin
RUNC_BIN=$VTPM_CACHE/runc-$RUNC_VERSION/bin
