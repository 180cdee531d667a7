/* SPDX-License-Identifier: Apache-2.0 */
#include "decide.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/quantity.h"
#include "base/timeutil.h"
#include "kube/informer.h"
#include "vmspec.h"

/* How the VM's state stands: the Ready condition, the phase, and the one
 * Warning that goes with it. */
typedef struct verdict {
        const char *phase;
        const char *ready_reason;
        bool ready;
        char *message;
        const char *event_reason; /* sent when this reason is new for this generation */
        char *event_note;
        const char *storage_class; /* borrowed */
        const char *class_source;  /* borrowed */
        const char *volume;        /* the state volume's name (borrowed); NULL: o->pvc_name */
        const char *created_by;    /* who made it: "vtpm-agent" or "KubeVirt"; NULL: unknown */
        json_t *pvc;               /* to create */
        json_t *pvc_delete;        /* to delete */
        json_t *pvc_label;         /* to label */
} verdict;

static void verdict_done(verdict *v) {
        free(v->message);
        free(v->event_note);
        json_decref(v->pvc);
        json_decref(v->pvc_delete);
        json_decref(v->pvc_label);
}

#define CREATED_BY_AGENT "vtpm-agent"
#define CREATED_BY_KUBEVIRT "KubeVirt"
/* How much earlier than KubeVirt's an agent-made PVC may have been created
 * and still count as the loser of a race (KubeVirt's cache had not seen it
 * yet). An older one was there long before: something else is going on. */
#define RACE_WINDOW_USEC (60 * USEC_PER_SEC)

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

static bool streq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

static bool has_string(json_t *arr, const char *s) {
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) if (streq(json_string_value(v), s)) return true;
        return false;
}

static bool controlled_by(json_t *obj, const char *uid) {
        return streq(json_string_value(json_object_get(controller_ref(obj), "uid")), uid);
}

static char *describe_owner(json_t *obj) {
        json_t *ref = controller_ref(obj);
        if (!ref)
                return xstrdup("no controlling owner");
        return xasprintf("controlled by %s %s (uid %s)", json_string_value(json_object_get(ref, "kind")) ?: "?",
                         json_string_value(json_object_get(ref, "name")) ?: "?",
                         json_string_value(json_object_get(ref, "uid")) ?: "?");
}

static const char *made_by(json_t *pvc) {
        if (streq(kube_object_label(pvc, LABEL_MANAGED_BY), LABEL_MANAGER_VALUE))
                return CREATED_BY_AGENT;
        return kube_object_label(pvc, LABEL_KUBEVIRT_STATE) ? CREATED_BY_KUBEVIRT : NULL;
}

static json_t *owner_ref_to(json_t *vm) {
        return json_pack("[{s:s, s:s, s:s, s:s, s:b, s:b}]", "apiVersion", "kubevirt.io/v1", "kind", "VirtualMachine",
                         "name", md_str(vm, "name"), "uid", md_str(vm, "uid"), "controller", 1, "blockOwnerDeletion", 1);
}

/* The state PVC as the README's first rule has it. Not labelled
 * persistent-state-for: KubeVirt adopts a PVC of this exact name only when
 * it finds none with the label, so if both made one in a race, KubeVirt
 * uses its own (deterministically) and ours is the one to go. */
static json_t *wanted_pvc(const state_observed *o, const char *cls) {
        const char *name = md_str(o->vm, "name");
        _cleanup_free_ char *label = vm_label_value(name);
        _cleanup_free_ char *size = quantity_format(agent_config_size_for_class(o->cfg, cls));
        return json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}, s:{s:s}, s:o}, s:{s:[s], s:s, s:s, s:{s:{s:s}}}}",
                         "apiVersion", "v1", "kind", "PersistentVolumeClaim", "metadata", "name", o->pvc_name,
                         "namespace", md_str(o->vm, "namespace"), "labels", LABEL_MANAGED_BY, LABEL_MANAGER_VALUE,
                         LABEL_VM, label, "annotations", ANNOTATION_VM_NAME, name, "ownerReferences",
                         owner_ref_to(o->vm), "spec", "accessModes", "ReadWriteMany", "volumeMode", "Filesystem",
                         "storageClassName", cls, "resources", "requests", "storage", size);
}

static void set(verdict *v, const char *phase, const char *reason, bool ready, char *message) {
        v->phase = phase;
        v->ready_reason = reason;
        v->ready = ready;
        v->message = message;
}

/* The VM has no TPM, or one that is not persistent: an existing PVC of its
 * own is retained, never deleted. */
static void judge_not_persistent(const state_observed *o, bool pvc_ours, json_int_t gen, verdict *v) {
        json_t *old_status = json_object_get(o->tpmstate, "status");
        bool has_tpm = o->tpm.intent.has_tpm;
        if (pvc_ours)
                set(v, "Retained", "StateRetained", false,
                    has_tpm ? xasprintf("the TPM is not persistent now; earlier state is retained in PVC %s. Delete "
                                        "that PVC to release it on purpose",
                                        o->pvc_name)
                            : xasprintf("the VM has no TPM now; its state is retained in PVC %s. Delete that PVC to "
                                        "release the state on purpose",
                                        o->pvc_name));
        else if (!has_tpm)
                set(v, "NoTPM", "NoTPM", false, xstrdup("the VM has no TPM"));
        else if (o->kv_pvc)
                set(v, "Ephemeral", "NotPersistent", false,
                    xasprintf("the TPM is not persistent: KubeVirt deletes its state volume %s at the VM's next start, "
                              "and the state then lives in the launcher pod and is lost when the VM stops",
                              md_str(o->kv_pvc, "name")));
        else
                set(v, "Ephemeral", "NotPersistent", false,
                    xstrdup("the TPM is not persistent: its state lives in the launcher pod and is lost when the VM "
                            "stops"));
        if (!has_tpm)
                return;
        if (!old_status || json_integer_value(json_object_get(old_status, "warnedGeneration")) != gen) {
                v->event_reason = "NonPersistentTPM";
                v->event_note = xstrdup("this VM's TPM is not persistent: secrets sealed to it (BitLocker keys) are "
                                        "lost when the VM stops. Set spec.template.spec.domain.devices.tpm.persistent: "
                                        "true to keep them");
        }
}

/* The state PVC exists: the VM's own (else a conflict), of the right shape
 * (else reported and left alone), bound or not yet. */
static void judge_existing_pvc(const state_observed *o, bool pvc_ours, verdict *v) {
        if (!pvc_ours) {
                _cleanup_free_ char *owner = describe_owner(o->pvc);
                set(v, "Conflict", "StateVolumeConflict", false,
                    xasprintf("PVC %s already exists and is not this VM's (%s); it is not adopted, changed or deleted. "
                              "Rename or remove it to let the VM's state be provisioned",
                              o->pvc_name, owner));
                v->event_reason = "StateVolumeConflict";
                v->event_note = xstrdup(v->message);
                return;
        }
        v->created_by = made_by(o->pvc);
        json_t *spec = json_object_get(o->pvc, "spec");
        json_t *modes = json_object_get(spec, "accessModes");
        const char *vmode = json_string_value(json_object_get(spec, "volumeMode"));
        const char *phase = json_string_value(json_object_get(o->pvc, "phase"));
        v->storage_class = json_string_value(json_object_get(spec, "storageClassName"));
        v->class_source = json_string_value(
                json_object_get(json_object_get(o->tpmstate, "status"), "storageClassSource"));
        if (!has_string(modes, "ReadWriteMany") || (vmode && strcmp(vmode, "Filesystem") != 0)) {
                _cleanup_free_ char *m = json_dumps(modes, JSON_COMPACT);
                set(v, "Error", "StateVolumeWrongShape", false,
                    xasprintf("PVC %s has accessModes %s and volumeMode %s; the TPM state needs ReadWriteMany and "
                              "Filesystem (for live migration). It is left as it is",
                              o->pvc_name, m ? m : "[]", vmode ? vmode : "Filesystem"));
                v->event_reason = "StateVolumeWrongShape";
                v->event_note = xstrdup(v->message);
        } else if (streq(phase, "Bound"))
                set(v, "Ready", "StateVolumeBound", true, xasprintf("state volume %s is bound", o->pvc_name));
        else
                set(v, "Pending", "WaitingForBinding", false,
                    xasprintf("state volume %s is %s, waiting for it to bind", o->pvc_name,
                              phase ? phase : "not yet bound"));
}

/* KubeVirt's state volume, the only one: used as KubeVirt made it. Its
 * access mode is KubeVirt's choice (RWO unless vmStateStorageClass or the
 * StorageProfile say RWX; KubeVirt copies RWO state on migration). */
static void judge_kubevirt_pvc(const state_observed *o, verdict *v) {
        json_t *k = o->kv_pvc, *spec = json_object_get(k, "spec");
        const char *phase = json_string_value(json_object_get(k, "phase"));
        _cleanup_free_ char *modes = json_dumps(json_object_get(spec, "accessModes"), JSON_COMPACT);
        v->volume = md_str(k, "name");
        v->created_by = CREATED_BY_KUBEVIRT;
        v->storage_class = json_string_value(json_object_get(spec, "storageClassName"));
        v->class_source = CREATED_BY_KUBEVIRT;
        if (streq(phase, "Bound"))
                set(v, "Ready", "StateVolumeBound", true,
                    xasprintf("state volume %s (made by KubeVirt, accessModes %s) is bound", v->volume,
                              modes ? modes : "[]"));
        else
                set(v, "Pending", "WaitingForBinding", false,
                    xasprintf("state volume %s (made by KubeVirt) is %s, waiting for it to bind", v->volume,
                              phase ? phase : "not yet bound"));
}

/* Our PVC lost a race with KubeVirt's: made by us, never adopted by
 * KubeVirt (no label: KubeVirt mounts a labelled PVC first, so it used its
 * own), not the launcher's, never used by a node (no node field in the
 * status), and made at most RACE_WINDOW before KubeVirt's. Only such a
 * PVC can hold no state; anything else is left to a person. */
static bool lost_race(const state_observed *o) {
        json_t *st = json_object_get(o->tpmstate, "status");
        const char *claim = json_string_value(json_object_get(o->launcher, "stateClaim"));
        usec_t ours = 0, theirs = 0;
        return streq(made_by(o->pvc), CREATED_BY_AGENT) && !kube_object_label(o->pvc, LABEL_KUBEVIRT_STATE) &&
               !streq(claim, o->pvc_name) && !json_object_get(st, "nodeState") && !json_object_get(st, "keys") &&
               !json_is_true(json_object_get(st, "encrypted")) /* the CRD defaults it to false */ &&
               md_str(o->pvc, "uid") && md_str(o->pvc, "resourceVersion") &&
               parse_rfc3339(md_str(o->pvc, "creationTimestamp"), &ours) == 0 &&
               parse_rfc3339(md_str(o->kv_pvc, "creationTimestamp"), &theirs) == 0 && ours + RACE_WINDOW_USEC >= theirs;
}

/* More than one state volume for the VM, none of which may be deleted:
 * reported, nothing touched. KubeVirt mounts a labelled PVC before ours
 * and, of several labelled ones, whichever its cache lists first. */
static void judge_duplicate(const state_observed *o, verdict *v) {
        const char *claim = json_string_value(json_object_get(o->launcher, "stateClaim"));
        const char *kv = md_str(o->kv_pvc, "name");
        bool claim_ours = o->pvc && streq(claim, o->pvc_name);
        v->volume = claim_ours || streq(claim, kv) ? claim : kv;
        v->created_by = claim_ours ? made_by(o->pvc) : CREATED_BY_KUBEVIRT;
        _cleanup_free_ char *theirs = xasprintf("%zu PVC%s labelled %s=%s by KubeVirt (%s%s)", o->n_kv_pvcs,
                                                o->n_kv_pvcs == 1 ? "" : "s", LABEL_KUBEVIRT_STATE,
                                                md_str(o->vm, "name"), kv, o->n_kv_pvcs == 1 ? "" : ", ...");
        _cleanup_free_ char *found =
                o->pvc ? xasprintf("PVC %s (made by %s) and %s", o->pvc_name,
                                   made_by(o->pvc) ?: "neither vtpm-agent nor KubeVirt", theirs)
                       : xstrdup(theirs);
        _cleanup_free_ char *which = claim ? xasprintf("The launcher pod mounts %s.", claim)
                                           : xstrdup("Which one KubeVirt mounts at the next start is not defined.");
        set(v, "Conflict", "StateVolumeDuplicate", false,
            xasprintf("the VM has more than one state volume: %s. %s Nothing is deleted: keep the one that holds the "
                      "VM's TPM state and delete the other",
                      found, which));
        v->event_reason = "StateVolumeDuplicate";
        v->event_note = xstrdup(v->message);
}

/* Our PVC, the VM's only state volume, mounted by its launcher: KubeVirt
 * found it by name (its legacy path) and did not label it. The label is
 * how KubeVirt's other paths find a VM's state volume (snapshot, export,
 * migration); KubeVirt makes no second one while ours exists by name, so
 * the label can no longer make two labelled volumes. A VM name longer than
 * a label value (63) cannot be KubeVirt's label: KubeVirt cannot make one
 * either. */
static json_t *label_to_add(const state_observed *o, bool pvc_ours) {
        const char *claim = json_string_value(json_object_get(o->launcher, "stateClaim"));
        const char *vm = md_str(o->vm, "name");
        if (!pvc_ours || !streq(made_by(o->pvc), CREATED_BY_AGENT) || kube_object_label(o->pvc, LABEL_KUBEVIRT_STATE) ||
            !streq(claim, o->pvc_name) || !vm || strlen(vm) > 63 || !md_str(o->pvc, "resourceVersion"))
                return NULL;
        return json_pack("{s:s, s:s, s:s, s:s}", "name", o->pvc_name, "namespace", md_str(o->pvc, "namespace"),
                         "resourceVersion", md_str(o->pvc, "resourceVersion"), "vm", vm);
}

/* The persistent TPM's volumes, as found: ours (o->pvc), KubeVirt's (kv_pvc). */
static void judge_volumes(const state_observed *o, bool pvc_ours, verdict *v) {
        if (!o->kv_pvc) {
                judge_existing_pvc(o, pvc_ours, v);
                if (streq(v->ready_reason, "StateVolumeBound"))
                        v->pvc_label = label_to_add(o, pvc_ours);
        } else if (o->n_kv_pvcs > 1 || (o->pvc && kube_object_label(o->pvc, LABEL_KUBEVIRT_STATE)))
                judge_duplicate(o, v);
        else if (!o->pvc || !pvc_ours)
                judge_kubevirt_pvc(o, v); /* a foreign PVC of our name: KubeVirt uses its labelled one */
        else if (lost_race(o)) {
                judge_kubevirt_pvc(o, v);
                v->pvc_delete = json_pack("{s:s, s:s, s:s, s:s}", "name", o->pvc_name, "namespace",
                                          md_str(o->pvc, "namespace"), "uid", md_str(o->pvc, "uid"),
                                          "resourceVersion", md_str(o->pvc, "resourceVersion"));
        } else
                judge_duplicate(o, v);
}

static bool class_lacks_rwx_profile(const state_observed *o, const char *cls) {
        for (size_t i = 0; i < o->n_classes; i++)
                if (streq(o->classes[i].name, cls))
                        return o->class_lacks_rwx_fs && o->class_lacks_rwx_fs[i];
        return false;
}

/* No PVC yet: provision one in the class the resolution order picks. */
static void judge_new_pvc(const state_observed *o, const sc_choice *choice, verdict *v) {
        v->class_source = sc_source_name(choice->source);
        if (choice->reason) {
                set(v, "Error", choice->reason, false, xstrdup(choice->message));
                v->event_reason = choice->reason;
                v->event_note = xstrdup(choice->message);
                return;
        }
        v->storage_class = choice->name;
        v->created_by = CREATED_BY_AGENT;
        v->pvc = wanted_pvc(o, choice->name);
        /* The same words the next reconcile will find for a Pending PVC: no
         * second status write just to change the message. */
        set(v, "Pending", "WaitingForBinding", false,
            xasprintf("state volume %s is Pending, waiting for it to bind", o->pvc_name));
        if (choice->rwx_unlikely) {
                v->event_reason = "StorageClassNotRWX";
                v->event_note = xasprintf("StorageClass %s (chosen by %s) uses a provisioner known not to offer "
                                          "ReadWriteMany filesystems; the state PVC %s asks for ReadWriteMany and may "
                                          "stay Pending, and live migration will not be possible. No other class is "
                                          "picked silently",
                                          choice->name, v->class_source, o->pvc_name);
        } else if (class_lacks_rwx_profile(o, choice->name)) {
                v->event_reason = "StorageClassNotRWX";
                v->event_note = xasprintf("the CDI StorageProfile of StorageClass %s (chosen by %s) offers no "
                                          "ReadWriteMany + Filesystem pair: live migration of this VM will not be "
                                          "possible. The state PVC %s is provisioned anyway; no other class is picked",
                                          choice->name, v->class_source, o->pvc_name);
        }
}

/* Everything but the restart question. False: nothing to report at all. */
static bool judge(const state_observed *o, json_int_t gen, sc_choice *choice, verdict *v) {
        const effective_tpm *t = &o->tpm;
        bool pvc_ours = o->pvc && controlled_by(o->pvc, md_str(o->vm, "uid"));
        if (t->missing) {
                set(v, "Error", "PreferenceNotFound", false,
                    xasprintf("%s; the TPM it may ask for is unknown until it exists", t->missing));
                v->event_reason = "PreferenceNotFound";
                v->event_note = xasprintf("%s: if it asks for a persistent TPM (Windows preferences do), the VM's "
                                          "state volume is provisioned as soon as the preference appears",
                                          t->missing);
        } else if (t->intent.invalid) {
                set(v, "Error", "InvalidTPMSpec", false, xstrdup(t->intent.invalid));
                v->event_reason = "InvalidTPMSpec";
                v->event_note = xasprintf("the VM's TPM settings cannot be used: %s", t->intent.invalid);
        } else if (!t->intent.has_tpm && !pvc_ours && !o->tpmstate)
                return false; /* nothing to report for a VM without a TPM */
        else if (!t->intent.has_tpm || !t->intent.persistent)
                judge_not_persistent(o, pvc_ours, gen, v);
        else if (o->pvc || o->kv_pvc)
                judge_volumes(o, pvc_ours, v);
        else {
                resolve_storage_class(o->cfg->state.storage_class, o->kubevirt_class, o->hco_class, o->classes,
                                      o->n_classes, choice);
                judge_new_pvc(o, choice, v);
        }
        return true;
}

/* A condition; one whose status did not change keeps its transition time. */
static json_t *condition(const char *type, bool status, const char *reason, const char *message, json_t *old_conditions,
                         json_int_t generation, usec_t now) {
        char when_now[40];
        format_rfc3339(now, when_now);
        const char *st = status ? "True" : "False";
        const char *ltt = when_now;
        size_t i;
        json_t *c;
        json_array_foreach(old_conditions, i, c) {
                const char *when = json_string_value(json_object_get(c, "lastTransitionTime"));
                if (streq(json_string_value(json_object_get(c, "type")), type) &&
                    streq(json_string_value(json_object_get(c, "status")), st) && when)
                        ltt = when;
        }
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", type, "status", st, "reason", reason, "message",
                         message ? message : "", "lastTransitionTime", ltt, "observedGeneration", generation);
}

/* The node's side, from what the node agent serving the VM's current
 * launcher reported (status.nodeState, its field manager's): Ready says the
 * volume is there, TPMRunning whether the vTPM on the node runs, and if not
 * why (KeyUnwrapFailed, StateInUse, StateVolumeNotMounted, ...). A report on
 * an earlier launcher says nothing of this one. */
static json_t *tpm_running_condition(const state_observed *o, json_t *old_conds, json_int_t gen) {
        if (!o->launcher)
                return condition("TPMRunning", false, "VMNotRunning", "the VM has no launcher pod", old_conds, gen,
                                 o->now);
        json_t *node_state = json_object_get(json_object_get(o->tpmstate, "status"), "nodeState");
        _cleanup_free_ char *launcher = xasprintf("%s/%s", md_str(o->launcher, "namespace") ? md_str(o->launcher, "namespace") : "",
                                                  md_str(o->launcher, "name") ? md_str(o->launcher, "name") : "");
        const char *reason = json_string_value(json_object_get(node_state, "reason"));
        if (!streq(json_string_value(json_object_get(node_state, "launcher")), launcher) || !reason || !*reason) {
                _cleanup_free_ char *m = xasprintf("no node agent has reported on launcher pod %s yet", launcher);
                return condition("TPMRunning", false, "NotReported", m, old_conds, gen, o->now);
        }
        bool running = streq(json_string_value(json_object_get(node_state, "phase")), "Running");
        return condition("TPMRunning", running, reason, json_string_value(json_object_get(node_state, "message")),
                         old_conds, gen, o->now);
}

static bool condition_true(json_t *conditions, const char *type) {
        size_t i;
        json_t *c;
        json_array_foreach(conditions, i, c) if (streq(json_string_value(json_object_get(c, "type")), type)) return streq(
                json_string_value(json_object_get(c, "status")), "True");
        return false;
}

/* Was this Ready reason already reported for this generation? Then no new event. */
static bool already_reported(json_t *old_status, const char *reason, json_int_t gen) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(old_status, "conditions"), i, c) {
                if (streq(json_string_value(json_object_get(c, "type")), "Ready") &&
                    streq(json_string_value(json_object_get(c, "reason")), reason) &&
                    json_integer_value(json_object_get(c, "observedGeneration")) == gen)
                        return true;
        }
        return false;
}

/* Which launcher the status knows, and whether persistence changed under
 * it: the record is kept for as long as that launcher runs. */
typedef struct restart {
        json_t *launcher_rec; /* NULL: no launcher (or no TPM) */
        bool required;
} restart;

static restart judge_restart(const state_observed *o) {
        restart rs = {0};
        const tpm_intent *in = &o->tpm.intent;
        if (!o->launcher || !in->has_tpm)
                return rs;
        json_t *old_rec = json_object_get(json_object_get(o->tpmstate, "status"), "launcher");
        const char *lu = md_str(o->launcher, "uid");
        if (streq(json_string_value(json_object_get(old_rec, "uid")), lu)) {
                rs.launcher_rec = json_incref(old_rec);
                rs.required = json_is_true(json_object_get(old_rec, "persistent")) != in->persistent;
        } else
                rs.launcher_rec = json_pack("{s:s, s:b}", "uid", lu ? lu : "", "persistent", in->persistent);
        return rs;
}

static json_t *build_status(const state_observed *o, const verdict *v, restart *rs, json_int_t gen) {
        json_t *old_status = json_object_get(o->tpmstate, "status");
        json_t *old_conds = json_object_get(old_status, "conditions");
        json_t *st = json_object();
        json_object_set_new(st, "phase", json_string(v->phase));
        json_object_set_new(st, "message", json_string(v->message ? v->message : ""));
        json_object_set_new(st, "observedGeneration", json_integer(gen));
        json_object_set_new(st, "persistent", json_boolean(o->tpm.intent.has_tpm && o->tpm.intent.persistent));
        if (o->pvc || v->storage_class || v->volume)
                json_object_set_new(st, "pvcName", json_string(v->volume ? v->volume : o->pvc_name));
        if (v->created_by)
                json_object_set_new(st, "pvcCreatedBy", json_string(v->created_by));
        if (v->storage_class)
                json_object_set_new(st, "storageClass", json_string(v->storage_class));
        if (v->class_source)
                json_object_set_new(st, "storageClassSource", json_string(v->class_source));
        const char *node = json_string_value(json_object_get(o->launcher, "nodeName"));
        if (node)
                json_object_set_new(st, "node", json_string(node));
        if (rs->launcher_rec)
                json_object_set_new(st, "launcher", TAKE_PTR(rs->launcher_rec));
        json_int_t warned = json_integer_value(json_object_get(old_status, "warnedGeneration"));
        if (streq(v->event_reason, "NonPersistentTPM"))
                warned = gen;
        if (warned)
                json_object_set_new(st, "warnedGeneration", json_integer(warned));
        json_t *conds = json_array();
        json_array_append_new(conds, condition("Ready", v->ready, v->ready_reason, v->message, old_conds, gen, o->now));
        json_array_append_new(
                conds, condition("RestartRequired", rs->required, rs->required ? "PersistenceChanged" : "NoRestartNeeded",
                                 rs->required ? "TPM persistence changed while the VM runs; it takes effect at the "
                                                "VM's next start"
                                              : "",
                                 old_conds, gen, o->now));
        json_array_append_new(conds, tpm_running_condition(o, old_conds, gen));
        json_object_set_new(st, "conditions", conds);
        return st;
}

static void add_event(state_decision *d, const char *reason, const char *action, char *note) {
        d->events[d->n_events++] = (state_event){reason, action, note};
}

/* The Warnings that go with the verdict: each once (the status written
 * before them is what dedups them). */
static void decide_events(const state_observed *o, verdict *v, bool restart_required, json_int_t gen,
                          state_decision *d) {
        json_t *old_status = json_object_get(o->tpmstate, "status");
        if (v->event_reason &&
            (streq(v->event_reason, "NonPersistentTPM") || streq(v->event_reason, "StorageClassNotRWX") ||
             !already_reported(old_status, v->ready_reason, gen)))
                add_event(d, v->event_reason, "Provision",
                          v->event_note ? TAKE_PTR(v->event_note) : xstrdup(v->message));
        if (restart_required && !condition_true(json_object_get(old_status, "conditions"), "RestartRequired"))
                add_event(d, "RestartRequired", "Reconcile",
                          xstrdup(o->tpm.intent.persistent
                                          ? "TPM persistence was turned on while the VM runs: restart the VM to move "
                                            "its TPM state onto the persistent volume"
                                          : "TPM persistence was turned off while the VM runs: it takes effect at the "
                                            "next start; the state volume is retained"));
}

void state_decide(const state_observed *o, state_decision *ret) {
        *ret = (state_decision){0};
        /* Gone, or going: the garbage collector removes PVC and TPMState
         * through their ownerReferences. */
        if (!o->vm || json_object_get(json_object_get(o->vm, "metadata"), "deletionTimestamp"))
                return;
        json_int_t gen = json_integer_value(json_object_get(json_object_get(o->vm, "metadata"), "generation"));
        sc_choice choice = {0};
        verdict v = {0};
        if (judge(o, gen, &choice, &v)) {
                restart rs = judge_restart(o);
                ret->report = true;
                ret->pvc = TAKE_PTR(v.pvc);
                ret->pvc_delete = TAKE_PTR(v.pvc_delete);
                ret->pvc_label = TAKE_PTR(v.pvc_label);
                ret->pvc_recreate = ret->pvc && o->tpmstate;
                ret->create_tpmstate = !o->tpmstate;
                ret->status = build_status(o, &v, &rs, gen);
                decide_events(o, &v, rs.required, gen, ret);
                json_decref(rs.launcher_rec);
        }
        verdict_done(&v);
        sc_choice_done(&choice);
}

void state_decision_done(state_decision *d) {
        json_decref(d->pvc);
        json_decref(d->pvc_delete);
        json_decref(d->pvc_label);
        json_decref(d->status);
        for (size_t i = 0; i < d->n_events; i++)
                free(d->events[i].note);
        *d = (state_decision){0};
}
