/* SPDX-License-Identifier: Apache-2.0 */
#include "preference.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/macro.h"

#define CLUSTER_KIND "VirtualMachineClusterPreference"
#define NS_KIND "VirtualMachinePreference"

void effective_tpm_done(effective_tpm *t) {
        tpm_intent_done(&t->intent);
        free(t->preference_kind);
        free(t->preference_name);
        free(t->revision);
        free(t->missing);
        *t = (effective_tpm){0};
}

char *preference_key(const char *kind, const char *namespace, const char *name) {
        bool cluster = !kind || strcmp(kind, NS_KIND) != 0;
        return xasprintf("%s/%s/%s", cluster ? CLUSTER_KIND : NS_KIND, cluster ? "" : (namespace ? namespace : ""), name);
}

/* status.preferenceRef.controllerRevisionRef.name: current KubeVirt's. */
static const char *status_revision(json_t *vm) {
        json_t *ref = json_object_get(vm, "preferenceRef"); /* trimmed VMs */
        if (!ref)
                ref = json_object_get(json_object_get(vm, "status"), "preferenceRef");
        const char *r = json_string_value(json_object_get(json_object_get(ref, "controllerRevisionRef"), "name"));
        return r && *r ? r : NULL;
}

/* spec.preference.revisionName: older releases'. Trimmed VMs carry both. */
static const char *spec_revision(json_t *vm) {
        json_t *pref = json_object_get(vm, "preference");
        if (!pref)
                pref = json_object_get(json_object_get(vm, "spec"), "preference");
        const char *r = json_string_value(json_object_get(pref, "revisionName"));
        return r && *r ? r : NULL;
}

static const char *frozen_revision(json_t *vm) {
        const char *r = status_revision(vm);
        return r ? r : spec_revision(vm);
}

static json_t *vm_preference(json_t *vm) {
        json_t *p = json_object_get(vm, "preference");
        return p ? p : json_object_get(json_object_get(vm, "spec"), "preference");
}

char *vm_live_preference_key(json_t *vm) {
        json_t *pref = vm_preference(vm);
        const char *name = json_string_value(json_object_get(pref, "name"));
        if (!name || frozen_revision(vm))
                return NULL;
        const char *ns = json_string_value(json_object_get(json_object_get(vm, "metadata"), "namespace"));
        return preference_key(json_string_value(json_object_get(pref, "kind")), ns, name);
}

/* preferredTPM from a preference object, or from a ControllerRevision's data
 * (which holds the whole preference object). */
static json_t *preferred_tpm(json_t *pref) {
        json_t *spec = json_object_get(pref, "spec");
        return json_object_get(json_object_get(spec, "devices"), "preferredTPM");
}

void vm_effective_tpm(json_t *vm, const preference_lookup *lookup, effective_tpm *ret) {
        *ret = (effective_tpm){0};
        vm_tpm_intent(vm, &ret->intent);
        if (ret->intent.source == TPM_SOURCE_VM || ret->intent.invalid)
                return; /* the VM's own devices.tpm wins, even persistent: false or enabled: false */
        json_t *pref = vm_preference(vm);
        const char *name = json_string_value(json_object_get(pref, "name"));
        if (!name || !*name)
                return;
        const char *kind = json_string_value(json_object_get(pref, "kind"));
        bool cluster = !kind || !*kind || strcmp(kind, CLUSTER_KIND) == 0;
        if (!cluster && strcmp(kind, NS_KIND) != 0) {
                ret->intent.invalid = xasprintf("spec.preference.kind \"%s\" is neither %s nor %s", kind, CLUSTER_KIND, NS_KIND);
                return;
        }
        const char *ns = json_string_value(json_object_get(json_object_get(vm, "metadata"), "namespace"));
        ret->preference_kind = xstrdup(cluster ? CLUSTER_KIND : NS_KIND);
        ret->preference_name = xstrdup(name);

        /* The status's revision, else the spec's: virt-controller writes the
         * status's name before it stores the revision, and may fail to store it
         * (its FailedCreate event), while spec.preference.revisionName still
         * names the one that froze the VM. */
        json_t *source = NULL;
        const char *revs[] = {status_revision(vm), spec_revision(vm)};
        for (size_t i = 0; i < ELEMENTSOF(revs) && !source; i++) {
                if (!revs[i] || !lookup || !lookup->revision)
                        continue;
                json_t *cr = lookup->revision(ns, revs[i], lookup->userdata);
                if (cr) {
                        /* Found: what it froze is final, even with no preferredTPM in it. */
                        json_t *data = json_object_get(cr, "data");
                        source = data ? json_incref(data) : json_object();
                        ret->revision = xstrdup(revs[i]);
                        json_decref(cr);
                }
        }
        if (!source && lookup && lookup->preference)
                source = lookup->preference(ret->preference_kind, cluster ? NULL : ns, name, lookup->userdata);
        if (!source) {
                ret->missing = cluster ? xasprintf("the VM names %s \"%s\", which does not exist", CLUSTER_KIND, name)
                                       : xasprintf("the VM names %s \"%s\" in namespace %s, which does not exist", NS_KIND,
                                                   name, ns ? ns : "");
                return;
        }
        json_t *tpm = preferred_tpm(source);
        if (tpm && !json_is_null(tpm)) {
                /* Same rules as the VM's own field, through a wrapper in trimmed-VM shape. */
                json_t *wrap = json_pack("{s:O}", "tpm", tpm);
                tpm_intent_done(&ret->intent);
                vm_tpm_intent(wrap, &ret->intent);
                json_decref(wrap);
                if (ret->intent.source == TPM_SOURCE_VM)
                        ret->intent.source = TPM_SOURCE_PREFERENCE;
                if (ret->intent.invalid) {
                        char *m = xasprintf("preference %s: %s", name, ret->intent.invalid);
                        free(ret->intent.invalid);
                        ret->intent.invalid = m;
                }
        }
        json_decref(source);
}
