/* SPDX-License-Identifier: Apache-2.0 */
/* Decide: what should be, for one VM, as a pure function of what was
 * observed (state/observe.h): the state PVC to create (if any), whether its
 * TPMState must be created, the state controller's fields of the TPMState's
 * status, and the Warning events to send once that status is written. No
 * API request, no clock (the time is in the observation), no log: every
 * rule is a row of test/unit/test-agent-state-decide.c.
 *
 * The rules (README "Rules the state controller keeps"):
 *  - one state volume per VM, whoever makes it first: KubeVirt's (labelled
 *    persistent-state-for=<vm>) is used as it is; else the agent makes
 *    persistent-state-for-<vm>, RWX, Filesystem, state.size raised to the
 *    class's minimum, labelled, controlled by the VM, which KubeVirt adopts
 *    at the VM's next start (by its name; KubeVirt v1.9 does not label it,
 *    so the agent adds KubeVirt's label once a launcher mounts it, for
 *    KubeVirt's label-based paths: snapshots, exports, migration). The
 *    agent's own PVC that lost a race with
 *    KubeVirt's (never mounted, no node ever used it, made within a minute
 *    of KubeVirt's) is deleted; any other second volume is reported
 *    (StateVolumeDuplicate) and left alone;
 *  - a PVC of that name the VM does not control is never adopted, changed or
 *    deleted (StateVolumeConflict); one of the wrong shape is reported
 *    (StateVolumeWrongShape);
 *  - persistence off or no TPM keeps the PVC (Retained);
 *  - a TPM that is not persistent gets one NonPersistentTPM per generation;
 *  - persistence changed under a running launcher: RestartRequired. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "observe.h"

#define STATE_MAX_EVENTS 2

typedef struct state_event {
        const char *reason; /* a Warning on the VM */
        const char *action;
        char *note;
} state_event;

typedef struct state_decision {
        bool report;          /* false: nothing to create, write or say (VM gone or being deleted, no TPM) */
        json_t *pvc;          /* the state PVC to create, or NULL */
        json_t *pvc_delete;   /* our own unused PVC that lost the race with KubeVirt's: deleted with
                               * preconditions (its uid and resourceVersion), or NULL */
        json_t *pvc_label;    /* our own PVC a launcher mounts, to label persistent-state-for=<vm>
                               * at its resourceVersion ({name, namespace, resourceVersion, vm}), or NULL */
        bool pvc_recreate;    /* it existed before (the TPMState does): is the VM still there? */
        bool create_tpmstate; /* the VM has no TPMState yet */
        json_t *status;       /* the state controller's fields of status (tpmstate_status.h) */
        state_event events[STATE_MAX_EVENTS]; /* sent after the status is written */
        size_t n_events;
} state_decision;

void state_decide(const state_observed *o, state_decision *ret);
void state_decision_done(state_decision *d);
