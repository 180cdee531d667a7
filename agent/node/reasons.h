/* SPDX-License-Identifier: Apache-2.0 */
/* Every nodeState the node controller reports, in one table: its reason,
 * phase, event type, message, and what the controller does next. decide.c
 * picks the ones that need no node; the bring-up steps the rest. */
#pragma once

#include <stdbool.h>

typedef enum node_reason {
        NR_NONE,
        NR_VTPM_STARTED,
        NR_SWTPM_EXITED,
        NR_TPM_FENCED,
        NR_TPM_VERSION_UNSUPPORTED,
        NR_TPM_MODEL_UNSUPPORTED,
        NR_TPM_ANNOTATIONS_CONFLICT,
        NR_WAITING_FOR_STATE_VOLUME,
        NR_LAUNCHER_IDENTITY_REFUSED,
        NR_WAITING_FOR_STATE_LOCK,
        NR_STATE_IN_USE,
        NR_ATTACHMENT_POD_FOREIGN,
        NR_WAITING_FOR_ATTACHMENT,
        NR_STATE_VOLUME_NOT_PUBLISHED,
        NR_STATE_VOLUME_MOUNT_FAILED,
        NR_STATE_VOLUME_GONE,
        NR_SWTPM_UID_UNAVAILABLE,
        NR_SWTPM_CGROUP_UNAVAILABLE,
        NR_KEY_ROTATION_UNRECOVERABLE,
        NR_KEY_PROVIDER_UNAVAILABLE,
        NR_KEY_PROVIDER_UNAVAILABLE_REKEY,
        NR_KEY_UNWRAP_FAILED,
        NR_KEY_UNWRAP_FAILED_AFTER_ROTATION,
        NR_KEY_ROTATION_INCOMPLETE,
        NR_STATE_ENCRYPTION_FAILED,
        NR_PROVISION_FAILED,
        NR_STATE_UNREADABLE,
        NR_SWTPM_START_FAILED,
        NR_MIGRATION_TARGET_READY,
        NR_MIGRATION_TARGET_UNPROVEN,
        NR_MIGRATION_OVER,
        NR_MIGRATION_HANDOVER_WAITING,
        NR_STATE_HANDED_OVER,
        NR_STATE_GENERATION_FAILED,
        NR_MIGRATION_STATE_NOT_SHARED,
        _NR_MAX,
} node_reason;

/* What follows a report. */
typedef enum node_then {
        NODE_THEN_DONE,         /* nothing until something changes */
        NODE_THEN_RETRY,        /* look again soon (NODE_RETRY_USEC) */
        NODE_THEN_LOCK_WAIT,    /* look again when a lock may have expired (NODE_LOCK_RETRY_USEC) */
        NODE_THEN_KEYS_BACKOFF, /* back off, at most KEY_RETRY_MAX_USEC */
        NODE_THEN_FAIL,         /* an error: retried with the queue's backoff */
} node_then;

typedef struct node_reason_info {
        const char *reason; /* status.nodeState.reason and the event's reason */
        const char *phase;  /* status.nodeState.phase */
        bool warn;          /* a Warning event (else Normal) */
        bool refusal;       /* counted in the node controller's refusals */
        node_then then;
        const char *message;  /* "{}" stands for the detail */
        const char *fallback; /* the detail when none is known */
} node_reason_info;

const node_reason_info *node_reason_get(node_reason r);
/* The message for `r` with `detail` (NULL: the fallback) put in. Caller frees. */
char *node_reason_message(node_reason r, const char *detail);
