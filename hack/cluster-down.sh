#!/usr/bin/env bash
# Stop everything hack/cluster-up.sh started (TERM, KILL after a deadline),
# then remove etcd's tmpfs data. Finds our processes by pid file and also by
# scanning /proc for our binaries running with this $VTPM_RUN, so a lost pid
# file leaves nothing behind. Idempotent. Exits non-zero if anything survives.
# Certificates and logs under $VTPM_RUN are kept (the next cluster-up reuses them).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/testbed-lib.sh"

if [ -d "$VTPM_RUN" ]; then
  exec 9> "$VTPM_RUN/.lock"
  flock -w 300 9 || tb_die "another cluster-up/cluster-down holds $VTPM_RUN/.lock"
fi

# Real nodes first (hack/nodes-up.sh), if any ran with this $VTPM_RUN.
if [ -d "$VTPM_RUN/nodes" ]; then
  VTPM_LOCK_HELD=1 "$top/hack/nodes-down.sh" || nodes_failed=1  # the control plane goes anyway
fi

# Reverse start order: controllers first, etcd last.
for c in kube-controller-manager kube-apiserver etcd; do
  tb_stop "$c" "${TB_STOP_TIMEOUT:-20}"
done

# Strays: ours by binary and command line, but with no (or a stale) pid file.
strays=$(tb_our_pids)
if [ -n "$strays" ]; then
  tb_log "stopping processes without a pid file: $(echo $strays)"
  kill -TERM $strays 2>/dev/null || true
  deadline=$(( $(date +%s) + ${TB_STOP_TIMEOUT:-20} ))
  while [ -n "$(tb_our_pids)" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  left=$(tb_our_pids)
  [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
  for i in $(seq 50); do [ -z "$(tb_our_pids)" ] && break; sleep 0.1; done
fi

left=$(tb_our_pids)
[ -z "$left" ] || tb_die "still running after KILL: $(echo $left)"
rm -rf "$TB_ETCD_DATA"
rm -f "$VTPM_RUN/testbed.env"
# Not ours, but worth knowing: the same binaries running for another test bed.
others=$(tb_bin_pids)
[ -z "$others" ] || tb_log "note: other test beds' control-plane processes still run (not ours): $(echo $others)"
[ -z "${nodes_failed:-}" ] || tb_die "nodes left something behind (see above)"
tb_log "down: no process of this test bed ($VTPM_RUN) remains"
