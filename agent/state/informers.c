/* SPDX-License-Identifier: Apache-2.0 */
#include "informers.h"

#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "preference.h"
#include "resources.h"
#include "vmspec.h"
#include "written.h"

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

static void enqueue_ns_name(state_informers *si, const char *ns, const char *name) {
        if (!ns || !name)
                return;
        _cleanup_free_ char *key = xasprintf("%s/%s", ns, name);
        kube_controller_enqueue(si->ctl, key);
}

/* ---- handlers: map every change to the VM keys it concerns ---- */

static void on_vm(const char *key, json_t *obj, void *ud) {
        state_informers *si = ud;
        kube_controller_enqueue(si->ctl, key);
}
static void on_vm_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_vm(key, n, ud);
}

static void enqueue_vm_key(const char *key, json_t *obj, void *ud) {
        on_vm(key, obj, ud);
}

/* A cluster-wide input (StorageClass, KubeVirt, HyperConverged) changed:
 * every VM may resolve differently now. Reconciles of unchanged VMs write
 * nothing, so this costs CPU, not API requests. */
void state_informers_enqueue_all(state_informers *si) {
        kube_informer_foreach(si->inf[STATE_INF_VM], enqueue_vm_key, si);
}
static void on_global(const char *key, json_t *obj, void *ud) {
        state_informers_enqueue_all(ud);
}
static void on_global_update(const char *key, json_t *o, json_t *n, void *ud) {
        state_informers_enqueue_all(ud);
}

/* PVC and TPMState keys map to their VM: by controlling owner when it is a
 * VM, else by the PVC naming rule (a foreign PVC in the way); a PVC with
 * KubeVirt's state label also to the VM it names. */
static void enqueue_owner_vm(state_informers *si, json_t *obj, bool is_pvc) {
        const char *name = md_str(obj, "name");
        json_t *ref = controller_ref(obj);
        const char *kind = json_string_value(json_object_get(ref, "kind"));
        const char *vm = NULL;
        if (kind && strcmp(kind, "VirtualMachine") == 0)
                vm = json_string_value(json_object_get(ref, "name"));
        else if (name && is_pvc && strncmp(name, STATE_PVC_PREFIX, strlen(STATE_PVC_PREFIX)) == 0)
                vm = name + strlen(STATE_PVC_PREFIX);
        else if (!is_pvc)
                vm = name;
        enqueue_ns_name(si, md_str(obj, "namespace"), vm);
        /* KubeVirt's state PVC of a VM, whoever owns it: that VM too. */
        const char *kv_vm = is_pvc ? kube_object_label(obj, LABEL_KUBEVIRT_STATE) : NULL;
        if (kv_vm && (!vm || strcmp(kv_vm, vm) != 0))
                enqueue_ns_name(si, md_str(obj, "namespace"), kv_vm);
}
static void on_pvc(const char *key, json_t *obj, void *ud) {
        enqueue_owner_vm(ud, obj, true);
}
static void on_pvc_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue_owner_vm(ud, n, true);
}
static void on_tpmstate(const char *key, json_t *obj, void *ud) {
        enqueue_owner_vm(ud, obj, false);
}
static void on_tpmstate_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue_owner_vm(ud, n, false);
}
static void on_pod(const char *key, json_t *obj, void *ud) {
        enqueue_ns_name(ud, md_str(obj, "namespace"), kube_object_label(obj, "vm.kubevirt.io/name"));
}
static void on_pod_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_pod(key, n, ud);
}

/* A preference changed: requeue the VMs that name it without a frozen
 * revision (those with one keep what KubeVirt froze). A scan of the cache,
 * never a request per VM; preferences change rarely. */
struct pref_match {
        state_informers *si;
        const char *key;
};
static void enqueue_if_uses(const char *vm_key, json_t *vm, void *ud) {
        struct pref_match *m = ud;
        _cleanup_free_ char *k = vm_live_preference_key(vm);
        if (k && strcmp(k, m->key) == 0)
                kube_controller_enqueue(m->si->ctl, vm_key);
}
static void on_pref_common(json_t *obj, const char *kind, state_informers *si) {
        _cleanup_free_ char *key = preference_key(kind, md_str(obj, "namespace"), md_str(obj, "name"));
        struct pref_match m = {si, key};
        kube_informer_foreach(si->inf[STATE_INF_VM], enqueue_if_uses, &m);
}
static void on_cpref(const char *key, json_t *obj, void *ud) {
        on_pref_common(obj, "VirtualMachineClusterPreference", ud);
}
static void on_cpref_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_cpref(key, n, ud);
}
static void on_nspref(const char *key, json_t *obj, void *ud) {
        on_pref_common(obj, "VirtualMachinePreference", ud);
}
static void on_nspref_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_nspref(key, n, ud);
}

static void on_informer_error(const vt_error *err, void *ud) {
        log_kv(LOG_LEVEL_WARN, "list/watch failed; retrying with backoff", "error", err->msg, NULL);
}

/* ---- transforms: cache only what reconciles read ---- */

/* Keep only preferredTPM of preferences and of frozen revisions. */
static json_t *trim_preferred_tpm(json_t *o, const char *const *path, size_t n) {
        json_t *out = metadata_trim(o, NULL);
        json_object_del(json_object_get(out, "metadata"), "annotations");
        json_object_del(json_object_get(out, "metadata"), "ownerReferences");
        json_t *v = o;
        for (size_t i = 0; v && i < n; i++)
                v = json_object_get(v, path[i]);
        json_t *spec = v ? json_pack("{s:{s:O}}", "devices", "preferredTPM", v) : json_object();
        if (n == 4) /* a revision keeps its data even without preferredTPM: frozen means frozen */
                json_object_set_new(out, "data", json_pack("{s:o}", "spec", spec));
        else
                json_object_set_new(out, "spec", spec);
        return out;
}
static json_t *trim_pref(json_t *o, void *ud) {
        static const char *const path[] = {"spec", "devices", "preferredTPM"};
        return trim_preferred_tpm(o, path, 3);
}
static json_t *trim_revision(json_t *o, void *ud) {
        static const char *const path[] = {"data", "spec", "devices", "preferredTPM"};
        return trim_preferred_tpm(o, path, 4);
}
static json_t *trim_sprofile(json_t *o, void *ud) {
        json_t *out = metadata_trim(o, NULL);
        json_t *sets = json_object_get(json_object_get(o, "status"), "claimPropertySets");
        if (sets)
                json_object_set_new(out, "status", json_pack("{s:O}", "claimPropertySets", sets));
        return out;
}
static json_t *trim_vm(json_t *o, void *ud) {
        return vm_trim(o);
}
static json_t *trim_pvc(json_t *o, void *ud) {
        return pvc_trim(o);
}
static json_t *trim_sc(json_t *o, void *ud) {
        static const char *const keep[] = {"provisioner", NULL};
        return metadata_trim(o, keep);
}
static json_t *trim_spec(json_t *o, void *ud) {
        static const char *const keep[] = {"spec", NULL};
        return metadata_trim(o, keep);
}
static json_t *trim_pod(json_t *o, void *ud) {
        json_t *out = metadata_trim(o, NULL);
        json_t *md = json_object_get(out, "metadata");
        json_object_del(md, "annotations");
        json_object_del(md, "ownerReferences");
        json_t *phase = json_object_get(json_object_get(o, "status"), "phase");
        json_t *node = json_object_get(json_object_get(o, "spec"), "nodeName");
        if (phase)
                json_object_set(out, "phase", phase);
        if (node)
                json_object_set(out, "nodeName", node);
        /* The state PVC a real launcher mounts (KubeVirt's pod volume vm-state). */
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(json_object_get(o, "spec"), "volumes"), i, v) {
                const char *vname = json_string_value(json_object_get(v, "name"));
                json_t *claim = json_object_get(json_object_get(v, "persistentVolumeClaim"), "claimName");
                if (vname && strcmp(vname, KUBEVIRT_STATE_VOLUME) == 0 && json_is_string(claim))
                        json_object_set(out, "stateClaim", claim);
        }
        return out;
}
static json_t *trim_tpmstate(json_t *o, void *ud) {
        return state_tpmstate_trim(o);
}
/* A Lease: its name and resourceVersion are all the garbage collector reads. */
static json_t *trim_lease(json_t *o, void *ud) {
        return json_pack("{s:{s:O?, s:O?}}", "metadata", "name", json_object_get(json_object_get(o, "metadata"), "name"),
                         "resourceVersion", json_object_get(json_object_get(o, "metadata"), "resourceVersion"));
}

int state_informers_init(state_informers *si, kube_client *c, const agent_config *cfg, kube_controller *ctl,
                         vt_error **err) {
        si->ctl = ctl;
        struct {
                const kube_resource *res;
                kube_informer_options o;
                kube_informer_handlers h;
        } defs[_STATE_INF_MAX] = {
                [STATE_INF_VM] = {&res_vm, {0}, {on_vm, on_vm_update, on_vm, trim_vm}},
                [STATE_INF_PVC] = {&res_pvc, {.index_label = LABEL_KUBEVIRT_STATE}, {on_pvc, on_pvc_update, on_pvc, trim_pvc}},
                [STATE_INF_SC] = {&res_sc, {0}, {on_global, on_global_update, on_global, trim_sc}},
                [STATE_INF_KUBEVIRT] = {&res_kubevirt, {.optional = true}, {on_global, on_global_update, on_global, trim_spec}},
                [STATE_INF_HCO] = {&res_hco, {.optional = true}, {on_global, on_global_update, on_global, trim_spec}},
                [STATE_INF_POD] = {&res_pod,
                                   {.label_selector = "kubevirt.io=virt-launcher", .index_label = "vm.kubevirt.io/name"},
                                   {on_pod, on_pod_update, on_pod, trim_pod}},
                [STATE_INF_TPMSTATE] = {&res_tpmstate, {.label_selector = LABEL_MANAGED_BY "=" LABEL_MANAGER_VALUE},
                                        {on_tpmstate, on_tpmstate_update, on_tpmstate, trim_tpmstate}},
                [STATE_INF_CPREF] = {&res_cpref, {.optional = true}, {on_cpref, on_cpref_update, on_cpref, trim_pref}},
                [STATE_INF_NSPREF] = {&res_nspref, {.optional = true}, {on_nspref, on_nspref_update, on_nspref, trim_pref}},
                /* Revisions are read, not reacted to: KubeVirt updates the VM when it freezes one. */
                [STATE_INF_REVISION] = {&res_revision, {0}, {NULL, NULL, NULL, trim_revision}},
                [STATE_INF_SPROFILE] = {&res_sprofile, {.optional = true}, {NULL, NULL, NULL, trim_sprofile}},
                /* Swept on a timer by the leader, not reacted to. */
                [STATE_INF_LEASE] = {&res_lease, {.namespace = cfg->namespace}, {NULL, NULL, NULL, trim_lease}},
        };
        for (int i = 0; i < _STATE_INF_MAX; i++) {
                defs[i].h.userdata = si;
                defs[i].h.on_error = on_informer_error;
                int r = kube_informer_new(c, defs[i].res, &defs[i].o, &defs[i].h, &si->inf[i]);
                if (r < 0)
                        return vt_error_set(err, -r, "cannot set up the state controller's informer for %s",
                                            defs[i].res->plural);
                /* The Lease sweep is best effort: a Role without leases
                 * list/watch (an older release's) must not stop the
                 * controller from starting. */
                if (i == STATE_INF_LEASE)
                        kube_controller_add_background_informer(ctl, si->inf[i]);
                else
                        kube_controller_add_informer(ctl, si->inf[i]);
        }
        return 0;
}
