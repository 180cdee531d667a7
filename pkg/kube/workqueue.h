/* SPDX-License-Identifier: Apache-2.0 */
/* A work queue with client-go's semantics (workqueue.TypedRateLimitingInterface):
 *
 * - keys are strings ("namespace/name"); a key is queued at most once however
 *   often it is added (de-duplication);
 * - a key handed out by get() is "processing" until done(); adding it
 *   meanwhile marks it dirty and it is queued again only at done(), so one
 *   key is NEVER processed by two workers at once;
 * - add_after() delays an add (a min-heap serviced by the waiting getters,
 *   no extra thread; a key already waiting keeps the earlier of its times);
 * - add_rate_limited() delays by the larger of a per-key exponential backoff
 *   (base * 2^failures, capped) and an overall token bucket, like client-go's
 *   DefaultTypedControllerRateLimiter (5 ms .. 1000 s, 10 qps, burst 100);
 *   forget() clears the key's failures.
 *
 *     for (;;) {
 *             _cleanup_free_ char *key = kube_workqueue_get(q);
 *             if (!key)
 *                     break;                         // shut down
 *             if (reconcile(key) < 0)
 *                     kube_workqueue_add_rate_limited(q, key);
 *             else
 *                     kube_workqueue_forget(q, key);
 *             kube_workqueue_done(q, key);
 *     }
 *
 * Unlike client-go, get() returns NULL as soon as the queue is shut down,
 * even with keys still queued: a stopping agent should not start new work
 * (the next start lists everything again). All functions are thread-safe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/macro.h"
#include "base/timeutil.h"

typedef struct kube_workqueue kube_workqueue;

typedef struct kube_workqueue_options {
        usec_t base_delay;   /* first per-key backoff; 0: 5 ms */
        usec_t max_delay;    /* backoff ceiling; 0: 1000 s */
        double qps;          /* token bucket refill rate; 0: 10 per second */
        unsigned burst;      /* token bucket size; 0: 100 */
        bool disable_bucket; /* per-key backoff only */
} kube_workqueue_options;

/* `opts` may be NULL for the defaults. */
kube_workqueue *kube_workqueue_new(const kube_workqueue_options *opts);
/* Free the queue. No thread may be inside a queue call (shut down, join the
 * workers, then free). */
void kube_workqueue_free(kube_workqueue *q);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_workqueue *, kube_workqueue_free)
#define _cleanup_workqueue_ _cleanup_(kube_workqueue_freep)

/* Queue `key` (copied) unless it is already queued; if it is being processed,
 * queue it again after done(). Ignored once shut down. */
void kube_workqueue_add(kube_workqueue *q, const char *key);
/* add() after `delay` (0: now). Ignored once shut down. */
void kube_workqueue_add_after(kube_workqueue *q, const char *key, usec_t delay);
/* add_after() with the rate limiter's delay for this key; counts a failure. */
void kube_workqueue_add_rate_limited(kube_workqueue *q, const char *key);
/* The delay add_rate_limited() would use now, without consuming anything
 * (for logs: "requeue in ..."). */
usec_t kube_workqueue_peek_backoff(kube_workqueue *q, const char *key);

/* Block until a key is ready and return it (caller frees), now marked as
 * processing. Returns NULL once the queue is shut down. */
char *kube_workqueue_get(kube_workqueue *q);
/* Finish processing `key` (from get()). If it was added meanwhile, it is
 * queued again now. Returns -ENOENT if `key` was not being processed. */
int kube_workqueue_done(kube_workqueue *q, const char *key);

/* Reset the key's failure count (after a successful reconcile). */
void kube_workqueue_forget(kube_workqueue *q, const char *key);
/* How many times the key went through add_rate_limited() since forget(). */
unsigned kube_workqueue_num_requeues(kube_workqueue *q, const char *key);
/* Keys ready to be handed out now (not counting delayed or processing ones). */
size_t kube_workqueue_len(kube_workqueue *q);

/* Stop: adds are ignored, get() returns NULL, blocked getters wake up. */
void kube_workqueue_shutdown(kube_workqueue *q);
/* shutdown(), then wait until every key handed out has been done(). */
void kube_workqueue_shutdown_drain(kube_workqueue *q);
bool kube_workqueue_shutting_down(kube_workqueue *q);
