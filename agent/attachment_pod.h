/* SPDX-License-Identifier: Apache-2.0 */
/* The attachment pod: a pod of the configured attachment image on the
 * launcher's node that mounts the VM's state PVC, so that the kubelet
 * publishes the volume where the node controller can reach it. It does
 * nothing itself, so it gets nothing: no service account token, no host
 * namespaces or volumes, no env, a restricted securityContext (non-root,
 * seccomp RuntimeDefault, no privilege escalation, every capability
 * dropped, read-only root) and small resources. That is also exactly what
 * the admission policy manifests/node-scope.yaml lets a node agent create;
 * the two change together. No fsGroup: the kubelet must not chown the TPM
 * state. Pure function: unit-tested. */
#pragma once

#include <jansson.h>

/* On every attachment pod: the uid of the launcher pod it serves. */
#define LABEL_ATTACHMENT_FOR "vtpm-agent.io/attachment-for"

typedef struct attachment_pod_spec {
        const char *namespace;
        const char *name;
        const char *launcher_name; /* the owner: the attachment pod goes with its launcher */
        const char *launcher_uid;
        const char *vm_label;      /* value of the vtpm-agent.io/vm label */
        const char *node;
        const char *image;
        const char *pvc;
} attachment_pod_spec;

/* The unprivileged uid/gid the attachment container runs as (the pause
 * image's "nobody"; it needs no file access). */
#define ATTACHMENT_POD_UID 65535

/* A new reference to the Pod object to create. */
json_t *attachment_pod_new(const attachment_pod_spec *s);
