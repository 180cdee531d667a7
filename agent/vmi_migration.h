/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
/* KubeVirt's VMI status.migrationState, read in one place. Only KubeVirt
 * writes a VMI's status (tenants cannot), so this is what proves a
 * migration's target: the node agent starts a swtpm for it, the key broker
 * gives it the key. */
#include <jansson.h>
#include <stdbool.h>

typedef struct vmi_migration {
        const char *uid;          /* migrationUid */
        const char *source_node, *source_pod;
        const char *target_node, *target_pod;
        bool completed, failed;
} vmi_migration;

/* The VMI's migrationState; false (and *ret zeroed) when it has none. The
 * strings are the VMI's: valid while `vmi` is. */
bool vmi_migration_get(const json_t *vmi, vmi_migration *ret);

/* A migration neither completed nor failed. */
static inline bool vmi_migration_under_way(const vmi_migration *m) {
        return m->uid && !m->completed && !m->failed;
}
