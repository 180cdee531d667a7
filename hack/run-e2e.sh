#!/usr/bin/env bash
# `make e2e`: start the test bed, run every end-to-end suite through prove,
# stop the test bed (pass or fail). Extra arguments go to prove; a leading
# --valgrind sets VTPM_VALGRIND=1 for suites that run the agent under valgrind.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ "${1:-}" = "--valgrind" ]; then export VTPM_VALGRIND=1; shift; fi
export VTPM_RUN=${VTPM_RUN:-/tmp/vtpm-testbed}
cleanup() { hack/cluster-down.sh >/dev/null 2>&1 || true; }
trap cleanup EXIT
KUBECONFIG=$(hack/cluster-up.sh)
export KUBECONFIG
prove --timer -f "$@" test/e2e/*.t
