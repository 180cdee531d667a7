/* SPDX-License-Identifier: Apache-2.0 */
#include "frame.h"

#include <inttypes.h>
#include <string.h>

#include "base/alloc.h"

int grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **ret_msg, size_t *ret_msg_len,
                     size_t *ret_consumed, vt_error **err) {
        assert_return(buf || len == 0, -EINVAL);
        if (len < GRPC_FRAME_HEADER)
                return vt_error_set(err, EBADMSG, "truncated gRPC message: %zu of the 5 header bytes", len);
        if (buf[0] == 1)
                return vt_error_set(err, EBADMSG,
                                    "compressed gRPC message, but this server accepts no compression");
        if (buf[0] != 0)
                return vt_error_set(err, EBADMSG, "invalid gRPC message flag %u", buf[0]);
        uint32_t n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
        if (n > max)
                return vt_error_set(err, EMSGSIZE, "gRPC message of %" PRIu32 " bytes is over the limit of %zu",
                                    n, max);
        if (n > len - GRPC_FRAME_HEADER)
                return vt_error_set(err, EBADMSG, "truncated gRPC message: %zu of %" PRIu32 " bytes",
                                    len - GRPC_FRAME_HEADER, n);
        if (ret_msg)
                *ret_msg = buf + GRPC_FRAME_HEADER;
        if (ret_msg_len)
                *ret_msg_len = n;
        if (ret_consumed)
                *ret_consumed = GRPC_FRAME_HEADER + (size_t)n;
        return 0;
}

int grpc_frame_encode(const void *msg, size_t len, uint8_t **ret, size_t *ret_len) {
        assert_return((msg || len == 0) && ret && ret_len, -EINVAL);
        if (len > UINT32_MAX)
                return -EMSGSIZE;
        uint8_t *f = xmalloc(GRPC_FRAME_HEADER + len);
        f[0] = 0;
        f[1] = (uint8_t)(len >> 24);
        f[2] = (uint8_t)(len >> 16);
        f[3] = (uint8_t)(len >> 8);
        f[4] = (uint8_t)len;
        if (len)
                memcpy(f + GRPC_FRAME_HEADER, msg, len);
        *ret = f;
        *ret_len = GRPC_FRAME_HEADER + len;
        return 0;
}
