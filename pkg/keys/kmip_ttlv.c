/* SPDX-License-Identifier: Apache-2.0 */
#include "kmip_ttlv.h"

#include <string.h>

#include "base/alloc.h"

uint32_t ttlv_be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be(uint8_t *p, uint64_t v, int n) {
        for (int i = n - 1; i >= 0; i--) {
                p[i] = (uint8_t)v;
                v >>= 8;
        }
}

static size_t pad8(size_t n) {
        return (n + 7) & ~(size_t)7;
}

/* ---- encoder ---- */

void ttlv_enc_init(ttlv_enc *e, uint8_t *buf, size_t cap) {
        *e = (ttlv_enc){.buf = buf, .cap = cap};
}

/* Append a header and the value (zero-padded); returns the header offset. */
static size_t put_item(ttlv_enc *e, uint32_t tag, uint8_t type, const void *val, size_t n) {
        if (e->error)
                return 0;
        if (n > UINT32_MAX - 8) {
                e->error = -EINVAL;
                return 0;
        }
        size_t need = TTLV_HEADER_SIZE + pad8(n);
        if (e->cap - e->len < need) {
                e->error = -ENOBUFS;
                return 0;
        }
        size_t at = e->len;
        uint8_t *p = e->buf + at;
        put_be(p, tag, 3);
        p[3] = type;
        put_be(p + 4, n, 4);
        if (n && val)
                memcpy(p + 8, val, n);
        memset(p + 8 + n, 0, pad8(n) - n);
        e->len += need;
        return at;
}

void ttlv_begin(ttlv_enc *e, uint32_t tag) {
        if (e->error)
                return;
        if (e->depth >= TTLV_MAX_DEPTH) {
                e->error = -EINVAL;
                return;
        }
        size_t at = put_item(e, tag, TTLV_STRUCTURE, NULL, 0);
        if (!e->error)
                e->open[e->depth++] = at;
}

void ttlv_end(ttlv_enc *e) {
        if (e->error)
                return;
        if (e->depth <= 0) {
                e->error = -EINVAL;
                return;
        }
        size_t at = e->open[--e->depth];
        size_t n = e->len - at - TTLV_HEADER_SIZE;
        if (n > UINT32_MAX) {
                e->error = -EINVAL;
                return;
        }
        put_be(e->buf + at + 4, n, 4);
}

void ttlv_put_int(ttlv_enc *e, uint32_t tag, int32_t v) {
        uint8_t b[4];
        put_be(b, (uint32_t)v, 4);
        put_item(e, tag, TTLV_INTEGER, b, 4);
}

void ttlv_put_long(ttlv_enc *e, uint32_t tag, int64_t v) {
        uint8_t b[8];
        put_be(b, (uint64_t)v, 8);
        put_item(e, tag, TTLV_LONG_INTEGER, b, 8);
}

void ttlv_put_enum(ttlv_enc *e, uint32_t tag, uint32_t v) {
        uint8_t b[4];
        put_be(b, v, 4);
        put_item(e, tag, TTLV_ENUMERATION, b, 4);
}

void ttlv_put_bool(ttlv_enc *e, uint32_t tag, bool v) {
        uint8_t b[8] = {0};
        b[7] = v ? 1 : 0;
        put_item(e, tag, TTLV_BOOLEAN, b, 8);
}

void ttlv_put_text(ttlv_enc *e, uint32_t tag, const char *s) {
        put_item(e, tag, TTLV_TEXT_STRING, s, strlen(s));
}

void ttlv_put_bytes(ttlv_enc *e, uint32_t tag, const void *p, size_t n) {
        put_item(e, tag, TTLV_BYTE_STRING, p, n);
}

int ttlv_enc_finish(ttlv_enc *e, size_t *ret_len) {
        if (e->error)
                return e->error;
        if (e->depth != 0)
                return -EINVAL;
        if (ret_len)
                *ret_len = e->len;
        return 0;
}

/* ---- decoder ---- */

/* Decode one item header at buf[off..size): checks that the value and its
 * padding fit, but not the value itself. */
static int read_item(const uint8_t *buf, size_t size, size_t off, ttlv *ret, size_t *ret_next) {
        if (size - off < TTLV_HEADER_SIZE)
                return -EBADMSG;
        const uint8_t *p = buf + off;
        ttlv t = {
                .tag = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2],
                .type = p[3],
                .len = ttlv_be32(p + 4),
                .val = p + 8,
        };
        size_t avail = size - off - TTLV_HEADER_SIZE;
        if (t.len > avail || pad8(t.len) > avail)
                return -EBADMSG;
        *ret = t;
        *ret_next = off + TTLV_HEADER_SIZE + pad8(t.len);
        return 0;
}

static int validate(const ttlv *t, size_t base_off, int depth, vt_error **err);

static int validate_children(const ttlv *t, size_t base_off, int depth, vt_error **err) {
        size_t off = 0;
        while (off < t->len) {
                ttlv c;
                size_t next;
                if (read_item(t->val, t->len, off, &c, &next) < 0)
                        return vt_error_set(err, EBADMSG, "KMIP reply: item at offset %zu overruns its structure",
                                            base_off + off);
                int r = validate(&c, base_off + off, depth + 1, err);
                if (r < 0)
                        return r;
                off = next;
        }
        return 0;
}

static int validate(const ttlv *t, size_t off, int depth, vt_error **err) {
        if (depth >= TTLV_MAX_DEPTH)
                return vt_error_set(err, EBADMSG, "KMIP reply: nesting deeper than %d at offset %zu",
                                    TTLV_MAX_DEPTH, off);
        /* KMIP tags are 0x42xxxx; 0x54xxxx are the extension range. */
        if ((t->tag >> 16) != 0x42 && (t->tag >> 16) != 0x54)
                return vt_error_set(err, EBADMSG, "KMIP reply: bad tag 0x%06x at offset %zu", t->tag, off);
        /* Padding must be zero (the spec says so, and it keeps one encoding per message). */
        for (size_t i = t->len; i < pad8(t->len); i++)
                if (t->val[i] != 0)
                        return vt_error_set(err, EBADMSG, "KMIP reply: non-zero padding at offset %zu", off);
        switch (t->type) {
        case TTLV_STRUCTURE:
                if (t->len % 8 != 0)
                        return vt_error_set(err, EBADMSG, "KMIP reply: structure length %u at offset %zu",
                                            t->len, off);
                return validate_children(t, off + TTLV_HEADER_SIZE, depth, err);
        case TTLV_INTEGER:
        case TTLV_ENUMERATION:
        case TTLV_INTERVAL:
                if (t->len != 4)
                        break;
                return 0;
        case TTLV_LONG_INTEGER:
        case TTLV_DATE_TIME:
                if (t->len != 8)
                        break;
                return 0;
        case TTLV_BOOLEAN:
                if (t->len != 8)
                        break;
                for (int i = 0; i < 7; i++)
                        if (t->val[i] != 0)
                                return vt_error_set(err, EBADMSG, "KMIP reply: bad boolean at offset %zu", off);
                if (t->val[7] > 1)
                        return vt_error_set(err, EBADMSG, "KMIP reply: bad boolean at offset %zu", off);
                return 0;
        case TTLV_BIG_INTEGER:
                if (t->len == 0 || t->len % 8 != 0)
                        break;
                return 0;
        case TTLV_TEXT_STRING:
        case TTLV_BYTE_STRING:
                return 0;
        default:
                return vt_error_set(err, EBADMSG, "KMIP reply: unknown item type 0x%02x at offset %zu", t->type,
                                    off);
        }
        return vt_error_set(err, EBADMSG, "KMIP reply: length %u is wrong for type 0x%02x at offset %zu",
                            t->len, t->type, off);
}

int ttlv_parse(const uint8_t *buf, size_t size, ttlv *ret, vt_error **err) {
        assert_return(buf && ret, -EINVAL);
        ttlv t;
        size_t next;
        if (read_item(buf, size, 0, &t, &next) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: truncated (%zu bytes)", size);
        if (next != size)
                return vt_error_set(err, EBADMSG, "KMIP reply: %zu trailing bytes", size - next);
        int r = validate(&t, 0, 0, err);
        if (r < 0)
                return r;
        *ret = t;
        return 0;
}

int ttlv_next(const ttlv *parent, size_t *cursor, ttlv *ret) {
        assert_return(parent && cursor && ret, -EINVAL);
        if (parent->type != TTLV_STRUCTURE)
                return -EBADMSG;
        if (*cursor >= parent->len)
                return 0;
        size_t next;
        if (read_item(parent->val, parent->len, *cursor, ret, &next) < 0)
                return -EBADMSG;
        *cursor = next;
        return 1;
}

int ttlv_find(const ttlv *parent, uint32_t tag, uint8_t type, ttlv *ret) {
        size_t cur = 0;
        ttlv c;
        int r;
        while ((r = ttlv_next(parent, &cur, &c)) > 0) {
                if (c.tag != tag)
                        continue;
                if (c.type != type)
                        return -EBADMSG;
                if (ret)
                        *ret = c;
                return 0;
        }
        return r < 0 ? r : -ENOENT;
}

int ttlv_get_int(const ttlv *parent, uint32_t tag, int32_t *ret) {
        ttlv c;
        int r = ttlv_find(parent, tag, TTLV_INTEGER, &c);
        if (r < 0)
                return r;
        if (c.len != 4)
                return -EBADMSG;
        *ret = (int32_t)ttlv_be32(c.val);
        return 0;
}

int ttlv_get_enum(const ttlv *parent, uint32_t tag, uint32_t *ret) {
        ttlv c;
        int r = ttlv_find(parent, tag, TTLV_ENUMERATION, &c);
        if (r < 0)
                return r;
        if (c.len != 4)
                return -EBADMSG;
        *ret = ttlv_be32(c.val);
        return 0;
}

int ttlv_get_text(const ttlv *parent, uint32_t tag, size_t max_len, char **ret) {
        ttlv c;
        int r = ttlv_find(parent, tag, TTLV_TEXT_STRING, &c);
        if (r < 0)
                return r;
        if (c.len > max_len || memchr(c.val, 0, c.len))
                return -EBADMSG;
        *ret = xstrndup((const char *)c.val, c.len);
        return 0;
}

int ttlv_get_bytes(const ttlv *parent, uint32_t tag, const uint8_t **ret, size_t *ret_len) {
        ttlv c;
        int r = ttlv_find(parent, tag, TTLV_BYTE_STRING, &c);
        if (r < 0)
                return r;
        *ret = c.val;
        *ret_len = c.len;
        return 0;
}
