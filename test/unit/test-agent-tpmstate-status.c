/* SPDX-License-Identifier: Apache-2.0 */
/* tpmstate_status.c, the parts without a request: who owns which status
 * field (and that the CRD agrees: every field has an owner, each node's
 * report is an atomic map), the node writers' field manager names, the
 * refusals that come before any request, when the state controller needs to
 * write at all, and how each writer takes its fields over from the release
 * that wrote merge patches. The writes themselves run against the real API
 * server in test/e2e/66-status-ownership.t (build/tools/tpmstate-race). */
#include <errno.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/yamljson.h"
#include "tap.h"
#include "tpmstate_status.h"

#define CRD "manifests/crds/vtpm-agent.io_tpmstates.yaml"

/* A fixture (a typo in one makes its checks fail: NULL is no status). */
static json_t *parse(const char *s) {
        return json_loads(s, JSON_DECODE_ANY, NULL);
}

static const char *const state_fields[] = {"phase",    "message",      "observedGeneration", "persistent",
                                           "pvcName",  "storageClass", "storageClassSource", "node",
                                           "launcher", "warnedGeneration", "conditions"};

static void test_owner_table(void) {
        for (size_t i = 0; i < ELEMENTSOF(state_fields); i++)
                check_int_eq(tpmstate_field_owner(state_fields[i]), TPMSTATE_OWNER_STATE);
        check_int_eq(tpmstate_field_owner("nodeState"), TPMSTATE_OWNER_NODE);
        check_int_eq(tpmstate_field_owner("keys"), TPMSTATE_OWNER_NODE);
        check_int_eq(tpmstate_field_owner("encrypted"), TPMSTATE_OWNER_NODE);
        /* Exact names only: no case folding, no prefixes, nothing outside status. */
        static const char *const nobody[] = {"", "spec", "status", "Phase", "nodestate", "node.", "keys.kekId",
                                             "nodeStateX"};
        for (size_t i = 0; i < ELEMENTSOF(nobody); i++)
                check_int_eq(tpmstate_field_owner(nobody[i]), TPMSTATE_OWNER_NONE);
        check_int_eq(tpmstate_field_owner(NULL), TPMSTATE_OWNER_NONE);
}

static json_t *crd_status_schema(void) {
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        _cleanup_error_ vt_error *err = NULL;
        json_t *crd = NULL;
        if (!check(read_full_file(CRD, 1 << 20, &data, &len, &err) >= 0) ||
            !check(yaml_to_json(data, len, CRD, &crd, &err) >= 0)) {
                printf("# %s\n", err ? err->msg : "?");
                return NULL;
        }
        json_t *v = json_array_get(json_object_get(json_object_get(crd, "spec"), "versions"), 0);
        json_t *status = json_object_get(
                json_object_get(json_object_get(json_object_get(v, "schema"), "openAPIV3Schema"), "properties"),
                "status");
        json_incref(status);
        json_decref(crd);
        return status;
}

/* A field the CRD names but nobody owns would be written by nobody or, worse,
 * by both writers; the node's report must be one atomic map per field. */
static void test_crd_agrees(void) {
        json_t *status = crd_status_schema();
        if (!check(status))
                return;
        json_t *props = json_object_get(status, "properties");
        check(json_object_size(props) >= 10);
        const char *k;
        json_t *v;
        json_object_foreach(props, k, v) {
                if (!check(tpmstate_field_owner(k) != TPMSTATE_OWNER_NONE))
                        printf("# status.%s in the CRD has no owner\n", k);
        }
        check_str_eq(json_string_value(json_object_get(json_object_get(props, "nodeState"), "x-kubernetes-map-type")),
                     "atomic");
        check_str_eq(json_string_value(json_object_get(json_object_get(props, "keys"), "x-kubernetes-map-type")),
                     "atomic");
        /* conditions: a list-map keyed by type, so the state controller's
         * apply owns each condition it sets and drops the ones it leaves out. */
        json_t *conds = json_object_get(props, "conditions");
        check_str_eq(json_string_value(json_object_get(conds, "x-kubernetes-list-type")), "map");
        json_t *keys = json_object_get(conds, "x-kubernetes-list-map-keys");
        check(json_array_size(keys) == 1);
        check_str_eq(json_string_value(json_array_get(keys, 0)), "type");
        json_decref(status);
}

static void test_node_manager(void) {
        _cleanup_free_ char *m = tpmstate_node_manager("node-1");
        check_str_eq(m, "vtpm-node-node-1");
        check(tpmstate_node_manager(NULL) == NULL);
        check(tpmstate_node_manager("") == NULL);

        /* 118 characters fit exactly (128 with the prefix). */
        char name[254];
        memset(name, 'a', 118);
        name[118] = '\0';
        _cleanup_free_ char *fits = tpmstate_node_manager(name);
        check_int_eq(strlen(fits ? fits : ""), 128);
        check(fits && strncmp(fits, "vtpm-node-aaa", 13) == 0 && strspn(fits + 10, "a") == 118);

        /* A node name may be 253 characters: still a manager (128), one per
         * node, the same one every time. */
        memset(name, 'a', 253);
        name[253] = '\0';
        _cleanup_free_ char *a1 = tpmstate_node_manager(name), *a2 = tpmstate_node_manager(name);
        name[252] = 'b';
        _cleanup_free_ char *b = tpmstate_node_manager(name);
        check_int_eq(strlen(a1 ? a1 : ""), 128);
        check_int_eq(strlen(b ? b : ""), 128);
        check_str_eq(a1, a2);
        check(a1 && b && strcmp(a1, b) != 0);
        check(a1 && strncmp(a1, TPMSTATE_MANAGER_NODE_PREFIX, strlen(TPMSTATE_MANAGER_NODE_PREFIX)) == 0);
        memset(name, 'a', 119);
        name[119] = '\0';
        _cleanup_free_ char *over = tpmstate_node_manager(name);
        check_int_eq(strlen(over ? over : ""), 128);
}

/* The state controller writes only its own fields: anything else is refused
 * before a request is made (the client is NULL: a request would crash). */
static void test_state_refuses_foreign_fields(void) {
        static const char *const foreign[] = {
                "{\"phase\":\"Ready\",\"nodeState\":{\"node\":\"node-1\"}}",
                "{\"keys\":{\"kekId\":\"k\"}}",
                "{\"phase\":\"Ready\",\"encrypted\":false}",
                "{\"spec\":{}}",
                "{\"Phase\":\"Ready\"}",
        };
        for (size_t i = 0; i < ELEMENTSOF(foreign); i++) {
                json_t *f = parse(foreign[i]);
                _cleanup_error_ vt_error *err = NULL;
                check_int_eq(tpmstate_apply_state(NULL, "ns", "vm", f, NULL, &err), -EINVAL);
                check_contains(err ? err->msg : NULL, "is not the state controller's to write");
                json_decref(f);
        }
        _cleanup_error_ vt_error *err = NULL;
        json_t *arr = parse("[{\"phase\":\"Ready\"}]");
        check_int_eq(tpmstate_apply_state(NULL, "ns", "vm", arr, NULL, &err), -EINVAL);
        check_contains(err ? err->msg : NULL, "is not an object");
        json_decref(arr);
        vt_error_free(err);
        err = NULL;
        check_int_eq(tpmstate_apply_state(NULL, "ns", "vm", NULL, NULL, &err), -EINVAL);
}

/* A node agent reports nodeState naming its own node, and nothing else. */
static void test_node_refusals(void) {
        static const struct {
                const char *node, *node_state, *keys, *msg;
        } rows[] = {
                {"node-1", "{\"node\":\"node-2\",\"phase\":\"Running\"}", NULL, "naming its own node only"},
                {"node-1", "{\"phase\":\"Running\"}", NULL, "naming its own node only"},
                {"node-1", "{\"node\":1}", NULL, "naming its own node only"},
                {"node-1", "{\"node\":\"node-1x\"}", NULL, "naming its own node only"},
                {"node-1", "[\"node-1\"]", NULL, "naming its own node only"},
                {"node-1", "{\"node\":\"node-1\"}", "[1]", "status.keys must be an object"},
                {"node-1", "{\"node\":\"node-1\"}", "\"k\"", "status.keys must be an object"},
                {"", "{\"node\":\"\"}", NULL, "cannot name a field manager"},
                {NULL, "{\"node\":\"node-1\"}", NULL, "cannot name a field manager"},
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                json_t *ns = parse(rows[i].node_state), *keys = rows[i].keys ? parse(rows[i].keys) : NULL;
                _cleanup_error_ vt_error *err = NULL;
                int r = tpmstate_apply_node(NULL, rows[i].node, "ns", "vm", ns, keys, NULL, &err);
                if (!check(r == -EINVAL))
                        printf("# row %zu: %d\n", i, r);
                check_contains(err ? err->msg : NULL, rows[i].msg);
                json_decref(ns);
                json_decref(keys);
        }
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(tpmstate_apply_node(NULL, "node-1", "ns", "vm", NULL, NULL, NULL, &err), -EINVAL);
}

static void test_state_fields(void) {
        json_t *st = parse("{\"phase\":\"Ready\",\"conditions\":[{\"type\":\"Ready\"}],\"nodeState\":{\"node\":\"n\"},"
                           "\"keys\":{},\"encrypted\":true,\"other\":1}");
        json_t *f = tpmstate_state_fields(st);
        check_int_eq(json_object_size(f), 2);
        check_str_eq(json_string_value(json_object_get(f, "phase")), "Ready");
        check(json_equal(json_object_get(f, "conditions"), json_object_get(st, "conditions")));
        json_decref(f);
        f = tpmstate_state_fields(NULL);
        check(json_is_object(f) && json_object_size(f) == 0);
        json_decref(f);
        json_decref(st);
}

/* Only a change of the state controller's own fields needs its write: the
 * node's report changing under it does not. */
static void test_state_fields_differ(void) {
        static const struct {
                const char *a, *b;
                bool differ;
        } rows[] = {
                {NULL, NULL, false},
                {NULL, "{}", false},
                {"{}", "{\"nodeState\":{\"node\":\"n\"},\"keys\":{\"kekId\":\"k\"},\"encrypted\":true}", false},
                {"{\"phase\":\"Ready\",\"nodeState\":{\"phase\":\"Running\"}}",
                 "{\"phase\":\"Ready\",\"nodeState\":{\"phase\":\"Stopped\"}}", false},
                {"{\"phase\":\"Ready\",\"unknown\":1}", "{\"phase\":\"Ready\",\"unknown\":2}", false},
                {"{\"phase\":\"Ready\"}", "{\"phase\":\"Pending\"}", true},
                {"{\"phase\":\"Ready\",\"message\":\"\"}", "{\"phase\":\"Ready\"}", true},
                {NULL, "{\"phase\":\"Ready\"}", true},
                {"{\"observedGeneration\":3}", "{\"observedGeneration\":4}", true},
                {"{\"launcher\":{\"uid\":\"u\",\"persistent\":true}}", "{\"launcher\":{\"uid\":\"u\",\"persistent\":false}}",
                 true},
                {"{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}",
                 "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\"}]}", true},
                {"{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}",
                 "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}", false},
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                json_t *a = rows[i].a ? parse(rows[i].a) : NULL, *b = rows[i].b ? parse(rows[i].b) : NULL;
                if (!check(tpmstate_state_fields_differ(a, b) == rows[i].differ) ||
                    !check(tpmstate_state_fields_differ(b, a) == rows[i].differ))
                        printf("# row %zu\n", i);
                json_decref(a);
                json_decref(b);
        }
}

/* managedFields entries as the API server writes them. */
#define ENTRY(manager, operation, sub, set)                                                                    \
        "{\"manager\":\"" manager "\",\"operation\":\"" operation "\",\"apiVersion\":\"vtpm-agent.io/v1alpha1\"," \
        "\"fieldsType\":\"FieldsV1\"" sub ",\"fieldsV1\":" set "}"
#define STATUS ",\"subresource\":\"status\""
#define LEGACY_SET                                                                                                 \
        "{\"f:status\":{\".\":{},\"f:node\":{},\"f:launcher\":{\".\":{},\"f:uid\":{}},\"f:conditions\":{\".\":{}," \
        "\"k:{\\\"type\\\":\\\"RestartRequired\\\"}\":{\".\":{},\"f:type\":{}}},\"f:nodeState\":{\".\":{},"        \
        "\"f:swtpmPid\":{}},\"f:encrypted\":{}}}"

static json_t *entry_of(json_t *mf, const char *manager, const char *sub) {
        size_t i;
        json_t *e;
        json_array_foreach(mf, i, e) {
                const char *es = json_string_value(json_object_get(e, "subresource"));
                if (strcmp(json_string_value(json_object_get(e, "manager")), manager) == 0 &&
                    (sub ? es && strcmp(es, sub) == 0 : !es))
                        return e;
        }
        return NULL;
}

static json_t *status_set_of(json_t *mf, const char *manager) {
        return json_object_get(json_object_get(entry_of(mf, manager, "status"), "fieldsV1"), "f:status");
}

/* An upgrade from the release that wrote merge patches: each writer takes its
 * own fields out of the old "vtpm-agent" Update entry, nothing else. */
static void test_adopt_legacy(void) {
        json_t *mf = parse("[" ENTRY("vtpm-state-controller", "Apply", STATUS, "{\"f:status\":{\"f:phase\":{}}}") ","
                           ENTRY("vtpm-agent", "Update", "", "{\"f:spec\":{\"f:vmName\":{}}}") ","
                           ENTRY("vtpm-agent", "Update", STATUS, LEGACY_SET) ","
                           ENTRY("vtpm-node-node-1", "Apply", STATUS, "{\"f:status\":{\"f:keys\":{}}}") "]");
        if (!check(json_array_size(mf) == 4))
                return;
        _cleanup_free_ char *before = json_dumps(mf, JSON_SORT_KEYS);
        json_t *a = tpmstate_adopt_legacy(mf, TPMSTATE_MANAGER_STATE, TPMSTATE_OWNER_STATE);
        _cleanup_free_ char *after_input = json_dumps(mf, JSON_SORT_KEYS);
        check_str_eq(after_input, before); /* a copy: the cached object is not touched */
        json_t *mine = status_set_of(a, TPMSTATE_MANAGER_STATE);
        check(json_object_get(mine, "f:phase") && json_object_get(mine, "f:node"));
        check(json_object_get(json_object_get(mine, "f:launcher"), "f:uid"));
        check(json_object_get(json_object_get(mine, "f:conditions"), "k:{\"type\":\"RestartRequired\"}"));
        json_t *left = status_set_of(a, TPMSTATE_LEGACY_MANAGER);
        check(json_object_get(left, "f:nodeState") && json_object_get(left, "f:encrypted"));
        check(!json_object_get(left, "f:node") && !json_object_get(left, "f:conditions"));
        check(json_equal(entry_of(a, "vtpm-agent", NULL), entry_of(mf, "vtpm-agent", NULL)));
        check(json_equal(entry_of(a, "vtpm-node-node-1", "status"), entry_of(mf, "vtpm-node-node-1", "status")));
        /* Done: nothing more to move for the state controller. */
        check(tpmstate_adopt_legacy(a, TPMSTATE_MANAGER_STATE, TPMSTATE_OWNER_STATE) == NULL);

        /* The node agent takes the rest; the old entry is left with nothing and goes. */
        json_t *b = tpmstate_adopt_legacy(a, "vtpm-node-node-1", TPMSTATE_OWNER_NODE);
        check_int_eq(json_array_size(b), 3);
        check(entry_of(b, "vtpm-agent", "status") == NULL);
        check(entry_of(b, "vtpm-agent", NULL) != NULL);
        json_t *node = status_set_of(b, "vtpm-node-node-1");
        check(json_object_get(node, "f:keys") && json_object_get(node, "f:encrypted"));
        check(json_object_get(json_object_get(node, "f:nodeState"), "f:swtpmPid"));
        check(json_equal(status_set_of(b, TPMSTATE_MANAGER_STATE), mine));
        json_decref(a);
        json_decref(b);
        json_decref(mf);
}

/* Nothing is moved but the old release's Update entry of status, and only
 * to a writer that has applied already. */
static void test_adopt_legacy_nothing(void) {
        static const char *const rows[] = {
                /* no Apply entry of the writer yet */
                "[" ENTRY("vtpm-agent", "Update", STATUS, LEGACY_SET) "]",
                /* the old entry holds only the other writer's fields */
                "[" ENTRY("vtpm-state-controller", "Apply", STATUS, "{\"f:status\":{}}") ","
                ENTRY("vtpm-agent", "Update", STATUS, "{\"f:status\":{\"f:keys\":{}}}") "]",
                /* another manager's Update (an admin's kubectl patch) */
                "[" ENTRY("vtpm-state-controller", "Apply", STATUS, "{\"f:status\":{}}") ","
                ENTRY("kubectl-patch", "Update", STATUS, LEGACY_SET) "]",
                /* the old release's Apply (not a merge patch), or its writes of the object itself */
                "[" ENTRY("vtpm-state-controller", "Apply", STATUS, "{\"f:status\":{}}") ","
                ENTRY("vtpm-agent", "Apply", STATUS, LEGACY_SET) "," ENTRY("vtpm-agent", "Update", "", LEGACY_SET) "]",
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                json_t *mf = parse(rows[i]);
                check(json_is_array(mf));
                json_t *a = tpmstate_adopt_legacy(mf, TPMSTATE_MANAGER_STATE, TPMSTATE_OWNER_STATE);
                if (!check(a == NULL))
                        printf("# row %zu\n", i);
                json_decref(a);
                json_decref(mf);
        }
        json_t *obj = parse("{}");
        check(tpmstate_adopt_legacy(NULL, TPMSTATE_MANAGER_STATE, TPMSTATE_OWNER_STATE) == NULL);
        check(tpmstate_adopt_legacy(obj, TPMSTATE_MANAGER_STATE, TPMSTATE_OWNER_STATE) == NULL);
        json_decref(obj);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_owner_table),
                TAP_CASE(test_crd_agrees),
                TAP_CASE(test_node_manager),
                TAP_CASE(test_state_refuses_foreign_fields),
                TAP_CASE(test_node_refusals),
                TAP_CASE(test_state_fields),
                TAP_CASE(test_state_fields_differ),
                TAP_CASE(test_adopt_legacy),
                TAP_CASE(test_adopt_legacy_nothing),
                {0},
        });
}
