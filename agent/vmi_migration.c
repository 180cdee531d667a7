/* SPDX-License-Identifier: Apache-2.0 */
#include "vmi_migration.h"

#include <string.h>

static const char *str(const json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

bool vmi_migration_get(const json_t *vmi, vmi_migration *ret) {
        memset(ret, 0, sizeof(*ret));
        const json_t *ms = json_object_get(json_object_get(vmi, "status"), "migrationState");
        if (!json_is_object(ms))
                return false;
        *ret = (vmi_migration){
                .uid = str(ms, "migrationUid"),
                .source_node = str(ms, "sourceNode"),
                .source_pod = str(ms, "sourcePod"),
                .target_node = str(ms, "targetNode"),
                .target_pod = str(ms, "targetPod"),
                .completed = json_is_true(json_object_get(ms, "completed")),
                .failed = json_is_true(json_object_get(ms, "failed")),
        };
        return true;
}
