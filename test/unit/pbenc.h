/* SPDX-License-Identifier: Apache-2.0 */
/* Test helper: the protobuf wire format written by hand, to make
 * ExecuteNodeHookRequest messages (pkg/grpc/nodehook.h) for the tests. */
#pragma once

#include <stdint.h>
#include <string.h>

#include "base/buf.h"

static inline void pb_varint(vt_buf *b, uint64_t v) {
        do {
                uint8_t c = (uint8_t)(v & 0x7f);
                v >>= 7;
                if (v)
                        c |= 0x80;
                vt_buf_append(b, &c, 1);
        } while (v);
}

static inline void pb_bytes(vt_buf *b, uint32_t field, const void *p, size_t n) {
        pb_varint(b, (uint64_t)field << 3 | 2);
        pb_varint(b, n);
        vt_buf_append(b, p, n);
}

/* hookPoint = 1, vmi = 2, node_context = 3 { node_name = 1 }; NULL: absent. */
static inline void pb_nodehook(vt_buf *b, const char *hook, const char *vmi, const char *node) {
        if (hook)
                pb_bytes(b, 1, hook, strlen(hook));
        if (vmi)
                pb_bytes(b, 2, vmi, strlen(vmi));
        if (node) {
                vt_buf nc = {0};
                pb_bytes(&nc, 1, node, strlen(node));
                pb_bytes(b, 3, nc.data, nc.len);
                vt_buf_free(&nc);
        }
}
