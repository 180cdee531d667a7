/* SPDX-License-Identifier: Apache-2.0 */
/* What the node controller observes: its informers (launchers on this node,
 * our attachment pods, VMs, TPMStates, state PVCs), each cache trimmed to
 * what the node reads, and the handlers that wake the launchers concerned.
 * A reconcile reads these caches only: a start issues no GET of the VM, its
 * TPMState or its PVC. */
#include <string.h>

#include "attachment_check.h"
#include "attachment_pod.h"
#include "base/alloc.h"
#include "base/log.h"
#include "launcher_identity.h"
#include "node/node.h"
#include "proc/proc.h"
#include "resources.h"
#include "vmspec.h"

DEFINE_JSON_CLEANUP

/* Enqueue every known launcher that `match` accepts. Informer callbacks and
 * the ticker use it: they only wake launchers, reconcile does the work. */
void node_wake_launchers(node_controller *nc, bool (*match)(const launcher *l, const void *arg), const void *arg) {
        pthread_mutex_lock(&nc->lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(nc->launchers, &it, &k, &v);)
                if (match(v, arg))
                        kube_controller_enqueue(nc->ctl, k);
        pthread_mutex_unlock(&nc->lock);
}

typedef struct vm_ref {
        const char *ns, *name;
} vm_ref;

static bool launcher_is_for_vm(const launcher *l, const void *arg) {
        const vm_ref *vm = arg;
        return str_eq(l->ns, vm->ns) && str_eq(l->vm_name, vm->name);
}

static void wake_vm(node_controller *nc, json_t *obj) {
        vm_ref vm = {node_md(obj, "namespace"), node_md(obj, "name")};
        if (vm.ns && vm.name)
                node_wake_launchers(nc, launcher_is_for_vm, &vm);
}

static void copy_fields(json_t *to, json_t *from, const char *const *keys, size_t n) {
        for (size_t i = 0; i < n; i++) {
                json_t *v = json_object_get(from, keys[i]);
                if (v)
                        json_object_set(to, keys[i], v);
        }
}

static json_t *trim_metadata(json_t *o, const char *const *anns, size_t n_anns) {
        static const char *const keep[] = {"name", "namespace", "uid", "resourceVersion"};
        json_t *omd = json_object_get(o, "metadata");
        json_t *m = json_object();
        copy_fields(m, omd, keep, ELEMENTSOF(keep));
        if (n_anns) {
                json_t *ann = json_object();
                copy_fields(ann, json_object_get(omd, "annotations"), anns, n_anns);
                json_object_set_new(m, "annotations", ann);
        }
        return json_pack("{s:o}", "metadata", m);
}

/* ---- launcher pods and attachment pods ---- */

static void on_launcher(const char *key, json_t *obj, void *ud) {
        node_controller *nc = ud;
        kube_controller_enqueue(nc->ctl, key);
}
static void on_launcher_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_launcher(key, n, ud);
}

static json_t *trim_pod(json_t *o, void *ud) {
        json_t *out = json_object();
        json_t *m = json_object();
        static const char *const keep[] = {"name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp"};
        copy_fields(m, json_object_get(o, "metadata"), keep, ELEMENTSOF(keep));
        json_object_set_new(out, "metadata", m);
        json_t *status = launcher_trim_status(o);
        json_t *phase = json_object_get(json_object_get(o, "status"), "phase");
        if (phase)
                json_object_set(status, "phase", phase);
        json_object_set_new(out, "status", status);
        /* KubeVirt's launcher mounts the VM's state PVC itself (pod volume
         * vm-state): which claim, for act_volume.c. */
        size_t i;
        json_t *vol;
        json_array_foreach(json_object_get(json_object_get(o, "spec"), "volumes"), i, vol) {
                json_t *claim = json_object_get(json_object_get(vol, "persistentVolumeClaim"), "claimName");
                if (str_eq(json_string_value(json_object_get(vol, "name")), KUBEVIRT_STATE_VOLUME) &&
                    json_is_string(claim)) {
                        json_object_set(out, "stateClaim", claim);
                        break;
                }
        }
        return out;
}

/* Attachment pods: only what ensure_attachment() reads, and the launcher
 * (their controlling owner) to wake when one changes. */
static json_t *trim_attachment(json_t *o, void *ud) {
        json_t *out = trim_pod(o, ud);
        json_object_set_new(out, "spec", attachment_trim_spec(o));
        json_t *owners = json_object_get(json_object_get(o, "metadata"), "ownerReferences");
        json_t *md_out = json_object_get(out, "metadata");
        size_t i;
        json_t *ref;
        json_array_foreach(owners, i, ref) {
                if (json_is_true(json_object_get(ref, "controller")) && json_object_get(ref, "name")) {
                        json_object_set_new(md_out, "owner", json_incref(json_object_get(ref, "name")));
                        break;
                }
        }
        return out;
}

static void on_attachment(const char *key, json_t *obj, void *ud) {
        node_controller *nc = ud;
        const char *ns = node_md(obj, "namespace"), *owner = node_md(obj, "owner");
        if (!ns || !owner)
                return;
        _cleanup_free_ char *launcher_key = xasprintf("%s/%s", ns, owner);
        kube_controller_enqueue(nc->ctl, launcher_key);
}
static void on_attachment_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_attachment(key, n, ud);
}

/* ---- VMs: uid, TPM intent, version/model annotations ---- */

static json_t *trim_vm(json_t *o, void *ud) {
        static const char *const anns[] = {ANNOTATION_TPM_VERSION, ANNOTATION_TPM_MODEL};
        json_t *out = trim_metadata(o, anns, ELEMENTSOF(anns));
        vm_copy_tpm_annotations(out, o);
        json_t *tpm = json_object_get(o, "spec");
        static const char *const path[] = {"template", "spec", "domain", "devices", "tpm"};
        for (size_t i = 0; tpm && i < ELEMENTSOF(path); i++)
                tpm = json_object_get(tpm, path[i]);
        if (tpm)
                json_object_set(out, "tpm", tpm); /* vm_tpm_intent() reads the trimmed form */
        /* The name of KubeVirt's own swtpm directory for this VM (act_kubevirt.c). */
        json_t *fw = json_object_get(o, "spec");
        static const char *const fw_path[] = {"template", "spec", "domain", "firmware", "uuid"};
        for (size_t i = 0; fw && i < ELEMENTSOF(fw_path); i++)
                fw = json_object_get(fw, fw_path[i]);
        if (json_is_string(fw))
                json_object_set(out, "firmwareUUID", fw);
        return out;
}

static void on_vm(const char *key, json_t *obj, void *ud) {
        wake_vm(ud, obj);
}
static void on_vm_update(const char *key, json_t *o, json_t *n, void *ud) {
        bool same = str_eq(node_md(o, "uid"), node_md(n, "uid")) &&
                    json_equal(json_object_get(o, "tpm"), json_object_get(n, "tpm")) &&
                    json_equal(json_object_get(json_object_get(o, "metadata"), "annotations"),
                               json_object_get(json_object_get(n, "metadata"), "annotations")) &&
                    json_equal(json_object_get(o, "spec"), json_object_get(n, "spec")); /* template annotations */
        if (!same)
                wake_vm(ud, n);
}

/* ---- VMIs on or migrating to this node: a migration's proof and progress ---- */

/* KubeVirt writes status.migrationState; tenants cannot (virt-api refuses
 * status changes from users): what proves a target launcher is the one
 * KubeVirt started, and says when the migration completed or failed. */
static json_t *trim_vmi(json_t *o, void *ud) {
        json_t *out = trim_metadata(o, NULL, 0);
        json_t *ms = json_object_get(json_object_get(o, "status"), "migrationState");
        if (json_is_object(ms)) {
                static const char *const keep[] = {"migrationUid", "targetPod", "targetNode", "sourcePod", "sourceNode",
                                                   "completed", "failed", "abortStatus", "startTimestamp",
                                                   "endTimestamp"};
                json_t *m = json_object();
                copy_fields(m, ms, keep, ELEMENTSOF(keep));
                json_object_set_new(out, "status", json_pack("{s:o}", "migrationState", m));
        }
        return out;
}

static void on_vmi_update(const char *key, json_t *o, json_t *n, void *ud) {
        if (!json_equal(json_object_get(o, "status"), json_object_get(n, "status")))
                wake_vm(ud, n);
}

/* ---- TPMStates: the cluster's verdict, rotation requests, status.keys ---- */

static json_t *trim_tpmstate(json_t *o, void *ud) {
        static const char *const anns[] = {ANN_ROTATE_KEK, ANN_ROTATE_DEK};
        static const char *const status_keep[] = {"phase", "persistent", "pvcName", "keys", "nodeState"};
        json_t *out = trim_metadata(o, anns, ELEMENTSOF(anns));
        json_t *st = json_object_get(o, "status");
        if (st) {
                json_t *s = json_object();
                copy_fields(s, st, status_keep, ELEMENTSOF(status_keep));
                json_object_set_new(out, "status", s);
        }
        return out;
}

static bool field_changed(json_t *o, json_t *n, const char *parent, const char *name) {
        json_t *a = json_object_get(json_object_get(o, parent), name), *b = json_object_get(json_object_get(n, parent), name);
        return !(a == b || (a && b && json_equal(a, b)));
}

/* Only a change of a request or of the verdict wakes the VM's launchers, so
 * the node's own status writes (nodeState, keys) do not. */
static void on_tpmstate_update(const char *key, json_t *o, json_t *n, void *ud) {
        json_t *oa = json_object_get(o, "metadata"), *na = json_object_get(n, "metadata");
        if (field_changed(oa, na, "annotations", ANN_ROTATE_KEK) || field_changed(oa, na, "annotations", ANN_ROTATE_DEK) ||
            field_changed(o, n, "status", "phase") || field_changed(o, n, "status", "persistent") ||
            field_changed(o, n, "status", "pvcName"))
                wake_vm(ud, n);
}

/* ---- state PVCs: name and volume ---- */

static json_t *trim_pvc(json_t *o, void *ud) {
        json_t *out = trim_metadata(o, NULL, 0);
        json_t *pv = json_object_get(json_object_get(o, "spec"), "volumeName");
        if (pv)
                json_object_set_new(out, "spec", json_pack("{s:O}", "volumeName", pv));
        return out;
}

static void on_informer_error(const vt_error *err, void *ud) {
        log_kv(LOG_LEVEL_DEBUG, "node controller watch failed; retrying", "error", err ? err->msg : "?", NULL);
}

int node_informers_new(node_controller *nc, vt_error **err) {
        _cleanup_free_ char *fs = xasprintf("spec.nodeName=%s", nc->node);
        _cleanup_free_ char *vmi_here = xasprintf(LABEL_VMI_NODE "=%s", nc->node);
        _cleanup_free_ char *vmi_incoming = xasprintf(LABEL_VMI_MIGRATION_TARGET_NODE "=%s", nc->node);
        struct {
                kube_informer **inf;
                const kube_resource *res;
                kube_informer_options o;
                kube_informer_handlers h;
        } defs[] = {
                {&nc->pods, &res_pod, {.label_selector = "kubevirt.io=virt-launcher", .field_selector = fs},
                 {on_launcher, on_launcher_update, on_launcher, trim_pod}},
                {&nc->attachments, &res_pod, {.label_selector = LABEL_ATTACHMENT_FOR, .field_selector = fs},
                 {on_attachment, on_attachment_update, on_attachment, trim_attachment}},
                {&nc->vms, &res_vm, {0}, {on_vm, on_vm_update, NULL, trim_vm}},
                {&nc->tpmstates, &res_tpmstate, {0}, {on_vm, on_tpmstate_update, NULL, trim_tpmstate}},
                {&nc->pvcs, &res_pvc, {0}, {NULL, NULL, NULL, trim_pvc}},
                {&nc->vmis, &res_vmi, {.label_selector = vmi_here}, {on_vm, on_vmi_update, on_vm, trim_vmi}},
                {&nc->vmis_incoming, &res_vmi, {.label_selector = vmi_incoming},
                 {on_vm, on_vmi_update, on_vm, trim_vmi}},
        };
        for (size_t i = 0; i < ELEMENTSOF(defs); i++) {
                defs[i].h.userdata = nc;
                defs[i].h.on_error = on_informer_error;
                int r = kube_informer_new(nc->client, defs[i].res, &defs[i].o, &defs[i].h, defs[i].inf);
                if (r < 0)
                        return vt_error_set(err, -r, "cannot make the node controller's informers");
                kube_controller_add_informer(nc->ctl, *defs[i].inf);
        }
        return 0;
}

/* ---- one launcher's observation ---- */

static json_t *cached(kube_informer *inf, const char *ns, const char *name) {
        if (!ns || !name || !*name)
                return NULL;
        _cleanup_free_ char *key = xasprintf("%s/%s", ns, name);
        return kube_informer_get(inf, key);
}

/* The launcher's VMI, where it says most about this node's migration: the
 * incoming cache first (a target before completion), then the node's. */
static json_t *cached_vmi(node_controller *nc, const launcher *l) {
        json_t *v = cached(nc->vmis_incoming, l->ns, l->vm_name);
        return v ? v : cached(nc->vmis, l->ns, l->vm_name);
}

void node_observe(node_controller *nc, const launcher *l, node_observed *ret) {
        node_observed o = {0};
        /* A migration's target: its proof, and whether it completed. */
        if (l->migration_uid && !l->handed_over)
                o.vmi = cached_vmi(nc, l);
        if (l->swtpm_pid > 0) {
                o.swtpm_alive = swtpm_alive(l->swtpm_pid, l->swtpm_start);
                uint64_t st = 0;
                o.launcher_alive = l->pid > 0 && proc_start_time(l->pid, &st, NULL) == 0 && st == l->pid_start;
                if (!o.swtpm_alive && l->persistent && l->vm_uid) {
                        _cleanup_free_ char *me = lock_identity(nc, l);
                        o.lock_fenced = state_lock_fenced(nc->locks, l->vm_uid, me);
                }
                *ret = o;
                return; /* a recorded swtpm: nothing of the cluster's is read */
        }
        o.vm = cached(nc->vms, l->ns, l->vm_name);
        o.ts = cached(nc->tpmstates, l->ns, l->vm_name);
        const char *pvc = json_string_value(json_object_get(json_object_get(o.ts, "status"), "pvcName"));
        o.pvc = cached(nc->pvcs, l->ns, pvc);
        *ret = o;
}
