#!/usr/bin/env bash
# KubeVirt's container images for the test bed (issue 20), built with buildah
# (Debian's package) from Debian, no Docker engine and no registry, from the
# binaries hack/build-kubevirt.sh builds from KubeVirt's source.
#   hack/build-kubevirt-images.sh [NAME...]   build what is not cached; print one
#                                             line per image: NAME REF OCI-ARCHIVE
#   hack/build-kubevirt-images.sh --tag       print the tag this tree and the
#                                             KubeVirt source give, build nothing
#   hack/build-kubevirt-images.sh --packages  needs no KubeVirt binaries: make the
#                                             Debian bases and, for the images with
#                                             a Containerfile of their own, the
#                                             layers before its first COPY (the
#                                             apt-get); print nothing. The full build
#                                             later reuses them (--layers), so
#                                             hack/build-all.sh runs this while the
#                                             binaries compile.
# NAME: virt-operator virt-api virt-controller virt-exportproxy
# virt-synchronization-controller virt-handler virt-launcher (all by default). REF is $KUBEVIRT_REGISTRY/NAME:TAG, registry
# localhost/kubevirt by default, one TAG for all: virt-operator derives the
# other images' names from its own (pkg/virt-operator/util/config.go:
# registry/prefix from the part before "virt-operator", the tag after it), so
# a KubeVirt CR without imageTag/imageRegistry deploys exactly these.
# virt-exportproxy and virt-synchronization-controller are there because
# virt-operator deploys them (the second with the DecentralizedLiveMigration
# feature gate, Beta, so on by default) and reports the CR Available only when
# they are ready.
#
# The definitions: hack/images/kubevirt/NAME/{Containerfile,files}; the Go
# components without a Containerfile of their own share go-component.Containerfile. `files`
# lists what goes into the image from KubeVirt (its binaries from
# hack/build-kubevirt.sh's bin/, files of its tree from src/, or files of the
# definition's directory, def/) and where; the
# context given to buildah is the Containerfile and rootfs/, those files laid
# out as in the image, so one COPY puts them all in one layer. The
# Containerfiles say what each image holds and why, and map KubeVirt's CentOS
# packages (its hack/rpm-deps.sh) to Debian's.
# Bases: virt-handler and virt-launcher on Debian 13 (virt-launcher links
# Debian 13's libvirt and libnbd), the others on Debian 12 (KubeVirt uses
# distroless base-debian12 for them). Both are debootstrap --variant=minbase
# roots committed into buildah's storage once as docker.io/library/debian:12-slim
# and :13-slim (hack/buildah-lib.sh), shared with hack/build-image.sh.
#
# TAG: 12 hex of a hash over the KubeVirt cache key (the source tarball's
# sha256, or the clone's commit: hack/build-kubevirt.sh --dir), the
# definitions' files, this script and hack/buildah-lib.sh (the bases): a new
# source, a changed Containerfile or file list makes a new tag, never a stale
# image under an old one. (Debian's packages are what the mirror serves at the
# first build; --layers keeps them until the definitions change.)
# Cache: $VTPM_CACHE/images/kubevirt-NAME-TAG.oci.tar; when all the asked-for
# archives exist, nothing else runs (not even hack/build-kubevirt.sh).
# Storage and lock as hack/build-image.sh ($VTPM_CACHE/buildah, overlay, --layers:
# a new tag with the same packages reuses the apt-get layers).
# Every new image is checked by running what it is for inside it (buildah
# run): the binaries start, ldd finds every library, the tools answer
# --version; the first line of each check goes to stderr.
#
# Import (as nodes-up.sh does): the archive names the image by its tag only, so
#   ctr -n k8s.io images import --base-name REGISTRY/NAME OCI-ARCHIVE
# makes REF (--index-name REF works too, but ctr also keeps a temporary name).
#
# Measured here (2 cores, shared with other builds; KubeVirt's binaries cached),
# for the six images before virt-synchronization-controller (one more Debian 12
# image, ~15-25 s) joined them: all cold, nothing in the cache (two
# debootstraps): 457 s; cold with the Debian base tars cached (fresh storage:
# apt-get, copies): 307 s; a new tag with the apt-get layers cached: 139 s for
# all seven (the launcher alone 30-96 s); all cached: 0.3 s. Archives 67-97 MB,
# the launcher 181 MB (gzip layers); buildah storage (vfs) ~3 GB. (Those were
# with the vfs driver and gzip layers; hack/build-all.sh's figures in the
# README are the current ones.)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/versions.sh"
. "$top/hack/buildah-lib.sh"
REGISTRY=${KUBEVIRT_REGISTRY:-localhost/kubevirt}
defs=$top/hack/images/kubevirt
all=(virt-operator virt-api virt-controller virt-exportproxy virt-synchronization-controller virt-handler virt-launcher)
log() { echo "build-kubevirt-images: $*" >&2; }
t0=$(date +%s)

print_tag= packages=
if [ "${1:-}" = --tag ]; then print_tag=1; shift; fi
if [ "${1:-}" = --packages ]; then packages=1; shift; fi
names=("$@")
[ $# -gt 0 ] || names=("${all[@]}")
for n in "${names[@]}"; do
  [ -f "$defs/$n/files" ] || { log "unknown image $n (${all[*]})"; exit 2; }
done
# containerfile NAME: the image's own, or the one the Go components share.
containerfile() { if [ -f "$defs/$1/Containerfile" ]; then echo "$defs/$1/Containerfile"; else echo "$defs/go-component.Containerfile"; fi; }

kv=$("$top/hack/build-kubevirt.sh" --dir)
key=${kv##*/kubevirt-}
tag=$( { echo "kubevirt $key"; (cd "$defs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum);
         sha256sum < "$0"; sha256sum < "$top/hack/buildah-lib.sh"; } | sha256sum | cut -c1-12)
[ -z "$print_tag" ] || { echo "$tag"; exit 0; }

archive() { echo "$IMG_CACHE/kubevirt-$1-$tag.oci.tar"; }
# bases: the tools, then the Debian bases: the debootstrap tars before the
# storage's lock (minutes, once), their commits into buildah's storage under
# it (held from then on, until this script ends).
bases() {
  local t
  for t in buildah debootstrap; do
    command -v "$t" >/dev/null || { log "$t missing (hack/install-deps.sh installs it)"; exit 1; }
  done
  debian_base_tar bookworm 12 >/dev/null
  debian_base_tar trixie 13 >/dev/null
  bah_lock 3600
  debian_base bookworm docker.io/library/debian:12-slim
  debian_base trixie docker.io/library/debian:13-slim
}

# --packages: the layers that need only Debian's packages, not KubeVirt's
# binaries. Each Containerfile's lines before its first COPY, built alone
# with --layers: the same instructions on the same base make the same cache
# entries, which the full build below finds. Nothing is archived or tagged.
if [ -n "$packages" ]; then
  bases
  ctx=$(mktemp -d "$IMG_CACHE/.kubevirt-ctx.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  for n in "${names[@]}"; do
    [ -f "$defs/$n/Containerfile" ] || continue
    mkdir -p "$ctx/$n"
    sed '/^COPY /,$d' "$defs/$n/Containerfile" > "$ctx/$n/Containerfile"
    t=$(date +%s)
    bah bud --pull-never --layers --isolation chroot --build-arg "NAME=$n" -f "$ctx/$n/Containerfile" "$ctx/$n" > "$ctx/$n.log" 2>&1 ||
      { tail -30 "$ctx/$n.log" >&2; exit 1; }
    log "$n: the package layers ($(( $(date +%s) - t )) s)"
  done
  exit 0
fi
todo=()
for n in "${names[@]}"; do [ -s "$(archive "$n")" ] || todo+=("$n"); done

if [ ${#todo[@]} -gt 0 ]; then
  # 1. The binaries (cached: a fraction of a second).
  built=$("$top/hack/build-kubevirt.sh")
  bin=$(sed -n 's/^build-kubevirt: kubevirt [0-9a-f]* in \(.*\) ([0-9]* s in all)$/\1/p' <<<"$built")
  [ "$bin" = "$kv/bin" ] || { log "hack/build-kubevirt.sh gave no binaries in $kv/bin"; exit 1; }
  src=$kv/src
  [ -d "$src/cmd" ] || src=${KUBEVIRT_SRC:?}

  # 2. The contexts: NAME/Containerfile and NAME/rootfs/ laid out from NAME/files.
  ctx=$(mktemp -d "$IMG_CACHE/.kubevirt-ctx.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  chmod 755 "$ctx"
  for n in "${todo[@]}"; do
    mkdir -p "$ctx/$n/rootfs"
    cp "$(containerfile "$n")" "$ctx/$n/Containerfile"
    while read -r dest from; do
      case $dest in ''|'#'*) continue ;; esac
      d=$ctx/$n/rootfs$dest
      mkdir -p "$(dirname "$d")"
      # The image gets these files' modes. The binaries (0755, 10-80 MB) are
      # hard-linked when the cache allows it; KubeVirt's files are copied and
      # lose group/other write (node-labeller.sh is 0775 in its tree).
      case $from in
        bin/*) f=$bin/${from#bin/}; [ -f "$f" ] && { cp -l "$f" "$d" 2>/dev/null || cp "$f" "$d"; } ;;
        src/*) f=$src/${from#src/}; [ -f "$f" ] && cp "$f" "$d" && chmod go-w "$d" ;;
        def/*) f=$defs/$n/${from#def/}; [ -f "$f" ] && cp "$f" "$d" && chmod go-w "$d" ;;
        *) log "$defs/$n/files: $from is neither bin/, src/ nor def/"; exit 1 ;;
      esac
      [ -f "$d" ] || { log "$defs/$n/files: no $f"; exit 1; }
    done < "$defs/$n/files"
  done

  # 3. The bases.
  bases

  # 4. Each image: build, check, archive.
  for n in "${todo[@]}"; do
    ref=$REGISTRY/$n:$tag out=$(archive "$n") t=$(date +%s)
    log "buildah bud $n (tag $tag)"
    bah bud --pull-never --layers --isolation chroot --build-arg "NAME=$n" -f "$ctx/$n/Containerfile" -t "$ref" "$ctx/$n" > "$ctx/$n.log" 2>&1 ||
      { tail -30 "$ctx/$n.log" >&2; exit 1; }
    case $n in
      virt-launcher) checks=(
        "ldd-ok /usr/bin/virt-launcher /usr/bin/virt-launcher-monitor /usr/bin/virt-probe /usr/bin/virt-freezer /usr/bin/virt-tail /usr/sbin/libvirtd /usr/bin/qemu-system-x86_64 /usr/bin/swtpm /etc/libvirt/hooks/qemu"
        "/usr/bin/virt-launcher --help" "/usr/bin/virt-launcher-monitor --help" "/usr/sbin/virtqemud --version"
        "/usr/sbin/virtlogd --version" "virsh --version" "/usr/bin/qemu-system-x86_64 --version"
        "/usr/bin/qemu-img --version" "swtpm --version" "swtpm socket --print-capabilities" "swtpm_setup --print-capabilities" "xorrisofs -version"
        "/usr/libexec/virtiofsd --version" "passt --version" "getcap /usr/bin/virt-launcher-monitor"
        "ls-ok /usr/share/edk2/ovmf/OVMF_CODE.secboot.fd /usr/share/edk2/ovmf/OVMF_VARS.secboot.fd /usr/share/edk2/ovmf/OVMF_CODE.fd /usr/share/edk2/ovmf/OVMF_VARS.fd /usr/bin/node-labeller.sh"
        "id qemu") ;;
      virt-handler) checks=("ldd-ok /usr/bin/virt-handler /usr/bin/virt-chroot /usr/bin/qemu-img"
        "/usr/bin/virt-handler --help" "/usr/bin/virt-chroot --help" "/usr/bin/qemu-img --version" "nft --version"
        "/usr/bin/findmnt --version" "ls-ok /usr/bin/passt-repair" "id qemu") ;;
      *) checks=("ldd-ok /usr/bin/$n" "/usr/bin/$n --help" "id") ;;
    esac
    c=$(bah from -q "$ref")
    for chk in "${checks[@]}"; do
      # ldd-ok F...: every library found; ls-ok F...: each exists (through links).
      case $chk in
        ldd-ok\ *) cmd="for f in ${chk#ldd-ok }; do ldd \$f > /tmp/ldd || exit 1; grep 'not found' /tmp/ldd && exit 1; done; echo all libraries found" ;;
        ls-ok\ *) cmd="for f in ${chk#ls-ok }; do test -e \$f || { echo missing \$f; exit 1; }; done; echo all present" ;;
        *) cmd="$chk 2>&1" ;;
      esac
      # Help texts exit 0 or 2 (pflag); a missing library or file exits 127 or 1.
      rc=0 o=$(bah run --isolation chroot "$c" -- sh -c "$cmd" 2>&1) || rc=$?
      case $chk:$rc in
        *--help:2|*:0) echo "build-kubevirt-images: $n: $chk: $(sed -n 1p <<<"$o")" >&2 ;;
        *) log "$n: '$chk' failed ($rc): $(tail -5 <<<"$o")"; bah rm "$c" >/dev/null; exit 1 ;;
      esac
    done
    bah rm "$c" >/dev/null
    bah_archive "$ref" "$out" "$tag"
    log "built $ref -> $out ($(( $(date +%s) - t )) s, $(du -m "$out" | cut -f1) MB)"
  done

  # 5. What older builds left (as hack/build-image.sh): other tags of these
  # images, build stages older than an hour, and all but the two newest
  # archives of each image.
  for n in "${all[@]}"; do
    for old in $(bah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep -E "^${REGISTRY//./\\.}/$n:[0-9a-f]{12}$" |
                   grep -vxF "$REGISTRY/$n:$tag"); do
      bah rmi "$old" >/dev/null 2>&1 || true
    done
    # (No archive of NAME at all when only some images were asked for: nothing to drop.)
    ls -t "$IMG_CACHE/kubevirt-$n"-*.oci.tar 2>/dev/null | grep -E "/kubevirt-$n-[0-9a-f]{12}\.oci\.tar$" |
      tail -n +3 | xargs -r rm -f || true
  done
  bah_prune_dangling
  log "built ${todo[*]} in $(( $(date +%s) - t0 )) s"
fi
for n in "${names[@]}"; do echo "$n $REGISTRY/$n:$tag $(archive "$n")"; done
