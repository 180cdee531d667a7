/* SPDX-License-Identifier: Apache-2.0 */
/* A small controller runtime in the shape of controller-runtime's: a set of
 * informers, one work queue, N workers, stats, start and stop. The
 * controller supplies reconcile(key), which returns a typed outcome:
 *
 *   kube_done()             finished; the key's failure count is reset
 *   kube_requeue_after(d)   look again in d (waiting on something outside
 *                           the API: a socket, the kubelet, a lock's expiry);
 *                           not a failure
 *   kube_backoff(ceiling)   not a failure of ours (reported already, e.g. a
 *                           key provider down): per-key exponential backoff,
 *                           capped at `ceiling` (0: the queue's max_delay)
 *   kube_failed(err)        an error: on_failure(key, err, retry_in) is told
 *                           (the controller logs; this library does not) and
 *                           the key is retried with backoff
 *
 * Nothing is signalled through errno values: a library call that returns
 * -EAGAIN is an error like any other unless the controller decides
 * otherwise.
 *
 * Workers run only while `gate` (optional) says so, e.g. while leading: a
 * key handed to a worker of a gated controller is dropped (the next leader
 * enqueues everything). Informers run from start to stop either way, so a
 * stand-by keeps warm caches.
 *
 *     kube_controller_ops ops = {.name = "state", .reconcile = reconcile, .on_failure = log_failure, .userdata = sc};
 *     kube_controller_new(&ops, &opts, &ctl);
 *     kube_controller_add_informer(ctl, vm_informer);      // owned from now on
 *     kube_controller_start(ctl, 300 * USEC_PER_SEC, &err);  // informers, sync, workers
 *     ...
 *     kube_controller_free(ctl);                            // stop, join, free informers
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/macro.h"
#include "base/timeutil.h"
#include "kube/informer.h"
#include "kube/workqueue.h"

typedef enum kube_outcome_kind {
        KUBE_OUTCOME_DONE,
        KUBE_OUTCOME_REQUEUE_AFTER,
        KUBE_OUTCOME_BACKOFF,
        KUBE_OUTCOME_FAILED,
} kube_outcome_kind;

typedef struct kube_outcome {
        kube_outcome_kind kind;
        usec_t after;    /* REQUEUE_AFTER: the delay; BACKOFF: the ceiling (0: none beyond the queue's) */
        vt_error *error; /* FAILED: owned by the outcome (the runtime frees it) */
} kube_outcome;

static inline kube_outcome kube_done(void) {
        return (kube_outcome){.kind = KUBE_OUTCOME_DONE};
}
static inline kube_outcome kube_requeue_after(usec_t delay) {
        return (kube_outcome){.kind = KUBE_OUTCOME_REQUEUE_AFTER, .after = delay};
}
static inline kube_outcome kube_backoff(usec_t ceiling) {
        return (kube_outcome){.kind = KUBE_OUTCOME_BACKOFF, .after = ceiling};
}
/* Takes ownership of `err` (NULL is allowed: "failed" with no message). */
static inline kube_outcome kube_failed(vt_error *err) {
        return (kube_outcome){.kind = KUBE_OUTCOME_FAILED, .error = err};
}
/* Free what an outcome owns (for code that builds one and drops it). */
void kube_outcome_done(kube_outcome *o);
const char *kube_outcome_kind_name(kube_outcome_kind k);

typedef struct kube_controller kube_controller;

typedef struct kube_controller_ops {
        const char *name; /* for error messages: "state controller" */
        kube_outcome (*reconcile)(const char *key, void *userdata);
        /* Optional: a reconcile failed; it is retried in `retry_in`. */
        void (*on_failure)(const char *key, const vt_error *err, usec_t retry_in, void *userdata);
        /* Optional: workers reconcile only while this returns true. */
        bool (*gate)(void *userdata);
        void *userdata;
} kube_controller_ops;

typedef struct kube_controller_options {
        unsigned workers;             /* 0: 1 */
        kube_workqueue_options queue; /* the work queue's backoff */
        usec_t sync_timeout;          /* how long start() waits for the caches; 0: 300 s */
} kube_controller_options;

typedef struct kube_controller_stats {
        uint64_t reconciles; /* reconcile() calls */
        uint64_t done;
        uint64_t requeues; /* REQUEUE_AFTER */
        uint64_t backoffs; /* BACKOFF */
        uint64_t failures; /* FAILED */
        uint64_t gated;    /* keys dropped because the gate was closed */
        size_t queue_depth;
} kube_controller_stats;

int kube_controller_new(const kube_controller_ops *ops, const kube_controller_options *opts,
                        kube_controller **ret, vt_error **err);
/* Stops (if started) and frees the controller and the informers it owns. */
void kube_controller_free(kube_controller *ctl);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_controller *, kube_controller_free)
#define _cleanup_controller_ _cleanup_(kube_controller_freep)

/* Hand an informer to the controller (before start): it is started, waited
 * for, stopped and freed with the controller. */
void kube_controller_add_informer(kube_controller *ctl, kube_informer *inf);
/* The same, but neither start() nor synced() waits for it: for best-effort
 * work (a periodic sweep) that must not hold the controller up when its
 * list is refused (a Role from an older release without the permission);
 * that work checks kube_informer_has_synced() itself. */
void kube_controller_add_background_informer(kube_controller *ctl, kube_informer *inf);

/* Start the informers, wait until every one has synced (-ETIMEDOUT after
 * opts.sync_timeout), then start the workers. */
int kube_controller_start(kube_controller *ctl, vt_error **err);
/* The two halves of start(), for controllers that must do something in
 * between (adopt what a previous run left): start_informers() starts them
 * and waits for them to sync; start_workers() starts the workers. */
int kube_controller_start_informers(kube_controller *ctl, vt_error **err);
int kube_controller_start_workers(kube_controller *ctl, vt_error **err);

/* Shut the queue down, join the workers, stop the informers. Idempotent. */
void kube_controller_stop(kube_controller *ctl);

bool kube_controller_synced(kube_controller *ctl);
bool kube_controller_stopping(kube_controller *ctl);

/* Queue a key now / after a delay (informer handlers and tickers use these). */
void kube_controller_enqueue(kube_controller *ctl, const char *key);
void kube_controller_enqueue_after(kube_controller *ctl, const char *key, usec_t delay);
kube_workqueue *kube_controller_queue(kube_controller *ctl);

/* Process one key with an outcome as a worker would (for tests and for
 * controllers that reconcile inline): applies the outcome to the queue and
 * the stats. The key must have come from kube_workqueue_get(). */
void kube_controller_apply_outcome(kube_controller *ctl, const char *key, kube_outcome outcome);

void kube_controller_get_stats(kube_controller *ctl, kube_controller_stats *ret);
