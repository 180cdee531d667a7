/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for /proc/<pid>/cgroup of a launcher (cgroup names inside
 * a launcher's own cgroup can be chosen by it) and the path arithmetic that
 * places swtpm below the agent's cgroup mounts.
 *
 * Besides memory safety: a successful parse has no hierarchy twice, every
 * path is absolute, and whatever proc_cgroup_path_below() accepts is at or
 * below the root it was given, with no ".." component. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proc/cgroup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_below(const char *path, const char *root) {
        const char *rel = NULL;
        if (proc_cgroup_path_below(path, root, &rel) < 0)
                return;
        if (!rel || rel < path || rel > path + strlen(path))
                abort();
        if (strcmp(rel, "..") == 0 || strncmp(rel, "../", 3) == 0 || strstr(rel, "/../") ||
            (strlen(rel) >= 3 && strcmp(rel + strlen(rel) - 3, "/..") == 0))
                abort();
        size_t rl = strlen(root);
        while (rl > 1 && root[rl - 1] == '/')
                rl--;
        if (rl > 1 && strncmp(path, root, rl) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        proc_cgroup_line lines[PROC_CGROUP_MAX_LINES];
        size_t n = 0;
        vt_error *err = NULL;
        int r = proc_cgroup_parse(text, size, lines, &n, &err);
        if (r < 0) {
                if (!err || !err->msg)
                        abort();
                vt_error_free(err);
                free(text);
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                if (lines[i].path[0] != '/')
                        abort();
                for (size_t j = 0; j < i; j++)
                        if (strcmp(lines[i].controllers, lines[j].controllers) == 0)
                                abort();
                static const char *const roots[] = {"/", "/..", "/../..", "/k8s.io", "/a/b/"};
                for (size_t k = 0; k < sizeof(roots) / sizeof(roots[0]); k++)
                        check_below(lines[i].path, roots[k]);
                if (i > 0)
                        check_below(lines[i].path, lines[i - 1].path);
        }
        free(text);
        return 0;
}
