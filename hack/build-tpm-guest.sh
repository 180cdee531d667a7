#!/usr/bin/env bash
# A small Linux guest that shows its TPM and seals/unseals a secret with
# clevis: Debian 12's kernel plus an initramfs (busybox, bash, clevis, jose,
# tpm2-tools, virtio modules) whose /init (hack/images/tpm-guest/init) prints
# "TPM-GUEST: ..." lines on the serial console, does what the kernel command
# line asks and powers off. Delivered two ways:
#  - a KubeVirt kernelBoot image (/boot/vmlinuz, /boot/initrd.img; example VM
#    hack/images/tpm-guest/vm.yaml): the command line says what to do;
#  - a bootable raw disk, disk.img (BIOS: MBR, syslinux on FAT, the same kernel
#    and initramfs, fixed command line "tpmguest.auto=1"), for a VM whose disk
#    is a PVC holding it (hack/images/tpm-guest/vm-disk.yaml). The guest keeps
#    its sealed secret in a 64 KiB raw partition at the disk's end (the
#    "store", see the init). Shipped in a second image, tpm-guest-disk, with
#    /disk.img and a static busybox (/bin/sh) so a pod can copy it to a PVC.
#
#   hack/build-tpm-guest.sh           build (if not cached); print two lines:
#                                     tpm-guest REF OCI-ARCHIVE
#                                     tpm-guest-disk REF OCI-ARCHIVE
#   hack/build-tpm-guest.sh --files   the same guest, no images; print:
#                                     VMLINUZ INITRD DISK-IMG (for QEMU, test/guest/)
#
# Where the parts come from: the user space is copied from this machine's
# Debian packages (busybox-static, bash, clevis-tpm2, jose, tpm2-tools,
# libtss2-tcti-device0; hack/install-deps.sh installs them), with the shared
# libraries ldd names. The kernel (linux-image-amd64's current ABI package)
# is not installed: `apt-get download` + only ./boot/vmlinuz-* from its data
# into the cache. Its TPM drivers (tpm_crb, tpm_tis) and the 8250 serial
# console are built in; virtio-blk and virtio-pci (KubeVirt's default disk
# bus) are modules: those two and what their .modinfo "depends=" names, with
# a modules.dep from busybox depmod, go into the initramfs. The disk's tools
# (syslinux, syslinux-common, mtools) are not installed either: `apt-get
# download` + `dpkg-deb -x` into the cache; they work on the image file, so
# making the disk needs no root, no loop device and no mount.
#
# Cache: $VTPM_CACHE/tpm-guest/kernel-VERSION/ (the kernel; modules-HASH/ the
# module subset), tools-HASH/ (the disk tools), and per TAG
# $VTPM_CACHE/tpm-guest/TAG/{vmlinuz,initrd.img,disk.img} and
# $VTPM_CACHE/images/tpm-guest{,-disk}-TAG.oci.tar, TAG a hash of the inputs
# (this script, the init, the package versions, the kernel, the modules, the
# tools), so a new package makes a new image and a warm run only hashes.
#
# The kernelBoot image (an OCI layout in a tar, `ctr images import --base-name
# localhost/vtpm/tpm-guest` names it REF) holds only /boot/vmlinuz and
# /boot/initrd.img, owned by 107:107 (the qemu user of KubeVirt's launcher)
# and world-readable, as KubeVirt's container disks are: KubeVirt runs it with
# its own static container-disk binary and bind-mounts the two files into the
# launcher, so no shell or libraries are needed in it. The disk image is kept
# apart so that this one stays small and shell-less.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
src=$here/images/tpm-guest
G_CACHE=$VTPM_CACHE/tpm-guest
IMG_CACHE=$VTPM_CACHE/images
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

# apt_fetch DIR PKG=VERSION...: the packages' .deb files into DIR (not installed).
apt_fetch() {
  local dir=$1; shift
  log "apt-get download $*"
  (cd "$dir" && apt-get download -q "$@") > "$dir/apt.log" 2>&1 ||
    { grep -v '^W: Download is performed unsandboxed' "$dir/apt.log" >&2; return 1; }
  rm -f "$dir/apt.log"
}
# candidates PKG...: "PKG=VERSION" for each package apt would install, in
# one apt-cache call (each costs about a second); none for those it knows not.
candidates() {
  apt-cache policy "$@" 2>/dev/null |
    awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) } $1 == "Candidate:" && $2 != "(none)" { print p "=" $2 }'
}
TOOL_PKGS=(syslinux syslinux-common mtools)

# 1. The kernel: the package linux-image-amd64 points at now; without apt's
# lists (an offline machine), the newest one already in the cache.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }') || true
known=$(candidates ${kpkg:+"$kpkg"} "${TOOL_PKGS[@]}") || true
kver=
[ -z "$kpkg" ] || kver=$(sed -n "s/^$kpkg=//p" <<<"$known")
if [ -n "$kver" ]; then
  kdir=$G_CACHE/kernel-${kpkg}_$kver
else
  kdir=$(ls -d "$G_CACHE"/kernel-*/ 2>/dev/null | sort -V | tail -1) ||
    die "apt knows no linux-image-amd64 and none is cached: run apt-get update"
  kdir=${kdir%/}
  kpkg=${kdir##*/kernel-} kver=${kpkg#*_} kpkg=${kpkg%%_*}
fi
kabi=${kpkg#linux-image-}  # uname -r of that kernel, its modules' directory
# kernel_deb: $deb, the package's .deb, downloaded once per run into $kdeb_dir.
kdeb_dir=
kernel_deb() {
  if [ -z "$kdeb_dir" ]; then
    [ -n "$kver" ] || die "apt knows no version of $kpkg to download: run apt-get update"
    kdeb_dir=$(mktemp -d "$G_CACHE/.kernel-deb.XXXXXX")
    apt_fetch "$kdeb_dir" "$kpkg=$kver" || { rm -rf "$kdeb_dir"; die "apt-get download $kpkg failed"; }
  fi
  deb=$(ls "$kdeb_dir"/*.deb)
}
if [ ! -s "$kdir/vmlinuz" ]; then
  kernel_deb
  tmp=$(mktemp -d "$G_CACHE/.kernel.XXXXXX")
  chmod 755 "$tmp"
  # Only the kernel and its config, not the ~400 MB of modules.
  dpkg-deb --fsys-tarfile "$deb" | tar -C "$tmp" -xf - --wildcards './boot/vmlinuz-*' './boot/config-*'
  mv "$tmp"/boot/vmlinuz-* "$tmp/vmlinuz"
  mv "$tmp"/boot/config-* "$tmp/config"
  grep -qx 'CONFIG_TCG_CRB=y' "$tmp/config" && grep -qx 'CONFIG_TCG_TIS=y' "$tmp/config" &&
    grep -qx 'CONFIG_SERIAL_8250_CONSOLE=y' "$tmp/config" && grep -qx 'CONFIG_MSDOS_PARTITION=y' "$tmp/config" ||
    { rm -rf "$tmp"; die "$kpkg does not build in tpm_crb, tpm_tis, the serial console and MBR partitions"; }
  rm -rf "$tmp/boot"
  rm -rf "$kdir"
  mv "$tmp" "$kdir"
  log "kernel $(basename "$kdir")"
fi

# 2. The modules the disk boot needs, from the same package: KubeVirt's
# default disk bus is virtio (virtio-blk on PCI), and Debian builds both as
# modules. What they depend on is read from their .modinfo ("depends="), so
# the set is closed; busybox depmod writes the modules.dep that the guest's
# modprobe reads. Cached beside the kernel, per module list.
KMODS=(virtio_pci virtio_blk)
mdir=$kdir/modules-$(echo "${KMODS[*]}" | sha256sum | cut -c1-8)
if [ ! -s "$mdir/lib/modules/$kabi/modules.dep" ]; then
  kernel_deb
  tmp=$(mktemp -d "$G_CACHE/.modules.XXXXXX")
  mkdir "$tmp/root"
  dpkg-deb --fsys-tarfile "$deb" | tar -tf - | grep '\.ko$' > "$tmp/all.list"
  want=("${KMODS[@]}") seen=" ${KMODS[*]} "
  while [ ${#want[@]} -gt 0 ]; do
    paths=()
    for m in "${want[@]}"; do
      # A module's name has "_" where its file may have "-".
      p=$(grep -E "/${m//[-_]/[-_]}\\.ko\$" "$tmp/all.list") || { rm -rf "$tmp"; die "module $m is not in $kpkg"; }
      paths+=("$p")
    done
    dpkg-deb --fsys-tarfile "$deb" | tar -C "$tmp/root" -xf - "${paths[@]}"
    want=()
    for p in "${paths[@]}"; do
      for d in $(tr '\0' '\n' < "$tmp/root/$p" | sed -n 's/^depends=//p' | tr ',' ' '); do
        case $seen in *" $d "*) ;; *) want+=("$d"); seen+="$d " ;; esac
      done
    done
  done
  /usr/bin/busybox depmod -b "$tmp/root" "$kabi"
  [ -s "$tmp/root/lib/modules/$kabi/modules.dep" ] || { rm -rf "$tmp"; die "depmod wrote no modules.dep"; }
  rm -rf "$mdir"
  mv "$tmp/root" "$mdir"
  rm -rf "$tmp"
  log "modules $(echo $seen) ($(du -sk "$mdir" | cut -f1) KiB)"
fi

[ -z "$kdeb_dir" ] || rm -rf "$kdeb_dir"

# 3. The disk's tools: syslinux (its mtools installer writes the boot sector
# and ldlinux.sys into a FAT image file), its MBR, and mtools (mformat,
# mcopy), unpacked into the cache, not installed.
tvers=
for p in "${TOOL_PKGS[@]}"; do
  v=$(sed -n "s/^$p=//p" <<<"$known")
  [ -n "$v" ] || { tvers=; break; }
  tvers+="$p=$v "
done
if [ -n "$tvers" ]; then
  tdir=$G_CACHE/tools-$(echo "$tvers" | sha256sum | cut -c1-12)
else
  tdir=$(ls -td "$G_CACHE"/tools-*/ 2>/dev/null | head -1) ||
    die "apt knows no ${TOOL_PKGS[*]} and none is cached: run apt-get update"
  tdir=${tdir%/}
fi
if [ ! -s "$tdir/versions" ]; then
  tmp=$(mktemp -d "$G_CACHE/.tools.XXXXXX")
  mkdir "$tmp/root" "$tmp/debs"
  # shellcheck disable=SC2086 # one word per package
  apt_fetch "$tmp/debs" $tvers || { rm -rf "$tmp"; die "apt-get download ${TOOL_PKGS[*]} failed"; }
  for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$tmp/root"; done
  rm -rf "$tmp/root/usr/share"
  echo "$tvers" > "$tmp/root/versions"
  [ -x "$tmp/root/usr/bin/syslinux" ] && [ -x "$tmp/root/usr/bin/mformat" ] && [ -s "$tmp/root/usr/lib/syslinux/mbr/mbr.bin" ] ||
    { rm -rf "$tmp"; die "${TOOL_PKGS[*]} lack syslinux, mformat or mbr.bin"; }
  rm -rf "$tdir"
  mv "$tmp/root" "$tdir"
  rm -rf "$tmp"
  log "disk tools $tvers"
fi

# 4. The tag: everything the guest is made of.
tag=$( { cat "$0" "$src/init"; basename "$kdir"; sha256sum < "$kdir/vmlinuz"; cat "$mdir/lib/modules/$kabi/modules.dep";
         dpkg-query -W -f='${Package} ${Version}\n' "${PKGS[@]}" libtss2-esys-3.0.2-0 libtss2-tctildr0 libssl3 libjansson4;
         cat "$tdir/versions";
       } | sha256sum | cut -c1-12)
out=$G_CACHE/$tag
mkdir -p "$out"

# 5. The initramfs.
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
  cp -a "$mdir/lib/modules" "$r/usr/lib/"
  install -m 0755 "$src/init" "$r/init"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$r/etc/passwd"
  printf 'root:x:0:\n' > "$r/etc/group"
  newc_archive "$r" | gzip -9n > "$tmp/initrd.img"
  cp "$kdir/vmlinuz" "$out/vmlinuz"
  mv "$tmp/initrd.img" "$out/initrd.img"
  log "initramfs $(du -k "$out/initrd.img" | cut -f1) KiB ($(du -sk "$r" | cut -f1) KiB unpacked), kernel $(du -k "$out/vmlinuz" | cut -f1) KiB"
  rm -rf "$tmp"
  trap - EXIT
fi

# 6. The bootable disk. Layout (512-byte sectors, MBR):
#   0          syslinux's mbr.bin, the partition table
#   2048       partition 1, FAT (type 0x0e, active): syslinux's boot sector,
#              ldlinux.sys/.c32, syslinux.cfg, vmlinuz, initrd.img
#   end - 128  partition 2, type 0xda (non-FS data), 64 KiB: the guest's
#              store, its first sector a header (written here empty; the
#              format is the init's). A partition, not just "the last 64 KiB",
#              so that a disk grown later (KubeVirt's ExpandDisks) still has
#              the store where the guest wrote it.
# All of it written into the image file: no root, no loop device, no mount.
# Times are fixed (SOURCE_DATE_EPOCH, mcopy -m), so the image is the same
# bytes for the same inputs.
DISK_MIB=32 STORE_SECTORS=128 P1_START=2048
if [ ! -s "$out/disk.img" ]; then
  tmp=$(mktemp -d "$G_CACHE/.disk.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  img=$tmp/disk.img
  p1_sectors=$(python3 - "$img" "$DISK_MIB" "$P1_START" "$STORE_SECTORS" "$tdir/usr/lib/syslinux/mbr/mbr.bin" <<'PY'
import hashlib, struct, sys
img, mib, p1, store, mbr_bin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
total = mib * 2048
p2 = total - store
def part(active, ptype, lba, n):  # CHS fields "beyond 1024 cylinders": LBA only
    return struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", lba, n)
mbr = bytearray(open(mbr_bin, "rb").read()[:440].ljust(440, b"\0") + bytes(72))
mbr[440:444] = b"TPMG"  # disk signature
mbr[446:462] = part(True, 0x0E, p1, p2 - p1)
mbr[462:478] = part(False, 0xDA, p2, store)
mbr[510:512] = b"\x55\xaa"
header = b"TPMGUEST-STORE 1\nlength 0\nsha256 %s\n" % hashlib.sha256(b"").hexdigest().encode()
with open(img, "wb") as f:
    f.truncate(total * 512)
    f.write(mbr)
    f.seek(p2 * 512)
    f.write(header.ljust(512, b"\0"))
print(p2 - p1)
PY
)
  cat > "$tmp/syslinux.cfg" <<CFG
# tpm-guest (hack/build-tpm-guest.sh): no menu, no wait, output on ttyS0 too.
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT tpmguest
LABEL tpmguest
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0 quiet tpmguest.auto=1
CFG
  cp "$out/vmlinuz" "$out/initrd.img" "$tmp/"
  touch -d @946684800 "$tmp/syslinux.cfg" "$tmp/vmlinuz" "$tmp/initrd.img"
  fat="$img@@$((P1_START * 512))"
  # mtools and syslinux from the cache; syslinux runs mcopy and mattrib.
  if ! ( export PATH="$tdir/usr/bin:$PATH" MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null SOURCE_DATE_EPOCH=946684800
         mformat -i "$fat" -T "$p1_sectors" -h 64 -s 32 -H "$P1_START" -v TPMGUEST -N 54504d47 :: &&
         mcopy -m -i "$fat" "$tmp/syslinux.cfg" "$tmp/vmlinuz" "$tmp/initrd.img" :: &&
         syslinux --offset $((P1_START * 512)) --install "$img" &&
         mdir -i "$fat" -a -b :: ) > "$tmp/mtools.log" 2>&1 ||
     ! grep -qx '::/ldlinux.sys' "$tmp/mtools.log"; then
    die "making the disk failed: $(cat "$tmp/mtools.log")"
  fi
  mv "$img" "$out/disk.img"
  rm -rf "$tmp"
  trap - EXIT
  log "disk.img $DISK_MIB MiB (FAT $((p1_sectors / 2)) KiB, $(du -k "$out/disk.img" | cut -f1) KiB allocated)"
fi
if [ "$mode" = files ]; then
  echo "$out/vmlinuz $out/initrd.img $out/disk.img"
  exit 0
fi

# 7. The images. pack NAME FILL: the OCI archive of localhost/vtpm/NAME:TAG
# (built if missing), its root filled by the function FILL ROOT; prints
# "NAME REF ARCHIVE".
pack() {
  local name=$1 fill=$2 archive=$IMG_CACHE/$1-$tag.oci.tar tmp
  if [ ! -s "$archive" ]; then
    tmp=$(mktemp -d "$IMG_CACHE/.$name.XXXXXX")
    trap "rm -rf '$tmp'" EXIT
    chmod 755 "$tmp"
    umoci init --layout "$tmp/oci"
    umoci new --image "$tmp/oci:$tag"
    umoci unpack --image "$tmp/oci:$tag" "$tmp/bundle" >/dev/null
    "$fill" "$tmp/bundle/rootfs"
    umoci repack --image "$tmp/oci:$tag" "$tmp/bundle"
    umoci config --image "$tmp/oci:$tag" --os linux --architecture amd64 --config.env PATH=/bin \
      --config.label io.vtpm-agent.tpm-guest.kernel="$(basename "$kdir")"
    umoci gc --layout "$tmp/oci"
    tar -C "$tmp/oci" -cf "$tmp/image.tar" .
    mv "$tmp/image.tar" "$archive"
    rm -rf "$tmp"
    trap - EXIT
    log "built localhost/vtpm/$name:$tag -> $archive ($(du -k "$archive" | cut -f1) KiB)"
    # Older builds: keep the three newest archives.
    ls -t "$IMG_CACHE/$name"-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].oci.tar 2>/dev/null |
      tail -n +4 | xargs -r rm -f
  fi
  echo "$name localhost/vtpm/$name:$tag $archive"
}
# The kernelBoot image: the two files KubeVirt bind-mounts into the launcher.
fill_kernel_boot() {
  install -d -o 107 -g 107 -m 0755 "$1/boot"
  install -o 107 -g 107 -m 0444 "$out/vmlinuz" "$1/boot/vmlinuz"
  install -o 107 -g 107 -m 0444 "$out/initrd.img" "$1/boot/initrd.img"
}
# The disk image: /disk.img and a static busybox with its applets in /bin,
# enough for a pod to copy the disk onto a PVC (cp, chown, chmod).
fill_disk() {
  install -d -m 0755 "$1/bin"
  install -m 0755 /usr/bin/busybox "$1/bin/busybox"
  local a
  for a in $(/usr/bin/busybox --list); do
    [ -e "$1/bin/$a" ] || ln -s busybox "$1/bin/$a"
  done
  install -m 0444 "$out/disk.img" "$1/disk.img"
}
pack tpm-guest fill_kernel_boot
pack tpm-guest-disk fill_disk
# Older guest builds: keep the three newest.
ls -td "$G_CACHE"/[0-9a-f]*/ 2>/dev/null | grep -E '/[0-9a-f]{12}/$' | tail -n +4 | xargs -r rm -rf
