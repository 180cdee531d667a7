/* SPDX-License-Identifier: Apache-2.0 */
/* Which process is a launcher pod's? Found the way KubeVirt's virt-handler
 * finds virt-launcher: through the pod's own socket directory, an emptyDir
 * that only this pod's containers mount, at
 *   <node.kubeletRoot>/pods/<pod uid>/volumes/kubernetes.io~empty-dir/<volume>/<file>
 * (node.launcherSocket = "<volume>/<file>", KubeVirt's "sockets/launcher-sock").
 * Another pod cannot write there; this pod can, so the path is opened
 * without following any symlink, the socket is connected to, its peer taken
 * as a pidfd, and the peer must be in this pod by its cgroup (the pod's UID,
 * or one of its containers' IDs as the kubelet reports them). */
#pragma once

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "config.h"

/* The launcher process of `pod` (a pod object with metadata.uid and, from
 * launcher_trim_status(), status.containerIDs).
 *   0        *ret_pid / *ret_start_time: the peer, checked to be in the pod
 *   -EAGAIN  not yet: no socket, nobody listening, containers not reported
 *   -EPERM   refused: a symlink, not a socket, a peer outside the pod, or
 *            one outside the agent's PID namespace (unprovable);
 *            *err says which, naming no tenant-written content. */
int launcher_identify(const agent_config *cfg, json_t *pod, pid_t *ret_pid, uint64_t *ret_start_time, vt_error **err);

/* What launcher_identify() needs of a pod's status, for an informer's trimmed
 * copy: {"containerIDs": [...bare IDs...], "containersReported": bool}. */
json_t *launcher_trim_status(json_t *pod);

/* "sockets/launcher-sock": a volume name and a file name, nothing else. */
bool launcher_socket_ref_valid(const char *ref);
