/* SPDX-License-Identifier: Apache-2.0 */
/* The "secret" KEK provider: one 256-bit KEK per VM namespace, in the Secret
 * <agent-ns>/vtpm-kek-<vm-ns>, data key "kek-<version>", created on first
 * use. The kekId in key headers is "<agent-ns>/vtpm-kek-<vm-ns>#<version>",
 * so a rotation adds a version and re-wraps without losing old ones. A
 * header's kekId is used only when it is the VM namespace's (kek_secret.h),
 * so a header copied from another namespace's volume unwraps nothing. KEK
 * rotation request "<id>" adds data key "kek-<id>" and makes it current
 * (annotation vtpm-agent.io/current-kek) for the namespace's new VMs.
 * Wrapping is local (RFC 5649); the KEK is held only in locked memory. */
#include "keys/provider_secret.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "keys/kek_secret.h"
#include "keys/wrap.h"

typedef struct secret_provider {
        kek_provider base;
        kube_client *client;
        const kube_resource *secrets;
        char *namespace;
        char *label_key, *label_value;
} secret_provider;

static void sp_free(kek_provider *p) {
        secret_provider *sp = (secret_provider *)p;
        free(sp->namespace);
        free(sp->label_key);
        free(sp->label_value);
        free(sp);
}

/* Wipe a JSON string in place: Secrets arrive as JSON text holding the key. */
static void wipe_json_strings(json_t *j) {
        if (json_is_string(j)) {
                OPENSSL_cleanse((char *)json_string_value(j), json_string_length(j));
                return;
        }
        const char *k;
        json_t *v;
        size_t i;
        if (json_is_object(j))
                json_object_foreach(j, k, v) wipe_json_strings(v);
        else if (json_is_array(j))
                json_array_foreach(j, i, v) wipe_json_strings(v);
}

/* A Secret as JSON, wiped before it is freed. */
static void secret_json_free(json_t *j) {
        if (!j)
                return;
        wipe_json_strings(j);
        json_decref(j);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(json_t *, secret_json_free)
#define _cleanup_secret_json_ _cleanup_(secret_json_freep)

static void forget_error(vt_error **err) {
        if (err) {
                vt_error_free(*err);
                *err = NULL;
        }
}

static char *secret_name(const char *scope) {
        return xasprintf("vtpm-kek-%s", scope);
}

/* 1 and the Secret, or 0 and NULL when there is none. */
static int get_secret(secret_provider *sp, const char *name, json_t **ret, vt_error **err) {
        _cleanup_free_ char *path = kube_path(sp->secrets, sp->namespace, name, NULL);
        json_t *s = NULL;
        int r = kube_get(sp->client, path, &s, err);
        if (r == -ENOENT) {
                forget_error(err);
                *ret = NULL;
                return 0;
        }
        if (r < 0)
                return r;
        *ret = s;
        return 1;
}

/* Scope's KEK named by kek_id into locked memory. kek_id comes from a key
 * header on the tenant's volume: it must be scope's own (derived from the
 * VM's namespace), or -EPERM before anything is read. -ENOKEY: no such
 * Secret or version; -EBADMSG: the value is not a 256-bit key. */
static int load_kek(secret_provider *sp, const char *scope, const char *kek_id, secmem **ret, vt_error **err) {
        const char *version = NULL;
        if (kek_id_for_scope(sp->namespace, scope, kek_id, &version) < 0)
                return vt_error_set(err, EPERM, "secret provider: the KEK is not one of namespace %s's", scope);
        _cleanup_free_ char *name = secret_name(scope);
        _cleanup_secret_json_ json_t *s = NULL;
        int r = get_secret(sp, name, &s, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, ENOKEY, "secret provider: the KEK Secret %s/%s does not exist",
                                    sp->namespace, name);
        r = kek_secret_key(s, version, ret, err);
        if (r < 0) {
                (void)vt_error_prefix(err, r, "secret provider, %s/%s: ", sp->namespace, name);
                return r; /* not vt_error_prefix's: with err NULL that is -EIO */
        }
        return 0;
}

/* A fresh 256-bit KEK, as the Secret holds it (standard base64). */
static int fresh_kek_b64(char b64[64], vt_error **err) {
        _cleanup_(secmem_freep) secmem *kek = NULL;
        int r = secmem_new(32, &kek, err);
        if (r < 0)
                return r;
        if (RAND_priv_bytes(kek->data, 32) != 1)
                return vt_error_set(err, EIO, "secret provider: the random generator failed");
        EVP_EncodeBlock((unsigned char *)b64, kek->data, 32);
        return 0;
}

/* data["kek-<version>"] = a fresh KEK, made current, in s (a Secret). */
static int add_kek_version(json_t *s, const char *field, const char *version, vt_error **err) {
        char b64[64];
        int r = fresh_kek_b64(b64, err);
        if (r < 0)
                return r;
        json_t *data = json_object_get(s, "data");
        if (!json_is_object(data)) {
                data = json_object();
                json_object_set_new(s, "data", data);
        }
        json_object_set_new(data, field, json_string(b64));
        OPENSSL_cleanse(b64, sizeof(b64));
        json_t *meta = json_object_get(s, "metadata");
        json_t *ann = json_object_get(meta, "annotations");
        if (!json_is_object(ann)) {
                ann = json_object();
                json_object_set_new(meta, "annotations", ann);
        }
        json_object_set_new(ann, "vtpm-agent.io/current-kek", json_string(version));
        return 0;
}

/* First use for this namespace: the Secret with a fresh KEK "1", current.
 * 0 when made, -EEXIST when another agent made it first. */
static int create_secret(secret_provider *sp, const char *scope, const char *name, vt_error **err) {
        _cleanup_secret_json_ json_t *obj =
                json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}, s:{s:s}}, s:s}", "apiVersion", "v1", "kind", "Secret",
                          "metadata", "name", name, "namespace", sp->namespace, "labels", sp->label_key,
                          sp->label_value, "annotations", "vtpm-agent.io/kek-for", scope, "type", "Opaque");
        if (!obj)
                return vt_error_set(err, EINVAL, "secret provider: cannot build the KEK Secret %s/%s",
                                    sp->namespace, name);
        int r = add_kek_version(obj, "kek-1", "1", err);
        if (r < 0)
                return r;
        _cleanup_free_ char *coll = kube_path(sp->secrets, sp->namespace, NULL, NULL);
        return kube_create(sp->client, coll, obj, NULL, err);
}

static int sp_ensure_kek(kek_provider *p, const char *scope, char **ret_kek_id, vt_error **err) {
        secret_provider *sp = (secret_provider *)p;
        _cleanup_free_ char *name = secret_name(scope);
        for (;;) {
                _cleanup_secret_json_ json_t *s = NULL;
                int r = get_secret(sp, name, &s, err);
                if (r < 0)
                        return r;
                if (r > 0) {
                        const char *cur = json_string_value(
                                json_object_get(json_object_get(json_object_get(s, "metadata"), "annotations"),
                                                "vtpm-agent.io/current-kek"));
                        /* The annotation is ours, but only a valid version makes an id. */
                        if (cur && !keys_rotation_id_valid(cur))
                                return vt_error_set(err, EBADMSG,
                                                    "secret provider: Secret %s/%s has a bad current-kek",
                                                    sp->namespace, name);
                        *ret_kek_id = kek_id_make(sp->namespace, scope, cur ? cur : "1");
                        return 0;
                }
                r = create_secret(sp, scope, name, err);
                if (r == -EEXIST) {
                        forget_error(err); /* another agent made it first: use theirs */
                        continue;
                }
                if (r < 0)
                        return r;
                *ret_kek_id = kek_id_make(sp->namespace, scope, "1");
                return 0;
        }
}

static int sp_ensure_kek_version(kek_provider *p, const char *scope, const char *version, char **ret_kek_id,
                                 vt_error **err) {
        secret_provider *sp = (secret_provider *)p;
        if (!keys_rotation_id_valid(version))
                return vt_error_set(err, EINVAL, "secret provider: \"%.64s\" is not a valid KEK version", version);
        _cleanup_free_ char *name = secret_name(scope);
        _cleanup_free_ char *field = xasprintf("kek-%s", version);
        /* Read-modify-write under the Secret's resourceVersion: two agents
         * rotating the same namespace at once must not both add a key. */
        for (int attempt = 0; attempt < 8; attempt++) {
                _cleanup_secret_json_ json_t *s = NULL;
                int r = get_secret(sp, name, &s, err);
                if (r < 0)
                        return r;
                if (r == 0) {
                        _cleanup_free_ char *first = NULL;
                        r = sp_ensure_kek(p, scope, &first, err); /* create the Secret (kek-1) first */
                        if (r < 0)
                                return r;
                        continue;
                }
                if (!json_string_value(json_object_get(json_object_get(s, "data"), field))) {
                        r = add_kek_version(s, field, version, err);
                        if (r < 0)
                                return r;
                        _cleanup_free_ char *path = kube_path(sp->secrets, sp->namespace, name, NULL);
                        r = kube_update(sp->client, path, s, NULL, err);
                        if (r == -ESTALE || r == -EEXIST) {
                                forget_error(err);
                                continue; /* somebody else changed it: look again */
                        }
                        if (r < 0)
                                return r;
                }
                *ret_kek_id = kek_id_make(sp->namespace, scope, version);
                return 0;
        }
        return vt_error_set(err, EAGAIN, "secret provider: the KEK Secret %s/%s keeps changing", sp->namespace, name);
}

static int sp_wrap(kek_provider *p, const char *scope, const char *kek_id, const secmem *dek, key_header *h,
                   vt_error **err) {
        _cleanup_(secmem_freep) secmem *kek = NULL;
        int r = load_kek((secret_provider *)p, scope, kek_id, &kek, err);
        if (r < 0)
                return r;
        uint8_t *wrapped = NULL;
        size_t len = 0;
        r = keys_wrap_local(kek, dek, &wrapped, &len, err);
        if (r < 0)
                return r;
        key_header_set_wrapping(h, KEYS_PROVIDER_SECRET, kek_id, KEYS_ALG_AES256_KWP, wrapped, len);
        return 0;
}

static int sp_unwrap(kek_provider *p, const char *scope, const key_header *h, secmem **ret_dek, vt_error **err) {
        if (!h->provider || strcmp(h->provider, KEYS_PROVIDER_SECRET) != 0 || !h->algorithm ||
            strcmp(h->algorithm, KEYS_ALG_AES256_KWP) != 0 || !h->kek_id || !h->wrapped_key)
                return keys_unwrap_failed(err);
        _cleanup_(secmem_freep) secmem *kek = NULL;
        int r = load_kek((secret_provider *)p, scope, h->kek_id, &kek, err);
        if (r == -EPERM || r == -ENOKEY || r == -EBADMSG)
                /* Another namespace's KEK, an unknown version, a bad Secret:
                 * the tenant who wrote the header learns nothing from which. */
                return keys_unwrap_failed(err);
        if (r < 0)
                return r;
        r = keys_unwrap_local(kek, h->wrapped_key, h->wrapped_key_len, ret_dek, err);
        if (r < 0)
                return keys_unwrap_failed(err);
        return 0;
}

static const kek_provider_ops secret_ops = {
        .name = "secret",
        .ensure_kek = sp_ensure_kek,
        .ensure_kek_version = sp_ensure_kek_version,
        .wrap = sp_wrap,
        .unwrap = sp_unwrap,
        .free = sp_free,
};

int kek_provider_secret_new(const secret_provider_options *o, kek_provider **ret) {
        /* Missing options are the caller's bug, not a condition to report. */
        assert_return(o && o->client && o->secrets && o->namespace && *o->namespace && o->label_key &&
                              o->label_value && ret,
                      -EINVAL);
        secret_provider *sp = xnew(secret_provider, 1);
        sp->base.ops = &secret_ops;
        sp->client = o->client;
        sp->secrets = o->secrets;
        sp->namespace = xstrdup(o->namespace);
        sp->label_key = xstrdup(o->label_key);
        sp->label_value = xstrdup(o->label_value);
        *ret = &sp->base;
        return 0;
}
