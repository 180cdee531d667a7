/* SPDX-License-Identifier: Apache-2.0 */
/* Observe: everything a reconcile of one VM looks at, read from the
 * informer caches (and the memo of our own last writes) into a plain
 * struct. No API request, no decision. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/timeutil.h"
#include "config.h"
#include "informers.h"
#include "preference.h"
#include "storageclass.h"
#include "written.h"

typedef struct state_observed {
        const agent_config *cfg; /* state.size, state.minimumSizes, state.storageClass */
        usec_t now;              /* wall clock: the lastTransitionTime of a condition that changes */
        json_t *vm;              /* the cached VM; NULL: it is gone */
        effective_tpm tpm;       /* its effective TPM; tpm.intent.invalid also covers the annotations */
        char *pvc_name;          /* persistent-state-for-<vm> (or its shortened form) */
        json_t *pvc;             /* the cached PVC of that name, whoever owns it; NULL: none */
        /* KubeVirt's state PVC of this VM: labelled persistent-state-for=<vm>,
         * not named pvc_name, not being deleted. Of several, the one the
         * launcher mounts, else the oldest. NULL: none. */
        json_t *kv_pvc;
        size_t n_kv_pvcs;        /* how many there are */
        json_t *tpmstate;        /* the VM's TPMState as we know it best; NULL: none yet */
        json_t *launcher;        /* the VM's current launcher pod (not finished, not being deleted) */
        /* What decides the StorageClass of a new PVC (read only when a persistent TPM has no PVC). */
        bool classes_read;
        char *kubevirt_class; /* the KubeVirt CR's vmStateStorageClass */
        char *hco_class;      /* the HyperConverged CR's */
        sc_info *classes;     /* the StorageClasses (strings owned) */
        bool *class_lacks_rwx_fs; /* per class: its CDI StorageProfile offers no RWX + Filesystem pair */
        size_t n_classes, classes_alloc;
} state_observed;

/* Fill `ret` for the VM "ns/name". */
void state_observe(state_informers *si, state_written *written, const agent_config *cfg, const char *key,
                   state_observed *ret);
void state_observed_done(state_observed *o);

/* The VM's effective TPM: its own devices.tpm, else its preference (frozen
 * revision first), with the TPM version/model annotations checked. */
void state_observe_tpm(json_t *vm, const preference_lookup *lookup, effective_tpm *ret);
