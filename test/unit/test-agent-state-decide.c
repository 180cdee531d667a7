/* SPDX-License-Identifier: Apache-2.0 */
/* state/decide.c: one row per rule of README "Rules the state controller
 * keeps" and per reason the state controller reports. Each row is what was
 * observed (the VM's TPM, its PVC, its TPMState's status, its launcher, the
 * StorageClasses) and what a user then sees: the TPMState's phase and Ready
 * reason, the Warning events on the VM, and whether a PVC or TPMState is
 * created. */
#include <stdlib.h>
#include <string.h>

#include "state/decide.h"
#include "tap.h"
#include "tpmstate_status.h"
#include "vmspec.h"

#define VM_UID "0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e01"
#define GEN 3
#define NOW ((usec_t)1767225600 * USEC_PER_SEC) /* 2026-01-01T00:00:00Z */

/* PVC fixtures (persistent-state-for-vm1 in ns1). AGENT_*: labelled
 * managed-by vtpm-agent, as the agent makes it; ADOPTED: and labelled
 * persistent-state-for=vm1 by KubeVirt. */
enum pvc_kind { PVC_NONE, PVC_BOUND, PVC_PENDING, PVC_RWO, PVC_BLOCK, PVC_FOREIGN, PVC_AGENT_NEW, PVC_AGENT_OLD, PVC_ADOPTED };
/* KubeVirt's own state PVCs (labelled persistent-state-for=vm1): none, one, two. */
enum kv_kind { KV_NONE, KV_ONE, KV_TWO, KV_OLDER /* one, made a second before ours */ };
#define KV_NAME "persistent-state-for-vm1-x7k2p"
#define KV_CREATED "2026-01-01T00:00:30Z" /* ours (AGENT_NEW) was made 30 s before */

typedef struct row {
        const char *name;
        /* observed */
        const char *tpm;      /* the VM's devices.tpm (JSON); NULL: none */
        const char *vm_extra; /* JSON merged into the VM: preference, annotations, deletionTimestamp */
        enum pvc_kind pvc;
        const char *status;   /* the TPMState's status (JSON); NULL: no TPMState */
        const char *launcher; /* the launcher pod's uid; NULL: none running */
        const char *config_class;
        const char *classes;  /* "name=provisioner[*default][+virt][!norwxprofile]" comma-separated */
        /* what a user sees */
        bool report;          /* false: nothing is written or said */
        const char *phase;
        const char *reason;   /* the Ready condition's reason */
        const char *events;   /* the Warning reasons, comma-separated; "" none */
        bool creates_pvc;
        const char *message;  /* the status message contains this */
        const char *restart;  /* RestartRequired condition status; NULL: not checked */
        /* KubeVirt's side (designated initializers; zero: none) */
        enum kv_kind kv;
        const char *claim;    /* the launcher's vm-state claimName */
        bool deletes_pvc;     /* ours is deleted (it lost the race) */
        bool labels_pvc;      /* ours gets KubeVirt's label persistent-state-for=vm1 */
        const char *volume;   /* status.pvcName; NULL: not checked */
        const char *made_by;  /* status.pvcCreatedBy; NULL: not checked */
} row;

#define PERSISTENT "{\"persistent\":true}"
#define NODE_USED "{\"nodeState\":{\"node\":\"node-1\",\"phase\":\"Running\"}}"

#define OURS_READY "{\"phase\":\"Ready\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"StateVolumeBound\",\"observedGeneration\":3}]}"

static const row rows[] = {
        /* Rule 1: the PVC's name, shape, size, labels and owner (checked in test_pvc_shape). */
        {"persistent, no PVC: one is created, Pending", "{\"persistent\":true}", NULL, PVC_NONE, NULL, NULL, NULL,
         "std=p*", true, "Pending", "WaitingForBinding", "", true, "waiting for it to bind", NULL},
        {"persistent, our PVC bound: Ready", "{\"persistent\":true}", NULL, PVC_BOUND, "{}", NULL, NULL, NULL, true,
         "Ready", "StateVolumeBound", "", false, "state volume persistent-state-for-vm1 is bound", NULL},
        {"persistent, our PVC pending: Pending", "{\"persistent\":true}", NULL, PVC_PENDING, "{}", NULL, NULL, NULL, true,
         "Pending", "WaitingForBinding", "", false, "is Pending, waiting for it to bind", NULL},
        /* Rule 2: a foreign PVC is never adopted; a wrong shape is reported. */
        {"a PVC the VM does not control: Conflict, named owner", "{\"persistent\":true}", NULL, PVC_FOREIGN, NULL, NULL,
         NULL, NULL, true, "Conflict", "StateVolumeConflict", "StateVolumeConflict", false,
         "controlled by VirtualMachine other (uid 11111111", NULL},
        {"the same conflict, already reported this generation: no second event", "{\"persistent\":true}", NULL,
         PVC_FOREIGN,
         "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"StateVolumeConflict\",\"observedGeneration\":3}]}",
         NULL, NULL, NULL, true, "Conflict", "StateVolumeConflict", "", false, "it is not adopted, changed or deleted",
         NULL},
        {"our PVC is ReadWriteOnce: WrongShape", "{\"persistent\":true}", NULL, PVC_RWO, "{}", NULL, NULL, NULL, true,
         "Error", "StateVolumeWrongShape", "StateVolumeWrongShape", false, "accessModes [\"ReadWriteOnce\"]", NULL},
        {"our PVC is a Block volume: WrongShape", "{\"persistent\":true}", NULL, PVC_BLOCK, "{}", NULL, NULL, NULL, true,
         "Error", "StateVolumeWrongShape", "StateVolumeWrongShape", false, "volumeMode Block", NULL},
        /* Rule 3: persistence off or no TPM keeps the PVC. */
        {"persistence turned off, our PVC: Retained (+ NonPersistentTPM)", "{\"persistent\":false}", NULL, PVC_BOUND,
         OURS_READY, NULL, NULL, NULL, true, "Retained", "StateRetained", "NonPersistentTPM", false,
         "retained in PVC persistent-state-for-vm1. Delete that PVC to release it on purpose", NULL},
        {"TPM removed, our PVC: Retained", NULL, NULL, PVC_BOUND, OURS_READY, NULL, NULL, NULL, true, "Retained",
         "StateRetained", "", false, "Delete that PVC to release the state on purpose", NULL},
        {"TPM disabled, our PVC: Retained", "{\"enabled\":false,\"persistent\":true}", NULL, PVC_BOUND, OURS_READY, NULL,
         NULL, NULL, true, "Retained", "StateRetained", "", false, "the VM has no TPM now", NULL},
        {"no TPM, no PVC, no TPMState: nothing at all", NULL, NULL, PVC_NONE, NULL, NULL, NULL, "std=p*", false, NULL,
         NULL, "", false, NULL, NULL},
        {"TPM removed, TPMState left: NoTPM", NULL, NULL, PVC_NONE, "{}", NULL, NULL, "std=p*", true, "NoTPM", "NoTPM", "",
         false, "the VM has no TPM", NULL},
        /* Rule 4: one NonPersistentTPM per generation. */
        {"not persistent: Ephemeral + NonPersistentTPM", "{}", NULL, PVC_NONE, NULL, NULL, NULL, "std=p*", true,
         "Ephemeral", "NotPersistent", "NonPersistentTPM", false, "lost when the VM stops", NULL},
        {"not persistent, warned this generation: no second warning", "{\"persistent\":false}", NULL, PVC_NONE,
         "{\"warnedGeneration\":3}", NULL, NULL, "std=p*", true, "Ephemeral", "NotPersistent", "", false, NULL, NULL},
        {"not persistent, warned for an older generation: warned again", "{\"persistent\":false}", NULL, PVC_NONE,
         "{\"warnedGeneration\":2}", NULL, NULL, "std=p*", true, "Ephemeral", "NotPersistent", "NonPersistentTPM", false,
         NULL, NULL},
        /* Rule 5: RestartRequired while the launcher that started before the change runs. */
        {"persistence turned on under a running launcher: RestartRequired", "{\"persistent\":true}", NULL, PVC_BOUND,
         "{\"launcher\":{\"uid\":\"pod-1\",\"persistent\":false}}", "pod-1", NULL, NULL, true, "Ready",
         "StateVolumeBound", "RestartRequired", false, NULL, "True"},
        {"RestartRequired already set: no second event", "{\"persistent\":true}", NULL, PVC_BOUND,
         "{\"launcher\":{\"uid\":\"pod-1\",\"persistent\":false},\"conditions\":[{\"type\":\"RestartRequired\",\"status\":\"True\"}]}",
         "pod-1", NULL, NULL, true, "Ready", "StateVolumeBound", "", false, NULL, "True"},
        {"persistence turned off under a running launcher: RestartRequired", "{\"persistent\":false}", NULL, PVC_BOUND,
         "{\"warnedGeneration\":3,\"launcher\":{\"uid\":\"pod-1\",\"persistent\":true}}", "pod-1", NULL, NULL, true,
         "Retained", "StateRetained", "RestartRequired", false, NULL, "True"},
        {"the next launcher: RestartRequired off", "{\"persistent\":true}", NULL, PVC_BOUND,
         "{\"launcher\":{\"uid\":\"pod-1\",\"persistent\":false},\"conditions\":[{\"type\":\"RestartRequired\",\"status\":\"True\"}]}",
         "pod-2", NULL, NULL, true, "Ready", "StateVolumeBound", "", false, NULL, "False"},
        /* Inputs that cannot be used. */
        {"a preference that does not exist: PreferenceNotFound", NULL,
         "{\"spec\":{\"preference\":{\"name\":\"windows.11\"}}}", PVC_NONE, NULL, NULL, NULL, "std=p*", true, "Error",
         "PreferenceNotFound", "PreferenceNotFound", false, "which does not exist", NULL},
        {"PreferenceNotFound already reported this generation: no second event", NULL,
         "{\"spec\":{\"preference\":{\"name\":\"windows.11\"}}}", PVC_NONE,
         "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"PreferenceNotFound\",\"observedGeneration\":3}]}",
         NULL, NULL, "std=p*", true, "Error", "PreferenceNotFound", "", false, NULL, NULL},
        {"persistent: \"yes\": InvalidTPMSpec", "{\"persistent\":\"yes\"}", NULL, PVC_NONE, NULL, NULL, NULL, "std=p*",
         true, "Error", "InvalidTPMSpec", "InvalidTPMSpec", false, "devices.tpm.persistent must be true or false", NULL},
        {"TPM 1.2 with tpm-crb: InvalidTPMSpec", "{\"persistent\":true}",
         "{\"metadata\":{\"annotations\":{\"vtpm-agent.io/tpm-version\":\"1.2\",\"vtpm-agent.io/tpm-model\":\"tpm-crb\"}}}",
         PVC_NONE, NULL, NULL, NULL, "std=p*", true, "Error", "InvalidTPMSpec", "InvalidTPMSpec", false,
         "needs model tpm-tis", NULL},
        /* StorageClasses. */
        {"the configured class does not exist: StorageClassNotFound", "{\"persistent\":true}", NULL, PVC_NONE, NULL,
         NULL, "nope", "std=p*", true, "Error", "StorageClassNotFound", "StorageClassNotFound", false, "nope", NULL},
        {"no class at all: NoStorageClass", "{\"persistent\":true}", NULL, PVC_NONE, NULL, NULL, NULL, "", true, "Error",
         "NoStorageClass", "NoStorageClass", false, NULL, NULL},
        {"a provisioner without RWX: created + StorageClassNotRWX", "{\"persistent\":true}", NULL, PVC_NONE, NULL, NULL,
         NULL, "ebs=ebs.csi.aws.com*", true, "Pending", "WaitingForBinding", "StorageClassNotRWX", true, NULL, NULL},
        {"a CDI profile without RWX Filesystem: created + StorageClassNotRWX", "{\"persistent\":true}", NULL, PVC_NONE,
         NULL, NULL, NULL, "std=p*!", true, "Pending", "WaitingForBinding", "StorageClassNotRWX", true, NULL, NULL},
        /* The VM going. */
        {"VM being deleted: nothing is created, written or said", "{\"persistent\":true}",
         "{\"metadata\":{\"deletionTimestamp\":\"2026-01-01T00:00:00Z\"}}", PVC_NONE, NULL, NULL, NULL, "std=p*", false,
         NULL, NULL, "", false, NULL, NULL},
        {"our PVC went while the TPMState stays: re-created (after asking whether the VM is there)",
         "{\"persistent\":true}", NULL, PVC_NONE, OURS_READY, NULL, NULL, "std=p*", true, "Pending", "WaitingForBinding",
         "", true, NULL, NULL},
        /* One state volume per VM, whoever makes it first (KubeVirt's is labelled persistent-state-for=<vm>). */
        {.name = "KubeVirt made the VM's state volume: used as it is, none created", .tpm = PERSISTENT,
         .pvc = PVC_NONE, .classes = "std=p*", .report = true, .phase = "Ready", .reason = "StateVolumeBound",
         .events = "", .message = "(made by KubeVirt, accessModes [\"ReadWriteOnce\"]) is bound", .kv = KV_ONE,
         .volume = KV_NAME, .made_by = "KubeVirt"},
        {.name = "ours made first, not yet adopted: ours, made by vtpm-agent", .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW,
         .status = "{}", .report = true, .phase = "Ready", .reason = "StateVolumeBound", .events = "",
         .volume = "persistent-state-for-vm1", .made_by = "vtpm-agent"},
        {.name = "ours mounted by the launcher (KubeVirt found it by name): labelled persistent-state-for",
         .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW, .status = "{}", .launcher = "pod-1",
         .claim = "persistent-state-for-vm1", .report = true, .phase = "Ready", .reason = "StateVolumeBound",
         .events = "", .labels_pvc = true, .volume = "persistent-state-for-vm1", .made_by = "vtpm-agent"},
        {.name = "a PVC of our name the VM controls but we did not make, mounted: not labelled", .tpm = PERSISTENT,
         .pvc = PVC_BOUND, .status = "{}", .launcher = "pod-1", .claim = "persistent-state-for-vm1", .report = true,
         .phase = "Ready", .reason = "StateVolumeBound", .events = ""},
        {.name = "ours labelled already: ours, made by vtpm-agent", .tpm = PERSISTENT,
         .pvc = PVC_ADOPTED, .status = "{}", .launcher = "pod-1", .claim = "persistent-state-for-vm1", .report = true,
         .phase = "Ready", .reason = "StateVolumeBound", .events = "", .volume = "persistent-state-for-vm1",
         .made_by = "vtpm-agent"},
        {.name = "a race: ours (30 s older, never used) and KubeVirt's: ours deleted, KubeVirt's used",
         .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW, .status = "{}", .launcher = "pod-1", .claim = KV_NAME,
         .report = true, .phase = "Ready", .reason = "StateVolumeBound", .events = "", .kv = KV_ONE,
         .deletes_pvc = true, .volume = KV_NAME, .made_by = "KubeVirt"},
        {.name = "a race lost, ours made after KubeVirt's (our cache was behind), launcher pending: ours deleted",
         .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW, .status = "{\"encrypted\":false}", .launcher = "pod-1",
         .claim = KV_NAME, .report = true, .phase = "Ready", .reason = "StateVolumeBound", .events = "", .kv = KV_OLDER,
         .deletes_pvc = true, .volume = KV_NAME, .made_by = "KubeVirt"},
        {.name = "a race lost, no launcher yet: ours deleted", .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW,
         .report = true, .phase = "Ready", .reason = "StateVolumeBound", .events = "", .kv = KV_ONE,
         .deletes_pvc = true, .volume = KV_NAME, .made_by = "KubeVirt"},
        {.name = "ours and KubeVirt's, but the launcher mounts ours: Duplicate, nothing deleted", .tpm = PERSISTENT,
         .pvc = PVC_AGENT_NEW, .status = "{}", .launcher = "pod-1", .claim = "persistent-state-for-vm1", .report = true,
         .phase = "Conflict", .reason = "StateVolumeDuplicate", .events = "StateVolumeDuplicate", .kv = KV_ONE,
         .message = "The launcher pod mounts persistent-state-for-vm1", .volume = "persistent-state-for-vm1",
         .made_by = "vtpm-agent"},
        {.name = "ours and KubeVirt's, but a node used ours (status.nodeState): Duplicate, nothing deleted",
         .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW, .status = NODE_USED, .report = true, .phase = "Conflict",
         .reason = "StateVolumeDuplicate", .events = "StateVolumeDuplicate", .kv = KV_ONE,
         .message = "Nothing is deleted", .volume = KV_NAME},
        {.name = "ours and KubeVirt's, but a node encrypted ours (status.encrypted): Duplicate, nothing deleted",
         .tpm = PERSISTENT, .pvc = PVC_AGENT_NEW, .status = "{\"encrypted\":true}", .report = true,
         .phase = "Conflict", .reason = "StateVolumeDuplicate", .events = "StateVolumeDuplicate", .kv = KV_ONE},
        {.name = "ours made 10 minutes before KubeVirt's (not a race): Duplicate, nothing deleted", .tpm = PERSISTENT,
         .pvc = PVC_AGENT_OLD, .status = "{}", .report = true, .phase = "Conflict", .reason = "StateVolumeDuplicate",
         .events = "StateVolumeDuplicate", .kv = KV_ONE, .message = "not defined", .volume = KV_NAME},
        {.name = "ours adopted and KubeVirt's too (two labelled): Duplicate, nothing deleted", .tpm = PERSISTENT,
         .pvc = PVC_ADOPTED, .status = "{}", .report = true, .phase = "Conflict", .reason = "StateVolumeDuplicate",
         .events = "StateVolumeDuplicate", .kv = KV_ONE, .volume = KV_NAME},
        {.name = "two of KubeVirt's: Duplicate", .tpm = PERSISTENT, .report = true, .phase = "Conflict",
         .reason = "StateVolumeDuplicate", .events = "StateVolumeDuplicate", .kv = KV_TWO,
         .message = "2 PVCs labelled persistent-state-for=vm1"},
        {.name = "a foreign PVC of our name and KubeVirt's: KubeVirt's used, the foreign one untouched",
         .tpm = PERSISTENT, .pvc = PVC_FOREIGN, .report = true, .phase = "Ready", .reason = "StateVolumeBound",
         .events = "", .kv = KV_ONE, .volume = KV_NAME, .made_by = "KubeVirt"},
        {.name = "not persistent, KubeVirt's PVC: Ephemeral, says KubeVirt deletes it at the next start", .tpm = "{}",
         .report = true, .phase = "Ephemeral", .reason = "NotPersistent", .events = "NonPersistentTPM", .kv = KV_ONE,
         .message = "KubeVirt deletes its state volume " KV_NAME " at the VM's next start"},
};

/* ---- building an observation ---- */

static json_t *merge(json_t *into, json_t *from) {
        const char *k;
        json_t *v;
        json_object_foreach(from, k, v) {
                json_t *cur = json_object_get(into, k);
                if (json_is_object(cur) && json_is_object(v))
                        merge(cur, v);
                else
                        json_object_set(into, k, v);
        }
        return into;
}

static json_t *parse(const char *s) {
        json_error_t e;
        json_t *j = json_loads(s, 0, &e);
        if (!j)
                fprintf(stderr, "# bad fixture JSON %s: %s\n", s, e.text);
        return j;
}

static json_t *make_vm(const char *name, const row *r) {
        json_t *vm = json_pack("{s:{s:s, s:s, s:s, s:i}, s:{s:{s:{s:{s:{}}}}}}", "metadata", "name", name, "namespace",
                               "ns1", "uid", VM_UID, "generation", GEN, "spec", "template", "spec", "domain", "devices");
        if (r->tpm) {
                json_t *devices = json_object_get(
                        json_object_get(json_object_get(json_object_get(json_object_get(vm, "spec"), "template"), "spec"),
                                        "domain"),
                        "devices");
                json_object_set_new(devices, "tpm", parse(r->tpm));
        }
        if (r->vm_extra) {
                json_t *extra = parse(r->vm_extra);
                merge(vm, extra);
                json_decref(extra);
        }
        return vm;
}

static json_t *make_kv_pvc(const char *name, const char *created) {
        return json_pack("{s:{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:[{s:s, s:s, s:s, s:b}]}, s:{s:[s], s:s, s:s}, s:s}",
                         "metadata", "name", name, "namespace", "ns1", "uid", "kv-uid", "resourceVersion", "7",
                         "creationTimestamp", created, "labels", "persistent-state-for", "vm1",
                         "cdi.kubevirt.io/applyStorageProfile", "true", "ownerReferences", "kind", "VirtualMachine",
                         "name", "vm1", "uid", VM_UID, "controller", 1, "spec", "accessModes", "ReadWriteOnce",
                         "volumeMode", "Filesystem", "storageClassName", "std", "phase", "Bound");
}

static json_t *make_pvc(enum pvc_kind k) {
        if (k == PVC_NONE)
                return NULL;
        if (k == PVC_AGENT_NEW || k == PVC_AGENT_OLD || k == PVC_ADOPTED) {
                json_t *p = make_pvc(PVC_BOUND);
                json_t *md = json_object_get(p, "metadata");
                json_object_set_new(md, "uid", json_string("our-uid"));
                json_object_set_new(md, "resourceVersion", json_string("5"));
                json_object_set_new(md, "creationTimestamp",
                                    json_string(k == PVC_AGENT_OLD ? "2025-12-31T23:50:00Z" : "2026-01-01T00:00:00Z"));
                json_object_set_new(md, "labels", json_pack("{s:s, s:s}", "app.kubernetes.io/managed-by", "vtpm-agent",
                                                            "vtpm-agent.io/vm", "vm1"));
                if (k == PVC_ADOPTED)
                        json_object_set_new(json_object_get(md, "labels"), "persistent-state-for", json_string("vm1"));
                return p;
        }
        const char *owner_uid = k == PVC_FOREIGN ? "11111111-2222-3333-4444-555555555555" : VM_UID;
        const char *owner_name = k == PVC_FOREIGN ? "other" : "vm1";
        return json_pack("{s:{s:s, s:s, s:[{s:s, s:s, s:s, s:b}]}, s:{s:[s], s:s, s:s}, s:s}", "metadata", "name",
                         "persistent-state-for-vm1", "namespace", "ns1", "ownerReferences", "kind", "VirtualMachine",
                         "name", owner_name, "uid", owner_uid, "controller", 1, "spec", "accessModes",
                         k == PVC_RWO ? "ReadWriteOnce" : "ReadWriteMany", "volumeMode",
                         k == PVC_BLOCK ? "Block" : "Filesystem", "storageClassName", "std", "phase",
                         k == PVC_PENDING ? "Pending" : "Bound");
}

/* "name=provisioner[*][+][!]": * the cluster default, + the virt default,
 * ! its CDI profile offers no RWX Filesystem pair. */
static void add_classes(state_observed *o, const char *spec) {
        if (!spec || !*spec) {
                o->classes_read = true;
                return;
        }
        char *copy = strdup(spec), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                char *eq = strchr(tok, '=');
                *eq = 0;
                char *prov = eq + 1;
                bool def = strchr(prov, '*'), virt = strchr(prov, '+'), norwx = strchr(prov, '!');
                prov[strcspn(prov, "*+!")] = 0;
                o->classes = realloc(o->classes, (o->n_classes + 1) * sizeof(sc_info));
                o->class_lacks_rwx_fs = realloc(o->class_lacks_rwx_fs, (o->n_classes + 1) * sizeof(bool));
                o->classes[o->n_classes] = (sc_info){strdup(tok), strdup(prov), def, virt};
                o->class_lacks_rwx_fs[o->n_classes++] = norwx;
        }
        o->classes_read = true;
        free(copy);
}

static json_t *no_preference(const char *kind, const char *ns, const char *name, void *ud) {
        return NULL;
}
static json_t *no_revision(const char *ns, const char *name, void *ud) {
        return NULL;
}

static void observe_row(const row *r, const agent_config *cfg, const char *vm_name, state_observed *o) {
        *o = (state_observed){.cfg = cfg, .now = NOW};
        o->vm = make_vm(vm_name, r);
        preference_lookup lookup = {no_preference, no_revision, NULL};
        state_observe_tpm(o->vm, &lookup, &o->tpm);
        o->pvc_name = state_pvc_name(vm_name);
        o->pvc = make_pvc(r->pvc);
        if (r->status)
                o->tpmstate = json_pack("{s:{s:s, s:s}, s:{s:s}, s:o}", "metadata", "name", vm_name, "namespace", "ns1",
                                        "spec", "vmUID", VM_UID, "status", parse(r->status));
        if (r->launcher)
                o->launcher = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s?}", "metadata", "name", "virt-launcher-vm1-x",
                                        "namespace", "ns1", "uid", r->launcher, "nodeName", "node-1", "stateClaim",
                                        r->claim);
        if (r->kv != KV_NONE) {
                o->kv_pvc = make_kv_pvc(KV_NAME, r->kv == KV_OLDER ? "2025-12-31T23:59:59Z" : KV_CREATED);
                o->n_kv_pvcs = r->kv == KV_TWO ? 2 : 1;
        }
        if (!o->pvc && !o->kv_pvc)
                add_classes(o, r->classes);
}

static agent_config *config_with(const char *cls) {
        agent_config *c = agent_config_new_default();
        free(c->state.storage_class);
        c->state.storage_class = cls ? strdup(cls) : NULL;
        return c;
}

/* ---- what a user sees ---- */

static const char *ready_reason(json_t *status) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(status, "conditions"), i, c) {
                if (strcmp(json_string_value(json_object_get(c, "type")) ?: "", "Ready") == 0)
                        return json_string_value(json_object_get(c, "reason"));
        }
        return NULL;
}

static const char *condition_status(json_t *status, const char *type) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(status, "conditions"), i, c) {
                if (strcmp(json_string_value(json_object_get(c, "type")) ?: "", type) == 0)
                        return json_string_value(json_object_get(c, "status"));
        }
        return NULL;
}

static char *event_list(const state_decision *d) {
        char buf[256] = "";
        for (size_t i = 0; i < d->n_events; i++) {
                if (i)
                        strcat(buf, ",");
                strncat(buf, d->events[i].reason, sizeof(buf) - strlen(buf) - 2);
        }
        return strdup(buf);
}

static void check_row(const row *r) {
        agent_config *cfg = config_with(r->config_class);
        state_observed o;
        observe_row(r, cfg, "vm1", &o);
        state_decision d;
        state_decide(&o, &d);
        printf("# %s\n", r->name);
        check_int_eq(d.report, r->report);
        if (r->report) {
                check_str_eq(json_string_value(json_object_get(d.status, "phase")), r->phase);
                check_str_eq(ready_reason(d.status), r->reason);
                if (r->message)
                        check_contains(json_string_value(json_object_get(d.status, "message")), r->message);
                if (r->restart)
                        check_str_eq(condition_status(d.status, "RestartRequired"), r->restart);
                check_int_eq(d.create_tpmstate, r->status == NULL);
                /* Only the state controller's own fields: nodeState, keys and encrypted are the node agents'. */
                const char *k;
                json_t *v;
                json_object_foreach(d.status, k, v) check_int_eq(tpmstate_field_owner(k), TPMSTATE_OWNER_STATE);
        } else
                check(d.status == NULL && d.pvc == NULL && !d.create_tpmstate);
        char *ev = event_list(&d);
        check_str_eq(ev, r->events);
        free(ev);
        check_int_eq(d.pvc != NULL, r->creates_pvc);
        check_int_eq(d.pvc_recreate, r->creates_pvc && r->status != NULL);
        check_int_eq(d.pvc_delete != NULL, r->deletes_pvc);
        check_int_eq(d.pvc_label != NULL, r->labels_pvc);
        if (d.pvc_label) {
                check_str_eq(json_string_value(json_object_get(d.pvc_label, "vm")), "vm1");
                check_str_eq(json_string_value(json_object_get(d.pvc_label, "resourceVersion")), "5");
        }
        if (d.pvc_delete) { /* exactly the version looked at */
                check_str_eq(json_string_value(json_object_get(d.pvc_delete, "name")), "persistent-state-for-vm1");
                check_str_eq(json_string_value(json_object_get(d.pvc_delete, "uid")), "our-uid");
                check_str_eq(json_string_value(json_object_get(d.pvc_delete, "resourceVersion")), "5");
        }
        if (r->volume)
                check_str_eq(json_string_value(json_object_get(d.status, "pvcName")), r->volume);
        if (r->made_by)
                check_str_eq(json_string_value(json_object_get(d.status, "pvcCreatedBy")), r->made_by);
        /* Every event says something. */
        for (size_t i = 0; i < d.n_events; i++)
                check(d.events[i].note && *d.events[i].note);
        state_decision_done(&d);
        state_observed_done(&o);
        agent_config_free(cfg);
}

static void test_rows(void) {
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                check_row(&rows[i]);
}

static const char *pvc_str(json_t *pvc, const char *a, const char *b, const char *c) {
        json_t *n = json_object_get(json_object_get(pvc, a), b);
        return json_string_value(c ? json_object_get(n, c) : n);
}

static state_decision decide_new(const agent_config *cfg, const char *vm_name, const char *classes,
                                 state_observed *o) {
        row r = {.tpm = "{\"persistent\":true}", .classes = classes};
        observe_row(&r, cfg, vm_name, o);
        state_decision d;
        state_decide(o, &d);
        return d;
}

/* Rule 1 in full: name, RWX, Filesystem, size raised to the class's
 * minimum, labels, the VM as controlling owner with blockOwnerDeletion. */
static void test_pvc_shape(void) {
        static const char yaml[] = "state:\n  size: 20Mi\n  minimumSizes: {big: 1Gi}\n";
        agent_config *cfg = NULL;
        check(agent_config_parse(yaml, strlen(yaml), "cfg.yaml", &cfg, NULL) == 0);
        if (!cfg)
                return;
        state_observed o;
        state_decision d = decide_new(cfg, "vm1", "std=p*", &o);
        json_t *pvc = d.pvc;
        check_str_eq(pvc_str(pvc, "metadata", "name", NULL), "persistent-state-for-vm1");
        check_str_eq(pvc_str(pvc, "metadata", "namespace", NULL), "ns1");
        check_str_eq(json_string_value(json_array_get(json_object_get(json_object_get(pvc, "spec"), "accessModes"), 0)),
                     "ReadWriteMany");
        check_int_eq(json_array_size(json_object_get(json_object_get(pvc, "spec"), "accessModes")), 1);
        check_str_eq(pvc_str(pvc, "spec", "volumeMode", NULL), "Filesystem");
        check_str_eq(pvc_str(pvc, "spec", "storageClassName", NULL), "std");
        check_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(json_object_get(pvc, "spec"), "resources"), "requests"),
                             "storage")),
                     "20Mi");
        check_str_eq(pvc_str(pvc, "metadata", "labels", "app.kubernetes.io/managed-by"), "vtpm-agent");
        check_str_eq(pvc_str(pvc, "metadata", "labels", "vtpm-agent.io/vm"), "vm1");
        /* Not KubeVirt's label: after a race KubeVirt must mount its own (it prefers a labelled one). */
        check(!json_object_get(json_object_get(json_object_get(pvc, "metadata"), "labels"), "persistent-state-for"));
        check_str_eq(json_string_value(json_object_get(d.status, "pvcCreatedBy")), "vtpm-agent");
        json_t *ref = json_array_get(json_object_get(json_object_get(pvc, "metadata"), "ownerReferences"), 0);
        check_str_eq(json_string_value(json_object_get(ref, "kind")), "VirtualMachine");
        check_str_eq(json_string_value(json_object_get(ref, "uid")), VM_UID);
        check(json_is_true(json_object_get(ref, "controller")));
        check(json_is_true(json_object_get(ref, "blockOwnerDeletion")));
        /* The status names the PVC, its class and where the class came from. */
        check_str_eq(json_string_value(json_object_get(d.status, "pvcName")), "persistent-state-for-vm1");
        check_str_eq(json_string_value(json_object_get(d.status, "storageClass")), "std");
        check_str_eq(json_string_value(json_object_get(d.status, "storageClassSource")),
                     sc_source_name(SC_SOURCE_CLUSTER_DEFAULT));
        check(json_is_true(json_object_get(d.status, "persistent")));
        state_decision_done(&d);
        state_observed_done(&o);

        /* A class with a minimum: the size is raised to it. */
        d = decide_new(cfg, "vm1", "big=p*", &o);
        check_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(json_object_get(d.pvc, "spec"), "resources"), "requests"),
                             "storage")),
                     "1Gi");
        state_decision_done(&d);
        state_observed_done(&o);

        /* A VM name too long for the PVC's: a shortened name, still a valid object name. */
        char long_name[254];
        memset(long_name, 'a', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = 0;
        d = decide_new(cfg, long_name, "std=p*", &o);
        const char *n = pvc_str(d.pvc, "metadata", "name", NULL);
        check(n && strlen(n) <= 253 && strncmp(n, "persistent-state-for-", 21) == 0);
        check(n && strlen(pvc_str(d.pvc, "metadata", "labels", "vtpm-agent.io/vm")) <= 63);
        state_decision_done(&d);
        state_observed_done(&o);
        agent_config_free(cfg);
}

/* Level-triggered, write-only-on-difference: deciding again from the status
 * just written changes nothing (no write, no event), and a condition that
 * keeps its status keeps its transition time. */
static void test_steady_state(void) {
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const row *r = &rows[i];
                if (!r->report)
                        continue;
                agent_config *cfg = config_with(r->config_class);
                state_observed o;
                observe_row(r, cfg, "vm1", &o);
                state_decision first;
                state_decide(&o, &first);
                /* What the API server holds after the write: the TPMState, with this status
                 * over the node agents' fields (the state controller writes only its own). */
                json_t *st = json_deep_copy(json_object_get(o.tpmstate, "status"));
                if (!st)
                        st = json_object();
                json_object_update(st, first.status);
                json_decref(o.tpmstate);
                o.tpmstate = json_pack("{s:{s:s, s:s}, s:{s:s}, s:o}", "metadata", "name", "vm1", "namespace", "ns1",
                                       "spec", "vmUID", VM_UID, "status", st);
                if (first.pvc_label) /* labelled */
                        json_object_set_new(json_object_get(json_object_get(o.pvc, "metadata"), "labels"),
                                            "persistent-state-for", json_string("vm1"));
                if (first.pvc_delete) { /* gone */
                        json_decref(o.pvc);
                        o.pvc = NULL;
                }
                if (first.pvc) { /* as the informer caches it (pvc_trim), not bound yet */
                        json_decref(o.pvc);
                        o.pvc = pvc_trim(first.pvc);
                        json_object_set_new(o.pvc, "phase", json_string("Pending"));
                }
                o.now += 60 * USEC_PER_SEC;
                state_decision again;
                state_decide(&o, &again);
                printf("# steady: %s\n", r->name);
                check(!tpmstate_state_fields_differ(first.status, again.status));
                check_int_eq(again.n_events, 0);
                check(again.pvc == NULL && again.pvc_delete == NULL && again.pvc_label == NULL && !again.create_tpmstate);
                state_decision_done(&again);
                state_decision_done(&first);
                state_observed_done(&o);
                agent_config_free(cfg);
        }
}

/* The launcher: its node and the persistence it started with are recorded
 * (what RestartRequired is judged against later). */
static void test_launcher_record(void) {
        agent_config *cfg = config_with(NULL);
        row r = {.tpm = "{\"persistent\":true}", .pvc = PVC_BOUND, .status = "{}", .launcher = "pod-9"};
        state_observed o;
        observe_row(&r, cfg, "vm1", &o);
        state_decision d;
        state_decide(&o, &d);
        check_str_eq(json_string_value(json_object_get(d.status, "node")), "node-1");
        json_t *rec = json_object_get(d.status, "launcher");
        check_str_eq(json_string_value(json_object_get(rec, "uid")), "pod-9");
        check(json_is_true(json_object_get(rec, "persistent")));
        check_str_eq(condition_status(d.status, "RestartRequired"), "False");
        /* The transition time is the observation's clock, not a read of ours. */
        json_t *c0 = json_array_get(json_object_get(d.status, "conditions"), 0);
        check_str_eq(json_string_value(json_object_get(c0, "lastTransitionTime")), "2026-01-01T00:00:00Z");
        state_decision_done(&d);
        state_observed_done(&o);
        agent_config_free(cfg);
}

static json_t *condition_of(json_t *status, const char *type) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(status, "conditions"), i, c) {
                if (strcmp(json_string_value(json_object_get(c, "type")) ?: "", type) == 0)
                        return c;
        }
        return NULL;
}

/* The node's verdict as the condition TPMRunning (and the printer column
 * TPM): from the nodeState the node agent wrote for the current launcher
 * only, so Ready (the volume) never stands alone for a TPM that refuses. */
static void test_tpm_running(void) {
        static const struct {
                const char *name, *status, *launcher, *want_status, *want_reason, *want_message;
        } cases[] = {
                {"no launcher: the VM is not running", "{}", NULL, "False", "VMNotRunning", NULL},
                {"a launcher no node has reported on", "{}", "pod-1", "False", "NotReported",
                 "no node agent has reported on launcher pod ns1/virt-launcher-vm1-x yet"},
                {"a report on an earlier launcher says nothing of this one",
                 "{\"nodeState\":{\"node\":\"node-2\",\"launcher\":\"ns1/virt-launcher-vm1-old\",\"phase\":\"Running\","
                 "\"reason\":\"VTPMStarted\",\"message\":\"vTPM started\"}}",
                 "pod-1", "False", "NotReported", NULL},
                {"refused on the node: its reason and message",
                 "{\"nodeState\":{\"node\":\"node-1\",\"launcher\":\"ns1/virt-launcher-vm1-x\",\"phase\":\"Refused\","
                 "\"reason\":\"KeyUnwrapFailed\",\"message\":\"the state key does not unwrap\"}}",
                 "pod-1", "False", "KeyUnwrapFailed", "the state key does not unwrap"},
                {"waiting on the node", "{\"nodeState\":{\"node\":\"node-1\",\"launcher\":\"ns1/virt-launcher-vm1-x\","
                 "\"phase\":\"Waiting\",\"reason\":\"KeyProviderUnavailable\",\"message\":\"m\"}}",
                 "pod-1", "False", "KeyProviderUnavailable", "m"},
                {"running", "{\"nodeState\":{\"node\":\"node-1\",\"launcher\":\"ns1/virt-launcher-vm1-x\","
                 "\"phase\":\"Running\",\"reason\":\"VTPMStarted\",\"message\":\"vTPM 2.0 started\"}}",
                 "pod-1", "True", "VTPMStarted", "vTPM 2.0 started"},
        };
        agent_config *cfg = config_with(NULL);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                row r = {.tpm = "{\"persistent\":true}", .pvc = PVC_BOUND, .status = cases[i].status,
                         .launcher = cases[i].launcher};
                state_observed o;
                observe_row(&r, cfg, "vm1", &o);
                state_decision d;
                state_decide(&o, &d);
                json_t *c = condition_of(d.status, "TPMRunning");
                fprintf(stderr, "# %s\n", cases[i].name);
                check(c != NULL);
                check_str_eq(json_string_value(json_object_get(c, "status")), cases[i].want_status);
                check_str_eq(json_string_value(json_object_get(c, "reason")), cases[i].want_reason);
                if (cases[i].want_message)
                        check_str_eq(json_string_value(json_object_get(c, "message")), cases[i].want_message);
                check_str_eq(condition_status(d.status, "Ready"), "True"); /* the volume's verdict stands apart */
                state_decision_done(&d);
                state_observed_done(&o);
        }
        agent_config_free(cfg);
}

/* Gone from the cache: nothing (the garbage collector removes PVC and TPMState). */
static void test_vm_gone(void) {
        agent_config *cfg = config_with(NULL);
        state_observed o = {.cfg = cfg, .now = NOW};
        state_decision d;
        state_decide(&o, &d);
        check(!d.report && d.n_events == 0 && !d.pvc && !d.status);
        state_decision_done(&d);
        agent_config_free(cfg);
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_rows), TAP_CASE(test_pvc_shape), TAP_CASE(test_steady_state),
                                    TAP_CASE(test_launcher_record), TAP_CASE(test_tpm_running),
                                    TAP_CASE(test_vm_gone), {0}});
}
