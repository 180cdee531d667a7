# Sourced by the hack/ scripts that build images with buildah (build-image.sh,
# build-kubevirt-images.sh): one storage for all of them, one lock, and the
# Debian bases made by debootstrap (this machine reaches Debian's mirrors but
# not Docker Hub). Needs hack/versions.sh sourced first ($VTPM_CACHE).
MIRROR=${VTPM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Both can be moved (e.g. to measure a cold build without touching the cache).
IMG_CACHE=${VTPM_IMAGE_CACHE:-$VTPM_CACHE/images}
BAH_ROOT=${VTPM_BUILDAH_ROOT:-$VTPM_CACHE/buildah}
mkdir -p "$IMG_CACHE" "$BAH_ROOT"

# The overlay driver: a layer is its own changes, mounted over its parent's.
# (vfs, used before, copied the whole root for every layer: the agent's build
# stage, a gigabyte, for each RUN and COPY. A first `make test` spent minutes
# of its two cores on those copies.) It needs a cache on a filesystem that
# can be an overlay's upper layer: where the cache is itself on overlayfs (a
# container's root), vfs again. VTPM_BUILDAH_DRIVER=vfs|overlay decides instead.
BAH_DRIVER=${VTPM_BUILDAH_DRIVER:-}
if [ -z "$BAH_DRIVER" ]; then
  case $(stat -f -c %T "$BAH_ROOT") in overlayfs) BAH_DRIVER=vfs ;; *) BAH_DRIVER=overlay ;; esac
fi
bah() { buildah --root "$BAH_ROOT/$BAH_DRIVER" --runroot "$BAH_ROOT/run-$BAH_DRIVER" --storage-driver "$BAH_DRIVER" "$@"; }

# bah_lock SECONDS: take the storage's lock on fd 9 (held until the process ends).
# Drops the storage an older tree kept with the vfs driver (gigabytes, unused).
bah_lock() {
  exec 9> "$BAH_ROOT/.lock"
  flock -w "$1" 9 || { echo "$(basename "$0"): another build holds $BAH_ROOT/.lock" >&2; return 1; }
  if [ -d "$BAH_ROOT/storage/vfs" ]; then
    echo "$(basename "$0"): removing the old vfs storage $BAH_ROOT/storage ($(du -sh "$BAH_ROOT/storage" | cut -f1))" >&2
    rm -rf "$BAH_ROOT/storage" "$BAH_ROOT/run"
  fi
}

# bah_archive REF FILE NAME: REF as an OCI archive FILE whose image is named
# NAME, written beside it and moved into place. The layers are not
# compressed: gzip cost a first `make test` a minute of CPU here and the
# import another; the archives only ever go to this machine's nodes.
bah_archive() {
  bah push -q --disable-compression "$1" "oci-archive:$2.tmp:$3" >/dev/null
  mv "$2.tmp" "$2"
}

# debian_base_tar SUITE N: print $IMG_CACHE/debian-N-minbase.tar, made once:
# debootstrap --variant=minbase SUITE (what Docker Hub's debian:N-slim is),
# less what debian:N-slim leaves out (package lists, downloaded .debs,
# debootstrap's notes). Needs no storage lock (its own, per suite).
debian_base_tar() {
  local suite=$1 n=$2 base_tar=$IMG_CACHE/debian-$2-minbase.tar tmp
  if [ ! -s "$base_tar" ]; then
    exec 8> "$IMG_CACHE/.debian-$n.lock"
    flock -w 1800 8 || { echo "$(basename "$0"): another debootstrap holds $IMG_CACHE/.debian-$n.lock" >&2; return 1; }
    if [ ! -s "$base_tar" ]; then
      tmp=$(mktemp -d "$IMG_CACHE/.debootstrap.XXXXXX")
      echo "$(basename "$0"): debootstrap --variant=minbase $suite from $MIRROR (1 to 6 minutes)" >&2
      debootstrap --variant=minbase "$suite" "$tmp/rootfs" "$MIRROR" > "$tmp/debootstrap.log" 2>&1 ||
        { tail -20 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; exec 8>&-; return 1; }
      rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/debootstrap"
      tar -C "$tmp/rootfs" --numeric-owner -cf "$tmp/base.tar" .
      mv "$tmp/base.tar" "$base_tar"
      rm -rf "$tmp"
    fi
    exec 8>&-
  fi
  echo "$base_tar"
}

# debian_base SUITE REF: commit debian_base_tar's root into buildah's storage
# as REF (docker.io/library/debian:N-slim, N from REF's tag), once; a storage
# that lost REF gets it back from the tar in seconds. Call it with the lock held.
debian_base() {
  local suite=$1 ref=$2 n base_tar c
  bah inspect --type image "$ref" >/dev/null 2>&1 && return 0
  n=${ref##*:}; n=${n%%-*}
  base_tar=$(debian_base_tar "$suite" "$n")
  c=$(bah from scratch)
  bah add "$c" "$base_tar" / >/dev/null
  bah config --os linux --arch amd64 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$c"
  bah commit -q "$c" "$ref" >/dev/null
  bah rm "$c" >/dev/null
  echo "$(basename "$0"): base $ref committed from debootstrap $suite" >&2
}

# bah_prune_dangling: remove build stages (dangling images) older than an hour;
# newer ones may be a running build's. Call it with the lock held.
bah_prune_dangling() {
  local cutoff id created t
  cutoff=$(( $(date +%s) - 3600 ))
  bah images --filter dangling=true --format '{{.ID}} {{.CreatedAtRaw}}' 2>/dev/null |
    while read -r id created; do
      t=$(date -d "${created% [A-Z]*}" +%s 2>/dev/null) || continue
      [ "$t" -ge "$cutoff" ] || bah rmi "$id" >/dev/null 2>&1 || true
    done
}
