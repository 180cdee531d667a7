#!/usr/bin/env bash
# Build what real test-bed nodes run besides the kubelet (hack/build-control-plane.sh
# builds kubelet and kube-scheduler): containerd (daemon, runc shim, ctr) and runc,
# from the Go module proxy at the versions pinned in hack/versions.sh, into the
# cache keyed by version. Idempotent: binaries already in the cache are not rebuilt.
#
# `go install MODULE/cmd@VERSION` builds each with its own upstream go.mod and
# go.sum (neither module has replace directives), so no wrapper module is needed.
# Debian's runc 1.1.5 fails every sandbox under containerd 2.4: hence our own.
# Needs Debian's libseccomp-dev (runc is cgo with the seccomp tag): hack/install-deps.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
export PATH=$(dirname "$GO"):$PATH GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

# gobuild DEST_DIR NAME PKG@VERSION [go install flags...]: build into a scratch
# GOBIN, then move into place (a half-built binary is never in the cache).
gobuild() {
  local dest=$1 name=$2 pkg=$3 tmp; shift 3
  tmp=$(mktemp -d "$dest/.gobin.XXXXXX")
  GOBIN=$tmp "$GO" install -trimpath -gcflags "$GO_GCFLAGS" "$@" "$pkg"
  mv "$tmp/$name" "$dest/$name"
  rmdir "$tmp"
  echo "build-nodes: built $name"
}

cmod=github.com/containerd/containerd/v2
cver=$cmod/version
cld="-s -w -X $cver.Version=$CONTAINERD_VERSION -X $cver.Revision=$CONTAINERD_VERSION -X $cver.Package=$cmod"
mkdir -p "$CONTAINERD_BIN"
for c in containerd containerd-shim-runc-v2 ctr; do
  [ -x "$CONTAINERD_BIN/$c" ] && continue
  echo "build-nodes: building $c $CONTAINERD_VERSION into $CONTAINERD_BIN (cold, idle machine: ~3 min for all three)"
  # The shim is static (CGO off), as upstream's Makefile builds it.
  cgo=1; [ "$c" != containerd-shim-runc-v2 ] || cgo=0
  CGO_ENABLED=$cgo gobuild "$CONTAINERD_BIN" "$c" "$cmod/cmd/$c@$CONTAINERD_VERSION" \
    -tags no_btrfs -ldflags "$cld"
done

mkdir -p "$RUNC_BIN"
if [ ! -x "$RUNC_BIN/runc" ]; then
  pkg-config --exists libseccomp || { echo "build-nodes: libseccomp-dev missing: run hack/install-deps.sh" >&2; exit 1; }
  echo "build-nodes: building runc $RUNC_VERSION into $RUNC_BIN (~30 s)"
  CGO_ENABLED=1 gobuild "$RUNC_BIN" runc "github.com/opencontainers/runc@$RUNC_VERSION" \
    -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v} -X main.gitCommit=$RUNC_VERSION"
fi
[ -x "$K8S_BIN/kubelet" ] && [ -x "$K8S_BIN/kube-scheduler" ] ||
  "$here/build-control-plane.sh" >&2
echo "build-nodes: containerd $CONTAINERD_VERSION in $CONTAINERD_BIN, runc $RUNC_VERSION in $RUNC_BIN, kubelet in $K8S_BIN"
