/* SPDX-License-Identifier: Apache-2.0 */
#include "proc/cgroup.h"

#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "mount/mountinfo.h"

void proc_cgroups_done(proc_cgroups *c) {
        if (!c)
                return;
        if (c->cgroup2_fd >= 0)
                close(c->cgroup2_fd);
        for (size_t i = 0; i < c->n_v1; i++)
                close(c->v1_procs_fds[i]);
        free(c->v2_path);
        *c = (proc_cgroups)PROC_CGROUPS_INIT;
}

static bool has_dotdot(const char *rel) {
        for (const char *p = rel; p && *p;) {
                const char *e = strchr(p, '/');
                size_t l = e ? (size_t)(e - p) : strlen(p);
                if (l == 2 && p[0] == '.' && p[1] == '.')
                        return true;
                p = e ? e + 1 : NULL;
        }
        return false;
}

int proc_cgroup_path_below(const char *path, const char *root, const char **ret_rel) {
        assert_return(path && root && ret_rel, -EINVAL);
        if (path[0] != '/' || root[0] != '/')
                return -EXDEV;
        const char *rel;
        size_t rl = strlen(root);
        while (rl > 1 && root[rl - 1] == '/')
                rl--;
        if (rl == 1)
                rel = path + 1;
        else if (strncmp(path, root, rl) == 0 && (path[rl] == '\0' || path[rl] == '/'))
                rel = path[rl] ? path + rl + 1 : path + rl;
        else
                return -EXDEV;
        if (has_dotdot(rel))
                return -EXDEV;
        *ret_rel = rel;
        return 0;
}

/* Does the comma-separated `opts` hold every comma-separated token of `want`? */
static bool has_all_tokens(const char *opts, const char *want) {
        for (const char *w = want; w && *w;) {
                const char *we = strchr(w, ',');
                size_t wl = we ? (size_t)(we - w) : strlen(w);
                bool found = false;
                for (const char *o = opts; o && *o && !found;) {
                        const char *oe = strchr(o, ',');
                        size_t ol = oe ? (size_t)(oe - o) : strlen(o);
                        found = ol == wl && strncmp(o, w, wl) == 0;
                        o = oe ? oe + 1 : NULL;
                }
                if (!found)
                        return false;
                w = we ? we + 1 : NULL;
        }
        return true;
}

static bool is_hierarchy(const mountinfo_entry *e, const char *ctrls) {
        if (!*ctrls)
                return e->fstype && strcmp(e->fstype, "cgroup2") == 0;
        return e->fstype && strcmp(e->fstype, "cgroup") == 0 && e->super_options &&
               has_all_tokens(e->super_options, ctrls);
}

int proc_cgroup_parse(char *data, size_t len, proc_cgroup_line *lines, size_t *ret_n, vt_error **err) {
        assert_return(data && lines && ret_n, -EINVAL);
        if (strlen(data) != len)
                return vt_error_set(err, EBADMSG, "the cgroup list holds a NUL byte");
        size_t n = 0;
        char *save = NULL;
        for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c1 || !c2 || c1 == line || strspn(line, "0123456789") != (size_t)(c1 - line) || c2[1] != '/')
                        return vt_error_set(err, EBADMSG, "line %zu of the cgroup list is not ID:CONTROLLERS:/PATH",
                                            n + 1);
                *c2 = '\0';
                const char *ctrls = c1 + 1;
                for (size_t i = 0; i < n; i++)
                        if (strcmp(lines[i].controllers, ctrls) == 0)
                                return vt_error_set(err, EBADMSG, "the cgroup list names hierarchy %s twice",
                                                    *ctrls ? ctrls : "cgroup v2");
                if (n >= PROC_CGROUP_MAX_LINES)
                        return vt_error_set(err, E2BIG, "more than %d cgroup hierarchies", PROC_CGROUP_MAX_LINES);
                lines[n++] = (proc_cgroup_line){ctrls, c2 + 1};
        }
        *ret_n = n;
        return 0;
}

/* Child side: copy a file into the pipe. System calls only. */
static bool stream_file(const char *path, int out) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        char buf[4096];
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        close(fd);
                        return n == 0;
                }
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(out, buf + off, (size_t)(n - off));
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0) {
                                close(fd);
                                return false;
                        }
                        off += w;
                }
        }
}

#define READ_MAX (8u << 20)
/* The initial cgroup namespace's inode number (PROC_CGROUP_INIT_INO): fixed by the kernel. */
#define INIT_CGROUP_NS_INO 0xEFFFFFFBu

/* An fd of the host's (initial) cgroup namespace, -1 when none can be had.
 * From pid 1 (hostPID), else from our parent (a host process started us);
 * only the initial namespace itself is accepted. */
static int open_init_cgroupns(void) {
        char path[64];
        pid_t cands[] = {1, getppid()};
        for (size_t i = 0; i < ELEMENTSOF(cands); i++) {
                snprintf(path, sizeof(path), "/proc/%d/ns/cgroup", (int)cands[i]);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                struct stat st;
                if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == INIT_CGROUP_NS_INO)
                        return fd;
                if (fd >= 0)
                        close(fd);
        }
        return -1;
}

/* /proc/<pid>/cgroup and our own mountinfo, both read in the host's (init's)
 * cgroup namespace, so both name cgroups by their absolute paths: paths
 * relative to a private namespace cannot always be related to each other
 * (the names between its root and a mount's root are not printed). A
 * short-lived child does the setns; with no access to init's namespace
 * (no hostPID or CAP_SYS_ADMIN) it reads in ours, and the arithmetic below
 * refuses whatever it cannot prove. */
static int read_in_host_cgroupns(pid_t pid, char **ret_cgroup, size_t *ret_cg_len, char **ret_mountinfo,
                                 size_t *ret_mi_len, vt_error **err) {
        char cg_path[64];
        snprintf(cg_path, sizeof(cg_path), "/proc/%d/cgroup", (int)pid);
        _cleanup_close_ int ns = open_init_cgroupns();
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return vt_error_errno(err, errno, "cannot create a pipe");
        pid_t child = fork();
        if (child < 0) {
                int e = errno;
                close(p[0]);
                close(p[1]);
                return vt_error_errno(err, e, "cannot fork");
        }
        if (child == 0) {
                close(p[0]);
                if (ns >= 0)
                        (void)setns(ns, CLONE_NEWCGROUP);
                bool ok = stream_file(cg_path, p[1]) && write(p[1], "", 1) == 1 &&
                          stream_file("/proc/self/mountinfo", p[1]);
                _exit(ok ? 0 : 1);
        }
        close(p[1]);
        _cleanup_close_ int rd = p[0];
        vt_buf b = {0};
        char chunk[4096];
        bool too_big = false;
        for (;;) {
                ssize_t n = read(rd, chunk, sizeof(chunk));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                if (b.len + (size_t)n > READ_MAX) {
                        too_big = true;
                        break;
                }
                vt_buf_append(&b, chunk, (size_t)n);
        }
        close(TAKE_FD(rd));
        int status = 0;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR)
                ;
        const char *sep = b.data ? memchr(b.data, '\0', b.len) : NULL;
        if (too_big || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !sep) {
                vt_buf_free(&b);
                return vt_error_set(err, too_big ? E2BIG : ESRCH, "cannot read %s and the agent's mountinfo", cg_path);
        }
        size_t cl = (size_t)(sep - b.data);
        *ret_cgroup = xstrndup(b.data, cl);
        *ret_cg_len = cl;
        *ret_mountinfo = xstrndup(sep + 1, b.len - cl - 1);
        *ret_mi_len = b.len - cl - 1;
        vt_buf_free(&b);
        return 0;
}

int proc_cgroups_open(pid_t pid, proc_cgroups *ret, vt_error **err) {
        assert_return(pid > 0 && ret, -EINVAL);
        _cleanup_free_ char *data = NULL, *mi_text = NULL;
        size_t len = 0, mi_len = 0, n_lines = 0;
        int r = read_in_host_cgroupns(pid, &data, &len, &mi_text, &mi_len, err);
        if (r < 0)
                return r;
        _cleanup_mountinfo_table_ mountinfo_table *mi = NULL;
        r = mountinfo_parse(mi_text, mi_len, &mi, err);
        if (r < 0)
                return vt_error_prefix(err, r, "the agent's mountinfo: ");
        proc_cgroup_line lines[PROC_CGROUP_MAX_LINES];
        r = proc_cgroup_parse(data, len, lines, &n_lines, err);
        if (r < 0)
                return vt_error_prefix(err, r, "process %d: ", (int)pid);
        proc_cgroups c = PROC_CGROUPS_INIT;
        for (size_t li = 0; li < n_lines; li++) {
                const char *ctrls = lines[li].controllers, *path = lines[li].path;
                bool any = false;
                const mountinfo_entry *m = NULL;
                const char *rel = NULL;
                for (size_t i = 0; i < mi->n && !m; i++) {
                        const mountinfo_entry *e = &mi->entries[i];
                        if (!is_hierarchy(e, ctrls))
                                continue;
                        /* A mount hidden under another is not where its path leads. */
                        if (mountinfo_find_mount_point(mi, e->mount_point) != e)
                                continue;
                        any = true;
                        if (e->root && proc_cgroup_path_below(path, e->root, &rel) == 0)
                                m = e;
                }
                if (!any)
                        continue; /* a hierarchy the agent does not have: nothing to join there */
                const char *what = *ctrls ? ctrls : "cgroup v2";
                if (!m) {
                        r = vt_error_set(err, EXDEV,
                                         "process %d's cgroup %s (%s) is outside the agent's mounts of that hierarchy "
                                         "(the agent sees only its own part of it)",
                                         (int)pid, path, what);
                        goto fail;
                }
                _cleanup_free_ char *dir = xasprintf("%s%s%s", m->mount_point, *rel ? "/" : "", rel);
                if (!*ctrls) {
                        c.cgroup2_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (c.cgroup2_fd < 0) {
                                r = vt_error_errno(err, errno, "cannot open process %d's cgroup %s", (int)pid, dir);
                                goto fail;
                        }
                        free(c.v2_path);
                        c.v2_path = xstrdup(dir);
                        continue;
                }
                if (c.n_v1 >= PROC_CGROUP_MAX_V1) {
                        r = vt_error_set(err, E2BIG, "process %d is in too many cgroup v1 hierarchies", (int)pid);
                        goto fail;
                }
                _cleanup_free_ char *procs = xasprintf("%s/cgroup.procs", dir);
                int fd = open(procs, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0) {
                        r = vt_error_errno(err, errno, "cannot open %s (process %d's cgroup, %s)", procs, (int)pid,
                                           what);
                        goto fail;
                }
                c.v1_procs_fds[c.n_v1++] = fd;
        }
        *ret = c;
        return 0;
fail:
        proc_cgroups_done(&c);
        return r;
}
