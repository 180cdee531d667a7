/* SPDX-License-Identifier: Apache-2.0 */
#include "attachment_check.h"

#include <string.h>

#include "base/macro.h"

static bool str_is(json_t *v, const char *want) {
        const char *s = json_string_value(v);
        return s && want && strcmp(s, want) == 0;
}

json_t *attachment_trim_spec(json_t *pod) {
        json_t *spec = json_object_get(pod, "spec");
        json_t *out = json_object();
        const char *keep[] = {"nodeName", "volumes", "initContainers", "ephemeralContainers"};
        for (size_t i = 0; i < ELEMENTSOF(keep); i++)
                if (json_object_get(spec, keep[i]))
                        json_object_set(out, keep[i], json_object_get(spec, keep[i]));
        json_t *containers = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(spec, "containers"), i, c) {
                json_t *img = json_object_get(c, "image");
                json_array_append_new(containers, img ? json_pack("{s:O}", "image", img) : json_object());
        }
        json_object_set_new(out, "containers", containers);
        return out;
}

bool attachment_pod_is_ours(json_t *pod, const char *pvc, const char *image, const char *node, const char **ret_why) {
        const char *why = NULL;
        json_t *spec = json_object_get(pod, "spec");
        json_t *vols = json_object_get(spec, "volumes"), *v = json_array_get(vols, 0);
        json_t *claim = json_object_get(v, "persistentVolumeClaim");
        json_t *containers = json_object_get(spec, "containers");
        if (!str_is(json_object_get(spec, "nodeName"), node))
                why = "not pinned to this node";
        else if (json_array_size(vols) != 1 || json_object_size(v) != 2 || !str_is(json_object_get(v, "name"), "state") ||
                 !claim || !str_is(json_object_get(claim, "claimName"), pvc))
                why = "its volumes are not exactly the VM's state PVC";
        else if (json_array_size(containers) != 1 ||
                 !str_is(json_object_get(json_array_get(containers, 0), "image"), image) ||
                 json_array_size(json_object_get(spec, "initContainers")) ||
                 json_array_size(json_object_get(spec, "ephemeralContainers")))
                why = "its containers are not the attachment image alone";
        if (why && ret_why)
                *ret_why = why;
        return !why;
}
