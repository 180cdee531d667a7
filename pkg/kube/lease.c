/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/lease.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"

static const kube_resource lease_res = {"coordination.k8s.io", "v1", "leases", true};

struct kube_elector {
        kube_client *client;
        kube_elector_options o;
        char *namespace, *name, *identity;
        pthread_t thread;
        bool started;
        atomic_bool stop, leader;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        /* what we last saw of someone else's record, by our own clock */
        char *observed_rv;
        usec_t observed_at;
        usec_t last_renew; /* when we last renewed successfully */
        /* The Lease as our own last successful write returned it: while we
         * hold it, the next renewal is an UPDATE with its resourceVersion,
         * without a GET first (one request per renewal, not two). Dropped on
         * any failure; a Conflict means someone else wrote: read it afresh. */
        json_t *last;
};

int kube_elector_new(kube_client *c, const kube_elector_options *opts, kube_elector **ret, vt_error **err) {
        assert_return(c && opts && ret, -EINVAL);
        if (!opts->namespace || !opts->name || !opts->identity || !*opts->identity)
                return vt_error_set(err, EINVAL, "leader election needs a lease namespace, name and identity");
        kube_elector *e = xnew(kube_elector, 1);
        e->client = c;
        e->o = *opts;
        e->namespace = xstrdup(opts->namespace);
        e->name = xstrdup(opts->name);
        e->identity = xstrdup(opts->identity);
        e->o.namespace = e->namespace;
        e->o.name = e->name;
        e->o.identity = e->identity;
        if (!e->o.lease_duration)
                e->o.lease_duration = 15 * USEC_PER_SEC;
        if (!e->o.renew_deadline)
                e->o.renew_deadline = 10 * USEC_PER_SEC;
        if (!e->o.retry_period)
                e->o.retry_period = 2 * USEC_PER_SEC;
        pthread_mutex_init(&e->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&e->cond, &ca);
        pthread_condattr_destroy(&ca);
        *ret = e;
        return 0;
}

void kube_elector_free(kube_elector *e) {
        if (!e)
                return;
        kube_elector_stop(e);
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->cond);
        free(e->namespace);
        free(e->name);
        free(e->identity);
        free(e->observed_rv);
        json_decref(e->last);
        free(e);
}

bool kube_elector_is_leader(kube_elector *e) {
        return atomic_load(&e->leader);
}

static json_t *lease_spec(kube_elector *e, const char *acquire_time, int transitions) {
        char now[40];
        format_rfc3339_micro(now_realtime(), now);
        return json_pack("{s:s, s:s, s:s, s:i, s:I}", "holderIdentity", e->identity, "acquireTime",
                         acquire_time ? acquire_time : now, "renewTime", now, "leaseTransitions", transitions,
                         "leaseDurationSeconds", (json_int_t)(e->o.lease_duration / USEC_PER_SEC));
}

static void forget_last(kube_elector *e) {
        json_decref(e->last);
        e->last = NULL;
}

static void clear_error(vt_error **err) {
        if (err && *err) {
                vt_error_free(*err);
                *err = NULL;
        }
}

/* Renew from the remembered object: 1 renewed, 0 conflict (read afresh),
 * < 0 error. */
static int renew_from_last(kube_elector *e, const char *path, vt_error **err) {
        json_t *cur = json_deep_copy(e->last);
        forget_last(e);
        json_t *spec = json_object_get(cur, "spec");
        const char *acquired = json_string_value(json_object_get(spec, "acquireTime"));
        int transitions = (int)json_integer_value(json_object_get(spec, "leaseTransitions"));
        /* lease_spec copies the acquire time before spec is replaced */
        json_object_set_new(cur, "spec", lease_spec(e, acquired, transitions));
        json_t *updated = NULL;
        int r = kube_update(e->client, path, cur, &updated, err);
        json_decref(cur);
        if (r == -ESTALE) {
                clear_error(err);
                return 0;
        }
        if (r < 0)
                return r;
        e->last = updated;
        return 1;
}

/* One attempt to acquire or renew. Returns 1 if we hold the lease now, 0 if
 * someone else does, < 0 on error. */
static int try_acquire_or_renew(kube_elector *e, vt_error **err) {
        _cleanup_free_ char *path = kube_path(&lease_res, e->namespace, e->name, NULL);
        json_t *cur = NULL;
        int r;
        if (e->last) {
                r = renew_from_last(e, path, err);
                if (r != 0)
                        return r;
                /* Conflict: someone wrote in between; judge from a fresh read. */
        }
        r = kube_get(e->client, path, &cur, err);
        if (r == -ENOENT) {
                if (err && *err) {
                        vt_error_free(*err);
                        *err = NULL;
                }
                json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s}, s:o}", "apiVersion", "coordination.k8s.io/v1",
                                        "kind", "Lease", "metadata", "name", e->name, "namespace", e->namespace,
                                        "spec", lease_spec(e, NULL, 0));
                _cleanup_free_ char *coll = kube_path(&lease_res, e->namespace, NULL, NULL);
                json_t *created = NULL;
                r = kube_create(e->client, coll, obj, &created, err);
                json_decref(obj);
                if (r == -EEXIST)
                        return 0; /* lost the race: someone else created it */
                if (r < 0)
                        return r;
                e->last = created;
                return 1;
        }
        if (r < 0)
                return r;
        json_t *md = json_object_get(cur, "metadata");
        json_t *spec = json_object_get(cur, "spec");
        const char *rv = json_string_value(json_object_get(md, "resourceVersion"));
        const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
        json_int_t dur = json_integer_value(json_object_get(spec, "leaseDurationSeconds"));
        int transitions = (int)json_integer_value(json_object_get(spec, "leaseTransitions"));
        bool mine = holder && strcmp(holder, e->identity) == 0;
        usec_t now = now_monotonic();

        if (!mine) {
                /* Track when the record last changed, by our clock. */
                if (!e->observed_rv || !rv || strcmp(e->observed_rv, rv) != 0) {
                        free(e->observed_rv);
                        e->observed_rv = rv ? xstrdup(rv) : NULL;
                        e->observed_at = now;
                }
                bool released = !holder || !*holder;
                usec_t d = dur > 0 ? (usec_t)dur * USEC_PER_SEC : e->o.lease_duration;
                if (!released && now - e->observed_at < d) {
                        json_decref(cur);
                        return 0;
                }
                transitions++;
        }
        const char *acquired = mine ? json_string_value(json_object_get(spec, "acquireTime")) : NULL;
        json_object_set_new(cur, "spec", lease_spec(e, acquired, transitions));
        json_t *updated = NULL;
        r = kube_update(e->client, path, cur, &updated, err);
        json_decref(cur);
        if (r == -ESTALE) {
                /* Someone wrote in between: not ours this round. */
                if (err && *err) {
                        vt_error_free(*err);
                        *err = NULL;
                }
                return 0;
        }
        if (r < 0)
                return r;
        e->last = updated;
        return 1;
}

static void release(kube_elector *e) {
        _cleanup_free_ char *path = kube_path(&lease_res, e->namespace, e->name, NULL);
        json_t *cur = NULL;
        if (e->last) {
                /* Usually the record is still as our last renewal left it: no GET. */
                cur = json_deep_copy(e->last);
                forget_last(e);
                json_t *spec = json_object_get(cur, "spec");
                json_object_set_new(spec, "holderIdentity", json_string(""));
                json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
                int r = kube_update(e->client, path, cur, NULL, NULL);
                json_decref(cur);
                cur = NULL;
                if (r != -ESTALE)
                        return;
        }
        if (kube_get(e->client, path, &cur, NULL) < 0)
                return;
        json_t *spec = json_object_get(cur, "spec");
        const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
        if (holder && strcmp(holder, e->identity) == 0) {
                json_object_set_new(spec, "holderIdentity", json_string(""));
                json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
                (void)kube_update(e->client, path, cur, NULL, NULL);
        }
        json_decref(cur);
}

static bool wait_or_stop(kube_elector *e, usec_t usec) {
        struct timespec ts;
        monotonic_deadline(usec, &ts);
        pthread_mutex_lock(&e->lock);
        while (!atomic_load(&e->stop))
                if (pthread_cond_timedwait(&e->cond, &e->lock, &ts) != 0)
                        break;
        pthread_mutex_unlock(&e->lock);
        return atomic_load(&e->stop);
}

static void *elector_thread(void *userdata) {
        kube_elector *e = userdata;
        while (!atomic_load(&e->stop)) {
                int r = try_acquire_or_renew(e, NULL);
                usec_t now = now_monotonic();
                if (r == 1) {
                        e->last_renew = now;
                        if (!atomic_exchange(&e->leader, true) && e->o.on_started_leading)
                                e->o.on_started_leading(e->o.userdata);
                } else if (atomic_load(&e->leader) && (r == 0 || now - e->last_renew > e->o.renew_deadline)) {
                        /* Someone else holds it, or we could not renew in time. */
                        atomic_store(&e->leader, false);
                        if (e->o.on_stopped_leading)
                                e->o.on_stopped_leading(e->o.userdata);
                }
                if (wait_or_stop(e, e->o.retry_period))
                        break;
        }
        if (atomic_exchange(&e->leader, false)) {
                release(e);
                if (e->o.on_stopped_leading)
                        e->o.on_stopped_leading(e->o.userdata);
        }
        return NULL;
}

int kube_elector_start(kube_elector *e, vt_error **err) {
        assert_return(e && !e->started, -EINVAL);
        int r = pthread_create(&e->thread, NULL, elector_thread, e);
        if (r != 0)
                return vt_error_errno(err, r, "cannot start the leader-election thread");
        e->started = true;
        return 0;
}

void kube_elector_stop(kube_elector *e) {
        if (!e || !e->started)
                return;
        pthread_mutex_lock(&e->lock);
        atomic_store(&e->stop, true);
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->thread, NULL);
        e->started = false;
}
