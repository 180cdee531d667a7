/* SPDX-License-Identifier: Apache-2.0 */
/* The effective TPM of a VM, as KubeVirt computes it: the VM's own
 * devices.tpm when present (persistent: false and enabled: false both win
 * over any preference); otherwise the preferredTPM of the preference named in
 * spec.preference, read from the ControllerRevision KubeVirt froze it in when
 * there is one (so later edits of the live preference do not change an
 * existing VM), else from the live VirtualMachineClusterPreference (the
 * default kind) or VirtualMachinePreference in the VM's namespace.
 * Lookups are callbacks over informer caches: no API request per VM. */
#pragma once

#include <jansson.h>

#include "vmspec.h"

typedef struct preference_lookup {
        /* New references or NULL. `namespace` is NULL for cluster preferences. */
        json_t *(*preference)(const char *kind, const char *namespace, const char *name, void *userdata);
        json_t *(*revision)(const char *namespace, const char *name, void *userdata);
        void *userdata;
} preference_lookup;

typedef struct effective_tpm {
        tpm_intent intent;
        char *preference_kind;   /* set when a preference was consulted */
        char *preference_name;
        char *revision;          /* the frozen revision used, if any */
        char *missing;           /* non-NULL: the named preference does not exist (message) */
} effective_tpm;

void vm_effective_tpm(json_t *vm, const preference_lookup *lookup, effective_tpm *ret);
void effective_tpm_done(effective_tpm *t);

/* The preference a VM names without a frozen revision ("Kind/ns/name" or
 * "Kind//name"), so a change to that preference can requeue it; NULL when it
 * names none or is frozen. Caller frees. */
char *vm_live_preference_key(json_t *vm);
char *preference_key(const char *kind, const char *namespace, const char *name);
