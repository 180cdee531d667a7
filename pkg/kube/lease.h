/* SPDX-License-Identifier: Apache-2.0 */
/* Leader election on a coordination.k8s.io/v1 Lease, as client-go's
 * leaderelection does: the holder renews every retry period; a candidate
 * takes the lease over only when it has not seen the record change for a
 * whole lease duration (judged by its own clock, so clock skew between nodes
 * does not matter). Writes use the resourceVersion, so two candidates can
 * never both win. On a clean stop the holder releases the lease, so a
 * stand-by takes over at its next retry instead of a lease duration later. */
#pragma once

#include <stdbool.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "kube/client.h"

typedef struct kube_elector kube_elector;

typedef struct kube_elector_options {
        const char *namespace;
        const char *name;      /* the Lease's name */
        const char *identity;  /* this candidate, e.g. pod name */
        usec_t lease_duration; /* 0: 15 s */
        usec_t renew_deadline; /* 0: 10 s: give up leadership if renewals fail this long */
        usec_t retry_period;   /* 0: 2 s */
        /* Called on the elector's thread when leadership is gained / lost. */
        void (*on_started_leading)(void *userdata);
        void (*on_stopped_leading)(void *userdata);
        void *userdata;
} kube_elector_options;

int kube_elector_new(kube_client *c, const kube_elector_options *opts, kube_elector **ret, vt_error **err);
int kube_elector_start(kube_elector *e, vt_error **err);
/* Stops campaigning and releases the lease if held. */
void kube_elector_stop(kube_elector *e);
void kube_elector_free(kube_elector *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_elector *, kube_elector_free)
bool kube_elector_is_leader(kube_elector *e);
