# Shell helpers for the pkg/kube end-to-end suites (test/e2e/1x-kube-*.t):
# run build/tools/informer-probe in the background, talk to it over a fifo,
# and compare its cache with the server. Source after test/e2e/lib.sh.
#
#   probe_start RESOURCE NS [ARGS...]  start the probe (GROUP/VERSION/PLURAL, e.g. /v1/configmaps)
#                            on namespace NS; sets PROBE_PID, PROBE_OUT (its stdout),
#                            PROBE_ERR; stopped (quit, then TERM) at exit. Extra ARGS
#                            go to the probe; PROBE_WRAP (a command prefix, e.g.
#                            valgrind) runs it under another program.
#   probe_cmd CMD REGEX      send CMD and wait until a new line matching REGEX appears
#   probe_dump               "key rv" for every cached object, sorted
#   probe_stats              the probe's STATS JSON
#   probe_stop               "quit", wait for it to exit; returns its exit status
#   server_state PLURAL      "namespace/name rv" of every object in $NS per kubectl, sorted
#   probe_matches PLURAL     0 when probe_dump equals server_state
#   PROBE_CHECK_AWK          awk program checking the probe's event history per key
#                            (prints BAD lines, COUNT, UPDATED key, DELETED key)
# Environment: VTPM_TOOLS overrides the tools directory (default build/tools).

KUBE_TOOLS=${VTPM_TOOLS:-$E2E_TOP/build/tools}
[ -x "$KUBE_TOOLS/informer-probe" ] || bail_out "$KUBE_TOOLS/informer-probe missing: run 'make tools'"

probe_start() {
  local resource=$1 ns=$2; shift 2
  PROBE_DIR=$(mktemp -d /tmp/kube-probe.XXXXXX)
  mkfifo "$PROBE_DIR/in"
  PROBE_OUT=$PROBE_DIR/out PROBE_ERR=$PROBE_DIR/err
  # shellcheck disable=SC2086 # PROBE_WRAP is a word list on purpose
  ${PROBE_WRAP:-} "$KUBE_TOOLS/informer-probe" --kubeconfig "$KUBECONFIG" --resource "$resource" \
    --namespace "$ns" --backoff-ms 200 "$@" < "$PROBE_DIR/in" > "$PROBE_OUT" 2> "$PROBE_ERR" &
  PROBE_PID=$!
  exec 7> "$PROBE_DIR/in"
  at_exit "probe_cleanup"
}

probe_cleanup() {
  if [ -n "${PROBE_PID:-}" ] && kill -0 "$PROBE_PID" 2>/dev/null; then
    kill -CONT "$PROBE_PID" 2>/dev/null
    echo quit >&7 2>/dev/null
    exec 7>&- 2>/dev/null
    wait_until 10 bash -c "! kill -0 $PROBE_PID 2>/dev/null" || kill -TERM "$PROBE_PID" 2>/dev/null
    wait "$PROBE_PID" 2>/dev/null
  fi
  rm -rf "${PROBE_DIR:-/nonexistent}"
  PROBE_PID=
}

probe_cmd() {
  local cmd=$1 re=$2 n
  n=$(grep -cE "$re" "$PROBE_OUT")
  echo "$cmd" >&7
  wait_until 60 bash -c "[ \$(grep -cE '$re' '$PROBE_OUT') -gt $n ]"
}

# The last dump block: contiguous OBJ lines followed by END (the probe holds
# its output lock while dumping, so no event line lands inside).
probe_dump() {
  probe_cmd dump '^END$' || return 1
  awk '/^OBJ /{blk = blk $2 " " $3 "\n"; next} /^END$/{last = blk; blk = ""; next} {blk = ""}
       END{printf "%s", last}' "$PROBE_OUT" | sort
}

probe_stats() {
  probe_cmd stats '^STATS ' || return 1
  grep '^STATS ' "$PROBE_OUT" | tail -1 | sed 's/^STATS //'
}

probe_stop() {
  local rc=0
  echo quit >&7
  exec 7>&-
  wait "$PROBE_PID" || rc=$?
  PROBE_PID=
  return "$rc"
}

server_state() {
  kubectl -n "$NS" get "$1" -o json |
    jq -r '.items[] | "\(.metadata.namespace)/\(.metadata.name) \(.metadata.resourceVersion)"' | sort
}

probe_matches() {
  local a b
  a=$(probe_dump) || return 1
  b=$(server_state "$1") || return 1
  [ "$a" == "$b" ]
}

PROBE_CHECK_AWK=$(mktemp /tmp/kube-probe-check.XXXXXX.awk)
at_exit "rm -f $PROBE_CHECK_AWK"
cat > "$PROBE_CHECK_AWK" <<'AWK'
# Input: the probe's stdout. Per key: the first call is ADD; UPDATE and DELETE
# only while the key is live; UPDATE's old rv is the last rv delivered; every
# delivered rv is larger than the key's previous one; no (key, rv) pair twice.
function bad(msg) { nbad++; print "BAD " msg }
function rv_seen(k, rv) {
  if ((k SUBSEP rv) in pair) bad("(key, rv) delivered twice: " k " " rv)
  pair[k SUBSEP rv] = 1
  if ((k in last) && rv + 0 <= last[k] + 0) bad("rv not increasing for " k ": " last[k] " then " rv)
  last[k] = rv
}
$1 == "ADD" {
  if (live[$2]) bad("ADD of a live key " $2)
  rv_seen($2, $3); live[$2] = 1; nadd++
}
$1 == "UPDATE" {
  if (!live[$2]) bad("UPDATE of a key not live " $2)
  if ($3 != last[$2]) bad("UPDATE of " $2 " from rv " $3 " but the last delivered was " last[$2])
  rv_seen($2, $4); nupd++; print "UPDATED " $2
}
$1 == "DELETE" {
  if (!live[$2]) bad("DELETE of a key not live " $2)
  rv_seen($2, $3); live[$2] = 0; ndel++; print "DELETED " $2
}
END { printf "COUNT add=%d update=%d delete=%d\n", nadd, nupd, ndel }
AWK
