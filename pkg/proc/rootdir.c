/* SPDX-License-Identifier: Apache-2.0 */
#include "proc/rootdir.h"

#include <fcntl.h>
#include <stdbool.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/alloc.h"

static int openat2_dir(int dirfd, const char *name) {
        struct open_how how = {
                .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

int mkdir_in_root(pid_t pid, const char *path, mode_t mode, uid_t uid, gid_t gid, vt_error **err) {
        assert_return(pid > 0 && path && path[0] == '/', -EINVAL);
        _cleanup_free_ char *rootp = xasprintf("/proc/%d/root", (int)pid);
        _cleanup_close_ int root = open(rootp, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return vt_error_errno(err, errno, "cannot open the root of process %d", (int)pid);
        _cleanup_free_ char *copy = xstrdup(path);
        _cleanup_close_ int cur = openat2_dir(root, "/");
        if (cur < 0)
                return vt_error_errno(err, -cur, "cannot open / of process %d", (int)pid);
        char *save = NULL;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0)
                        return vt_error_set(err, EINVAL, "%s: \".\" and \"..\" are not allowed", path);
                bool last = save == NULL || *save == '\0';
                /* mkdirat never follows a symlink in its last component. */
                if (mkdirat(cur, c, last ? mode : 0755) < 0 && errno != EEXIST)
                        return vt_error_errno(err, errno, "cannot create %s (component \"%s\") in process %d's root",
                                              path, c, (int)pid);
                int next = openat2_dir(cur, c);
                if (next < 0)
                        return vt_error_errno(err, -next, "%s: component \"%s\" in process %d's root is %s", path, c,
                                              (int)pid, next == -ELOOP ? "a symlink: refused" : "not usable");
                close(cur);
                cur = next;
        }
        /* Through the O_PATH fd of the directory itself: no name to race. */
        _cleanup_free_ char *fdp = xasprintf("/proc/self/fd/%d", cur);
        if (chown(fdp, uid, gid) < 0 || chmod(fdp, mode) < 0)
                return vt_error_errno(err, errno, "cannot set owner and mode of %s in process %d's root", path, (int)pid);
        return 0;
}

int open_dir_in_root(pid_t pid, const char *path, vt_error **err) {
        assert_return(pid > 0 && path && path[0] == '/', -EINVAL);
        _cleanup_free_ char *rootp = xasprintf("/proc/%d/root", (int)pid);
        _cleanup_close_ int root = open(rootp, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return vt_error_errno(err, errno, "cannot open the root of process %d", (int)pid);
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot open %s in process %d's root%s", path, (int)pid,
                                      errno == ELOOP ? " (a symlink: refused)" : "");
        return fd;
}
