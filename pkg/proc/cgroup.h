/* SPDX-License-Identifier: Apache-2.0 */
/* Joining another process's cgroups (a launcher's), whatever the agent's own
 * cgroup namespace.
 *
 * /proc/<pid>/cgroup and the root field of cgroup mounts in
 * /proc/self/mountinfo are both printed by the kernel relative to the
 * READER's cgroup namespace: an agent in a private cgroup namespace (a
 * container on a cgroup v2 host) reads "0::/../../kubepods/...", and the
 * names between its namespace's root and a mount's root are not printed. So
 * both are read by a short-lived child in the host's (init's) cgroup
 * namespace (/proc/1/ns/cgroup: the agent has hostPID), where they are
 * absolute; the launcher's cgroup is then found below the agent's mount of
 * each hierarchy by path arithmetic, with no guessing of where hierarchies are
 * mounted. A cgroup that is not below any of the agent's mounts of its
 * hierarchy (the agent sees only its own subtree) cannot be joined, and says
 * so. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

#define PROC_CGROUP_MAX_V1 16

typedef struct proc_cgroups {
        int cgroup2_fd;                      /* the cgroup v2 directory (O_DIRECTORY), -1 when no v2 hierarchy is mounted */
        int v1_procs_fds[PROC_CGROUP_MAX_V1]; /* cgroup.procs (O_WRONLY) of each v1 hierarchy the agent has mounted */
        size_t n_v1;
        char *v2_path;                       /* for messages */
} proc_cgroups;

#define PROC_CGROUPS_INIT {.cgroup2_fd = -1}

/* Open pid's cgroups in every hierarchy the agent has mounted. -EXDEV when one
 * of them is not below the agent's mount of that hierarchy; -ENOENT/-EACCES
 * when its directory cannot be opened; the message names the hierarchy. */
int proc_cgroups_open(pid_t pid, proc_cgroups *ret, vt_error **err);
void proc_cgroups_done(proc_cgroups *c);

/* One line of /proc/<pid>/cgroup: "ID:CONTROLLERS:PATH" ("" controllers:
 * cgroup v2). Pointers into the parsed buffer. */
typedef struct proc_cgroup_line {
        const char *controllers;
        const char *path;
} proc_cgroup_line;

#define PROC_CGROUP_MAX_LINES 64

/* Parse (in place: `data` is modified, NUL-terminated, `len` bytes before the
 * NUL) into at most PROC_CGROUP_MAX_LINES lines. -EBADMSG for a line that is
 * not ID:CONTROLLERS:/PATH or a hierarchy named twice (a cgroup name with a
 * newline in it must not choose where swtpm goes), -E2BIG for too many. */
int proc_cgroup_parse(char *data, size_t len, proc_cgroup_line *lines, size_t *ret_n, vt_error **err);

/* Pure helpers (exposed for tests): is `path` at or below `root` (both as the
 * kernel prints them)? Returns the part below root ("" for root itself) in
 * *ret_rel (pointing into path), or -EXDEV. A ".." component below root is
 * -EXDEV too. */
int proc_cgroup_path_below(const char *path, const char *root, const char **ret_rel);
