/* SPDX-License-Identifier: Apache-2.0 */
/* What the node controller needs from swtpm, in its own terms: provision a
 * state directory once, check that existing state loads, start swtpm for a
 * launcher, find it again after an agent restart, stop it cleanly. Implemented
 * on pkg/tpm. Keys arrive as bytes in locked memory and leave only through a
 * pipe.
 *
 * Every swtpm tool runs from the agent's own filesystem, never a launcher's,
 * in a sandbox (pkg/tpm/sandbox.h) that holds one VM's directories only: the
 * running swtpm and the probes as the VM's own uid, swtpm_setup as the local
 * CA's user (it signs EK certificates with the node's CA key). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "proc/cgroup.h"
#include "tpm/sandbox.h"

typedef struct swtpm_spec {
        bool tpm2;                /* false: TPM 1.2 */
        const char *state_dir;    /* inside the running swtpm's sandbox (node.swtpmStateDir/<vm-uid>) */
        const char *ctrl_path;    /* control socket, inside the sandbox and the launcher */
        const char *ctrl_dir;     /* its directory (node.swtpmSocketDir) */
        const char *host_state_dir; /* the state volume as the agent sees it, bound at state_dir */
        const char *host_ctrl_dir;  /* the VM's control-socket directory on the node, bound at ctrl_dir */
        const char *user;         /* the local CA's user (node.swtpmUser): swtpm_setup runs as it */
        uid_t setup_uid;          /* ... its ids */
        gid_t setup_gid;
        uid_t uid;                /* the VM's own user: the running swtpm and the probes */
        gid_t gid;
        const char *stage_dir;    /* an empty agent directory the sandboxes' roots are built on */
        const char *run_dir;      /* agent-side dir for pid/log files of this instance */
        const proc_cgroups *cgroups; /* start: the launcher's cgroups (required) */
        const uint8_t *key;       /* state encryption key or NULL */
        size_t key_len;
} swtpm_spec;

/* The sandbox for a tool working on `host_dir` (bound at the same path,
 * writable) as the VM's uid: probes and re-encryption. */
void swtpm_work_sandbox(const swtpm_spec *s, const char *host_dir, tpm_sandbox *ret);

/* First start only: returns 0 when provisioned now, 1 when state already
 * existed (then nothing was touched). `host_state_dir` is the directory as
 * the agent sees it. The state then belongs to the VM's uid. */
int swtpm_provision(const swtpm_spec *s, const char *host_state_dir, vt_error **err);
/* 0 when the state loads (with the key, if any); -EBADMSG when it does not
 * (wrong key, corrupt): nothing is written either way. */
int swtpm_probe(const swtpm_spec *s, const char *host_state_dir, vt_error **err);
/* Start and wait until the control socket answers. */
int swtpm_start(const swtpm_spec *s, pid_t *ret_pid, uint64_t *ret_start_time, vt_error **err);
/* Shut down through the control channel (state flushed); signals only as a
 * fallback. `ctrl_in_ns` is the control socket as swtpm sees it (resolved
 * inside swtpm's root, no symlinks followed; NULL: signals only). */
int swtpm_stop(pid_t pid, uint64_t start_time, const char *ctrl_in_ns, vt_error **err);
/* The same within `budget` (the fence of a state lock that could not be
 * renewed): CMD_SHUTDOWN over the control channel while the budget allows
 * it, else (and when QEMU holds the channel, which it does while the VM runs)
 * SIGTERM, which swtpm handles the same way (TPMLIB_Terminate, then exit);
 * SIGKILL only if it ignores that. The permanent state is on disk in any
 * case: swtpm writes it (to a new file, then renamed) whenever it changes.
 * 0 when it is gone. */
int swtpm_stop_within(pid_t pid, uint64_t start_time, const char *ctrl_in_ns, usec_t budget, vt_error **err);
/* Is this still that swtpm? (pid alive, same start time, an swtpm binary) */
bool swtpm_alive(pid_t pid, uint64_t start_time);
/* What the node can offer (from --print-capabilities). */
int swtpm_capabilities(bool *ret_tpm12, bool *ret_tpm2, vt_error **err);
