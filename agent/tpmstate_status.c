/* SPDX-License-Identifier: Apache-2.0 */
#include "tpmstate_status.h"

#include <errno.h>
#include <string.h>

#include "base/alloc.h"
#include "resources.h"
#include "vmspec.h"

/* apimachinery's limit on a field manager's name. */
#define FIELD_MANAGER_MAX 128

static const char *const state_fields[] = {
        "phase",      "message",      "observedGeneration", "persistent",       "pvcName",    "storageClass",
        "storageClassSource", "node", "launcher",           "warnedGeneration", "conditions",
};
static const char *const node_fields[] = {"nodeState", "keys", "encrypted"};

static bool in(const char *const *set, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(set[i], s) == 0)
                        return true;
        return false;
}

tpmstate_owner tpmstate_field_owner(const char *field) {
        if (!field)
                return TPMSTATE_OWNER_NONE;
        if (in(state_fields, ELEMENTSOF(state_fields), field))
                return TPMSTATE_OWNER_STATE;
        if (in(node_fields, ELEMENTSOF(node_fields), field))
                return TPMSTATE_OWNER_NODE;
        return TPMSTATE_OWNER_NONE;
}

/* A node name may be 253 characters, a field manager's only 128: a longer
 * one is cut with a hash suffix, still one manager per node. */
char *tpmstate_node_manager(const char *node) {
        if (!node || !*node)
                return NULL;
        return name_bounded(TPMSTATE_MANAGER_NODE_PREFIX, node, FIELD_MANAGER_MAX);
}

json_t *tpmstate_state_fields(json_t *status) {
        json_t *out = json_object();
        for (size_t i = 0; i < ELEMENTSOF(state_fields); i++) {
                json_t *v = json_object_get(status, state_fields[i]);
                if (v)
                        json_object_set(out, state_fields[i], v);
        }
        return out;
}

bool tpmstate_state_fields_differ(json_t *a, json_t *b) {
        json_t *fa = tpmstate_state_fields(a), *fb = tpmstate_state_fields(b);
        bool differ = !json_equal(fa, fb);
        json_decref(fa);
        json_decref(fb);
        return differ;
}

static int apply(kube_client *c, const char *manager, const char *ns, const char *name, json_t *status,
                 json_t **ret_updated, vt_error **err) {
        _cleanup_free_ char *api_version = xasprintf("%s/%s", res_tpmstate.group, res_tpmstate.version);
        json_t *body = json_pack("{s:s, s:s, s:{s:s, s:s}, s:O}", "apiVersion", api_version, "kind", "TPMState",
                                 "metadata", "name", name, "namespace", ns, "status", status);
        if (!body)
                return vt_error_set(err, EINVAL, "cannot build the status of TPMState %s/%s", ns, name);
        _cleanup_free_ char *path = kube_path(&res_tpmstate, ns, name, "status");
        int r = kube_patch(c, path, KUBE_PATCH_APPLY, body, manager, true, ret_updated, err);
        json_decref(body);
        return r;
}

int tpmstate_apply_state(kube_client *c, const char *ns, const char *name, json_t *fields, json_t **ret_updated,
                         vt_error **err) {
        if (!json_is_object(fields))
                return vt_error_set(err, EINVAL, "the state controller's status of TPMState %s/%s is not an object",
                                    ns, name);
        const char *k;
        json_t *v;
        json_object_foreach(fields, k, v) {
                if (tpmstate_field_owner(k) != TPMSTATE_OWNER_STATE)
                        return vt_error_set(err, EINVAL, "status.%s is not the state controller's to write", k);
        }
        return apply(c, TPMSTATE_MANAGER_STATE, ns, name, fields, ret_updated, err);
}

int tpmstate_apply_node(kube_client *c, const char *node, const char *ns, const char *name, json_t *node_state,
                        json_t *keys, json_t **ret_updated, vt_error **err) {
        _cleanup_free_ char *manager = tpmstate_node_manager(node);
        if (!manager)
                return vt_error_set(err, EINVAL, "node name \"%s\" cannot name a field manager", node ? node : "");
        const char *named = json_string_value(json_object_get(node_state, "node"));
        if (!json_is_object(node_state) || !named || strcmp(named, node) != 0)
                return vt_error_set(err, EINVAL, "a node agent reports status.nodeState naming its own node only");
        if (keys && !json_is_object(keys))
                return vt_error_set(err, EINVAL, "status.keys must be an object");
        json_t *status = json_pack("{s:O}", "nodeState", node_state);
        if (keys)
                json_object_set(status, "keys", keys);
        json_t *enc = json_object_get(node_state, "encrypted");
        if (json_is_boolean(enc))
                json_object_set(status, "encrypted", enc);
        int r = apply(c, manager, ns, name, status, ret_updated, err);
        json_decref(status);
        return r;
}
