/* SPDX-License-Identifier: Apache-2.0 */
#include "vmspec.h"

#include <openssl/evp.h>
#include <string.h>

#include "base/alloc.h"

#define MAX_NAME 253
#define MAX_LABEL 63
#define HASH_CHARS 10

void tpm_intent_done(tpm_intent *t) {
        free(t->invalid);
        t->invalid = NULL;
}

static json_t *devices_tpm(json_t *vm) {
        json_t *t = json_object_get(vm, "tpm"); /* trimmed form */
        if (t)
                return t;
        json_t *n = json_object_get(vm, "spec");
        const char *path[] = {"template", "spec", "domain", "devices", "tpm"};
        for (size_t i = 0; n && i < ELEMENTSOF(path); i++)
                n = json_object_get(n, path[i]);
        return n;
}

void vm_tpm_intent(json_t *vm, tpm_intent *ret) {
        *ret = (tpm_intent){0};
        json_t *tpm = devices_tpm(vm);
        if (!tpm || json_is_null(tpm))
                return;
        if (!json_is_object(tpm)) {
                ret->invalid = xstrdup("spec.template.spec.domain.devices.tpm must be an object such as {persistent: true}");
                return;
        }
        json_t *enabled = json_object_get(tpm, "enabled");
        json_t *persistent = json_object_get(tpm, "persistent");
        if (enabled && !json_is_boolean(enabled)) {
                ret->invalid = xstrdup("devices.tpm.enabled must be true or false");
                return;
        }
        if (persistent && !json_is_boolean(persistent)) {
                ret->invalid = xstrdup("devices.tpm.persistent must be true or false");
                return;
        }
        ret->source = TPM_SOURCE_VM;
        if (enabled && json_is_false(enabled))
                return; /* enabled: false means no TPM at all */
        ret->has_tpm = true;
        ret->persistent = persistent && json_is_true(persistent);
        ret->invalid = vm_tpm_annotations_invalid(vm);
}

/* spec.template.metadata.annotations: KubeVirt copies them to the VMI, where
 * the Plugin's domain hook reads the TPM model (vm_trim keeps this path). */
static json_t *template_annotations(json_t *vm) {
        json_t *n = json_object_get(vm, "spec");
        static const char *const path[] = {"template", "metadata", "annotations"};
        for (size_t i = 0; n && i < ELEMENTSOF(path); i++)
                n = json_object_get(n, path[i]);
        return n;
}

static const char *const tpm_annotations[] = {ANNOTATION_TPM_VERSION, ANNOTATION_TPM_MODEL};

const char *vm_tpm_annotation(json_t *vm, const char *name) {
        const char *t = json_string_value(json_object_get(template_annotations(vm), name));
        if (t)
                return t;
        json_t *ann = json_object_get(json_object_get(vm, "metadata"), "annotations");
        return json_string_value(json_object_get(ann, name));
}

char *vm_tpm_annotations_conflict(json_t *vm) {
        json_t *ann = json_object_get(json_object_get(vm, "metadata"), "annotations");
        for (size_t i = 0; i < ELEMENTSOF(tpm_annotations); i++) {
                const char *v = json_string_value(json_object_get(ann, tpm_annotations[i]));
                const char *t = json_string_value(json_object_get(template_annotations(vm), tpm_annotations[i]));
                if (v && t && strcmp(v, t) != 0)
                        return xasprintf("annotation %s is \"%.64s\" on the VM but \"%.64s\" in "
                                         "spec.template.metadata.annotations; set it once, in the template (only "
                                         "the template's reaches KubeVirt's domain)",
                                         tpm_annotations[i], v, t);
        }
        return NULL;
}

void vm_copy_tpm_annotations(json_t *out, json_t *vm) {
        json_t *from = template_annotations(vm), *keep = NULL;
        for (size_t i = 0; i < ELEMENTSOF(tpm_annotations); i++) {
                json_t *v = json_object_get(from, tpm_annotations[i]);
                if (!v)
                        continue;
                if (!keep)
                        keep = json_object();
                json_object_set(keep, tpm_annotations[i], v);
        }
        if (keep)
                json_object_set_new(out, "spec",
                                    json_pack("{s:{s:{s:o}}}", "template", "metadata", "annotations", keep));
}

char *vm_tpm_annotations_invalid(json_t *vm) {
        char *conflict = vm_tpm_annotations_conflict(vm);
        if (conflict)
                return conflict;
        const char *version = vm_tpm_annotation(vm, ANNOTATION_TPM_VERSION);
        const char *model = vm_tpm_annotation(vm, ANNOTATION_TPM_MODEL);
        /* Annotation values are strings; anything else cannot come from the API server. */
        if (version && strcmp(version, "2.0") != 0 && strcmp(version, "1.2") != 0)
                return xasprintf("annotation " ANNOTATION_TPM_VERSION " is \"%.64s\"; the supported TPM versions are "
                                 "\"2.0\" (the default) and \"1.2\"",
                                 version);
        if (model && strcmp(model, "tpm-crb") != 0 && strcmp(model, "tpm-tis") != 0)
                return xasprintf("annotation " ANNOTATION_TPM_MODEL " is \"%.64s\"; the supported TPM models are "
                                 "\"tpm-crb\" (the default) and \"tpm-tis\"",
                                 model);
        /* As Nova: the CRB interface exists only for TPM 2.0. */
        if (version && strcmp(version, "1.2") == 0 && (!model || strcmp(model, "tpm-crb") == 0))
                return xstrdup("TPM version 1.2 needs model tpm-tis (annotation " ANNOTATION_TPM_MODEL
                               ": tpm-tis): the tpm-crb interface, the default model, exists only for TPM 2.0");
        return NULL;
}

static void hash_suffix(const char *s, char out[HASH_CHARS + 1]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL);
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < HASH_CHARS; i++)
                out[i] = hex[(md[i / 2] >> (i % 2 ? 0 : 4)) & 15];
        out[HASH_CHARS] = '\0';
}

/* Cutting never leaves a trailing '-' or '.', which names may not end with. */
char *name_bounded(const char *prefix, const char *name, size_t max) {
        size_t pl = strlen(prefix), nl = strlen(name);
        if (pl + nl <= max)
                return xasprintf("%s%s", prefix, name);
        char h[HASH_CHARS + 1];
        hash_suffix(name, h);
        size_t keep = max - pl - 1 - HASH_CHARS;
        while (keep > 0 && (name[keep - 1] == '-' || name[keep - 1] == '.'))
                keep--;
        return xasprintf("%s%.*s-%s", prefix, (int)keep, name, h);
}

char *state_pvc_name(const char *vm_name) {
        return name_bounded(STATE_PVC_PREFIX, vm_name, MAX_NAME);
}

char *vm_label_value(const char *vm_name) {
        return name_bounded("", vm_name, MAX_LABEL);
}

static void copy_path(json_t *dst, json_t *src, const char *key) {
        json_t *v = json_object_get(src, key);
        if (v)
                json_object_set(dst, key, v);
}

json_t *metadata_trim(json_t *obj, const char *const *keep_top_level) {
        json_t *md = json_object_get(obj, "metadata");
        json_t *out = json_object();
        json_t *m = json_object();
        static const char *const keep_md[] = {"name", "namespace", "uid", "resourceVersion", "generation",
                                              "labels", "annotations", "ownerReferences", "deletionTimestamp"};
        for (size_t i = 0; i < ELEMENTSOF(keep_md); i++)
                copy_path(m, md, keep_md[i]);
        json_object_set_new(out, "metadata", m);
        for (const char *const *k = keep_top_level; k && *k; k++)
                copy_path(out, obj, *k);
        return out;
}

json_t *vm_trim(json_t *vm) {
        json_t *out = json_object();
        json_t *md = json_object_get(vm, "metadata");
        json_t *m = json_object();
        static const char *const keep_md[] = {"name", "namespace", "uid", "resourceVersion", "generation",
                                              "deletionTimestamp"};
        for (size_t i = 0; i < ELEMENTSOF(keep_md); i++)
                copy_path(m, md, keep_md[i]);
        /* Only our own annotations (TPM version/model requests), not the VM's whole set. */
        json_t *ann = json_object_get(md, "annotations");
        const char *k;
        json_t *v;
        json_t *keep_ann = NULL;
        json_object_foreach(ann, k, v) if (strncmp(k, "vtpm-agent.io/", 14) == 0) {
                if (!keep_ann)
                        keep_ann = json_object();
                json_object_set(keep_ann, k, v);
        }
        if (keep_ann)
                json_object_set_new(m, "annotations", keep_ann);
        json_object_set_new(out, "metadata", m);
        vm_copy_tpm_annotations(out, vm);
        json_t *tpm = devices_tpm(vm);
        if (tpm)
                json_object_set(out, "tpm", tpm);
        json_t *spec = json_object_get(vm, "spec");
        copy_path(out, spec, "preference");
        copy_path(out, spec, "runStrategy");
        copy_path(out, spec, "running");
        json_t *pref_ref = json_object_get(json_object_get(vm, "status"), "preferenceRef");
        if (pref_ref)
                json_object_set(out, "preferenceRef", pref_ref);
        return out;
}

json_t *pvc_trim(json_t *pvc) {
        json_t *out = metadata_trim(pvc, NULL);
        json_t *md = json_object_get(out, "metadata");
        json_object_del(md, "annotations");
        json_object_del(md, "generation");
        /* Which of two state volumes came first (state/decide.c, duplicates). */
        copy_path(md, json_object_get(pvc, "metadata"), "creationTimestamp");
        json_t *spec = json_object_get(pvc, "spec");
        json_t *s = json_object();
        copy_path(s, spec, "accessModes");
        copy_path(s, spec, "volumeMode");
        copy_path(s, spec, "storageClassName");
        copy_path(s, spec, "volumeName");
        json_t *req = json_object_get(json_object_get(json_object_get(spec, "resources"), "requests"), "storage");
        if (req)
                json_object_set(s, "storage", req);
        json_object_set_new(out, "spec", s);
        json_t *phase = json_object_get(json_object_get(pvc, "status"), "phase");
        if (phase)
                json_object_set(out, "phase", phase);
        return out;
}

json_t *controller_ref(json_t *obj) {
        json_t *refs = json_object_get(json_object_get(obj, "metadata"), "ownerReferences");
        size_t i;
        json_t *r;
        json_array_foreach(refs, i, r) if (json_is_true(json_object_get(r, "controller"))) return r;
        return NULL;
}
