/* SPDX-License-Identifier: Apache-2.0 */
/* The state controller (agent/state_controller.h) on the controller runtime
 * (pkg/kube/controller.h): one reconcile per VM key, in four steps, each a
 * file of this folder:
 *
 *   observe  (observe.c)  the caches, into a state_observed
 *   decide   (decide.c)   a pure function: PVC, TPMState, status, events
 *   act      (act.c)      create the PVC and the TPMState
 *   report   (report.c)   one status write if it differs, then the events
 *
 * Level-triggered and idempotent: a steady cluster costs no writes,
 * including after a restart. Never deletes or adopts a PVC. Only the leader
 * (a Lease) reconciles; stand-bys keep warm caches. The leader also sweeps
 * the per-VM state Leases of deleted VMs (lease_gc.c). */
#include "state_controller.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "act.h"
#include "base/alloc.h"
#include "base/log.h"
#include "context.h"
#include "decide.h"
#include "election.h"
#include "informers.h"
#include "kube/controller.h"
#include "kube/lease.h"
#include "lease_gc.h"
#include "observe.h"
#include "report.h"
#include "written.h"

#define CONTROLLER_NAME "vtpm-agent.io/state-controller"
/* The queue key of the Lease sweep: not a "namespace/name" of any VM. */
#define LEASE_GC_KEY ":lease-gc"

struct state_controller {
        const agent_config *cfg;
        char *identity;
        kube_controller *ctl;
        state_informers informers;
        kube_elector *elector;
        state_election *election; /* why it cannot campaign, if it cannot */
        atomic_bool leader;
        state_lease_gc *lease_gc;
        state_counters counters;
        state_ctx ctx;
};

static kube_outcome sweep_leases(state_controller *sc) {
        atomic_fetch_add(&sc->counters.lease_sweeps, 1);
        /* Not before the Lease cache holds the server's list (it may never,
         * without the permission: then there is no sweep, only its warnings). */
        if (kube_informer_has_synced(sc->informers.inf[STATE_INF_LEASE])) {
                state_lease_gc_sweep(sc->lease_gc, &sc->ctx, sc->informers.inf[STATE_INF_LEASE],
                                     sc->informers.inf[STATE_INF_VM], now_boottime());
        }
        return kube_requeue_after(state_lease_gc_period(sc->lease_gc));
}

static kube_outcome act_and_report(state_controller *sc, const state_observed *o, const state_decision *d) {
        vt_error *err = NULL;
        switch (state_act(&sc->ctx, o, d, &err)) {
        case STATE_ACT_DONE:
                break;
        case STATE_ACT_VM_GONE:
                return kube_done();
        case STATE_ACT_RACED:
                /* Not a failure: look again once the cache has caught up. */
                return kube_backoff(0);
        case STATE_ACT_FAILED:
                return kube_failed(err);
        }
        if (state_report(&sc->ctx, o, d, &err) < 0)
                return kube_failed(err);
        return kube_done();
}

static kube_outcome reconcile(const char *key, void *ud) {
        state_controller *sc = ud;
        if (strcmp(key, LEASE_GC_KEY) == 0)
                return sweep_leases(sc);
        state_observed o;
        state_observe(&sc->informers, sc->ctx.written, sc->cfg, key, &o);
        if (!o.vm) {
                /* Deleted: the garbage collector removes PVC and TPMState through their ownerReferences. */
                state_written_forget(sc->ctx.written, key);
                state_observed_done(&o);
                return kube_done();
        }
        state_decision d;
        state_decide(&o, &d);
        kube_outcome out = d.report ? act_and_report(sc, &o, &d) : kube_done();
        state_decision_done(&d);
        state_observed_done(&o);
        return out;
}

static void on_failure(const char *key, const vt_error *err, usec_t retry_in, void *ud) {
        _cleanup_free_ char *in = xasprintf("%.1fs", (double)retry_in / USEC_PER_SEC);
        log_kv(LOG_LEVEL_WARN, "reconcile failed; will retry", "vm", key, "error", err ? err->msg : "unknown",
               "retryIn", in, NULL);
}

static bool leading(void *ud) {
        state_controller *sc = ud;
        return atomic_load(&sc->leader);
}

static void started_leading(void *ud) {
        state_controller *sc = ud;
        log_kv(LOG_LEVEL_INFO, "became the state controller's leader", "identity", sc->identity, NULL);
        /* Whatever we wrote or saw in an earlier term may have changed since. */
        state_written_clear(sc->ctx.written);
        state_lease_gc_reset(sc->lease_gc);
        atomic_store(&sc->leader, true);
        state_informers_enqueue_all(&sc->informers);
        kube_controller_enqueue(sc->ctl, LEASE_GC_KEY);
}

static void stopped_leading(void *ud) {
        state_controller *sc = ud;
        log_kv(LOG_LEVEL_INFO, "no longer the state controller's leader", "identity", sc->identity, NULL);
        atomic_store(&sc->leader, false);
}

static void election_attempt(const vt_error *err, void *ud) {
        state_controller *sc = ud;
        state_election_attempt(sc->election, err, now_boottime());
}

static int setup(state_controller *sc, kube_client *c, vt_error **err) {
        kube_controller_ops ops = {.name = "state controller", .reconcile = reconcile, .on_failure = on_failure,
                                   .gate = leading, .userdata = sc};
        /* Failures back off per VM; the token bucket would only slow a burst of 5,000. */
        kube_controller_options opts = {
                .workers = (unsigned)sc->cfg->state.workers,
                .queue = {.base_delay = 50 * USEC_PER_MSEC, .max_delay = 300 * USEC_PER_SEC, .disable_bucket = true},
        };
        int r = kube_controller_new(&ops, &opts, &sc->ctl, err);
        if (r < 0)
                return r;
        r = state_informers_init(&sc->informers, c, sc->cfg, sc->ctl, err);
        if (r < 0)
                return r;
        kube_elector_options eo = {.namespace = sc->cfg->namespace, .name = sc->cfg->state.lease_name,
                                   .identity = sc->identity, .on_started_leading = started_leading,
                                   .on_stopped_leading = stopped_leading, .on_attempt = election_attempt,
                                   .userdata = sc};
        return kube_elector_new(c, &eo, &sc->elector, err);
}

int state_controller_new(kube_client *c, const agent_config *cfg, const char *identity, state_controller **ret,
                         vt_error **err) {
        state_controller *sc = xnew(state_controller, 1);
        sc->cfg = cfg;
        sc->identity = xstrdup(identity);
        sc->election = state_election_new(cfg->namespace, cfg->state.lease_name);
        state_lease_timing lt;
        agent_config_state_lease_timing(cfg, &lt);
        sc->lease_gc = state_lease_gc_new(cfg->namespace, (usec_t)lt.duration * USEC_PER_SEC);
        sc->ctx = (state_ctx){.client = c, .recorder = kube_recorder_new(c, CONTROLLER_NAME, identity),
                              .written = state_written_new(), .counters = &sc->counters};
        int r = setup(sc, c, err);
        if (r < 0) {
                state_controller_free(sc);
                return r;
        }
        *ret = sc;
        return 0;
}

int state_controller_start(state_controller *sc, vt_error **err) {
        int r = kube_controller_start(sc->ctl, err);
        if (r < 0)
                return r;
        return kube_elector_start(sc->elector, err);
}

bool state_controller_synced(state_controller *sc) {
        return kube_controller_synced(sc->ctl);
}

char *state_controller_problem(state_controller *sc) {
        return state_election_problem(sc->election);
}

void state_controller_stop(state_controller *sc) {
        if (!sc)
                return;
        /* Workers first, then the Lease (released: a stand-by takes over at once). */
        kube_controller_stop(sc->ctl);
        kube_elector_stop(sc->elector);
}

void state_controller_free(state_controller *sc) {
        if (!sc)
                return;
        state_controller_stop(sc);
        kube_elector_free(sc->elector);
        kube_controller_free(sc->ctl); /* and the informers it owns */
        kube_recorder_free(sc->ctx.recorder);
        state_written_free(sc->ctx.written);
        state_lease_gc_free(sc->lease_gc);
        state_election_free(sc->election);
        free(sc->identity);
        free(sc);
}

void state_controller_get_stats(state_controller *sc, state_controller_stats *ret) {
        /* Sweeps first: each is counted by the runtime before it runs, so this never exceeds its count. */
        uint64_t sweeps = atomic_load(&sc->counters.lease_sweeps);
        kube_controller_stats cs;
        kube_controller_get_stats(sc->ctl, &cs);
        *ret = (state_controller_stats){
                /* VMs reconciled: the Lease sweeps share the queue, not the meaning. */
                .reconciles = cs.reconciles - sweeps,
                .reconcile_errors = cs.failures + cs.backoffs,
                .pvcs_created = atomic_load(&sc->counters.pvcs_created),
                .pvcs_deleted = atomic_load(&sc->counters.pvcs_deleted),
                .tpmstates_created = atomic_load(&sc->counters.tpmstates_created),
                .status_updates = atomic_load(&sc->counters.status_updates),
                .events = atomic_load(&sc->counters.events),
                .leases_deleted = atomic_load(&sc->counters.leases_deleted),
                .queue_depth = cs.queue_depth,
                .leader = atomic_load(&sc->leader),
        };
}
