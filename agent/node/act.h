/* SPDX-License-Identifier: Apache-2.0 */
/* One bring-up of a launcher's vTPM (act_start.c, act_volume.c): every
 * check passes, in this order, before swtpm starts: the launcher's identity,
 * the state lock, the attachment pod, the state volume mounted into the
 * launcher and verified, the VM's uid, the control-socket directory, the
 * launcher's cgroups, the keys, provisioning or a probe; then, right before
 * the start, the launcher, the mount and the lock once more. A step returns
 * true to go on, or false with the outcome in *ret (reported already). */
#pragma once

#include "node/node.h"
#include "proc/cgroup.h"

typedef struct bring_up {
        node_controller *nc;
        launcher *l;
        json_t *pod;
        const node_observed *o;
        const node_decision *d;
        pid_t pid;            /* the launcher's process, proven (launcher_identity.h) */
        char *state_in_ns;    /* node.swtpmStateDir/<vm-uid>, in the launcher */
        char *published;      /* persistent: the volume as the kubelet published it */
        char *host_state;     /* the state as the agent sees it (published[/generation], or the scratch tmpfs) */
        char *host_ctrl;      /* the VM's control-socket directory on the node */
        char *run_dir, *stage, *work;
        bool work_mounted;    /* `work` binds host_state: undone by the bring-up's end, whatever the outcome */
        proc_cgroups cg;
        secmem *dek;
        swtpm_spec spec;
} bring_up;

void bring_up_done(bring_up *b);

/* act_kubevirt.c: the state KubeVirt's own swtpm left, taken over once. */
bool step_take_over_kubevirt_state(bring_up *b, kube_outcome *ret);
bool step_retire_kubevirt_plaintext(bring_up *b, kube_outcome *ret);
bool step_guard_kubevirt_place(bring_up *b, kube_outcome *ret);

/* act_volume.c */
bool step_state_volume(bring_up *b, kube_outcome *ret);
bool step_scratch_volume(bring_up *b, kube_outcome *ret);
bool step_sandbox_dirs(bring_up *b, kube_outcome *ret);

/* act_migration.c: which generation of the state swtpm writes. */
bool step_state_generation(bring_up *b, kube_outcome *ret);
