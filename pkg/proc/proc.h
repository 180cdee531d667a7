/* SPDX-License-Identifier: Apache-2.0 */
/* Finding and identifying a launcher process through /proc and its socket,
 * without any container-runtime API.
 *
 * PIDs are reused: whoever keeps a pid for later must keep its start time
 * (proc_start_time) with it and compare before acting, or hold a pidfd. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"

/* Connect to the unix socket at `path` and read SO_PEERCRED. For a socket
 * that a server listens on, the kernel reports the credentials of the process
 * that called listen() (captured then, not the current owner of the socket):
 * if that process has gone and another serves the inherited socket, the pid
 * is stale (proc_is_alive tells). The pid is translated into the caller's PID
 * namespace; a peer outside it (agent without hostPID) is -ESRCH. A listener
 * with a full backlog is -EAGAIN: this never blocks. Stream sockets first,
 * then SOCK_SEQPACKET. The connection is closed at once. */
int peercred_of_socket(const char *path, pid_t *ret_pid, uid_t *ret_uid, vt_error **err);

/* 1 if the process exists and is not a zombie, 0 if it is gone. */
int proc_is_alive(pid_t pid);

/* argv of the process (from /proc/<pid>/cmdline, split at NULs), returns
 * argc (0 for kernel threads and zombies). Free with proc_argv_free(). */
int proc_read_cmdline(pid_t pid, char ***ret_argv, vt_error **err);
void proc_argv_free(char **argv);

/* Field 22 of /proc/<pid>/stat: start time in clock ticks after boot. The
 * pair (pid, start time) names one process for the whole uptime. */
int proc_start_time(pid_t pid, uint64_t *ret, vt_error **err);

/* The numeric fields of /proc/<pid>/stat numbered in fields (as proc(5)
 * numbers them, ascending, from 4 on) into ret[0..n): e.g. 14 utime, 15
 * stime, 23 vsize, 24 rss. The command name (field 2) may hold any byte: the
 * fields are counted from its closing parenthesis. */
#define PROC_STAT_NUMBERS_MAX 16
int proc_stat_numbers(pid_t pid, const unsigned *fields, size_t n, uint64_t *ret, vt_error **err);

/* The process's effective gid (the second field of /proc/<pid>/status's Gid:
 * line). */
int proc_effective_gid(pid_t pid, gid_t *ret, vt_error **err);

/* An O_RDONLY|O_CLOEXEC fd on /proc/<pid>/ns/mnt, for setns(CLONE_NEWNS). */
int proc_open_mntns(pid_t pid, vt_error **err);

/* pidfd_open(2): a CLOEXEC fd that keeps naming this process even after its
 * pid is reused; poll() on it reports exit. */
int proc_pidfd_open(pid_t pid, vt_error **err);
