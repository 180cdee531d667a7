/* SPDX-License-Identifier: Apache-2.0 */
/* storageclass.c: the five-step resolution order and its error messages. */
#include <string.h>

#include "storageclass.h"
#include "tap.h"

static const sc_info all[] = {
        {"zz-cluster-default", "vtpm-agent.io/testbed", true, false},
        {"cfg", "vtpm-agent.io/testbed", false, false},
        {"kv", "vtpm-agent.io/testbed", false, false},
        {"hco", "vtpm-agent.io/testbed", false, false},
        {"virt", "vtpm-agent.io/testbed", false, true},
        {"ebs", "ebs.csi.aws.com", false, false},
        {"aa-cluster-default", "vtpm-agent.io/testbed", true, false},
};
#define N (sizeof(all) / sizeof(all[0]))

static void expect(const char *cfg, const char *kv, const char *hco, const sc_info *cls, size_t n, const char *name,
                   sc_source src, const char *reason) {
        sc_choice c;
        resolve_storage_class(cfg, kv, hco, cls, n, &c);
        if (name)
                check_str_eq(c.name, name);
        else
                check(c.name == NULL);
        check_int_eq(c.source, src);
        if (reason)
                check_str_eq(c.reason, reason);
        else
                check(c.reason == NULL && c.message == NULL);
        sc_choice_done(&c);
}

static void test_order(void) {
        /* 1. the agent's config beats everything */
        expect("cfg", "kv", "hco", all, N, "cfg", SC_SOURCE_CONFIG, NULL);
        /* 2. then the KubeVirt CR */
        expect(NULL, "kv", "hco", all, N, "kv", SC_SOURCE_KUBEVIRT, NULL);
        expect("", "kv", "hco", all, N, "kv", SC_SOURCE_KUBEVIRT, NULL); /* empty = unset */
        /* 3. then the HyperConverged CR */
        expect(NULL, NULL, "hco", all, N, "hco", SC_SOURCE_HYPERCONVERGED, NULL);
        expect(NULL, "", "hco", all, N, "hco", SC_SOURCE_HYPERCONVERGED, NULL);
        /* 4. then the default virt class */
        expect(NULL, NULL, NULL, all, N, "virt", SC_SOURCE_VIRT_DEFAULT, NULL);
        /* 5. then the cluster default; of two, the alphabetically first */
        expect(NULL, NULL, NULL, all, 4, "zz-cluster-default", SC_SOURCE_CLUSTER_DEFAULT, NULL);
        expect(NULL, NULL, NULL, all, N - 3 + 2, "virt", SC_SOURCE_VIRT_DEFAULT, NULL);
        sc_info no_virt[N];
        memcpy(no_virt, all, sizeof(all));
        no_virt[4].is_virt_default = false;
        expect(NULL, NULL, NULL, no_virt, N, "aa-cluster-default", SC_SOURCE_CLUSTER_DEFAULT, NULL);
        /* A class flagged both ways counts as the virt default first. */
        sc_info both[] = {{"b", "p", true, true}, {"a", "p", true, false}};
        expect(NULL, NULL, NULL, both, 2, "b", SC_SOURCE_VIRT_DEFAULT, NULL);
}

static void test_missing(void) {
        sc_choice c;
        /* A named class that does not exist stops the search: the operator asked for it. */
        resolve_storage_class("nope", "kv", NULL, all, N, &c);
        check(c.name == NULL);
        check_str_eq(c.reason, "StorageClassNotFound");
        check_int_eq(c.source, SC_SOURCE_CONFIG);
        check_contains(c.message, "StorageClass \"nope\"");
        check_contains(c.message, "the agent's configuration (state.storageClass)");
        check_contains(c.message, "does not exist");
        sc_choice_done(&c);
        resolve_storage_class(NULL, "gone", "hco", all, N, &c);
        check_str_eq(c.reason, "StorageClassNotFound");
        check_int_eq(c.source, SC_SOURCE_KUBEVIRT);
        check_contains(c.message, "the KubeVirt CR (spec.configuration.vmStateStorageClass)");
        sc_choice_done(&c);
        resolve_storage_class(NULL, NULL, "gone", all, N, &c);
        check_str_eq(c.reason, "StorageClassNotFound");
        check_int_eq(c.source, SC_SOURCE_HYPERCONVERGED);
        check_contains(c.message, "the HyperConverged CR (spec.vmStateStorageClass)");
        sc_choice_done(&c);
        /* Nothing at all. */
        resolve_storage_class(NULL, NULL, NULL, NULL, 0, &c);
        check(c.name == NULL);
        check_str_eq(c.reason, "NoStorageClass");
        check_int_eq(c.source, SC_SOURCE_NONE);
        check_contains(c.message, "vmStateStorageClass");
        check_contains(c.message, "storageclass.kubevirt.io/is-default-virt-class=true");
        check_contains(c.message, "state.storageClass");
        sc_choice_done(&c);
        /* Classes exist but none is flagged. */
        resolve_storage_class(NULL, NULL, NULL, all + 1, 3, &c);
        check_str_eq(c.reason, "NoStorageClass");
        sc_choice_done(&c);
}

static void test_rwx(void) {
        sc_choice c;
        resolve_storage_class("ebs", NULL, NULL, all, N, &c);
        check_str_eq(c.name, "ebs");
        check(c.rwx_unlikely);
        check(c.reason == NULL);
        sc_choice_done(&c);
        resolve_storage_class("cfg", NULL, NULL, all, N, &c);
        check(!c.rwx_unlikely);
        sc_choice_done(&c);
        check(provisioner_lacks_rwx("rancher.io/local-path"));
        check(!provisioner_lacks_rwx("nfs.csi.k8s.io"));
        check(!provisioner_lacks_rwx(NULL));
}

static void test_source_names(void) {
        check_str_eq(sc_source_name(SC_SOURCE_CONFIG), "AgentConfig");
        check_str_eq(sc_source_name(SC_SOURCE_KUBEVIRT), "KubeVirt");
        check_str_eq(sc_source_name(SC_SOURCE_HYPERCONVERGED), "HyperConverged");
        check_str_eq(sc_source_name(SC_SOURCE_VIRT_DEFAULT), "DefaultVirtClass");
        check_str_eq(sc_source_name(SC_SOURCE_CLUSTER_DEFAULT), "ClusterDefault");
        check_str_eq(sc_source_name(SC_SOURCE_NONE), "None");
        check_str_eq(sc_source_name((sc_source)99), "Unknown");
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_order), TAP_CASE(test_missing), TAP_CASE(test_rwx),
                                    TAP_CASE(test_source_names), {0}});
}
