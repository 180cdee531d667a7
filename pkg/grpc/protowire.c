/* SPDX-License-Identifier: Apache-2.0 */
#include "protowire.h"

#include <inttypes.h>

int pw_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret) {
        uint64_t v = 0;
        const uint8_t *q = *p;
        for (unsigned i = 0; i < 10; i++) {
                if (q >= end)
                        return -EBADMSG;
                uint8_t b = *q++;
                /* The tenth byte holds bit 63 only. */
                if (i == 9 && b > 1)
                        return -EBADMSG;
                v |= (uint64_t)(b & 0x7f) << (7 * i);
                if (!(b & 0x80)) {
                        *p = q;
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

static int fixed(pw_reader *r, size_t n, uint64_t *ret) {
        if ((size_t)(r->end - r->p) < n)
                return -EBADMSG;
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) /* little-endian */
                v |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        *ret = v;
        return 0;
}

int pw_next(pw_reader *r, pw_field *f, const char *what, vt_error **err) {
        if (r->p >= r->end)
                return 0;
        uint64_t tag = 0;
        if (pw_varint(&r->p, r->end, &tag) < 0)
                return vt_error_set(err, EBADMSG, "malformed %s: bad field tag", what);
        uint64_t number = tag >> 3;
        if (number == 0 || number > (1u << 29) - 1)
                return vt_error_set(err, EBADMSG, "malformed %s: invalid field number %" PRIu64, what, number);
        *f = (pw_field){.number = (uint32_t)number, .wire_type = (unsigned)(tag & 7)};
        switch (f->wire_type) {
        case PW_VARINT:
                if (pw_varint(&r->p, r->end, &f->varint) < 0)
                        return vt_error_set(err, EBADMSG, "malformed %s: bad varint in field %" PRIu32, what,
                                            f->number);
                return 1;
        case PW_I64:
        case PW_I32:
                if (fixed(r, f->wire_type == PW_I64 ? 8 : 4, &f->varint) < 0)
                        return vt_error_set(err, EBADMSG, "malformed %s: field %" PRIu32 " is truncated", what,
                                            f->number);
                return 1;
        case PW_LEN: {
                uint64_t n = 0;
                if (pw_varint(&r->p, r->end, &n) < 0)
                        return vt_error_set(err, EBADMSG, "malformed %s: bad length of field %" PRIu32, what,
                                            f->number);
                if (n > (uint64_t)(r->end - r->p))
                        return vt_error_set(err, EBADMSG, "malformed %s: field %" PRIu32 " runs past the end",
                                            what, f->number);
                f->data = r->p;
                f->len = (size_t)n;
                r->p += n;
                return 1;
        }
        case PW_SGROUP:
        case PW_EGROUP:
                return vt_error_set(err, EBADMSG, "malformed %s: group in field %" PRIu32 " (not proto3)", what,
                                    f->number);
        default:
                return vt_error_set(err, EBADMSG, "malformed %s: invalid wire type %u in field %" PRIu32, what,
                                    f->wire_type, f->number);
        }
}

bool pw_utf8_valid(const uint8_t *p, size_t n) {
        size_t i = 0;
        while (i < n) {
                uint8_t c = p[i];
                if (c < 0x80) {
                        i++;
                        continue;
                }
                size_t k;
                uint32_t cp, min;
                if ((c & 0xe0) == 0xc0)
                        k = 1, cp = c & 0x1f, min = 0x80;
                else if ((c & 0xf0) == 0xe0)
                        k = 2, cp = c & 0x0f, min = 0x800;
                else if ((c & 0xf8) == 0xf0)
                        k = 3, cp = c & 0x07, min = 0x10000;
                else
                        return false;
                if (n - i - 1 < k)
                        return false;
                for (size_t j = 1; j <= k; j++) {
                        if ((p[i + j] & 0xc0) != 0x80)
                                return false;
                        cp = cp << 6 | (p[i + j] & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += k + 1;
        }
        return true;
}
