/* SPDX-License-Identifier: Apache-2.0 */
/* Connecting to a unix socket whose path a tenant can influence, and knowing
 * who answers.
 *
 * A socket path inside a pod's own directory (an emptyDir under the kubelet's
 * pods directory, or a launcher's root) is the pod's to rewrite: a symlink
 * there would make the agent, root on the node, connect wherever the pod
 * likes. unix_connect_at() resolves the path with openat2(RESOLVE_NO_SYMLINKS
 * | RESOLVE_NO_MAGICLINKS) plus RESOLVE_BENEATH or RESOLVE_IN_ROOT, requires
 * the result to be a socket, and connects to that very inode (through
 * /proc/self/fd), so no name is looked up twice.
 *
 * socket_peer_pidfd() names the peer by a pidfd, which cannot come to mean
 * another process when the pid is reused. */
#pragma once

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "base/error.h"

/* Connect (non-blocking, CLOEXEC; stream, else seqpacket) to the socket at
 * `path` relative to `dirfd`; `resolve` is RESOLVE_BENEATH or RESOLVE_IN_ROOT
 * (RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS are always added). Errors:
 * -ENOENT nothing there (yet); -ELOOP a symlink on the way; -ENOTSOCK not a
 * socket; -ECONNREFUSED nobody listens; -EAGAIN the backlog is full; -EXDEV
 * the path escapes `dirfd`. *ret_st (optional): the socket inode's stat.
 * Messages name `path`, never its contents. */
int unix_connect_at(int dirfd, const char *path, uint64_t resolve, int *ret_fd, struct stat *ret_st, vt_error **err);

/* The peer of a connected unix socket as a pidfd (SO_PEERPIDFD; on kernels
 * before 6.5, SO_PEERCRED + pidfd_open, accepted only if that process
 * started no later than the socket inode `sock_ctime` says it was made, so a
 * reused pid is not taken for the listener). For a listening server the peer
 * is the process that called listen(). *ret_pid is the pid in our PID
 * namespace. -ESRCH: the peer has exited. -EREMOTE: it lives, outside our
 * PID namespace (this procfs's): nothing about it can be proven. */
int socket_peer_pidfd(int sockfd, int64_t sock_ctime, int *ret_pidfd, pid_t *ret_pid, vt_error **err);

/* 1 while the process of `pidfd` lives, 0 once it has exited. */
int pidfd_is_alive(int pidfd);
