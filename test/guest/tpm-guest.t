#!/usr/bin/env bash
# The tpm-guest (hack/build-tpm-guest.sh) against a real swtpm and QEMU, no
# cluster: boot it sealing a secret, stop, boot it again on the same TPM state
# directory: it unseals the secret; on a fresh state directory it cannot.
# That is what the cluster suites will ask of a VM's persistent vTPM.
# Both deliveries: the kernel boot (-kernel/-initrd, the secret's JWE on the
# command line) and the disk boot (disk.img as a virtio disk, SeaBIOS and
# syslinux, tpmguest.auto=1: the JWE kept in the disk's own store).
#   prove -v test/guest/tpm-guest.t
# Each boot is QEMU under TCG (no /dev/kvm here), the guest powering itself
# off; its serial console goes to a file the test reads.
. "$(dirname "$0")/../e2e/lib.sh"

for t in swtpm qemu-system-x86_64; do
  command -v "$t" >/dev/null || skip_all "$t missing (hack/install-deps.sh installs it)"
done
plan 31

files=$("$E2E_TOP/hack/build-tpm-guest.sh" --files) || bail_out "hack/build-tpm-guest.sh failed"
read -r vmlinuz initrd disk_img <<< "$files"
work=$(mktemp -d /tmp/tpm-guest-test.XXXXXX)
at_exit "rm -rf '$work'"

# boot NAME STATE_DIR TPM_MODEL|none KERNEL_ARGS|disk=FILE: run the guest to
# its poweroff (120 s at most), from -kernel with those arguments or from
# FILE as its virtio disk; its console in $work/NAME.log, CR stripped.
# Sets boot_secs.
boot() {
  local name=$1 state=$2 model=$3 args=$4 tpm=() from=() rc=0 t0
  case $args in
    disk=*) from=(-drive "file=${args#disk=},if=virtio,format=raw") ;;
    *) from=(-kernel "$vmlinuz" -initrd "$initrd" -append "console=ttyS0 quiet $args") ;;
  esac
  if [ "$model" != none ]; then
    mkdir -p "$state"
    swtpm socket --tpm2 --tpmstate dir="$state" --ctrl type=unixio,path="$state/ctrl.sock" \
      --terminate --daemon --pid file="$state/swtpm.pid" --log file="$state/swtpm.log" ||
      { diag "swtpm did not start: $(cat "$state/swtpm.log" 2>/dev/null)"; return 1; }
    tpm=(-chardev "socket,id=chrtpm,path=$state/ctrl.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
         -device "$model,tpmdev=tpm0")
  fi
  t0=$(date +%s%N)
  timeout 120 qemu-system-x86_64 -machine q35 -accel tcg -m 256 -nodefaults -no-reboot \
    -display none -monitor none -serial "file:$work/$name.raw" \
    "${from[@]}" "${tpm[@]}" \
    < /dev/null > "$work/$name.qemu" 2>&1 || rc=$?
  boot_secs=$(( ($(date +%s%N) - t0) / 1000000 ))
  boot_secs=$(printf '%d.%03d' $((boot_secs / 1000)) $((boot_secs % 1000)))
  tr -d '\r' < "$work/$name.raw" > "$work/$name.log"
  # swtpm --terminate ends with QEMU's connection; if QEMU never connected,
  # end this one (checked by name: its pid may be gone and reused).
  local pid
  pid=$(cat "$state/swtpm.pid" 2>/dev/null) || pid=
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = swtpm ]; then kill "$pid"; fi
  rm -f "$state/swtpm.pid"
  [ "$rc" -eq 0 ] || diag "qemu ($name) exited $rc: $(cat "$work/$name.qemu")"
  return "$rc"
}
# line NAME WHAT: the rest of the guest's "TPM-GUEST: WHAT ..." line.
line() { sed -n "s/^TPM-GUEST: $2 \{0,1\}//p" "$work/$1.log" | head -1; }
# booted DESC NAME ...: a test that boot NAME ... ran to the guest's poweroff.
booted() {
  local desc=$1; shift
  if boot "$@"; then pass "$desc"; else
    fail "$desc" "$1's console:" "$(grep '^TPM-GUEST:' "$work/$1.log" 2>/dev/null | cut -c1-200)"
  fi
}

secret=s3cret-$RANDOM$RANDOM

# 1. Seal on a new TPM (the persistent model, tpm-crb).
booted "boot 1 seals and powers off (tpm-crb)" seal "$work/state" tpm-crb "tpmguest.seal=$secret"
diag "boot 1: ${boot_secs} s"
like "$(line seal 'tpm2 present')" '^family=2\.0 manufacturer=IBM .*driver=tpm_crb device=/dev/tpmrm0$' \
  "the guest sees swtpm's TPM 2.0 through tpm_crb"
jwe=$(line seal sealed)
like "$jwe" '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' \
  "it prints the clevis JWE on one line (${#jwe} bytes)"
# x86 kernels keep 2048 bytes of command line; the unseal boot's is the JWE plus ~50.
ok "the JWE fits on the next boot's kernel command line" test "${#jwe}" -lt 1900
like "$(line seal poweroff)" '^uptime=' "the guest powers itself off"
# Well under a minute: the budget a cluster test can afford per boot.
ok "boot 1 took under 60 s (${boot_secs} s)" test "${boot_secs%.*}" -lt 60

# 2. Same state directory, a new swtpm and QEMU: the secret comes back.
booted "boot 2 on the same TPM state" unseal "$work/state" tpm-crb "tpmguest.unseal=$jwe"
diag "boot 2: ${boot_secs} s"
is "$(line unseal unsealed)" "$secret" "boot 2 unseals the secret"

# 3. A fresh state directory (through tpm_tis, KubeVirt's non-persistent
# model): another storage seed, the sealed key does not load.
booted "boot 3 on a fresh TPM state (tpm-tis)" fresh "$work/fresh" tpm-tis "tpmguest.unseal=$jwe"
like "$(line fresh 'tpm2 present')" 'driver=tpm_tis ' "the guest sees the TPM through tpm_tis"
like "$(line fresh 'unseal failed:')" 'integrity check failed' "a fresh TPM cannot unseal it"
is "$(line fresh unsealed)" "" "and does not print a secret"

# 4. No TPM at all: the guest says so instead of sealing to nothing.
booted "boot 4 without a TPM" none "$work/none" none "tpmguest.seal=$secret"
is "$(grep -c '^TPM-GUEST: tpm2 absent$' "$work/none.log")" 1 "the guest reports no TPM"
is "$(line none 'seal failed:')" "no TPM" "and does not seal"

# 5. The disk boot: a copy of disk.img (the guest writes to it), a new state.
# store_hdr DISK: the first line after the magic of the disk's store header
# ("length N"), read on the host where the guest wrote it (the last 64 KiB).
store_hdr() {
  local sectors=$(( $(stat -c %s "$1") / 512 ))
  dd if="$1" bs=512 skip=$((sectors - 128)) count=1 2>/dev/null | head -n 3 | tr '\n' ' ' | sed 's/ $//'
}
# store_sum DISK: a checksum of the whole store, header and data.
store_sum() { tail -c 65536 "$1" | sha256sum | cut -d' ' -f1; }
disk=$work/disk.img
cp "$disk_img" "$disk"
like "$(store_hdr "$disk")" '^TPMGUEST-STORE 1 length 0 sha256 e3b0c442' "the built disk's store is empty"
booted "disk boot 1 seals and powers off (tpm-crb)" d1 "$work/dstate" tpm-crb "disk=$disk"
diag "disk boot 1: ${boot_secs} s"
is "$(line d1 store)" "dev=/dev/vda2 bytes=0" "the guest finds its disk's empty store (virtio)"
sealed=$(line d1 sealed)
like "$sealed" '^secret=[0-9a-f]{24} jwe-bytes=[0-9]+$' "it seals a new secret: $sealed"
dsecret=${sealed#secret=}; dsecret=${dsecret%% *}
jwe_bytes=${sealed##*=}
like "$(store_hdr "$disk")" "^TPMGUEST-STORE 1 length $jwe_bytes sha256 [0-9a-f]{64}\$" "the store now holds the ${jwe_bytes}-byte JWE"
like "$(line d1 poweroff)" '^uptime=' "the guest powers itself off"
ok "disk boot 1 took under 60 s (${boot_secs} s)" test "${boot_secs%.*}" -lt 60
sum1=$(store_sum "$disk")

booted "disk boot 2 on the same disk and TPM state" d2 "$work/dstate" tpm-crb "disk=$disk"
diag "disk boot 2: ${boot_secs} s"
is "$(line d2 store)" "dev=/dev/vda2 bytes=$jwe_bytes" "it finds the JWE in the store"
is "$(line d2 unsealed)" "$dsecret" "disk boot 2 unseals the secret of boot 1"
is "$(line d2 sealed)" "" "and seals nothing new"
is "$(store_sum "$disk")" "$sum1" "the store is unchanged"

booted "disk boot 3 on the same disk and a fresh TPM state" d3 "$work/dfresh" tpm-crb "disk=$disk"
like "$(line d3 'unseal failed:')" 'integrity check failed' "a fresh TPM cannot unseal the stored JWE"
is "$(grep -cE '^TPM-GUEST: (unsealed|sealed) ' "$work/d3.log")" 0 "it prints no secret and does not seal a new one"
is "$(store_sum "$disk")" "$sum1" "the store still holds boot 1's JWE, unchanged"
