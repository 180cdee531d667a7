# Shared helpers for the end-to-end suites (test/e2e/NN-name.t): TAP output,
# kubectl against the local test bed, a namespace per test, and deadlines.
# Source it first:   . "$(dirname "$0")/lib.sh"
#
#   plan N                   print the plan (or leave it out: the plan is printed at exit)
#   ok DESC CMD [ARGS...]    run CMD; "ok" if it exits 0. Its output is shown (as
#                            diagnostics) only on failure. Returns CMD's status.
#   is GOT WANT DESC         string equality
#   like GOT REGEX DESC      bash [[ =~ ]] match
#   pass DESC / fail DESC [DIAG...]
#   skip DESC                an "ok N # SKIP DESC" line
#   skip_all REASON          "1..0 # SKIP REASON" and exit 0 (only before any test)
#   diag MSG...              "# MSG" on stderr
#   bail_out REASON          "Bail out! REASON", exit 255
#   wait_until SECS CMD...   poll CMD (quietly) until it exits 0; 1 if SECS pass first.
#                            The only way to wait: never a fixed sleep as synchronisation.
#   require_cluster          bail out unless the API server answers /readyz
#   require_kubevirt         skip the suite unless the test bed runs real KubeVirt (the
#                            default with nodes); sources the nodes' images.env
#                            (KUBEVIRT_TAG, TPM_GUEST_IMAGE, ...). Needs hack/nodes-lib.sh.
#   setup_namespace [PREFIX] create a fresh namespace, export NS, delete it at exit
#                            (set VTPM_KEEP_NS=1 to keep it for debugging)
#   k ARGS...                kubectl -n "$NS" ARGS...
#   at_exit CMD...           run CMD at exit (last registered runs first)
#   free_port                print a TCP port on 127.0.0.1 nobody listens on, below the
#                            kernel's ephemeral range (a random pick inside it can meet
#                            an outgoing connection's source port: "Address already in use")
#
# Exit status: 0 only if every test passed and the plan (if any) was met.
# The lib sets -u and pipefail, not -e: a failing `ok` must not end the script.
# Environment: VTPM_RUN (default /tmp/vtpm-testbed), KUBECONFIG (default
# $VTPM_RUN/admin.kubeconfig); kubectl and friends come first on PATH from $K8S_BIN.
# Also exported: E2E_TOP (repository root).

set -u -o pipefail

E2E_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export E2E_TOP
. "$E2E_TOP/hack/versions.sh"
export PATH="$K8S_BIN:$ETCD_BIN:$PATH"
export VTPM_RUN=${VTPM_RUN:-/tmp/vtpm-testbed}
export KUBECONFIG=${KUBECONFIG:-$VTPM_RUN/admin.kubeconfig}

_tap_n=0
_tap_failed=0
_tap_planned=
_tap_exit_cmds=()

plan() { _tap_planned=$1; echo "1..$1"; }

diag() { local l; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/# /' >&2; done; }

pass() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1"; return 0; }

fail() {
  _tap_n=$((_tap_n + 1)); _tap_failed=$((_tap_failed + 1))
  echo "not ok $_tap_n - $1"
  shift
  [ $# -eq 0 ] || diag "$@"
  return 1
}

skip() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n # SKIP $1"; }

skip_all() { echo "1..0 # SKIP $1"; _tap_planned=0; _tap_skip_all=1; exit 0; }

bail_out() { echo "Bail out! $1"; _tap_bailed=1; exit 255; }

ok() {
  local desc=$1 out rc=0; shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then pass "$desc"; else fail "$desc" "command: $*" "exit status $rc" "$out"; fi
  return "$rc"
}

is() {
  if [ "$1" == "$2" ]; then pass "$3"; else fail "$3" "got:  '$1'" "want: '$2'"; fi
}

like() {
  if [[ $1 =~ $2 ]]; then pass "$3"; else fail "$3" "got:  '$1'" "want match: /$2/"; fi
}

# wait_until SECS CMD...: poll CMD until it succeeds or SECS pass. With
# E2E_WAIT_LOG=FILE every wait that gives up is written there (make test lists
# them): a failure's wait, or time a suite wastes.
wait_until() {
  local secs=$1 deadline now delay=100 nap; shift
  deadline=$(( $(date +%s%N) / 1000000 + ${secs%.*} * 1000 ))
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    now=$(( $(date +%s%N) / 1000000 ))
    if [ "$now" -ge "$deadline" ]; then
      [ -z "${E2E_WAIT_LOG:-}" ] || echo "${0##*/}: gave up after $secs s: $*" >> "$E2E_WAIT_LOG"
      return 1
    fi
    # Poll every 0.1 s at first, backing off to 1 s; never sleep past the deadline.
    nap=$(( deadline - now < delay ? deadline - now : delay ))
    sleep "$(printf '%d.%03d' $(( nap / 1000 )) $(( nap % 1000 )))"
    delay=$(( delay * 2 > 1000 ? 1000 : delay * 2 ))
  done
}

at_exit() { _tap_exit_cmds+=("$*"); }

free_port() {
  python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(20000, lo), 200):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    raise SystemExit("no free TCP port below " + str(lo))
PY
}

require_cluster() {
  [ -s "$KUBECONFIG" ] || bail_out "no kubeconfig at $KUBECONFIG: start the test bed with 'make cluster-up'"
  local r
  r=$(kubectl get --raw /readyz 2>&1) || bail_out "API server not ready ($KUBECONFIG): $r"
}

require_kubevirt() {
  [ -s "$NL_DIR/images.env" ] && . "$NL_DIR/images.env"
  [ -n "${KUBEVIRT_TAG:-}" ] && kubectl get kv -n kubevirt kubevirt >/dev/null 2>&1 ||
    skip_all "needs real KubeVirt on the test bed (the default with nodes; this one has VTPM_KUBEVIRT=0 or none)"
}

# The agent as shipped on real KubeVirt (suites 09, 10): its image on the
# nodes, swtpm here to judge state files, KubeVirt's Plugin CRD. Needs
# lib-realnode.sh sourced.
require_agent_on_kubevirt() {
  require_kubevirt
  rn_images_ready || skip_all "the nodes have no agent image (VTPM_NODES_AGENT_IMAGE=1)"
  command -v swtpm >/dev/null || skip_all "needs swtpm on the machine (hack/install-deps.sh)"
  kubectl get crd plugins.plugin.kubevirt.io >/dev/null 2>&1 || skip_all "this KubeVirt has no Plugin CRD (v1.9 has)"
}

setup_namespace() {
  local prefix=${1:-e2e-$(basename "$0" .t)} name
  require_cluster
  name=$(printf '%s' "$prefix" | tr 'A-Z_.' 'a-z--' | tr -cd 'a-z0-9-' | cut -c1-50)
  NS="$name-$(tr -dc 'a-z0-9' < /dev/urandom | head -c 6)"
  export NS
  kubectl create namespace "$NS" >/dev/null || bail_out "cannot create namespace $NS"
  if [ -z "${VTPM_KEEP_NS:-}" ]; then
    at_exit "kubectl delete namespace $NS --wait=false >/dev/null 2>&1"
  else
    at_exit "diag 'kept namespace $NS'"
  fi
}

k() { kubectl -n "$NS" "$@"; }

_tap_finish() {
  local rc=$? i
  for (( i=${#_tap_exit_cmds[@]}-1; i>=0; i-- )); do eval "${_tap_exit_cmds[$i]}" || true; done
  [ -z "${_tap_skip_all:-}" ] || exit 0
  [ -z "${_tap_bailed:-}" ] || exit 255
  if [ -z "$_tap_planned" ]; then
    echo "1..$_tap_n"
  elif [ "$_tap_planned" -ne "$_tap_n" ]; then
    diag "planned $_tap_planned tests but ran $_tap_n"
    [ "$rc" -ne 0 ] || rc=255
  fi
  if [ "$_tap_failed" -gt 0 ]; then
    diag "failed $_tap_failed of $_tap_n"
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}
trap _tap_finish EXIT
