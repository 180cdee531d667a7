/* SPDX-License-Identifier: Apache-2.0 */
/* Act: create what a decision wants that does not exist yet, the state PVC
 * and the TPMState (both at once on a VM's first reconcile). Never changes
 * or adopts a PVC but for KubeVirt's label on our own once a launcher
 * mounts it; deletes only the one decide.c found unused after a race with
 * KubeVirt. Both at the version decide.c looked at. */
#pragma once

#include "base/error.h"
#include "context.h"
#include "decide.h"
#include "observe.h"

typedef enum state_act_result {
        STATE_ACT_DONE,    /* what the decision wants exists: report it */
        STATE_ACT_VM_GONE, /* the API server says the VM is gone: nothing to provision or report */
        STATE_ACT_RACED,   /* already there (another replica, or our cache is behind): look again */
        STATE_ACT_FAILED,  /* *err says why */
} state_act_result;

state_act_result state_act(const state_ctx *ctx, const state_observed *o, const state_decision *d, vt_error **err);
