#!/bin/sh
# The test bed's virt-launcher's one job: listen where virt-launcher listens,
# answering "pong", until the pod is deleted: launcher-sock in the pod's own
# emptyDir "sockets", mounted at /var/run/kubevirt/sockets (KubeVirt's layout;
# the agent finds it under the kubelet's pods directory).
set -eu
sock=/var/run/kubevirt/sockets/launcher-sock
trap 'rm -f "$sock"; exit 0' TERM INT
socat UNIX-LISTEN:"$sock",unlink-early,fork SYSTEM:'echo pong' &
wait $!
