/* SPDX-License-Identifier: Apache-2.0 */
/* The bring-up of a launcher's vTPM (act.h): the checks that need the node,
 * in order, then swtpm. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "launcher_identity.h"
#include "mount/localmount.h"
#include "mount/nsmount.h"
#include "node/act.h"

DEFINE_JSON_CLEANUP
#include "proc/proc.h"
#include "tpm/state.h"

/* A bring-up that stops early (the key broker unreachable, a state that does
 * not load) must not leave its work mount: a migration target's next try
 * re-seeds its generation (a new directory), and a mount still holding the
 * old one would refuse every later try ("something else is mounted there"). */
static void work_unmount(bring_up *b) {
        if (!b->work_mounted)
                return;
        _cleanup_error_ vt_error *err = NULL;
        if (unmount_detach(b->work, &err) < 0) {
                log_kv(LOG_LEVEL_WARN, "cannot unmount the state's work mount; the next try of this launcher retries it",
                       "vm", b->l->vm_name, "error", err->msg, NULL);
                return;
        }
        b->work_mounted = false;
}

void bring_up_done(bring_up *b) {
        work_unmount(b);
        free(b->state_in_ns);
        free(b->published);
        free(b->host_state);
        free(b->host_ctrl);
        free(b->run_dir);
        free(b->stage);
        free(b->work);
        proc_cgroups_done(&b->cg);
        secmem_free(b->dek);
}

/* The launcher as the state lock's holder: node/ns/pod/pod-uid. */
char *lock_identity(node_controller *nc, const launcher *l) {
        return xasprintf("%s/%s/%s", nc->node, l->key, l->pod_uid);
}

/* The launcher's process: the peer of the socket in the pod's own emptyDir,
 * proven by its cgroup to be in this pod (launcher_identity.h). */
static bool step_identity(bring_up *b, kube_outcome *ret) {
        _cleanup_error_ vt_error *err = NULL;
        int r = launcher_identify(b->nc->cfg, b->pod, &b->pid, &b->l->pid_start, &err);
        if (r == -EPERM) {
                *ret = node_halt(b->nc, b->l, NR_LAUNCHER_IDENTITY_REFUSED, err ? err->msg : NULL, &err);
                return false;
        }
        if (r == -EAGAIN) {
                *ret = kube_requeue_after(NODE_RETRY_USEC); /* not listening yet */
                return false;
        }
        if (r < 0) {
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        b->l->pid = b->pid;
        return true;
}

/* One swtpm per state, cluster-wide (state_lock.h). */
static bool step_lock(bring_up *b, kube_outcome *ret) {
        node_controller *nc = b->nc;
        launcher *l = b->l;
        _cleanup_free_ char *me = lock_identity(nc, l), *holder = NULL;
        _cleanup_error_ vt_error *err = NULL;
        usec_t wait = 0;
        int r = state_lock_acquire(nc->locks, l->vm_uid, me, &holder, &wait, &err);
        if (r == -EINPROGRESS) {
                /* Said once, not with every countdown: the count is in the log. */
                _cleanup_free_ char *m = xasprintf("waiting up to %llu s for the state lock of %s to expire (its "
                                                   "launcher is gone; its node may still be running swtpm until then)",
                                                   (unsigned long long)((wait + USEC_PER_SEC - 1) / USEC_PER_SEC),
                                                   holder ? holder : "?");
                *ret = node_halt(nc, l, NR_WAITING_FOR_STATE_LOCK, NULL, NULL);
                log_kv(LOG_LEVEL_INFO, m, "vm", l->vm_name, "namespace", l->ns, NULL);
                return false;
        }
        if (r == -EBUSY) {
                if (!err)
                        vt_error_set(&err, EBUSY, "the VM's TPM state is in use by %s", holder ? holder : "?");
                *ret = node_halt(nc, l, NR_STATE_IN_USE, holder, &err);
                return false;
        }
        if (r < 0) {
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        l->lease_held = true;
        return true;
}

/* swtpm runs as the VM's own uid: the volume root and the state files are
 * that uid's, 0700/0600 (state from before, owned by the shared swtpm user,
 * changes hands here, before any swtpm reads it). */
static bool step_vm_uid(bring_up *b, kube_outcome *ret) {
        launcher *l = b->l;
        if (!l->sandbox_uid)
                l->sandbox_uid = choose_sandbox_uid(b->nc, l);
        if (!l->sandbox_uid) {
                *ret = node_halt(b->nc, l, NR_SWTPM_UID_UNAVAILABLE, NULL, NULL);
                return false;
        }
        _cleanup_error_ vt_error *err = NULL;
        if (tpm_state_dir_prepare_ids(b->host_state, l->sandbox_uid, (gid_t)l->sandbox_uid, &err) < 0) {
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        return true;
}

/* swtpm belongs to the launcher's pod: created in its cgroups, so an agent
 * upgrade (its container's cgroup killed) never stops a VM's TPM. Where
 * they cannot be reached, no swtpm at all. */
static bool step_cgroup(bring_up *b, kube_outcome *ret) {
        _cleanup_error_ vt_error *err = NULL;
        int r = proc_cgroups_open(b->pid, &b->cg, &err);
        if (r < 0) {
                if (!err)
                        vt_error_set(&err, -r, "cannot open the launcher's cgroups");
                *ret = node_halt(b->nc, b->l, NR_SWTPM_CGROUP_UNAVAILABLE, err->msg, &err);
                return false;
        }
        return true;
}

/* The state key, and requested rotations and the encryption of old
 * unencrypted state, before swtpm starts (keys_start.c). Only pipes carry
 * the key on. */
static bool step_keys(bring_up *b, kube_outcome *ret) {
        node_controller *nc = b->nc;
        launcher *l = b->l;
        b->spec = (swtpm_spec){.tpm2 = b->d->tpm2, .state_dir = b->state_in_ns, .ctrl_path = l->ctrl_path,
                               .ctrl_dir = nc->cfg->node.swtpm_socket_dir, .host_state_dir = b->host_state,
                               .host_ctrl_dir = b->host_ctrl, .user = nc->cfg->node.swtpm_user,
                               .setup_uid = nc->swtpm_uid, .setup_gid = nc->swtpm_gid, .uid = l->sandbox_uid,
                               .gid = (gid_t)l->sandbox_uid, .stage_dir = b->stage, .run_dir = b->run_dir};
        tpm_sandbox work_sb;
        swtpm_work_sandbox(&b->spec, b->work, &work_sb);
        bool ok = false;
        /* A migration's target only unwraps the key: rotations are for a
         * start, never for a copy the source may still outlive. */
        *ret = keys_at_start(nc, l, b->o->ts, b->work, b->d->tpm2, &work_sb, !b->d->migration_uid, &b->dek, &ok);
        if (!ok)
                return false;
        l->encrypted = b->dek != NULL;
        b->spec.key = b->dek ? b->dek->data : NULL;
        b->spec.key_len = b->dek ? b->dek->len : 0;
        return true;
}

static void observe_seconds(node_controller *nc, const char *name, const char *help, usec_t t0) {
        if (nc->metrics)
                vt_histogram_observe(nc->metrics, name, help, NULL, (double)(now_monotonic() - t0) / USEC_PER_SEC,
                                     vt_latency_buckets, vt_latency_buckets_n);
}

/* First boot: provision (never over existing state); otherwise check that
 * the state loads, and leave it untouched if not. */
static bool step_provision(bring_up *b, kube_outcome *ret) {
        _cleanup_error_ vt_error *err = NULL;
        usec_t t0 = now_monotonic();
        int r = swtpm_provision(&b->spec, b->work, &err);
        if (r < 0) {
                *ret = node_halt(b->nc, b->l, NR_PROVISION_FAILED, err ? err->msg : NULL, &err);
                return false;
        }
        if (r == 0) {
                node_stat_inc(b->nc, &b->nc->stats.provisions, 1);
                observe_seconds(b->nc, "vtpm_agent_swtpm_provision_seconds",
                                "First-boot provisioning (swtpm_setup with EK and certificates).", t0);
        } else if ((r = swtpm_probe(&b->spec, b->work, &err)) < 0) {
                *ret = node_halt(b->nc, b->l, NR_STATE_UNREADABLE, err ? err->msg : NULL, &err);
                return false;
        }
        work_unmount(b);
        return true;
}

/* Re-checked right before the start: the launcher may have gone, the mount
 * been replaced, the lock not been renewed for a while. */
static bool step_recheck(bring_up *b, kube_outcome *ret) {
        uint64_t again = 0;
        if (proc_start_time(b->pid, &again, NULL) < 0 || again != b->l->pid_start) {
                *ret = kube_requeue_after(NODE_RETRY_USEC);
                return false;
        }
        if (b->d->persistent && check_mount_in_namespace(b->pid, b->published, b->state_in_ns, NULL) != 1) {
                *ret = node_halt(b->nc, b->l, NR_STATE_VOLUME_GONE, NULL, NULL);
                return false;
        }
        _cleanup_free_ char *me = lock_identity(b->nc, b->l);
        /* Starting takes a while: only with the lock renewed recently enough
         * (a migration's target holds none: it writes its own generation). */
        if (b->d->persistent && !b->d->migration_uid && !state_lock_fresh(b->nc->locks, b->l->vm_uid, me, b->nc->lock_start_margin)) {
                *ret = kube_requeue_after(NODE_RETRY_USEC);
                return false;
        }
        return true;
}

static bool step_start(bring_up *b, kube_outcome *ret) {
        node_controller *nc = b->nc;
        launcher *l = b->l;
        _cleanup_error_ vt_error *err = NULL;
        b->spec.cgroups = &b->cg;
        usec_t t0 = now_monotonic();
        if (swtpm_start(&b->spec, &l->swtpm_pid, &l->swtpm_start, &err) < 0) {
                *ret = node_halt(nc, l, NR_SWTPM_START_FAILED, err ? err->msg : NULL, &err);
                return false;
        }
        _cleanup_free_ char *me = lock_identity(nc, l);
        if (b->d->persistent && !b->d->migration_uid &&
            state_lock_attach_swtpm(nc->locks, l->vm_uid, me, l->swtpm_pid, l->swtpm_start, l->ctrl_path) < 0) {
                /* Lost while it started: it must not run on. */
                if (swtpm_stop(l->swtpm_pid, l->swtpm_start, l->ctrl_path, &err) < 0)
                        log_kv(LOG_LEVEL_ERROR, "swtpm could not be stopped although its state lock was lost", "vm",
                               l->vm_name, "error", err ? err->msg : "?", NULL);
                l->swtpm_pid = 0;
                *ret = kube_requeue_after(NODE_RETRY_USEC);
                return false;
        }
        record_save(nc, l);
        node_stat_inc(nc, &nc->stats.starts, 1);
        node_stat_inc(nc, &nc->stats.swtpm_running, 1);
        observe_seconds(nc, "vtpm_agent_swtpm_start_seconds",
                        "From start request to swtpm answering on its control channel.", t0);
        _cleanup_free_ char *m = xasprintf("vTPM %s (%s) started on node %s with %s%s state", b->d->version,
                                           b->d->model, nc->node, !l->encrypted ? "unencrypted " : "",
                                           b->d->persistent ? "persistent" : "ephemeral");
        if (b->d->migration_uid) {
                free(m);
                m = xasprintf("vTPM %s (%s) ready on node %s as the target of migration %s, on its own TPM state "
                              "generation %s%s; the source keeps the VM's state until the migration completes",
                              b->d->version, b->d->model, nc->node, b->d->migration_uid,
                              l->generation ? l->generation : "(scratch)", !l->encrypted ? " (unencrypted)" : "");
                *ret = node_halt(nc, l, NR_MIGRATION_TARGET_READY, m, NULL);
                return true;
        }
        *ret = node_halt(nc, l, NR_VTPM_STARTED, m, NULL);
        return true;
}

/* Bring a launcher's vTPM up: every check passes before swtpm starts. */
kube_outcome act(node_controller *nc, launcher *l, json_t *pod, const node_observed *o, const node_decision *d) {
        _cleanup_(bring_up_done) bring_up b = {.nc = nc, .l = l, .pod = pod, .o = o, .d = d, .cg = PROC_CGROUPS_INIT};
        b.state_in_ns = xasprintf("%s/%s", nc->cfg->node.swtpm_state_dir, l->vm_uid);
        kube_outcome out = kube_done();
        if (!step_identity(&b, &out))
                return out;
        /* A migration's target takes no state lock: it writes a generation of its own. */
        if (d->persistent ? (!d->migration_uid && !step_lock(&b, &out)) || !step_state_volume(&b, &out) ||
                                    !step_state_generation(&b, &out)
                          : !step_scratch_volume(&b, &out))
                return out;
        if (!step_take_over_kubevirt_state(&b, &out) || !step_vm_uid(&b, &out) || !step_sandbox_dirs(&b, &out) ||
            !step_cgroup(&b, &out) || !step_keys(&b, &out) || !step_retire_kubevirt_plaintext(&b, &out) ||
            !step_provision(&b, &out) || !step_guard_kubevirt_place(&b, &out) || !step_recheck(&b, &out))
                return out;
        step_start(&b, &out);
        return out;
}
