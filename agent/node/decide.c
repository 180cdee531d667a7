/* SPDX-License-Identifier: Apache-2.0 */
#include "node/decide.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "node/node.h"
#include "vmi_migration.h"
#include "vmspec.h"

void node_observed_done(node_observed *o) {
        json_decref(o->vm);
        json_decref(o->ts);
        json_decref(o->pvc);
        json_decref(o->vmi);
        *o = (node_observed){0};
}

void node_decision_done(node_decision *d) {
        free(d->detail);
        *d = (node_decision){0};
}

const char *node_step_name(node_step s) {
        static const char *const names[] = {"nothing", "keep-running", "fenced", "fenced-now",
                                            "swtpm-exited", "halt", "wait-cache", "start",
                                            "handover"};
        return (unsigned)s < ELEMENTSOF(names) ? names[s] : "?";
}

static void halt(node_decision *d, node_reason r, char *detail) {
        d->step = NODE_HALT;
        d->reason = r;
        d->detail = detail;
}

/* Does the VMI's migrationState (KubeVirt's) name this launcher as the
 * target of the migration its pod is labelled with? */
static bool migration_names_launcher(const launcher *l, const vmi_migration *m) {
        return str_eq(m->uid, l->migration_uid) && str_eq(m->target_pod, launcher_pod_name(l));
}

/* A launcher that has (had) a swtpm: never a second one for it. */
static void decide_recorded_swtpm(const launcher *l, const node_observed *o, node_decision *d) {
        if (o->swtpm_alive) {
                d->step = NODE_KEEP_RUNNING;
                /* A migration's target takes the state over once KubeVirt
                 * says its migration completed (the source is then done). */
                vmi_migration m;
                if (l->persistent && l->migration_uid && !l->handed_over && vmi_migration_get(o->vmi, &m) &&
                    migration_names_launcher(l, &m) && m.completed && !m.failed)
                        d->step = NODE_HANDOVER;
                return;
        }
        if (l->persistent && l->vm_uid && o->lock_fenced) {
                d->step = NODE_FENCED_NOW;
                return;
        }
        /* QEMU shuts swtpm down (CMD_SHUTDOWN) whenever the VM stops: that is
         * normal, not a warning. Said only while the launcher still runs; a
         * launcher that went is torn down without a word. */
        d->step = NODE_SWTPM_EXITED;
        d->reason = o->launcher_alive ? NR_SWTPM_EXITED : NR_NONE;
}

/* The TPM version and model the VM's annotations ask for (defaults 2.0,
 * tpm-crb; its template's first); false with the refusal in *d when
 * unsupported or when the VM and its template disagree. */
static bool decide_version(const node_observed *o, node_decision *d) {
        char *conflict = vm_tpm_annotations_conflict(o->vm);
        if (conflict) {
                halt(d, NR_TPM_ANNOTATIONS_CONFLICT, conflict);
                return false;
        }
        const char *version = vm_tpm_annotation(o->vm, ANNOTATION_TPM_VERSION);
        const char *model = vm_tpm_annotation(o->vm, ANNOTATION_TPM_MODEL);
        version = version ? version : "2.0";
        model = model ? model : "tpm-crb";
        bool v_ok = strcmp(version, "2.0") == 0 || strcmp(version, "1.2") == 0;
        bool m_ok = strcmp(model, "tpm-crb") == 0 || strcmp(model, "tpm-tis") == 0;
        if (!v_ok || !m_ok) {
                halt(d, NR_TPM_VERSION_UNSUPPORTED, xasprintf("TPM version \"%s\" / model \"%s\"", version, model));
                return false;
        }
        if (strcmp(version, "1.2") == 0 && strcmp(model, "tpm-crb") == 0) {
                halt(d, NR_TPM_MODEL_UNSUPPORTED, NULL);
                return false;
        }
        d->version = version;
        d->model = model;
        d->tpm2 = strcmp(version, "2.0") == 0;
        return true;
}

void node_decide(const launcher *l, const node_observed *o, node_decision *ret) {
        node_decision d = {.step = NODE_NOTHING};
        /* Stopped for want of state lock renewals: not started again for this
         * launcher (QEMU lost its TPM; the VM gets one at its next start). */
        if (l->fenced) {
                d.step = NODE_FENCED;
                goto out;
        }
        /* Its swtpm exited (QEMU shut it down: the VM stopped, or migrated
         * away): never a second one for the same launcher, which would write
         * the state behind the VM's new place. */
        if (l->swtpm_ended && l->swtpm_pid <= 0)
                goto out;
        /* Already running (ours, or adopted after a restart)? Leave it alone. */
        if (l->swtpm_pid > 0) {
                decide_recorded_swtpm(l, o, &d);
                goto out;
        }
        if (!l->vm_name || !*l->vm_name)
                goto out; /* not a KubeVirt launcher we can place */
        /* A live migration's target launcher: only the one KubeVirt's
         * migrationState names, for a migration under way. */
        if (l->migration_uid) {
                if (!o->vmi) {
                        d.step = NODE_WAIT_CACHE;
                        goto out;
                }
                vmi_migration m;
                vmi_migration_get(o->vmi, &m);
                if (!migration_names_launcher(l, &m)) {
                        halt(&d, NR_MIGRATION_TARGET_UNPROVEN,
                             xasprintf("its pod is labelled the target of migration %s, but the VMI's migrationState "
                                       "names migration %s with target pod %s",
                                       l->migration_uid, m.uid ?: "(none)", m.target_pod ?: "(none)"));
                        goto out;
                }
                if (!vmi_migration_under_way(&m)) {
                        /* Over before its vTPM ran: nothing to start (a
                         * completed one cannot have got this far without it). */
                        halt(&d, NR_MIGRATION_OVER, xstrdup(m.failed ? "failed" : "completed"));
                        goto out;
                }
                d.migration_uid = l->migration_uid;
        }
        /* What the cluster decided: the VM (uid, TPM asks) and its TPMState
         * (the state controller has not looked at this VM yet without one). */
        if (!o->vm || !o->ts) {
                d.step = NODE_WAIT_CACHE;
                goto out;
        }
        json_t *st = json_object_get(o->ts, "status");
        tpm_intent intent;
        vm_tpm_intent(o->vm, &intent);
        bool has_tpm = intent.has_tpm, persistent = intent.persistent;
        if (intent.source == TPM_SOURCE_NONE) {
                /* A preference decided: the state controller's verdict says which. */
                persistent = json_is_true(json_object_get(st, "persistent"));
                has_tpm = persistent;
        }
        tpm_intent_done(&intent);
        if (!has_tpm)
                goto out;
        d.has_tpm = true;
        d.persistent = persistent;
        d.vm_uid = json_string_value(json_object_get(json_object_get(o->vm, "metadata"), "uid"));
        if (!decide_version(o, &d))
                goto out;
        if (persistent) {
                const char *phase = json_string_value(json_object_get(st, "phase"));
                if (!phase || strcmp(phase, "Ready") != 0) {
                        halt(&d, NR_WAITING_FOR_STATE_VOLUME, NULL);
                        goto out;
                }
                d.pvc_name = json_string_value(json_object_get(st, "pvcName"));
                if (!o->pvc) {
                        d.step = NODE_WAIT_CACHE;
                        goto out;
                }
                d.pv = json_string_value(json_object_get(json_object_get(o->pvc, "spec"), "volumeName"));
        }
        d.step = NODE_START;
out:
        *ret = d;
}
