/* SPDX-License-Identifier: Apache-2.0 */
#include "proc/proc.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "base/alloc.h"
#include "base/fileio.h"

/* /proc/<pid>/stat is one short line; the bound only guards against a
 * surprise. cmdline may be as large as the argument space of exec. */
#define STAT_MAX_SIZE (64U * 1024U)
#define CMDLINE_MAX_SIZE (4U * 1024U * 1024U)

int peercred_of_socket(const char *path, pid_t *ret_pid, uid_t *ret_uid, vt_error **err) {
        assert_return(path, -EINVAL);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof(sa.sun_path))
                return vt_error_set(err, ENAMETOOLONG, "socket path %s is too long for a unix socket", path);
        memcpy(sa.sun_path, path, n + 1);

        static const int types[] = {SOCK_STREAM, SOCK_SEQPACKET};
        _cleanup_close_ int fd = -1;
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return vt_error_errno(err, errno, "cannot create a unix socket");
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        break;
                int e = errno;
                close(TAKE_FD(fd));
                if (e == EPROTOTYPE && i + 1 < ELEMENTSOF(types))
                        continue;
                if (e == EAGAIN)
                        return vt_error_set(err, EAGAIN, "cannot connect to %s: backlog full, try again", path);
                return vt_error_errno(err, e, "cannot connect to %s", path);
        }

        struct ucred uc = {0};
        socklen_t len = sizeof(uc);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return vt_error_errno(err, errno, "cannot read SO_PEERCRED of %s", path);
        if (uc.pid <= 0)
                return vt_error_set(err, ESRCH,
                                    "the process listening on %s is not in this PID namespace (run with hostPID)",
                                    path);
        if (ret_pid)
                *ret_pid = uc.pid;
        if (ret_uid)
                *ret_uid = uc.uid;
        return 0;
}

/* The state letter of /proc/<pid>/stat: after the last ')', since the comm
 * field in parentheses may itself contain spaces and ')'. */
static int read_stat_after_comm(pid_t pid, char **ret_data, const char **ret_rest, vt_error **err) {
        _cleanup_free_ char *path = xasprintf("/proc/%d/stat", (int)pid);
        _cleanup_free_ char *data = NULL;
        int r = read_full_file(path, STAT_MAX_SIZE, &data, NULL, err);
        if (r < 0)
                return r;
        const char *p = strrchr(data, ')');
        if (!p || p[1] != ' ')
                return vt_error_set(err, EBADMSG, "%s is malformed", path);
        *ret_rest = p + 2;
        *ret_data = TAKE_PTR(data);
        return 0;
}

int proc_is_alive(pid_t pid) {
        assert_return(pid > 0, -EINVAL);
        if (kill(pid, 0) < 0 && errno != EPERM)
                return 0;
        _cleanup_free_ char *data = NULL;
        const char *rest;
        if (read_stat_after_comm(pid, &data, &rest, NULL) < 0)
                return 0; /* reaped between the two looks */
        return rest[0] == 'Z' || rest[0] == 'X' ? 0 : 1;
}

void proc_argv_free(char **argv) {
        if (!argv)
                return;
        for (char **a = argv; *a; a++)
                free(*a);
        free(argv);
}

int proc_read_cmdline(pid_t pid, char ***ret_argv, vt_error **err) {
        assert_return(pid > 0 && ret_argv, -EINVAL);
        _cleanup_free_ char *path = xasprintf("/proc/%d/cmdline", (int)pid);
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r = read_full_file(path, CMDLINE_MAX_SIZE, &data, &size, err);
        if (r < 0)
                return r;
        size_t argc = 0, allocated = 0;
        char **argv = xnew(char *, 1);
        allocated = 1;
        for (size_t i = 0; i < size;) {
                /* The last argument may lack its NUL when a process rewrote
                 * its argv; read_full_file NUL-terminates the buffer. */
                size_t len = strnlen(data + i, size - i);
                argv = xgrow(argv, &allocated, argc + 2, sizeof(char *));
                argv[argc++] = xstrndup(data + i, len);
                i += len + 1;
        }
        argv[argc] = NULL;
        *ret_argv = argv;
        return (int)argc;
}

int proc_stat_numbers(pid_t pid, const unsigned *fields, size_t n, uint64_t *ret, vt_error **err) {
        uint64_t values[PROC_STAT_NUMBERS_MAX];
        assert_return(pid > 0 && fields && ret && n <= PROC_STAT_NUMBERS_MAX, -EINVAL);
        _cleanup_free_ char *data = NULL;
        const char *p;
        int r = read_stat_after_comm(pid, &data, &p, err);
        if (r < 0)
                return r;
        /* p is at field 3 (state). */
        unsigned at = 3;
        for (size_t i = 0; i < n; i++) {
                assert_return(fields[i] > at, -EINVAL); /* ascending, numeric (after the state, field 3) */
                for (; at < fields[i]; at++) {
                        p = strchr(p, ' ');
                        if (!p)
                                return vt_error_set(err, EBADMSG, "/proc/%d/stat has too few fields", (int)pid);
                        p++;
                }
                uint64_t v = 0;
                if (*p < '0' || *p > '9')
                        return vt_error_set(err, EBADMSG, "/proc/%d/stat: field %u is not a number", (int)pid,
                                            fields[i]);
                for (; *p >= '0' && *p <= '9'; p++) {
                        if (v > (UINT64_MAX - 9) / 10)
                                return vt_error_set(err, EBADMSG, "/proc/%d/stat: field %u is too large", (int)pid,
                                                    fields[i]);
                        v = v * 10 + (uint64_t)(*p - '0');
                }
                values[i] = v;
        }
        memcpy(ret, values, n * sizeof(*ret));
        return 0;
}

int proc_start_time(pid_t pid, uint64_t *ret, vt_error **err) {
        assert_return(ret, -EINVAL);
        return proc_stat_numbers(pid, (const unsigned[]){22}, 1, ret, err);
}

int proc_effective_gid(pid_t pid, gid_t *ret, vt_error **err) {
        assert_return(pid > 0 && ret, -EINVAL);
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        _cleanup_free_ char *data = NULL;
        int r = read_full_file(path, 64 * 1024, &data, NULL, err);
        if (r < 0)
                return r;
        const char *line = strstr(data, "\nGid:");
        unsigned long real = 0, effective = 0;
        if (!line || sscanf(line + 5, "%lu %lu", &real, &effective) != 2 || effective > UINT32_MAX - 1)
                return vt_error_set(err, EBADMSG, "%s has no usable Gid: line", path);
        *ret = (gid_t)effective;
        return 0;
}

int proc_open_mntns(pid_t pid, vt_error **err) {
        assert_return(pid > 0, -EINVAL);
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot open the mount namespace of process %d (%s)",
                                      (int)pid, path);
        return fd;
}

int proc_pidfd_open(pid_t pid, vt_error **err) {
        assert_return(pid > 0, -EINVAL);
        int fd = pidfd_open(pid, 0);
        if (fd < 0)
                return vt_error_errno(err, errno, "pidfd_open(%d) failed", (int)pid);
        return fd;
}
