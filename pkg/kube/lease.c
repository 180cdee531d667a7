/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/lease.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/stopper.h"

static const kube_resource lease_res = {"coordination.k8s.io", "v1", "leases", true};

struct kube_lease {
        kube_client *client;
        char *namespace, *name, *identity, *path;
        usec_t duration;
        pthread_mutex_t lock; /* one request sequence at a time */
        /* what we last saw of someone else's record, by our own clock */
        char *observed_rv;
        usec_t observed_at;
        /* The Lease as our own last successful write returned it: while we
         * hold it, the next renewal is an UPDATE with its resourceVersion,
         * without a GET first (one request per renewal, not two). Dropped on
         * any failure; a Conflict means someone else wrote: read it afresh. */
        json_t *last;
        bool released; /* kube_lease_release() was called: renewals stop */
};

int kube_lease_new(kube_client *c, const kube_lease_options *o, kube_lease **ret, vt_error **err) {
        assert_return(c && o && ret, -EINVAL);
        if (!o->namespace || !o->name || !o->identity || !*o->identity)
                return vt_error_set(err, EINVAL, "a lease needs a namespace, name and identity");
        if (o->duration < USEC_PER_SEC)
                return vt_error_set(err, EINVAL, "a lease lasts at least one second");
        kube_lease *l = xnew(kube_lease, 1);
        l->client = c;
        l->namespace = xstrdup(o->namespace);
        l->name = xstrdup(o->name);
        l->identity = xstrdup(o->identity);
        l->path = kube_path(&lease_res, o->namespace, o->name, NULL);
        l->duration = o->duration;
        pthread_mutex_init(&l->lock, NULL);
        *ret = l;
        return 0;
}

void kube_lease_free(kube_lease *l) {
        if (!l)
                return;
        pthread_mutex_destroy(&l->lock);
        free(l->namespace);
        free(l->name);
        free(l->identity);
        free(l->path);
        free(l->observed_rv);
        json_decref(l->last);
        free(l);
}

static json_t *lease_spec(kube_lease *l, const char *acquire_time, int transitions) {
        char now[40];
        format_rfc3339_micro(now_realtime(), now);
        return json_pack("{s:s, s:s, s:s, s:i, s:I}", "holderIdentity", l->identity, "acquireTime",
                         acquire_time ? acquire_time : now, "renewTime", now, "leaseTransitions", transitions,
                         "leaseDurationSeconds", (json_int_t)(l->duration / USEC_PER_SEC));
}

static void forget_last(kube_lease *l) {
        json_decref(l->last);
        l->last = NULL;
}

static void clear_error(vt_error **err) {
        if (err && *err) {
                vt_error_free(*err);
                *err = NULL;
        }
}

static const char *spec_holder(json_t *lease) {
        return json_string_value(json_object_get(json_object_get(lease, "spec"), "holderIdentity"));
}

/* GET the record: 1 and *ret, 0 when there is none, < 0 error. */
static int read_record(kube_client *c, const char *path, json_t **ret, vt_error **err) {
        int r = kube_get(c, path, ret, err);
        if (r == -ENOENT) {
                clear_error(err);
                return 0;
        }
        return r < 0 ? r : 1;
}

/* Write our spec into `cur` (the Lease as read, or as our last write returned
 * it; its resourceVersion makes the write conditional), keeping `acquired`
 * (NULL: now) and `transitions`. 1 written (l->last is the answer, *started
 * when the request was sent), 0 Conflict: someone wrote in between, < 0
 * error. Takes cur. */
static int write_spec(kube_lease *l, json_t *cur, const char *acquired, int transitions, usec_t *started,
                      vt_error **err) {
        /* lease_spec copies the acquire time before spec is replaced */
        json_object_set_new(cur, "spec", lease_spec(l, acquired, transitions));
        json_t *updated = NULL;
        *started = now_boottime();
        int r = kube_update(l->client, l->path, cur, &updated, err);
        json_decref(cur);
        if (r == -ESTALE) {
                clear_error(err);
                return 0;
        }
        if (r < 0)
                return r;
        l->last = updated;
        return 1;
}

/* Renew a record that names us, keeping its acquire time and transitions. */
static int renew_record(kube_lease *l, json_t *cur, usec_t *started, vt_error **err) {
        json_t *spec = json_object_get(cur, "spec");
        const char *acquired = json_string_value(json_object_get(spec, "acquireTime"));
        int transitions = (int)json_integer_value(json_object_get(spec, "leaseTransitions"));
        return write_spec(l, cur, acquired, transitions, started, err);
}

/* Renew from the remembered object, without a GET: 1 renewed, 0 conflict
 * (read afresh), < 0 error. */
static int renew_from_last(kube_lease *l, usec_t *started, vt_error **err) {
        json_t *cur = json_deep_copy(l->last);
        forget_last(l);
        return renew_record(l, cur, started, err);
}

/* No record yet: create it. 1 ours, 0 someone else created it first. */
static int create_record(kube_lease *l, usec_t *started, vt_error **err) {
        json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s}, s:o}", "apiVersion", "coordination.k8s.io/v1", "kind",
                                "Lease", "metadata", "name", l->name, "namespace", l->namespace, "spec",
                                lease_spec(l, NULL, 0));
        _cleanup_free_ char *coll = kube_path(&lease_res, l->namespace, NULL, NULL);
        json_t *created = NULL;
        *started = now_boottime();
        int r = kube_create(l->client, coll, obj, &created, err);
        json_decref(obj);
        if (r == -EEXIST) {
                clear_error(err);
                return 0;
        }
        if (r < 0)
                return r;
        l->last = created;
        return 1;
}

/* Someone else's record (or a released one): may we take it over? Tracks,
 * by our clock, when it last changed. true to take it; false with
 * *ret_holder and *ret_wait (both optional) as kube_lease_try says. */
static bool may_take_over(kube_lease *l, json_t *cur, kube_lease_may_take may_take, void *userdata,
                          char **ret_holder, usec_t *ret_wait) {
        const char *rv = json_string_value(json_object_get(json_object_get(cur, "metadata"), "resourceVersion"));
        const char *holder = spec_holder(cur);
        json_int_t dur = json_integer_value(json_object_get(json_object_get(cur, "spec"), "leaseDurationSeconds"));
        usec_t now = now_boottime();
        if (!l->observed_rv || !rv || strcmp(l->observed_rv, rv) != 0) {
                free(l->observed_rv);
                l->observed_rv = rv ? xstrdup(rv) : NULL;
                l->observed_at = now;
        }
        if (!holder || !*holder)
                return true; /* released */
        /* The holder's own duration (it fences itself by it); ours for
         * records written without one. */
        usec_t d = dur > 0 ? (usec_t)dur * USEC_PER_SEC : l->duration;
        usec_t seen = now - l->observed_at;
        if (seen >= d && (!may_take || may_take(holder, userdata)))
                return true;
        if (ret_holder)
                *ret_holder = xstrdup(holder);
        if (ret_wait)
                *ret_wait = seen < d ? d - seen : 0;
        return false;
}

static int try_locked(kube_lease *l, kube_lease_may_take may_take, void *userdata, usec_t *ret_started,
                      char **ret_holder, usec_t *ret_wait, vt_error **err) {
        usec_t started = 0;
        int r = 0;
        if (l->last)
                r = renew_from_last(l, &started, err); /* 0: someone wrote in between; judge from a fresh read */
        if (r == 0) {
                json_t *cur = NULL;
                r = read_record(l->client, l->path, &cur, err);
                if (r == 0)
                        r = create_record(l, &started, err);
                else if (r > 0) {
                        const char *holder = spec_holder(cur);
                        if (holder && strcmp(holder, l->identity) == 0)
                                r = renew_record(l, cur, &started, err);
                        else if (may_take_over(l, cur, may_take, userdata, ret_holder, ret_wait)) {
                                int transitions = (int)json_integer_value(
                                        json_object_get(json_object_get(cur, "spec"), "leaseTransitions"));
                                r = write_spec(l, cur, NULL, transitions + 1, &started, err);
                        } else {
                                json_decref(cur);
                                return 0;
                        }
                }
                if (r == 0 && ret_wait)
                        *ret_wait = l->duration; /* lost a race: judged at the next try */
        }
        if (r <= 0)
                return r;
        free(l->observed_rv);
        l->observed_rv = NULL;
        if (ret_started)
                *ret_started = started;
        return 1;
}

int kube_lease_try(kube_lease *l, kube_lease_may_take may_take, void *userdata, usec_t *ret_started,
                   char **ret_holder, usec_t *ret_wait, vt_error **err) {
        assert_return(l, -EINVAL);
        pthread_mutex_lock(&l->lock);
        l->released = false;
        int r = try_locked(l, may_take, userdata, ret_started, ret_holder, ret_wait, err);
        if (r < 0)
                forget_last(l);
        pthread_mutex_unlock(&l->lock);
        return r;
}

static int renew_locked(kube_lease *l, usec_t *ret_started, vt_error **err) {
        usec_t started = 0;
        int r = 0;
        if (l->released)
                return 0;
        if (l->last)
                r = renew_from_last(l, &started, err);
        if (r == 0) {
                json_t *cur = NULL;
                r = kube_get(l->client, l->path, &cur, err);
                if (r < 0)
                        return r;
                const char *holder = spec_holder(cur);
                if (!holder || strcmp(holder, l->identity) != 0) {
                        json_decref(cur);
                        return 0; /* someone else's now (or released): not renewed */
                }
                r = renew_record(l, cur, &started, err);
        }
        if (r > 0 && ret_started)
                *ret_started = started;
        return r;
}

int kube_lease_renew(kube_lease *l, usec_t *ret_started, vt_error **err) {
        assert_return(l, -EINVAL);
        pthread_mutex_lock(&l->lock);
        int r = renew_locked(l, ret_started, err);
        if (r < 0)
                forget_last(l);
        pthread_mutex_unlock(&l->lock);
        return r;
}

/* holderIdentity "" and a duration of one second: a candidate takes it at
 * its next try. Takes cur. */
static int write_released(kube_lease *l, json_t *cur, vt_error **err) {
        json_t *spec = json_object_get(cur, "spec");
        json_object_set_new(spec, "holderIdentity", json_string(""));
        json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
        int r = kube_update(l->client, l->path, cur, NULL, err);
        json_decref(cur);
        return r;
}

static int release_locked(kube_lease *l, vt_error **err) {
        l->released = true;
        if (l->last) {
                /* Usually the record is still as our last renewal left it: no GET. */
                json_t *cur = json_deep_copy(l->last);
                forget_last(l);
                int r = write_released(l, cur, err);
                if (r != -ESTALE)
                        return r;
                clear_error(err);
        }
        json_t *cur = NULL;
        int r = read_record(l->client, l->path, &cur, err);
        if (r <= 0)
                return r;
        const char *holder = spec_holder(cur);
        if (holder && strcmp(holder, l->identity) == 0)
                return write_released(l, cur, err);
        json_decref(cur);
        return 0;
}

int kube_lease_release(kube_lease *l, vt_error **err) {
        assert_return(l, -EINVAL);
        pthread_mutex_lock(&l->lock);
        int r = release_locked(l, err);
        pthread_mutex_unlock(&l->lock);
        return r;
}

int kube_lease_holder(kube_client *c, const char *namespace, const char *name, char **ret_holder,
                      vt_error **err) {
        assert_return(c && namespace && name && ret_holder, -EINVAL);
        _cleanup_free_ char *path = kube_path(&lease_res, namespace, name, NULL);
        json_t *cur = NULL;
        int r = read_record(c, path, &cur, err);
        if (r <= 0)
                return r;
        const char *holder = spec_holder(cur);
        *ret_holder = xstrdup(holder ? holder : "");
        json_decref(cur);
        return 1;
}

/* ---- leader election ---- */

struct kube_elector {
        kube_elector_options o;
        char *namespace, *name, *identity;
        kube_lease *lease;
        pthread_t thread;
        bool started;
        atomic_bool leader;
        vt_stopper stopper;
        usec_t last_renew; /* CLOCK_BOOTTIME when our last successful renewal was sent */
};

int kube_elector_new(kube_client *c, const kube_elector_options *opts, kube_elector **ret, vt_error **err) {
        assert_return(c && opts && ret, -EINVAL);
        if (!opts->namespace || !opts->name || !opts->identity || !*opts->identity)
                return vt_error_set(err, EINVAL, "leader election needs a lease namespace, name and identity");
        kube_elector *e = xnew(kube_elector, 1);
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
        kube_lease_options lo = {.namespace = e->namespace, .name = e->name, .identity = e->identity,
                                 .duration = e->o.lease_duration};
        int r = kube_lease_new(c, &lo, &e->lease, err);
        if (r < 0) {
                free(e->namespace);
                free(e->name);
                free(e->identity);
                free(e);
                return r;
        }
        vt_stopper_init(&e->stopper);
        *ret = e;
        return 0;
}

void kube_elector_free(kube_elector *e) {
        if (!e)
                return;
        kube_elector_stop(e);
        kube_lease_free(e->lease);
        vt_stopper_done(&e->stopper);
        free(e->namespace);
        free(e->name);
        free(e->identity);
        free(e);
}

bool kube_elector_is_leader(kube_elector *e) {
        return atomic_load(&e->leader);
}

static void *elector_thread(void *userdata) {
        kube_elector *e = userdata;
        while (!vt_stopper_stopped(&e->stopper)) {
                usec_t started = 0;
                _cleanup_error_ vt_error *err = NULL;
                int r = kube_lease_try(e->lease, NULL, NULL, &started, NULL, NULL, &err);
                if (e->o.on_attempt) {
                        _cleanup_error_ vt_error *unknown = NULL;
                        if (r < 0 && !err)
                                (void)vt_error_errno(&unknown, -r, "cannot reach the Lease %s/%s", e->namespace,
                                                     e->name);
                        e->o.on_attempt(r < 0 ? (err ?: unknown) : NULL, e->o.userdata);
                }
                if (r == 1) {
                        e->last_renew = started;
                        if (!atomic_exchange(&e->leader, true) && e->o.on_started_leading)
                                e->o.on_started_leading(e->o.userdata);
                } else if (atomic_load(&e->leader) &&
                           (r == 0 || now_boottime() - e->last_renew > e->o.renew_deadline)) {
                        /* Someone else holds it, or we could not renew in time. */
                        atomic_store(&e->leader, false);
                        if (e->o.on_stopped_leading)
                                e->o.on_stopped_leading(e->o.userdata);
                }
                if (vt_stopper_sleep(&e->stopper, e->o.retry_period))
                        break;
        }
        if (atomic_exchange(&e->leader, false)) {
                (void)kube_lease_release(e->lease, NULL);
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
        vt_stopper_stop(&e->stopper);
        pthread_join(e->thread, NULL);
        e->started = false;
}
