/* SPDX-License-Identifier: Apache-2.0 */
/* Keys while a VM runs: KEK rotation at once (only the key header changes;
 * swtpm has its key), DEK rotation reported as pending until the next start.
 * And what both key paths share: the rotation requests on the TPMState and
 * the key report read from the header. */
#include <string.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "keys/header.h"
#include "key_rotation.h"
#include "node/node.h"
#include "proc/rootdir.h"

DEFINE_JSON_CLEANUP

const char *ts_annotation(json_t *ts, const char *name) {
        return json_string_value(json_object_get(json_object_get(json_object_get(ts, "metadata"), "annotations"), name));
}

/* status.keys.<which>.<field> of a TPMState. */
const char *ts_keys_field(json_t *ts, const char *which, const char *field) {
        json_t *k = json_object_get(json_object_get(ts, "status"), "keys");
        return json_string_value(json_object_get(which ? json_object_get(k, which) : k, field));
}

/* Add what the header on the volume says: provider, kekId, dekGeneration
 * (parsed and validated: printable, bounded; read beneath the state
 * directory's fd without following symlinks). */
void keys_from_header(json_t *keys, int state_dfd) {
        _cleanup_(key_header_done) key_header h = {0};
        if (state_dfd < 0 || key_header_readat(state_dfd, &h, NULL) < 0 || !key_header_has_current(&h)) {
                json_object_set_new(keys, "encrypted", json_false());
                return;
        }
        json_object_set_new(keys, "encrypted", json_true());
        json_object_set_new(keys, "provider", json_string(h.provider));
        json_object_set_new(keys, "kekId", json_string(h.kek_id));
        json_object_set_new(keys, "dekGeneration", json_integer((json_int_t)h.dek_generation));
}

json_t *rotation_done(const char *request) {
        char now[40];
        format_rfc3339(now_realtime(), now);
        return json_pack("{s:s, s:s, s:s, s:b}", "requested", request, "completed", request, "completedAt", now,
                         "pending", 0);
}

/* The state directory of a running swtpm, through its mount namespace (the
 * launcher's, where the volume is bound), opened inside that root without
 * following symlinks: the launcher's filesystem is the tenant's. */
static int running_state_dir(node_controller *nc, launcher *l, vt_error **err) {
        _cleanup_free_ char *p = xasprintf("%s/%s", nc->cfg->node.swtpm_state_dir, l->vm_uid);
        return open_dir_in_root(l->swtpm_pid, p, err);
}

/* KEK rotation of a running VM into `keys`. true: done or said (a new
 * request id retries); false: the key provider is unavailable (backoff). */
static bool rotate_kek_running(node_controller *nc, launcher *l, int dfd, const vt_error *derr, const char *req,
                               json_t *keys) {
        _cleanup_free_ char *kek_id = NULL;
        _cleanup_error_ vt_error *kerr = NULL;
        int r = dfd < 0 ? vt_error_set(&kerr, -dfd, "%s", derr ? derr->msg : "cannot open the state directory")
                        : keyrot_rotate_kek_at(nc->keys, &KEY_SUBJECT(l), dfd, req, &kek_id, &kerr);
        if (r >= 0) {
                json_object_set_new(keys, "kekRotation", rotation_done(req));
                _cleanup_free_ char *m = xasprintf("KEK rotation %s: the state key is wrapped by KEK %s%s", req, kek_id,
                                                   r == 0 ? " (already)" : "");
                json_object_set_new(keys, "message", json_string(m));
                node_keys_event(nc, l, false, "KEKRotated", m);
                return true;
        }
        if (r == -ENOENT) {
                json_object_set_new(keys, "kekRotation", rotation_done(req));
                json_object_set_new(keys, "message",
                                    json_string("KEK rotation: the state is not encrypted; nothing to re-wrap"));
                return true;
        }
        _cleanup_free_ char *m = xasprintf("KEK rotation %s failed: %s", req, kerr ? kerr->msg : strerror(-r));
        json_object_set_new(keys, "kekRotation", json_pack("{s:s, s:s}", "requested", req, "error", m));
        json_object_set_new(keys, "message", json_string(m));
        node_keys_event(nc, l, true, "KEKRotationFailed", m);
        return !keymgr_unavailable(r);
}

/* Reads the TPMState from the informer cache: no request unless there is work. */
kube_outcome keys_running(node_controller *nc, launcher *l) {
        if (!l->vm_uid || !*l->vm_uid)
                return kube_done();
        _cleanup_free_ char *key = xasprintf("%s/%s", l->ns, l->vm_name);
        _cleanup_json_ json_t *ts = kube_informer_get(nc->tpmstates, key);
        if (!ts)
                return kube_done();
        const char *kek_req = ts_annotation(ts, ANN_ROTATE_KEK), *dek_req = ts_annotation(ts, ANN_ROTATE_DEK);
        bool kek_todo = kek_req && !str_eq(kek_req, ts_keys_field(ts, "kekRotation", "completed"));
        bool dek_todo = dek_req && !str_eq(dek_req, ts_keys_field(ts, "dekRotation", "completed")) &&
                        !str_eq(dek_req, ts_keys_field(ts, "dekRotation", "requested"));
        if (!kek_todo && !dek_todo)
                return kube_done();
        _cleanup_error_ vt_error *derr = NULL;
        _cleanup_close_ int dfd = running_state_dir(nc, l, &derr);
        _cleanup_json_ json_t *keys = json_object();
        bool settled = !kek_todo || rotate_kek_running(nc, l, dfd, derr, kek_req, keys);
        if (dek_todo) {
                json_object_set_new(keys, "dekRotation", json_pack("{s:s, s:b}", "requested", dek_req, "pending", 1));
                if (!kek_todo)
                        json_object_set_new(keys, "message",
                                            json_string("DEK rotation pending: the state is re-encrypted at the VM's "
                                                        "next start"));
        }
        keys_from_header(keys, dfd);
        node_keys_update(nc, l, keys);
        /* A key provider that does not answer: reported (KEKRotationFailed), retried with backoff. */
        return settled ? kube_done() : kube_backoff(KEY_RETRY_MAX_USEC);
}
