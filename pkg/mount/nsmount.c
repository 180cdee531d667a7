/* SPDX-License-Identifier: Apache-2.0 */
#include "mount/nsmount.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/alloc.h"
#include "mount/mountinfo.h"
#include "mount/mountpoint.h"
#include "proc/proc.h"

/* How long the helper child may take. Its steps are a handful of system
 * calls; a hang means a stuck filesystem in the target namespace. */
#define NS_HELPER_TIMEOUT_MS (30 * 1000)

#define DIR_MODE_PARENT 0711
#define DIR_MODE_LEAF 0700

typedef enum ns_step {
        STEP_NONE = 0,
        STEP_SETNS,
        STEP_CHROOT,
        STEP_OPEN_ROOT,
        STEP_MKDIR,
        STEP_OPEN_DIR,
        STEP_MOVE_MOUNT,
        STEP_UMOUNT,
        _STEP_MAX,
} ns_step;

static const char *const step_names[_STEP_MAX] = {
        [STEP_NONE] = "helper",
        [STEP_SETNS] = "setns into the mount namespace",
        [STEP_CHROOT] = "chroot to the process root",
        [STEP_OPEN_ROOT] = "open /",
        [STEP_MKDIR] = "mkdir",
        [STEP_OPEN_DIR] = "open directory (symlinks refused)",
        [STEP_MOVE_MOUNT] = "move_mount",
        [STEP_UMOUNT] = "umount2",
};

typedef struct ns_report {
        int step;
        int error;         /* positive errno, 0 on success */
        int component_end; /* for mkdir/open: offset in the path where the failing component ends */
} ns_report;

typedef struct ns_job {
        int tree_fd;  /* bind: the detached clone of src */
        char *path;   /* normalised dst, a private copy the child may cut up */
        bool unmount;
} ns_job;

/* --- in the child: system calls only, no allocation ------------------------------------ */

static void child_bind(ns_job *job, ns_report *rep) {
        int dfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                rep->step = STEP_OPEN_ROOT;
                rep->error = errno;
                return;
        }
        char *p = job->path;
        while (*p == '/')
                p++;
        while (*p) {
                char *end = strchr(p, '/');
                bool last = !end;
                if (end)
                        *end = '\0';
                rep->component_end = (int)((last ? p + strlen(p) : end) - job->path);
                if (mkdirat(dfd, p, last ? DIR_MODE_LEAF : DIR_MODE_PARENT) < 0 && errno != EEXIST) {
                        rep->step = STEP_MKDIR;
                        rep->error = errno;
                        return;
                }
                /* O_NOFOLLOW: a symlink the launcher planted is ELOOP, never
                 * a way to make us mount elsewhere. */
                int nfd = openat(dfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0) {
                        rep->step = STEP_OPEN_DIR;
                        rep->error = errno;
                        /* O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR;
                         * say what it is. */
                        struct stat st;
                        if (errno == ENOTDIR && fstatat(dfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                            S_ISLNK(st.st_mode))
                                rep->error = ELOOP;
                        return;
                }
                close(dfd);
                dfd = nfd;
                if (last)
                        break;
                *end = '/';
                p = end + 1;
        }
        if (move_mount(job->tree_fd, "", dfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
                rep->step = STEP_MOVE_MOUNT;
                rep->error = errno;
        }
}

static void child_unmount(ns_job *job, ns_report *rep) {
        if (umount2(job->path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
                rep->step = STEP_UMOUNT;
                rep->error = errno;
        }
}

static _noreturn_ void child_main(int ns_fd, int root_fd, ns_job *job, int report_fd) {
        ns_report rep = {0};
        umask(0); /* the modes above are exact */
        if (setns(ns_fd, CLONE_NEWNS) < 0) {
                rep.step = STEP_SETNS;
                rep.error = errno;
        } else if (fchdir(root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0) {
                /* setns put us at the namespace's root mount; the launcher may
                 * live below it (chroot), and dst is meant from its root. */
                rep.step = STEP_CHROOT;
                rep.error = errno;
        } else if (job->unmount)
                child_unmount(job, &rep);
        else
                child_bind(job, &rep);
        ssize_t n;
        do
                n = write(report_fd, &rep, sizeof(rep));
        while (n < 0 && errno == EINTR);
        _exit(n == (ssize_t)sizeof(rep) ? 0 : 1);
}

/* --- in the agent ----------------------------------------------------------------------- */

static int run_in_namespace(pid_t pid, ns_job *job, vt_error **err) {
        _cleanup_close_ int ns_fd = proc_open_mntns(pid, err);
        if (ns_fd < 0)
                return ns_fd;
        char root_path[64];
        snprintf(root_path, sizeof(root_path), "/proc/%d/root", (int)pid);
        _cleanup_close_ int root_fd = open(root_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0)
                return vt_error_errno(err, errno, "cannot open the root of process %d", (int)pid);

        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return vt_error_errno(err, errno, "cannot create a pipe");
        _cleanup_close_ int rfd = pipefd[0];
        _cleanup_close_ int wfd = pipefd[1];

        pid_t child = fork();
        if (child < 0)
                return vt_error_errno(err, errno, "cannot fork the mount helper");
        if (child == 0) {
                close(rfd);
                child_main(ns_fd, root_fd, job, wfd);
        }
        close(TAKE_FD(wfd));

        ns_report rep = {0};
        ssize_t n = -1;
        struct pollfd pfd = {.fd = rfd, .events = POLLIN};
        int pr;
        do
                pr = poll(&pfd, 1, NS_HELPER_TIMEOUT_MS);
        while (pr < 0 && errno == EINTR);
        if (pr > 0)
                do
                        n = read(rfd, &rep, sizeof(rep));
                while (n < 0 && errno == EINTR);
        else
                kill(child, SIGKILL);

        int status = 0;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR)
                ;
        if (pr == 0)
                return vt_error_set(err, ETIMEDOUT, "mount helper for process %d did not finish in %d s",
                                    (int)pid, NS_HELPER_TIMEOUT_MS / 1000);
        if (n != (ssize_t)sizeof(rep))
                return vt_error_set(err, EIO, "mount helper for process %d died without a report (status %d)",
                                    (int)pid, status);
        if (rep.error == 0)
                return 0;
        const char *step = rep.step > 0 && rep.step < _STEP_MAX ? step_names[rep.step] : "helper";
        if (rep.step == STEP_MKDIR || rep.step == STEP_OPEN_DIR) {
                int len = rep.component_end > 0 && (size_t)rep.component_end <= strlen(job->path)
                                  ? rep.component_end
                                  : (int)strlen(job->path);
                return vt_error_errno(err, rep.error, "%s %.*s in the mount namespace of process %d", step,
                                      len, job->path, (int)pid);
        }
        return vt_error_errno(err, rep.error, "%s (%s in the mount namespace of process %d)", step, job->path,
                              (int)pid);
}

static int read_target(pid_t pid, mountinfo_table **ret, vt_error **err) {
        int r = mountinfo_read(pid, ret, err);
        if (r == -ENOENT || r == -ESRCH)
                return vt_error_prefix(err, r, "process %d is gone: ", (int)pid);
        return r;
}

static int describe_busy(pid_t pid, const char *dst, const mountinfo_entry *e, vt_error **err) {
        return vt_error_set(err, EBUSY,
                            "%s in the mount namespace of process %d already has another filesystem mounted "
                            "(%s from %s, device %u:%u, root %s); refusing to mount over it",
                            dst, (int)pid, e->fstype, e->source, e->major, e->minor, e->root);
}

/* The published volume: src must be a mount point, and its identity is what
 * the launcher must see. */
static int source_identity(const char *src, char **ret_canon, mountinfo_entry **ret_id, vt_error **err) {
        _cleanup_free_ char *canon = realpath(src, NULL);
        if (!canon)
                return vt_error_errno(err, errno, "published volume path %s", src);
        int r = is_mount_point(canon, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, EINVAL, "%s is not a mount point: the volume is not published there",
                                    canon);
        r = mount_source_identity(canon, ret_id, err);
        if (r < 0)
                return r;
        *ret_canon = TAKE_PTR(canon);
        return 0;
}

static size_t count_same_source(const mountinfo_table *t, const mountinfo_entry *id) {
        size_t n = 0;
        for (size_t i = 0; i < t->n; i++)
                if (mountinfo_entry_same_source(&t->entries[i], id))
                        n++;
        return n;
}

/* Would a mount placed under `parent` (a mount in the target namespace)
 * propagate into the agent's namespace? Only if parent is shared with a peer
 * group that one of our mounts belongs to or receives from. */
static bool propagates_to(const mountinfo_entry *parent, const mountinfo_table *self) {
        int shared;
        mountinfo_entry_peer_groups(parent, &shared, NULL);
        if (shared == 0)
                return false;
        for (size_t i = 0; i < self->n; i++) {
                int s, m;
                mountinfo_entry_peer_groups(&self->entries[i], &s, &m);
                if (s == shared || m == shared)
                        return true;
        }
        return false;
}

int check_mount_in_namespace(pid_t target_pid, const char *src, const char *dst, vt_error **err) {
        assert_return(target_pid > 0 && src && dst, -EINVAL);
        _cleanup_free_ char *ndst = NULL, *canon = NULL;
        int r = mount_path_normalize(dst, &ndst, err);
        if (r < 0)
                return r;
        _cleanup_mountinfo_entry_ mountinfo_entry *id = NULL;
        r = source_identity(src, &canon, &id, err);
        if (r < 0)
                return r;
        _cleanup_mountinfo_table_ mountinfo_table *target = NULL;
        r = read_target(target_pid, &target, err);
        if (r < 0)
                return r;
        const mountinfo_entry *e = mountinfo_find_mount_point(target, ndst);
        if (!e)
                return 0;
        if (mountinfo_entry_same_source(e, id))
                return 1;
        return describe_busy(target_pid, ndst, e, err);
}

static int bind_mount(pid_t target_pid, const char *src, const char *dst, bool read_only, vt_error **err);

int bind_mount_in_namespace(pid_t target_pid, const char *src, const char *dst, vt_error **err) {
        return bind_mount(target_pid, src, dst, false, err);
}

int bind_mount_in_namespace_ro(pid_t target_pid, const char *src, const char *dst, vt_error **err) {
        return bind_mount(target_pid, src, dst, true, err);
}

/* A detached copy of the source tree, to be moved into the target
 * namespace; read_only also makes it nosuid, nodev and noexec. */
static int clone_source(const char *canon, bool read_only, int *ret_fd, vt_error **err) {
        _cleanup_close_ int tree_fd = open_tree(AT_FDCWD, canon, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree_fd < 0)
                return vt_error_errno(err, errno, "open_tree %s", canon);
        if (read_only) {
                struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                                   MOUNT_ATTR_NOEXEC};
                if (mount_setattr(tree_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof(a)) < 0)
                        return vt_error_errno(err, errno, "cannot make the copy of %s read-only", canon);
        }
        *ret_fd = TAKE_FD(tree_fd);
        return 0;
}

/* Verify what the launcher sees, from the kernel's point of view. */
static int verify_mounted(pid_t target_pid, const char *ndst, const mountinfo_entry *id, const char *canon,
                          vt_error **err) {
        _cleanup_mountinfo_table_ mountinfo_table *target = NULL;
        int r = read_target(target_pid, &target, err);
        if (r < 0)
                return r;
        const mountinfo_entry *e = mountinfo_find_mount_point(target, ndst);
        if (!e)
                return vt_error_set(err, EIO, "after mounting, %s does not appear in /proc/%d/mountinfo", ndst,
                                    (int)target_pid);
        if (!mountinfo_entry_same_source(e, id))
                return vt_error_set(err, EIO,
                                    "after mounting, %s in /proc/%d/mountinfo is device %u:%u root %s, "
                                    "expected %u:%u root %s (from %s)",
                                    ndst, (int)target_pid, e->major, e->minor, e->root, id->major, id->minor,
                                    id->root, canon);
        return 0;
}

/* And that it stayed there: a mount that shows up again in the agent's
 * namespace (more mounts of the source than host_before) is undone. */
static int verify_not_propagated(pid_t target_pid, const char *ndst, const mountinfo_entry *id, size_t host_before,
                                 vt_error **err) {
        _cleanup_mountinfo_table_ mountinfo_table *self = NULL;
        int r = mountinfo_read(0, &self, err);
        if (r < 0)
                return r;
        if (count_same_source(self, id) > host_before) {
                (void)unmount_in_namespace(target_pid, ndst, NULL);
                return vt_error_set(err, EXDEV,
                                    "the mount at %s in process %d propagated to the agent's namespace; undone",
                                    ndst, (int)target_pid);
        }
        return 0;
}

static int bind_mount(pid_t target_pid, const char *src, const char *dst, bool read_only, vt_error **err) {
        assert_return(target_pid > 0 && src && dst, -EINVAL);
        _cleanup_free_ char *ndst = NULL, *canon = NULL;
        int r = mount_path_normalize(dst, &ndst, err);
        if (r < 0)
                return r;
        if (strcmp(ndst, "/") == 0)
                return vt_error_set(err, EINVAL, "refusing to mount over / of process %d", (int)target_pid);

        _cleanup_mountinfo_entry_ mountinfo_entry *id = NULL;
        r = source_identity(src, &canon, &id, err);
        if (r < 0)
                return r;

        _cleanup_mountinfo_table_ mountinfo_table *target = NULL, *self = NULL;
        r = read_target(target_pid, &target, err);
        if (r < 0)
                return r;
        const mountinfo_entry *e = mountinfo_find_mount_point(target, ndst);
        if (e) {
                if (mountinfo_entry_same_source(e, id))
                        return 1; /* already there: nothing to do */
                return describe_busy(target_pid, ndst, e, err);
        }

        r = mountinfo_read(0, &self, err);
        if (r < 0)
                return r;
        const mountinfo_entry *parent = mountinfo_find_covering(target, ndst);
        if (parent && propagates_to(parent, self))
                return vt_error_set(err, EXDEV,
                                    "%s in the mount namespace of process %d is on a shared mount (%s) that "
                                    "propagates to the agent's namespace; refusing to mount there",
                                    ndst, (int)target_pid, parent->mount_point);
        size_t host_before = count_same_source(self, id);

        _cleanup_close_ int tree_fd = -1;
        r = clone_source(canon, read_only, &tree_fd, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path_copy = xstrdup(ndst);
        ns_job job = {.tree_fd = tree_fd, .path = path_copy};
        r = run_in_namespace(target_pid, &job, err);
        if (r < 0)
                return r;

        r = verify_mounted(target_pid, ndst, id, canon, err);
        if (r < 0)
                return r;
        return verify_not_propagated(target_pid, ndst, id, host_before, err);
}

int unmount_in_namespace(pid_t target_pid, const char *dst, vt_error **err) {
        assert_return(target_pid > 0 && dst, -EINVAL);
        _cleanup_free_ char *ndst = NULL;
        int r = mount_path_normalize(dst, &ndst, err);
        if (r < 0)
                return r;
        if (strcmp(ndst, "/") == 0)
                return vt_error_set(err, EINVAL, "refusing to unmount / of process %d", (int)target_pid);
        _cleanup_mountinfo_table_ mountinfo_table *target = NULL;
        r = read_target(target_pid, &target, err);
        if (r < 0)
                return r;
        const mountinfo_entry *before = mountinfo_find_mount_point(target, ndst);
        if (!before)
                return 0;
        int before_id = before->mount_id;

        ns_job job = {.tree_fd = -1, .path = ndst, .unmount = true};
        r = run_in_namespace(target_pid, &job, err);
        if (r < 0)
                return r;

        mountinfo_table_free(TAKE_PTR(target));
        r = read_target(target_pid, &target, err);
        if (r < 0)
                return r;
        if (mountinfo_find_id(target, before_id))
                return vt_error_set(err, EIO, "after unmounting, %s is still in /proc/%d/mountinfo", ndst,
                                    (int)target_pid);
        return 1;
}
