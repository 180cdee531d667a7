/* SPDX-License-Identifier: Apache-2.0 */
/* Does a process belong to a given pod? Its cgroup says so: the kubelet puts
 * every container of a pod under a per-pod cgroup named after the pod's UID
 * (cgroupfs: .../pod<uid>/<container>; systemd: ...-pod<uid with '_'>.slice/
 * ...), and the container runtime names the container's own cgroup after the
 * container ID (.../<id>, cri-containerd-<id>.scope, crio-<id>.scope,
 * docker-<id>.scope). A tenant's process can move into neither. Nodes whose
 * kubelet makes no per-pod cgroups (cgroupsPerQOS: false) still have the
 * container's: the IDs come from the pod's status, which only the kubelet
 * writes.
 *
 * The text is /proc/<pid>/cgroup ("hierarchy:controllers:path" lines, v1 and
 * v2); paths may start with "/.." under a private cgroup namespace: names
 * are matched component by component, so that does not matter. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

/* 1 when a line of `text` (len bytes) names pod
 * `pod_uid` or one of `container_ids` (64-hex IDs, NULL-terminated, may be
 * NULL) and no line names another: in each path the first component that
 * names a pod or a container decides. 0 otherwise; -EBADMSG when the text is
 * not a cgroup file. */
int cgroup_text_names_pod(const char *text, size_t len, const char *pod_uid, const char *const *container_ids);

/* The same for /proc/<pid>/cgroup. */
int proc_cgroup_names_pod(pid_t pid, const char *pod_uid, const char *const *container_ids, vt_error **err);
