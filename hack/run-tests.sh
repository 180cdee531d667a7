#!/usr/bin/env bash
# `make test`: install what is missing, build (release + ASan/UBSan), start the
# real local control plane (beside the C build and the first suites), run
# every suite through one `prove` (so CI reads a single summary), and stop
# everything it started, pass or fail. The nodes
# run real KubeVirt (VTPM_KUBEVIRT=0: the hand-written stand-ins instead).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. hack/versions.sh
start=$(date +%s)

hack/install-deps.sh
export VTPM_RUN=${VTPM_RUN:-/tmp/vtpm-testbed}
# Two real nodes (containerd, kubelet) with the agent's and launcher's images;
# VTPM_NODES=0 make test runs without them (the suites that need nodes skip).
export VTPM_NODES=${VTPM_NODES-2}
[ "$VTPM_NODES" = 0 ] || export VTPM_NODES_AGENT_IMAGE=1 VTPM_NODES_LIBVIRT_IMAGE=1
# Every cache the bed needs, the Go builds beside the image builds (on a fresh
# machine that saves a quarter of an hour; warm, a few seconds).
hack/build-all.sh
# The test bed comes up in the background (3 min, most of it waiting for
# KubeVirt's pods) while the C builds and the suites that need no cluster
# (unit, fuzz, guest: 2 to 3 min) run; test/e2e/00-test-bed.t, the first
# end-to-end suite, waits for it and stops the run with its log if it failed.
export VTPM_BED_UP; VTPM_BED_UP=$(mktemp -d /tmp/vtpm-bed-up.XXXXXX)
( rc=0; hack/cluster-up.sh > "$VTPM_BED_UP/log" 2>&1 || rc=$?; echo "$rc" > "$VTPM_BED_UP/rc" ) &
bed_pid=$!
# Pass or fail, the bring-up ends before cluster-down stops what it started.
cleanup() { wait "$bed_pid" 2>/dev/null; hack/cluster-down.sh >/dev/null 2>&1 || true; rm -rf "$VTPM_BED_UP"; }
trap cleanup EXIT
make --no-print-directory -j"$(nproc)" all asan unit-bins tools fuzz-bins
export KUBECONFIG=$VTPM_RUN/admin.kubeconfig

mapfile -t units < <(find build/asan/test/unit -maxdepth 1 -type f -name "test-*" ! -name "*.o" | sort)
# VTPM_E2E_SUITES: the end-to-end suites to run (default all; make test-kubevirt names its own).
# shellcheck disable=SC2206 # a list of paths
e2e=(${VTPM_E2E_SUITES:-test/e2e/*.t})
# Whatever it names, the wait for the test bed comes first.
bed=test/e2e/00-test-bed.t
suites=("${units[@]}" test/fuzz/regress.t test/tools/grpc-interop.sh test/hack/*.t test/guest/*.t "$bed")
for s in "${e2e[@]}"; do [ "$s" = "$bed" ] || suites+=("$s"); done
export E2E_SINCE=$(date -u +%FT%T)
# Every wait_until that gives up (test/e2e/lib.sh), listed after the summary.
# In a passing run there is none (suites check that a refusal lasts with a
# fixed sleep): each is a failure's wait, or time a suite wastes.
export E2E_WAIT_LOG; E2E_WAIT_LOG=$(mktemp /tmp/vtpm-e2e-waits.XXXXXX)
rc=0
prove --timer -f "${suites[@]}" || rc=$?
if [ -s "$E2E_WAIT_LOG" ]; then
  echo "waits that gave up: $(wc -l < "$E2E_WAIT_LOG"), $(sed -E 's/.* gave up after ([0-9.]+) s: .*/\1/' "$E2E_WAIT_LOG" |
    awk '{ s += $1 } END { print s }') s in all:"
  sed 's/^/  /' "$E2E_WAIT_LOG"
fi
rm -f "$E2E_WAIT_LOG"
echo "make test: wall time $(( $(date +%s) - start ))s"
exit $rc
