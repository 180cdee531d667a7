/* SPDX-License-Identifier: Apache-2.0 */
/* A KMIP 1.x client over TLS (1.2 or later) with a client certificate, on
 * OpenSSL directly. One connection, opened on first use and reused; any I/O
 * or protocol error drops it, and the next call reconnects. Not thread-safe:
 * one client per thread, or a lock around it.
 *
 * Errors: the "key server unavailable" family (see keys_error_is_unavailable()
 * in provider.h) for name resolution, connect and I/O failures and timeouts
 * (-EHOSTUNREACH, -ECONNREFUSED, -ETIMEDOUT, -ECONNRESET, -ECONNABORTED);
 * -EKEYREJECTED when the server's certificate does not verify; for a failed
 * KMIP result, kmip_reason_to_errno() (-ENOKEY for an unknown id, -EACCES,
 * -EOPNOTSUPP, -EBADMSG, -EPROTO); -EBADMSG for a malformed reply. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "keys/kmip_msg.h"
#include "keys/secmem.h"

typedef struct kmip_config {
        const char *host;        /* name or address of the server */
        uint16_t port;           /* 5696 if 0 */
        const char *ca_file;     /* PEM bundle that signs the server's certificate */
        const char *cert_file;   /* client certificate (PEM); PyKMIP wants EKU clientAuth */
        const char *key_file;    /* its private key (PEM) */
        const char *server_name; /* name to verify in the server certificate; default host */
        usec_t timeout;          /* connect and per-I/O; 10 s if 0 */
} kmip_config;

typedef struct kmip_client kmip_client;

/* Load the CA, certificate and key (errors here are configuration errors,
 * not "unavailable"); does not connect. The config strings are copied. */
int kmip_client_new(const kmip_config *cfg, kmip_client **ret, vt_error **err);
void kmip_client_free(kmip_client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(kmip_client *, kmip_client_free)
#define _cleanup_kmip_client_ _cleanup_(kmip_client_freep)

/* Connect now (otherwise the first operation does). */
int kmip_client_connect(kmip_client *c, vt_error **err);
void kmip_client_disconnect(kmip_client *c);

/* Create an AES-256 symmetric key, usage Encrypt|Decrypt|WrapKey|UnwrapKey,
 * optionally with a Name attribute. The key is in the Pre-Active state. */
int kmip_create_aes256(kmip_client *c, const char *name, char **ret_uid, vt_error **err);
int kmip_activate(kmip_client *c, const char *uid, vt_error **err);
/* The first object whose Name is `name`; -ENOENT if none. */
int kmip_locate_by_name(kmip_client *c, const char *name, char **ret_uid, vt_error **err);
/* The Name attributes of object `uid` (up to max, copies), and how many. */
int kmip_get_names(kmip_client *c, const char *uid, char **names, size_t max, size_t *ret_n, vt_error **err);
/* The key bytes (AES-256, Raw) into secure memory. For tests and tools:
 * the agent's provider never fetches a KEK. */
int kmip_get_key(kmip_client *c, const char *uid, secmem **ret_key, vt_error **err);
/* Server-side AES-256-CBC with PKCS#5 padding and the caller's 16-byte IV:
 * the key never leaves the server. The ciphertext is not secret (heap); the
 * plaintext of Decrypt goes into secure memory. A wrong key typically makes
 * the server report a cryptographic (padding) failure: -EBADMSG. */
int kmip_encrypt_cbc(kmip_client *c, const char *uid, const uint8_t iv[16], const uint8_t *plain, size_t len,
                     uint8_t **ret_ct, size_t *ret_len, vt_error **err);
int kmip_decrypt_cbc(kmip_client *c, const char *uid, const uint8_t iv[16], const uint8_t *ct, size_t len,
                     secmem **ret_plain, vt_error **err);
/* Query Operations: the operations the server offers (up to max). */
int kmip_query_operations(kmip_client *c, uint32_t *ops, size_t max, size_t *ret_n, vt_error **err);
/* Revoke (reason: cessation of operation), then Destroy: for tests and cleanup. */
int kmip_revoke(kmip_client *c, const char *uid, vt_error **err);
int kmip_destroy(kmip_client *c, const char *uid, vt_error **err);
