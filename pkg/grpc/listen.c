/* SPDX-License-Identifier: Apache-2.0 */
#include "listen.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/alloc.h"

/* The socket's directory, opened without following a symlink, checked. */
static int open_dir(const char *dir, vt_error **err) {
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return vt_error_errno(err, errno, "cannot create %s", dir);
        _cleanup_close_ int fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOTDIR || errno == ELOOP
                               ? vt_error_set(err, ENOTDIR, "%s is not a directory (a symlink?)", dir)
                               : vt_error_errno(err, errno, "cannot open %s", dir);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", dir);
        if (st.st_uid != geteuid() || (st.st_mode & 022))
                return vt_error_set(err, EPERM,
                                    "%s must be owned by uid %u and writable by nobody else (it is uid %u, mode %04o)",
                                    dir, (unsigned)geteuid(), (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
        return TAKE_FD(fd);
}

int grpc_listen_unix(const char *path, int backlog, int *ret_fd, vt_error **err) {
        assert_return(path && ret_fd, -EINVAL);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (path[0] != '/' || strlen(path) >= sizeof(sa.sun_path))
                return vt_error_set(err, EINVAL, "socket path %s must be absolute and under %zu bytes", path,
                                    sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        _cleanup_free_ char *dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        const char *name = path + (slash - dir) + 1;
        if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                return vt_error_set(err, EINVAL, "socket path %s names no file", path);
        *(slash == dir ? slash + 1 : slash) = '\0';

        _cleanup_close_ int dfd = open_dir(dir, err);
        if (dfd < 0)
                return dfd;
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return vt_error_set(err, EEXIST, "%s exists and is not a socket; not replacing it", path);
                if (unlinkat(dfd, name, 0) < 0)
                        return vt_error_errno(err, errno, "cannot remove the stale socket %s", path);
        } else if (errno != ENOENT) {
                return vt_error_errno(err, errno, "cannot stat %s", path);
        }
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot create a socket for %s", path);
        /* The directory was checked to be ours alone, so the name bound is the
         * one checked, and the socket's default mode exposes it to nobody
         * before the fchmodat below. */
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return vt_error_errno(err, errno, "cannot bind %s", path);
        if (fchmodat(dfd, name, 0600, 0) < 0 || listen(fd, backlog) < 0) {
                int e = errno;
                (void)unlinkat(dfd, name, 0);
                return vt_error_errno(err, e, "cannot listen on %s", path);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}
