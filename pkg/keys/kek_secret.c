/* SPDX-License-Identifier: Apache-2.0 */
#include "keys/kek_secret.h"

#include <openssl/evp.h>
#include <string.h>

#include "base/alloc.h"
#include "keys/provider.h"

char *kek_id_make(const char *agent_ns, const char *scope, const char *version) {
        return xasprintf("%s/vtpm-kek-%s#%s", agent_ns, scope, version);
}

int kek_id_for_scope(const char *agent_ns, const char *scope, const char *kek_id, const char **ret_version) {
        assert_return(agent_ns && scope && kek_id && ret_version, -EINVAL);
        _cleanup_free_ char *prefix = xasprintf("%s/vtpm-kek-%s#", agent_ns, scope);
        size_t n = strlen(prefix);
        if (strncmp(kek_id, prefix, n) != 0 || !keys_rotation_id_valid(kek_id + n))
                return -EPERM;
        *ret_version = kek_id + n;
        return 0;
}

static bool b64_char(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int kek_secret_key(const json_t *secret, const char *version, secmem **ret, vt_error **err) {
        assert_return(secret && version && ret, -EINVAL);
        _cleanup_free_ char *field = xasprintf("kek-%s", version);
        const json_t *v = json_object_get(json_object_get(secret, "data"), field);
        if (!v)
                return vt_error_set(err, ENOKEY, "the KEK Secret has no key %s", field);
        const char *b64 = json_string_value(v);
        /* Exactly 44 characters, 43 of the alphabet and one '=', BEFORE
         * decoding: the output buffer holds 33 bytes, not whatever the value's
         * length would decode to. */
        if (!b64 || json_string_length(v) != KEK_SECRET_B64_LEN || b64[KEK_SECRET_B64_LEN - 1] != '=')
                return vt_error_set(err, EBADMSG, "key %s in the KEK Secret is not a 256-bit key", field);
        for (size_t i = 0; i < KEK_SECRET_B64_LEN - 1; i++)
                if (!b64_char(b64[i]))
                        return vt_error_set(err, EBADMSG, "key %s in the KEK Secret is not a 256-bit key", field);
        _cleanup_secmem_ secmem *m = NULL;
        int r = secmem_new(KEK_SECRET_B64_LEN / 4 * 3, &m, err);
        if (r < 0)
                return r;
        int n = EVP_DecodeBlock(m->data, (const unsigned char *)b64, KEK_SECRET_B64_LEN);
        /* 33 with the '=' counted as a zero byte, which must be zero bits:
         * the canonical encoding only (the last character's low 2 bits). */
        if (n != 33 || m->data[32] != 0 || (strchr("AEIMQUYcgkosw048", b64[42]) == NULL))
                return vt_error_set(err, EBADMSG, "key %s in the KEK Secret is not a 256-bit key", field);
        secmem_truncate(m, 32);
        *ret = TAKE_PTR(m);
        return 0;
}
