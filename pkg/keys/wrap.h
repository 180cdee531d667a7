/* SPDX-License-Identifier: Apache-2.0 */
/* AES key wrap with padding (RFC 5649), the "AES-256-KWP" algorithm of the
 * key header: how a DEK is wrapped by a KEK held locally in secure memory
 * (the Secret provider's KEK, or a KMIP KEK fetched with Get when the server
 * offers no Encrypt/Decrypt). The integrity check value of RFC 5649 makes a
 * wrong KEK or a modified blob fail cleanly with -EBADMSG. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "keys/secmem.h"

#define KEYS_ALG_AES256_KWP "AES-256-KWP"

/* Wrapped size for a key of n bytes: the input padded to 8, plus 8. */
#define KWP_WRAPPED_SIZE(n) ((((n) + 7) / 8) * 8 + 8)

/* RFC 5649 with an AES-128/192/256 KEK chosen by kek_len (16/24/32 bytes).
 * The product uses 32-byte KEKs only; the other sizes exist so the RFC's own
 * test vectors (192-bit KEK) can be checked. Key length 1..4096 bytes.
 * *ret_wrapped is ordinary heap memory (a wrapped key is not secret). */
int kwp_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *key, size_t key_len,
             uint8_t **ret_wrapped, size_t *ret_len, vt_error **err);
/* Unwrap into secure memory. -EBADMSG when the KEK is wrong or the blob was
 * altered (integrity check failed), -EINVAL for a malformed length. */
int kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *wrapped, size_t wrapped_len,
               secmem **ret_key, vt_error **err);

/* The product's form: a 256-bit KEK in secure memory. */
int keys_wrap_local(const secmem *kek, const secmem *dek, uint8_t **ret_wrapped, size_t *ret_len,
                    vt_error **err);
int keys_unwrap_local(const secmem *kek, const uint8_t *wrapped, size_t wrapped_len, secmem **ret_dek,
                      vt_error **err);
