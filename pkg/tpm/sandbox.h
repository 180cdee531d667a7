/* SPDX-License-Identifier: Apache-2.0 */
/* The sandbox every swtpm tool the agent runs (swtpm, swtpm_setup and what
 * it starts, the probe and re-encryption swtpm) lives in.
 *
 * Nothing runs from a launcher's filesystem: the binaries and libraries are
 * the agent's own (its mount namespace: the agent's image, or the host for a
 * host process). The child is created by clone3() in new PID, network, IPC,
 * UTS and mount namespaces (and, with cgroup2_fd, directly in that cgroup:
 * CLONE_INTO_CGROUP, no window in the agent's cgroup). Its mount namespace is
 * rebuilt from nothing: a small read-only tmpfs root holding the agent's /usr
 * (and the /bin, /lib... links or directories beside it), a few files of /etc
 * swtpm needs, /dev/{null,zero,full,random,urandom}, a proc of its own PID
 * namespace, a private /tmp, and the binds the caller lists (one VM's state
 * directory, its control-socket directory, the local CA for provisioning).
 * The rest of the agent's mounts (other VMs' volumes, the kubelet's
 * directories, the agent's secrets) are detached by pivot_root. The network
 * namespace is empty (not even loopback up): swtpm talks only over the unix
 * sockets in the binds. Then: resource limits, all capabilities gone (the
 * bounding set too, when the agent may drop it), the caller's uid and gid
 * (never 0), no supplementary groups, no_new_privs; swtpm adds its own
 * seccomp filter (--seccomp action=kill).
 *
 * The mounts are copies held by the sandbox's own namespace: replacing the
 * agent's container (its root filesystem unmounted on the host) does not
 * take the running swtpm's binary or state away.
 *
 * Use from a multi-threaded process: tpm_sandbox_clone() is fork()-like and
 * the child may only make async-signal-safe calls until it execs; everything
 * it needs (paths, fds) is prepared by the parent. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

#define TPM_SANDBOX_MAX_BINDS 6
#define TPM_SANDBOX_MAX_CGROUPS 16

typedef struct tpm_sandbox_bind {
        const char *src; /* in the agent's mount namespace: a directory */
        const char *dst; /* inside the sandbox (absolute, no "..") */
        bool writable;
} tpm_sandbox_bind;

typedef struct tpm_sandbox {
        uid_t uid; /* never 0 */
        gid_t gid; /* never 0 */
        tpm_sandbox_bind binds[TPM_SANDBOX_MAX_BINDS];
        size_t n_binds;
        /* An empty directory of the agent's (e.g. <node.runDir>/sandbox) on
         * which the new root is assembled, inside the sandbox's own mount
         * namespace only (nothing shows up there for the agent). */
        const char *stage_dir;
        /* >= 0: a cgroup v2 directory (O_DIRECTORY) the child is created in. */
        int cgroup2_fd;
        /* cgroup.procs (O_WRONLY) of cgroup v1 hierarchies: the parent writes
         * the child's pid into each before the child may go on. */
        int cgroup_procs_fds[TPM_SANDBOX_MAX_CGROUPS];
        size_t n_cgroup_procs;
} tpm_sandbox;

#define TPM_SANDBOX_INIT {.cgroup2_fd = -1}

/* Add a bind (dst == NULL: the same path as src). -E2BIG when full. */
int tpm_sandbox_add_bind(tpm_sandbox *sb, const char *src, const char *dst, bool writable);

/* What tpm_sandbox_clone's child needs to wait for its parent. */
typedef struct tpm_sandbox_child {
        pid_t pid;   /* in the parent: the child's pid (in the parent's PID namespace) */
        int gate_fd; /* in the child: read end of the gate; -1 in the parent */
} tpm_sandbox_child;

/* fork() in the sandbox's namespaces (and cgroup2_fd's cgroup): returns 0 in
 * the child (which must call tpm_sandbox_enter() before anything else) and
 * the child's pid in the parent, or -errno. The parent must call
 * tpm_sandbox_release() next. */
int tpm_sandbox_clone(const tpm_sandbox *sb, tpm_sandbox_child *ret);

/* Parent: join the child to the cgroup v1 hierarchies, then let it go on.
 * When a join fails the child is killed and reaped: -errno, naming the step. */
int tpm_sandbox_release(const tpm_sandbox *sb, tpm_sandbox_child *c, vt_error **err);

/* Child, async-signal-safe: wait for the parent, build the mount namespace,
 * set limits, drop to uid/gid without capabilities, no_new_privs. Returns 0,
 * or -errno with *ret_step naming what failed (for the caller's report). */
int tpm_sandbox_enter(const tpm_sandbox *sb, const tpm_sandbox_child *c, const char **ret_step);
