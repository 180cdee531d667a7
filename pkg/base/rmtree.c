/* SPDX-License-Identifier: Apache-2.0 */
#include "rmtree.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fileat.h"
#include "macro.h"

#define MAX_DEPTH 64

static int first_error(int r, int e) {
        return r < 0 ? r : e;
}

/* A directory below dfd, neither through a symlink nor onto another mount
 * (bind mounts of the same filesystem included): -EXDEV for a mount point. */
static int open_subdir(int dfd, const char *name) {
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        int fd = (int)syscall(SYS_openat2, dfd, name, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

/* Empty the directory dfd; dfd is consumed. */
static int empty_dir(int dfd, unsigned depth, const char *top, vt_error **err) {
        if (depth > MAX_DEPTH) {
                close(dfd);
                return vt_error_set(err, ELOOP, "%s: deeper than %d levels", top, MAX_DEPTH);
        }
        DIR *d = fdopendir(dfd);
        if (!d) {
                int e = errno;
                close(dfd);
                return vt_error_errno(err, e, "cannot read directory below %s", top);
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                r = first_error(r, vt_error_errno(err, errno, "cannot stat below %s", top));
                        continue;
                }
                if (!S_ISDIR(st.st_mode)) {
                        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                                r = first_error(r, vt_error_errno(err, errno, "cannot remove a file below %s", top));
                        continue;
                }
                int sub = open_subdir(dirfd(d), de->d_name);
                if (sub == -EXDEV) {
                        r = first_error(r, vt_error_set(err, EXDEV, "%s: a mount point below it is left alone", top));
                        continue;
                }
                if (sub < 0) {
                        r = first_error(r, vt_error_errno(err, -sub, "cannot open a directory below %s", top));
                        continue;
                }
                int q = empty_dir(sub, depth + 1, top, err);
                r = first_error(r, q);
                if (q >= 0 && unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                        r = first_error(r, vt_error_errno(err, errno, "cannot remove a directory below %s", top));
        }
        closedir(d);
        return r;
}

int rm_rf_beneath(int dfd, const char *name, vt_error **err) {
        assert_return(dfd >= 0 && name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 &&
                              strcmp(name, "..") != 0,
                      -EINVAL);
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : vt_error_errno(err, errno, "cannot stat %s", name);
        if (!S_ISDIR(st.st_mode)) {
                if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                        return vt_error_errno(err, errno, "cannot remove %s", name);
                return 0;
        }
        int sub = open_subdir(dfd, name);
        if (sub < 0)
                return sub == -ENOENT ? 0 : vt_error_errno(err, -sub, "cannot open %s", name);
        int r = empty_dir(sub, 0, name, err);
        if (r < 0)
                return r;
        if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return vt_error_errno(err, errno, "cannot remove %s", name);
        return 0;
}

int rm_rf(const char *path, vt_error **err) {
        assert_return(path && *path, -EINVAL);
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : vt_error_errno(err, errno, "cannot stat %s", path);
        if (!S_ISDIR(st.st_mode)) {
                if (unlink(path) < 0 && errno != ENOENT)
                        return vt_error_errno(err, errno, "cannot remove %s", path);
                return 0;
        }
        int dfd = dir_open_nofollow(path, err);
        if (dfd < 0)
                return dfd == -ENOENT ? 0 : dfd;
        int r = empty_dir(dfd, 0, path, err);
        if (r < 0)
                return r;
        if (rmdir(path) < 0 && errno != ENOENT)
                return vt_error_errno(err, errno, "cannot remove %s", path);
        return 0;
}
