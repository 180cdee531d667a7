/* SPDX-License-Identifier: Apache-2.0 */
#include "tpmstate_status.h"

#include <errno.h>
#include <string.h>

#include "base/alloc.h"
#include "resources.h"
#include "vmspec.h"

/* apimachinery's limit on a field manager's name. */
#define FIELD_MANAGER_MAX 128

DEFINE_JSON_CLEANUP

static const char *const state_fields[] = {
        "phase",      "message",      "observedGeneration", "persistent",       "pvcName",    "pvcCreatedBy", "storageClass",
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

static bool status_entry_of(json_t *entry, const char *manager, const char *operation) {
        const char *m = json_string_value(json_object_get(entry, "manager"));
        const char *op = json_string_value(json_object_get(entry, "operation"));
        const char *sub = json_string_value(json_object_get(entry, "subresource"));
        return m && op && sub && strcmp(m, manager) == 0 && strcmp(op, operation) == 0 && strcmp(sub, "status") == 0;
}

static json_t *status_set(json_t *entry) {
        return json_object_get(json_object_get(entry, "fieldsV1"), "f:status");
}

/* Nothing of status left in an entry but the status map itself ("."). */
static bool status_set_empty(json_t *entry) {
        const char *k;
        json_t *v;
        json_object_foreach(status_set(entry), k, v) if (strcmp(k, ".") != 0) return false;
        return json_object_size(json_object_get(entry, "fieldsV1")) <= 1;
}

/* The legacy entries' fields of `owner`, taken out of them. */
static json_t *take_legacy_fields(json_t *managed_fields, tpmstate_owner owner) {
        json_t *taken = json_object();
        size_t i;
        json_t *e;
        json_array_foreach(managed_fields, i, e) {
                if (!status_entry_of(e, TPMSTATE_LEGACY_MANAGER, "Update"))
                        continue;
                json_t *set = status_set(e);
                const char *k;
                json_t *v;
                void *tmp;
                json_object_foreach_safe(set, tmp, k, v) {
                        if (strncmp(k, "f:", 2) != 0 || tpmstate_field_owner(k + 2) != owner)
                                continue;
                        if (json_object_get(taken, k))
                                json_object_update_recursive(json_object_get(taken, k), v);
                        else
                                json_object_set(taken, k, v);
                        json_object_del(set, k);
                }
        }
        return taken;
}

json_t *tpmstate_adopt_legacy(json_t *managed_fields, const char *manager, tpmstate_owner owner) {
        if (!json_is_array(managed_fields) || !manager || owner == TPMSTATE_OWNER_NONE)
                return NULL;
        _cleanup_json_ json_t *out = json_deep_copy(managed_fields);
        json_t *mine = NULL, *e;
        size_t i;
        json_array_foreach(out, i, e) if (status_entry_of(e, manager, "Apply")) mine = e;
        if (!json_is_object(status_set(mine)))
                return NULL; /* not applied yet: nothing to hand the fields to */
        _cleanup_json_ json_t *taken = take_legacy_fields(out, owner);
        if (json_object_size(taken) == 0)
                return NULL;
        json_object_update_recursive(status_set(mine), taken);
        for (i = json_array_size(out); i-- > 0;)
                if (status_entry_of(json_array_get(out, i), TPMSTATE_LEGACY_MANAGER, "Update") &&
                    status_set_empty(json_array_get(out, i)))
                        json_array_remove(out, i);
        return TAKE_PTR(out);
}

static int apply_once(kube_client *c, const char *manager, const char *ns, const char *name, json_t *status,
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

/* Hand the old release's fields over (a merge patch of managedFields, on the
 * resourceVersion just written: -ESTALE when another write came first). */
static int write_managed_fields(kube_client *c, json_t *obj, json_t *managed_fields, vt_error **err) {
        json_t *md = json_object_get(obj, "metadata");
        const char *ns = json_string_value(json_object_get(md, "namespace")),
                   *name = json_string_value(json_object_get(md, "name")),
                   *rv = json_string_value(json_object_get(md, "resourceVersion"));
        if (!ns || !name || !rv)
                return vt_error_set(err, EPROTO, "the API server answered an apply with no object");
        json_t *patch = json_pack("{s:{s:s, s:O}}", "metadata", "resourceVersion", rv, "managedFields", managed_fields);
        _cleanup_free_ char *path = kube_path(&res_tpmstate, ns, name, NULL);
        int r = kube_patch(c, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, err);
        json_decref(patch);
        return r;
}

static int apply(kube_client *c, const char *manager, tpmstate_owner owner, const char *ns, const char *name,
                 json_t *status, json_t **ret_updated, vt_error **err) {
        _cleanup_json_ json_t *updated = NULL;
        int r = apply_once(c, manager, ns, name, status, &updated, err);
        /* The old release's fields, once: moved to us, then applied again so
         * that what we leave out is removed. The other writer may write in
         * between (-ESTALE): a few tries, else at our next write. */
        for (int tries = 0; r >= 0 && tries < 3; tries++) {
                _cleanup_json_ json_t *adopted = tpmstate_adopt_legacy(
                        json_object_get(json_object_get(updated, "metadata"), "managedFields"), manager, owner);
                if (!adopted)
                        break;
                _cleanup_error_ vt_error *merr = NULL;
                r = write_managed_fields(c, updated, adopted, &merr);
                if (r < 0 && r != -ESTALE)
                        return vt_error_set(err, -r,
                                            "TPMState %s/%s: cannot take the old release's status fields over: %s", ns,
                                            name, merr ? merr->msg : "unknown error");
                json_decref(TAKE_PTR(updated));
                r = apply_once(c, manager, ns, name, status, &updated, err);
        }
        if (r < 0)
                return r;
        if (ret_updated)
                *ret_updated = TAKE_PTR(updated);
        return 0;
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
        return apply(c, TPMSTATE_MANAGER_STATE, TPMSTATE_OWNER_STATE, ns, name, fields, ret_updated, err);
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
        int r = apply(c, manager, TPMSTATE_OWNER_NODE, ns, name, status, ret_updated, err);
        json_decref(status);
        return r;
}
