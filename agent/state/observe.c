/* SPDX-License-Identifier: Apache-2.0 */
#include "observe.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "vmspec.h"

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

/* ---- preferences, through the caches ---- */

static json_t *lookup_preference(const char *kind, const char *namespace, const char *name, void *ud) {
        state_informers *si = ud;
        if (namespace) {
                _cleanup_free_ char *k = xasprintf("%s/%s", namespace, name);
                return kube_informer_get(si->inf[STATE_INF_NSPREF], k);
        }
        return kube_informer_get(si->inf[STATE_INF_CPREF], name);
}
static json_t *lookup_revision(const char *namespace, const char *name, void *ud) {
        state_informers *si = ud;
        _cleanup_free_ char *k = xasprintf("%s/%s", namespace ? namespace : "", name);
        return kube_informer_get(si->inf[STATE_INF_REVISION], k);
}

/* ---- the StorageClass inputs ---- */

struct first_class {
        const char *path[3];
        char *value;
        char *key;
};
static void find_class(const char *key, json_t *obj, void *ud) {
        struct first_class *f = ud;
        json_t *n = json_object_get(obj, "spec");
        for (size_t i = 0; n && i < ELEMENTSOF(f->path) && f->path[i]; i++)
                n = json_object_get(n, f->path[i]);
        const char *v = json_string_value(n);
        /* Several CRs: the alphabetically first key decides, deterministically
         * (the cache is a hash map: its iteration order is not). */
        if (v && *v && (!f->key || strcmp(key, f->key) < 0)) {
                free(f->value);
                free(f->key);
                f->value = xstrdup(v);
                f->key = xstrdup(key);
        }
}

static char *first_class_in(kube_informer *inf, const char *p0, const char *p1) {
        struct first_class f = {{p0, p1, NULL}, NULL, NULL};
        kube_informer_foreach(inf, find_class, &f);
        free(f.key);
        return f.value;
}

static void collect_sc(const char *key, json_t *obj, void *ud) {
        state_observed *o = ud;
        json_t *ann = json_object_get(json_object_get(obj, "metadata"), "annotations");
        const char *d = json_string_value(json_object_get(ann, "storageclass.kubernetes.io/is-default-class"));
        const char *vd = json_string_value(json_object_get(ann, "storageclass.kubevirt.io/is-default-virt-class"));
        const char *prov = json_string_value(json_object_get(obj, "provisioner"));
        o->classes = xgrow(o->classes, &o->classes_alloc, o->n_classes + 1, sizeof(sc_info));
        o->classes[o->n_classes++] = (sc_info){xstrdup(md_str(obj, "name") ?: ""), prov ? xstrdup(prov) : NULL,
                                               d && strcmp(d, "true") == 0, vd && strcmp(vd, "true") == 0};
}

/* CDI's StorageProfile for the class, when there is one, says which access
 * and volume modes the class really offers. */
static bool profile_lacks_rwx_fs(kube_informer *profiles, const char *cls) {
        json_t *p = kube_informer_get(profiles, cls);
        if (!p)
                return false;
        json_t *sets = json_object_get(json_object_get(p, "status"), "claimPropertySets");
        bool found = false;
        size_t i, j;
        json_t *set, *mode;
        json_array_foreach(sets, i, set) {
                const char *vmode = json_string_value(json_object_get(set, "volumeMode"));
                json_array_foreach(json_object_get(set, "accessModes"), j, mode) {
                        const char *m = json_string_value(mode);
                        if (m && strcmp(m, "ReadWriteMany") == 0 && (!vmode || strcmp(vmode, "Filesystem") == 0))
                                found = true;
                }
        }
        json_decref(p);
        return !found;
}

static void observe_classes(state_informers *si, state_observed *o) {
        o->kubevirt_class = first_class_in(si->inf[STATE_INF_KUBEVIRT], "configuration", "vmStateStorageClass");
        o->hco_class = first_class_in(si->inf[STATE_INF_HCO], "vmStateStorageClass", NULL);
        kube_informer_foreach(si->inf[STATE_INF_SC], collect_sc, o);
        o->class_lacks_rwx_fs = xnew(bool, o->n_classes + 1);
        for (size_t i = 0; i < o->n_classes; i++)
                o->class_lacks_rwx_fs[i] = profile_lacks_rwx_fs(si->inf[STATE_INF_SPROFILE], o->classes[i].name);
        o->classes_read = true;
}

/* ---- the VM's launcher ---- */

/* The VM's current launcher pod (not finished, not being deleted), or NULL. */
static json_t *find_launcher(kube_informer *pods, const char *ns, const char *vm) {
        char **keys = NULL;
        size_t n = kube_informer_keys_by_label(pods, vm, &keys);
        json_t *found = NULL;
        for (size_t i = 0; i < n; i++) {
                json_t *p = kube_informer_get(pods, keys[i]);
                const char *pns = md_str(p, "namespace");
                const char *phase = json_string_value(json_object_get(p, "phase"));
                bool live = !phase || (strcmp(phase, "Succeeded") != 0 && strcmp(phase, "Failed") != 0);
                bool deleting = json_object_get(json_object_get(p, "metadata"), "deletionTimestamp") != NULL;
                if (!found && pns && strcmp(pns, ns) == 0 && live && !deleting)
                        found = json_incref(p);
                json_decref(p);
                free(keys[i]);
        }
        free(keys);
        return found;
}

/* ---- KubeVirt's state PVC ---- */

/* Which of two of KubeVirt's PVCs stands for the VM: the one the launcher
 * mounts, else the older (then the name: deterministic). */
static bool preferred(json_t *a, json_t *b, const char *claim) {
        const char *na = md_str(a, "name") ?: "", *nb = md_str(b, "name") ?: "";
        bool ma = claim && strcmp(na, claim) == 0, mb = claim && strcmp(nb, claim) == 0;
        if (ma != mb)
                return ma;
        const char *ta = md_str(a, "creationTimestamp") ?: "", *tb = md_str(b, "creationTimestamp") ?: "";
        int c = strcmp(ta, tb); /* one format (the API server's), so the strings order as the times do */
        return c < 0 || (c == 0 && strcmp(na, nb) < 0);
}

static void find_kubevirt_pvc(kube_informer *pvcs, const char *ns, const char *vm, const char *skip_name,
                              json_t *launcher, state_observed *o) {
        const char *claim = json_string_value(json_object_get(launcher, "stateClaim"));
        char **keys = NULL;
        size_t n = kube_informer_keys_by_label(pvcs, vm, &keys);
        for (size_t i = 0; i < n; i++) {
                json_t *p = kube_informer_get(pvcs, keys[i]);
                const char *name = md_str(p, "name"), *pns = md_str(p, "namespace");
                bool deleting = json_object_get(json_object_get(p, "metadata"), "deletionTimestamp") != NULL;
                if (p && name && pns && strcmp(pns, ns) == 0 && strcmp(name, skip_name) != 0 && !deleting) {
                        o->n_kv_pvcs++;
                        if (!o->kv_pvc || preferred(p, o->kv_pvc, claim)) {
                                json_decref(o->kv_pvc);
                                o->kv_pvc = json_incref(p);
                        }
                }
                json_decref(p);
                free(keys[i]);
        }
        free(keys);
}

void state_observe_tpm(json_t *vm, const preference_lookup *lookup, effective_tpm *ret) {
        vm_effective_tpm(vm, lookup, ret);
        tpm_intent *intent = &ret->intent;
        /* vm_tpm_intent() checks the annotations of a VM's own TPM; one from a preference is checked here. */
        if (!intent->invalid && intent->source == TPM_SOURCE_PREFERENCE && intent->has_tpm)
                intent->invalid = vm_tpm_annotations_invalid(vm);
}

void state_observe(state_informers *si, state_written *written, const agent_config *cfg, const char *key,
                   state_observed *ret) {
        *ret = (state_observed){.cfg = cfg, .now = now_realtime()};
        ret->vm = kube_informer_get(si->inf[STATE_INF_VM], key);
        if (!ret->vm)
                return;
        preference_lookup lookup = {lookup_preference, lookup_revision, si};
        state_observe_tpm(ret->vm, &lookup, &ret->tpm);

        const char *ns = md_str(ret->vm, "namespace"), *name = md_str(ret->vm, "name");
        ret->pvc_name = state_pvc_name(name);
        _cleanup_free_ char *pvc_key = xasprintf("%s/%s", ns, ret->pvc_name);
        ret->pvc = kube_informer_get(si->inf[STATE_INF_PVC], pvc_key);
        ret->tpmstate = state_written_current(written, key, kube_informer_get(si->inf[STATE_INF_TPMSTATE], key),
                                              md_str(ret->vm, "uid"));
        ret->launcher = find_launcher(si->inf[STATE_INF_POD], ns, name);
        find_kubevirt_pvc(si->inf[STATE_INF_PVC], ns, name, ret->pvc_name, ret->launcher, ret);
        /* The class matters only to a PVC still to be made for a persistent TPM. */
        if (!ret->pvc && !ret->kv_pvc && ret->tpm.intent.has_tpm && ret->tpm.intent.persistent)
                observe_classes(si, ret);
}

void state_observed_done(state_observed *o) {
        json_decref(o->vm);
        effective_tpm_done(&o->tpm);
        free(o->pvc_name);
        json_decref(o->pvc);
        json_decref(o->kv_pvc);
        json_decref(o->tpmstate);
        json_decref(o->launcher);
        free(o->kubevirt_class);
        free(o->hco_class);
        for (size_t i = 0; i < o->n_classes; i++) {
                free((char *)o->classes[i].name);
                free((char *)o->classes[i].provisioner);
        }
        free(o->classes);
        free(o->class_lacks_rwx_fs);
        *o = (state_observed){0};
}
