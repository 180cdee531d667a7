#!/usr/bin/env bash
# Build KubeVirt's components from source for the test bed (issue 20), into a
# cache outside the repository keyed by the source. Idempotent: what is in the
# cache is not rebuilt. Not yet used by cluster-up or `make test`.
#
# The source: KubeVirt's module paths are not served by the Go module proxy,
# so it comes from the project's shared files, ../shared/kubevirt/ beside the
# repository (a tarball of one commit with a complete vendor/, see its README).
#   KUBEVIRT_TARBALL=FILE   another tarball (default ../shared/kubevirt/kubevirt-d923fdb.tar.xz)
#   KUBEVIRT_SRC=DIR        a clone of the same commit instead, built in place
#                           (go build writes only into the cache)
#   KUBEVIRT_VERSION=vX.Y.Z the version stamped into the binaries (default
#                           v1.9.0+<commit>: the tarball is v1.9.0 plus later main commits)
# The cache, $VTPM_CACHE/kubevirt-<key>/, <key> the tarball's sha256 (12 hex)
# or the clone's commit (12 hex):
#   src/   the tarball, extracted once
#   bin/   virt-operator virt-api virt-controller virt-handler virt-launcher
#          virt-launcher-monitor virt-probe virt-freezer virt-tail virt-chroot
#          virtctl container-disk manifest-templator virt-exportproxy
#          synchronization-controller libvirt-hook-client
# and, shared between keys: $VTPM_CACHE/kubevirt-go-build (GOCACHE: a new
# commit recompiles only what changed) and $VTPM_CACHE/buildroot-<suite>/ (a
# Debian root for virt-launcher, below).
#
# Everything but virt-launcher builds with this machine's Go (hack/versions.sh)
# and gcc, `-mod=vendor`, GOPROXY=off, the `selinux` tag as KubeVirt's
# hack/build-go.sh (cgo on: they link glibc dynamically and run on Debian 12
# and 13). virt-launcher links libvirt and libnbd through cgo, and the
# vendored libnbd binding needs a newer libnbd than Debian 12's 1.14
# (`unknown type name 'nbd_extent'`; Debian 13's 1.22.2 works): it builds in a Debian 13 root
# (debootstrap --variant=minbase trixie, gcc libc6-dev pkg-config libvirt-dev
# libnbd-dev) with the host's Go, the source, GOCACHE and bin/ bind-mounted.
# Its binary needs Debian 13's libvirt and libnbd at run time (the launcher
# image must be Debian 13). debootstrap and the build run in a private mount
# namespace (unshare -m): their mounts (/proc, /dev, the binds) are never
# seen outside and go when the process does, whatever way it ends; the trap
# removes half-made directories.
#
# `hack/build-kubevirt.sh --dir` prints the cache directory
# ($VTPM_CACHE/kubevirt-<key>) and builds nothing (hack/build-kubevirt-images.sh
# tags its images with the key).
# `hack/build-kubevirt.sh --buildroot` makes only the Debian 13 root (when
# virt-launcher is not cached yet): hack/build-all.sh runs it in its fetch lane,
# since it is mostly waiting for the mirror (134 s here), so that the compile
# lane finds it made instead of leaving both cores idle meanwhile.
# Output: one line per component (and for the extraction and the Debian root
# when they are made) on stdout, `build-kubevirt: NAME built (N s) PATH` or
# `build-kubevirt: NAME cached PATH` (the Go components built together: one
# line with their time), then the total; progress on stderr.
# -p 2 (2 cores). Measured here (2 cores, idle): cold 530 and 577 s, cached 0.2 s.
set -euo pipefail
print_dir=; root_only=
case ${1:-} in
  --dir) print_dir=1 ;;
  --buildroot) root_only=1 ;;
  "") ;;
  *) echo "usage: hack/build-kubevirt.sh [--dir | --buildroot]" >&2; exit 2 ;;
esac
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/versions.sh"
MIRROR=${VTPM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${VTPM_KUBEVIRT_SUITE:-trixie}
log() { echo "build-kubevirt: $*" >&2; }
say() { echo "build-kubevirt: $*"; }
t0=$(date +%s)
tmps=()
cleanup() { local d; for d in "${tmps[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
mktmp() { x=$(mktemp -d "$1/.tmp.XXXXXX"); tmps+=("$x"); }   # sets x

[ -x "$GO" ] || { log "no Go at $GO (set GO=)"; exit 1; }
mkdir -p "$VTPM_CACHE"
if [ -z "$print_dir" ]; then
  exec 9> "$VTPM_CACHE/.kubevirt.lock"
  flock -w 3600 9 || { log "another build holds $VTPM_CACHE/.kubevirt.lock"; exit 1; }
fi

# The Debian 13 root virt-launcher builds in (only when virt-launcher is to be
# built: a cache holding it needs no root).
root=$VTPM_CACHE/buildroot-$SUITE
make_buildroot() {
  if [ ! -x "$bin/virt-launcher" ] && [ ! -f "$root/.ready" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap missing (hack/install-deps.sh installs it)"; exit 1; }
    t=$(date +%s); mktmp "$VTPM_CACHE"
    log "debootstrap --variant=minbase $SUITE from $MIRROR, then gcc libc6-dev pkg-config libvirt-dev libnbd-dev (about 2 min here)"
    pkgs="gcc libc6-dev pkg-config libvirt-dev libnbd-dev"
    unshare -m --propagation private bash -euo pipefail -c '
      debootstrap --variant=minbase "$1" "$2/rootfs" "$3" > "$2/debootstrap.log" 2>&1 ||
        { tail -20 "$2/debootstrap.log" >&2; exit 1; }
      r=$2/rootfs
      cp --remove-destination /etc/resolv.conf "$r/etc/resolv.conf"
      mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"
      chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $4 && apt-get clean" \
        > "$2/apt.log" 2>&1 || { tail -20 "$2/apt.log" >&2; exit 1; }
    ' _ "$SUITE" "$x" "$MIRROR" "$pkgs"
    rm -rf "$x/rootfs/var/lib/apt/lists/"*
    mkdir -p "$x/rootfs/usr/local/go" "$x/rootfs/src" "$x/rootfs/gocache" "$x/rootfs/out"
    chroot "$x/rootfs" dpkg-query -W -f '${Package} ${Version}\n' gcc libvirt-dev libnbd-dev > "$x/rootfs/.ready"
    rm -rf "$root"; mv "$x/rootfs" "$root"
    say "buildroot-$SUITE built ($(( $(date +%s) - t )) s) $root: $(tr '\n' ' ' < "$root/.ready")"
  fi
}

# 1. The source and its key.
if [ -n "${KUBEVIRT_SRC:-}" ]; then
  src=$(cd "$KUBEVIRT_SRC" && pwd)
  commit=$(git -C "$src" rev-parse HEAD) || { log "KUBEVIRT_SRC=$src is not a git clone"; exit 1; }
  key=${commit:0:12}
  [ -z "$(git -C "$src" status --porcelain --untracked-files=no)" ] ||
    log "warning: $src has changes; the cache is keyed by its commit $key and will not see them"
  kv=$VTPM_CACHE/kubevirt-$key
  [ -z "$print_dir" ] || { echo "$kv"; exit 0; }
  [ -z "$root_only" ] || { bin=$kv/bin; make_buildroot; exit 0; }
else
  tarball=${KUBEVIRT_TARBALL:-}
  if [ -z "$tarball" ]; then
    # ../shared beside the repository; a worktree elsewhere finds it beside the main one.
    for d in "$top/.." "$(cd "$(git -C "$top" rev-parse --git-common-dir)/../.." 2>/dev/null && pwd)"; do
      [ -f "$d/shared/kubevirt/kubevirt-d923fdb.tar.xz" ] && { tarball=$d/shared/kubevirt/kubevirt-d923fdb.tar.xz; break; }
    done
  fi
  [ -f "$tarball" ] || { log "no KubeVirt source: ../shared/kubevirt/kubevirt-d923fdb.tar.xz not found (set KUBEVIRT_TARBALL or KUBEVIRT_SRC)"; exit 1; }
  tarball=$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")
  key=$(sha256sum "$tarball" | cut -c1-12)
  kv=$VTPM_CACHE/kubevirt-$key
  [ -z "$print_dir" ] || { echo "$kv"; exit 0; }
  [ -z "$root_only" ] || { bin=$kv/bin; make_buildroot; exit 0; }
  src=$kv/src
  if [ ! -f "$src/go.mod" ]; then
    mkdir -p "$kv"
    t=$(date +%s); mktmp "$kv"
    log "extracting $tarball into $src"
    tar -C "$x" --strip-components=1 -xJf "$tarball"
    # The commit, for the version stamp: the tarball's top directory is kubevirt-<short commit>,
    # the README beside it names the whole one.
    c=$(tar -tJf "$tarball" | sed -n 1p); c=${c%%/*}; c=${c#kubevirt-}
    full=$(grep -o "$c[0-9a-f]*" "$(dirname "$tarball")/README.md" 2>/dev/null | awk 'length($0)==40' | sed -n 1p) || true
    echo "${full:-$c}" > "$x/.commit"
    rm -rf "$src"; mv "$x" "$src"
    say "source extracted ($(( $(date +%s) - t )) s) $src"
  fi
  commit=$(cat "$src/.commit")
fi
bin=$kv/bin
mkdir -p "$bin"

# Go: vendored, offline, cache in $VTPM_CACHE. Version stamp as KubeVirt's hack/version.sh makes it
# (gitVersion: the tag the shared README names, then the commit).
export PATH=$(dirname "$GO"):$PATH GOTOOLCHAIN=local GOPROXY=off GOFLAGS="-mod=vendor -buildvcs=false"
export GOCACHE=$VTPM_CACHE/kubevirt-go-build GOMODCACHE=$VTPM_CACHE/kubevirt-go-mod
mkdir -p "$GOCACHE"   # bind-mounted for virt-launcher even when nothing else is built
KUBEVIRT_VERSION=${KUBEVIRT_VERSION:-v1.9.0+${commit:0:14}}
vp=kubevirt.io/client-go/version
ld="-s -w -X $vp.gitCommit=$commit -X $vp.gitTreeState=clean -X $vp.gitVersion=$KUBEVIRT_VERSION"
ld+=" -X $vp.buildDate=1970-01-01T00:00:00Z"
gobuild=(build -p 2 -trimpath -gcflags "$GO_GCFLAGS" -tags selinux -ldflags "$ld")

# 2. The Go components with this machine's Go. virt-controller first: it compiles most of the
# Kubernetes dependencies the others share.
# manifest-templator: KubeVirt's own tool that fills in its release manifests
# (the operator's Deployment, RBAC, the KubeVirt CR), as its hack/build-manifests.sh.
comps=(cmd/virt-controller cmd/virt-api cmd/virt-operator cmd/virt-handler cmd/virt-launcher-monitor
       cmd/virt-probe cmd/virt-freezer cmd/virt-tail cmd/virt-chroot cmd/virtctl tools/manifest-templator)
# virt-exportproxy and synchronization-controller (virt-synchronization-controller
# in its image): virt-operator always deploys the first and, with the
# DecentralizedLiveMigration feature gate (Beta: on by default), the second,
# and reports the KubeVirt CR Available only once they are ready.
# libvirt-hook-client: the launcher image's /etc/libvirt/hooks/qemu (a
# migration target's domain XML hooks).
comps+=(cmd/virt-exportproxy cmd/synchronization-controller cmd/virt-launcher/libvirt-hook-client)
# One `go build` for all that are missing: it links one while it compiles for
# the next, and loads the package graph once. Into a scratch directory, then
# moved into place.
todo=()
for p in "${comps[@]}"; do
  c=${p##*/}
  if [ -x "$bin/$c" ]; then say "$c cached $bin/$c"; continue; fi
  [ -d "$src/$p" ] || { log "no $p in $src"; exit 1; }
  todo+=("./$p")
done
if [ ${#todo[@]} -gt 0 ]; then
  t=$(date +%s); mktmp "$kv"
  log "go build ${todo[*]}"
  (cd "$src" && "$GO" "${gobuild[@]}" -o "$x/" "${todo[@]}")
  for p in "${todo[@]}"; do
    c=${p##*/}
    mv "$x/$c" "$bin/$c"
    say "$c built $bin/$c"
  done
  say "${#todo[@]} Go components built ($(( $(date +%s) - t )) s)"
fi

# container-disk: one C file; static, as upstream (it runs in a scratch container).
if [ -x "$bin/container-disk" ]; then say "container-disk cached $bin/container-disk"
else
  t=$(date +%s)
  gcc -O2 -static -o "$bin/container-disk.tmp" "$src/cmd/container-disk-v2alpha/main.c"
  mv "$bin/container-disk.tmp" "$bin/container-disk"
  say "container-disk built ($(( $(date +%s) - t )) s) $bin/container-disk"
fi

# 3. virt-launcher in a Debian 13 root.
make_buildroot
if [ -x "$bin/virt-launcher" ]; then say "virt-launcher cached $bin/virt-launcher"
else
  t=$(date +%s)
  goroot=$("$GO" env GOROOT)
  log "go build ./cmd/virt-launcher in $root"
  unshare -m --propagation private bash -euo pipefail -c '
    r=$1
    mount --bind "$2" "$r/usr/local/go"; mount -o remount,bind,ro "$r/usr/local/go"
    mount --bind "$3" "$r/src"; mount -o remount,bind,ro "$r/src"
    mount --bind "$4" "$r/gocache"; mount --bind "$5" "$r/out"
    mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"
    chroot "$r" env -i PATH=/usr/local/go/bin:/usr/bin:/bin HOME=/root GOCACHE=/gocache \
      GOTOOLCHAIN=local GOPROXY=off GOFLAGS="-mod=vendor -buildvcs=false" CGO_ENABLED=1 \
      sh -c "cd /src && go build -p 2 -trimpath -gcflags \"$7\" -tags selinux -ldflags \"$6\" -o /out/virt-launcher.tmp ./cmd/virt-launcher"
  ' _ "$root" "$goroot" "$src" "$GOCACHE" "$bin" "$ld" "$GO_GCFLAGS"
  mv "$bin/virt-launcher.tmp" "$bin/virt-launcher"
  say "virt-launcher built ($(( $(date +%s) - t )) s) $bin/virt-launcher"
fi
say "kubevirt ${commit:0:12} in $bin ($(( $(date +%s) - t0 )) s in all)"
