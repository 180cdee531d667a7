/* SPDX-License-Identifier: Apache-2.0 */
#include "status.h"

#include <errno.h>
#include <string.h>

grpc_status grpc_status_from_errno(int r) {
        switch (r < 0 ? -r : r) {
        case EAGAIN:
        case EBUSY:
                return GRPC_STATUS_UNAVAILABLE;
        case EPERM:
        case EACCES:
                return GRPC_STATUS_PERMISSION_DENIED;
        case EINVAL:
        case EBADMSG:
                return GRPC_STATUS_INVALID_ARGUMENT;
        case EMSGSIZE:
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        case ETIMEDOUT:
                return GRPC_STATUS_DEADLINE_EXCEEDED;
        default:
                return GRPC_STATUS_UNKNOWN;
        }
}

void grpc_message_encode(const char *msg, size_t max, vt_buf *out) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(msg);
        if (n > max) {
                n = max;
                /* Do not end inside a multi-byte sequence. */
                while (n > 0 && ((unsigned char)msg[n] & 0xc0) == 0x80)
                        n--;
        }
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)msg[i];
                if (c >= 0x20 && c <= 0x7e && c != '%') {
                        vt_buf_append(out, &c, 1);
                } else {
                        char e[3] = {'%', hex[c >> 4], hex[c & 15]};
                        vt_buf_append(out, e, 3);
                }
        }
}
