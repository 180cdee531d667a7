/* SPDX-License-Identifier: Apache-2.0 */
/* Keys at start, before swtpm: finish or undo an interrupted re-encryption,
 * do requested rotations, encrypt state from before encryption, and hand
 * back the DEK (NULL: unencrypted). A failure that leaves the state usable
 * is reported and the start goes on; one that does not refuses the start.
 * The node's use of keymgr and key_rotation (the mechanisms). */
#include <string.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "key_rotation.h"
#include "node/node.h"

DEFINE_JSON_CLEANUP

typedef struct key_start {
        node_controller *nc;
        launcher *l;
        json_t *ts;  /* the TPMState (cache): rotation requests, what was done */
        const char *dir;
        json_t *keys; /* the status.keys update */
        secmem *dek;
        state_key_info ki;
} key_start;

static void key_start_done(key_start *k) {
        json_decref(k->keys);
        secmem_free(k->dek);
        state_key_info_done(&k->ki);
}

/* An interrupted rotation first: the state must load with the key the header names. */
static bool recover(key_start *k, kube_outcome *ret) {
        _cleanup_error_ vt_error *err = NULL;
        int r = keyrot_recover(k->dir, &err);
        if (r < 0) {
                *ret = node_halt(k->nc, k->l, NR_KEY_ROTATION_UNRECOVERABLE, err ? err->msg : strerror(-r), &err);
                return false;
        }
        if (r > KEYROT_NOTHING) {
                _cleanup_free_ char *m = xasprintf("key rotation recovery: %s", keyrot_action_name((keyrot_action)r));
                node_keys_event(k->nc, k->l, false, "KeyRotationRecovered", m);
                json_object_set_new(k->keys, "message", json_string(m));
        }
        return true;
}

static bool rotate_kek(key_start *k, kube_outcome *ret) {
        const char *req = ts_annotation(k->ts, ANN_ROTATE_KEK);
        if (!req || str_eq(req, ts_keys_field(k->ts, "kekRotation", "completed")))
                return true;
        _cleanup_free_ char *kek_id = NULL;
        _cleanup_error_ vt_error *err = NULL;
        int r = keyrot_rotate_kek(k->nc->keys, &KEY_SUBJECT(k->l), k->dir, req, &kek_id, &err);
        if (r >= 0 || r == -ENOENT) {
                json_object_set_new(k->keys, "kekRotation", rotation_done(req));
                if (r > 0) {
                        _cleanup_free_ char *m = xasprintf("KEK rotation %s: the state key is wrapped by KEK %s", req,
                                                           kek_id);
                        node_keys_event(k->nc, k->l, false, "KEKRotated", m);
                        json_object_set_new(k->keys, "message", json_string(m));
                }
                return true;
        }
        if (keymgr_unavailable(r)) {
                *ret = node_halt(k->nc, k->l, NR_KEY_PROVIDER_UNAVAILABLE, err ? err->msg : strerror(-r), &err);
                return false;
        }
        /* The old wrapping stands: the VM starts with it. */
        _cleanup_free_ char *m = xasprintf("KEK rotation %s failed: %s", req, err ? err->msg : strerror(-r));
        json_object_set_new(k->keys, "kekRotation", json_pack("{s:s, s:s}", "requested", req, "error", m));
        json_object_set_new(k->keys, "message", json_string(m));
        node_keys_event(k->nc, k->l, true, "KEKRotationFailed", m);
        return true;
}

/* The DEK: unwrapped from the header, or made and wrapped there before the
 * first state exists. `after_rotation`: a second try once a failed rotation
 * was rolled forward. */
static bool unwrap(key_start *k, bool after_rotation, kube_outcome *ret) {
        secmem_free(TAKE_PTR(k->dek));
        state_key_info_done(&k->ki);
        _cleanup_error_ vt_error *err = NULL;
        int r = keymgr_state_key(k->nc->keys, &KEY_SUBJECT(k->l), k->dir, &k->dek, &k->ki, &err);
        if (r >= 0)
                return true;
        const char *why = err ? err->msg : strerror(-r);
        if (after_rotation)
                *ret = node_halt(k->nc, k->l, NR_KEY_UNWRAP_FAILED_AFTER_ROTATION, err ? err->msg : NULL, &err);
        else if (keymgr_unavailable(r))
                *ret = node_halt(k->nc, k->l, NR_KEY_PROVIDER_UNAVAILABLE, why, &err); /* backoff, then retry */
        else
                *ret = node_halt(k->nc, k->l, NR_KEY_UNWRAP_FAILED, why, &err);
        return false;
}

/* A failed re-encryption: whatever is left must load (finish or undo), or
 * the start is refused. */
static bool reencrypt_failed(key_start *k, const char *req, int r, vt_error **rerr, kube_outcome *ret) {
        _cleanup_error_ vt_error *cerr = NULL;
        int c = keyrot_recover(k->dir, &cerr);
        _cleanup_free_ char *m = xasprintf("%s failed (%s)%s%s",
                                           req ? "DEK rotation" : "encrypting the existing unencrypted state",
                                           *rerr ? (*rerr)->msg : strerror(-r),
                                           c < 0 ? "; recovery failed too: " : "", c < 0 ? cerr->msg : "");
        if (keymgr_unavailable(r)) {
                *ret = node_halt(k->nc, k->l, NR_KEY_PROVIDER_UNAVAILABLE_REKEY, m, rerr);
                return false;
        }
        if (!req || c < 0) {
                /* Never started on state whose key we are not sure of, and
                 * unencrypted state is never started as such again. */
                *ret = node_halt(k->nc, k->l, req ? NR_KEY_ROTATION_INCOMPLETE : NR_STATE_ENCRYPTION_FAILED, m, rerr);
                return false;
        }
        json_object_set_new(k->keys, "dekRotation", json_pack("{s:s, s:s, s:b}", "requested", req, "error", m, "pending", 0));
        json_object_set_new(k->keys, "message", json_string(m));
        node_keys_event(k->nc, k->l, true, "DEKRotationFailed", m);
        /* Failed past its marker and finished now: the new key is current. */
        return c != KEYROT_ROLL_FORWARD || unwrap(k, true, ret);
}

/* A requested DEK rotation, or the encryption of state from before encryption. */
static bool reencrypt(key_start *k, bool tpm2, const tpm_sandbox *sb, kube_outcome *ret) {
        const char *dek_req = ts_annotation(k->ts, ANN_ROTATE_DEK);
        if (!k->ki.unencrypted && !(k->dek && dek_req && !str_eq(dek_req, ts_keys_field(k->ts, "dekRotation", "completed"))))
                return true;
        const char *req = k->ki.unencrypted ? NULL : dek_req;
        keyrot_tpm t = {.version = tpm2 ? TPM_VERSION_2 : TPM_VERSION_1_2, .sandbox = sb};
        _cleanup_(secmem_freep) secmem *fresh = NULL;
        _cleanup_error_ vt_error *rerr = NULL;
        int r = keyrot_reencrypt(k->nc->keys, &KEY_SUBJECT(k->l), k->dir, req, &t, &fresh, &rerr);
        if (r < 0)
                return reencrypt_failed(k, req, r, &rerr, ret);
        if (r > 0) {
                secmem_free(k->dek);
                k->dek = TAKE_PTR(fresh);
                _cleanup_free_ char *m = req ? xasprintf("DEK rotation %s: the TPM state is re-encrypted under a new key", req)
                                             : xstrdup("the existing unencrypted TPM state is now encrypted");
                node_keys_event(k->nc, k->l, false, req ? "DEKRotated" : "StateEncrypted", m);
                json_object_set_new(k->keys, "message", json_string(m));
        }
        if (req)
                json_object_set_new(k->keys, "dekRotation", rotation_done(req));
        return true;
}

kube_outcome keys_at_start(node_controller *nc, launcher *l, json_t *ts, const char *dir, bool tpm2,
                           const tpm_sandbox *sb, bool rotations, secmem **ret_dek, bool *ret_ok) {
        _cleanup_(key_start_done) key_start k = {.nc = nc, .l = l, .ts = ts, .dir = dir, .keys = json_object()};
        kube_outcome out = kube_done();
        *ret_ok = false;
        if (!rotations) {
                if (!unwrap(&k, false, &out))
                        return out;
        } else if (!recover(&k, &out) || !rotate_kek(&k, &out) || !unwrap(&k, false, &out) ||
                   !reencrypt(&k, tpm2, sb, &out))
                return out;
        {
                _cleanup_close_ int dfd = dir_open_nofollow(dir, NULL);
                keys_from_header(k.keys, dfd);
        }
        node_keys_update(nc, l, k.keys);
        *ret_dek = TAKE_PTR(k.dek);
        *ret_ok = true;
        return out;
}
