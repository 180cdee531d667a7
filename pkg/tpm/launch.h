/* SPDX-License-Identifier: Apache-2.0 */
/* Inside pkg/tpm: forking the launcher that turns into swtpm, for
 * tpm/swtpm.c (the long-running swtpm) and tpm/statecopy.c (the private ones
 * that probe and copy a state). Not for callers outside pkg/tpm.
 *
 * The launcher child sets up exactly the fds swtpm gets (fixed numbers,
 * below), enters the mount namespace or sandbox, and reports each failed step
 * to the parent over a SOCK_SEQPACKET pair; exec closes that pair, which is
 * how the parent learns that swtpm runs. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "base/error.h"
#include "tpm/sandbox.h"
#include "tpm/swtpm.h"

/* Fixed fd numbers in the swtpm process (see tpm_swtpm_argv). */
enum { TPM_CHILD_FD_LOG = 3, TPM_CHILD_FD_PID = 4, TPM_CHILD_FD_KEY = 5, TPM_CHILD_FD_CTRL = 6,
       TPM_CHILD_FD_FIRST_FREE = 7 };

typedef struct tpm_launch {
        char **argv;
        const char *log_file, *pid_file;
        int mntns_fd;
        int key_fd;   /* -1 or read end of the key pipe */
        int ctrl_fd;  /* -1 or the child's end of the control socketpair */
        bool drop_user; /* become uid/gid before exec (instead of swtpm's --runas) */
        uid_t uid;
        gid_t gid;
        const tpm_sandbox *sandbox; /* NULL: none */
} tpm_launch;

/* A launched swtpm, with the log it writes (quoted when it fails). */
typedef struct tpm_child {
        pid_t pid;
        int pidfd;
        int log_fd;
        long long log_offset;
} tpm_child;

/* argv for the real start (probe false) or for a probe (control channel on
 * inherited fd TPM_CHILD_FD_CTRL, no sockets, no pid file). Free with
 * tpm_strv_free. */
char **tpm_swtpm_build_argv(const tpm_swtpm_opts *o, bool probe, vt_error **err);

/* tpm_swtpm_build_argv(), and with o->key the read end of a pipe that holds
 * it (swtpm's --key fd=; -1 without a key). */
int tpm_swtpm_prepare(const tpm_swtpm_opts *o, bool probe, char ***ret_argv, int *ret_key_fd, vt_error **err);

/* Fork the launcher; on success the child has exec'ed swtpm. */
int tpm_launch_spawn(const tpm_launch *l, tpm_child *ret, vt_error **err);
/* Has the child exited (waiting up to wait_ms)? Reaps it (status in
 * *ret_status) if so, and sets c->pid to 0. */
bool tpm_child_exited(tpm_child *c, int wait_ms, int *ret_status);
/* SIGKILL and reap. */
void tpm_child_kill(tpm_child *c);
/* Close the pidfd and the log. */
void tpm_child_done(tpm_child *c);
/* What swtpm logged since it started, hex dumps left out (caller frees). */
char *tpm_child_log_tail(const tpm_child *c);
