/* SPDX-License-Identifier: Apache-2.0 */
/* The state controller: for every VM whose TPM must persist, a correctly
 * shaped, correctly owned state PVC, and a TPMState that says how things
 * stand. One replica writes at a time (a Lease); the others keep warm
 * caches and stand by. See README "State controller"; the code is in
 * agent/state/ (start with controller.c). */
#pragma once

#include <stdint.h>

#include "base/error.h"
#include "config.h"
#include "kube/client.h"

typedef struct state_controller state_controller;

typedef struct state_controller_stats {
        uint64_t reconciles;
        uint64_t reconcile_errors;
        uint64_t pvcs_created;
        uint64_t pvcs_deleted; /* our own state PVCs that lost the race with KubeVirt's, deleted unused */
        uint64_t tpmstates_created;
        uint64_t status_updates;
        uint64_t events;
        uint64_t leases_deleted; /* per-VM state Leases of deleted VMs removed */
        uint64_t queue_depth;
        uint64_t leader; /* 1 while this replica is the writer */
} state_controller_stats;

int state_controller_new(kube_client *c, const agent_config *cfg, const char *identity, state_controller **ret,
                         vt_error **err);
/* Start informers, wait for their caches, campaign for the Lease, run workers. */
int state_controller_start(state_controller *sc, vt_error **err);
bool state_controller_synced(state_controller *sc);
/* Why it cannot work at all (caller frees), e.g. its Lease's namespace does
 * not exist; NULL when nothing stops it. For /readyz. */
char *state_controller_problem(state_controller *sc);
void state_controller_stop(state_controller *sc);
void state_controller_free(state_controller *sc);
void state_controller_get_stats(state_controller *sc, state_controller_stats *ret);
DEFINE_TRIVIAL_CLEANUP_FUNC(state_controller *, state_controller_free)
