#!/usr/bin/env bash
# Replays every fuzz target over its checked-in corpus (test/fuzz/corpus/NAME/):
# an input that once crashed and was fixed stays fixed. One TAP line per target.
# Run from `make test` after `make fuzz-bins`; the binaries are build/fuzz/fuzz-*.
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
shopt -s nullglob
bins=()
for b in build/fuzz/fuzz-*; do [ -x "$b" ] && [ -f "$b" ] && bins+=("$b"); done
if [ ${#bins[@]} -eq 0 ]; then
  echo "1..0 # SKIP no fuzz targets built"
  exit 0
fi
echo "1..${#bins[@]}"
n=0 failed=0
for b in "${bins[@]}"; do
  n=$((n + 1)); name=$(basename "$b")
  files=()
  for f in test/fuzz/corpus/"$name"/*; do [ -f "$f" ] && files+=("$f"); done
  if [ ${#files[@]} -gt 0 ]; then
    # Inputs named one by one: each runs once, and nothing is written back
    # into the checked-in corpus.
    out=$("$b" -timeout=30 -rss_limit_mb=2048 "${files[@]}" 2>&1); rc=$?
  else
    # No corpus yet: the empty input once; the target must at least not crash.
    out=$("$b" -runs=0 -timeout=30 2>&1); rc=$?
  fi
  if [ $rc -eq 0 ]; then
    echo "ok $n - $name replays its corpus (${#files[@]} inputs)"
  else
    failed=$((failed + 1))
    echo "not ok $n - $name replays its corpus (${#files[@]} inputs): exit $rc"
    printf '%s\n' "$out" | grep -E 'ERROR|SUMMARY|runtime error|Test unit written|^#' | head -20 | sed 's/^/# /' >&2
  fi
done
[ $failed -eq 0 ]
