/* SPDX-License-Identifier: Apache-2.0 */
/* What act and report need of the state controller: the API client, the
 * event recorder, the memo of our own writes and the counters. */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

#include "kube/client.h"
#include "kube/events.h"
#include "written.h"

typedef struct state_counters {
        atomic_uint_least64_t pvcs_created;
        atomic_uint_least64_t pvcs_deleted; /* our own, lost to KubeVirt's in a race */
        atomic_uint_least64_t tpmstates_created;
        atomic_uint_least64_t status_updates;
        atomic_uint_least64_t events;
        atomic_uint_least64_t leases_deleted;
        atomic_uint_least64_t lease_sweeps; /* runs of the Lease GC's queue key (not VM reconciles) */
} state_counters;

typedef struct state_ctx {
        kube_client *client;
        kube_recorder *recorder;
        state_written *written;
        state_counters *counters;
} state_ctx;
