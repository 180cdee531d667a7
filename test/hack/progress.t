#!/usr/bin/env bash
# hack/progress-lib.sh: what keeps a first `make demo` or `make test` (half
# an hour of builds on a fresh machine) from looking hung. A step's output goes
# to its log; the terminal gets a line with the elapsed time every
# VTPM_PROGRESS_EVERY seconds (30 in real runs; 1 here) while it runs, and
# nothing for a step that ends sooner; the step's exit status is kept.
. "$(dirname "$0")/../e2e/lib.sh"
. "$E2E_TOP/hack/progress-lib.sh"
plan 6
T=$(mktemp -d); at_exit "rm -rf '$T'"

rc=0
VTPM_PROGRESS_EVERY=1 with_progress "$T/slow.log" "build-all: compile: slow" \
  sh -c 'echo compiler output; echo compiler warning >&2; sleep 3.5; exit 7' 2> "$T/slow.err" || rc=$?
is "$rc" 7 "the step's exit status is kept"
n=$(grep -c '^build-all: compile: slow: still running (0m [0-9]s)$' "$T/slow.err")
[ "$n" -ge 3 ] && [ "$n" -le 4 ] && pass "a 3.5 s step: a line with the elapsed time each second ($n)" ||
  fail "a 3.5 s step: a line with the elapsed time each second" "$(cat "$T/slow.err")"
is "$(grep -c compiler "$T/slow.err")" 0 "the step's own output stays out of the terminal"
is "$(cat "$T/slow.log")" "$(printf 'compiler output\ncompiler warning')" "and goes to its log"
VTPM_PROGRESS_EVERY=1 with_progress "$T/quick.log" quick true 2> "$T/quick.err"
is "$(cat "$T/quick.err")" "" "a step that ends sooner prints nothing"
t0=$(( $(date +%s) - 125 ))
is "$(progress_elapsed "$t0")" "2m 5s" "elapsed times read as minutes and seconds"
