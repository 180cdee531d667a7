/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/sandbox.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

int tpm_sandbox_add_bind(tpm_sandbox *sb, const char *src, const char *dst, bool writable) {
        assert_return(sb && src && src[0] == '/', -EINVAL);
        if (sb->n_binds >= TPM_SANDBOX_MAX_BINDS)
                return -E2BIG;
        sb->binds[sb->n_binds++] = (tpm_sandbox_bind){.src = src, .dst = dst ? dst : src, .writable = writable};
        return 0;
}

int tpm_sandbox_clone(const tpm_sandbox *sb, tpm_sandbox_child *ret) {
        assert_return(sb && ret && sb->uid != 0 && sb->gid != 0 && sb->stage_dir, -EINVAL);
        /* A socket, not a pipe: the release is sent with MSG_NOSIGNAL, so a
         * child that died first costs no SIGPIPE. */
        int gate[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, gate) < 0)
                return -errno;
        struct clone_args ca = {
                .flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS,
                .exit_signal = SIGCHLD,
        };
        if (sb->cgroup2_fd >= 0) {
                ca.flags |= CLONE_INTO_CGROUP;
                ca.cgroup = (uint64_t)sb->cgroup2_fd;
        }
        long pid = syscall(SYS_clone3, &ca, sizeof(ca));
        if (pid < 0) {
                int e = errno;
                close(gate[0]);
                close(gate[1]);
                return -e;
        }
        if (pid == 0) {
                close(gate[1]);
                *ret = (tpm_sandbox_child){.pid = 0, .gate_fd = gate[0]};
                return 0;
        }
        close(gate[0]);
        *ret = (tpm_sandbox_child){.pid = (pid_t)pid, .gate_fd = gate[1]};
        return (int)pid;
}

int tpm_sandbox_release(const tpm_sandbox *sb, tpm_sandbox_child *c, vt_error **err) {
        assert_return(sb && c && c->pid > 0, -EINVAL);
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%d", (int)c->pid);
        int r = 0;
        for (size_t i = 0; i < sb->n_cgroup_procs && r == 0; i++)
                if (write(sb->cgroup_procs_fds[i], pid, (size_t)n) != n)
                        r = vt_error_errno(err, errno, "cannot move the sandboxed process into its launcher's cgroup "
                                                       "(cgroup v1 hierarchy %zu)", i + 1);
        if (r == 0 && send(c->gate_fd, "g", 1, MSG_NOSIGNAL) != 1)
                r = vt_error_errno(err, errno, "cannot release the sandboxed process");
        close(c->gate_fd);
        c->gate_fd = -1;
        if (r < 0) {
                (void)kill(c->pid, SIGKILL);
                while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                c->pid = 0;
        }
        return r;
}

/* ---- the child: system calls only, no allocation ---- */

static bool join_path(char *buf, size_t size, const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (la + lb + 1 > size)
                return false;
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb + 1);
        return true;
}

/* mkdir -p of `rel` (absolute inside the stage) below stage; the last
 * component is a directory, or an empty file when `file`. */
static int make_under(const char *stage, const char *rel, bool file) {
        char p[PATH_MAX];
        if (!join_path(p, sizeof(p), stage, rel))
                return -ENAMETOOLONG;
        size_t base = strlen(stage);
        for (char *s = p + base + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (file) {
                int fd = open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (fd < 0)
                        return -errno;
                close(fd);
                return 0;
        }
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int setattr(const char *path, uint64_t set, bool recursive) {
        struct mount_attr a = {.attr_set = set};
        if (mount_setattr(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &a, sizeof(a)) < 0)
                return -errno;
        return 0;
}

/* Bind src (in the agent's namespace) to rel inside the stage. */
static int bind_into(const char *stage, const char *src, const char *rel, bool writable, bool devices) {
        struct stat st;
        if (stat(src, &st) < 0)
                return -errno;
        int r = make_under(stage, rel, !S_ISDIR(st.st_mode));
        if (r < 0)
                return r;
        char p[PATH_MAX];
        if (!join_path(p, sizeof(p), stage, rel))
                return -ENAMETOOLONG;
        if (mount(src, p, NULL, MS_BIND | (S_ISDIR(st.st_mode) && !writable ? MS_REC : 0), NULL) < 0)
                return -errno;
        uint64_t set = MOUNT_ATTR_NOSUID | (devices ? 0 : MOUNT_ATTR_NODEV) | (writable ? MOUNT_ATTR_NOEXEC : 0) |
                       (writable ? 0 : MOUNT_ATTR_RDONLY);
        return setattr(p, set, !writable);
}

/* A top-level entry of the agent's root (/bin, /lib, ...): the same symlink
 * (merged /usr), or the directory bound read-only; absent: skipped. */
static int mirror_top(const char *stage, const char *name) {
        struct stat st;
        if (lstat(name, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (S_ISLNK(st.st_mode)) {
                char target[PATH_MAX], p[PATH_MAX];
                ssize_t n = readlink(name, target, sizeof(target) - 1);
                if (n < 0)
                        return -errno;
                target[n] = '\0';
                if (!join_path(p, sizeof(p), stage, name))
                        return -ENAMETOOLONG;
                return symlink(target, p) < 0 && errno != EEXIST ? -errno : 0;
        }
        if (!S_ISDIR(st.st_mode))
                return 0;
        return bind_into(stage, name, name, false, false);
}

/* What swtpm, swtpm_setup, swtpm_localca and certtool read from /etc. */
static const char *const etc_files[] = {
        "/etc/ld.so.cache",   "/etc/ssl",    "/etc/swtpm_setup.conf", "/etc/swtpm-localca.conf",
        "/etc/swtpm-localca.options", "/etc/passwd", "/etc/group", "/etc/gnutls", "/etc/localtime",
};
static const char *const top_dirs[] = {"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"};
static const char *const dev_nodes[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"};

static int build_root(const tpm_sandbox *sb, const char **step) {
        const char *stage = sb->stage_dir;
        *step = "making the mounts private";
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return -errno;
        *step = "mounting the sandbox's root";
        if (mount("vtpm-sandbox", stage, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=512") < 0)
                return -errno;
        int r;
        *step = "binding the agent's /usr";
        for (size_t i = 0; i < ELEMENTSOF(top_dirs); i++)
                if ((r = mirror_top(stage, top_dirs[i])) < 0)
                        return r;
        *step = "binding files of /etc";
        if ((r = make_under(stage, "/etc", false)) < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(etc_files); i++) {
                struct stat st;
                if (lstat(etc_files[i], &st) < 0)
                        continue;
                r = S_ISLNK(st.st_mode) ? mirror_top(stage, etc_files[i])
                                        : bind_into(stage, etc_files[i], etc_files[i], false, false);
                if (r < 0)
                        return r;
        }
        *step = "binding /dev";
        for (size_t i = 0; i < ELEMENTSOF(dev_nodes); i++)
                if ((r = bind_into(stage, dev_nodes[i], dev_nodes[i], false, true)) < 0)
                        return r;
        char p[PATH_MAX];
        *step = "mounting /proc";
        if ((r = make_under(stage, "/proc", false)) < 0)
                return r;
        if (!join_path(p, sizeof(p), stage, "/proc"))
                return -ENAMETOOLONG;
        if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                return -errno;
        *step = "mounting /tmp";
        if ((r = make_under(stage, "/tmp", false)) < 0)
                return r;
        if (!join_path(p, sizeof(p), stage, "/tmp"))
                return -ENAMETOOLONG;
        if (mount("vtpm-sandbox-tmp", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=8m") < 0)
                return -errno;
        *step = "binding the VM's directories";
        for (size_t i = 0; i < sb->n_binds; i++)
                if ((r = bind_into(stage, sb->binds[i].src, sb->binds[i].dst, sb->binds[i].writable, false)) < 0)
                        return r;
        *step = "pivot_root";
        if (chdir(stage) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
            chdir("/") < 0)
                return -errno;
        *step = "making the sandbox's root read-only";
        if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
                return -errno;
        return 0;
}

int tpm_sandbox_enter(const tpm_sandbox *sb, const tpm_sandbox_child *c, const char **ret_step) {
        const char *step = "waiting for the agent";
        char g;
        ssize_t n;
        do
                n = read(c->gate_fd, &g, 1);
        while (n < 0 && errno == EINTR);
        close(c->gate_fd);
        int r = n == 1 ? 0 : -ECANCELED;
        if (r == 0)
                r = build_root(sb, &step);
        if (r == 0) {
                step = "a cgroup namespace of its own";
                if (syscall(SYS_unshare, CLONE_NEWCGROUP) < 0)
                        r = -errno;
        }
        if (r == 0) {
                step = "hostname";
                (void)!sethostname("swtpm", 5);
                /* No core dumps (keys are in memory); few files and processes;
                 * state files are small. */
                static const struct {
                        int res;
                        rlim_t lim;
                } lims[] = {{RLIMIT_CORE, 0}, {RLIMIT_NOFILE, 256}, {RLIMIT_NPROC, 1024},
                            {RLIMIT_FSIZE, 64 << 20}, {RLIMIT_MEMLOCK, 0}};
                step = "resource limits";
                for (size_t i = 0; r == 0 && i < ELEMENTSOF(lims); i++) {
                        struct rlimit rl = {lims[i].lim, lims[i].lim};
                        struct rlimit cur;
                        if (getrlimit(lims[i].res, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && cur.rlim_max < rl.rlim_max)
                                rl.rlim_cur = rl.rlim_max = cur.rlim_max;
                        if (setrlimit(lims[i].res, &rl) < 0)
                                r = -errno;
                }
        }
        if (r == 0) {
                /* The bounding set needs CAP_SETPCAP, which the DaemonSet does not
                 * grant: then it stays, harmless under no_new_privs with no
                 * privileged uid (nothing can regain a capability). */
                for (int cap = 0; cap <= 63; cap++)
                        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
                                break;
                (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
                /* Raw system calls: glibc's set*id would try to synchronise
                 * threads this clone3() child does not have. */
                step = "becoming the sandbox's user";
                if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, sb->gid, sb->gid, sb->gid) < 0 ||
                    syscall(SYS_setresuid, sb->uid, sb->uid, sb->uid) < 0)
                        r = -errno;
        }
        if (r == 0) {
                step = "no_new_privs";
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                        r = -errno;
        }
        if (ret_step)
                *ret_step = step;
        return r;
}
