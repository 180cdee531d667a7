/* SPDX-License-Identifier: Apache-2.0 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "base/alloc.h"
#include "base/timeutil.h"
#include "keys/dek.h"
#include "keys/provider.h"

typedef struct kmip_provider {
        kek_provider base;
        kmip_client *client;
        char *prefix;
        int server_side; /* -1 unknown, 1 Encrypt/Decrypt offered */
} kmip_provider;

#define CHECK_LEN 16
static const char check_label[] = "vtpm-agent dek check v1";

/* check = SHA-256(label || DEK)[0..16): binds the DEK to its wrapping so a
 * wrong KEK or an altered blob is detected although CBC itself is not
 * authenticated. */
static int dek_check(const uint8_t *dek, size_t n, uint8_t out[CHECK_LEN]) {
        uint8_t md[32];
        unsigned int mdlen = 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
                 EVP_DigestUpdate(ctx, check_label, sizeof(check_label) - 1) == 1 &&
                 EVP_DigestUpdate(ctx, dek, n) == 1 && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
        EVP_MD_CTX_free(ctx);
        if (ok)
                memcpy(out, md, CHECK_LEN);
        OPENSSL_cleanse(md, sizeof(md));
        return ok ? 0 : -EIO;
}

/* The KEK never leaves the server: without Encrypt and Decrypt there is
 * nothing this provider can do (no Get fallback). */
static int require_server_side(kmip_provider *k, vt_error **err) {
        if (k->server_side > 0)
                return 0;
        uint32_t ops[64];
        size_t n = 0;
        int r = kmip_query_operations(k->client, ops, ELEMENTSOF(ops), &n, err);
        if (r < 0) {
                /* Name the provider: this is often the first request of a start. */
                (void)vt_error_prefix(err, r, "kmip: asking the key server what it offers: ");
                return r;
        }
        bool enc = false, dec = false;
        for (size_t i = 0; i < n; i++) {
                enc = enc || ops[i] == KMIP_OP_ENCRYPT;
                dec = dec || ops[i] == KMIP_OP_DECRYPT;
        }
        if (!(enc && dec))
                return vt_error_set(err, EOPNOTSUPP,
                                    "kmip: the key server offers no Encrypt/Decrypt (the KEK is never fetched)");
        k->server_side = 1;
        return 0;
}

static bool scope_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 128)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x21 || s[i] > 0x7e)
                        return false;
        return true;
}

/* Whether `name` is one of scope's KEK names: "<prefix><scope>" or
 * "<prefix><scope>@<version>". */
static bool name_is_scopes(const kmip_provider *k, const char *scope, const char *name) {
        size_t pl = strlen(k->prefix), sl = strlen(scope);
        if (strncmp(name, k->prefix, pl) != 0 || strncmp(name + pl, scope, sl) != 0)
                return false;
        const char *rest = name + pl + sl;
        return *rest == '\0' || (*rest == '@' && keys_rotation_id_valid(rest + 1));
}

/* kek_id (an object uid, maybe from a tenant's header) belongs to `scope`:
 * the object's Name on the server says so. 0 yes, -EPERM no, or the
 * server's error (unavailable ones are passed on for a retry). */
static int check_binding(kmip_provider *k, const char *scope, const char *kek_id, vt_error **err) {
        if (!scope_valid(scope))
                return vt_error_set(err, EINVAL, "kmip: bad KEK scope");
        char *names[8];
        size_t n = 0;
        int r = kmip_get_names(k->client, kek_id, names, ELEMENTSOF(names), &n, err);
        if (r < 0)
                return r;
        bool ok = false;
        for (size_t i = 0; i < n; i++) {
                ok = ok || name_is_scopes(k, scope, names[i]);
                free(names[i]);
        }
        return ok ? 0 : -EPERM;
}

/* The KEK object called `name`: Locate, else Create (AES-256) and Activate. */
static int ensure_named_kek(kmip_provider *k, const char *name, char **ret_kek_id, vt_error **err) {
        _cleanup_free_ char *uid = NULL;
        int r = kmip_locate_by_name(k->client, name, &uid, err);
        if (r == 0) {
                *ret_kek_id = TAKE_PTR(uid);
                return 0;
        }
        if (r != -ENOENT)
                return vt_error_prefix(err, r, "kmip: looking up KEK %s: ", name);
        if (err) {
                vt_error_free(*err);
                *err = NULL;
        }
        r = kmip_create_aes256(k->client, name, &uid, err);
        if (r < 0)
                return vt_error_prefix(err, r, "kmip: creating KEK %s: ", name);
        r = kmip_activate(k->client, uid, err);
        if (r < 0)
                return vt_error_prefix(err, r, "kmip: activating KEK %s (%s): ", name, uid);
        *ret_kek_id = TAKE_PTR(uid);
        return 0;
}

static int kmip_ensure_kek(kek_provider *p, const char *scope, char **ret_kek_id, vt_error **err) {
        kmip_provider *k = (kmip_provider *)p;
        assert_return(scope && ret_kek_id, -EINVAL);
        if (!scope_valid(scope))
                return vt_error_set(err, EINVAL, "kmip: bad KEK scope");
        _cleanup_free_ char *name = xasprintf("%s%s", k->prefix, scope);
        return ensure_named_kek(k, name, ret_kek_id, err);
}

/* Rotated KEKs are their own objects, Name "<prefix><scope>@<version>";
 * Locate first, so every VM of the scope asking for the version shares one. */
static int kmip_ensure_kek_version(kek_provider *p, const char *scope, const char *version, char **ret_kek_id,
                                   vt_error **err) {
        kmip_provider *k = (kmip_provider *)p;
        assert_return(scope && version && ret_kek_id, -EINVAL);
        if (!scope_valid(scope))
                return vt_error_set(err, EINVAL, "kmip: bad KEK scope");
        if (!keys_rotation_id_valid(version))
                return vt_error_set(err, EINVAL, "kmip: bad KEK version");
        _cleanup_free_ char *name = xasprintf("%s%s@%s", k->prefix, scope, version);
        return ensure_named_kek(k, name, ret_kek_id, err);
}

static int kmip_wrap(kek_provider *p, const char *scope, const char *kek_id, const secmem *dek, key_header *h,
                     vt_error **err) {
        kmip_provider *k = (kmip_provider *)p;
        assert_return(scope && kek_id && dek && h, -EINVAL);
        if (dek->len != DEK_SIZE)
                return vt_error_set(err, EINVAL, "kmip: DEK must be %d bytes", DEK_SIZE);
        int r = require_server_side(k, err);
        if (r < 0)
                return r;
        r = check_binding(k, scope, kek_id, err);
        if (r == -EPERM)
                return vt_error_set(err, EPERM, "kmip: that KEK is not one of namespace %s's", scope);
        if (r < 0)
                return r;
        _cleanup_secmem_ secmem *plain = NULL;
        r = secmem_new(DEK_SIZE + CHECK_LEN, &plain, err);
        if (r < 0)
                return r;
        memcpy(plain->data, dek->data, DEK_SIZE);
        if (dek_check(dek->data, DEK_SIZE, plain->data + DEK_SIZE) < 0)
                return vt_error_set(err, EIO, "kmip: hashing failed");
        uint8_t iv[16];
        if (RAND_bytes(iv, sizeof(iv)) != 1)
                return vt_error_set(err, EIO, "kmip: no random IV");
        _cleanup_free_ uint8_t *ct = NULL;
        size_t ctl = 0;
        r = kmip_encrypt_cbc(k->client, kek_id, iv, plain->data, plain->len, &ct, &ctl, err);
        if (r < 0)
                return r;
        if (16 + ctl != key_header_wrapped_len(KEYS_ALG_KMIP_CBC))
                return vt_error_set(err, EBADMSG, "kmip: Encrypt returned %zu bytes", ctl);
        uint8_t *w = xmalloc(16 + ctl);
        memcpy(w, iv, 16);
        memcpy(w + 16, ct, ctl);
        key_header_set_wrapping(h, KEYS_PROVIDER_KMIP, kek_id, KEYS_ALG_KMIP_CBC, w, 16 + ctl);
        return 0;
}

/* Unavailable servers are said as such (retry); every other failure is the
 * one generic message: whether the KEK was another namespace's, unknown,
 * wrong, or the padding or the check value did not match is not told apart. */
static int unwrap_fail(vt_error **err, int r) {
        if (keys_error_is_unavailable(r)) {
                if (err && *err && strncmp((*err)->msg, "kmip: ", 6) != 0)
                        (void)vt_error_prefix(err, r, "kmip: ");
                return r;
        }
        return keys_unwrap_failed(err);
}

static int kmip_unwrap(kek_provider *p, const char *scope, const key_header *h, secmem **ret_dek, vt_error **err) {
        kmip_provider *k = (kmip_provider *)p;
        assert_return(scope && h && ret_dek, -EINVAL);
        int r = key_header_validate(h, err);
        if (r < 0)
                return unwrap_fail(err, r);
        /* Only server-side wrapping: a header asking for AES-256-KWP would
         * need the KEK's bytes here. */
        if (strcmp(h->provider, KEYS_PROVIDER_KMIP) != 0 || strcmp(h->algorithm, KEYS_ALG_KMIP_CBC) != 0)
                return keys_unwrap_failed(err);
        r = require_server_side(k, err);
        if (r < 0)
                return r;
        /* The header may name any object on the server: only scope's KEKs. */
        r = check_binding(k, scope, h->kek_id, err);
        if (r < 0)
                return unwrap_fail(err, r);
        _cleanup_secmem_ secmem *plain = NULL;
        r = kmip_decrypt_cbc(k->client, h->kek_id, h->wrapped_key, h->wrapped_key + 16, h->wrapped_key_len - 16,
                             &plain, err);
        if (r < 0)
                return unwrap_fail(err, r);
        uint8_t check[CHECK_LEN];
        if (plain->len != DEK_SIZE + CHECK_LEN || dek_check(plain->data, DEK_SIZE, check) < 0 ||
            CRYPTO_memcmp(check, plain->data + DEK_SIZE, CHECK_LEN) != 0)
                return keys_unwrap_failed(err);
        return secmem_dup(plain->data, DEK_SIZE, ret_dek, err);
}

static void kmip_free(kek_provider *p) {
        kmip_provider *k = (kmip_provider *)p;
        kmip_client_free(k->client);
        free(k->prefix);
        free(k);
}

static const kek_provider_ops kmip_ops = {
        .name = KEYS_PROVIDER_KMIP,
        .ensure_kek = kmip_ensure_kek,
        .ensure_kek_version = kmip_ensure_kek_version,
        .wrap = kmip_wrap,
        .unwrap = kmip_unwrap,
        .free = kmip_free,
};

int kek_provider_kmip_new(const kmip_provider_options *o, kek_provider **ret, vt_error **err) {
        assert_return(o && ret, -EINVAL);
        kmip_client *c = NULL;
        int r = kmip_client_new(&o->server, &c, err);
        if (r < 0)
                return r;
        kmip_provider *k = xnew(kmip_provider, 1);
        k->base.ops = &kmip_ops;
        k->client = c;
        k->prefix = xstrdup(o->name_prefix ? o->name_prefix : "vtpm-agent-kek/");
        k->server_side = -1;
        *ret = &k->base;
        return 0;
}

int kek_provider_kmip_server_side(kek_provider *p) {
        assert_return(p && p->ops == &kmip_ops, -EINVAL);
        kmip_provider *k = (kmip_provider *)p;
        return k->server_side < 0 ? -EAGAIN : k->server_side;
}
