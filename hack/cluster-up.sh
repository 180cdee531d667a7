#!/usr/bin/env bash
# Start the local test bed: etcd (data on tmpfs), kube-apiserver (TLS, client
# certs, RBAC, service-account signing) and kube-controller-manager (default
# controllers: garbage collector, PV binder, namespaces, service accounts...),
# all on loopback; install the CRDs and wait until they are Established; with
# VTPM_NODES, the nodes (hack/nodes-up.sh) and real KubeVirt (hack/kubevirt-up.sh).
# Progress goes to stderr; the last (only) line on stdout is the admin
# kubeconfig path, so `export KUBECONFIG=$(hack/cluster-up.sh)` works.
# Idempotent: components already up and healthy are left alone.
# Layout, ports and helper functions: hack/testbed-lib.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/hack/testbed-lib.sh"

t0=$(tb_now_ms)
mkdir -p "$VTPM_RUN"
chmod 700 "$VTPM_RUN"
# One cluster-up (or cluster-down) at a time per $VTPM_RUN.
exec 9> "$VTPM_RUN/.lock"
flock -w 300 9 || tb_die "another cluster-up/cluster-down holds $VTPM_RUN/.lock"

for c in "${TB_COMPONENTS[@]}"; do
  [ -x "$(tb_bin "$c")" ] || tb_die "$(tb_bin "$c") missing: run hack/build-control-plane.sh (make control-plane)"
done

"$top/hack/gen-certs.sh"

for c in "${TB_COMPONENTS[@]}"; do
  tb_start "$c"
done
tb_write_env

# CRDs: applied every time (cheap, and picks up edits), then wait for each:
# the agent's own (manifests/crds/) and the test bed's stand-ins for other
# projects' (hack/stand-ins/: CDI's StorageProfile, the HyperConverged CR).
# With real KubeVirt (tb_kubevirt) virt-operator installs KubeVirt's own CRDs:
# the stand-ins of kubevirt.io and instancetype.kubevirt.io stay out.
crds=()
for f in "$top"/manifests/crds/*.yaml "$top"/hack/stand-ins/*.yaml; do
  if tb_kubevirt; then case ${f##*/} in kubevirt.io_* | instancetype.kubevirt.io_*) continue ;; esac; fi
  crds+=(-f "$f")
done
tb_kubectl apply "${crds[@]}" >&2
tb_kubectl wait --for condition=Established --timeout 60s "${crds[@]}" >&2 ||
  tb_die "CRDs not Established within 60s; see $TB_LOGS/kube-apiserver.log"

# kube-controller-manager answers /healthz before its controllers run; the
# service-account controller's first object says they do (pods need it too).
t1=$(tb_now_ms)
deadline=$(( $(date +%s) + 60 ))
until tb_kubectl -n default get serviceaccount default >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] ||
    tb_die "controllers not running 60s after start (no default ServiceAccount); see $TB_LOGS/kube-controller-manager.log"
  tb_pid kube-controller-manager >/dev/null ||
    tb_die "kube-controller-manager exited; see $TB_LOGS/kube-controller-manager.log"
  sleep 0.2
done
tb_log "controllers running (default ServiceAccount exists) after $(( $(tb_now_ms) - t1 )) ms more"

# Real nodes (kubelet + containerd each), only when asked for: hack/nodes-up.sh.
if [[ ${VTPM_NODES:-0} =~ ^[1-9] ]]; then
  VTPM_LOCK_HELD=1 "$top/hack/nodes-up.sh" >&2
  ! tb_kubevirt || "$top/hack/kubevirt-up.sh" >&2
fi

tb_log "up in $(( $(tb_now_ms) - t0 )) ms: apiserver $TB_APISERVER_URL, etcd $TB_ETCD_URL (data $TB_ETCD_DATA)"
echo "$TB_KUBECONFIG"
