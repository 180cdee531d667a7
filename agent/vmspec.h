/* SPDX-License-Identifier: Apache-2.0 */
/* What a VirtualMachine asks of its TPM, and the names derived from it.
 * Pure functions over JSON: no I/O, so every rule has a unit test. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "base/error.h"

#define STATE_PVC_PREFIX "persistent-state-for-"
/* KubeVirt's backend-storage PVC (pkg/storage/backend-storage): it makes one
 * named generateName "persistent-state-for-<vm>-" with this label set to the
 * VM's name, finds it by the label, and adopts (labels) a PVC named exactly
 * persistent-state-for-<vm> when no labelled one exists. */
#define LABEL_KUBEVIRT_STATE "persistent-state-for"
/* The launcher pod's volume KubeVirt mounts that PVC as. */
#define KUBEVIRT_STATE_VOLUME "vm-state"
/* KubeVirt's labels for live migration: a target launcher pod's migration,
 * and a VMI's node and migration target node (virt-handler's selectors). */
#define LABEL_MIGRATION_JOB "kubevirt.io/migrationJobUID"
#define LABEL_VMI_NODE "kubevirt.io/nodeName"
#define LABEL_VMI_MIGRATION_TARGET_NODE "kubevirt.io/migrationTargetNodeName"
#define LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define LABEL_MANAGER_VALUE "vtpm-agent"
#define LABEL_VM "vtpm-agent.io/vm"
#define ANNOTATION_VM_NAME "vtpm-agent.io/vm-name"
/* Requests the node controller honours; validated here so a bad one is
 * reported on the VM before any launcher starts. */
#define ANNOTATION_TPM_VERSION "vtpm-agent.io/tpm-version" /* "2.0" (default) or "1.2" */
#define ANNOTATION_TPM_MODEL "vtpm-agent.io/tpm-model"     /* "tpm-crb" (default) or "tpm-tis" */

typedef enum tpm_source { TPM_SOURCE_NONE, TPM_SOURCE_VM, TPM_SOURCE_PREFERENCE } tpm_source;

typedef struct tpm_intent {
        bool has_tpm;    /* the VM gets a vTPM at all */
        bool persistent; /* its state must survive stops */
        tpm_source source;
        char *invalid;   /* non-NULL: the spec is malformed; says how (no secrets) */
} tpm_intent;

/* Read spec.template.spec.domain.devices.tpm from a (full or trimmed) VM.
 * `enabled: false` means no TPM; a non-boolean `persistent` or `enabled` is
 * invalid input. Preferences are applied by the caller (preferences.c). */
void vm_tpm_intent(json_t *vm, tpm_intent *ret);
void tpm_intent_done(tpm_intent *t);
/* The TPM version and model annotations may be on the VM's template
 * (spec.template.metadata.annotations: KubeVirt copies them to the VMI, where
 * the Plugin's domain hook sets the real domain's model from them) or on the
 * VM itself (the older place, which the domain never sees). */
/* The value of annotation `name`: the template's, else the VM's; NULL if neither. */
const char *vm_tpm_annotation(json_t *vm, const char *name);
/* NULL, or why the VM and its template ask for different values (caller frees). */
char *vm_tpm_annotations_conflict(json_t *vm);
/* Copy the template's TPM annotations into `out` at the same path (the informers' trims). */
void vm_copy_tpm_annotations(json_t *out, json_t *vm);
/* NULL when the VM's vtpm-agent.io/tpm-version and tpm-model annotations
 * (both optional) are usable, else why not (caller frees). Version 1.2 needs
 * model tpm-tis, as in OpenStack Nova. vm_tpm_intent() applies it to VMs
 * that have a TPM. */
char *vm_tpm_annotations_invalid(json_t *vm);

/* prefix + name, cut to `max` characters with "-<hash of name>" when it is
 * longer (deterministic: the same name always gives the same result). `max`
 * must leave room for the prefix and an 11-character suffix. */
char *name_bounded(const char *prefix, const char *name, size_t max);

/* persistent-state-for-<vm>, or, past the 253-character limit of an object
 * name, a deterministic shortened form ending in a hash of the VM's name. */
char *state_pvc_name(const char *vm_name);
/* A label value (max 63 characters) naming the VM: the name itself when it
 * fits, else a shortened form with a hash suffix. */
char *vm_label_value(const char *vm_name);

/* Keep only what the controllers read of a VM (the informer's transform). */
json_t *vm_trim(json_t *vm);
/* The same for PVCs, StorageClasses, pods and other objects it caches. */
json_t *pvc_trim(json_t *pvc);
json_t *metadata_trim(json_t *obj, const char *const *keep_top_level);

/* The controlling ownerReference's uid, kind and name, or NULL. */
json_t *controller_ref(json_t *obj);
