#!/bin/sh
# The test bed's virt-launcher's one job: listen where virt-launcher listens,
# answering "pong", until the pod is deleted. POD_UID comes from the
# downward API (metadata.uid).
set -eu
sock=/var/run/kubevirt/sockets/${POD_UID:?set POD_UID from metadata.uid}.sock
trap 'rm -f "$sock"; exit 0' TERM INT
socat UNIX-LISTEN:"$sock",unlink-early,fork SYSTEM:'echo pong' &
wait $!
