/* SPDX-License-Identifier: Apache-2.0 */
/* coordination.k8s.io/v1 Leases, as client-go's leaderelection uses them.
 *
 * kube_lease is one record and one candidate for it: it creates the record,
 * renews it while it holds it, and takes it over only when the record was
 * released or has not changed for its whole leaseDurationSeconds, judged by
 * this process's own clock (CLOCK_BOOTTIME) from when it first saw that
 * version, never by comparing renewTime with our wall clock, so clock skew
 * between nodes does not matter. Writes carry the resourceVersion, so two
 * candidates can never both win. A holder that cannot renew must stop acting
 * before the record can expire: it measures its renew deadline from the
 * START of its last successful renewal request (kube_lease_try's
 * ret_started), which the server cannot have seen later than that.
 *
 * kube_elector is leader election on one such Lease: the holder renews every
 * retry period; on a clean stop it releases the lease, so a stand-by takes
 * over at its next retry instead of a lease duration later. */
#pragma once

#include <stdbool.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "kube/client.h"

typedef struct kube_lease kube_lease;

typedef struct kube_lease_options {
        const char *namespace;
        const char *name;     /* the Lease's name */
        const char *identity; /* holderIdentity written when we hold it */
        usec_t duration;      /* leaseDurationSeconds we write (whole seconds, >= 1 s); also
                               * how long a record without one is waited for */
} kube_lease_options;

int kube_lease_new(kube_client *c, const kube_lease_options *o, kube_lease **ret, vt_error **err);
void kube_lease_free(kube_lease *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_lease *, kube_lease_free)

/* Asked before a record someone else holds is taken over although it
 * expired by our clock; false leaves it to them. */
typedef bool (*kube_lease_may_take)(const char *holder, void *userdata);

/* One attempt to hold the lease: create, renew, or take over a released or
 * expired record (may_take, if set, agreeing). Returns 1 when we hold it,
 * with *ret_started (optional) the CLOCK_BOOTTIME at which the successful
 * request was sent; 0 when someone else holds it, with *ret_holder (optional,
 * caller frees) naming them and *ret_wait (optional) how long, by our clock,
 * until the record expires if it does not change (0: expired, but may_take
 * declined); < 0 on error. */
int kube_lease_try(kube_lease *l, kube_lease_may_take may_take, void *userdata, usec_t *ret_started,
                   char **ret_holder, usec_t *ret_wait, vt_error **err);

/* Renew it only if it is still ours: 1 renewed (*ret_started as above), 0
 * someone else holds it or it was released (never taken over here), < 0 on
 * error. */
int kube_lease_renew(kube_lease *l, usec_t *ret_started, vt_error **err);

/* Release it if we hold it: holderIdentity "" (a candidate takes it at once).
 * A record someone else holds now is left alone. */
int kube_lease_release(kube_lease *l, vt_error **err);

/* Who holds the Lease namespace/name as the API server has it now, without
 * being a candidate: 1 and *ret_holder (caller frees; "" when released), 0
 * when there is no such Lease, < 0 on error. */
int kube_lease_holder(kube_client *c, const char *namespace, const char *name, char **ret_holder,
                      vt_error **err);

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
        /* Called on the elector's thread after every attempt: err is why it
         * failed (e.g. -ENOENT, the Lease's namespace does not exist), NULL
         * when it held the lease or saw who does. The caller decides what to
         * log and report: the library never logs. */
        void (*on_attempt)(const vt_error *err, void *userdata);
        void *userdata;
} kube_elector_options;

int kube_elector_new(kube_client *c, const kube_elector_options *opts, kube_elector **ret, vt_error **err);
int kube_elector_start(kube_elector *e, vt_error **err);
/* Stops campaigning and releases the lease if held. */
void kube_elector_stop(kube_elector *e);
void kube_elector_free(kube_elector *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_elector *, kube_elector_free)
bool kube_elector_is_leader(kube_elector *e);
