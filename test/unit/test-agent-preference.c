/* SPDX-License-Identifier: Apache-2.0 */
/* The effective TPM of a VM: own devices.tpm, frozen revision, live preference. */
#include <string.h>

#include "base/alloc.h"
#include "preference.h"
#include "tap.h"

static json_t *live_cluster, *live_ns, *revision;

static json_t *lookup_pref(const char *kind, const char *ns, const char *name, void *ud) {
        if (strcmp(name, "windows.11") != 0)
                return NULL;
        if (strcmp(kind, "VirtualMachinePreference") == 0)
                return ns && strcmp(ns, "vms") == 0 ? json_incref(live_ns) : NULL;
        return json_incref(live_cluster);
}

static json_t *lookup_rev(const char *ns, const char *name, void *ud) {
        if (strcmp(name, "no-tpm-rev") == 0)
                return json_loads("{\"data\":{\"spec\":{\"devices\":{}}}}", 0, NULL);
        return strcmp(name, "win11-pref-rev-1") == 0 ? json_incref(revision) : NULL;
}

static const preference_lookup lookup = {lookup_pref, lookup_rev, NULL};

static json_t *vm(const char *json) {
        json_t *v = json_loads(json, 0, NULL);
        if (!v)
                printf("# bad fixture: %s\n", json);
        return v;
}

static void check_vm(const char *json, bool has, bool persistent, tpm_source src, bool missing, const char *what) {
        json_t *v = vm(json);
        effective_tpm t;
        vm_effective_tpm(v, &lookup, &t);
        if (t.intent.has_tpm != has || t.intent.persistent != persistent || t.intent.source != src ||
            (t.missing != NULL) != missing)
                printf("# %s: has=%d persistent=%d source=%d missing=%s\n", what, t.intent.has_tpm, t.intent.persistent,
                       t.intent.source, t.missing ? t.missing : "-");
        check(t.intent.has_tpm == has);
        check(t.intent.persistent == persistent);
        check(t.intent.source == src);
        check((t.missing != NULL) == missing);
        effective_tpm_done(&t);
        json_decref(v);
}

#define MD "\"metadata\":{\"name\":\"w\",\"namespace\":\"vms\"}"

static void test_preference_gives_persistent_tpm(void) {
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\"}}}", true, true, TPM_SOURCE_PREFERENCE,
                 false, "cluster preference");
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\",\"kind\":\"VirtualMachinePreference\"}}}",
                 true, true, TPM_SOURCE_PREFERENCE, false, "namespaced preference");
}

static void test_vm_own_tpm_wins(void) {
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\"},\"template\":{\"spec\":{\"domain\":"
                 "{\"devices\":{\"tpm\":{\"persistent\":false}}}}}}}",
                 true, false, TPM_SOURCE_VM, false, "persistent false wins");
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\"},\"template\":{\"spec\":{\"domain\":"
                 "{\"devices\":{\"tpm\":{\"enabled\":false}}}}}}}",
                 false, false, TPM_SOURCE_VM, false, "enabled false wins");
}

static void test_frozen_revision_wins_over_live_edit(void) {
        /* The live preference dropped persistent; the revision still has it. */
        json_object_set_new(json_object_get(json_object_get(live_cluster, "spec"), "devices"), "preferredTPM",
                            json_object());
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\"}},\"status\":{\"preferenceRef\":"
                 "{\"controllerRevisionRef\":{\"name\":\"win11-pref-rev-1\"}}}}",
                 true, true, TPM_SOURCE_PREFERENCE, false, "frozen (status)");
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\",\"revisionName\":\"win11-pref-rev-1\"}}}",
                 true, true, TPM_SOURCE_PREFERENCE, false, "frozen (older spec.preference.revisionName)");
        /* virt-controller named a revision in the status that it failed to
         * store: the spec's revision still froze the VM. */
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\",\"revisionName\":\"win11-pref-rev-1\"}},"
                 "\"status\":{\"preferenceRef\":{\"controllerRevisionRef\":{\"name\":\"w-windows.11-v1beta1--0\"}}}}",
                 true, true, TPM_SOURCE_PREFERENCE, false, "frozen (spec's revision; the status's never stored)");
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\"}}}", true, false, TPM_SOURCE_PREFERENCE,
                 false, "unbound VM follows the edit");
        json_t *v = vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\"}}}");
        _cleanup_free_ char *k = vm_live_preference_key(v);
        check_str_eq(k, "VirtualMachineClusterPreference//windows.11");
        json_decref(v);
        v = vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\",\"revisionName\":\"r\"}}}");
        check(vm_live_preference_key(v) == NULL);
        json_decref(v);
        json_object_set_new(json_object_get(json_object_get(live_cluster, "spec"), "devices"), "preferredTPM",
                            json_pack("{s:b}", "persistent", 1));
}

static void test_frozen_revision_without_tpm_is_final(void) {
        /* The live preference asks for a persistent TPM; the frozen one asked for none. */
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.11\",\"revisionName\":\"no-tpm-rev\"}}}", false,
                 false, TPM_SOURCE_NONE, false, "frozen without preferredTPM");
}

static void test_missing_preference(void) {
        check_vm("{" MD ",\"spec\":{\"preference\":{\"name\":\"windows.12\"}}}", false, false, TPM_SOURCE_NONE, true,
                 "missing");
        check_vm("{" MD ",\"spec\":{}}", false, false, TPM_SOURCE_NONE, false, "no preference, no tpm");
}

int main(void) {
        live_cluster = json_loads("{\"spec\":{\"devices\":{\"preferredTPM\":{\"persistent\":true},"
                                  "\"preferredUseEfi\":true,\"preferredUseSecureBoot\":true},"
                                  "\"features\":{\"preferredSmm\":{}}}}",
                                  0, NULL);
        live_ns = json_loads("{\"spec\":{\"devices\":{\"preferredTPM\":{\"persistent\":true}}}}", 0, NULL);
        revision = json_loads("{\"data\":{\"apiVersion\":\"instancetype.kubevirt.io/v1beta1\",\"kind\":"
                              "\"VirtualMachineClusterPreference\",\"spec\":{\"devices\":{\"preferredTPM\":"
                              "{\"persistent\":true}}}}}",
                              0, NULL);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_preference_gives_persistent_tpm),
                TAP_CASE(test_vm_own_tpm_wins),
                TAP_CASE(test_frozen_revision_wins_over_live_edit),
                TAP_CASE(test_frozen_revision_without_tpm_is_final),
                TAP_CASE(test_missing_preference),
                {0},
        });
        json_decref(live_cluster);
        json_decref(live_ns);
        json_decref(revision);
        return r;
}
