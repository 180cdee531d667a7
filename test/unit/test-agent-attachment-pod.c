/* SPDX-License-Identifier: Apache-2.0 */
/* attachment_pod.c: the pod the node agent creates is what the admission
 * policy (manifests/node-scope.yaml) admits: its own node, the configured
 * image, the state PVC only, no token or host namespaces, restricted, small.
 * The e2e suite 62 shows the API server admitting it; this pins the shape. */
#include <string.h>

#include "attachment_pod.h"
#include "tap.h"

static const attachment_pod_spec S = {.namespace = "tenant", .name = "vtpm-attach-u1", .launcher_name = "virt-launcher-x",
                                      .launcher_uid = "u1", .vm_label = "win11", .node = "node-1",
                                      .image = "registry.k8s.io/pause:3.10", .pvc = "persistent-state-for-win11"};

static const char *str(json_t *root, const char *path) {
        /* a.b.c, with [0] for the first element of an array */
        char buf[256];
        snprintf(buf, sizeof buf, "%s", path);
        json_t *j = root;
        for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && j; tok = strtok_r(NULL, ".", &save))
                j = strcmp(tok, "[0]") == 0 ? json_array_get(j, 0) : json_object_get(j, tok);
        return json_string_value(j);
}

static json_t *at(json_t *root, const char *a, const char *b) {
        return json_object_get(json_object_get(root, a), b);
}

static void test_placement_and_owner(void) {
        json_t *p = attachment_pod_new(&S);
        check_str_eq(str(p, "spec.nodeName"), "node-1");
        check_str_eq(str(p, "metadata.namespace"), "tenant");
        check_str_eq(json_string_value(json_object_get(at(p, "metadata", "labels"), LABEL_ATTACHMENT_FOR)), "u1");
        /* a dotted key: read directly */
        check_str_eq(json_string_value(json_object_get(at(p, "metadata", "labels"), "app.kubernetes.io/managed-by")),
                     "vtpm-agent");
        json_t *owners = json_object_get(json_object_get(p, "metadata"), "ownerReferences");
        check_int_eq(json_array_size(owners), 1);
        check_str_eq(str(p, "metadata.ownerReferences.[0].kind"), "Pod");
        check_str_eq(str(p, "metadata.ownerReferences.[0].uid"), "u1");
        json_decref(p);
}

static void test_nothing_of_the_host(void) {
        json_t *p = attachment_pod_new(&S);
        json_t *spec = json_object_get(p, "spec");
        check(json_is_false(json_object_get(spec, "automountServiceAccountToken")));
        check(json_is_false(json_object_get(spec, "hostNetwork")));
        check(json_is_false(json_object_get(spec, "hostPID")));
        check(json_is_false(json_object_get(spec, "hostIPC")));
        json_t *vols = json_object_get(spec, "volumes");
        check_int_eq(json_array_size(vols), 1);
        check_int_eq(json_object_size(json_array_get(vols, 0)), 2); /* name + persistentVolumeClaim, nothing else */
        check_str_eq(str(p, "spec.volumes.[0].persistentVolumeClaim.claimName"), "persistent-state-for-win11");
        check(!json_object_get(json_object_get(spec, "securityContext"), "fsGroup")); /* no chown of the TPM state */
        check_int_eq(json_array_size(json_object_get(spec, "containers")), 1);
        json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
        check_str_eq(json_string_value(json_object_get(c, "image")), "registry.k8s.io/pause:3.10");
        check(!json_object_get(c, "env") && !json_object_get(c, "envFrom") && !json_object_get(c, "command"));
        json_decref(p);
}

static void test_restricted(void) {
        json_t *p = attachment_pod_new(&S);
        json_t *psc = json_object_get(json_object_get(p, "spec"), "securityContext");
        check(json_is_true(json_object_get(psc, "runAsNonRoot")));
        check_int_eq(json_integer_value(json_object_get(psc, "runAsUser")), ATTACHMENT_POD_UID);
        check_str_eq(json_string_value(at(psc, "seccompProfile", "type")), "RuntimeDefault");
        json_t *c = json_array_get(json_object_get(json_object_get(p, "spec"), "containers"), 0);
        json_t *sc = json_object_get(c, "securityContext");
        check(json_is_false(json_object_get(sc, "allowPrivilegeEscalation")));
        check(json_is_false(json_object_get(sc, "privileged")));
        check(json_is_true(json_object_get(sc, "readOnlyRootFilesystem")));
        check_str_eq(json_string_value(json_array_get(at(sc, "capabilities", "drop"), 0)), "ALL");
        check(!at(sc, "capabilities", "add"));
        check_str_eq(json_string_value(json_object_get(at(c, "resources", "limits"), "memory")), "16Mi");
        /* 100m, the node-scope policy's most: with 10m, runc setting up the
         * container (its seccomp filter) was throttled to 4-5 s a start. */
        check_str_eq(json_string_value(json_object_get(at(c, "resources", "limits"), "cpu")), "100m");
        check(json_object_get(at(c, "resources", "requests"), "memory") != NULL);
        json_decref(p);
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_placement_and_owner), TAP_CASE(test_nothing_of_the_host),
                                    TAP_CASE(test_restricted), {0}});
}
