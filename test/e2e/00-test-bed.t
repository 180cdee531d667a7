#!/usr/bin/env bash
# The test bed the end-to-end suites run on. `make test` (hack/run-tests.sh)
# brings it up in the background while the unit, fuzz and guest suites run
# (they need no cluster); this suite, the first of the end-to-end ones, waits
# for that, and stops the whole run with the bring-up's log if it failed
# (instead of every later suite failing on its own). VTPM_BED_UP: the
# directory where run-tests.sh has hack/cluster-up.sh write `log`, then `rc`.
# Without it (a bed brought up by hand) it checks only that the bed answers.
#   prove -v test/e2e/00-test-bed.t
. "$(dirname "$0")/lib.sh"
plan 2

if [ -n "${VTPM_BED_UP:-}" ]; then
  t0=$(date +%s)
  # cluster-up gives up on its own (every wait it has is bounded); this
  # bound only catches a bring-up that hangs outside them.
  if ! wait_until 1800 test -s "$VTPM_BED_UP/rc"; then
    bail_out "hack/cluster-up.sh did not finish in 30 min; its log: $VTPM_BED_UP/log"
  fi
  rc=$(cat "$VTPM_BED_UP/rc")
  if [ "$rc" != 0 ]; then
    diag "hack/cluster-up.sh exited $rc; the end of its log:" "$(tail -40 "$VTPM_BED_UP/log")"
    bail_out "the test bed did not come up (hack/cluster-up.sh exited $rc)"
  fi
  # Its timings, for the run's log.
  diag "$(grep -E '^testbed: (.* nodes up in |KubeVirt .* deployed in |up in )' "$VTPM_BED_UP/log")"
  pass "hack/cluster-up.sh exited 0 (waited $(( $(date +%s) - t0 )) s for it after the suites before)"
else
  skip "no background bring-up to wait for (VTPM_BED_UP unset)"
fi

require_cluster   # (lib.sh: bails out unless the API server answers /readyz)
pass "the API server answers /readyz"
