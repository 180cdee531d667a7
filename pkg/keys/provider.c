/* SPDX-License-Identifier: Apache-2.0 */
/* What every KEK provider shares: the error classification and filling a
 * key header's wrapping fields. */
#include <string.h>

#include "base/alloc.h"
#include "base/timeutil.h"
#include "keys/provider.h"

bool keys_error_is_unavailable(int r) {
        switch (-r) {
        case ECONNREFUSED:
        case ECONNRESET:
        case ECONNABORTED:
        case EHOSTDOWN:
        case EHOSTUNREACH:
        case ENETDOWN:
        case ENETUNREACH:
        case ETIMEDOUT:
        case EPIPE:
        case ENOTCONN:
        case EAGAIN:
                return true;
        default:
                return false;
        }
}

bool keys_rotation_id_valid(const char *id) {
        size_t n = id ? strlen(id) : 0;
        if (n == 0 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = id[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
                if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
                        return false;
        }
        return true;
}

void key_header_set_wrapping(key_header *h, const char *provider, const char *kek_id, const char *algorithm,
                             uint8_t *wrapped, size_t wrapped_len) {
        char ts[40];
        format_rfc3339(now_realtime(), ts);
        free(h->provider);
        free(h->kek_id);
        free(h->algorithm);
        free(h->wrapped_key);
        free(h->wrapped_at);
        h->provider = xstrdup(provider);
        h->kek_id = xstrdup(kek_id);
        h->algorithm = xstrdup(algorithm);
        h->wrapped_key = wrapped;
        h->wrapped_key_len = wrapped_len;
        h->wrapped_at = xstrdup(ts);
}

int keys_unwrap_failed(vt_error **err) {
        if (err) {
                vt_error_free(*err);
                *err = NULL;
        }
        return vt_error_set(err, EBADMSG, "%s", KEYS_UNWRAP_FAILED);
}
