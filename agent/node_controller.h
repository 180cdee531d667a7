/* SPDX-License-Identifier: Apache-2.0 */
/* The node controller: for every virt-launcher on this node, make the VM's
 * state volume available here (an attachment pod the kubelet publishes),
 * bind-mount it into the launcher's mount namespace, verify the mount, and
 * only then provision (first boot) and start swtpm inside that namespace.
 * Stops swtpm through its control channel when the launcher goes; adopts
 * running swtpm processes after an agent restart. See README "Node controller". */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "config.h"
#include "kube/client.h"
#include "metrics/metrics.h"

typedef struct node_controller node_controller;

#define NODE_CONTROLLER_REASONS_MAX 64

typedef struct node_controller_stats {
        uint64_t launchers;       /* launchers on this node we know of */
        uint64_t swtpm_running;   /* swtpm processes we supervise */
        uint64_t provisions;      /* first-boot provisions */
        uint64_t starts;          /* swtpm starts */
        uint64_t adoptions;       /* running swtpm adopted after a restart */
        uint64_t stops;           /* clean stops */
        /* starts refused (mount, state, lock, keys, version), by the reason
         * node_controller_reason_name gives each index; their sum is the total */
        uint64_t refusals_by_reason[NODE_CONTROLLER_REASONS_MAX];
} node_controller_stats;

/* The nodeState reason (e.g. "KeyProviderUnavailable") of index i of
 * refusals_by_reason; NULL past the last. */
const char *node_controller_reason_name(unsigned i);

int node_controller_new(kube_client *c, const agent_config *cfg, vt_metrics *metrics, node_controller **ret,
                        vt_error **err);
int node_controller_start(node_controller *nc, vt_error **err);
bool node_controller_synced(node_controller *nc);
/* Stops watching; never stops a VM's swtpm. */
void node_controller_stop(node_controller *nc);
void node_controller_free(node_controller *nc);
/* KubeVirt's PreVMStart node hook (agent/kubevirt_hook.h): wake the
 * launcher pod `pod_uid` of namespace `ns` and wait up to `timeout` for its
 * vTPM to run. 0: it runs; -EAGAIN with *err saying why not (its nodeState's
 * message) when the time is up. */
int node_controller_wait_vtpm(node_controller *nc, const char *ns, const char *pod_uid, usec_t timeout,
                              vt_error **err);
/* The uid of launcher pod ns/name on this node, from the watch cache (caller
 * frees); NULL when it is not there (yet). */
char *node_controller_launcher_uid(node_controller *nc, const char *ns, const char *name);
void node_controller_get_stats(node_controller *nc, node_controller_stats *ret);
DEFINE_TRIVIAL_CLEANUP_FUNC(node_controller *, node_controller_free)
