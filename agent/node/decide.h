/* SPDX-License-Identifier: Apache-2.0 */
/* What to do for one launcher, decided from what was observed (informer
 * caches and the node's processes) and the launcher's record alone: no I/O,
 * so every rule has a row in test/unit/test-agent-node-decide.c. Checks that
 * need the node itself (launcher identity, state lock, mounts, cgroup, keys)
 * are the bring-up's (act_start.c), after a NODE_START. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "node/reasons.h"

struct launcher;

typedef struct node_observed {
        json_t *vm;  /* the VirtualMachine (trimmed), NULL: not in the cache (yet) */
        json_t *ts;  /* its TPMState (trimmed), NULL: not in the cache (yet) */
        json_t *pvc; /* its state PVC (trimmed), NULL: none named, or not in the cache (yet) */
        json_t *vmi; /* a migration target's VMI (trimmed: migrationState), NULL: not one, or not cached */
        bool swtpm_alive;    /* the launcher's recorded swtpm still runs */
        bool launcher_alive; /* the launcher's recorded process still runs */
        bool lock_fenced;    /* the state lock stopped the recorded swtpm (persistent only) */
} node_observed;
void node_observed_done(node_observed *o);

typedef enum node_step {
        NODE_NOTHING,      /* no TPM, or not a KubeVirt launcher: done */
        NODE_KEEP_RUNNING, /* swtpm runs: key rotation only, never a second start */
        NODE_FENCED,       /* stopped by its lock's fence: TPMFenced, not restarted for this launcher */
        NODE_FENCED_NOW,   /* the fence stopped it since we last looked: record that, then NODE_FENCED */
        NODE_SWTPM_EXITED, /* it exited: forget it (reason SwtpmExited while the launcher runs, else none) */
        NODE_HALT,         /* report `reason`, then what the reason says */
        NODE_WAIT_CACHE,   /* the VM, TPMState or PVC is not in the caches yet: look again soon */
        NODE_START,        /* bring the vTPM up */
        NODE_HANDOVER,     /* a migration target whose migration completed: take the state over */
} node_step;

typedef struct node_decision {
        node_step step;
        node_reason reason; /* NODE_HALT, NODE_SWTPM_EXITED */
        char *detail;       /* for the reason's message (owned) */
        bool has_tpm;       /* the VM has a vTPM (persistent says which kind) */
        /* NODE_START; strings borrowed from the observation */
        bool persistent;
        bool tpm2;
        const char *version, *model; /* "2.0"/"1.2", "tpm-crb"/"tpm-tis" */
        const char *vm_uid;
        const char *pvc_name, *pv; /* persistent only; pv may be NULL (not bound yet) */
        const char *migration_uid; /* a live migration's target, proven by the VMI */
} node_decision;
void node_decision_done(node_decision *d);

void node_decide(const struct launcher *l, const node_observed *o, node_decision *ret);
const char *node_step_name(node_step s);
