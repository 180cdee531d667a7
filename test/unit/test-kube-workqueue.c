/* SPDX-License-Identifier: Apache-2.0 */
/* The work queue: client-go's de-duplication and "never the same key twice at
 * once" guarantees, delayed and rate-limited adds, shutdown. Assertions are on
 * order and counts; clocks only bound hangs (alarm), so a loaded machine
 * cannot make them flake. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "kube/workqueue.h"
#include "tap.h"

/* Get a key and check what it is, freeing it. */
static bool get_is(kube_workqueue *q, const char *want) {
        _cleanup_free_ char *k = kube_workqueue_get(q);
        if (!k || strcmp(k, want) != 0) {
                printf("#     got \"%s\", want \"%s\"\n", k ? k : "(null)", want);
                return false;
        }
        return true;
}

static void test_dedup(void) {
        kube_workqueue *q = kube_workqueue_new(NULL);
        kube_workqueue_add(q, "ns/a");
        kube_workqueue_add(q, "ns/b");
        kube_workqueue_add(q, "ns/a");
        kube_workqueue_add(q, "ns/a");
        check_int_eq(kube_workqueue_len(q), 2);
        check(get_is(q, "ns/a"));
        check(get_is(q, "ns/b"));
        check_int_eq(kube_workqueue_len(q), 0);
        check_int_eq(kube_workqueue_done(q, "ns/a"), 0);
        check_int_eq(kube_workqueue_done(q, "ns/b"), 0);
        check_int_eq(kube_workqueue_len(q), 0);
        /* done() on a key not being processed is refused. */
        check_int_eq(kube_workqueue_done(q, "ns/a"), -ENOENT);
        check_int_eq(kube_workqueue_done(q, "ns/zzz"), -ENOENT);
        kube_workqueue_free(q);
}

static void test_dirty_while_processing(void) {
        kube_workqueue *q = kube_workqueue_new(NULL);
        kube_workqueue_add(q, "ns/a");
        kube_workqueue_add(q, "ns/b");
        check(get_is(q, "ns/a"));
        /* Added while processing: not handed out again before done(). */
        kube_workqueue_add(q, "ns/a");
        kube_workqueue_add(q, "ns/a");
        check_int_eq(kube_workqueue_len(q), 1);
        check(get_is(q, "ns/b"));
        check_int_eq(kube_workqueue_len(q), 0);
        check_int_eq(kube_workqueue_done(q, "ns/a"), 0);
        /* ...and exactly once after it. */
        check_int_eq(kube_workqueue_len(q), 1);
        check(get_is(q, "ns/a"));
        check_int_eq(kube_workqueue_len(q), 0);
        kube_workqueue_done(q, "ns/a");
        kube_workqueue_done(q, "ns/b");
        check_int_eq(kube_workqueue_len(q), 0);
        kube_workqueue_free(q);
}

/* ---- stress ---- */

#define NKEYS 64
#define NWORKERS 4
#define NADDERS 2
#define ADDS_PER_ADDER 20000

typedef struct stress {
        kube_workqueue *q;
        char keys[NKEYS][16];
        atomic_int in_flight[NKEYS];  /* workers processing the key right now */
        atomic_long added[NKEYS];     /* bumped before each add */
        atomic_long seen[NKEYS];      /* added[] as read when processing began */
        atomic_long processed;
        atomic_int overlaps;          /* a key processed by two workers at once */
        atomic_int bad_keys;
        atomic_long requeued_while_processing;
} stress;

static int key_index(const char *k) {
        int i = atoi(k + 4); /* "key-NN" */
        return i >= 0 && i < NKEYS ? i : -1;
}

static void *stress_worker(void *arg) {
        stress *s = arg;
        unsigned seed = (unsigned)(uintptr_t)pthread_self();
        for (;;) {
                _cleanup_free_ char *k = kube_workqueue_get(s->q);
                if (!k)
                        return NULL;
                int i = key_index(k);
                if (i < 0) {
                        atomic_fetch_add(&s->bad_keys, 1);
                        continue;
                }
                if (atomic_fetch_add(&s->in_flight[i], 1) != 0)
                        atomic_fetch_add(&s->overlaps, 1);
                atomic_store(&s->seen[i], atomic_load(&s->added[i]));
                /* Some work, so that processing overlaps with adds. */
                for (int spin = rand_r(&seed) % 2000; spin > 0; spin--)
                        __asm__ volatile("" ::: "memory");
                if (rand_r(&seed) % 8 == 0)
                        sched_yield();
                /* Sometimes "fail" and requeue through the rate limiter. */
                if (rand_r(&seed) % 16 == 0)
                        kube_workqueue_add_rate_limited(s->q, k);
                else
                        kube_workqueue_forget(s->q, k);
                atomic_fetch_sub(&s->in_flight[i], 1);
                atomic_fetch_add(&s->processed, 1);
                kube_workqueue_done(s->q, k);
        }
}

static void *stress_adder(void *arg) {
        stress *s = arg;
        unsigned seed = (unsigned)(uintptr_t)pthread_self() ^ 0x5bd1e995;
        for (int n = 0; n < ADDS_PER_ADDER; n++) {
                int i = rand_r(&seed) % NKEYS;
                /* Pace the adds so workers keep up and keys are often re-added
                 * while being processed (the interesting case). */
                for (int spin = rand_r(&seed) % 3000; spin > 0; spin--)
                        __asm__ volatile("" ::: "memory");
                if (n % 16 == 0)
                        sched_yield();
                atomic_fetch_add(&s->added[i], 1);
                if (atomic_load(&s->in_flight[i]) > 0)
                        atomic_fetch_add(&s->requeued_while_processing, 1);
                if (n % 50 == 0)
                        kube_workqueue_add_after(s->q, s->keys[i], rand_r(&seed) % 2000);
                else
                        kube_workqueue_add(s->q, s->keys[i]);
        }
        return NULL;
}

static void test_stress(void) {
        static stress s;
        kube_workqueue_options o = {.base_delay = 1, .max_delay = 2 * USEC_PER_MSEC,
                                    .disable_bucket = true};
        s = (stress){.q = kube_workqueue_new(&o)};
        for (int i = 0; i < NKEYS; i++)
                snprintf(s.keys[i], sizeof(s.keys[i]), "key-%02d", i);

        pthread_t w[NWORKERS], a[NADDERS];
        for (int i = 0; i < NWORKERS; i++)
                pthread_create(&w[i], NULL, stress_worker, &s);
        for (int i = 0; i < NADDERS; i++)
                pthread_create(&a[i], NULL, stress_adder, &s);
        for (int i = 0; i < NADDERS; i++)
                pthread_join(a[i], NULL);

        /* Every key must be processed after its last add: wait for it (the
         * alarm in main() catches a hang). */
        for (;;) {
                int behind = 0;
                for (int i = 0; i < NKEYS; i++)
                        behind += atomic_load(&s.seen[i]) != atomic_load(&s.added[i]);
                if (behind == 0)
                        break;
                sched_yield();
        }
        kube_workqueue_shutdown_drain(s.q);
        for (int i = 0; i < NWORKERS; i++)
                pthread_join(w[i], NULL);

        long total_adds = 0;
        for (int i = 0; i < NKEYS; i++)
                total_adds += atomic_load(&s.added[i]);
        check_int_eq(total_adds, NADDERS * ADDS_PER_ADDER);
        check_int_eq(atomic_load(&s.overlaps), 0);
        check_int_eq(atomic_load(&s.bad_keys), 0);
        check(atomic_load(&s.processed) >= NKEYS);
        check(atomic_load(&s.requeued_while_processing) > 0); /* the case was exercised */
        printf("# %ld adds, %ld processed, %ld adds while the key was processing\n", total_adds,
               (long)atomic_load(&s.processed), (long)atomic_load(&s.requeued_while_processing));
        kube_workqueue_free(s.q);
}

/* ---- delays ---- */

static void test_add_after_order(void) {
        kube_workqueue *q = kube_workqueue_new(NULL);
        kube_workqueue_add_after(q, "c", 60 * USEC_PER_MSEC);
        kube_workqueue_add_after(q, "a", 20 * USEC_PER_MSEC);
        kube_workqueue_add_after(q, "b", 40 * USEC_PER_MSEC);
        kube_workqueue_add_after(q, "now", 0);
        kube_workqueue_add_after(q, "later", 3600 * USEC_PER_SEC);
        check(get_is(q, "now"));
        check(get_is(q, "a"));
        check(get_is(q, "b"));
        check(get_is(q, "c"));
        /* An hour away: not ready. */
        check_int_eq(kube_workqueue_len(q), 0);

        /* Adding again while waiting only ever moves a key earlier. */
        kube_workqueue_add_after(q, "later", 10 * USEC_PER_MSEC);
        check(get_is(q, "later"));
        kube_workqueue_add_after(q, "x", 10 * USEC_PER_MSEC);
        kube_workqueue_add_after(q, "x", 3600 * USEC_PER_SEC);
        check(get_is(q, "x"));

        /* A delayed add of a key being processed waits for done(). */
        kube_workqueue_add(q, "p");
        check(get_is(q, "p"));
        kube_workqueue_add_after(q, "p", 1 * USEC_PER_MSEC);
        kube_workqueue_add_after(q, "marker", 20 * USEC_PER_MSEC);
        check(get_is(q, "marker")); /* "p" fired first but is still processing */
        check_int_eq(kube_workqueue_len(q), 0);
        check_int_eq(kube_workqueue_done(q, "p"), 0);
        check_int_eq(kube_workqueue_len(q), 1);
        check(get_is(q, "p"));
        kube_workqueue_free(q);
}

static void test_add_after_fifo_ties(void) {
        kube_workqueue *q = kube_workqueue_new(NULL);
        char k[16];
        for (int i = 0; i < 20; i++) {
                snprintf(k, sizeof(k), "k%02d", i);
                kube_workqueue_add_after(q, k, 5 * USEC_PER_MSEC);
        }
        int bad = 0;
        for (int i = 0; i < 20; i++) {
                snprintf(k, sizeof(k), "k%02d", i);
                bad += !get_is(q, k);
        }
        check_int_eq(bad, 0);
        kube_workqueue_free(q);
}

static void test_backoff_and_forget(void) {
        kube_workqueue_options o = {.disable_bucket = true};
        kube_workqueue *q = kube_workqueue_new(&o);
        check_int_eq(kube_workqueue_peek_backoff(q, "k"), 5 * USEC_PER_MSEC);
        check_int_eq(kube_workqueue_num_requeues(q, "k"), 0);

        usec_t want = 5 * USEC_PER_MSEC;
        for (int i = 1; i <= 40; i++) {
                kube_workqueue_add_rate_limited(q, "k");
                check_int_eq(kube_workqueue_num_requeues(q, "k"), i);
                want = MIN(want * 2, 1000 * USEC_PER_SEC);
                check_int_eq(kube_workqueue_peek_backoff(q, "k"), want);
        }
        check_int_eq(kube_workqueue_peek_backoff(q, "k"), 1000 * USEC_PER_SEC);
        /* Other keys are independent. */
        check_int_eq(kube_workqueue_peek_backoff(q, "other"), 5 * USEC_PER_MSEC);

        kube_workqueue_forget(q, "k");
        check_int_eq(kube_workqueue_num_requeues(q, "k"), 0);
        check_int_eq(kube_workqueue_peek_backoff(q, "k"), 5 * USEC_PER_MSEC);
        kube_workqueue_free(q);

        /* A rate-limited key is delivered (after its short backoff). */
        o = (kube_workqueue_options){.base_delay = 1000, .disable_bucket = true};
        q = kube_workqueue_new(&o);
        kube_workqueue_add_rate_limited(q, "r");
        check(get_is(q, "r"));
        check_int_eq(kube_workqueue_num_requeues(q, "r"), 1);
        kube_workqueue_done(q, "r");
        check_int_eq(kube_workqueue_num_requeues(q, "r"), 1); /* kept until forget */
        kube_workqueue_forget(q, "r");
        check_int_eq(kube_workqueue_num_requeues(q, "r"), 0);
        kube_workqueue_free(q);
}

/* The overall bucket: after `burst` rate-limited adds the next waits for a
 * refill (1 token per 1000 s here), whatever the per-key backoff says. */
static void test_token_bucket(void) {
        kube_workqueue_options o = {.qps = 0.001, .burst = 3};
        kube_workqueue *q = kube_workqueue_new(&o);
        check_int_eq(kube_workqueue_peek_backoff(q, "d"), 5 * USEC_PER_MSEC);
        kube_workqueue_add_rate_limited(q, "a");
        kube_workqueue_add_rate_limited(q, "b");
        kube_workqueue_add_rate_limited(q, "c");
        usec_t wait = kube_workqueue_peek_backoff(q, "d");
        check(wait > 900 * USEC_PER_SEC);
        check(wait <= 1000 * USEC_PER_SEC + 1);
        kube_workqueue_add_rate_limited(q, "d");
        /* In debt by one token: the next waits about two refills. */
        check(kube_workqueue_peek_backoff(q, "e") > 1900 * USEC_PER_SEC);
        /* The first three are delivered; "d" is not (len counts ready keys). */
        check(get_is(q, "a"));
        check(get_is(q, "b"));
        check(get_is(q, "c"));
        check_int_eq(kube_workqueue_len(q), 0);
        kube_workqueue_free(q);
}

/* ---- shutdown ---- */

static void *blocked_getter(void *arg) {
        kube_workqueue *q = arg;
        return kube_workqueue_get(q); /* NULL expected */
}

static void test_shutdown_wakes_getters(void) {
        kube_workqueue *q = kube_workqueue_new(NULL);
        /* One delayed key far away, so getters sleep in a timed wait too. */
        kube_workqueue_add_after(q, "far", 3600 * USEC_PER_SEC);
        pthread_t t[3];
        for (int i = 0; i < 3; i++)
                pthread_create(&t[i], NULL, blocked_getter, q);
        usleep(50 * 1000); /* let them block; correctness does not depend on it */
        check(!kube_workqueue_shutting_down(q));
        kube_workqueue_shutdown(q);
        for (int i = 0; i < 3; i++) {
                void *r = (void *)1;
                pthread_join(t[i], &r);
                check(r == NULL);
        }
        check(kube_workqueue_shutting_down(q));
        /* After shutdown: adds are ignored, get() does not block. */
        kube_workqueue_add(q, "late");
        check_int_eq(kube_workqueue_len(q), 0);
        check(kube_workqueue_get(q) == NULL);
        kube_workqueue_free(q);
}

typedef struct drain_ctx {
        kube_workqueue *q;
        atomic_int returned;
} drain_ctx;

static void *drainer(void *arg) {
        drain_ctx *c = arg;
        kube_workqueue_shutdown_drain(c->q);
        atomic_store(&c->returned, 1);
        return NULL;
}

static void test_shutdown_drain(void) {
        drain_ctx c = {.q = kube_workqueue_new(NULL)};
        kube_workqueue_add(c.q, "busy");
        kube_workqueue_add(c.q, "queued");
        char *k = kube_workqueue_get(c.q);
        check_str_eq(k, "busy");
        pthread_t t;
        pthread_create(&t, NULL, drainer, &c);
        /* Wait until shutdown took effect, then give drain time to (wrongly) return. */
        while (!kube_workqueue_shutting_down(c.q))
                sched_yield();
        usleep(50 * 1000);
        check_int_eq(atomic_load(&c.returned), 0);
        /* A queued key is not handed out any more. */
        check(kube_workqueue_get(c.q) == NULL);
        check_int_eq(kube_workqueue_done(c.q, k), 0);
        pthread_join(t, NULL);
        check_int_eq(atomic_load(&c.returned), 1);
        free(k);
        kube_workqueue_free(c.q);
}

static void on_alarm(int sig) {
        static const char msg[] = "Bail out! test-kube-workqueue hung (alarm)\n";
        (void)!write(STDOUT_FILENO, msg, sizeof(msg) - 1);
        _exit(2);
}

int main(void) {
        signal(SIGALRM, on_alarm);
        alarm(300); /* hang detector only, far above the normal run time */
        return tap_run((tap_case[]){
                TAP_CASE(test_dedup),
                TAP_CASE(test_dirty_while_processing),
                TAP_CASE(test_stress),
                TAP_CASE(test_add_after_order),
                TAP_CASE(test_add_after_fifo_ties),
                TAP_CASE(test_backoff_and_forget),
                TAP_CASE(test_token_bucket),
                TAP_CASE(test_shutdown_wakes_getters),
                TAP_CASE(test_shutdown_drain),
                {0},
        });
}
