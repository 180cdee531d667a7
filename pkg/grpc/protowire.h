/* SPDX-License-Identifier: Apache-2.0 */
/* Reading the protobuf wire format (protobuf.dev/programming-guides/encoding):
 * just enough for a hand-written decoder of a small, untrusted message,
 * without generated code. Every length is checked against the end of the
 * input before it is used; nothing is allocated. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum {
        PW_VARINT = 0,
        PW_I64 = 1,
        PW_LEN = 2,
        PW_SGROUP = 3,
        PW_EGROUP = 4,
        PW_I32 = 5,
};

typedef struct pw_reader {
        const uint8_t *p, *end;
} pw_reader;

typedef struct pw_field {
        uint32_t number;    /* 1 .. 2^29-1 */
        unsigned wire_type; /* PW_VARINT, PW_I64, PW_LEN or PW_I32 */
        uint64_t varint;    /* PW_VARINT's value; PW_I64/PW_I32's bits */
        const uint8_t *data; /* PW_LEN: the bytes, inside the reader's input */
        size_t len;
} pw_field;

static inline pw_reader pw_reader_init(const uint8_t *p, size_t n) {
        return (pw_reader){p, p + n};
}

/* A varint of at most 10 bytes whose value fits in 64 bits, from *p (not
 * past end); *p is advanced. -EBADMSG when truncated, too long or overflowing. */
int pw_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret);

/* The next field: 1 with *f filled, 0 at the end of the input, -EBADMSG on
 * malformed input (a bad tag, field number 0, a truncated value, a length past
 * the end, a group (wire types 3 and 4, deprecated and never in proto3) or
 * wire types 6 and 7). `what` names the message in errors. */
int pw_next(pw_reader *r, pw_field *f, const char *what, vt_error **err);

/* proto3 `string`: valid UTF-8 (no overlong forms, surrogates or code
 * points past U+10FFFF). NUL is valid UTF-8; callers that keep C strings
 * refuse it themselves. */
bool pw_utf8_valid(const uint8_t *p, size_t n);
