/* SPDX-License-Identifier: Apache-2.0 */
/* attachment_check.c: a pod named like the agent's attachment pod is used
 * only if it has the agent's shape (the tenant may create it first). */
#include <string.h>

#include "attachment_check.h"
#include "base/alloc.h"
#include "tap.h"

#define IMG "registry.k8s.io/pause:3.10"

static json_t *agent_made(void) {
        return json_pack("{s:{s:s, s:[{s:s, s:{s:s}}], s:[{s:s, s:s, s:s}]}}", "spec", "nodeName", "node-1", "volumes",
                         "name", "state", "persistentVolumeClaim", "claimName", "persistent-state-for-vm", "containers",
                         "name", "hold", "image", IMG, "imagePullPolicy", "IfNotPresent");
}

static void test_ours(void) {
        json_t *p = agent_made();
        const char *why = NULL;
        check(attachment_pod_is_ours(p, "persistent-state-for-vm", IMG, "node-1", &why));
        check(why == NULL);
        /* The informer's trimmed copy answers the same. */
        json_t *t = json_pack("{s:o}", "spec", attachment_trim_spec(p));
        check(attachment_pod_is_ours(t, "persistent-state-for-vm", IMG, "node-1", NULL));
        json_decref(t);
        json_decref(p);
}

static void test_tenant_made(void) {
        const char *why = NULL;
        /* a memory-backed volume named like the PV: published where the PVC would be */
        json_t *p = agent_made();
        json_t *vol = json_array_get(json_object_get(json_object_get(p, "spec"), "volumes"), 0);
        json_object_del(vol, "persistentVolumeClaim");
        json_object_set_new(vol, "emptyDir", json_pack("{s:s}", "medium", "Memory"));
        check(!attachment_pod_is_ours(p, "persistent-state-for-vm", IMG, "node-1", &why));
        check_contains(why, "volumes");
        json_decref(p);
        /* the PVC plus another volume */
        p = agent_made();
        json_array_append_new(json_object_get(json_object_get(p, "spec"), "volumes"),
                              json_pack("{s:s, s:{}}", "name", "pvc-123", "emptyDir"));
        check(!attachment_pod_is_ours(p, "persistent-state-for-vm", IMG, "node-1", NULL));
        json_decref(p);
        /* another claim, another image, another node, a sidecar, an init container */
        p = agent_made();
        check(!attachment_pod_is_ours(p, "other-claim", IMG, "node-1", NULL));
        check(!attachment_pod_is_ours(p, "persistent-state-for-vm", "evil:latest", "node-1", &why));
        check_contains(why, "containers");
        check(!attachment_pod_is_ours(p, "persistent-state-for-vm", IMG, "node-2", &why));
        check_contains(why, "node");
        json_array_append_new(json_object_get(json_object_get(p, "spec"), "containers"),
                              json_pack("{s:s, s:s}", "name", "side", "image", IMG));
        check(!attachment_pod_is_ours(p, "persistent-state-for-vm", IMG, "node-1", NULL));
        json_decref(p);
        p = agent_made();
        json_object_set_new(json_object_get(p, "spec"), "initContainers", json_pack("[{s:s}]", "image", "x"));
        check(!attachment_pod_is_ours(p, "persistent-state-for-vm", IMG, "node-1", NULL));
        json_decref(p);
        check(!attachment_pod_is_ours(NULL, "persistent-state-for-vm", IMG, "node-1", NULL));
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_ours), TAP_CASE(test_tenant_made), {0}});
}
