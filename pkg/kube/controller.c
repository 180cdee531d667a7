/* SPDX-License-Identifier: Apache-2.0 */
#include "controller.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "base/alloc.h"

#define DEFAULT_SYNC_TIMEOUT (300 * USEC_PER_SEC)

struct kube_controller {
        kube_controller_ops ops;
        kube_controller_options opts;
        char *name;
        kube_workqueue *queue;
        kube_informer **informers;
        bool *background; /* per informer: not waited for */
        size_t n_informers;
        pthread_t *workers;
        unsigned n_workers;
        bool informers_started;
        atomic_bool stopping;
        pthread_mutex_t stats_lock;
        kube_controller_stats stats;
};

void kube_outcome_done(kube_outcome *o) {
        if (!o)
                return;
        vt_error_free(o->error);
        o->error = NULL;
}

const char *kube_outcome_kind_name(kube_outcome_kind k) {
        switch (k) {
        case KUBE_OUTCOME_DONE:
                return "done";
        case KUBE_OUTCOME_REQUEUE_AFTER:
                return "requeue-after";
        case KUBE_OUTCOME_BACKOFF:
                return "backoff";
        case KUBE_OUTCOME_FAILED:
                return "failed";
        }
        return "unknown";
}

int kube_controller_new(const kube_controller_ops *ops, const kube_controller_options *opts,
                        kube_controller **ret, vt_error **err) {
        if (!ops || !ops->reconcile)
                return vt_error_set(err, EINVAL, "a controller needs a reconcile function");
        kube_controller *ctl = xnew(kube_controller, 1);
        ctl->ops = *ops;
        ctl->name = xstrdup(ops->name ? ops->name : "controller");
        ctl->ops.name = ctl->name;
        if (opts)
                ctl->opts = *opts;
        if (ctl->opts.workers == 0)
                ctl->opts.workers = 1;
        if (ctl->opts.sync_timeout == 0)
                ctl->opts.sync_timeout = DEFAULT_SYNC_TIMEOUT;
        ctl->queue = kube_workqueue_new(&ctl->opts.queue);
        pthread_mutex_init(&ctl->stats_lock, NULL);
        *ret = ctl;
        return 0;
}

static void add_informer(kube_controller *ctl, kube_informer *inf, bool background) {
        if (!inf)
                return;
        ctl->informers = xrealloc(ctl->informers, (ctl->n_informers + 1) * sizeof(*ctl->informers));
        ctl->background = xrealloc(ctl->background, (ctl->n_informers + 1) * sizeof(*ctl->background));
        ctl->background[ctl->n_informers] = background;
        ctl->informers[ctl->n_informers++] = inf;
}

void kube_controller_add_informer(kube_controller *ctl, kube_informer *inf) {
        add_informer(ctl, inf, false);
}

void kube_controller_add_background_informer(kube_controller *ctl, kube_informer *inf) {
        add_informer(ctl, inf, true);
}

static void count(kube_controller *ctl, uint64_t *field) {
        pthread_mutex_lock(&ctl->stats_lock);
        (*field)++;
        pthread_mutex_unlock(&ctl->stats_lock);
}

void kube_controller_apply_outcome(kube_controller *ctl, const char *key, kube_outcome o) {
        switch (o.kind) {
        case KUBE_OUTCOME_DONE:
                count(ctl, &ctl->stats.done);
                kube_workqueue_forget(ctl->queue, key);
                break;
        case KUBE_OUTCOME_REQUEUE_AFTER:
                /* Waiting is not failing: the key's backoff is left as it is. */
                count(ctl, &ctl->stats.requeues);
                kube_workqueue_add_after(ctl->queue, key, o.after);
                break;
        case KUBE_OUTCOME_BACKOFF:
                count(ctl, &ctl->stats.backoffs);
                if (o.after > 0 && kube_workqueue_peek_backoff(ctl->queue, key) > o.after)
                        kube_workqueue_add_after(ctl->queue, key, o.after);
                else
                        kube_workqueue_add_rate_limited(ctl->queue, key);
                break;
        case KUBE_OUTCOME_FAILED: {
                count(ctl, &ctl->stats.failures);
                usec_t retry_in = kube_workqueue_peek_backoff(ctl->queue, key);
                if (ctl->ops.on_failure)
                        ctl->ops.on_failure(key, o.error, retry_in, ctl->ops.userdata);
                kube_workqueue_add_rate_limited(ctl->queue, key);
                break;
        }
        }
        kube_outcome_done(&o);
}

static void *worker(void *ud) {
        kube_controller *ctl = ud;
        for (;;) {
                _cleanup_free_ char *key = kube_workqueue_get(ctl->queue);
                if (!key)
                        break;
                if (ctl->ops.gate && !ctl->ops.gate(ctl->ops.userdata)) {
                        /* Not ours to work on now (a stand-by): whoever is
                         * active enqueues everything when it starts. */
                        count(ctl, &ctl->stats.gated);
                        kube_workqueue_forget(ctl->queue, key);
                        kube_workqueue_done(ctl->queue, key);
                        continue;
                }
                count(ctl, &ctl->stats.reconciles);
                kube_controller_apply_outcome(ctl, key, ctl->ops.reconcile(key, ctl->ops.userdata));
                kube_workqueue_done(ctl->queue, key);
        }
        return NULL;
}

int kube_controller_start_informers(kube_controller *ctl, vt_error **err) {
        if (ctl->informers_started)
                return 0;
        for (size_t i = 0; i < ctl->n_informers; i++) {
                int r = kube_informer_start(ctl->informers[i], err);
                if (r < 0)
                        return r;
        }
        ctl->informers_started = true;
        usec_t deadline = now_monotonic() + ctl->opts.sync_timeout;
        for (size_t i = 0; i < ctl->n_informers; i++) {
                if (ctl->background[i])
                        continue;
                usec_t now = now_monotonic();
                if (kube_informer_wait_synced(ctl->informers[i], deadline > now ? deadline - now : 0) < 0)
                        return vt_error_set(err, ETIMEDOUT, "the %s's caches did not fill within %llu s", ctl->name,
                                            (unsigned long long)(ctl->opts.sync_timeout / USEC_PER_SEC));
        }
        return 0;
}

int kube_controller_start_workers(kube_controller *ctl, vt_error **err) {
        if (ctl->workers)
                return 0;
        if (atomic_load(&ctl->stopping))
                return vt_error_set(err, ESHUTDOWN, "the %s is stopping", ctl->name);
        ctl->workers = xnew(pthread_t, ctl->opts.workers);
        for (unsigned i = 0; i < ctl->opts.workers; i++) {
                int r = pthread_create(&ctl->workers[i], NULL, worker, ctl);
                if (r != 0) {
                        /* The ones running are joined by stop(). */
                        ctl->n_workers = i;
                        return vt_error_errno(err, r, "cannot start the %s's workers", ctl->name);
                }
                ctl->n_workers = i + 1;
        }
        return 0;
}

int kube_controller_start(kube_controller *ctl, vt_error **err) {
        int r = kube_controller_start_informers(ctl, err);
        if (r < 0)
                return r;
        return kube_controller_start_workers(ctl, err);
}

void kube_controller_stop(kube_controller *ctl) {
        if (!ctl)
                return;
        atomic_store(&ctl->stopping, true);
        kube_workqueue_shutdown(ctl->queue);
        for (unsigned i = 0; i < ctl->n_workers; i++)
                pthread_join(ctl->workers[i], NULL);
        ctl->n_workers = 0;
        for (size_t i = 0; i < ctl->n_informers; i++)
                kube_informer_stop(ctl->informers[i]);
}

void kube_controller_free(kube_controller *ctl) {
        if (!ctl)
                return;
        kube_controller_stop(ctl);
        free(ctl->workers);
        for (size_t i = 0; i < ctl->n_informers; i++)
                kube_informer_free(ctl->informers[i]);
        free(ctl->informers);
        free(ctl->background);
        kube_workqueue_free(ctl->queue);
        pthread_mutex_destroy(&ctl->stats_lock);
        free(ctl->name);
        free(ctl);
}

bool kube_controller_synced(kube_controller *ctl) {
        for (size_t i = 0; i < ctl->n_informers; i++)
                if (!ctl->background[i] && !kube_informer_has_synced(ctl->informers[i]))
                        return false;
        return true;
}

bool kube_controller_stopping(kube_controller *ctl) {
        return atomic_load(&ctl->stopping);
}

void kube_controller_enqueue(kube_controller *ctl, const char *key) {
        kube_workqueue_add(ctl->queue, key);
}

void kube_controller_enqueue_after(kube_controller *ctl, const char *key, usec_t delay) {
        kube_workqueue_add_after(ctl->queue, key, delay);
}

kube_workqueue *kube_controller_queue(kube_controller *ctl) {
        return ctl->queue;
}

void kube_controller_get_stats(kube_controller *ctl, kube_controller_stats *ret) {
        pthread_mutex_lock(&ctl->stats_lock);
        *ret = ctl->stats;
        pthread_mutex_unlock(&ctl->stats_lock);
        ret->queue_depth = kube_workqueue_len(ctl->queue);
}
