/* SPDX-License-Identifier: Apache-2.0 */
#include "node/reasons.h"

#include <string.h>

#include "base/alloc.h"
#include "base/macro.h"
#include "node_controller.h"

#define SAY(r, p, w, ref, t, m, f) {.reason = r, .phase = p, .warn = w, .refusal = ref, .then = t, .message = m, .fallback = f}

/* One line per reason, so the table reads across: reason, phase, Warning?,
 * a refusal?, what follows, the message ("{}": the detail), the fallback. */
static const node_reason_info table[_NR_MAX] = {
        [NR_NONE] = SAY("", "", false, false, NODE_THEN_DONE, "", NULL),
        [NR_VTPM_STARTED] = SAY("VTPMStarted", "Running", false, false, NODE_THEN_DONE, "{}", "vTPM started"),
        [NR_SWTPM_EXITED] = SAY("SwtpmExited", "Stopped", false, false, NODE_THEN_DONE, "swtpm exited (the VM shut its TPM down, or swtpm failed); it starts again with the VM's next launcher", NULL),
        [NR_TPM_FENCED] = SAY("TPMFenced", "Stopped", true, false, NODE_THEN_DONE, "swtpm was stopped because this node could not renew the VM's state lock in time; the VM has no TPM until it restarts", NULL),
        [NR_TPM_VERSION_UNSUPPORTED] = SAY("TPMVersionUnsupported", "Refused", true, true, NODE_THEN_DONE, "{} is not supported (versions 2.0, 1.2; models tpm-crb, tpm-tis)", "this TPM version / model"),
        [NR_TPM_MODEL_UNSUPPORTED] = SAY("TPMModelUnsupported", "Refused", true, true, NODE_THEN_DONE, "the tpm-crb model needs TPM 2.0; use tpm-tis for TPM 1.2", NULL),
        [NR_TPM_ANNOTATIONS_CONFLICT] = SAY("TPMAnnotationsConflict", "Refused", true, true, NODE_THEN_DONE, "{}", "the VM and its template ask for different TPMs"),
        [NR_WAITING_FOR_STATE_VOLUME] = SAY("WaitingForStateVolume", "Waiting", false, false, NODE_THEN_RETRY, "waiting for the state volume to be bound before starting the TPM", NULL),
        [NR_LAUNCHER_IDENTITY_REFUSED] = SAY("LauncherIdentityRefused", "Refused", true, true, NODE_THEN_FAIL, "{}", "refused"),
        [NR_WAITING_FOR_STATE_LOCK] = SAY("WaitingForStateLock", "Waiting", false, false, NODE_THEN_LOCK_WAIT, "waiting for the state lock of a launcher that is gone to expire", NULL),
        [NR_STATE_IN_USE] = SAY("StateInUse", "Refused", true, true, NODE_THEN_FAIL, "the VM's TPM state is in use by {}; a second swtpm on the same state is never started", "another launcher"),
        [NR_ATTACHMENT_POD_FOREIGN] = SAY("AttachmentPodForeign", "Refused", true, true, NODE_THEN_FAIL, "{}", "refused"),
        [NR_WAITING_FOR_ATTACHMENT] = SAY("WaitingForAttachment", "Waiting", false, false, NODE_THEN_RETRY, "waiting for the kubelet to publish the state volume on this node", NULL),
        [NR_STATE_VOLUME_NOT_PUBLISHED] = SAY("StateVolumeNotMounted", "Refused", true, true, NODE_THEN_RETRY, "the state volume is not mounted on this node; swtpm is not started on scratch state", NULL),
        [NR_STATE_VOLUME_MOUNT_FAILED] = SAY("StateVolumeNotMounted", "Refused", true, true, NODE_THEN_FAIL, "the state volume could not be mounted into the launcher and verified: {}; swtpm is not started", "not mounted"),
        [NR_STATE_VOLUME_GONE] = SAY("StateVolumeNotMounted", "Refused", true, false, NODE_THEN_RETRY, "the state volume is no longer mounted in the launcher; swtpm is not started", NULL),
        [NR_SWTPM_UID_UNAVAILABLE] = SAY("SwtpmUidUnavailable", "Refused", true, false, NODE_THEN_RETRY, "every uid of node.swtpmUidBase/swtpmUidCount is taken by another VM on this node", NULL),
        [NR_SWTPM_CGROUP_UNAVAILABLE] = SAY("SwtpmCgroupUnavailable", "Refused", true, true, NODE_THEN_FAIL, "swtpm cannot join the launcher's cgroup ({}); it is not started: in the agent's cgroup, replacing the agent would stop the VM's TPM", "unreachable"),
        [NR_KEY_ROTATION_UNRECOVERABLE] = SAY("KeyRotationIncomplete", "Refused", true, false, NODE_THEN_FAIL, "an interrupted key rotation could not be finished or undone ({}); swtpm is not started", "unknown error"),
        [NR_KEY_PROVIDER_UNAVAILABLE] = SAY("KeyProviderUnavailable", "Waiting", true, false, NODE_THEN_KEYS_BACKOFF, "the key provider is unavailable ({}); the VM's TPM starts as soon as it answers again", "no answer"),
        [NR_KEY_PROVIDER_UNAVAILABLE_REKEY] = SAY("KeyProviderUnavailable", "Waiting", true, false, NODE_THEN_KEYS_BACKOFF, "{}", "the key provider is unavailable"),
        [NR_KEY_UNWRAP_FAILED] = SAY("KeyUnwrapFailed", "Refused", true, true, NODE_THEN_FAIL, "the state key cannot be unwrapped ({}); swtpm is not started and the state is left untouched", "unknown error"),
        [NR_KEY_UNWRAP_FAILED_AFTER_ROTATION] = SAY("KeyUnwrapFailed", "Refused", true, false, NODE_THEN_FAIL, "{}", "the state key cannot be unwrapped"),
        [NR_KEY_ROTATION_INCOMPLETE] = SAY("KeyRotationIncomplete", "Refused", true, true, NODE_THEN_FAIL, "{}; the old state is left as it was and swtpm is not started", "DEK rotation failed"),
        [NR_STATE_ENCRYPTION_FAILED] = SAY("StateEncryptionFailed", "Refused", true, true, NODE_THEN_FAIL, "{}; the old state is left as it was and swtpm is not started", "encrypting the existing unencrypted state failed"),
        [NR_PROVISION_FAILED] = SAY("ProvisionFailed", "Failed", true, false, NODE_THEN_FAIL, "{}", "swtpm_setup failed"),
        [NR_STATE_UNREADABLE] = SAY("StateUnreadable", "Refused", true, true, NODE_THEN_FAIL, "the TPM state cannot be loaded ({}); it is left untouched and swtpm is not started", "unreadable"),
        [NR_SWTPM_START_FAILED] = SAY("SwtpmStartFailed", "Failed", true, false, NODE_THEN_FAIL, "{}", "swtpm did not start"),
        [NR_MIGRATION_TARGET_READY] = SAY("MigrationTargetReady", "Migrating", false, false, NODE_THEN_DONE, "{}", "the migration target's vTPM runs"),
        [NR_MIGRATION_TARGET_UNPROVEN] = SAY("MigrationTargetUnproven", "Refused", true, true, NODE_THEN_DONE, "not started as a migration target: {}", "KubeVirt does not name this launcher"),
        [NR_MIGRATION_OVER] = SAY("MigrationOver", "Stopped", false, false, NODE_THEN_DONE, "the migration this launcher was the target of {} before its vTPM started; nothing is started", "ended"),
        [NR_MIGRATION_HANDOVER_WAITING] = SAY("StateHandoverWaiting", "Running", false, false, NODE_THEN_LOCK_WAIT, "{}", "the migration completed; waiting for the source to release the state lock"),
        [NR_STATE_HANDED_OVER] = SAY("StateHandedOver", "Running", false, false, NODE_THEN_DONE, "{}", "the TPM state was handed over"),
        [NR_MIGRATION_STATE_NOT_SHARED] = SAY("MigrationStateNotShared", "Refused", true, true, NODE_THEN_DONE, "{}", "the migration target does not mount the VM's state volume"),
        [NR_STATE_GENERATION_FAILED] = SAY("StateGenerationFailed", "Refused", true, true, NODE_THEN_FAIL, "{}; the VM's state is left as it is and swtpm is not started", "the state volume's generation"),
};

const node_reason_info *node_reason_get(node_reason r) {
        return (unsigned)r < _NR_MAX ? &table[r] : &table[NR_NONE];
}

_Static_assert(_NR_MAX <= NODE_CONTROLLER_REASONS_MAX, "node_controller_stats.refusals_by_reason is too small");

const char *node_controller_reason_name(unsigned i) {
        return i < _NR_MAX ? (table[i].reason ?: "") : NULL;
}

char *node_reason_message(node_reason r, const char *detail) {
        const node_reason_info *i = node_reason_get(r);
        const char *hole = strstr(i->message, "{}");
        if (!hole)
                return xstrdup(i->message);
        const char *d = detail ? detail : (i->fallback ? i->fallback : "");
        return xasprintf("%.*s%s%s", (int)(hole - i->message), i->message, d, hole + 2);
}
