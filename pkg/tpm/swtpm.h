/* SPDX-License-Identifier: Apache-2.0 */
/* Supervising `swtpm socket` processes.
 *
 * swtpm is started detached (own session) so it outlives the agent; a
 * restarted agent adopts it from its pid file without disturbing it. It is
 * started without startup flags: QEMU sends CMD_INIT (which is when swtpm
 * loads, and decrypts, its state) and TPM2_Startup itself.
 *
 * Because the state is only read at CMD_INIT, a successful start says nothing
 * about whether the state is readable. tpm_probe_state() answers that before
 * the real start: it runs a private swtpm on the state dir, sends CMD_INIT
 * (flags 0: the volatile state file is kept) and stops it again with
 * CMD_SHUTDOWN. No TPM command is sent, so nothing is written: the state
 * bytes are unchanged whether or not it loaded (tests verify by checksum).
 * Only probe while no other swtpm uses the directory.
 *
 * Children: swtpm is the agent's child until the agent exits. tpm_swtpm_stop()
 * reaps it; an swtpm that dies by itself stays a zombie until the agent reaps
 * it (waitpid on SIGCHLD). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "tpm/sandbox.h"
#include "tpm/state.h"

/* tpm_probe_state()'s "state cannot be loaded" (wrong/missing key, corrupt). */
#define TPM_ESTATE EBADMSG

typedef struct tpm_swtpm_opts {
        tpm_version version;
        const char *swtpm_path;   /* NULL: "swtpm" in PATH (resolved in the target mount namespace) */
        const char *state_dir;    /* --tpmstate dir=...,mode=0600 */
        const char *ctrl_path;    /* --ctrl type=unixio,path=... (required) */
        unsigned ctrl_mode;       /* 0: swtpm's default; else e.g. 0660 */
        const char *ctrl_owner;   /* NULL: the user swtpm runs as; else user name for uid=/gid= (QEMU's user) */
        const char *server_path;  /* NULL: no data socket (QEMU gets the data channel over ctrl) */
        const uint8_t *key;       /* NULL: unencrypted; else 16 or 32 bytes, passed by pipe as --key fd= */
        size_t key_len;
        const char *runas;        /* NULL: as the caller; with runas the ctrl/server socket directories
                                   * must be writable by that user (swtpm drops privileges first) */
        const char *pid_file;     /* NULL: none; opened by the launcher as root, passed as --pid fd= */
        const char *log_file;     /* in the caller's mount namespace (opened before entering mntns_fd); NULL: an in-memory log (memfd) */
        int log_level;            /* 0: 1 (errors). Higher levels dump every TPM command */
        int mntns_fd;             /* >= 0: setns(mntns_fd, CLONE_NEWNS) before exec; all paths above
                                   * are then resolved in that namespace. -1: stay */
        usec_t timeout;           /* until the control channel answers; 0: 10 s */
        const tpm_sandbox *sandbox; /* non-NULL: run in this sandbox (tpm/sandbox.h), as its uid, with
                                   * `--seccomp action=kill`; runas and mntns_fd must then be unset, and
                                   * all paths above are as the sandbox sees them */
        const char *ctrl_via;     /* the control socket as the agent reaches it; NULL: ctrl_path (or
                                   * /proc/<pid>/root<ctrl_path> with mntns_fd) */
} tpm_swtpm_opts;

#define TPM_SWTPM_OPTS_INIT {.mntns_fd = -1}

/* Start swtpm and wait until its control channel answers CMD_GET_CAPABILITY.
 * Returns 0 and the pid. If swtpm exits or does not answer in time, it is
 * killed and the error quotes the tail of its log. */
int tpm_swtpm_start(const tpm_swtpm_opts *o, pid_t *ret_pid, vt_error **err);

/* Stop a running swtpm: CMD_SHUTDOWN through the control channel (state
 * flushed), wait for the process to exit; SIGTERM, then SIGKILL, only if it
 * does not (e.g. QEMU still holds the control channel). ctrl_path may be NULL
 * (signals only). 0 when the process is gone (also when it already was);
 * 1 when a signal was needed. */
int tpm_swtpm_stop(const char *ctrl_path, pid_t pid, usec_t timeout, vt_error **err);

/* The same, with the control socket given as swtpm itself sees it
 * (`ctrl_in_root`, an absolute path inside /proc/<pid>/root, e.g. a
 * launcher's /run/vtpm/<vm>.sock): resolved inside that root without
 * following any symlink, and CMD_SHUTDOWN sent only when swtpm itself listens
 * there. A launcher that swaps the socket for a symlink to another VM's swtpm
 * gets its own swtpm stopped by signal, and the other left alone. */
int tpm_swtpm_stop_in_root(const char *ctrl_in_root, pid_t pid, usec_t timeout, vt_error **err);

/* Adopt a running swtpm after an agent restart, without disturbing it:
 * reads the pid from pid_file, checks that /proc/<pid>/exe is swtpm and that
 * its command line names ctrl_path_in_ns (the control socket path as swtpm sees
 * it; NULL: ctrl_path), then asks CMD_GET_CAPABILITY on ctrl_path with the
 * given timeout. A control channel held by another client (QEMU) does not
 * answer: that is still success, with *ret_ctrl_busy = true. -ESRCH when the
 * process is gone or is not that swtpm. */
int tpm_swtpm_adopt(const char *pid_file, const char *ctrl_path, const char *ctrl_path_in_ns, usec_t timeout,
                    pid_t *ret_pid, bool *ret_ctrl_busy, vt_error **err);

/* Does swtpm load this state with this key? Uses o->state_dir, version, key,
 * runas, swtpm_path, log_level, mntns_fd, timeout; ignores the socket, pid and
 * log paths: the control channel is a private socketpair handed to swtpm as
 * `--ctrl type=unixio,clientfd=N` (no path, works across mount namespaces).
 * 0: loads; -TPM_ESTATE: cannot be loaded (the message quotes swtpm's log:
 * "Verification of HMAC failed", ...); -EBUSY: another swtpm holds the
 * directory; other -errno: the probe itself failed. */
int tpm_probe_state(const tpm_swtpm_opts *o, vt_error **err);

/* Build swtpm's argv for o (exposed for tests and for logging: it holds no
 * secret, only fd numbers). Fds are those the launcher sets up: log 3,
 * pid 4, key 5. Free with tpm_strv_free. */
char **tpm_swtpm_argv(const tpm_swtpm_opts *o, vt_error **err);
void tpm_strv_free(char **v);

/* Copy the permanent TPM state of from->state_dir into the empty directory
 * to->state_dir, re-encrypted: from->key (or none) is the key it is stored
 * with, to->key (or none) the key of the copy. Done by swtpm itself
 * (CMD_GET_STATEBLOB with PTM_STATE_FLAG_DECRYPTED from a private swtpm on
 * the source after CMD_INIT, CMD_SET_STATEBLOB + CMD_INIT into a private one
 * on the target), so swtpm's file format is never reimplemented. The source
 * is not written; the plaintext state (it holds the TPM's seeds) passes
 * only through locked memory (secmem) and the two swtpm control sockets.
 * Uses state_dir, version, key, runas, swtpm_path, mntns_fd,
 * timeout of each; no other swtpm may use either directory. -EBUSY when the
 * source holds a volatile/savestate file (a suspended TPM: not copied);
 * -TPM_ESTATE when the source does not load with from->key. */
int tpm_copy_state(const tpm_swtpm_opts *from, const tpm_swtpm_opts *to, vt_error **err);
