/* SPDX-License-Identifier: Apache-2.0 */
#include "wrap.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <string.h>

#include "base/alloc.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free)

#define KWP_MAX_KEY 4096

static const EVP_CIPHER *kwp_cipher(size_t kek_len) {
        switch (kek_len) {
        case 16:
                return EVP_aes_128_wrap_pad();
        case 24:
                return EVP_aes_192_wrap_pad();
        case 32:
                return EVP_aes_256_wrap_pad();
        default:
                return NULL;
        }
}

/* One pass of the wrap cipher; `out` must hold in_len + 15 bytes. */
static int kwp_run(bool encrypt, const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                   uint8_t *out, size_t *ret_len) {
        const EVP_CIPHER *cipher = kwp_cipher(kek_len);
        if (!cipher)
                return -EINVAL;
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        /* OpenSSL refuses the wrap modes through EVP unless asked explicitly. */
        EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
        if (EVP_CipherInit_ex(ctx, cipher, NULL, kek, NULL, encrypt ? 1 : 0) != 1)
                return -EIO;
        int n = 0, m = 0;
        if (EVP_CipherUpdate(ctx, out, &n, in, (int)in_len) != 1 || n < 0)
                return -EBADMSG;
        if (EVP_CipherFinal_ex(ctx, out + n, &m) != 1 || m < 0)
                return -EBADMSG;
        *ret_len = (size_t)n + (size_t)m;
        return 0;
}

int kwp_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *key, size_t key_len,
             uint8_t **ret_wrapped, size_t *ret_len, vt_error **err) {
        assert_return(kek && key && ret_wrapped && ret_len, -EINVAL);
        if (!kwp_cipher(kek_len))
                return vt_error_set(err, EINVAL, "key wrap: KEK must be 16, 24 or 32 bytes, not %zu", kek_len);
        if (key_len == 0 || key_len > KWP_MAX_KEY)
                return vt_error_set(err, EINVAL, "key wrap: key length %zu out of range", key_len);
        size_t cap = KWP_WRAPPED_SIZE(key_len) + 16;
        _cleanup_free_ uint8_t *out = xmalloc(cap);
        size_t n = 0;
        int r = kwp_run(true, kek, kek_len, key, key_len, out, &n);
        if (r < 0)
                return vt_error_set(err, -r, "key wrap (RFC 5649) failed");
        if (n != KWP_WRAPPED_SIZE(key_len))
                return vt_error_set(err, EIO, "key wrap produced %zu bytes, expected %zu", n,
                                    (size_t)KWP_WRAPPED_SIZE(key_len));
        *ret_wrapped = TAKE_PTR(out);
        *ret_len = n;
        return 0;
}

int kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *wrapped, size_t wrapped_len,
               secmem **ret_key, vt_error **err) {
        assert_return(kek && wrapped && ret_key, -EINVAL);
        if (!kwp_cipher(kek_len))
                return vt_error_set(err, EINVAL, "key unwrap: KEK must be 16, 24 or 32 bytes, not %zu",
                                    kek_len);
        if (wrapped_len < 16 || wrapped_len % 8 != 0 || wrapped_len > KWP_WRAPPED_SIZE(KWP_MAX_KEY))
                return vt_error_set(err, EINVAL, "key unwrap: wrapped length %zu is not valid for RFC 5649",
                                    wrapped_len);
        /* The output is plaintext key material: straight into locked memory. */
        _cleanup_secmem_ secmem *out = NULL;
        int r = secmem_new(wrapped_len + 16, &out, err);
        if (r < 0)
                return r;
        size_t n = 0;
        r = kwp_run(false, kek, kek_len, wrapped, wrapped_len, out->data, &n);
        if (r == -EBADMSG || (r == 0 && n == 0))
                return vt_error_set(err, EBADMSG,
                                    "key unwrap failed: integrity check did not match "
                                    "(wrong KEK or altered wrapped key)");
        if (r < 0)
                return vt_error_set(err, -r, "key unwrap (RFC 5649) failed");
        secmem_truncate(out, n);
        *ret_key = TAKE_PTR(out);
        return 0;
}

int keys_wrap_local(const secmem *kek, const secmem *dek, uint8_t **ret_wrapped, size_t *ret_len,
                    vt_error **err) {
        assert_return(kek && dek, -EINVAL);
        if (kek->len != 32)
                return vt_error_set(err, EINVAL, "KEK must be 256 bits, not %zu bytes", kek->len);
        return kwp_wrap(kek->data, kek->len, dek->data, dek->len, ret_wrapped, ret_len, err);
}

int keys_unwrap_local(const secmem *kek, const uint8_t *wrapped, size_t wrapped_len, secmem **ret_dek,
                      vt_error **err) {
        assert_return(kek, -EINVAL);
        if (kek->len != 32)
                return vt_error_set(err, EINVAL, "KEK must be 256 bits, not %zu bytes", kek->len);
        return kwp_unwrap(kek->data, kek->len, wrapped, wrapped_len, ret_dek, err);
}
