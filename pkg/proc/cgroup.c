/* SPDX-License-Identifier: Apache-2.0 */
#include "proc/cgroup.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
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

int proc_cgroups_open(pid_t pid, proc_cgroups *ret, vt_error **err) {
        assert_return(pid > 0 && ret, -EINVAL);
        _cleanup_free_ char *p = xasprintf("/proc/%d/cgroup", (int)pid);
        _cleanup_free_ char *data = NULL;
        size_t len = 0, n_lines = 0;
        int r = read_full_file(p, 1 << 16, &data, &len, err);
        if (r < 0)
                return r;
        _cleanup_mountinfo_table_ mountinfo_table *mi = NULL;
        r = mountinfo_read(0, &mi, err);
        if (r < 0)
                return r;
        proc_cgroup_line lines[PROC_CGROUP_MAX_LINES];
        r = proc_cgroup_parse(data, len, lines, &n_lines, err);
        if (r < 0)
                return vt_error_prefix(err, "process %d: ", (int)pid);
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
