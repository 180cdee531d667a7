/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC status codes (grpc/doc/statuscodes.md) and the grpc-message trailer's
 * encoding (PROTOCOL-HTTP2.md: percent-encoded UTF-8). */
#pragma once

#include "base/buf.h"

typedef enum grpc_status {
        GRPC_STATUS_OK = 0,
        GRPC_STATUS_UNKNOWN = 2,
        GRPC_STATUS_INVALID_ARGUMENT = 3,
        GRPC_STATUS_DEADLINE_EXCEEDED = 4,
        GRPC_STATUS_PERMISSION_DENIED = 7,
        GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
        GRPC_STATUS_UNIMPLEMENTED = 12,
        GRPC_STATUS_INTERNAL = 13,
        GRPC_STATUS_UNAVAILABLE = 14,
} grpc_status;

/* The status a handler's negative errno means to a client: EAGAIN/EBUSY
 * UNAVAILABLE (worth a retry), EPERM/EACCES PERMISSION_DENIED, EINVAL and
 * EBADMSG INVALID_ARGUMENT, EMSGSIZE RESOURCE_EXHAUSTED, ETIMEDOUT
 * DEADLINE_EXCEEDED, anything else UNKNOWN. */
grpc_status grpc_status_from_errno(int r);

/* Append msg to out as a grpc-message value: bytes outside 0x20..0x7e and
 * '%' become %XX. At most max bytes of msg are taken, cut on a UTF-8
 * boundary (a header has to stay small). */
void grpc_message_encode(const char *msg, size_t max, vt_buf *out);
