/* SPDX-License-Identifier: Apache-2.0 */
#include "proc/podcgroup.h"

#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "proc/cgroup.h"

#define POD_UID_LEN 36 /* a UUID: 8-4-4-4-12 */
#define CGROUP_FILE_MAX (64U * 1024U)

static bool has_suffix(const char *s, size_t n, const char *suffix, size_t sn) {
        return n >= sn && memcmp(s + n - sn, suffix, sn) == 0;
}

static bool is_hex(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

/* The pod UID a component names, if it is a pod's cgroup: "pod<uid>"
 * (cgroupfs) or "...-pod<uid_>.slice" (systemd writes the uid's '-' as '_').
 * Returns its length (and *ret_uid where it starts) or 0. */
static bool is_uid(const char *s, size_t n) {
        if (n != POD_UID_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_hex(s + i, 1) && s[i] != '-' && s[i] != '_')
                        return false;
        return true;
}

static size_t pod_component(const char *c, size_t n, const char **ret_uid) {
        if (n == 3 + POD_UID_LEN && memcmp(c, "pod", 3) == 0 && is_uid(c + 3, POD_UID_LEN)) {
                *ret_uid = c + 3;
                return POD_UID_LEN;
        }
        size_t tail = 4 + POD_UID_LEN + 6; /* "-pod" uid ".slice" */
        if (n >= tail && has_suffix(c, n, ".slice", 6) && memcmp(c + n - tail, "-pod", 4) == 0 &&
            is_uid(c + n - tail + 4, POD_UID_LEN)) {
                *ret_uid = c + n - tail + 4;
                return POD_UID_LEN;
        }
        return 0;
}

/* The container ID a component carries, if it is a container's cgroup:
 * "<id>", "<anything>-<id>.scope", "<anything>-<id>" or "<anything>:<id>",
 * an ID being 64 hex digits. Returns where it starts, or NULL. */
static const char *container_component(const char *c, size_t n) {
        if (has_suffix(c, n, ".scope", 6))
                n -= 6;
        if (n < 64 || !is_hex(c + n - 64, 64))
                return NULL;
        if (n == 64 || c[n - 65] == '-' || c[n - 65] == ':')
                return c + n - 64;
        return NULL;
}

static bool uid_equal(const char *got, size_t gl, const char *want) {
        if (gl != strlen(want))
                return false;
        for (size_t i = 0; i < gl; i++)
                if (got[i] != want[i] && !(got[i] == '_' && want[i] == '-'))
                        return false;
        return true;
}

/* The first component that names a pod or a container decides: 1 ours, -1
 * another's, 0 none (the root, a node-level cgroup). Only the first: below
 * its own cgroup a process with a delegated subtree could name a child cgroup
 * after any pod. */
static int path_names_pod(const char *p, size_t n, const char *uid, const char *const *ids) {
        for (size_t i = 0; i < n;) {
                size_t j = i;
                while (j < n && p[j] != '/')
                        j++;
                const char *c = p + i, *u = NULL, *id;
                size_t cl = j - i, ul;
                if (cl > 0 && (ul = pod_component(c, cl, &u)) > 0)
                        return uid && uid_equal(u, ul, uid) ? 1 : -1;
                if (cl > 0 && (id = container_component(c, cl))) {
                        for (const char *const *w = ids; w && *w; w++)
                                if (strlen(*w) == 64 && memcmp(id, *w, 64) == 0)
                                        return 1;
                        return -1;
                }
                i = j + 1;
        }
        return 0;
}

int cgroup_text_names_pod(const char *text, size_t len, const char *pod_uid, const char *const *container_ids) {
        assert_return(text || len == 0, -EINVAL);
        /* The one parser of cgroup lists (proc/cgroup.h), on a copy: it works in place. */
        _cleanup_free_ char *copy = xmalloc(len + 1);
        if (len)
                memcpy(copy, text, len);
        copy[len] = '\0';
        proc_cgroup_line lines[PROC_CGROUP_MAX_LINES];
        size_t n = 0;
        if (proc_cgroup_parse(copy, len, lines, &n, NULL) < 0 || n == 0)
                return -EBADMSG;
        bool ours = false;
        for (size_t i = 0; i < n; i++) {
                int v = path_names_pod(lines[i].path, strlen(lines[i].path), pod_uid, container_ids);
                if (v < 0)
                        return 0; /* one hierarchy says another pod: not ours, whatever the others say */
                ours = ours || v > 0;
        }
        return ours ? 1 : 0;
}

int proc_cgroup_names_pod(pid_t pid, const char *pod_uid, const char *const *container_ids, vt_error **err) {
        assert_return(pid > 0, -EINVAL);
        _cleanup_free_ char *p = xasprintf("/proc/%d/cgroup", (int)pid);
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r = read_full_file(p, CGROUP_FILE_MAX, &data, &size, err);
        if (r < 0)
                return r;
        r = cgroup_text_names_pod(data, size, pod_uid, container_ids);
        if (r < 0)
                return vt_error_set(err, -r, "%s is not a cgroup file", p);
        return r;
}
