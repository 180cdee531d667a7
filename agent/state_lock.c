/* SPDX-License-Identifier: Apache-2.0 */
#include "state_lock.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/hashmap.h"
#include "base/log.h"
#include "base/stopper.h"
#include "kube/lease.h"
#include "resources.h"

/* How often the deadlines are looked at: a fence starts at most this late. */
#define WATCH_USEC (200 * USEC_PER_MSEC)

typedef struct entry {
        int ref;                  /* under state_lock.lock */
        char *vm_uid, *identity;
        kube_lease *lease;
        bool held;                /* renewed; its deadline watched */
        bool lost;                /* a renewal found the record someone else's */
        bool fenced;              /* its swtpm was stopped for want of renewals */
        usec_t last_renew;        /* CLOCK_BOOTTIME: last successful renewal sent */
        pid_t swtpm_pid;
        uint64_t swtpm_start;
        char *ctrl_via;
        pthread_t fence_thread;
        bool fence_joinable;
        state_lock_fence fence;   /* what the fence thread stops (points into the entry) */
        struct state_lock *owner;
} entry;

struct state_lock {
        kube_client *client;
        state_lock_options o;
        char *namespace, *run_dir, *times_path;
        pthread_mutex_t lock;
        vt_stopper stopper;       /* ends the renewal and deadline threads */
        vt_hashmap *entries;      /* "<vm uid> <identity>" -> entry */
        json_t *times;            /* persisted renewal times, as loaded */
        pthread_t renewer, watcher;
        bool started;
};

static char *entry_key(const char *vm_uid, const char *identity) {
        return xasprintf("%s %s", vm_uid, identity);
}

static char *lease_name(const char *vm_uid) {
        return xasprintf("vtpm-state-%s", vm_uid);
}

static void entry_unref_locked(entry *e) {
        if (!e || --e->ref > 0)
                return;
        kube_lease_free(e->lease);
        free(e->vm_uid);
        free(e->identity);
        free(e->ctrl_via);
        free(e);
}

static void entry_drop(void *p) {
        entry_unref_locked(p);
}

int state_lock_new(kube_client *c, const state_lock_options *o, state_lock **ret, vt_error **err) {
        assert_return(c && o && ret && o->namespace && o->run_dir, -EINVAL);
        if (o->duration < 2 * USEC_PER_SEC || o->renew_deadline >= o->duration || o->retry_period >= o->renew_deadline ||
            !o->retry_period)
                return vt_error_set(err, EINVAL, "the state lease needs retry period < renew deadline < duration");
        state_lock *s = xnew(state_lock, 1);
        s->client = c;
        s->o = *o;
        s->namespace = xstrdup(o->namespace);
        s->o.namespace = s->namespace;
        s->run_dir = xstrdup(o->run_dir);
        s->o.run_dir = s->run_dir;
        s->times_path = xasprintf("%s/state-leases.json", o->run_dir);
        s->entries = vt_hashmap_new(entry_drop);
        s->times = json_load_file(s->times_path, 0, NULL);
        if (!json_is_object(s->times)) {
                json_decref(s->times);
                s->times = json_object();
        }
        pthread_mutex_init(&s->lock, NULL);
        vt_stopper_init(&s->stopper);
        *ret = s;
        return 0;
}

/* Under s->lock: the entry for this launcher, made if need be; a reference for the caller. */
static entry *entry_get(state_lock *s, const char *vm_uid, const char *identity, bool create) {
        _cleanup_free_ char *key = entry_key(vm_uid, identity);
        entry *e = vt_hashmap_get(s->entries, key);
        if (!e && create) {
                _cleanup_free_ char *name = lease_name(vm_uid);
                kube_lease_options lo = {.namespace = s->namespace, .name = name, .identity = identity,
                                         .duration = s->o.duration};
                kube_lease *l = NULL;
                if (kube_lease_new(s->client, &lo, &l, NULL) < 0)
                        return NULL;
                e = xnew(entry, 1);
                e->ref = 1;
                e->vm_uid = xstrdup(vm_uid);
                e->identity = xstrdup(identity);
                e->lease = l;
                e->owner = s;
                vt_hashmap_put(s->entries, key, e);
        }
        if (e)
                e->ref++;
        return e;
}

static void entry_put(state_lock *s, entry *e) {
        pthread_mutex_lock(&s->lock);
        entry_unref_locked(e);
        pthread_mutex_unlock(&s->lock);
}

/* Under s->lock: remember the renewal times of the leases we hold, so the next
 * agent on this node keeps their deadlines (CLOCK_BOOTTIME is the node's, not
 * the process's). */
static void times_save_locked(state_lock *s) {
        json_t *t = json_object();
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(s->entries, &it, &k, &v);) {
                entry *e = v;
                if (e->held)
                        json_object_set_new(t, k, json_integer((json_int_t)e->last_renew));
        }
        if (json_equal(t, s->times)) {
                json_decref(t);
                return;
        }
        _cleanup_free_ char *text = json_dumps(t, JSON_COMPACT);
        _cleanup_error_ vt_error *err = NULL;
        (void)mkdir(s->run_dir, 0711);
        if (write_file_atomic(s->times_path, text, strlen(text), 0600, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot record the state leases' renewal times; a restarted agent stops "
                                       "their swtpm at once", "error", err->msg, NULL);
        json_decref(s->times);
        s->times = t;
}

/* ---- taking it ---- */

/* Does the launcher named by a holder identity (node/ns/pod/pod-uid) still
 * exist? An error counts as yes: never take over on doubt. */
static bool holder_launcher_exists(state_lock *s, const char *holder, char **ret_who) {
        _cleanup_free_ char *h = xstrdup(holder);
        char *p1 = strchr(h, '/'), *p2 = p1 ? strchr(p1 + 1, '/') : NULL, *p3 = p2 ? strchr(p2 + 1, '/') : NULL;
        if (!p1 || !p2 || !p3) {
                if (ret_who)
                        *ret_who = xasprintf("\"%s\"", holder);
                return true;
        }
        *p1 = *p2 = *p3 = '\0';
        if (ret_who)
                *ret_who = xasprintf("launcher %s/%s on node %s", p1 + 1, p2 + 1, h);
        _cleanup_free_ char *path = kube_path(&res_pod, p1 + 1, p2 + 1, NULL);
        json_t *pod = NULL;
        int r = kube_get(s->client, path, &pod, NULL);
        const char *uid = json_string_value(json_object_get(json_object_get(pod, "metadata"), "uid"));
        const char *phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
        bool live = r == 0 && uid && strcmp(uid, p3 + 1) == 0 &&
                    !(phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0));
        json_decref(pod);
        return live || (r < 0 && r != -ENOENT);
}

static bool may_take(const char *holder, void *userdata) {
        return !holder_launcher_exists(userdata, holder, NULL);
}

int state_lock_acquire(state_lock *s, const char *vm_uid, const char *identity, char **ret_holder,
                       usec_t *ret_wait, vt_error **err) {
        pthread_mutex_lock(&s->lock);
        entry *e = entry_get(s, vm_uid, identity, true);
        bool held = e && e->held, lost = e && e->lost;
        pthread_mutex_unlock(&s->lock);
        if (!e)
                return vt_error_set(err, EINVAL, "cannot make the state lock for VM %s", vm_uid);
        if (held) {
                entry_put(s, e);
                /* Lost, and about to be fenced: asked again once that is done. */
                return lost ? -EAGAIN : 0;
        }
        usec_t started = 0, wait = 0;
        _cleanup_free_ char *holder = NULL;
        int r = kube_lease_try(e->lease, may_take, s, &started, &holder, &wait, err);
        if (r < 0) {
                _cleanup_free_ char *name = lease_name(vm_uid);
                vt_error_prefix(err, r, "the state lock %s: ", name);
        } else if (r > 0) {
                pthread_mutex_lock(&s->lock);
                e->held = true;
                e->lost = false;
                e->last_renew = started;
                times_save_locked(s);
                pthread_mutex_unlock(&s->lock);
                r = 0;
        } else if (!holder) {
                /* Created by someone else just now: judged at the next try. */
                if (ret_holder)
                        *ret_holder = xstrdup("another launcher (the lock was just taken)");
                if (ret_wait)
                        *ret_wait = wait;
                r = -EINPROGRESS;
        } else {
                _cleanup_free_ char *who = NULL;
                bool live = holder_launcher_exists(s, holder, &who);
                if (ret_holder)
                        *ret_holder = TAKE_PTR(who);
                if (ret_wait)
                        *ret_wait = wait;
                r = live ? -EBUSY : -EINPROGRESS;
        }
        entry_put(s, e);
        return r;
}

bool state_lock_fresh(state_lock *s, const char *vm_uid, const char *identity, usec_t min_left) {
        pthread_mutex_lock(&s->lock);
        entry *e = entry_get(s, vm_uid, identity, false);
        bool fresh = e && e->held && !e->lost && now_boottime() - e->last_renew + min_left < s->o.renew_deadline;
        if (e)
                entry_unref_locked(e);
        pthread_mutex_unlock(&s->lock);
        return fresh;
}

static void set_swtpm(entry *e, pid_t pid, uint64_t start_time, const char *ctrl_via) {
        e->swtpm_pid = pid;
        e->swtpm_start = start_time;
        free(e->ctrl_via);
        e->ctrl_via = ctrl_via ? xstrdup(ctrl_via) : NULL;
}

int state_lock_attach_swtpm(state_lock *s, const char *vm_uid, const char *identity, pid_t pid,
                            uint64_t start_time, const char *ctrl_via) {
        pthread_mutex_lock(&s->lock);
        entry *e = entry_get(s, vm_uid, identity, false);
        int r = -ESTALE;
        if (e && e->held && !e->lost) {
                set_swtpm(e, pid, start_time, ctrl_via);
                r = 0;
        }
        if (e)
                entry_unref_locked(e);
        pthread_mutex_unlock(&s->lock);
        return r;
}

void state_lock_adopt(state_lock *s, const char *vm_uid, const char *identity, pid_t pid, uint64_t start_time,
                      const char *ctrl_via) {
        pthread_mutex_lock(&s->lock);
        entry *e = entry_get(s, vm_uid, identity, true);
        if (e) {
                _cleanup_free_ char *key = entry_key(vm_uid, identity);
                json_t *t = json_object_get(s->times, key);
                usec_t now = now_boottime();
                /* No time recorded: the previous agent predates lease renewals (it
                 * never renewed, and takers wait a whole duration from their own
                 * first sight of the record). Renewals start now. */
                e->last_renew = json_is_integer(t) && (usec_t)json_integer_value(t) <= now
                                        ? (usec_t)json_integer_value(t)
                                        : now;
                e->held = true;
                set_swtpm(e, pid, start_time, ctrl_via);
                entry_unref_locked(e);
        }
        pthread_mutex_unlock(&s->lock);
}

bool state_lock_fenced(state_lock *s, const char *vm_uid, const char *identity) {
        pthread_mutex_lock(&s->lock);
        entry *e = entry_get(s, vm_uid, identity, false);
        bool fenced = e && e->fenced;
        if (e)
                entry_unref_locked(e);
        pthread_mutex_unlock(&s->lock);
        return fenced;
}

int state_lock_names(state_lock *s, const char *vm_uid, const char *identity) {
        _cleanup_free_ char *name = lease_name(vm_uid);
        _cleanup_free_ char *holder = NULL;
        int r = kube_lease_holder(s->client, s->namespace, name, &holder, NULL);
        if (r <= 0)
                return r;
        return strcmp(holder, identity) == 0;
}

static void join_fence(entry *e) {
        if (e->fence_joinable) {
                pthread_join(e->fence_thread, NULL);
                e->fence_joinable = false;
        }
}

void state_lock_release(state_lock *s, const char *vm_uid, const char *identity) {
        _cleanup_free_ char *key = entry_key(vm_uid, identity);
        pthread_mutex_lock(&s->lock);
        entry *e = vt_hashmap_steal(s->entries, key);
        if (e)
                e->held = false;
        times_save_locked(s);
        pthread_mutex_unlock(&s->lock);
        kube_lease *l = e ? e->lease : NULL;
        _cleanup_(kube_lease_freep) kube_lease *own = NULL;
        if (!l) {
                /* Not known to this agent (e.g. a launcher record from before a
                 * restart that never held it): release whatever is ours. */
                _cleanup_free_ char *name = lease_name(vm_uid);
                kube_lease_options lo = {.namespace = s->namespace, .name = name, .identity = identity,
                                         .duration = s->o.duration};
                if (kube_lease_new(s->client, &lo, &own, NULL) < 0)
                        return;
                l = own;
        }
        if (e)
                join_fence(e);
        _cleanup_error_ vt_error *err = NULL;
        if (kube_lease_release(l, &err) < 0)
                log_kv(LOG_LEVEL_INFO, "could not release a state lock; it expires by itself", "vm", vm_uid, "error",
                       err ? err->msg : "unknown", NULL);
        if (e)
                entry_put(s, e);
}

/* ---- keeping it ---- */

/* Under s->lock: references to the entries to renew. */
static entry **held_entries(state_lock *s, size_t *ret_n) {
        size_t n = 0, cap = vt_hashmap_size(s->entries);
        entry **v = xnew(entry *, cap + 1);
        const char *k;
        void *p;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(s->entries, &it, &k, &p);) {
                entry *e = p;
                if (e->held && !e->lost && n < cap) {
                        e->ref++;
                        v[n++] = e;
                }
        }
        *ret_n = n;
        return v;
}

static void *renewer(void *userdata) {
        state_lock *s = userdata;
        while (!vt_stopper_stopped(&s->stopper)) {
                size_t n;
                pthread_mutex_lock(&s->lock);
                entry **v = held_entries(s, &n);
                pthread_mutex_unlock(&s->lock);
                for (size_t i = 0; i < n; i++) {
                        usec_t started = 0;
                        _cleanup_error_ vt_error *err = NULL;
                        int r = vt_stopper_stopped(&s->stopper) ? -ECANCELED : kube_lease_renew(v[i]->lease, &started, &err);
                        pthread_mutex_lock(&s->lock);
                        /* A renewal that ends after the deadline passed changes nothing:
                         * the swtpm is being stopped already. */
                        if (r > 0 && v[i]->held)
                                v[i]->last_renew = started;
                        else if (r == 0 && v[i]->held) {
                                v[i]->lost = true;
                                log_kv(LOG_LEVEL_WARN, "the VM's state lock is no longer ours", "vm", v[i]->vm_uid,
                                       "launcher", v[i]->identity, NULL);
                        } else if (r < 0 && r != -ECANCELED && v[i]->held)
                                log_kv(LOG_LEVEL_WARN, "cannot renew the VM's state lock", "vm", v[i]->vm_uid, "error",
                                       err ? err->msg : strerror(-r), NULL);
                        entry_unref_locked(v[i]);
                        pthread_mutex_unlock(&s->lock);
                }
                free(v);
                pthread_mutex_lock(&s->lock);
                times_save_locked(s);
                pthread_mutex_unlock(&s->lock);
                if (vt_stopper_sleep(&s->stopper, s->o.retry_period))
                        break;
        }
        return NULL;
}

static void *fence_thread(void *userdata) {
        entry *e = userdata;
        state_lock *s = e->owner;
        s->o.fence(&e->fence, s->o.userdata);
        return NULL;
}

/* Under s->lock: the deadline of one held lease passed (or it is someone
 * else's): stop renewing it and stop its swtpm. */
static void lose_locked(state_lock *s, entry *e, usec_t since) {
        e->held = false;
        usec_t left = since < s->o.duration ? s->o.duration - since : 0;
        log_kv(LOG_LEVEL_WARN,
               e->lost ? "the VM's state lock was taken over; stopping its swtpm"
                       : "the VM's state lock could not be renewed in time; stopping its swtpm before it expires",
               "vm", e->vm_uid, "launcher", e->identity, NULL);
        if (e->swtpm_pid <= 0 || !s->o.fence)
                return;
        e->fenced = true;
        e->fence = (state_lock_fence){.vm_uid = e->vm_uid, .identity = e->identity, .swtpm_pid = e->swtpm_pid,
                                      .swtpm_start = e->swtpm_start, .ctrl_via = e->ctrl_via, .since_renewal = since,
                                      /* a second of slack for the kernel to reap it */
                                      .budget = left > USEC_PER_SEC ? left - USEC_PER_SEC : 0};
        e->swtpm_pid = 0;
        if (pthread_create(&e->fence_thread, NULL, fence_thread, e) == 0)
                e->fence_joinable = true;
        else
                s->o.fence(&e->fence, s->o.userdata); /* no thread: here, then */
}

static void *watcher(void *userdata) {
        state_lock *s = userdata;
        while (!vt_stopper_sleep(&s->stopper, WATCH_USEC)) {
                pthread_mutex_lock(&s->lock);
                usec_t now = now_boottime();
                const char *k;
                void *p;
                for (vt_hashmap_iter it = {0}; vt_hashmap_next(s->entries, &it, &k, &p);) {
                        entry *e = p;
                        if (!e->held || e->fence_joinable)
                                continue;
                        usec_t since = now > e->last_renew ? now - e->last_renew : 0;
                        if (e->lost || since > s->o.renew_deadline)
                                lose_locked(s, e, since);
                }
                pthread_mutex_unlock(&s->lock);
        }
        return NULL;
}

int state_lock_start(state_lock *s, vt_error **err) {
        assert_return(s && !s->started, -EINVAL);
        int r = pthread_create(&s->watcher, NULL, watcher, s);
        if (r != 0)
                return vt_error_errno(err, r, "cannot start the state lock's deadline thread");
        r = pthread_create(&s->renewer, NULL, renewer, s);
        if (r != 0) {
                vt_stopper_stop(&s->stopper);
                pthread_join(s->watcher, NULL);
                return vt_error_errno(err, r, "cannot start the state lock's renewal thread");
        }
        s->started = true;
        return 0;
}

void state_lock_free(state_lock *s) {
        if (!s)
                return;
        if (s->started) {
                vt_stopper_stop(&s->stopper);
                pthread_join(s->renewer, NULL);
                pthread_join(s->watcher, NULL);
        }
        const char *k;
        void *p;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(s->entries, &it, &k, &p);)
                join_fence(p);
        vt_hashmap_free(s->entries);
        json_decref(s->times);
        pthread_mutex_destroy(&s->lock);
        vt_stopper_done(&s->stopper);
        free(s->namespace);
        free(s->times_path);
        free(s->run_dir);
        free(s);
}
