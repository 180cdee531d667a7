/* SPDX-License-Identifier: Apache-2.0 */
#include "attachment_pod.h"

#include "vmspec.h"


json_t *attachment_pod_new(const attachment_pod_spec *s) {
        json_t *metadata = json_pack(
                "{s:s, s:s, s:{s:s, s:s, s:s}, s:[{s:s, s:s, s:s, s:s, s:b, s:b}]}", "name", s->name, "namespace",
                s->namespace, "labels", LABEL_ATTACHMENT_FOR, s->launcher_uid, LABEL_VM, s->vm_label, LABEL_MANAGED_BY,
                LABEL_MANAGER_VALUE, "ownerReferences", "apiVersion", "v1", "kind", "Pod", "name", s->launcher_name,
                "uid", s->launcher_uid, "controller", 1, "blockOwnerDeletion", 0);
        /* The CPU limit is the node-scope policy's most, 100m: the pause
         * container needs none once it runs, but runc sets it up inside its
         * cgroup (the seccomp filter too), and at 10m that took 4-5 s of
         * every VM start (0.85 s at 100m, measured on the test bed). */
        json_t *container = json_pack(
                "{s:s, s:s, s:s, s:[{s:s, s:s}], "
                "s:{s:b, s:b, s:b, s:{s:[s]}}, "
                "s:{s:{s:s, s:s}, s:{s:s, s:s}}}",
                "name", "hold", "image", s->image, "imagePullPolicy", "IfNotPresent", "volumeMounts", "name", "state",
                "mountPath", "/state", "securityContext", "allowPrivilegeEscalation", 0, "privileged", 0,
                "readOnlyRootFilesystem", 1, "capabilities", "drop", "ALL", "resources", "requests", "cpu", "1m",
                "memory", "4Mi", "limits", "cpu", "100m", "memory", "16Mi");
        json_t *spec = json_pack(
                "{s:s, s:s, s:b, s:b, s:b, s:b, s:[{s:s}], "
                "s:{s:b, s:I, s:I, s:{s:s}}, "
                "s:[o], s:[{s:s, s:{s:s}}], s:I}",
                "nodeName", s->node, "restartPolicy", "Always", "automountServiceAccountToken", 0, "hostNetwork", 0,
                "hostPID", 0, "hostIPC", 0, "tolerations", "operator", "Exists", "securityContext", "runAsNonRoot", 1,
                "runAsUser", (json_int_t)ATTACHMENT_POD_UID, "runAsGroup", (json_int_t)ATTACHMENT_POD_UID, "seccompProfile", "type",
                "RuntimeDefault", "containers", container, "volumes", "name", "state", "persistentVolumeClaim",
                "claimName", s->pvc, "terminationGracePeriodSeconds", (json_int_t)1);
        return json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "v1", "kind", "Pod", "metadata", metadata, "spec", spec);
}
