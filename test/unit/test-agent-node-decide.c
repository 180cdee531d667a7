/* SPDX-License-Identifier: Apache-2.0 */
/* agent/node/decide.c: what the node controller does for a launcher, from
 * what it observed (the VM, TPMState and PVC as cached; the launcher's
 * recorded swtpm) alone. One row per rule; and every reason of the node's
 * reason table (agent/node/reasons.c) with its phase and what follows. */
#include <string.h>

#include "base/alloc.h"
#include "node/node.h"
#include "tap.h"

#define VM(tpm, ann) "{\"metadata\":{\"name\":\"v\",\"namespace\":\"ns\",\"uid\":\"vm-uid\",\"annotations\":{" ann "}}" tpm "}"
/* With annotations in spec.template.metadata (KubeVirt's VMI gets those). */
#define VMT(tpm, ann, tann) \
        "{\"metadata\":{\"name\":\"v\",\"namespace\":\"ns\",\"uid\":\"vm-uid\",\"annotations\":{" ann "}}" \
        ",\"spec\":{\"template\":{\"metadata\":{\"annotations\":{" tann "}}}}" tpm "}"
#define TPM_PERSISTENT ",\"tpm\":{\"persistent\":true}"
#define TPM_EPHEMERAL ",\"tpm\":{}"
#define TPM_DISABLED ",\"tpm\":{\"enabled\":false}"
#define NO_TPM ""
#define TS(status) "{\"metadata\":{\"name\":\"v\",\"namespace\":\"ns\"},\"status\":" status "}"
#define TS_READY TS("{\"phase\":\"Ready\",\"persistent\":true,\"pvcName\":\"persistent-state-for-v\"}")
#define TS_PENDING TS("{\"phase\":\"Pending\",\"persistent\":true,\"pvcName\":\"persistent-state-for-v\"}")
#define TS_EPHEMERAL TS("{\"phase\":\"Ephemeral\",\"persistent\":false}")
#define PVC_BOUND "{\"metadata\":{\"name\":\"persistent-state-for-v\"},\"spec\":{\"volumeName\":\"pv-1\"}}"

typedef struct row {
        const char *name;
        /* the launcher's record */
        const char *vm_name;
        pid_t swtpm_pid;
        bool persistent, fenced;
        /* observed */
        const char *vm, *ts, *pvc;
        bool swtpm_alive, launcher_alive, lock_fenced;
        /* expected */
        node_step step;
        const char *reason; /* NULL: none */
        const char *phase;
        bool starts, start_persistent;
} row;

static const row rows[] = {
        {"not a KubeVirt launcher (no vm label)", "", 0, false, false, NULL, NULL, NULL, false, false, false,
         NODE_NOTHING, NULL, NULL, false, false},
        {"VM not in the cache yet", "v", 0, false, false, NULL, TS_READY, PVC_BOUND, false, false, false,
         NODE_WAIT_CACHE, NULL, NULL, false, false},
        {"TPMState not in the cache yet", "v", 0, false, false, VM(TPM_PERSISTENT, ""), NULL, NULL, false, false,
         false, NODE_WAIT_CACHE, NULL, NULL, false, false},
        {"no TPM", "v", 0, false, false, VM(NO_TPM, ""), TS("{}"), NULL, false, false, false, NODE_NOTHING, NULL,
         NULL, false, false},
        {"TPM disabled", "v", 0, false, false, VM(TPM_DISABLED, ""), TS("{}"), NULL, false, false, false,
         NODE_NOTHING, NULL, NULL, false, false},
        {"no TPM in the VM, a preference said not persistent", "v", 0, false, false, VM(NO_TPM, ""), TS_EPHEMERAL,
         NULL, false, false, false, NODE_NOTHING, NULL, NULL, false, false},
        {"not persistent: scratch state, started", "v", 0, false, false, VM(TPM_EPHEMERAL, ""), TS_EPHEMERAL, NULL,
         false, false, false, NODE_START, NULL, NULL, true, false},
        {"persistent, volume bound: started", "v", 0, false, false, VM(TPM_PERSISTENT, ""), TS_READY, PVC_BOUND,
         false, false, false, NODE_START, NULL, NULL, true, true},
        {"persistent through a preference (the state controller's verdict)", "v", 0, false, false, VM(NO_TPM, ""),
         TS_READY, PVC_BOUND, false, false, false, NODE_START, NULL, NULL, true, true},
        {"persistent, volume not bound yet", "v", 0, false, false, VM(TPM_PERSISTENT, ""), TS_PENDING, PVC_BOUND,
         false, false, false, NODE_HALT, "WaitingForStateVolume", "Waiting", false, false},
        {"persistent, no phase yet", "v", 0, false, false, VM(TPM_PERSISTENT, ""), TS("{}"), NULL, false, false,
         false, NODE_HALT, "WaitingForStateVolume", "Waiting", false, false},
        {"persistent, PVC not in the cache yet", "v", 0, false, false, VM(TPM_PERSISTENT, ""), TS_READY, NULL, false,
         false, false, NODE_WAIT_CACHE, NULL, NULL, false, false},
        {"TPM version 3.0", "v", 0, false, false, VM(TPM_PERSISTENT, "\"vtpm-agent.io/tpm-version\":\"3.0\""),
         TS_READY, PVC_BOUND, false, false, false, NODE_HALT, "TPMVersionUnsupported", "Refused", false, false},
        {"TPM model tpm-spapr", "v", 0, false, false, VM(TPM_EPHEMERAL, "\"vtpm-agent.io/tpm-model\":\"tpm-spapr\""),
         TS_EPHEMERAL, NULL, false, false, false, NODE_HALT, "TPMVersionUnsupported", "Refused", false, false},
        {"TPM 1.2 with tpm-crb", "v", 0, false, false, VM(TPM_EPHEMERAL, "\"vtpm-agent.io/tpm-version\":\"1.2\""),
         TS_EPHEMERAL, NULL, false, false, false, NODE_HALT, "TPMModelUnsupported", "Refused", false, false},
        {"TPM 1.2 with tpm-tis: started", "v", 0, false, false,
         VM(TPM_EPHEMERAL, "\"vtpm-agent.io/tpm-version\":\"1.2\",\"vtpm-agent.io/tpm-model\":\"tpm-tis\""),
         TS_EPHEMERAL, NULL, false, false, false, NODE_START, NULL, NULL, true, false},
        {"TPM 1.2 in the template (where KubeVirt's domain reads it) with tpm-crb", "v", 0, false, false,
         VMT(TPM_EPHEMERAL, "", "\"vtpm-agent.io/tpm-version\":\"1.2\""), TS_EPHEMERAL, NULL, false, false, false,
         NODE_HALT, "TPMModelUnsupported", "Refused", false, false},
        {"TPM 1.2 and tpm-tis in the template: started", "v", 0, false, false,
         VMT(TPM_EPHEMERAL, "", "\"vtpm-agent.io/tpm-version\":\"1.2\",\"vtpm-agent.io/tpm-model\":\"tpm-tis\""),
         TS_EPHEMERAL, NULL, false, false, false, NODE_START, NULL, NULL, true, false},
        {"the template's annotation wins over the VM's older place", "v", 0, false, false,
         VMT(TPM_EPHEMERAL, "\"vtpm-agent.io/tpm-version\":\"3.0\"", ""), TS_EPHEMERAL, NULL, false, false, false,
         NODE_HALT, "TPMVersionUnsupported", "Refused", false, false},
        {"the VM and its template ask for different models", "v", 0, false, false,
         VMT(TPM_EPHEMERAL, "\"vtpm-agent.io/tpm-model\":\"tpm-tis\"", "\"vtpm-agent.io/tpm-model\":\"tpm-crb\""),
         TS_EPHEMERAL, NULL, false, false, false, NODE_HALT, "TPMAnnotationsConflict", "Refused", false, false},
        {"version refused before the volume is waited for", "v", 0, false, false,
         VM(TPM_PERSISTENT, "\"vtpm-agent.io/tpm-version\":\"1.2\""), TS_PENDING, NULL, false, false, false,
         NODE_HALT, "TPMModelUnsupported", "Refused", false, false},
        {"swtpm runs: never a second one", "v", 1234, true, false, VM(TPM_PERSISTENT, ""), TS_READY, PVC_BOUND, true,
         true, false, NODE_KEEP_RUNNING, NULL, NULL, false, false},
        {"swtpm exited, launcher runs", "v", 1234, true, false, NULL, NULL, NULL, false, true, false,
         NODE_SWTPM_EXITED, "SwtpmExited", "Stopped", false, false},
        {"swtpm exited, launcher gone: nothing said", "v", 1234, false, false, NULL, NULL, NULL, false, false, false,
         NODE_SWTPM_EXITED, NULL, NULL, false, false},
        {"swtpm stopped by its lock's fence just now", "v", 1234, true, false, NULL, NULL, NULL, false, true, true,
         NODE_FENCED_NOW, NULL, NULL, false, false},
        {"fenced: not started again for this launcher", "v", 0, true, true, VM(TPM_PERSISTENT, ""), TS_READY,
         PVC_BOUND, false, true, false, NODE_FENCED, NULL, NULL, false, false},
};

static json_t *parse(const char *s) {
        if (!s)
                return NULL;
        json_error_t e;
        json_t *v = json_loads(s, 0, &e);
        if (!v)
                printf("# bad fixture (%s): %s\n", e.text, s);
        return v;
}

static void test_decide_rows(void) {
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const row *r = &rows[i];
                launcher l = {.vm_name = (char *)r->vm_name, .vm_uid = (char *)"vm-uid", .swtpm_pid = r->swtpm_pid,
                              .persistent = r->persistent, .fenced = r->fenced};
                node_observed o = {.vm = parse(r->vm), .ts = parse(r->ts), .pvc = parse(r->pvc),
                                   .swtpm_alive = r->swtpm_alive, .launcher_alive = r->launcher_alive,
                                   .lock_fenced = r->lock_fenced};
                node_decision d;
                node_decide(&l, &o, &d);
                printf("# %s: %s\n", r->name, node_step_name(d.step));
                check_str_eq(node_step_name(d.step), node_step_name(r->step));
                bool said = d.step == NODE_HALT || (d.step == NODE_SWTPM_EXITED && d.reason != NR_NONE);
                check(said == (r->reason != NULL));
                if (said && r->reason) {
                        check_str_eq(node_reason_get(d.reason)->reason, r->reason);
                        check_str_eq(node_reason_get(d.reason)->phase, r->phase);
                }
                check((d.step == NODE_START) == r->starts);
                if (r->starts) {
                        check(d.persistent == r->start_persistent);
                        check_str_eq(d.vm_uid, "vm-uid");
                        if (r->start_persistent)
                                check_str_eq(d.pv, "pv-1");
                }
                node_decision_done(&d);
                node_observed_done(&o);
        }
}

/* Live migration: a target launcher (its pod labelled with the migration's
 * uid) starts only when KubeVirt's migrationState names it, for a migration
 * under way; its running swtpm takes the state over once it completed. */
#define VMI(ms) "{\"metadata\":{\"name\":\"v\",\"namespace\":\"ns\"},\"status\":{\"migrationState\":" ms "}}"
#define MS(uid, pod, extra) "{\"migrationUid\":\"" uid "\",\"targetPod\":\"" pod "\"" extra "}"
static const struct mig_row {
        const char *name;
        const char *migration_uid; /* the pod's label */
        pid_t swtpm_pid;
        bool handed_over;
        const char *vmi;
        node_step step;
        const char *reason;
        bool target; /* a NODE_START as migration_uid's target */
} mig_rows[] = {
        {"target, VMI not cached yet: wait", "m1", 0, false, NULL, NODE_WAIT_CACHE, NULL, false},
        {"target named by the VMI: started as the target", "m1", 0, false, VMI(MS("m1", "virt-launcher-v-t", "")),
         NODE_START, NULL, true},
        {"labelled for another migration than the VMI's", "m1", 0, false, VMI(MS("m2", "virt-launcher-v-t", "")),
         NODE_HALT, "MigrationTargetUnproven", false},
        {"the VMI names another target pod (a second launcher)", "m1", 0, false,
         VMI(MS("m1", "virt-launcher-v-other", "")), NODE_HALT, "MigrationTargetUnproven", false},
        {"no migrationState at all", "m1", 0, false, "{\"metadata\":{\"name\":\"v\"}}", NODE_HALT,
         "MigrationTargetUnproven", false},
        {"migration failed before the target's vTPM started", "m1", 0, false,
         VMI(MS("m1", "virt-launcher-v-t", ",\"failed\":true")), NODE_HALT, "MigrationOver", false},
        {"target running, migration under way: keep running", "m1", 4321, false,
         VMI(MS("m1", "virt-launcher-v-t", "")), NODE_KEEP_RUNNING, NULL, false},
        {"target running, migration completed: hand over", "m1", 4321, false,
         VMI(MS("m1", "virt-launcher-v-t", ",\"completed\":true")), NODE_HANDOVER, NULL, false},
        {"completed and failed (aborted at the end): no hand-over", "m1", 4321, false,
         VMI(MS("m1", "virt-launcher-v-t", ",\"completed\":true,\"failed\":true")), NODE_KEEP_RUNNING, NULL, false},
        {"completed, but another migration's: no hand-over", "m1", 4321, false,
         VMI(MS("m2", "virt-launcher-v-t", ",\"completed\":true")), NODE_KEEP_RUNNING, NULL, false},
        {"completed, handed over already: keep running", "m1", 4321, true,
         VMI(MS("m1", "virt-launcher-v-t", ",\"completed\":true")), NODE_KEEP_RUNNING, NULL, false},
};

static void test_migration_rows(void) {
        for (size_t i = 0; i < ELEMENTSOF(mig_rows); i++) {
                const struct mig_row *r = &mig_rows[i];
                launcher l = {.key = (char *)"ns/virt-launcher-v-t", .vm_name = (char *)"v", .vm_uid = (char *)"vm-uid",
                              .swtpm_pid = r->swtpm_pid, .persistent = true, .migration_uid = (char *)r->migration_uid,
                              .handed_over = r->handed_over};
                node_observed o = {.vm = parse(VM(TPM_PERSISTENT, "")), .ts = parse(TS_READY), .pvc = parse(PVC_BOUND),
                                   .vmi = parse(r->vmi), .swtpm_alive = r->swtpm_pid > 0, .launcher_alive = true};
                node_decision d;
                node_decide(&l, &o, &d);
                printf("# %s: %s\n", r->name, node_step_name(d.step));
                check_str_eq(node_step_name(d.step), node_step_name(r->step));
                if (r->reason)
                        check_str_eq(node_reason_get(d.reason)->reason, r->reason);
                if (r->target) {
                        check_str_eq(d.migration_uid, r->migration_uid);
                        check(d.persistent);
                        check_str_eq(d.pv, "pv-1");
                }
                node_decision_done(&d);
                node_observed_done(&o);
        }
        /* A launcher whose swtpm exited (its VM migrated away, or stopped)
         * never gets a second one, whatever the caches say. */
        {
                launcher e = {.key = (char *)"ns/virt-launcher-v-s", .vm_name = (char *)"v", .persistent = true,
                              .swtpm_ended = true};
                node_observed eo = {.vm = parse(VM(TPM_PERSISTENT, "")), .ts = parse(TS_READY), .pvc = parse(PVC_BOUND)};
                node_decision ed;
                node_decide(&e, &eo, &ed);
                check_str_eq(node_step_name(ed.step), "nothing");
                node_decision_done(&ed);
                node_observed_done(&eo);
        }
        /* Not a target: the same VMI in the caches changes nothing. */
        launcher l = {.key = (char *)"ns/virt-launcher-v-t", .vm_name = (char *)"v", .persistent = true};
        node_observed o = {.vm = parse(VM(TPM_PERSISTENT, "")), .ts = parse(TS_READY), .pvc = parse(PVC_BOUND)};
        node_decision d;
        node_decide(&l, &o, &d);
        check(d.step == NODE_START && !d.migration_uid);
        node_decision_done(&d);
        node_observed_done(&o);
}

static void test_version_message(void) {
        launcher l = {.vm_name = (char *)"v"};
        node_observed o = {.vm = parse(VM(TPM_EPHEMERAL, "\"vtpm-agent.io/tpm-version\":\"3.0\"")), .ts = parse(TS_EPHEMERAL)};
        node_decision d;
        node_decide(&l, &o, &d);
        _cleanup_free_ char *m = node_reason_message(d.reason, d.detail);
        check_str_eq(m, "TPM version \"3.0\" / model \"tpm-crb\" is not supported (versions 2.0, 1.2; models "
                        "tpm-crb, tpm-tis)");
        node_decision_done(&d);
        node_observed_done(&o);
}

/* Every reason the node reports: its phase, and what the controller does next. */
static const struct {
        node_reason r;
        const char *reason, *phase;
        node_then then;
        bool warn;
} reasons[] = {
        {NR_VTPM_STARTED, "VTPMStarted", "Running", NODE_THEN_DONE, false},
        {NR_SWTPM_EXITED, "SwtpmExited", "Stopped", NODE_THEN_DONE, false},
        {NR_TPM_FENCED, "TPMFenced", "Stopped", NODE_THEN_DONE, true},
        {NR_TPM_VERSION_UNSUPPORTED, "TPMVersionUnsupported", "Refused", NODE_THEN_DONE, true},
        {NR_TPM_MODEL_UNSUPPORTED, "TPMModelUnsupported", "Refused", NODE_THEN_DONE, true},
        {NR_TPM_ANNOTATIONS_CONFLICT, "TPMAnnotationsConflict", "Refused", NODE_THEN_DONE, true},
        {NR_WAITING_FOR_STATE_VOLUME, "WaitingForStateVolume", "Waiting", NODE_THEN_RETRY, false},
        {NR_LAUNCHER_IDENTITY_REFUSED, "LauncherIdentityRefused", "Refused", NODE_THEN_FAIL, true},
        {NR_WAITING_FOR_STATE_LOCK, "WaitingForStateLock", "Waiting", NODE_THEN_LOCK_WAIT, false},
        {NR_STATE_IN_USE, "StateInUse", "Refused", NODE_THEN_FAIL, true},
        {NR_ATTACHMENT_POD_FOREIGN, "AttachmentPodForeign", "Refused", NODE_THEN_FAIL, true},
        {NR_WAITING_FOR_ATTACHMENT, "WaitingForAttachment", "Waiting", NODE_THEN_RETRY, false},
        {NR_STATE_VOLUME_NOT_PUBLISHED, "StateVolumeNotMounted", "Refused", NODE_THEN_RETRY, true},
        {NR_STATE_VOLUME_MOUNT_FAILED, "StateVolumeNotMounted", "Refused", NODE_THEN_FAIL, true},
        {NR_STATE_VOLUME_GONE, "StateVolumeNotMounted", "Refused", NODE_THEN_RETRY, true},
        {NR_SWTPM_UID_UNAVAILABLE, "SwtpmUidUnavailable", "Refused", NODE_THEN_RETRY, true},
        {NR_SWTPM_CGROUP_UNAVAILABLE, "SwtpmCgroupUnavailable", "Refused", NODE_THEN_FAIL, true},
        {NR_KEY_ROTATION_UNRECOVERABLE, "KeyRotationIncomplete", "Refused", NODE_THEN_FAIL, true},
        {NR_KEY_PROVIDER_UNAVAILABLE, "KeyProviderUnavailable", "Waiting", NODE_THEN_KEYS_BACKOFF, true},
        {NR_KEY_PROVIDER_UNAVAILABLE_REKEY, "KeyProviderUnavailable", "Waiting", NODE_THEN_KEYS_BACKOFF, true},
        {NR_KEY_UNWRAP_FAILED, "KeyUnwrapFailed", "Refused", NODE_THEN_FAIL, true},
        {NR_KEY_UNWRAP_FAILED_AFTER_ROTATION, "KeyUnwrapFailed", "Refused", NODE_THEN_FAIL, true},
        {NR_KEY_ROTATION_INCOMPLETE, "KeyRotationIncomplete", "Refused", NODE_THEN_FAIL, true},
        {NR_STATE_ENCRYPTION_FAILED, "StateEncryptionFailed", "Refused", NODE_THEN_FAIL, true},
        {NR_PROVISION_FAILED, "ProvisionFailed", "Failed", NODE_THEN_FAIL, true},
        {NR_STATE_UNREADABLE, "StateUnreadable", "Refused", NODE_THEN_FAIL, true},
        {NR_SWTPM_START_FAILED, "SwtpmStartFailed", "Failed", NODE_THEN_FAIL, true},
        {NR_MIGRATION_TARGET_READY, "MigrationTargetReady", "Migrating", NODE_THEN_DONE, false},
        {NR_MIGRATION_TARGET_UNPROVEN, "MigrationTargetUnproven", "Refused", NODE_THEN_DONE, true},
        {NR_MIGRATION_OVER, "MigrationOver", "Stopped", NODE_THEN_DONE, false},
        {NR_MIGRATION_HANDOVER_WAITING, "StateHandoverWaiting", "Running", NODE_THEN_LOCK_WAIT, false},
        {NR_STATE_HANDED_OVER, "StateHandedOver", "Running", NODE_THEN_DONE, false},
        {NR_STATE_GENERATION_FAILED, "StateGenerationFailed", "Refused", NODE_THEN_FAIL, true},
        {NR_MIGRATION_STATE_NOT_SHARED, "MigrationStateNotShared", "Refused", NODE_THEN_DONE, true},
};

static void test_reason_table(void) {
        check_int_eq(ELEMENTSOF(reasons), _NR_MAX - 1);
        for (size_t i = 0; i < ELEMENTSOF(reasons); i++) {
                const node_reason_info *info = node_reason_get(reasons[i].r);
                check_str_eq(info->reason, reasons[i].reason);
                check_str_eq(info->phase, reasons[i].phase);
                check(info->then == reasons[i].then);
                check(info->warn == reasons[i].warn);
                /* A message with a detail, and without one (the fallback): never empty, never "{}". */
                _cleanup_free_ char *with = node_reason_message(reasons[i].r, "DETAIL");
                _cleanup_free_ char *without = node_reason_message(reasons[i].r, NULL);
                check(!strstr(with, "{}") && !strstr(without, "{}") && *without);
                check(strstr(info->message, "{}") ? strstr(with, "DETAIL") != NULL : strcmp(with, without) == 0);
        }
}

static void test_messages(void) {
        _cleanup_free_ char *m = node_reason_message(NR_STATE_IN_USE, "node-2/ns/virt-launcher-v/uid");
        check_str_eq(m, "the VM's TPM state is in use by node-2/ns/virt-launcher-v/uid; a second swtpm on the same "
                        "state is never started");
        _cleanup_free_ char *k = node_reason_message(NR_KEY_PROVIDER_UNAVAILABLE, "503");
        check_str_eq(k, "the key provider is unavailable (503); the VM's TPM starts as soon as it answers again");
}

int main(void) {
        static const tap_case cases[] = {TAP_CASE(test_decide_rows), TAP_CASE(test_migration_rows),
                                         TAP_CASE(test_version_message),
                                         TAP_CASE(test_reason_table), TAP_CASE(test_messages), {0}};
        return tap_run(cases);
}
