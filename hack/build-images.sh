#!/usr/bin/env bash
# Container images for real test-bed nodes, built without a registry or a
# Docker engine: a root filesystem assembled here, packed by umoci into an OCI
# image layout, archived as a tar that `ctr images import` takes.
#
#   hack/build-images.sh NAME...   build (if not cached) and print one line per
#                                  image: NAME REF TAR
# Images:
#   pause    the pod sandbox: hack/images/pause.c, static (pinned in containerd's config)
#   busybox  Debian's busybox-static with its applets as symlinks, for test pods
# Cache: $VTPM_CACHE/images/NAME-TAG/{oci/,image.tar}, TAG a hash of the inputs,
# so an edit (or a new busybox-static) makes a new image and never reuses a stale one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
IMG_CACHE=$VTPM_CACHE/images
IMG_REGISTRY=vtpm.local  # a name no registry serves: pods use imagePullPolicy Never

# inputs_hash NAME: what the image is made of.
inputs_hash() {
  case $1 in
    pause) { cat "$here/images/pause.c"; gcc --version | sed -n 1p; } ;;
    busybox) { dpkg-query -W -f='${Version}' busybox-static; sha256sum /bin/busybox; } ;;
  esac | { cat; cat "$0"; } | sha256sum | cut -c1-12
}

# rootfs NAME DIR: fill DIR with the image's files; print the umoci config options.
rootfs() {
  local name=$1 dir=$2 a
  case $name in
    pause)
      gcc -std=gnu17 -Wall -Wextra -Werror -Os -static -s "$here/images/pause.c" -o "$dir/pause"
      echo --config.entrypoint /pause ;;
    busybox)
      # Static (no ELF interpreter): the image holds no shared libraries.
      [ -x /bin/busybox ] && ! readelf -l /bin/busybox 2>/dev/null | grep -q INTERP ||
        { echo "build-images: Debian's busybox-static is missing: run hack/install-deps.sh" >&2; return 1; }
      mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp"
      chmod 1777 "$dir/tmp"
      cp /bin/busybox "$dir/bin/busybox"
      for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$dir/bin/$a"; done
      printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dir/etc/passwd"
      printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
      echo --config.env PATH=/bin --config.cmd /bin/sh ;;
    *) echo "build-images: unknown image $name" >&2; return 1 ;;
  esac
}

build_one() {
  local name=$1 tag out tmp opts
  tag=$(inputs_hash "$name")
  out=$IMG_CACHE/$name-$tag
  if [ ! -s "$out/image.tar" ]; then
    mkdir -p "$IMG_CACHE"
    tmp=$(mktemp -d "$IMG_CACHE/.$name.XXXXXX")
    chmod 755 "$tmp"
    mkdir "$tmp/rootfs"
    opts=$(rootfs "$name" "$tmp/rootfs")
    umoci init --layout "$tmp/oci"
    umoci new --image "$tmp/oci:$tag"
    umoci unpack --image "$tmp/oci:$tag" "$tmp/bundle" >/dev/null
    cp -a "$tmp/rootfs/." "$tmp/bundle/rootfs/"
    umoci repack --image "$tmp/oci:$tag" "$tmp/bundle"
    # shellcheck disable=SC2086 # options are single words
    umoci config --image "$tmp/oci:$tag" --os linux --architecture amd64 $opts
    umoci gc --layout "$tmp/oci"
    tar -C "$tmp/oci" -cf "$tmp/image.tar" .
    rm -rf "$tmp/bundle" "$tmp/rootfs"
    rm -rf "$out"
    mv "$tmp" "$out"
    echo "build-images: built $name ($out)" >&2
  fi
  echo "$name $IMG_REGISTRY/$name:$tag $out/image.tar"
}

[ $# -gt 0 ] || { echo "usage: $0 NAME..." >&2; exit 2; }
for n in "$@"; do build_one "$n"; done
