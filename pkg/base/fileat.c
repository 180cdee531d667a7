/* SPDX-License-Identifier: Apache-2.0 */
#include "fileat.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "fileio.h"

int dir_open_nofollow(const char *path, vt_error **err) {
        assert_return(path, -EINVAL);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot open directory %s", path);
        return fd;
}

int openat_beneath(int dfd, const char *name, int flags, mode_t mode) {
        struct open_how how = {
                .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
                .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int)syscall(SYS_openat2, dfd, name, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

int read_file_beneath(int dfd, const char *name, size_t max_size, char **ret_data, size_t *ret_size,
                      vt_error **err) {
        assert_return(name && ret_data, -EINVAL);
        /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
        _cleanup_close_ int fd = openat_beneath(dfd, name, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
        if (fd < 0)
                return vt_error_errno(err, -fd, "cannot open %s", name);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", name);
        if (!S_ISREG(st.st_mode))
                return vt_error_set(err, EBADMSG, "%s is not a regular file", name);
        if ((uint64_t)st.st_size > max_size)
                return vt_error_set(err, EFBIG, "%s is larger than %zu bytes", name, max_size);
        return read_full_fd(fd, name, max_size, ret_data, ret_size, err);
}

int fsync_beneath(int dfd, const char *name, vt_error **err) {
        if (strcmp(name, ".") == 0) {
                if (fsync(dfd) < 0)
                        return vt_error_errno(err, errno, "cannot sync the directory");
                return 0;
        }
        _cleanup_close_ int fd = openat_beneath(dfd, name, O_RDONLY | O_NONBLOCK, 0);
        if (fd < 0)
                return vt_error_errno(err, -fd, "cannot open %s to sync it", name);
        if (fsync(fd) < 0)
                return vt_error_errno(err, errno, "cannot sync %s", name);
        return 0;
}

int write_file_beneath(int dfd, const char *name, const void *data, size_t size, mode_t mode,
                       void (*before_rename)(const char *point), const char *point, vt_error **err) {
        assert_return(name && (data || size == 0), -EINVAL);
        _cleanup_free_ char *tmp = xasprintf("%s.tmp", name);
        /* unlinkat never follows: a symlink planted as the temp name goes, not its target. */
        (void)unlinkat(dfd, tmp, 0);
        int r;
        {
                _cleanup_close_ int fd = openat_beneath(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
                if (fd < 0)
                        return vt_error_errno(err, -fd, "cannot create %s", tmp);
                const char *p = data;
                size_t left = size;
                while (left > 0) {
                        ssize_t n = write(fd, p, left);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0) {
                                r = vt_error_errno(err, errno, "cannot write %s", tmp);
                                (void)unlinkat(dfd, tmp, 0);
                                return r;
                        }
                        p += n;
                        left -= (size_t)n;
                }
                if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
                        r = vt_error_errno(err, errno, "cannot sync %s", tmp);
                        (void)unlinkat(dfd, tmp, 0);
                        return r;
                }
        }
        if (before_rename)
                before_rename(point);
        if (renameat(dfd, tmp, dfd, name) < 0) {
                r = vt_error_errno(err, errno, "cannot commit %s", name);
                (void)unlinkat(dfd, tmp, 0);
                return r;
        }
        return fsync_beneath(dfd, ".", err);
}
