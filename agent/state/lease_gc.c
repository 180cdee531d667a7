/* SPDX-License-Identifier: Apache-2.0 */
#include "lease_gc.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hashmap.h"
#include "base/log.h"
#include "resources.h"

/* A Lease seen without a VM: since when (our clock) at this resourceVersion. */
typedef struct sighting {
        char *rv;
        usec_t since;
} sighting;

struct state_lease_gc {
        char *namespace;
        usec_t duration;
        pthread_mutex_t lock;
        vt_hashmap *seen; /* Lease name -> sighting */
};

static void sighting_free(void *p) {
        sighting *s = p;
        if (!s)
                return;
        free(s->rv);
        free(s);
}

state_lease_gc *state_lease_gc_new(const char *namespace, usec_t lease_duration) {
        state_lease_gc *gc = xnew(state_lease_gc, 1);
        gc->namespace = xstrdup(namespace);
        gc->duration = lease_duration;
        pthread_mutex_init(&gc->lock, NULL);
        gc->seen = vt_hashmap_new(sighting_free);
        return gc;
}

void state_lease_gc_free(state_lease_gc *gc) {
        if (!gc)
                return;
        vt_hashmap_free(gc->seen);
        pthread_mutex_destroy(&gc->lock);
        free(gc->namespace);
        free(gc);
}

void state_lease_gc_reset(state_lease_gc *gc) {
        pthread_mutex_lock(&gc->lock);
        vt_hashmap_clear(gc->seen);
        pthread_mutex_unlock(&gc->lock);
}

usec_t state_lease_gc_period(const state_lease_gc *gc) {
        return gc->duration;
}

/* A Kubernetes uid: 36 characters of hex digits and dashes. Anything else
 * under the prefix is not ours to collect. */
const char *state_lease_vm_uid(const char *name) {
        size_t n = strlen(STATE_LEASE_PREFIX);
        if (!name || strncmp(name, STATE_LEASE_PREFIX, n) != 0)
                return NULL;
        const char *uid = name + n;
        if (strlen(uid) != 36)
                return NULL;
        for (const char *p = uid; *p; p++)
                if (!isxdigit((unsigned char)*p) && *p != '-')
                        return NULL;
        return uid;
}

static void collect_vm_uid(const char *key, json_t *vm, void *ud) {
        const char *uid = json_string_value(json_object_get(json_object_get(vm, "metadata"), "uid"));
        if (uid)
                vt_hashmap_put(ud, uid, (void *)1);
}

struct orphans {
        vt_hashmap *vm_uids;
        char **names, **rvs;
        size_t n, alloc_names, alloc_rvs;
};

/* Under the Lease cache's read lock: collect, call nothing. */
static void collect_orphan(const char *key, json_t *lease, void *ud) {
        struct orphans *o = ud;
        json_t *md = json_object_get(lease, "metadata");
        const char *name = json_string_value(json_object_get(md, "name"));
        const char *rv = json_string_value(json_object_get(md, "resourceVersion"));
        const char *uid = state_lease_vm_uid(name);
        if (!uid || !rv || vt_hashmap_contains(o->vm_uids, uid))
                return;
        o->names = xgrow(o->names, &o->alloc_names, o->n + 1, sizeof(char *));
        o->rvs = xgrow(o->rvs, &o->alloc_rvs, o->n + 1, sizeof(char *));
        o->names[o->n] = xstrdup(name);
        o->rvs[o->n++] = xstrdup(rv);
}

static bool delete_lease(state_lease_gc *gc, const state_ctx *ctx, const char *name, const char *rv) {
        _cleanup_free_ char *path = kube_path(&res_lease, gc->namespace, name, NULL);
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_delete(ctx->client, path, NULL, rv, NULL, &err);
        if (r == -ENOENT)
                return true;
        if (r < 0) {
                /* Changed since we looked (the precondition), or the API server
                 * is unwell: the next sweep looks again. */
                log_kv(LOG_LEVEL_INFO, "state Lease of a deleted VM not removed; will look again", "lease", name,
                       "error", err ? err->msg : "?", NULL);
                return false;
        }
        atomic_fetch_add(&ctx->counters->leases_deleted, 1);
        log_kv(LOG_LEVEL_INFO, "removed the state Lease of a deleted VM", "lease", name, NULL);
        return true;
}

void state_lease_gc_observe(state_lease_gc *gc, char *const *names, char *const *rvs, size_t n, usec_t now,
                           bool *ret_due) {
        pthread_mutex_lock(&gc->lock);
        /* Only the orphans of this sweep are kept: a Lease whose VM is back
         * (a cache that was behind) or that is gone is forgotten. */
        vt_hashmap *seen = vt_hashmap_new(sighting_free);
        for (size_t i = 0; i < n; i++) {
                sighting *s = vt_hashmap_steal(gc->seen, names[i]);
                if (!s || strcmp(s->rv, rvs[i]) != 0) {
                        sighting_free(s);
                        s = xnew(sighting, 1);
                        s->rv = xstrdup(rvs[i]);
                        s->since = now;
                }
                ret_due[i] = now - s->since >= 2 * gc->duration;
                vt_hashmap_put(seen, names[i], s);
        }
        vt_hashmap_free(gc->seen);
        gc->seen = seen;
        pthread_mutex_unlock(&gc->lock);
}

static void forget(state_lease_gc *gc, const char *name) {
        pthread_mutex_lock(&gc->lock);
        vt_hashmap_remove(gc->seen, name);
        pthread_mutex_unlock(&gc->lock);
}

unsigned state_lease_gc_sweep(state_lease_gc *gc, const state_ctx *ctx, kube_informer *leases, kube_informer *vms,
                              usec_t now) {
        struct orphans o = {.vm_uids = vt_hashmap_new(NULL)};
        kube_informer_foreach(vms, collect_vm_uid, o.vm_uids);
        kube_informer_foreach(leases, collect_orphan, &o);
        vt_hashmap_free(o.vm_uids);

        bool *due = xnew(bool, o.n + 1);
        state_lease_gc_observe(gc, o.names, o.rvs, o.n, now, due);
        unsigned deleted = 0;
        for (size_t i = 0; i < o.n; i++) {
                if (due[i] && delete_lease(gc, ctx, o.names[i], o.rvs[i])) {
                        forget(gc, o.names[i]);
                        deleted++;
                }
                free(o.names[i]);
                free(o.rvs[i]);
        }
        free(due);
        free(o.names);
        free(o.rvs);
        return deleted;
}
