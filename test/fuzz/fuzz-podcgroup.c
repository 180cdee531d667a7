/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the cgroup-file matcher: the agent decides from
 * /proc/<pid>/cgroup of a process a tenant picked (whoever listens on a
 * launcher's socket) whether it is in the launcher's pod. Besides memory
 * safety: the answer is -EBADMSG, 0 or 1; with no pod and no container to
 * look for, never 1; a file that says yes still says yes with a trailing
 * newline added. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proc/podcgroup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const ids[] = {"4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c", NULL};
        const char *uid = "0d2f5c3e-8a41-4b7e-9c55-3f1a2b3c4d5e";
        const char *text = (const char *)data;
        int r = cgroup_text_names_pod(text, size, uid, ids);
        if (r != -EBADMSG && r != 0 && r != 1)
                abort();
        if (cgroup_text_names_pod(text, size, NULL, NULL) == 1)
                abort();
        if (r == 1 && size < 1 << 16) {
                char *copy = malloc(size + 1);
                if (!copy)
                        return 0;
                memcpy(copy, data, size);
                copy[size] = '\n';
                if (cgroup_text_names_pod(copy, size + 1, uid, ids) != 1)
                        abort();
                free(copy);
        }
        return 0;
}
