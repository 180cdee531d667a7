# with_progress LOG LABEL CMD...: run CMD with its output appended to LOG and,
# while it runs, print "LABEL: still running (Mm Ss)" to stderr every
# $VTPM_PROGRESS_EVERY seconds (default 30), so that a first build that takes
# half an hour never looks hung. Returns CMD's exit status.
with_progress() {
  local log=$1 label=$2 every=${VTPM_PROGRESS_EVERY:-30} t0 pid rc=0 next; shift 2
  t0=$(date +%s)
  "$@" >> "$log" 2>&1 & pid=$!
  next=$((t0 + every))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    if [ "$(date +%s)" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      echo "$label: still running ($(progress_elapsed "$t0"))" >&2
      next=$((next + every))
    fi
  done
  wait "$pid" || rc=$?
  return "$rc"
}

# progress_elapsed T0: the time since T0 (epoch seconds) as "Mm Ss".
progress_elapsed() { local s=$(( $(date +%s) - $1 )); echo "$((s / 60))m $((s % 60))s"; }
