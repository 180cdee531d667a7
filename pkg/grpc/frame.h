/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC's length-prefixed message framing (PROTOCOL-HTTP2.md,
 * "Length-Prefixed-Message"): a 1-byte compressed flag, a 4-byte big-endian
 * length, then the message. We never advertise a grpc-accept-encoding, so a
 * compressed message is refused rather than guessed at. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define GRPC_FRAME_HEADER 5u
/* The largest message we take (grpc-go's default receive limit is 4 MiB; a
 * VMI with large cloud-init user data stays well under this). */
#define GRPC_MAX_MESSAGE (16u << 20)

/* Parse the message at the start of buf[0..len). On success *ret_msg points
 * into buf, *ret_msg_len is its length and *ret_consumed the bytes the frame
 * took (header included). Errors: -EBADMSG truncated (fewer than 5 bytes, or
 * the length runs past len) or compressed or a flag other than 0/1;
 * -EMSGSIZE a length over max. Messages never quote the input. */
int grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **ret_msg, size_t *ret_msg_len,
                     size_t *ret_consumed, vt_error **err);

/* The frame of msg[0..len), uncompressed, in a new allocation of len + 5
 * bytes (*ret). -EMSGSIZE when len does not fit in 32 bits. */
int grpc_frame_encode(const void *msg, size_t len, uint8_t **ret, size_t *ret_len);
