#!/usr/bin/env bash
# Install the Debian packages vtpm-agent builds and tests with. Idempotent:
# packages already present are not touched, and apt is not called at all when
# nothing is missing (so a warm `make test` does not need the network).
set -euo pipefail

PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev llvm
  libcurl4-openssl-dev libyaml-dev libjansson-dev libvirt-dev libssl-dev libcap-dev libmicrohttpd-dev libnghttp2-dev
  swtpm swtpm-tools swtpm-dev libtpms0 tpm2-tools clevis clevis-tpm2 socat
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 ovmf
  python3-pykmip openssl valgrind jq util-linux iproute2 procps psmisc
  libseccomp-dev containernetworking-plugins umoci busybox-static debootstrap buildah yq
)

# The test bed builds Kubernetes, containerd and KubeVirt from their Go
# modules; Debian 12's golang is far too old for them, so Go is not among the
# packages: say so now rather than fail later with a bare "No such file".
. "$(dirname "$0")/versions.sh"   # GO
if ! "$GO" version >/dev/null 2>&1; then
  echo "install-deps: no Go toolchain at $GO. The test bed builds Kubernetes $K8S_VERSION, containerd" \
       "and KubeVirt from source: install Go (1.26 is what this project is tested with) from" \
       "https://go.dev/dl/ into /usr/local/go, or set GO=/path/to/bin/go." >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} Debian packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
