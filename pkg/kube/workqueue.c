/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/workqueue.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/hashmap.h"

/* One record per key the queue knows about, in one map (one copy of the key
 * string, shared by the FIFO and the heap). It lives while the key is dirty,
 * processing, waiting in the heap, or has failures to remember. */
typedef struct item {
        const char *key; /* the map's copy */
        bool dirty;      /* needs processing: queued, or re-queued at done() */
        bool processing; /* handed out by get(), done() not yet called */
        size_t heap_idx; /* position in the delay heap, SIZE_MAX if not waiting */
        usec_t ready_at; /* when waiting: monotonic time to add it */
        uint64_t seq;    /* when waiting: ties broken first-come first-served */
        unsigned failures;
} item;

#define NOT_WAITING SIZE_MAX

struct kube_workqueue {
        pthread_mutex_t lock;
        pthread_cond_t cond;    /* getters: a key is ready, the next deadline moved, or shutdown */
        pthread_cond_t drained; /* shutdown_drain: processing reached zero */

        vt_hashmap *items; /* key -> item */

        /* FIFO of ready keys (ring buffer): exactly the items dirty && !processing. */
        item **fifo;
        size_t fifo_head, fifo_len, fifo_cap;

        /* Min-heap on (ready_at, seq) of delayed adds. */
        item **heap;
        size_t heap_len, heap_cap;
        uint64_t seq;

        size_t processing;
        bool shutting_down;

        /* rate limiter */
        usec_t base_delay, max_delay;
        bool bucket;
        double qps, burst, tokens;
        usec_t bucket_last;
};

kube_workqueue *kube_workqueue_new(const kube_workqueue_options *opts) {
        kube_workqueue_options o = opts ? *opts : (kube_workqueue_options){0};
        kube_workqueue *q = xnew(kube_workqueue, 1);

        pthread_mutex_init(&q->lock, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        /* Deadlines are monotonic: a wall-clock step must not stall requeues. */
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&q->cond, &attr);
        pthread_cond_init(&q->drained, &attr);
        pthread_condattr_destroy(&attr);

        q->items = vt_hashmap_new(free);
        q->base_delay = o.base_delay ? o.base_delay : 5 * USEC_PER_MSEC;
        q->max_delay = o.max_delay ? o.max_delay : 1000 * USEC_PER_SEC;
        q->bucket = !o.disable_bucket;
        q->qps = o.qps > 0 ? o.qps : 10.0;
        q->burst = o.burst ? o.burst : 100;
        q->tokens = q->burst;
        q->bucket_last = now_monotonic();
        return q;
}

void kube_workqueue_free(kube_workqueue *q) {
        if (!q)
                return;
        vt_hashmap_free(q->items);
        free(q->fifo);
        free(q->heap);
        pthread_cond_destroy(&q->cond);
        pthread_cond_destroy(&q->drained);
        pthread_mutex_destroy(&q->lock);
        free(q);
}

/* ---- records ---- */

static item *item_get(kube_workqueue *q, const char *key, bool create) {
        item *it = vt_hashmap_get(q->items, key);
        if (it || !create)
                return it;
        it = xnew(item, 1);
        it->heap_idx = NOT_WAITING;
        vt_hashmap_put(q->items, key, it);
        vt_hashmap_lookup(q->items, key, &it->key, NULL);
        return it;
}

/* Forget a record nobody needs any more, to keep memory proportional to the
 * keys in flight rather than to every key ever seen. */
static void item_maybe_drop(kube_workqueue *q, item *it) {
        if (!it->dirty && !it->processing && it->heap_idx == NOT_WAITING && it->failures == 0)
                vt_hashmap_remove(q->items, it->key);
}

/* ---- FIFO ---- */

static void fifo_push(kube_workqueue *q, item *it) {
        if (q->fifo_len == q->fifo_cap) {
                size_t cap = q->fifo_cap ? q->fifo_cap * 2 : 16;
                item **n = xnew(item *, cap);
                for (size_t i = 0; i < q->fifo_len; i++)
                        n[i] = q->fifo[(q->fifo_head + i) % q->fifo_cap];
                free(q->fifo);
                q->fifo = n;
                q->fifo_cap = cap;
                q->fifo_head = 0;
        }
        q->fifo[(q->fifo_head + q->fifo_len) % q->fifo_cap] = it;
        q->fifo_len++;
}

static item *fifo_pop(kube_workqueue *q) {
        item *it = q->fifo[q->fifo_head];
        q->fifo_head = (q->fifo_head + 1) % q->fifo_cap;
        q->fifo_len--;
        return it;
}

/* ---- delay heap ---- */

static bool heap_less(const item *a, const item *b) {
        return a->ready_at < b->ready_at || (a->ready_at == b->ready_at && a->seq < b->seq);
}

static void heap_set(kube_workqueue *q, size_t i, item *it) {
        q->heap[i] = it;
        it->heap_idx = i;
}

static void heap_up(kube_workqueue *q, size_t i) {
        item *it = q->heap[i];
        while (i > 0) {
                size_t parent = (i - 1) / 2;
                if (!heap_less(it, q->heap[parent]))
                        break;
                heap_set(q, i, q->heap[parent]);
                i = parent;
        }
        heap_set(q, i, it);
}

static void heap_down(kube_workqueue *q, size_t i) {
        item *it = q->heap[i];
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= q->heap_len)
                        break;
                if (c + 1 < q->heap_len && heap_less(q->heap[c + 1], q->heap[c]))
                        c++;
                if (!heap_less(q->heap[c], it))
                        break;
                heap_set(q, i, q->heap[c]);
                i = c;
        }
        heap_set(q, i, it);
}

static void heap_push(kube_workqueue *q, item *it) {
        q->heap = xgrow(q->heap, &q->heap_cap, q->heap_len + 1, sizeof(item *));
        heap_set(q, q->heap_len++, it);
        heap_up(q, q->heap_len - 1);
}

static item *heap_pop(kube_workqueue *q) {
        item *top = q->heap[0];
        top->heap_idx = NOT_WAITING;
        if (--q->heap_len > 0) {
                heap_set(q, 0, q->heap[q->heap_len]);
                heap_down(q, 0);
        }
        return top;
}

/* ---- the queue proper (lock held) ---- */

static void add_locked(kube_workqueue *q, item *it) {
        if (it->dirty)
                return; /* already queued, or re-queued at done() */
        it->dirty = true;
        if (it->processing)
                return;
        fifo_push(q, it);
        pthread_cond_signal(&q->cond);
}

/* Move the delayed adds whose time has come into the FIFO. */
static void service_heap(kube_workqueue *q) {
        if (q->heap_len == 0)
                return;
        usec_t now = now_monotonic();
        while (q->heap_len > 0 && q->heap[0]->ready_at <= now)
                add_locked(q, heap_pop(q));
}

static void add_after_locked(kube_workqueue *q, const char *key, usec_t delay) {
        if (q->shutting_down)
                return;
        item *it = item_get(q, key, true);
        if (delay == 0) {
                add_locked(q, it);
                return;
        }
        usec_t at = now_monotonic() + delay;
        if (it->heap_idx != NOT_WAITING) {
                /* Already waiting: only ever move it earlier (client-go does the same). */
                if (at < it->ready_at) {
                        it->ready_at = at;
                        heap_up(q, it->heap_idx);
                }
        } else {
                it->ready_at = at;
                it->seq = q->seq++;
                heap_push(q, it);
        }
        /* If this is the new earliest deadline, a sleeping getter must re-arm. */
        if (q->heap[0] == it)
                pthread_cond_signal(&q->cond);
}

void kube_workqueue_add(kube_workqueue *q, const char *key) {
        if (!q || !key)
                return;
        pthread_mutex_lock(&q->lock);
        add_after_locked(q, key, 0);
        pthread_mutex_unlock(&q->lock);
}

void kube_workqueue_add_after(kube_workqueue *q, const char *key, usec_t delay) {
        if (!q || !key)
                return;
        pthread_mutex_lock(&q->lock);
        add_after_locked(q, key, delay);
        pthread_mutex_unlock(&q->lock);
}

/* ---- rate limiter (lock held) ---- */

/* base * 2^failures, capped; doubling stops at the cap, so this is cheap and
 * cannot overflow. */
static usec_t exp_backoff(const kube_workqueue *q, unsigned failures) {
        usec_t d = MIN(q->base_delay, q->max_delay);
        for (unsigned i = 0; i < failures && d < q->max_delay; i++)
                d = d > q->max_delay / 2 ? q->max_delay : d * 2;
        return d;
}

/* Tokens the bucket would hold at `now`. */
static double bucket_tokens(const kube_workqueue *q, usec_t now) {
        double t = q->tokens + (double)(now - q->bucket_last) / 1e6 * q->qps;
        return t > q->burst ? q->burst : t;
}

/* Delay until a token is available for `tokens_after` (<0: in debt), as Go's
 * rate.Limiter.Reserve(): taking a token may leave the bucket negative, and
 * later callers wait for the debt to be repaid. */
static usec_t bucket_wait(const kube_workqueue *q, double tokens_after) {
        return tokens_after >= 0 ? 0 : (usec_t)(-tokens_after / q->qps * 1e6) + 1;
}

void kube_workqueue_add_rate_limited(kube_workqueue *q, const char *key) {
        if (!q || !key)
                return;
        pthread_mutex_lock(&q->lock);
        if (q->shutting_down) {
                pthread_mutex_unlock(&q->lock);
                return;
        }
        item *it = item_get(q, key, true);
        usec_t delay = exp_backoff(q, it->failures);
        if (it->failures < UINT_MAX)
                it->failures++;
        if (q->bucket) {
                usec_t now = now_monotonic();
                q->tokens = bucket_tokens(q, now) - 1;
                q->bucket_last = now;
                delay = MAX(delay, bucket_wait(q, q->tokens));
        }
        add_after_locked(q, key, delay);
        pthread_mutex_unlock(&q->lock);
}

usec_t kube_workqueue_peek_backoff(kube_workqueue *q, const char *key) {
        if (!q || !key)
                return 0;
        pthread_mutex_lock(&q->lock);
        item *it = item_get(q, key, false);
        usec_t delay = exp_backoff(q, it ? it->failures : 0);
        if (q->bucket)
                delay = MAX(delay, bucket_wait(q, bucket_tokens(q, now_monotonic()) - 1));
        pthread_mutex_unlock(&q->lock);
        return delay;
}

void kube_workqueue_forget(kube_workqueue *q, const char *key) {
        if (!q || !key)
                return;
        pthread_mutex_lock(&q->lock);
        item *it = item_get(q, key, false);
        if (it) {
                it->failures = 0;
                item_maybe_drop(q, it);
        }
        pthread_mutex_unlock(&q->lock);
}

unsigned kube_workqueue_num_requeues(kube_workqueue *q, const char *key) {
        if (!q || !key)
                return 0;
        pthread_mutex_lock(&q->lock);
        item *it = item_get(q, key, false);
        unsigned n = it ? it->failures : 0;
        pthread_mutex_unlock(&q->lock);
        return n;
}

/* ---- consumers ---- */

static void timespec_at(usec_t at, struct timespec *ts) {
        ts->tv_sec = (time_t)(at / USEC_PER_SEC);
        ts->tv_nsec = (long)(at % USEC_PER_SEC) * 1000;
}

char *kube_workqueue_get(kube_workqueue *q) {
        if (!q)
                return NULL;
        pthread_mutex_lock(&q->lock);
        for (;;) {
                if (q->shutting_down) {
                        pthread_mutex_unlock(&q->lock);
                        return NULL;
                }
                service_heap(q);
                if (q->fifo_len > 0)
                        break;
                if (q->heap_len > 0) {
                        struct timespec ts;
                        timespec_at(q->heap[0]->ready_at, &ts);
                        pthread_cond_timedwait(&q->cond, &q->lock, &ts);
                } else
                        pthread_cond_wait(&q->cond, &q->lock);
        }
        item *it = fifo_pop(q);
        it->dirty = false;
        it->processing = true;
        q->processing++;
        char *key = xstrdup(it->key);
        /* More ready keys: make sure another sleeping getter sees them. */
        if (q->fifo_len > 0)
                pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        return key;
}

int kube_workqueue_done(kube_workqueue *q, const char *key) {
        assert_return(q && key, -EINVAL);
        pthread_mutex_lock(&q->lock);
        item *it = item_get(q, key, false);
        if (!it || !it->processing) {
                pthread_mutex_unlock(&q->lock);
                return -ENOENT;
        }
        it->processing = false;
        q->processing--;
        if (it->dirty) {
                fifo_push(q, it);
                pthread_cond_signal(&q->cond);
        } else
                item_maybe_drop(q, it);
        if (q->processing == 0)
                pthread_cond_broadcast(&q->drained);
        pthread_mutex_unlock(&q->lock);
        return 0;
}

size_t kube_workqueue_len(kube_workqueue *q) {
        if (!q)
                return 0;
        pthread_mutex_lock(&q->lock);
        if (!q->shutting_down)
                service_heap(q);
        size_t n = q->fifo_len;
        pthread_mutex_unlock(&q->lock);
        return n;
}

void kube_workqueue_shutdown(kube_workqueue *q) {
        if (!q)
                return;
        pthread_mutex_lock(&q->lock);
        q->shutting_down = true;
        pthread_cond_broadcast(&q->cond);
        pthread_mutex_unlock(&q->lock);
}

void kube_workqueue_shutdown_drain(kube_workqueue *q) {
        if (!q)
                return;
        pthread_mutex_lock(&q->lock);
        q->shutting_down = true;
        pthread_cond_broadcast(&q->cond);
        while (q->processing > 0)
                pthread_cond_wait(&q->drained, &q->lock);
        pthread_mutex_unlock(&q->lock);
}

bool kube_workqueue_shutting_down(kube_workqueue *q) {
        if (!q)
                return true;
        pthread_mutex_lock(&q->lock);
        bool r = q->shutting_down;
        pthread_mutex_unlock(&q->lock);
        return r;
}
