/* SPDX-License-Identifier: Apache-2.0 */
/* agent/broker/broker_authz.c: the key broker's decisions, one table row per rule.
 * Each row is a JSON merge patch (RFC 7386: null deletes) of a good
 * TokenReview status, agent pod, launcher pod or state Lease, as the API
 * server returns them (field names as in Kubernetes v1.37), and the verdict
 * that must follow. The real API server's side is the lead's e2e suite. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

#include "base/error.h"
#include "broker/broker_authz.h"
#include "tap.h"

static const char *const good_review =
        "{\"authenticated\": true, \"audiences\": [\"vtpm-controller\"],"
        " \"user\": {\"username\": \"system:serviceaccount:vtpm-system:vtpm-agent\", \"uid\": \"sa-uid\","
        "  \"groups\": [\"system:serviceaccounts\", \"system:serviceaccounts:vtpm-system\"],"
        "  \"extra\": {\"authentication.kubernetes.io/credential-id\": [\"JTI=abc\"],"
        "   \"authentication.kubernetes.io/node-name\": [\"node-1\"],"
        "   \"authentication.kubernetes.io/node-uid\": [\"node-1-uid\"],"
        "   \"authentication.kubernetes.io/pod-name\": [\"vtpm-agent-x7k2p\"],"
        "   \"authentication.kubernetes.io/pod-uid\": [\"0b6c1f9e-agent\"]}}}";

static const char *const good_agent_pod =
        "{\"metadata\": {\"name\": \"vtpm-agent-x7k2p\", \"namespace\": \"vtpm-system\", \"uid\": \"0b6c1f9e-agent\","
        "  \"ownerReferences\": [{\"apiVersion\": \"apps/v1\", \"kind\": \"DaemonSet\", \"name\": \"vtpm-agent\","
        "   \"uid\": \"ds-uid\", \"controller\": true, \"blockOwnerDeletion\": true}]},"
        " \"spec\": {\"nodeName\": \"node-1\"}, \"status\": {\"phase\": \"Running\"}}";

/* The VM's launcher on node-1, and its migration target on node-2. */
static const char *const good_launcher =
        "{\"metadata\": {\"name\": \"virt-launcher-vm1-abcde\", \"namespace\": \"tenant-a\", \"uid\": \"launcher-1\","
        "  \"labels\": {\"kubevirt.io\": \"virt-launcher\", \"vm.kubevirt.io/name\": \"vm1\","
        "   \"kubevirt.io/created-by\": \"vmi-uid\"}},"
        " \"spec\": {\"nodeName\": \"node-1\"}, \"status\": {\"phase\": \"Running\"}}";
static const char *const other_launcher =
        "{\"metadata\": {\"name\": \"virt-launcher-vm1-fghij\", \"namespace\": \"tenant-a\", \"uid\": \"launcher-2\","
        "  \"labels\": {\"kubevirt.io\": \"virt-launcher\", \"vm.kubevirt.io/name\": \"vm1\"}},"
        " \"spec\": {\"nodeName\": \"node-2\"}, \"status\": {\"phase\": \"Running\"}}";
static const char *const good_lease =
        "{\"metadata\": {\"name\": \"vtpm-state-vm-uid\", \"namespace\": \"vtpm-system\"},"
        " \"spec\": {\"holderIdentity\": \"node-1/tenant-a/virt-launcher-vm1-abcde/launcher-1\","
        "  \"leaseDurationSeconds\": 40}}";

static json_t *load(const char *text) {
        json_error_t je;
        json_t *j = json_loads(text, 0, &je);
        if (!j) {
                fprintf(stderr, "# bad fixture: %s\n", je.text);
                abort();
        }
        return j;
}

static void merge_patch(json_t *target, json_t *patch) {
        const char *k;
        json_t *v;
        json_object_foreach(patch, k, v) {
                json_t *t = json_object_get(target, k);
                if (json_is_null(v))
                        json_object_del(target, k);
                else if (json_is_object(v) && json_is_object(t))
                        merge_patch(t, v);
                else
                        json_object_set(target, k, v);
        }
}

static json_t *patched(const char *base, const char *patch) {
        json_t *j = load(base);
        if (patch) {
                json_t *p = load(patch);
                merge_patch(j, p);
                json_decref(p);
        }
        return j;
}

/* ---- who asks ---- */

typedef struct authn_row {
        const char *name;
        const char *review_patch, *pod_patch;
        bool no_pod;
        const char *why; /* NULL: accepted; else a part of the refusal */
} authn_row;

static const authn_row authn_rows[] = {
        {"good token of an agent pod", NULL, NULL, false, NULL},
        {"not authenticated", "{\"authenticated\": false}", NULL, false, "not authenticated"},
        {"no verdict at all", "{\"authenticated\": null}", NULL, false, "not authenticated"},
        {"wrong audience (the API server's)", "{\"audiences\": [\"https://kubernetes.default.svc\"]}", NULL, false,
         "audience"},
        {"no audiences", "{\"audiences\": null}", NULL, false, "audience"},
        {"wrong user (another ServiceAccount)",
         "{\"user\": {\"username\": \"system:serviceaccount:vtpm-system:vtpm-controller\"}}", NULL, false,
         "not system:serviceaccount:vtpm-system:vtpm-agent"},
        {"same ServiceAccount name in a tenant namespace",
         "{\"user\": {\"username\": \"system:serviceaccount:tenant-a:vtpm-agent\"}}", NULL, false, "not system"},
        {"a user, not a ServiceAccount", "{\"user\": {\"username\": \"system:node:node-1\"}}", NULL, false,
         "not system"},
        {"no node-name extra (token not bound to a pod)",
         "{\"user\": {\"extra\": {\"authentication.kubernetes.io/node-name\": null}}}", NULL, false,
         "not bound to one pod"},
        {"two node names", "{\"user\": {\"extra\": {\"authentication.kubernetes.io/node-name\": [\"node-1\", \"node-2\"]}}}",
         NULL, false, "not bound to one pod"},
        {"empty node name", "{\"user\": {\"extra\": {\"authentication.kubernetes.io/node-name\": [\"\"]}}}", NULL, false,
         "not bound to one pod"},
        {"node name not an array", "{\"user\": {\"extra\": {\"authentication.kubernetes.io/node-name\": \"node-1\"}}}",
         NULL, false, "not bound to one pod"},
        {"no pod-name extra", "{\"user\": {\"extra\": {\"authentication.kubernetes.io/pod-name\": null}}}", NULL, false,
         "not bound to one pod"},
        {"no pod-uid extra", "{\"user\": {\"extra\": {\"authentication.kubernetes.io/pod-uid\": null}}}", NULL, false,
         "not bound to one pod"},
        {"no extra at all", "{\"user\": {\"extra\": null}}", NULL, false, "not bound to one pod"},
        {"the pod is gone", NULL, NULL, true, "does not exist"},
        {"pod uid mismatch (a new pod of the same name)", NULL, "{\"metadata\": {\"uid\": \"another-uid\"}}", false,
         "another uid"},
        {"pod fetched is another pod", NULL, "{\"metadata\": {\"name\": \"vtpm-agent-other\"}}", false,
         "not the pod fetched"},
        {"pod in another namespace", NULL, "{\"metadata\": {\"namespace\": \"tenant-a\"}}", false,
         "not the pod fetched"},
        {"pod not owned by the DaemonSet", NULL,
         "{\"metadata\": {\"ownerReferences\": [{\"kind\": \"DaemonSet\", \"name\": \"evil\", \"controller\": true}]}}",
         false, "not controlled by the agent's DaemonSet"},
        {"DaemonSet owner but not the controller", NULL,
         "{\"metadata\": {\"ownerReferences\": [{\"kind\": \"DaemonSet\", \"name\": \"vtpm-agent\", \"controller\": false}]}}",
         false, "not controlled"},
        {"controller of another kind with the name", NULL,
         "{\"metadata\": {\"ownerReferences\": [{\"kind\": \"ReplicaSet\", \"name\": \"vtpm-agent\", \"controller\": true}]}}",
         false, "not controlled"},
        {"no owner (a bare pod)", NULL, "{\"metadata\": {\"ownerReferences\": null}}", false, "not controlled"},
        {"pod on another node than the token says", NULL, "{\"spec\": {\"nodeName\": \"node-2\"}}", false,
         "another node"},
        {"pod not scheduled", NULL, "{\"spec\": {\"nodeName\": null}}", false, "another node"},
        {"pod being deleted", NULL, "{\"metadata\": {\"deletionTimestamp\": \"2026-12-05T23:00:00Z\"}}", false,
         "being deleted"},
        {"pod finished", NULL, "{\"status\": {\"phase\": \"Failed\"}}", false, "finished"},
};

static void test_authn_table(void) {
        for (size_t i = 0; i < ELEMENTSOF(authn_rows); i++) {
                const authn_row *row = &authn_rows[i];
                json_t *review = patched(good_review, row->review_patch);
                json_t *pod = row->no_pod ? NULL : patched(good_agent_pod, row->pod_patch);
                broker_peer peer = {0};
                vt_error *err = NULL;
                int r = broker_authn_check(review, pod, "vtpm-system", "vtpm-agent", "vtpm-agent", &peer, &err);
                printf("# authn: %s -> %d %s\n", row->name, r, err ? err->msg : "");
                if (!row->why) {
                        check_int_eq(r, 0);
                        check_str_eq(peer.node, "node-1");
                        check_str_eq(peer.pod, "vtpm-agent-x7k2p");
                } else {
                        check_int_eq(r, -EACCES);
                        check(err && err->code == EACCES);
                        check_contains(err ? err->msg : NULL, row->why);
                        check(!peer.node && !peer.pod); /* set only on success */
                }
                broker_peer_done(&peer);
                vt_error_free(err);
                json_decref(review);
                json_decref(pod);
        }
}

static void test_authn_pod_name(void) {
        json_t *review = load(good_review);
        char *pod = NULL;
        check_int_eq(broker_authn_pod_name(review, &pod, NULL), 0);
        check_str_eq(pod, "vtpm-agent-x7k2p");
        free(pod);
        json_t *bad = patched(good_review, "{\"user\": {\"extra\": null}}");
        pod = NULL;
        check_int_eq(broker_authn_pod_name(bad, &pod, NULL), -EACCES);
        check(!pod);
        json_decref(review);
        json_decref(bad);
}

/* ---- where the VM runs ---- */

typedef struct placement_row {
        const char *name;
        const char *node;         /* the token's node */
        const char *launcher_uid; /* the request's */
        const char *launcher_patch;
        bool with_lease;
        const char *lease_patch;
        const char *why;
} placement_row;

static const placement_row placement_rows[] = {
        {"launcher on the asking node, no Lease (not persistent)", "node-1", "launcher-1", NULL, false, NULL, NULL},
        {"launcher on the asking node, Lease names it", "node-1", "launcher-1", NULL, true, NULL, NULL},
        {"the other launcher (node-2) asks for its own", "node-2", "launcher-2", NULL, false, NULL, NULL},
        {"launcher on another node", "node-1", "launcher-1", "{\"spec\": {\"nodeName\": \"node-2\"}}", false, NULL,
         "not on the asking node"},
        {"node-1 names the launcher on node-2", "node-1", "launcher-2", NULL, false, NULL, "not on the asking node"},
        {"launcher not scheduled yet", "node-1", "launcher-1", "{\"spec\": {\"nodeName\": null}}", false, NULL,
         "not on the asking node"},
        {"a launcher uid no pod has", "node-1", "launcher-9", NULL, false, NULL, "no virt-launcher pod"},
        {"launcher being deleted", "node-1", "launcher-1",
         "{\"metadata\": {\"deletionTimestamp\": \"2026-12-05T23:00:00Z\"}}", false, NULL, "being deleted"},
        {"launcher Succeeded", "node-1", "launcher-1", "{\"status\": {\"phase\": \"Succeeded\"}}", false, NULL,
         "finished"},
        {"launcher Failed", "node-1", "launcher-1", "{\"status\": {\"phase\": \"Failed\"}}", false, NULL, "finished"},
        {"launcher Pending on the node", "node-1", "launcher-1", "{\"status\": {\"phase\": \"Pending\"}}", false, NULL,
         NULL},
        /* The list is of the VM's namespace, so this cannot come from the
         * API server; the function checks anyway. */
        {"wrong namespace (impossible by construction)", "node-1", "launcher-1",
         "{\"metadata\": {\"namespace\": \"tenant-b\"}}", false, NULL, "another namespace"},
        {"another VM's launcher", "node-1", "launcher-1",
         "{\"metadata\": {\"labels\": {\"vm.kubevirt.io/name\": \"vm2\"}}}", false, NULL, "not this VM's"},
        {"not a virt-launcher", "node-1", "launcher-1", "{\"metadata\": {\"labels\": {\"kubevirt.io\": null}}}", false,
         NULL, "not this VM's"},
        {"Lease held for another node", "node-1", "launcher-1", NULL, true,
         "{\"spec\": {\"holderIdentity\": \"node-2/tenant-a/virt-launcher-vm1-fghij/launcher-2\"}}",
         "held for another node"},
        {"Lease held for another launcher on this node", "node-1", "launcher-1", NULL, true,
         "{\"spec\": {\"holderIdentity\": \"node-1/tenant-a/virt-launcher-vm1-old/launcher-0\"}}",
         "another launcher on this node"},
        {"Lease names this uid with another pod name", "node-1", "launcher-1", NULL, true,
         "{\"spec\": {\"holderIdentity\": \"node-1/tenant-a/virt-launcher-x/launcher-1\"}}", "another launcher"},
        {"Lease of a node whose name extends ours", "node-1", "launcher-1", NULL, true,
         "{\"spec\": {\"holderIdentity\": \"node-10/tenant-a/virt-launcher-vm1-abcde/launcher-1\"}}",
         "held for another node"},
        {"Lease held by nobody (released)", "node-1", "launcher-1", NULL, true, "{\"spec\": {\"holderIdentity\": null}}",
         "held by nobody"},
        {"Lease with an empty holder", "node-1", "launcher-1", NULL, true, "{\"spec\": {\"holderIdentity\": \"\"}}",
         "held by nobody"},
};

static void test_placement_table(void) {
        for (size_t i = 0; i < ELEMENTSOF(placement_rows); i++) {
                const placement_row *row = &placement_rows[i];
                json_t *list = json_pack("{s:s, s:[o, o]}", "kind", "PodList", "items",
                                         patched(good_launcher, row->launcher_patch), load(other_launcher));
                json_t *lease = row->with_lease ? patched(good_lease, row->lease_patch) : NULL;
                key_subject s = {.ns = "tenant-a", .vm = "vm1", .launcher_uid = row->launcher_uid};
                vt_error *err = NULL;
                int r = broker_placement_check(&s, row->node, list, lease, NULL, &err);
                printf("# placement: %s -> %d %s\n", row->name, r, err ? err->msg : "");
                if (!row->why)
                        check_int_eq(r, 0);
                else {
                        check_int_eq(r, -EACCES);
                        check_contains(err ? err->msg : NULL, row->why);
                        /* The log line names who asked for what. */
                        check_contains(err ? err->msg : NULL, row->node);
                        check_contains(err ? err->msg : NULL, "tenant-a/vm1");
                        check_contains(err ? err->msg : NULL, row->launcher_uid);
                }
                vt_error_free(err);
                json_decref(list);
                json_decref(lease);
        }
}

/* A live migration's target (launcher-1 on node-1) may have the key while
 * the Lease still names its source, and only then: KubeVirt's
 * migrationState names it as the target of a migration under way from the
 * Lease's holder. */
#define MIG_LEASE "{\"spec\": {\"holderIdentity\": \"node-2/tenant-a/virt-launcher-vm1-src/src-uid\"}}"
#define MIG_VMI(name, ms) "{\"metadata\": {\"namespace\": \"tenant-a\", \"name\": \"" name "\"}, \"status\": {\"migrationState\": {" ms "}}}"
#define MS_OK                                                                                                  \
        "\"migrationUid\": \"mig-1\", \"targetPod\": \"virt-launcher-vm1-abcde\", \"targetNode\": \"node-1\", " \
        "\"sourcePod\": \"virt-launcher-vm1-src\", \"sourceNode\": \"node-2\""
static void test_placement_migration_target(void) {
        static const struct {
                const char *name, *lease, *vmi;
                bool allowed;
        } rows[] = {
                {"the target of a migration under way from the Lease's holder", MIG_LEASE, MIG_VMI("vm1", MS_OK), true},
                {"no VMI", MIG_LEASE, NULL, false},
                {"the migration completed (the target takes the Lease)", MIG_LEASE,
                 MIG_VMI("vm1", MS_OK ", \"completed\": true"), false},
                {"the migration failed", MIG_LEASE, MIG_VMI("vm1", MS_OK ", \"failed\": true"), false},
                {"another target pod", MIG_LEASE,
                 MIG_VMI("vm1", "\"targetPod\": \"virt-launcher-vm1-zzzzz\", \"targetNode\": \"node-1\", "
                                "\"sourcePod\": \"virt-launcher-vm1-src\", \"sourceNode\": \"node-2\""),
                 false},
                {"another target node", MIG_LEASE,
                 MIG_VMI("vm1", "\"targetPod\": \"virt-launcher-vm1-abcde\", \"targetNode\": \"node-3\", "
                                "\"sourcePod\": \"virt-launcher-vm1-src\", \"sourceNode\": \"node-2\""),
                 false},
                {"the Lease is held by someone else than the source",
                 "{\"spec\": {\"holderIdentity\": \"node-3/tenant-a/virt-launcher-vm1-other/o-uid\"}}",
                 MIG_VMI("vm1", MS_OK), false},
                {"the Lease is held by nobody", "{\"spec\": {\"holderIdentity\": null}}", MIG_VMI("vm1", MS_OK), false},
                {"another VM's VMI", MIG_LEASE, MIG_VMI("vm2", MS_OK), false},
                {"no migration uid (not KubeVirt's migrationState)", MIG_LEASE,
                 MIG_VMI("vm1", "\"targetPod\": \"virt-launcher-vm1-abcde\", \"targetNode\": \"node-1\", "
                                "\"sourcePod\": \"virt-launcher-vm1-src\", \"sourceNode\": \"node-2\""),
                 false},
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                json_t *list = json_pack("{s:s, s:[o]}", "kind", "PodList", "items", load(good_launcher));
                json_t *lease = load(rows[i].lease), *vmi = rows[i].vmi ? load(rows[i].vmi) : NULL;
                key_subject s = {.ns = "tenant-a", .vm = "vm1", .launcher_uid = "launcher-1"};
                vt_error *err = NULL;
                int r = broker_placement_check(&s, "node-1", list, lease, vmi, &err);
                printf("# migration: %s -> %d %s\n", rows[i].name, r, err ? err->msg : "");
                check_int_eq(r, rows[i].allowed ? 0 : -EACCES);
                vt_error_free(err);
                json_decref(list);
                json_decref(lease);
                json_decref(vmi);
        }
}

static void test_placement_empty(void) {
        key_subject s = {.ns = "tenant-a", .vm = "vm1", .launcher_uid = "launcher-1"};
        json_t *empty = load("{\"kind\": \"PodList\", \"items\": []}");
        check_int_eq(broker_placement_check(&s, "node-1", empty, NULL, NULL, NULL), -EACCES);
        check_int_eq(broker_placement_check(&s, "node-1", NULL, NULL, NULL, NULL), -EACCES);
        json_decref(empty);
}

static void test_lease_name(void) {
        char *n = broker_state_lease_name("1234-abcd");
        check_str_eq(n, "vtpm-state-1234-abcd");
        free(n);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_authn_table),
                TAP_CASE(test_authn_pod_name),
                TAP_CASE(test_placement_table),
                TAP_CASE(test_placement_migration_target), TAP_CASE(test_placement_empty),
                TAP_CASE(test_lease_name),
                {0},
        });
}
