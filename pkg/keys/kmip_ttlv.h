/* SPDX-License-Identifier: Apache-2.0 */
/* KMIP's TTLV encoding (Tag 3 bytes, Type 1, Length 4, Value padded to a
 * multiple of 8), only what the client uses.
 *
 * The encoder writes into a caller-provided buffer (secure memory when the
 * request carries key material) with a sticky error, so building a request
 * is a flat list of calls and one check at the end.
 *
 * The decoder never copies: ttlv_parse() validates a whole message up front
 * (lengths, nesting, padding, per-type sizes) and items point into the
 * caller's buffer; the accessors then walk validated structures and still
 * check every bound. Replies from a key server are untrusted input. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum ttlv_type {
        TTLV_STRUCTURE = 0x01,
        TTLV_INTEGER = 0x02,
        TTLV_LONG_INTEGER = 0x03,
        TTLV_BIG_INTEGER = 0x04,
        TTLV_ENUMERATION = 0x05,
        TTLV_BOOLEAN = 0x06,
        TTLV_TEXT_STRING = 0x07,
        TTLV_BYTE_STRING = 0x08,
        TTLV_DATE_TIME = 0x09,
        TTLV_INTERVAL = 0x0A,
};

#define TTLV_HEADER_SIZE 8
#define TTLV_MAX_DEPTH 16

/* ---- encoder ---- */
typedef struct ttlv_enc {
        uint8_t *buf;
        size_t cap, len;
        size_t open[TTLV_MAX_DEPTH]; /* offsets of open structures' headers */
        int depth;
        int error; /* first error, negative errno */
} ttlv_enc;

void ttlv_enc_init(ttlv_enc *e, uint8_t *buf, size_t cap);
void ttlv_begin(ttlv_enc *e, uint32_t tag);
void ttlv_end(ttlv_enc *e);
void ttlv_put_int(ttlv_enc *e, uint32_t tag, int32_t v);
void ttlv_put_long(ttlv_enc *e, uint32_t tag, int64_t v);
void ttlv_put_enum(ttlv_enc *e, uint32_t tag, uint32_t v);
void ttlv_put_bool(ttlv_enc *e, uint32_t tag, bool v);
void ttlv_put_text(ttlv_enc *e, uint32_t tag, const char *s);
void ttlv_put_bytes(ttlv_enc *e, uint32_t tag, const void *p, size_t n);
/* 0 and the encoded length, or -ENOBUFS (buffer too small) / -EINVAL
 * (unbalanced begin/end, oversize item). */
int ttlv_enc_finish(ttlv_enc *e, size_t *ret_len);

/* ---- decoder ---- */
typedef struct ttlv {
        uint32_t tag;
        uint8_t type;
        uint32_t len;       /* value length without padding */
        const uint8_t *val; /* into the parsed buffer */
} ttlv;

/* Validate buf[0..size) as exactly one TTLV item (with its padding) and
 * return it. -EBADMSG with a message naming the offset on any violation. */
int ttlv_parse(const uint8_t *buf, size_t size, ttlv *ret, vt_error **err);

/* Iterate a structure's children: start with *cursor = 0; returns 1 and the
 * next child, 0 at the end, -EBADMSG if the structure is malformed. */
int ttlv_next(const ttlv *parent, size_t *cursor, ttlv *ret);
/* First child with `tag`: 0, or -ENOENT / -EBADMSG (wrong type). */
int ttlv_find(const ttlv *parent, uint32_t tag, uint8_t type, ttlv *ret);
int ttlv_get_int(const ttlv *parent, uint32_t tag, int32_t *ret);
int ttlv_get_enum(const ttlv *parent, uint32_t tag, uint32_t *ret);
/* A text string as a new NUL-terminated copy; -EBADMSG if it holds NUL bytes
 * or exceeds max_len. */
int ttlv_get_text(const ttlv *parent, uint32_t tag, size_t max_len, char **ret);
/* A byte string, pointing into the buffer. */
int ttlv_get_bytes(const ttlv *parent, uint32_t tag, const uint8_t **ret, size_t *ret_len);

/* Read a 32-bit big-endian value / the 8-byte header's length field. */
uint32_t ttlv_be32(const uint8_t *p);
