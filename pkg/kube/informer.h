/* SPDX-License-Identifier: Apache-2.0 */
/* An informer in the manner of client-go's: LIST (paged) then WATCH from the
 * list's resourceVersion into an in-memory cache keyed "namespace/name" (or
 * "name" for cluster-scoped objects), calling add/update/delete handlers.
 *
 * - A dropped connection resumes from the last resourceVersion seen (events
 *   and bookmarks both advance it), so nothing is lost or repeated.
 * - 410 Gone / Expired (the resourceVersion was compacted away) relists and
 *   reconciles the cache against the fresh list: handlers see exactly the
 *   adds, updates and deletes that bring the cache to the server's state.
 * - Failures back off exponentially with jitter up to a ceiling.
 * - A transform may reduce each object to the fields its controller reads
 *   before it is cached: the agent caches thousands of objects, not their
 *   whole specs.
 *
 * Handlers run on the informer's own thread, one at a time and in event
 * order; they get BORROWED objects (incref to keep) and should only enqueue
 * work. Everything else is thread-safe. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/macro.h"
#include "base/timeutil.h"
#include "kube/client.h"

typedef struct kube_informer kube_informer;

/* Objects per LIST page unless the options say otherwise. A page is held
 * whole while it is parsed: 100 VMs with 64 KiB of cloud-init data each are
 * 6.4 MiB, under KUBE_MAX_RESPONSE; larger objects split the page. */
#define KUBE_INFORMER_DEFAULT_PAGE 100

typedef struct kube_informer_handlers {
        void (*on_add)(const char *key, json_t *obj, void *userdata);
        /* Not called when the resourceVersion did not change (a relist that
         * found nothing new), except from kube_informer_resync(). */
        void (*on_update)(const char *key, json_t *old_obj, json_t *new_obj, void *userdata);
        void (*on_delete)(const char *key, json_t *last_obj, void *userdata);
        /* Optional: reduce an object to what is worth caching. Returns a new
         * reference (may be the same object incref'd). */
        json_t *(*transform)(json_t *obj, void *userdata);
        /* Optional: a list or watch attempt failed (the informer retries by
         * itself); for logs and metrics. */
        void (*on_error)(const vt_error *err, void *userdata);
        void *userdata;
} kube_informer_handlers;

typedef struct kube_informer_options {
        const char *namespace;      /* NULL: all namespaces */
        const char *label_selector; /* optional */
        const char *field_selector; /* optional */
        long page_size;             /* LIST limit per page; 0: KUBE_INFORMER_DEFAULT_PAGE (a page
                                       over KUBE_MAX_RESPONSE is split further) */
        usec_t backoff_initial;     /* 0: 800 ms */
        usec_t backoff_max;         /* 0: 30 s */
        long watch_timeout_sec;     /* server-side timeoutSeconds base; 0: 300 (randomised up to 2x) */
        const char *index_label;    /* optional: also index objects by this label's value */
        bool optional;              /* the resource type may not be served (a CRD not installed):
                                       count as synced and empty, and keep checking */
} kube_informer_options;

typedef struct kube_informer_stats {
        uint64_t lists;            /* full LISTs (initial + relists) */
        uint64_t list_pages;       /* LIST requests */
        uint64_t list_pages_split; /* pages over the response cap, asked for again in halves */
        uint64_t watches;          /* WATCH requests opened */
        uint64_t resumes;          /* watches resumed after a drop */
        uint64_t relists_gone;     /* relists caused by 410 Gone/Expired */
        uint64_t events;           /* watch events applied (not bookmarks) */
        uint64_t bookmarks;
        uint64_t errors;           /* failed list/watch attempts */
} kube_informer_stats;

int kube_informer_new(kube_client *c, const kube_resource *res, const kube_informer_options *opts,
                      const kube_informer_handlers *h, kube_informer **ret);
/* Starts the thread. */
int kube_informer_start(kube_informer *inf, vt_error **err);
/* Stops the thread (within about a second) and waits for it. */
void kube_informer_stop(kube_informer *inf);
void kube_informer_free(kube_informer *inf);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_informer *, kube_informer_free)

bool kube_informer_has_synced(kube_informer *inf);
/* Wait until the initial list is in the cache; -ETIMEDOUT after `timeout`. */
int kube_informer_wait_synced(kube_informer *inf, usec_t timeout);

/* A new reference to the cached object, or NULL. */
json_t *kube_informer_get(kube_informer *inf, const char *key);
size_t kube_informer_size(kube_informer *inf);
/* Call fn for every cached object (borrowed), under the cache's read lock:
 * fn must not call back into this informer. */
void kube_informer_foreach(kube_informer *inf, void (*fn)(const char *key, json_t *obj, void *ud), void *ud);
/* Keys (caller frees each and the array) of objects whose index_label equals value. */
size_t kube_informer_keys_by_label(kube_informer *inf, const char *value, char ***ret_keys);
/* An object's metadata.labels[label], or NULL. */
const char *kube_object_label(json_t *obj, const char *label);
/* Re-deliver every cached object as an update (old == new) from the cache:
 * no API request. */
void kube_informer_resync(kube_informer *inf);
/* The resourceVersion the cache reflects. Caller frees. */
char *kube_informer_resource_version(kube_informer *inf);
void kube_informer_get_stats(kube_informer *inf, kube_informer_stats *ret);

/* "namespace/name" or "name" for an object (caller frees); NULL if unnamed. */
char *kube_object_key(json_t *obj);
