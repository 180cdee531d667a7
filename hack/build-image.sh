#!/usr/bin/env bash
# `make image`: build the agent's image from deploy/Containerfile with buildah
# (Debian's package), no Docker engine and no registry.
#   hack/build-image.sh [vtpm-agent]   the agent (deploy/Containerfile, the repository as context)
#   hack/build-image.sh vtpm-agent-next   the same image with one more label: a different
#                                      image (digest) to roll the DaemonSet to in tests
#   hack/build-image.sh launcher       the test bed's virt-launcher (hack/images/launcher/)
#   hack/build-image.sh launcher-libvirt   one that runs libvirt and QEMU (hack/images/launcher-libvirt/)
#   hack/build-image.sh --tag NAME     print the tag NAME would get from this tree, build nothing
#                                      (the bench checks the nodes run this tree's agent)
#
# This machine reaches Debian's mirrors but not Docker Hub, so the
# Containerfile's `FROM docker.io/library/debian:12-slim` is satisfied
# locally: debootstrap --variant=minbase bookworm (the same thing debian:12-slim
# is) is committed into buildah's storage under that name once, and the build
# runs with --pull-never. Everything else is the Containerfile as written:
# its build stage compiles the sources with Debian's -dev packages, its
# runtime stage installs the libraries and swtpm.
#
# Storage, layers and the base live in the cache ($VTPM_CACHE/buildah,
# $VTPM_CACHE/images), outside the repository; --layers reuses the apt-get
# layers, so a rebuild after a source change only recompiles.
# Output (stdout, one line): NAME REF OCI-ARCHIVE, e.g.
#   vtpm-agent vtpm.local/vtpm-agent:<tag> ~/.cache/vtpm-agent/images/vtpm-agent-<tag>.oci.tar
# where <tag> hashes the build context. Import it with
#   ctr -n k8s.io images import --index-name REF OCI-ARCHIVE
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/versions.sh"
. "$top/hack/buildah-lib.sh"   # bah, bah_lock, debian_base; $IMG_CACHE, $BAH_ROOT
for t in buildah debootstrap; do
  command -v "$t" >/dev/null || { echo "build-image: $t missing (hack/install-deps.sh installs it)" >&2; exit 1; }
done
what=${1:-vtpm-agent} print_tag=
if [ "$what" = --tag ]; then print_tag=1 what=${2:-vtpm-agent}; fi
log() { echo "build-image: $*" >&2; }
case $what in
  vtpm-agent|vtpm-agent-next) cf=deploy/Containerfile sub=. checks=("vtpm-agent --version" "swtpm --version") ;;
  launcher) cf=hack/images/launcher/Containerfile sub=hack/images/launcher checks=("swtpm --version" "socat -V") ;;
  launcher-libvirt) cf=hack/images/launcher-libvirt/Containerfile sub=hack/images/launcher-libvirt
    checks=("libvirtd --version" "qemu-system-x86_64 --version" "swtpm --version" "socat -V" "ls /usr/share/OVMF/OVMF_CODE_4M.fd") ;;
  *) log "unknown image $what (vtpm-agent, vtpm-agent-next, launcher, launcher-libvirt)"; exit 2 ;;
esac
name=${what%-next}

# 1. The build context: the files git knows under $sub (tracked or new, not
# ignored), as they are in the working tree; never build/ or caches.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
(cd "$top/$sub" && git ls-files -z --cached --others --exclude-standard . |
   tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$ctx" -xf -
tag=$( (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12)
[ -z "$print_tag" ] || { echo "$tag"; exit 0; }

# 2. The base, once (hack/buildah-lib.sh): the debootstrap before the lock.
debian_base_tar bookworm 12 >/dev/null
bah_lock 1800
debian_base bookworm docker.io/library/debian:12-slim


ref=vtpm.local/$name:$tag
out=$IMG_CACHE/$name-$tag.oci.tar
if [ ! -s "$out" ]; then
  log "buildah bud -f $cf (tag $tag)"
  bah bud --pull-never --layers --isolation chroot -f "$ctx/${cf#"$sub"/}" -t "$ref" "$ctx" > "$ctx/bud.log" 2>&1 ||
    { tail -30 "$ctx/bud.log" >&2; exit 1; }
  # The image must run what it is for. The first line of each check is shown;
  # sed reads the rest (head would close the pipe early, and buildah, writing
  # QEMU's second --version line, would die of SIGPIPE under pipefail).
  c=$(bah from -q "$ref")
  for chk in "${checks[@]}"; do
    # shellcheck disable=SC2086 # a command and its arguments
    bah run --isolation chroot "$c" -- $chk 2>&1 | sed -n 1p >&2 ||
      { log "$what: the image does not run '$chk'"; bah rm "$c" >/dev/null; exit 1; }
  done
  bah rm "$c" >/dev/null
  # The archive names the image by its tag only (as an OCI layout does), so
  # `ctr images import --base-name vtpm.local/NAME` makes $ref.
  bah_archive "$ref" "$out" "$tag"
  log "built $ref -> $out"
fi
if [ "$what" = vtpm-agent-next ]; then
  # The same files, one more label: another image for a rolling update.
  nref=$ref-next nout=$IMG_CACHE/$name-$tag-next.oci.tar
  if [ ! -s "$nout" ]; then
    # Another test bed's build may have dropped the tag (step 3): the archive has it.
    if ! bah inspect --type image "$ref" >/dev/null 2>&1; then
      id=$(bah pull -q "oci-archive:$out") && bah tag "$id" "$ref" ||
        { log "cannot load $out back into buildah's storage"; exit 1; }
    fi
    c=$(bah from -q "$ref")
    bah config --label vtpm-agent.io/testbed-roll=next "$c"
    bah commit -q "$c" "$nref" >/dev/null
    bah rm "$c" >/dev/null
    bah_archive "$nref" "$nout" "$tag-next"
    log "built $nref -> $nout"
  fi
  ref=$nref out=$nout
fi

# 3. What older builds left: every source change makes new images (each
# with its own build stage, ~0.3 GB of compiled tree), and the cache would
# grow without bound. Drop this name's other tags and the build
# stages' leftovers older than an hour (what a build running beside this one
# may still be using is younger), and keep the three newest builds' archives
# (a test bed imports one right after its build). The apt-get layers stay:
# they are parents of the current build.
for old in $(bah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep -E "^vtpm\.local/$name:[0-9a-f]{12}(-next)?$" |
               grep -vxF -e "${ref%-next}" -e "${ref%-next}-next"); do
  bah rmi "$old" >/dev/null 2>&1 || true
done
bah_prune_dangling
ls -t "$IMG_CACHE/$name"-*.oci.tar 2>/dev/null | grep -E "/$name-[0-9a-f]{12}(-next)?\.oci\.tar$" | tail -n +7 | xargs -r rm -f
echo "$what $ref $out"
