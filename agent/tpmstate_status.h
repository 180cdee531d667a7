/* SPDX-License-Identifier: Apache-2.0 */
/* The one way a TPMState's status is written: server-side apply on the
 * status subresource, one field manager per writer, so no writer can drop
 * or overwrite a field another one owns (a merge patch built from a cached
 * copy could).
 *
 *   writer                      field manager            fields of .status
 *   the state controller        vtpm-state-controller    phase, message, observedGeneration,
 *                                                        persistent, pvcName, storageClass,
 *                                                        storageClassSource, node, launcher,
 *                                                        warnedGeneration, conditions
 *   the node agent of node N    vtpm-node-N              nodeState, keys, encrypted
 *
 * Each apply carries the writer's whole set (a field it leaves out is
 * removed, as server-side apply does), with force: the only other owners of
 * these fields are the same writer's earlier incarnations (another node's
 * agent, before the VM moved; merge patches of an older release).
 *
 * nodeState and keys are atomic maps in the CRD (x-kubernetes-map-type:
 * atomic): one node's report is replaced whole by the next, never merged
 * key by key with another owner's. Granular (the default, and what
 * preserve-unknown-fields gives nodeState's unnamed keys), a forced apply
 * takes over only the keys it sets: a VM moved to node-2 kept node-1's
 * swtpmPid and kekRotation, and fields an older release merged in were
 * never removed. The ownership test in test/unit reads the CRD for it.
 *
 * The release before wrote status with merge patches, recorded as field
 * manager "vtpm-agent" (its User-Agent), operation Update. A field that
 * manager still holds is never removed by an apply that leaves it out (a
 * RestartRequired condition, node and launcher of a stopped VM would stay
 * for good), and applying the same value only shares it. So the first apply
 * whose answer shows such fields of the writer's moves them into the
 * writer's own entry (one managedFields write on that resourceVersion) and
 * applies again. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "base/error.h"
#include "kube/client.h"

#define TPMSTATE_MANAGER_STATE "vtpm-state-controller"
#define TPMSTATE_MANAGER_NODE_PREFIX "vtpm-node-"
/* The field manager of the merge patches of releases before server-side apply. */
#define TPMSTATE_LEGACY_MANAGER "vtpm-agent"

/* Which writer owns a top-level status field. */
typedef enum tpmstate_owner {
        TPMSTATE_OWNER_NONE, /* nobody writes it (unknown field) */
        TPMSTATE_OWNER_STATE,
        TPMSTATE_OWNER_NODE,
} tpmstate_owner;
tpmstate_owner tpmstate_field_owner(const char *field);

/* "vtpm-node-<node>" (caller frees), cut with a hash suffix to a field
 * manager's 128 characters for a longer node name; NULL for no name. */
char *tpmstate_node_manager(const char *node);

/* The state controller's fields of `status` (a copy of just those; fields
 * of other owners are left out). */
json_t *tpmstate_state_fields(json_t *status);
/* `managed_fields` (an object's metadata.managedFields) with `owner`'s status
 * fields moved out of TPMSTATE_LEGACY_MANAGER's Update entries (an entry left
 * with nothing is dropped) into `manager`'s Apply entry of the status
 * subresource; NULL when there is nothing to move or no such Apply entry yet.
 * New reference. */
json_t *tpmstate_adopt_legacy(json_t *managed_fields, const char *manager, tpmstate_owner owner);

/* Do the state controller's fields of two statuses differ? (a write is
 * needed). Either may be NULL. */
bool tpmstate_state_fields_differ(json_t *a, json_t *b);

/* Apply the state controller's status. `fields` must be an object holding
 * only fields it owns (-EINVAL otherwise, before any request: a programming
 * error). -ENOENT: the TPMState is gone. `ret_updated` (optional) gets the object the server returned. */
int tpmstate_apply_state(kube_client *c, const char *ns, const char *name, json_t *fields, json_t **ret_updated,
                         vt_error **err);

/* Apply a node agent's report: `node_state` (must name `node` in its
 * "node" field: the admission policy refuses anything else), `keys` (the
 * whole keys object; NULL: none, so this node's earlier keys are removed)
 * and status.encrypted, taken from node_state's "encrypted". Refusals
 * (-EINVAL) come before any request. */
int tpmstate_apply_node(kube_client *c, const char *node, const char *ns, const char *name, json_t *node_state,
                        json_t *keys, json_t **ret_updated, vt_error **err);
