/* SPDX-License-Identifier: Apache-2.0 */
/* The controller runtime: what each typed outcome does to a key (queued
 * again or not, counted as a failure or not, reported or not), the gate, and
 * workers that drain a queue and stop cleanly. Assertions are on counts and
 * order; clocks only bound hangs. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "kube/config.h"
#include "kube/controller.h"
#include "tap.h"

typedef struct fixture {
        atomic_int calls;
        atomic_int failures_seen;
        atomic_bool open;
        char last_failure[128];
        usec_t last_retry_in;
        int requeues_left; /* reconcile answers requeue_after(1 ms) this many times, then done */
} fixture;

static kube_outcome reconcile_done(const char *key, void *ud) {
        fixture *f = ud;
        atomic_fetch_add(&f->calls, 1);
        return kube_done();
}

static kube_outcome reconcile_requeue_twice(const char *key, void *ud) {
        fixture *f = ud;
        atomic_fetch_add(&f->calls, 1);
        if (f->requeues_left-- > 0)
                return kube_requeue_after(USEC_PER_MSEC);
        return kube_done();
}

static void on_failure(const char *key, const vt_error *err, usec_t retry_in, void *ud) {
        fixture *f = ud;
        snprintf(f->last_failure, sizeof(f->last_failure), "%s: %s", key, err ? err->msg : "(none)");
        f->last_retry_in = retry_in;
        atomic_fetch_add(&f->failures_seen, 1);
}

static bool gate(void *ud) {
        fixture *f = ud;
        return atomic_load(&f->open);
}

static kube_controller *new_controller(fixture *f, kube_outcome (*fn)(const char *, void *), unsigned workers) {
        kube_controller_ops ops = {.name = "test controller", .reconcile = fn, .on_failure = on_failure,
                                   .gate = gate, .userdata = f};
        kube_controller_options o = {.workers = workers,
                                     .queue = {.base_delay = USEC_PER_MSEC, .max_delay = 64 * USEC_PER_MSEC,
                                               .disable_bucket = true}};
        kube_controller *ctl = NULL;
        check_int_eq(kube_controller_new(&ops, &o, &ctl, NULL), 0);
        return ctl;
}

/* Take the key the way a worker does. */
static char *take(kube_controller *ctl) {
        return kube_workqueue_get(kube_controller_queue(ctl));
}

static void test_done_forgets(void) {
        fixture f = {0};
        kube_controller *ctl = new_controller(&f, reconcile_done, 1);
        kube_workqueue *q = kube_controller_queue(ctl);
        kube_controller_enqueue(ctl, "ns/a");
        _cleanup_free_ char *k = take(ctl);
        kube_workqueue_add_rate_limited(q, "ns/a"); /* an earlier failure */
        kube_controller_apply_outcome(ctl, k, kube_done());
        check_int_eq(kube_workqueue_num_requeues(q, "ns/a"), 0);
        kube_controller_stats s;
        kube_controller_get_stats(ctl, &s);
        check_int_eq(s.done, 1);
        check_int_eq(s.failures, 0);
        kube_controller_free(ctl);
}

static void test_requeue_is_not_a_failure(void) {
        fixture f = {0};
        kube_controller *ctl = new_controller(&f, reconcile_done, 1);
        kube_workqueue *q = kube_controller_queue(ctl);
        kube_controller_enqueue(ctl, "ns/a");
        _cleanup_free_ char *k = take(ctl);
        kube_controller_apply_outcome(ctl, k, kube_requeue_after(0));
        check_int_eq(kube_workqueue_done(q, k), 0);
        /* Queued again, with no failure counted: its backoff is untouched. */
        check_int_eq(kube_workqueue_len(q), 1);
        check_int_eq(kube_workqueue_num_requeues(q, "ns/a"), 0);
        check_int_eq(f.failures_seen, 0);
        kube_controller_stats s;
        kube_controller_get_stats(ctl, &s);
        check_int_eq(s.requeues, 1);
        kube_controller_free(ctl);
}

static void test_backoff_counts_and_caps(void) {
        fixture f = {0};
        kube_controller *ctl = new_controller(&f, reconcile_done, 1);
        kube_workqueue *q = kube_controller_queue(ctl);
        for (int i = 0; i < 3; i++) {
                kube_controller_enqueue(ctl, "ns/a");
                _cleanup_free_ char *k = take(ctl);
                kube_controller_apply_outcome(ctl, k, kube_backoff(0));
                kube_workqueue_done(q, k);
        }
        /* Backing off quietly: counted for the backoff, never reported. */
        check_int_eq(kube_workqueue_num_requeues(q, "ns/a"), 3);
        check_int_eq(f.failures_seen, 0);
        /* A ceiling below the next backoff holds the delay at the ceiling. */
        check(kube_workqueue_peek_backoff(q, "ns/a") > 2 * USEC_PER_MSEC);
        _cleanup_free_ char *k = take(ctl);
        kube_controller_apply_outcome(ctl, k, kube_backoff(2 * USEC_PER_MSEC));
        check_int_eq(kube_workqueue_num_requeues(q, "ns/a"), 3);
        kube_controller_stats s;
        kube_controller_get_stats(ctl, &s);
        check_int_eq(s.backoffs, 4);
        kube_controller_free(ctl);
}

static void test_failed_is_reported_and_retried(void) {
        fixture f = {0};
        kube_controller *ctl = new_controller(&f, reconcile_done, 1);
        kube_workqueue *q = kube_controller_queue(ctl);
        kube_controller_enqueue(ctl, "ns/a");
        _cleanup_free_ char *k = take(ctl);
        vt_error *err = NULL;
        vt_error_set(&err, EIO, "the API server said no");
        kube_controller_apply_outcome(ctl, k, kube_failed(err)); /* the outcome owns err: ASan sees a leak if not */
        check_int_eq(f.failures_seen, 1);
        check_str_eq(f.last_failure, "ns/a: the API server said no");
        check(f.last_retry_in > 0);
        check_int_eq(kube_workqueue_num_requeues(q, "ns/a"), 1);
        /* A failure without a message is still one. */
        kube_workqueue_done(q, k);
        _cleanup_free_ char *k2 = take(ctl);
        kube_controller_apply_outcome(ctl, k2, kube_failed(NULL));
        check_int_eq(f.failures_seen, 2);
        check_str_eq(f.last_failure, "ns/a: (none)");
        kube_controller_free(ctl);
}

static void wait_calls(fixture *f, int want) {
        for (int i = 0; i < 2000 && atomic_load(&f->calls) < want; i++)
                usleep(5000);
}

static void test_workers_drain(void) {
        fixture f = {0};
        atomic_store(&f.open, true);
        kube_controller *ctl = new_controller(&f, reconcile_done, 4);
        check_int_eq(kube_controller_start(ctl, NULL), 0); /* no informers: synced at once */
        check(kube_controller_synced(ctl));
        for (int i = 0; i < 100; i++) {
                char key[32];
                snprintf(key, sizeof(key), "ns/vm-%d", i);
                kube_controller_enqueue(ctl, key);
        }
        wait_calls(&f, 100);
        kube_controller_stop(ctl);
        check(kube_controller_stopping(ctl));
        kube_controller_stats s;
        kube_controller_get_stats(ctl, &s);
        check_int_eq(atomic_load(&f.calls), 100);
        check_int_eq(s.reconciles, 100);
        check_int_eq(s.done, 100);
        /* Stopped: adds are ignored, nothing runs any more. */
        kube_controller_enqueue(ctl, "ns/late");
        check_int_eq(atomic_load(&f.calls), 100);
        kube_controller_free(ctl);
}

static void test_requeue_until_done(void) {
        fixture f = {.requeues_left = 2};
        atomic_store(&f.open, true);
        kube_controller *ctl = new_controller(&f, reconcile_requeue_twice, 1);
        check_int_eq(kube_controller_start(ctl, NULL), 0);
        kube_controller_enqueue(ctl, "ns/a");
        wait_calls(&f, 3);
        usleep(20000); /* a fourth call would come within 1 ms */
        kube_controller_stats s;
        kube_controller_get_stats(ctl, &s);
        check_int_eq(atomic_load(&f.calls), 3);
        check_int_eq(s.requeues, 2);
        check_int_eq(s.done, 1);
        kube_controller_free(ctl);
}

static void test_gate_closed(void) {
        fixture f = {0}; /* gate closed */
        kube_controller *ctl = new_controller(&f, reconcile_done, 2);
        check_int_eq(kube_controller_start(ctl, NULL), 0);
        kube_controller_enqueue(ctl, "ns/a");
        kube_controller_enqueue(ctl, "ns/b");
        kube_controller_stats s = {0};
        for (int i = 0; i < 2000 && s.gated < 2; i++) {
                usleep(5000);
                kube_controller_get_stats(ctl, &s);
        }
        check_int_eq(s.gated, 2);
        check_int_eq(atomic_load(&f.calls), 0);
        /* Opened (leadership gained): what is enqueued now is worked on. */
        atomic_store(&f.open, true);
        kube_controller_enqueue(ctl, "ns/a");
        wait_calls(&f, 1);
        check_int_eq(atomic_load(&f.calls), 1);
        kube_controller_free(ctl);
}

static void test_needs_reconcile(void) {
        kube_controller_ops ops = {.name = "broken"};
        kube_controller *ctl = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kube_controller_new(&ops, NULL, &ctl, &err), -EINVAL);
        check(ctl == NULL);
        check_str_eq(kube_outcome_kind_name(KUBE_OUTCOME_BACKOFF), "backoff");
}

/* An informer whose list can never succeed: nothing listens on port 1. */
static kube_informer *unreachable_informer(kube_client *c) {
        static const kube_resource leases = {"coordination.k8s.io", "v1", "leases", true};
        kube_informer_options o = {.namespace = "unit", .backoff_initial = 10 * USEC_PER_MSEC,
                                   .backoff_max = 50 * USEC_PER_MSEC};
        kube_informer_handlers h = {0};
        kube_informer *inf = NULL;
        check_int_eq(kube_informer_new(c, &leases, &o, &h, &inf), 0);
        return inf;
}

static void test_background_informer_does_not_hold_start(void) {
        kube_config *cfg = xnew(kube_config, 1);
        cfg->server = xstrdup("https://127.0.0.1:1");
        cfg->namespace = xstrdup("unit");
        cfg->origin = xstrdup("unit-test kubeconfig");
        kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, NULL), 0);
        fixture f = {0};
        atomic_store(&f.open, true);

        /* Waited for: start() gives up after sync_timeout and says why. */
        kube_controller_ops ops = {.name = "waiting controller", .reconcile = reconcile_done, .userdata = &f};
        kube_controller_options o = {.workers = 1, .sync_timeout = 200 * USEC_PER_MSEC};
        kube_controller *ctl = NULL;
        check_int_eq(kube_controller_new(&ops, &o, &ctl, NULL), 0);
        kube_controller_add_informer(ctl, unreachable_informer(c));
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kube_controller_start(ctl, &err), -ETIMEDOUT);
        check(err && strstr(err->msg, "waiting controller"));
        check(!kube_controller_synced(ctl));
        kube_controller_free(ctl);

        /* In the background: start() and synced() do not wait for it, and
         * the workers run. */
        ops.name = "sweeping controller";
        check_int_eq(kube_controller_new(&ops, &o, &ctl, NULL), 0);
        kube_informer *bg = unreachable_informer(c);
        kube_controller_add_background_informer(ctl, bg);
        check_int_eq(kube_controller_start(ctl, NULL), 0);
        check(kube_controller_synced(ctl));
        check(!kube_informer_has_synced(bg));
        kube_controller_enqueue(ctl, "ns/a");
        wait_calls(&f, 1);
        check_int_eq(atomic_load(&f.calls), 1);
        kube_controller_free(ctl); /* stops and frees the informer too */
        kube_client_free(c);
        kube_config_free(cfg);
}

int main(void) {
        alarm(60); /* a hang is a failure, not a stuck CI */
        return tap_run((tap_case[]){
                TAP_CASE(test_done_forgets),
                TAP_CASE(test_requeue_is_not_a_failure),
                TAP_CASE(test_backoff_counts_and_caps),
                TAP_CASE(test_failed_is_reported_and_retried),
                TAP_CASE(test_workers_drain),
                TAP_CASE(test_requeue_until_done),
                TAP_CASE(test_gate_closed),
                TAP_CASE(test_needs_reconcile),
                TAP_CASE(test_background_informer_does_not_hold_start),
                {0},
        });
}
