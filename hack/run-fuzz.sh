#!/usr/bin/env bash
# `make fuzz`: run each libFuzzer binary for SECONDS.
#   hack/run-fuzz.sh SECONDS build/fuzz/fuzz-foo [...]
# The checked-in corpus of build/fuzz/fuzz-foo is test/fuzz/corpus/fuzz-foo/.
# New inputs go to build/fuzz-corpus/fuzz-foo/ first; afterwards only those
# that add coverage are merged into the checked-in corpus (-merge=1), so it
# grows by what matters and test/fuzz/regress.t replays it in `make test`.
# Crashes, leaks, timeouts and OOMs land in build/fuzz-artifacts/; any finding
# fails the run (exit 1) and is listed at the end.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ $# -ge 2 ] || { echo "usage: $0 SECONDS FUZZ-BINARY..." >&2; exit 2; }
secs=$1; shift
artifacts=build/fuzz-artifacts
mkdir -p "$artifacts"
failed=()
for bin in "$@"; do
  name=$(basename "$bin")
  [ -x "$bin" ] || { echo "run-fuzz: $bin is not an executable (make fuzz-bins)" >&2; failed+=("$name"); continue; }
  corpus=test/fuzz/corpus/$name
  scratch=build/fuzz-corpus/$name
  mkdir -p "$corpus" "$scratch"
  before=$(find "$artifacts" -name "$name-*" -type f | wc -l)
  echo "run-fuzz: $name for ${secs}s (corpus $corpus, $(find "$corpus" -type f | wc -l) inputs)"
  rc=0
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$name-" "$scratch" "$corpus" \
    > "$artifacts/$name.log" 2>&1 || rc=$?
  after=$(find "$artifacts" -name "$name-*" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
    echo "run-fuzz: $name FOUND A PROBLEM (exit $rc); log $artifacts/$name.log" >&2
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$artifacts/$name.log" | head -5 >&2
    failed+=("$name")
    continue
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$artifacts/$name.log" | sed "s/^/run-fuzz: $name /"
  n0=$(find "$corpus" -type f | wc -l)
  "$bin" -merge=1 "$corpus" "$scratch" > "$artifacts/$name.merge.log" 2>&1 ||
    echo "run-fuzz: $name: merge failed, see $artifacts/$name.merge.log" >&2
  echo "run-fuzz: $name ok; corpus $n0 -> $(find "$corpus" -type f | wc -l) inputs"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run-fuzz: findings in: ${failed[*]}; artifacts:" >&2
  ls -1 "$artifacts" | grep -vE '\.log$' >&2 || true
  exit 1
fi
echo "run-fuzz: no findings in $# target(s) x ${secs}s"
