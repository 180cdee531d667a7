/* SPDX-License-Identifier: Apache-2.0 */
/* Is a pod named vtpm-attach-<launcher uid> one the agent made? The name is
 * the tenant's to take first (pods in the VM's namespace are theirs to
 * create), with any labels and owner they like. What the agent relies on is
 * that the kubelet publishes the state PVC for it, and nothing else that
 * could pass for it: a pod with a memory-backed volume named like the PV is
 * published as a mount point exactly where the PVC would be. So the pod must
 * have the shape the agent gives it: on this node, the attachment image, no
 * other containers, and one volume, "state", the VM's state PVC. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

/* The spec fields the check reads, for an informer's trimmed copy. */
json_t *attachment_trim_spec(json_t *pod);

/* true when `pod` (full or trimmed) has the agent's attachment pod shape for
 * `pvc` on `node` with `image`; otherwise false and *ret_why a fixed phrase
 * (no tenant-written content). */
bool attachment_pod_is_ours(json_t *pod, const char *pvc, const char *image, const char *node, const char **ret_why);
