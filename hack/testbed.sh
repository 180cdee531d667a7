#!/usr/bin/env bash
# Small operations on the running test bed, for suites that need them.
#   hack/testbed.sh status             one line per component: running/stopped, pid
#   hack/testbed.sh restart-apiserver  stop and start kube-apiserver only (etcd keeps its data)
#   hack/testbed.sh stop-apiserver     stop kube-apiserver only (e.g. "server unreachable" tests)
#   hack/testbed.sh start-apiserver    start it again and wait for /readyz
#   hack/testbed.sh etcd-revision      print etcd's current revision
#   hack/testbed.sh compact-etcd       compact etcd to its current revision; print that revision
#   hack/testbed.sh env                print testbed.env (ports, paths)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/testbed-lib.sh"

case "${1:-}" in
  status)
    rc=0
    for c in "${TB_COMPONENTS[@]}"; do
      if pid=$(tb_pid "$c"); then
        if tb_probe "$c"; then echo "$c running pid $pid healthy"; else echo "$c running pid $pid UNHEALTHY"; rc=1; fi
      else echo "$c stopped"; rc=1; fi
    done
    exit $rc ;;
  restart-apiserver) tb_restart_apiserver ;;
  stop-apiserver) tb_stop kube-apiserver ;;
  start-apiserver) tb_start kube-apiserver ;;
  etcd-revision) tb_etcd_revision ;;
  compact-etcd) tb_compact_etcd ;;
  env) cat "$VTPM_RUN/testbed.env" ;;
  *) sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
