/* SPDX-License-Identifier: Apache-2.0 */
/* Live migration of a persistent vTPM (state_generation.h has the layout).
 *
 * The source's swtpm keeps writing the current generation under the VM's
 * state lock. The target's agent, on a launcher KubeVirt's migrationState
 * names, starts a swtpm on a new generation of its own, seeded from the
 * current one, without the lock: the two never write the same file. QEMU's
 * migration stream carries the running TPM's state into the target's
 * swtpm. When KubeVirt says the migration completed, the target's agent
 * makes its generation the current one (one atomic rename) and then takes
 * the state lock over once the source has released it; until the marker
 * switches, a failed or cancelled migration leaves everything as it was.
 * This needs nothing of swtpm beyond 0.7.1 (no --migration: that is for
 * two swtpm on one directory, which never happens here). */
#include <string.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/log.h"
#include "base/rmtree.h"
#include "node/act.h"
#include "state_generation.h"

/* The state volume's root for this bring-up, and which generation swtpm
 * writes: a migration target's own new one, else the current one (and
 * then, holding the state lock, what earlier migrations left is pruned). */
bool step_state_generation(bring_up *b, kube_outcome *ret) {
        node_controller *nc = b->nc;
        launcher *l = b->l;
        _cleanup_error_ vt_error *err = NULL;
        /* A target that does not mount the VM's own state volume (KubeVirt
         * gave it a copy: ReadWriteOnce state) would write a second volume. */
        const char *claim = json_string_value(json_object_get(b->pod, "stateClaim"));
        if (b->d->migration_uid && claim && !str_eq(claim, b->d->pvc_name)) {
                _cleanup_free_ char *m = xasprintf(
                        "the migration target mounts the state PVC %s, not the VM's state PVC %s (KubeVirt copies "
                        "ReadWriteOnce state to a new volume for a migration): the vTPM is not started there, so the "
                        "migration fails and the VM stays on its source; give the VM a ReadWriteMany state volume to "
                        "migrate it",
                        claim, b->d->pvc_name);
                *ret = node_halt(nc, l, NR_MIGRATION_STATE_NOT_SHARED, m, NULL);
                return false;
        }
        _cleanup_close_ int vol = dir_open_nofollow(b->published, &err);
        _cleanup_free_ char *gen = NULL;
        int r = vol;
        if (r >= 0 && b->d->migration_uid) {
                gen = state_generation_for_migration(b->d->migration_uid);
                r = gen ? state_generation_prepare(vol, gen, &err)
                        : vt_error_set(&err, EINVAL, "migration uid \"%s\" cannot name a state generation",
                                       b->d->migration_uid);
        } else if (r >= 0) {
                r = state_generation_current(vol, &gen, &err);
                if (r >= 0) {
                        _cleanup_error_ vt_error *perr = NULL;
                        int p = state_generation_prune(vol, &perr);
                        if (p < 0)
                                log_kv(LOG_LEVEL_WARN, "cannot remove old TPM state generations; left for the next start",
                                       "vm", l->vm_name, "error", perr ? perr->msg : strerror(-p), NULL);
                        else if (p > 0)
                                log_kv(LOG_LEVEL_INFO, "removed TPM state generations of earlier migrations", "vm",
                                       l->vm_name, NULL);
                }
        }
        if (r < 0) {
                *ret = node_halt(nc, l, NR_STATE_GENERATION_FAILED, err ? err->msg : strerror(-r), &err);
                return false;
        }
        free(l->generation);
        l->generation = TAKE_PTR(gen);
        free(l->volume);
        l->volume = xstrdup(b->published);
        free(b->host_state);
        b->host_state = l->generation ? xasprintf("%s/%s", b->published, l->generation) : xstrdup(b->published);
        return true;
}

/* The migration completed (KubeVirt's migrationState): this launcher's
 * generation becomes the VM's state, then the state lock is taken over from
 * the source once it lets go (its launcher ends with the migration). */
kube_outcome migration_handover(node_controller *nc, launcher *l) {
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_close_ int vol = l->volume ? dir_open_nofollow(l->volume, &err) : -ENOENT;
        _cleanup_free_ char *cur = NULL;
        int r = vol >= 0 ? state_generation_current(vol, &cur, &err) : vol;
        bool switched = false;
        if (r >= 0 && l->generation && !str_eq(cur, l->generation)) {
                r = state_generation_switch(vol, l->generation, &err);
                switched = r >= 0;
        }
        if (r < 0) {
                /* The VM runs here on this generation: retried, and said. */
                _cleanup_free_ char *m = xasprintf("the migration completed, but the state volume could not be switched "
                                                   "to this node's generation %s yet: %s",
                                                   l->generation ? l->generation : "(root)",
                                                   err ? err->msg : strerror(-r));
                return node_halt(nc, l, NR_STATE_GENERATION_FAILED, m, &err);
        }
        if (switched)
                log_kv(LOG_LEVEL_INFO, "migration completed: this node's TPM state generation is now the VM's", "vm",
                       l->vm_name, "namespace", l->ns, "generation", l->generation, "migration", l->migration_uid, NULL);
        _cleanup_free_ char *me = lock_identity(nc, l), *holder = NULL;
        usec_t wait = 0;
        _cleanup_error_ vt_error *lerr = NULL;
        r = state_lock_acquire(nc->locks, l->vm_uid, me, &holder, &wait, &lerr);
        if (r == -EBUSY || r == -EINPROGRESS || r == -EAGAIN) {
                _cleanup_free_ char *m = xasprintf("migration %s completed; the TPM state generation %s on this node is "
                                                   "the VM's; waiting for the source (%s) to release the state lock",
                                                   l->migration_uid, l->generation ? l->generation : "(root)",
                                                   holder ? holder : "?");
                return node_halt(nc, l, NR_MIGRATION_HANDOVER_WAITING, m, NULL);
        }
        if (r < 0)
                return kube_failed(TAKE_PTR(lerr));
        l->lease_held = true;
        if (state_lock_attach_swtpm(nc->locks, l->vm_uid, me, l->swtpm_pid, l->swtpm_start, l->ctrl_path) < 0)
                return kube_requeue_after(NODE_LOCK_RETRY_USEC); /* lost meanwhile: the fence stops it */
        l->handed_over = true;
        record_save(nc, l);
        _cleanup_error_ vt_error *perr = NULL;
        int p = state_generation_prune(vol, &perr);
        if (p < 0)
                log_kv(LOG_LEVEL_WARN, "cannot remove the source's TPM state generation; left for the next start", "vm",
                       l->vm_name, "error", perr ? perr->msg : strerror(-p), NULL);
        _cleanup_free_ char *m = xasprintf("migration %s completed: the vTPM runs on node %s on TPM state generation %s, "
                                           "now the VM's state; the source released the state lock and this node "
                                           "holds it",
                                           l->migration_uid, nc->node, l->generation ? l->generation : "(root)");
        return node_halt(nc, l, NR_STATE_HANDED_OVER, m, NULL);
}

/* A target launcher that goes before it took the state over (the migration
 * failed or was cancelled): its generation is removed unless it became the
 * current one. Best effort; the next hand-over or start prunes it too. */
void migration_target_gone(node_controller *nc, launcher *l) {
        if (!l->migration_uid || l->handed_over || !l->generation || !l->volume)
                return;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_close_ int vol = dir_open_nofollow(l->volume, &err);
        _cleanup_free_ char *cur = NULL;
        if (vol < 0 || state_generation_current(vol, &cur, &err) < 0 || str_eq(cur, l->generation))
                return;
        int r = rm_rf_beneath(vol, l->generation, &err);
        log_kv(r < 0 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO,
               r < 0 ? "cannot remove a failed migration's TPM state generation; the next start prunes it"
                     : "removed the TPM state generation of a migration that did not complete",
               "vm", l->vm_name, "generation", l->generation, "migration", l->migration_uid, "error",
               err ? err->msg : "", NULL);
}
