/* SPDX-License-Identifier: Apache-2.0 */
/* Events (events.k8s.io/v1) about the objects the agent acts on.
 *
 * Repeats of the same event (same object, type, reason and note) within ten
 * minutes are not new objects: the first one's `series` count is patched,
 * as client-go's event recorder does, so a VM stuck on a refusal gives one
 * event with a count, not thousands. Notes must never contain secrets. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "base/error.h"
#include "kube/client.h"

typedef struct kube_recorder kube_recorder;

typedef struct kube_object_ref {
        const char *api_version; /* "kubevirt.io/v1" */
        const char *kind;        /* "VirtualMachine" */
        const char *namespace;
        const char *name;
        const char *uid;
} kube_object_ref;

enum kube_event_type { KUBE_EVENT_NORMAL, KUBE_EVENT_WARNING };

/* controller: "vtpm-agent.io/state-controller"; instance: e.g. the pod or node name. */
kube_recorder *kube_recorder_new(kube_client *c, const char *controller, const char *instance);
void kube_recorder_free(kube_recorder *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_recorder *, kube_recorder_free)

/* Record an event; returns 0 when a new event was created, 1 when an
 * existing one's series was bumped, or -errno. `action` is what the agent
 * did or tried ("Provision", "Refuse"), reason a CamelCase cause. */
int kube_record(kube_recorder *r, const kube_object_ref *regarding, enum kube_event_type type,
                const char *reason, const char *action, const char *note, vt_error **err);
