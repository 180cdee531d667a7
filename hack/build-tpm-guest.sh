#!/usr/bin/env bash
# A small Linux guest that shows its TPM and seals/unseals a secret with
# clevis: Debian 12's kernel plus an initramfs (busybox, bash, clevis, jose,
# tpm2-tools) whose /init (hack/images/tpm-guest/init) prints "TPM-GUEST: ..."
# lines on the serial console, does what the kernel command line asks and
# powers off. Packed as a KubeVirt kernelBoot image (example VM:
# hack/images/tpm-guest/vm.yaml).
#
#   hack/build-tpm-guest.sh           build (if not cached); print one line:
#                                     tpm-guest REF OCI-ARCHIVE
#   hack/build-tpm-guest.sh --files   the same build; print: VMLINUZ INITRD
#                                     (for QEMU's -kernel/-initrd, test/guest/)
#
# Where the parts come from: the user space is copied from this machine's
# Debian packages (busybox-static, bash, clevis-tpm2, jose, tpm2-tools,
# libtss2-tcti-device0; hack/install-deps.sh installs them), with the shared
# libraries ldd names. The kernel (linux-image-amd64's current ABI package)
# is not installed: `apt-get download` + only ./boot/vmlinuz-* from its data
# into the cache. Its TPM drivers (tpm_crb, tpm_tis) and the 8250 serial
# console are built in, so the initramfs carries no modules.
#
# Cache: $VTPM_CACHE/tpm-guest/kernel-VERSION/ (the kernel), and per TAG
# $VTPM_CACHE/tpm-guest/TAG/{vmlinuz,initrd.img} and
# $VTPM_CACHE/images/tpm-guest-TAG.oci.tar, TAG a hash of the inputs (this
# script, the init, the package versions, the kernel), so a new package makes
# a new image and a warm run only hashes (a second or two).
#
# The image (an OCI layout in a tar, `ctr images import --base-name
# localhost/vtpm/tpm-guest` names it REF) holds only /boot/vmlinuz and
# /boot/initrd.img, owned by 107:107 (the qemu user of KubeVirt's launcher)
# and world-readable, as KubeVirt's container disks are: KubeVirt runs it with
# its own static container-disk binary and bind-mounts the two files into the
# launcher, so no shell or libraries are needed in it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
src=$here/images/tpm-guest
G_CACHE=$VTPM_CACHE/tpm-guest
IMG_CACHE=$VTPM_CACHE/images
REPO=localhost/vtpm/tpm-guest
log() { echo "build-tpm-guest: $*" >&2; }
die() { log "$*"; exit 1; }

mode=image
case ${1:-} in
  '') ;;
  --files) mode=files ;;
  *) echo "usage: $0 [--files]" >&2; exit 2 ;;
esac

PKGS=(busybox-static bash clevis clevis-tpm2 jose libjose0 tpm2-tools libtss2-tcti-device0 libc6)
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    die "Debian package $p is missing: run hack/install-deps.sh"
done
for t in umoci python3; do command -v $t >/dev/null || die "$t is missing: run hack/install-deps.sh"; done
mkdir -p "$G_CACHE" "$IMG_CACHE"

# newc_archive DIR: DIR as the kernel's initramfs format (cpio "newc") on
# stdout, the same bytes for the same files: sorted names, numbered inodes,
# owner root, time 0 (busybox cpio writes the build's inode numbers and times).
newc_archive() {
  python3 - "$1" <<'PY'
import os, stat, sys
root, out = sys.argv[1], sys.stdout.buffer
def entry(ino, name, mode, nlink, data):
    name = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name), 0))
    out.write(hdr.encode() + name + b"\0" * (-(110 + len(name)) % 4) + data + b"\0" * (-len(data) % 4))
paths = []
for d, dirs, files in os.walk(root):
    paths += [os.path.relpath(os.path.join(d, n), root) for n in dirs + files]
for ino, rel in enumerate(sorted(paths), 1):
    p = os.path.join(root, rel)
    st = os.lstat(p)
    mode = stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        entry(ino, rel, mode, 1, os.readlink(p).encode())
    elif stat.S_ISDIR(st.st_mode):
        entry(ino, rel, mode, 2, b"")
    else:
        with open(p, "rb") as f:
            entry(ino, rel, mode, 1, f.read())
entry(0, "TRAILER!!!", 0, 1, b"")
PY
}

# 1. The kernel: the package linux-image-amd64 points at now; without apt's
# lists (an offline machine), the newest one already in the cache.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }') || true
kver=
[ -z "$kpkg" ] || kver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
if [ -n "$kver" ] && [ "$kver" != "(none)" ]; then
  kdir=$G_CACHE/kernel-${kpkg}_$kver
else
  kdir=$(ls -d "$G_CACHE"/kernel-*/ 2>/dev/null | sort -V | tail -1) ||
    die "apt knows no linux-image-amd64 and none is cached: run apt-get update"
  kdir=${kdir%/}
fi
if [ ! -s "$kdir/vmlinuz" ]; then
  tmp=$(mktemp -d "$G_CACHE/.kernel.XXXXXX")
  chmod 755 "$tmp"
  log "apt-get download $kpkg=$kver"
  (cd "$tmp" && apt-get download -q "$kpkg=$kver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
    { rm -rf "$tmp"; die "apt-get download $kpkg failed"; }
  # Only the kernel and its config, not the ~400 MB of modules.
  dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -C "$tmp" -xf - --wildcards './boot/vmlinuz-*' './boot/config-*'
  mv "$tmp"/boot/vmlinuz-* "$tmp/vmlinuz"
  mv "$tmp"/boot/config-* "$tmp/config"
  grep -qx 'CONFIG_TCG_CRB=y' "$tmp/config" && grep -qx 'CONFIG_TCG_TIS=y' "$tmp/config" &&
    grep -qx 'CONFIG_SERIAL_8250_CONSOLE=y' "$tmp/config" ||
    { rm -rf "$tmp"; die "$kpkg does not build in tpm_crb, tpm_tis and the serial console: the initramfs would need modules"; }
  rm -rf "$tmp"/*.deb "$tmp/boot"
  rm -rf "$kdir"
  mv "$tmp" "$kdir"
  log "kernel $(basename "$kdir")"
fi

# 2. The tag: everything the guest is made of.
tag=$( { cat "$0" "$src/init"; basename "$kdir"; sha256sum < "$kdir/vmlinuz";
         dpkg-query -W -f='${Package} ${Version}\n' "${PKGS[@]}" libtss2-esys-3.0.2-0 libtss2-tctildr0 libssl3 libjansson4;
       } | sha256sum | cut -c1-12)
out=$G_CACHE/$tag
archive=$IMG_CACHE/tpm-guest-$tag.oci.tar

# 3. The initramfs.
if [ ! -s "$out/initrd.img" ]; then
  tmp=$(mktemp -d "$G_CACHE/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  r=$tmp/root
  mkdir -p "$r"/usr/bin "$r"/usr/lib/x86_64-linux-gnu "$r"/usr/lib64 "$r"/proc "$r"/sys "$r"/dev "$r"/run "$r"/etc
  mkdir -m 1777 "$r"/tmp
  ln -s usr/bin "$r"/bin; ln -s usr/bin "$r"/sbin; ln -s bin "$r"/usr/sbin
  ln -s usr/lib "$r"/lib; ln -s usr/lib64 "$r"/lib64
  bins=(/usr/bin/bash /usr/bin/jose /usr/bin/tpm2)
  cp /usr/bin/busybox "$r"/usr/bin/busybox
  # The programs clevis runs, then every tpm2_* name of tpm2-tools' one binary.
  for f in /usr/bin/clevis /usr/bin/clevis-encrypt-tpm2 /usr/bin/clevis-decrypt /usr/bin/clevis-decrypt-tpm2 "${bins[@]}"; do
    cp -L "$f" "$r$f"
  done
  for f in $(dpkg -L tpm2-tools | grep -E '^/usr/bin/tpm2_'); do ln -s tpm2 "$r$f"; done
  for a in $(/usr/bin/busybox --list); do
    [ -e "$r/usr/bin/$a" ] || [ -L "$r/usr/bin/$a" ] || ln -s busybox "$r/usr/bin/$a"
  done
  # Shared libraries: what ldd resolves for the programs and for the TCTI
  # that tss2's loader dlopen()s for device:/dev/tpmrm0 (ldd cannot see it).
  tcti=$(dpkg -L libtss2-tcti-device0 | grep -E '/libtss2-tcti-device\.so\.0$')
  cp -L "$tcti" "$r/usr/lib/x86_64-linux-gnu/"
  for lib in $(ldd "${bins[@]}" "$tcti" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/lib64\/ld-linux/ { print $1 }' | sort -u); do
    case $lib in
      /lib64/*) cp -L "$lib" "$r/usr/lib64/" ;;
      *) cp -L "$lib" "$r/usr/lib/x86_64-linux-gnu/" ;;
    esac
  done
  install -m 0755 "$src/init" "$r/init"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$r/etc/passwd"
  printf 'root:x:0:\n' > "$r/etc/group"
  mkdir -p "$tmp/out"
  newc_archive "$r" | gzip -9n > "$tmp/out/initrd.img"
  cp "$kdir/vmlinuz" "$tmp/out/vmlinuz"
  rm -rf "$out"
  mv "$tmp/out" "$out"
  log "initramfs $(du -k "$out/initrd.img" | cut -f1) KiB ($(du -sk "$r" | cut -f1) KiB unpacked), kernel $(du -k "$out/vmlinuz" | cut -f1) KiB"
  rm -rf "$tmp"
  trap - EXIT
fi
if [ "$mode" = files ]; then
  echo "$out/vmlinuz $out/initrd.img"
  exit 0
fi

# 4. The kernelBoot image.
if [ ! -s "$archive" ]; then
  tmp=$(mktemp -d "$IMG_CACHE/.tpm-guest.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"
  umoci init --layout "$tmp/oci"
  umoci new --image "$tmp/oci:$tag"
  umoci unpack --image "$tmp/oci:$tag" "$tmp/bundle" >/dev/null
  install -d -o 107 -g 107 -m 0755 "$tmp/bundle/rootfs/boot"
  install -o 107 -g 107 -m 0444 "$out/vmlinuz" "$tmp/bundle/rootfs/boot/vmlinuz"
  install -o 107 -g 107 -m 0444 "$out/initrd.img" "$tmp/bundle/rootfs/boot/initrd.img"
  umoci repack --image "$tmp/oci:$tag" "$tmp/bundle"
  umoci config --image "$tmp/oci:$tag" --os linux --architecture amd64 \
    --config.label io.vtpm-agent.tpm-guest.kernel="$(basename "$kdir")"
  umoci gc --layout "$tmp/oci"
  tar -C "$tmp/oci" -cf "$tmp/image.tar" .
  mv "$tmp/image.tar" "$archive"
  rm -rf "$tmp"
  trap - EXIT
  log "built $REPO:$tag -> $archive"
  # Older builds: keep the three newest archives and guest directories.
  ls -t "$IMG_CACHE"/tpm-guest-*.oci.tar 2>/dev/null | tail -n +4 | xargs -r rm -f
  ls -td "$G_CACHE"/[0-9a-f]*/ 2>/dev/null | grep -E '/[0-9a-f]{12}/$' | tail -n +4 | xargs -r rm -rf
fi
echo "tpm-guest $REPO:$tag $archive"
