/* SPDX-License-Identifier: Apache-2.0 */
/* The state controller's informers: what it watches, what of each object it
 * caches (a transform per resource), and which VMs a change concerns (the
 * keys it enqueues). Reconciles read these caches and nothing else. */
#pragma once

#include "config.h"
#include "kube/client.h"
#include "kube/controller.h"
#include "kube/informer.h"

enum {
        STATE_INF_VM,
        STATE_INF_PVC,
        STATE_INF_SC,
        STATE_INF_KUBEVIRT,
        STATE_INF_HCO,
        STATE_INF_POD,
        STATE_INF_TPMSTATE,
        STATE_INF_CPREF,
        STATE_INF_NSPREF,
        STATE_INF_REVISION,
        STATE_INF_SPROFILE,
        STATE_INF_LEASE, /* the agent's namespace: per-VM state Leases, for their garbage collection */
        _STATE_INF_MAX,
};

typedef struct state_informers {
        kube_controller *ctl; /* where changes are enqueued */
        kube_informer *inf[_STATE_INF_MAX];
} state_informers;

/* Create the informers (not started) and hand them to `ctl`, which owns,
 * starts and stops them. `si` must stay where it is: the handlers point to
 * it. */
int state_informers_init(state_informers *si, kube_client *c, const agent_config *cfg, kube_controller *ctl,
                         vt_error **err);

/* Enqueue every cached VM (a new leader; a cluster-wide input changed). */
void state_informers_enqueue_all(state_informers *si);
