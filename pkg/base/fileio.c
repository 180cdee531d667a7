/* SPDX-License-Identifier: Apache-2.0 */
#include "fileio.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"

int read_full_fd(int fd, const char *name, size_t max_size, char **ret_data, size_t *ret_size, vt_error **err) {
        vt_buf b = {.sensitive = true}; /* tokens and keys are read with it too */
        char chunk[8192];
        for (;;) {
                ssize_t n = read(fd, chunk, sizeof(chunk));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = vt_error_errno(err, errno, "cannot read %s", name);
                        vt_buf_wipe(&b);
                        return r;
                }
                if (n == 0)
                        break;
                /* A file may grow while it is read: the cap holds for what is read. */
                if (b.len + (size_t)n > max_size) {
                        vt_buf_wipe(&b);
                        return vt_error_set(err, EFBIG, "%s is larger than %zu bytes", name, max_size);
                }
                vt_buf_append(&b, chunk, (size_t)n);
        }
        if (ret_size)
                *ret_size = b.len;
        *ret_data = vt_buf_steal(&b);
        return 0;
}

int read_full_file(const char *path, size_t max_size, char **ret_data, size_t *ret_size, vt_error **err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot open %s", path);
        return read_full_fd(fd, path, max_size, ret_data, ret_size, err);
}

int write_file_atomic(const char *path, const void *data, size_t size, int mode, vt_error **err) {
        _cleanup_free_ char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot create %s", tmp);
        const char *p = data;
        size_t left = size;
        while (left > 0) {
                ssize_t n = write(fd, p, left);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = vt_error_errno(err, errno, "cannot write %s", tmp);
                        unlink(tmp);
                        return r;
                }
                p += n;
                left -= (size_t)n;
        }
        if (fsync(fd) < 0 || rename(tmp, path) < 0) {
                int r = vt_error_errno(err, errno, "cannot commit %s", path);
                unlink(tmp);
                return r;
        }
        /* Make the rename itself durable. */
        _cleanup_free_ char *dir = xstrdup(path);
        _cleanup_close_ int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void)fsync(dfd);
        return 0;
}

int mkdir_checked(const char *path, mode_t mode, vt_error **err) {
        assert_return(path, -EINVAL);
        if (mkdir(path, mode) == 0)
                return 0;
        if (errno != EEXIST)
                return vt_error_errno(err, errno, "cannot create directory %s", path);
        struct stat st;
        if (lstat(path, &st) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", path);
        if (!S_ISDIR(st.st_mode))
                return vt_error_set(err, ENOTDIR, "%s exists and is not a directory", path);
        return 1;
}

int mkdir_mode(const char *path, mode_t mode, vt_error **err) {
        int r = mkdir_checked(path, mode, err);
        if (r < 0)
                return r;
        /* mkdir's mode went through the umask; an existing one may differ. */
        if (chmod(path, mode) < 0)
                return vt_error_errno(err, errno, "cannot set the mode of %s", path);
        return r;
}
