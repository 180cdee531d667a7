#!/usr/bin/env bash
# The node-hook gRPC server (pkg/grpc) against KubeVirt's own client: a Go
# program (hack/kubevirt/nodehook-client/main.go) that calls the hook as
# virt-handler does, built from KubeVirt's source tree with its vendor
# directory, offline, as hack/build-kubevirt.sh builds KubeVirt. No cluster.
# TAP on stdout.
#   test/tools/grpc-interop.sh        (after `make tools`; runs as root: the
#                                      server serves uid 0 only)
# Needs KubeVirt's source extracted by hack/build-kubevirt.sh (its cache,
# `hack/build-kubevirt.sh --dir`/src); without it the suite is skipped.
# The client goes to that cache, keyed by its source:
#   $VTPM_CACHE/kubevirt-<key>/nodehook-client-<sha256 of main.go, 12 hex>
# Environment: VTPM_TOOLS overrides the tools directory (default build/tools).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
. hack/versions.sh
tools=${VTPM_TOOLS:-$top/build/tools}
main=$top/hack/kubevirt/nodehook-client/main.go

kv=$(hack/build-kubevirt.sh --dir 2>/dev/null) || kv=
src=$kv/src
if [ -z "$kv" ] || [ ! -f "$src/go.mod" ] || [ ! -d "$src/vendor" ]; then
  echo "1..0 # SKIP no KubeVirt source (hack/build-kubevirt.sh extracts it)"; exit 0
fi
[ -x "$tools/grpc-hook-server" ] || { echo "Bail out! $tools/grpc-hook-server missing: run 'make tools'"; exit 1; }
[ -x "$GO" ] || { echo "1..0 # SKIP no Go at $GO"; exit 0; }

work=$(mktemp -d /tmp/grpc-interop.XXXXXX)
chmod 0700 "$work"
server_pid=
stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=
}
trap 'stop_server; rm -rf "$work"' EXIT

# 1. The client, built once per (KubeVirt source, main.go). -overlay adds
# main.go to KubeVirt's tree as package kubevirt.io/kubevirt/vtpm-nodehook-client
# without writing into the cache's source.
client=$kv/nodehook-client-$(sha256sum "$main" | cut -c1-12)
if [ ! -x "$client" ]; then
  printf '{"Replace": {"%s": "%s"}}\n' "$src/vtpm-nodehook-client/main.go" "$main" > "$work/overlay.json"
  t=$(date +%s)
  if ! (cd "$src" && PATH=$(dirname "$GO"):$PATH GOTOOLCHAIN=local GOPROXY=off \
        GOFLAGS="-mod=vendor -buildvcs=false" GOCACHE=$VTPM_CACHE/kubevirt-go-build \
        GOMODCACHE=$VTPM_CACHE/kubevirt-go-mod \
        "$GO" build -p 2 -trimpath -gcflags "$GO_GCFLAGS" -overlay "$work/overlay.json" \
        -o "$client.tmp" ./vtpm-nodehook-client) > "$work/go-build.log" 2>&1; then
    echo "Bail out! go build of the node hook client failed:"; sed 's/^/# /' "$work/go-build.log"; exit 1
  fi
  mv "$client.tmp" "$client"
  echo "# built $client ($(( $(date +%s) - t )) s)"
fi

start_server() {
  : > "$work/server.out"
  "$tools/grpc-hook-server" --socket "$work/hooks/vtpm.sock" "$@" > "$work/server.out" 2> "$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q '^listening ' "$work/server.out" && return 0
    sleep 0.05
  done
  echo "Bail out! grpc-hook-server did not start: $(cat "$work/server.err")"; exit 1
}

call() { "$client" -socket "$work/hooks/vtpm.sock" -timeout 10s "$@" 2>&1; }

n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else failed=$((failed + 1)); echo "not ok $n - $2"; fi; }

vmi='{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance","metadata":{"name":"vm-1","namespace":"tenant-a","uid":"6a1c0f0e-1b9e-4a53-9d7e-3f0c5e0a7b21"},"spec":{"domain":{"devices":{"tpm":{"persistent":true}}}}}'
echo "$vmi" > "$work/vmi.json"
# A VMI of 3 MiB (cloud-init user data in an annotation): more than HTTP/2's
# first flow-control windows and grpc-go's frames.
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); v["metadata"]["annotations"]={"big":"x"*(3<<20)}; print(json.dumps(v))' \
  "$vmi" > "$work/vmi-big.json"

echo "1..6"
start_server
out=$(call -hook PreVMStart -vmi "$work/vmi.json" -node node-1); rc=$?
ok $(( rc != 0 )) "KubeVirt's client succeeds (exit $rc: $out)"
grep -q '^request hookPoint=PreVMStart node=node-1 vmi=tenant-a/vm-1 vmiBytes=[0-9]*$' "$work/server.out"
ok $? "the server saw the hook point, the node and the VMI: $(grep '^request' "$work/server.out" | head -1)"
out=$(call -hook PreVMStart -vmi "$work/vmi-big.json" -node node-1); rc=$?
big=$(grep -c 'vmi=tenant-a/vm-1 vmiBytes=31[0-9]\{5\}$' "$work/server.out")
ok $(( rc != 0 || big != 1 )) "a VMI of 3 MiB goes through (exit $rc: $out)"
stop_server

msg='vTPM of tenant-a/vm-1 is not running yet: 50% done; retrying'
start_server --fail "$msg"
out=$(call -hook PreVMStart -vmi "$work/vmi.json" -node node-1); rc=$?
ok $(( rc != 1 )) "a failing handler fails KubeVirt's call (exit $rc)"
[ "$out" = "node hook PreVMStart failed with Unavailable: $msg" ]
ok $? "KubeVirt reports the handler's message: $out"
stop_server

start_server --allow-uid 4242
out=$(call -hook PreVMStart -vmi "$work/vmi.json" -node node-1); rc=$?
grep -q 'refused: peer pid [0-9]* has uid 0, not 4242' "$work/server.err" && [ $rc = 1 ]
ok $? "a peer of another uid is refused (exit $rc: $out)"
stop_server
[ $failed = 0 ]
