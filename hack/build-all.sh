#!/usr/bin/env bash
# Fill every cache the test bed needs, in two lanes at once, so that a first
# `make test` (or `make demo`) on a fresh machine does not wait for them one
# after the other (issue 20, acceptance 5):
#   compile   the Go builds that keep both cores busy: the control plane
#             (hack/build-control-plane.sh), containerd and runc
#             (hack/build-nodes.sh)
#   fetch     what mostly waits for Debian's mirror and the disk: the nodes'
#             small images (hack/build-images.sh), the agent's and the test
#             launchers' images (hack/build-image.sh), the TPM guest
#             (hack/build-tpm-guest.sh), the package layers of KubeVirt's
#             images (hack/build-kubevirt-images.sh --packages) and the
#             Debian 13 root virt-launcher builds in (hack/build-kubevirt.sh
#             --buildroot); then KubeVirt's components (hack/build-kubevirt.sh),
#             beside the control plane's build
# then, when both are done, KubeVirt's images themselves (their binaries are
# only there now; the package layers are reused). Everything is what
# cluster-up and nodes-up would build anyway, with the same scripts: they find
# it cached. What is already cached costs a second or two.
#
#   hack/build-all.sh    what VTPM_NODES, VTPM_NODES_AGENT_IMAGE,
#                        VTPM_NODES_LIBVIRT_IMAGE and VTPM_KUBEVIRT ask for
#                        (as hack/nodes-up.sh reads them)
# Each step's output goes to $VTPM_CACHE/build-all/LANE.log; each lane's steps
# and times to stderr; a failed step prints its log's tail and fails the
# whole (after the other lane has finished: no half-killed builds).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/versions.sh"
. "$top/hack/testbed-lib.sh"   # tb_kubevirt
. "$top/hack/progress-lib.sh"  # with_progress
logs=$VTPM_CACHE/build-all
mkdir -p "$logs"
t0=$(date +%s)
nodes=0; [[ ${VTPM_NODES:-0} =~ ^[1-9] ]] && nodes=1

# step LANE NAME CMD...: run CMD with its output in the lane's log.
step() {
  local lane=$1 name=$2 t rc=0; shift 2
  t=$(date +%s)
  echo "=== $name: $*" >> "$logs/$lane.log"
  echo "build-all: $lane: $name ..." >&2
  with_progress "$logs/$lane.log" "build-all: $lane: $name" "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "build-all: $lane: $name FAILED ($rc) after $(( $(date +%s) - t )) s; the end of $logs/$lane.log:" >&2
    tail -25 "$logs/$lane.log" >&2
    return $rc
  fi
  echo "build-all: $lane: $name done ($(progress_elapsed "$t"); $(progress_elapsed "$t0") since the start)" >&2
}

compile() {
  : > "$logs/compile.log"
  step compile control-plane "$top/hack/build-control-plane.sh"
  [ $nodes = 0 ] || step compile containerd+runc "$top/hack/build-nodes.sh"
}

fetch() {
  : > "$logs/fetch.log"
  [ $nodes = 1 ] || return 0
  step fetch pause+busybox "$top/hack/build-images.sh" pause busybox
  if [ -n "${VTPM_NODES_AGENT_IMAGE:-}" ]; then
    for what in $(tb_agent_images); do
      step fetch "$what image" "$top/hack/build-image.sh" "$what"
    done
  fi
  if tb_kubevirt; then
    step fetch "kubevirt package layers" "$top/hack/build-kubevirt-images.sh" --packages
    step fetch "tpm guest" "$top/hack/build-tpm-guest.sh"
    # The Debian 13 root virt-launcher compiles in: debootstrap and apt, off
    # the compile lane (it reaches KubeVirt long after this lane is done).
    step fetch "kubevirt build root" "$top/hack/build-kubevirt.sh" --buildroot
    # KubeVirt's own Go build, here rather than after the control plane's:
    # this lane is done with the mirror half-way through the control plane's
    # build, and two Go builds at once fill the stretches where one leaves a
    # core idle (its links, the packages everything else waits for).
    step fetch kubevirt "$top/hack/build-kubevirt.sh"
  fi
}

compile & cpid=$!
fetch & fpid=$!
rc=0
wait $cpid || rc=1
wait $fpid || rc=1
[ $rc = 0 ] || { echo "build-all: failed after $(( $(date +%s) - t0 )) s" >&2; exit 1; }
if [ $nodes = 1 ] && tb_kubevirt; then
  : > "$logs/kubevirt-images.log"
  step kubevirt-images "kubevirt images" "$top/hack/build-kubevirt-images.sh"
fi
echo "build-all: everything built or cached in $(( $(date +%s) - t0 )) s" >&2
