/* SPDX-License-Identifier: Apache-2.0 */
/* The node controller's wiring (agent/node_controller.h) on the controller
 * runtime (pkg/kube/controller.h): reconcile = observe, decide, act, report
 * (node.h); the ticker that notices launchers and swtpm processes that died
 * without their pod changing; the node's capability labels; adoption. */
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "node/node.h"

DEFINE_JSON_CLEANUP
#include "proc/proc.h"
#include "resources.h"

#define TICK_USEC (3 * USEC_PER_SEC)

static bool pod_finished(json_t *pod) {
        const char *phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
        if (phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0))
                return true;
        return json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp") != NULL;
}

/* A fenced launcher: said in its status once the API server answers, but only
 * while the state lock still names it (if another node took the state over,
 * the status is that node's to write). */
static kube_outcome fenced(node_controller *nc, launcher *l) {
        _cleanup_free_ char *me = lock_identity(nc, l);
        if (state_lock_names(nc->locks, l->vm_uid, me) > 0)
                node_report(nc, l, NR_TPM_FENCED, NULL);
        return kube_done();
}

/* What a decision means for the launcher's record, then the act. */
static kube_outcome carry_out(node_controller *nc, launcher *l, json_t *pod, const node_observed *o,
                              const node_decision *d) {
        switch (d->step) {
        case NODE_NOTHING:
        case NODE_WAIT_CACHE:
        case NODE_HALT:
        case NODE_START:
                break;
        case NODE_KEEP_RUNNING:
                return keys_running(nc, l);
        case NODE_HANDOVER:
                return migration_handover(nc, l);
        case NODE_FENCED_NOW:
                l->fenced = true;
                l->swtpm_pid = 0;
                record_save(nc, l);
                return fenced(nc, l);
        case NODE_FENCED:
                return fenced(nc, l);
        case NODE_SWTPM_EXITED:
                if (d->reason != NR_NONE)
                        node_report(nc, l, d->reason, NULL);
                l->swtpm_pid = 0;
                l->swtpm_ended = true;
                record_save(nc, l);
                return kube_done();
        }
        if (o->vm) {
                const char *uid = node_md(o->vm, "uid");
                free(l->vm_uid);
                l->vm_uid = xstrdup(uid ? uid : "");
        }
        if (d->has_tpm)
                l->persistent = d->persistent;
        if (d->step == NODE_WAIT_CACHE)
                return kube_requeue_after(NODE_RETRY_USEC); /* the caches have not seen the VM, TPMState or PVC yet */
        if (d->step == NODE_HALT)
                return node_halt(nc, l, d->reason, d->detail, NULL);
        if (d->step == NODE_START)
                return act(nc, l, pod, o, d);
        return kube_done();
}

static kube_outcome reconcile(const char *key, void *ud) {
        node_controller *nc = ud;
        _cleanup_json_ json_t *pod = kube_informer_get(nc->pods, key);
        bool gone = !pod || pod_finished(pod);
        launcher *known = launcher_known(nc, key);
        if (known && (gone || (node_md(pod, "uid") && strcmp(known->pod_uid, node_md(pod, "uid")) != 0))) {
                teardown(nc, known);
                verdict_forget(nc, known->pod_uid);
                launcher_forget(nc, key);
        }
        if (gone)
                return kube_done();
        launcher *l = launcher_get_or_new(nc, key, pod);
        _cleanup_(node_observed_done) node_observed o = {0};
        _cleanup_(node_decision_done) node_decision d = {0};
        node_observe(nc, l, &o);
        node_decide(l, &o, &d);
        kube_outcome out = carry_out(nc, l, pod, &o, &d);
        verdict_publish(nc, l);
        return out;
}

static void on_failure(const char *key, const vt_error *err, usec_t retry_in, void *ud) {
        log_kv(LOG_LEVEL_WARN, "launcher reconcile failed; will retry", "launcher", key, "error",
               err ? err->msg : "unknown", NULL);
}

static bool launcher_or_swtpm_gone(const launcher *l, const void *unused) {
        bool gone = l->pid > 0 && (proc_start_time(l->pid, &(uint64_t){0}, NULL) < 0);
        bool tpm_gone = l->swtpm_pid > 0 && !swtpm_alive(l->swtpm_pid, l->swtpm_start);
        return gone || tpm_gone;
}

/* Launchers can die without their pod changing (the process exits first):
 * look at every known one now and then. No API requests: reconcile of a
 * running launcher only checks /proc. */
static void *ticker(void *ud) {
        node_controller *nc = ud;
        while (!atomic_load(&nc->stopping)) {
                for (usec_t slept = 0; slept < TICK_USEC && !atomic_load(&nc->stopping); slept += 100 * USEC_PER_MSEC)
                        sleep_usec(100 * USEC_PER_MSEC);
                node_wake_launchers(nc, launcher_or_swtpm_gone, NULL);
        }
        return NULL;
}

static void label_node(node_controller *nc) {
        bool t12 = false, t2 = false;
        _cleanup_error_ vt_error *err = NULL;
        if (nc->cfg->node.enabled && swtpm_capabilities(&t12, &t2, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot read swtpm's capabilities; the node offers no vTPM", "error", err->msg,
                       NULL);
        json_t *patch = json_pack("{s:{s:{s:s, s:s, s:s}}}", "metadata", "labels", "vtpm-agent.io/enabled",
                                  nc->cfg->node.enabled ? "true" : "false", "vtpm-agent.io/tpm-1.2",
                                  t12 ? "true" : "false", "vtpm-agent.io/tpm-2.0", t2 ? "true" : "false");
        _cleanup_free_ char *path = kube_path(&res_node, NULL, nc->node, NULL);
        _cleanup_error_ vt_error *perr = NULL;
        if (kube_patch(nc->client, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, &perr) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot label the node with its TPM capabilities", "node", nc->node, "error",
                       perr->msg, NULL);
        json_decref(patch);
}

static int node_locks_new(node_controller *nc, vt_error **err) {
        state_lease_timing lt;
        agent_config_state_lease_timing(nc->cfg, &lt);
        state_lock_options lo = {.namespace = nc->cfg->namespace, .run_dir = nc->cfg->node.run_dir,
                                 .duration = (usec_t)lt.duration * USEC_PER_SEC,
                                 .renew_deadline = (usec_t)lt.renew_deadline * USEC_PER_SEC,
                                 .retry_period = (usec_t)lt.retry_period * USEC_PER_SEC,
                                 .fence = fence_swtpm, .userdata = nc};
        nc->lock_start_margin = lo.renew_deadline / 2;
        return state_lock_new(nc->client, &lo, &nc->locks, err);
}

static int node_runtime_new(node_controller *nc, vt_error **err) {
        kube_controller_ops ops = {.name = "node controller", .reconcile = reconcile, .on_failure = on_failure,
                                   .userdata = nc};
        kube_controller_options opts = {
                .workers = (unsigned)nc->cfg->node.max_concurrent_starts,
                .queue = {.base_delay = 500 * USEC_PER_MSEC, .max_delay = 60 * USEC_PER_SEC, .disable_bucket = true},
                .sync_timeout = 300 * USEC_PER_SEC};
        int r = kube_controller_new(&ops, &opts, &nc->ctl, err);
        return r < 0 ? r : node_informers_new(nc, err);
}

int node_controller_new(kube_client *c, const agent_config *cfg, vt_metrics *metrics, node_controller **ret,
                        vt_error **err) {
        if (!cfg->node_name || !*cfg->node_name)
                return vt_error_set(err, EINVAL, "the node controller needs this node's name: set NODE_NAME (the "
                                                 "DaemonSet passes spec.nodeName) or nodeName in the configuration");
        struct passwd *pw = getpwnam(cfg->node.swtpm_user);
        if (!pw)
                return vt_error_set(err, ENOENT, "node.swtpmUser \"%s\" does not exist on this node", cfg->node.swtpm_user);
        _cleanup_(node_controller_freep) node_controller *nc = xnew(node_controller, 1);
        nc->client = c;
        nc->cfg = cfg;
        nc->metrics = metrics;
        nc->node = xstrdup(cfg->node_name);
        nc->swtpm_uid = pw->pw_uid;
        nc->swtpm_gid = pw->pw_gid;
        pthread_mutex_init(&nc->lock, NULL);
        nc->launchers = vt_hashmap_new(launcher_free);
        verdicts_init(nc);
        _cleanup_free_ char *instance = xasprintf("vtpm-agent-%s", nc->node);
        nc->recorder = kube_recorder_new(c, "vtpm-agent.io/node-controller", instance);
        int r = keymgr_new(c, cfg, &nc->keys, err);
        if (r >= 0)
                r = node_locks_new(nc, err);
        if (r >= 0)
                r = node_runtime_new(nc, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(nc);
        return 0;
}

/* Records of launchers from before a restart: their running swtpm are
 * adopted (and their locks renewed from now on, with the deadline the
 * previous agent had); every one is looked at again. */
static void adopt(node_controller *nc) {
        pthread_mutex_lock(&nc->lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(nc->launchers, &it, &k, &v);) {
                launcher *l = v;
                if (l->swtpm_pid > 0 && swtpm_alive(l->swtpm_pid, l->swtpm_start)) {
                        nc->stats.adoptions++;
                        nc->stats.swtpm_running++;
                        if (l->lease_held && l->vm_uid && *l->vm_uid && !l->fenced) {
                                _cleanup_free_ char *me = lock_identity(nc, l);
                                state_lock_adopt(nc->locks, l->vm_uid, me, l->swtpm_pid, l->swtpm_start, l->ctrl_path);
                        }
                        log_kv(LOG_LEVEL_INFO, "adopted a running swtpm", "vm", l->vm_name, "launcher", l->key, NULL);
                }
                kube_controller_enqueue(nc->ctl, k);
        }
        pthread_mutex_unlock(&nc->lock);
}

int node_controller_start(node_controller *nc, vt_error **err) {
        records_load(nc);
        label_node(nc);
        int r = kube_controller_start_informers(nc->ctl, err);
        if (r < 0)
                return r;
        adopt(nc);
        if (!nc->cfg->node.enabled)
                return 0;
        r = state_lock_start(nc->locks, err);
        if (r >= 0)
                r = kube_controller_start_workers(nc->ctl, err);
        if (r < 0)
                return r;
        if (pthread_create(&nc->ticker, NULL, ticker, nc) != 0)
                return vt_error_set(err, EAGAIN, "cannot start the node controller's ticker");
        nc->ticker_started = true;
        /* A launcher's socket appears in its pod's own directory: the 250 ms
         * retries of a launcher not yet listening find it. */
        return 0;
}

bool node_controller_synced(node_controller *nc) {
        return kube_controller_synced(nc->ctl);
}

void node_controller_stop(node_controller *nc) {
        if (!nc)
                return;
        atomic_store(&nc->stopping, true);
        pthread_mutex_lock(&nc->lock);
        pthread_cond_broadcast(&nc->verdict_changed); /* hook calls waiting give up */
        pthread_mutex_unlock(&nc->lock);
        if (nc->ticker_started) {
                pthread_join(nc->ticker, NULL);
                nc->ticker_started = false;
        }
        if (nc->ctl)
                kube_controller_stop(nc->ctl);
        /* The leases stay held: their swtpm run on, and the next agent renews them. */
        state_lock_free(nc->locks);
        nc->locks = NULL;
}

void node_controller_free(node_controller *nc) {
        if (!nc)
                return;
        node_controller_stop(nc);
        kube_controller_free(nc->ctl);
        kube_recorder_free(nc->recorder);
        keymgr_free(nc->keys);
        vt_hashmap_free(nc->launchers);
        verdicts_done(nc);
        pthread_mutex_destroy(&nc->lock);
        free(nc->node);
        free(nc);
}

char *node_controller_launcher_uid(node_controller *nc, const char *ns, const char *name) {
        _cleanup_free_ char *key = xasprintf("%s/%s", ns, name);
        _cleanup_json_ json_t *pod = kube_informer_get(nc->pods, key);
        const char *uid = node_md(pod, "uid");
        return uid ? xstrdup(uid) : NULL;
}

void node_controller_get_stats(node_controller *nc, node_controller_stats *ret) {
        pthread_mutex_lock(&nc->lock);
        *ret = nc->stats;
        pthread_mutex_unlock(&nc->lock);
}
