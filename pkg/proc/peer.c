/* SPDX-License-Identifier: Apache-2.0 */
#include "proc/peer.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "proc/proc.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

int unix_connect_at(int dirfd, const char *path, uint64_t resolve, int *ret_fd, struct stat *ret_st, vt_error **err) {
        assert_return(path && *path && ret_fd, -EINVAL);
        struct open_how how = {
                .flags = O_PATH | O_CLOEXEC,
                .resolve = resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        _cleanup_close_ int pfd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        if (pfd < 0) {
                int e = errno;
                if (e == ELOOP)
                        return vt_error_set(err, ELOOP, "%s is, or passes through, a symlink: refused", path);
                if (e == EXDEV)
                        return vt_error_set(err, EXDEV, "%s leads outside its directory: refused", path);
                return vt_error_errno(err, e, "cannot open %s", path);
        }
        struct stat st;
        if (fstat(pfd, &st) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", path);
        if (!S_ISSOCK(st.st_mode))
                return vt_error_set(err, ENOTSOCK, "%s is not a socket: refused", path);

        /* The inode just checked, not the name again. */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d", pfd);
        static const int types[] = {SOCK_STREAM, SOCK_SEQPACKET};
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                _cleanup_close_ int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return vt_error_errno(err, errno, "cannot create a unix socket");
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        if (ret_st)
                                *ret_st = st;
                        *ret_fd = TAKE_FD(fd);
                        return 0;
                }
                int e = errno;
                if (e == EPROTOTYPE && i + 1 < ELEMENTSOF(types))
                        continue;
                if (e == EAGAIN)
                        return vt_error_set(err, EAGAIN, "cannot connect to %s: backlog full, try again", path);
                return vt_error_errno(err, e, "cannot connect to %s", path);
        }
        return vt_error_set(err, EPROTOTYPE, "cannot connect to %s", path);
}

int pidfd_is_alive(int pidfd) {
        if (pidfd_send_signal(pidfd, 0, NULL, 0) == 0)
                return 1;
        return errno == ESRCH ? 0 : 1; /* EPERM: it exists */
}

/* "Pid:" of /proc/self/fdinfo/<pidfd>: the pid in our PID namespace, 0 when
 * the process is outside it, -1 once it has exited. */
static int pidfd_pid(int pidfd, pid_t *ret, vt_error **err) {
        _cleanup_free_ char *p = xasprintf("/proc/self/fdinfo/%d", pidfd);
        _cleanup_free_ char *data = NULL;
        int r = read_full_file(p, 4096, &data, NULL, err);
        if (r < 0)
                return r;
        const char *line = strstr(data, "\nPid:");
        long v = 0;
        if (!line || sscanf(line + 5, "%ld", &v) != 1)
                return vt_error_set(err, EBADMSG, "%s has no Pid line", p);
        /* 0: alive, but in no PID namespace this procfs shows (an ancestor's, or
         * another branch's); -1: exited. */
        if (v == 0)
                return vt_error_set(err, EREMOTE, "the peer is outside this PID namespace");
        if (v < 0)
                return vt_error_set(err, ESRCH, "the peer has exited");
        *ret = (pid_t)v;
        return 0;
}

/* Did the process start at or before `t` (realtime seconds)? Its start is
 * in clock ticks after boot; boot time is btime in /proc/stat. */
static int started_by(pid_t pid, int64_t t) {
        uint64_t ticks = 0;
        if (proc_start_time(pid, &ticks, NULL) < 0)
                return -ESRCH;
        _cleanup_free_ char *stat = NULL;
        if (read_full_file("/proc/stat", 1 << 20, &stat, NULL, NULL) < 0)
                return -EIO;
        const char *b = strstr(stat, "\nbtime ");
        long long btime = 0;
        if (!b || sscanf(b + 7, "%lld", &btime) != 1)
                return -EIO;
        long hz = sysconf(_SC_CLK_TCK);
        int64_t started = (int64_t)btime + (int64_t)(ticks / (uint64_t)(hz > 0 ? hz : 100));
        return started <= t + 1; /* btime is rounded to the second */
}

int socket_peer_pidfd(int sockfd, int64_t sock_ctime, int *ret_pidfd, pid_t *ret_pid, vt_error **err) {
        assert_return(sockfd >= 0 && ret_pidfd && ret_pid, -EINVAL);
        int pidfd = -1;
        socklen_t len = sizeof(pidfd);
        if (getsockopt(sockfd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
                int e = errno;
                if (e == ESRCH)
                        return vt_error_set(err, ESRCH, "the process that listens on the socket has exited");
                if (e != ENOPROTOOPT && e != EINVAL)
                        return vt_error_errno(err, e, "cannot read SO_PEERPIDFD");
                /* An older kernel: the pid, then a pidfd on it, then proof that
                 * this process existed when the socket was made. */
                struct ucred uc = {0};
                len = sizeof(uc);
                if (getsockopt(sockfd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                        return vt_error_errno(err, errno, "cannot read SO_PEERCRED");
                if (uc.pid <= 0)
                        return vt_error_set(err, EREMOTE, "the peer is outside this PID namespace");
                pidfd = pidfd_open(uc.pid, 0);
                if (pidfd < 0)
                        return vt_error_errno(err, errno, "the peer (pid %d) is gone", (int)uc.pid);
                int s = started_by(uc.pid, sock_ctime);
                if (s <= 0 || !pidfd_is_alive(pidfd)) {
                        close(pidfd);
                        return vt_error_set(err, ESRCH, "pid %d is not the process that made the socket (reused pid)",
                                            (int)uc.pid);
                }
        }
        pid_t pid = 0;
        int r = pidfd_pid(pidfd, &pid, err);
        if (r < 0) {
                close(pidfd);
                return r;
        }
        *ret_pidfd = pidfd;
        *ret_pid = pid;
        return 0;
}
