/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the mountinfo parser: the agent parses
 * /proc/<pid>/mountinfo of launcher namespaces it does not control.
 *
 * Besides memory safety (ASan/UBSan), it checks the parser's promises: a
 * successful parse has one entry per non-empty line, every string field is
 * set, decoded paths hold no NUL-truncation surprises (strlen bounded by the
 * raw line), an entry equals its copy, and the lookups terminate on whatever
 * was parsed (including parent-link cycles). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mount/mountinfo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *text = (const char *)data;
        mountinfo_table *t = NULL;
        vt_error *err = NULL;
        int r = mountinfo_parse(text, size, &t, &err);
        if (r < 0) {
                if (!err || !err->msg || t)
                        abort();
                vt_error_free(err);
                return 0;
        }
        if (err)
                abort();

        size_t lines = 0;
        for (const char *p = text, *end = text + size; p < end;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
                lines += len > 0;
                p += len + 1;
        }
        if (t->n != lines)
                abort();

        for (size_t i = 0; i < t->n; i++) {
                const mountinfo_entry *e = &t->entries[i];
                if (!e->root || !e->mount_point || !e->mount_options || !e->fstype || !e->source ||
                    !e->super_options || e->mount_id < 0 || e->parent_id < 0)
                        abort();
                if (strlen(e->root) + strlen(e->mount_point) > size)
                        abort();
                for (size_t j = 0; j < e->n_optional; j++)
                        if (!e->optional[j] || !e->optional[j][0])
                                abort();
                mountinfo_entry *c = mountinfo_entry_copy(e);
                if (!mountinfo_entry_same_source(c, e))
                        abort();
                mountinfo_entry_free(c);
                int shared, master;
                mountinfo_entry_peer_groups(e, &shared, &master);
                if (shared < 0 || master < 0)
                        abort();

                const mountinfo_entry *top = mountinfo_find_mount_point(t, e->mount_point);
                if (e->mount_point[0] == '/') {
                        char *norm = NULL;
                        if (mount_path_normalize(e->mount_point, &norm, NULL) == 0) {
                                /* the kernel prints canonical paths; crafted ones
                                 * may not match themselves, but a hit must be
                                 * at that same (normalised) place */
                                if (top && strcmp(top->mount_point, norm) != 0)
                                        abort();
                                free(norm);
                        }
                }
                (void)mountinfo_find_covering(t, e->mount_point);
                if (mountinfo_find_id(t, e->mount_id) == NULL)
                        abort();
        }
        (void)mountinfo_find_covering(t, "/var/lib/libvirt/swtpm/x");
        mountinfo_table_free(t);
        return 0;
}
