/* SPDX-License-Identifier: Apache-2.0 */
/* KEK providers: who wraps and unwraps a VM's DEK.
 *
 *   "secret": a 256-bit KEK per VM namespace held in a Kubernetes Secret
 *             (provider_secret.h); it wraps locally with keys_wrap_local().
 *   "kmip":   a KEK object on a KMIP server; wrapping only by the server's
 *             Encrypt/Decrypt: the KEK never leaves it (no Get, no local
 *             unwrapping; a header asking for it is refused).
 *
 * A key header comes from the tenant's volume and may name any KEK. Each KEK
 * belongs to one scope (the VM's namespace): wrap and unwrap take the scope
 * and refuse a kekId that is not the scope's, before any unwrapping.
 *
 * Error contract, so the caller can set the right status:
 *   keys_error_is_unavailable(r)  -> KeyProviderUnavailable, retry with backoff
 *   -EBADMSG: every unwrap failure (another scope's KEK, unknown KEK,
 *             wrong KEK, altered wrapped key, client-side algorithm) with
 *             ONE message, KEYS_UNWRAP_FAILED: different answers for a bad
 *             padding and a bad check value would be an oracle
 *                                 -> KeyUnwrapFailed
 *   anything else                 -> configuration or protocol error
 * Messages name providers, hosts, and key ids the agent derived; never key
 * material, never a kekId read from a header. */
#pragma once

#include <stdbool.h>

#include "keys/header.h"
#include "keys/kmip_client.h"
#include "keys/secmem.h"

typedef struct kek_provider kek_provider;

typedef struct kek_provider_ops {
        const char *name; /* "secret" | "kmip": the header's provider field */
        /* The KEK for `scope` (e.g. the VM's namespace), created on first use. */
        int (*ensure_kek)(kek_provider *p, const char *scope, char **ret_kek_id, vt_error **err);
        /* KEK rotation: the KEK named `version` (the operator's rotation
         * request id, see keys_rotation_id_valid) for `scope`, created on first
         * use and from then on the one new VMs of the scope get. Idempotent:
         * every VM of the scope asking for the same version gets the same KEK.
         * Old KEKs are never deleted. */
        int (*ensure_kek_version)(kek_provider *p, const char *scope, const char *version, char **ret_kek_id,
                                  vt_error **err);
        /* Wrap `dek` under kek_id, which must be one of scope's KEKs; sets
         * h's provider, kekId, algorithm, wrappedKey and wrappedAt (replacing
         * old values: a KEK rotation re-wraps in place) and leaves
         * dekGeneration/createdAt alone. */
        int (*wrap)(kek_provider *p, const char *scope, const char *kek_id, const secmem *dek, key_header *h,
                    vt_error **err);
        /* Unwrap h's wrappedKey into secure memory, if h's kekId is one of
         * scope's KEKs (checked first). */
        int (*unwrap)(kek_provider *p, const char *scope, const key_header *h, secmem **ret_dek, vt_error **err);
        void (*free)(kek_provider *p);
} kek_provider_ops;

struct kek_provider {
        const kek_provider_ops *ops;
};

static inline int kek_provider_ensure_kek(kek_provider *p, const char *scope, char **ret_kek_id, vt_error **err) {
        return p->ops->ensure_kek(p, scope, ret_kek_id, err);
}
static inline int kek_provider_ensure_kek_version(kek_provider *p, const char *scope, const char *version,
                                                  char **ret_kek_id, vt_error **err) {
        return p->ops->ensure_kek_version(p, scope, version, ret_kek_id, err);
}
static inline int kek_provider_wrap(kek_provider *p, const char *scope, const char *kek_id, const secmem *dek,
                                    key_header *h, vt_error **err) {
        return p->ops->wrap(p, scope, kek_id, dek, h, err);
}
static inline int kek_provider_unwrap(kek_provider *p, const char *scope, const key_header *h, secmem **ret_dek,
                                      vt_error **err) {
        return p->ops->unwrap(p, scope, h, ret_dek, err);
}
static inline void kek_provider_free(kek_provider *p) {
        if (p)
                p->ops->free(p);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(kek_provider *, kek_provider_free)
#define _cleanup_kek_provider_ _cleanup_(kek_provider_freep)

/* A rotation request id (annotation value) usable as a KEK version: 1..63
 * of [A-Za-z0-9._-], starting with a letter or digit. */
bool keys_rotation_id_valid(const char *id);

/* Connection-level failures a retry may cure. */
bool keys_error_is_unavailable(int r);

#define KEYS_UNWRAP_FAILED                                                                                     \
        "the state key cannot be unwrapped with a KEK of this VM's namespace (the key header names another "   \
        "namespace's or an unknown KEK, or its wrapped key was altered)"
/* Replace *err with the one unwrap-failure message; returns -EBADMSG. */
int keys_unwrap_failed(vt_error **err);

/* Set h's wrapping fields (provider, kekId, algorithm, wrappedKey, and
 * wrappedAt = now), freeing what was there. Takes ownership of wrapped. */
void key_header_set_wrapping(key_header *h, const char *provider, const char *kek_id, const char *algorithm,
                             uint8_t *wrapped, size_t wrapped_len);

/* ---- kmip ---- */
typedef struct kmip_provider_options {
        kmip_config server;
        /* KEK object Name = prefix + scope, rotated ones prefix + scope + "@" +
         * version; default "vtpm-agent-kek/". A kekId (object uid) is the
         * scope's when the object carries such a Name on the server. */
        const char *name_prefix;
} kmip_provider_options;

/* Does not connect: a key server that is down at start-up is "unavailable"
 * at the first wrap/unwrap, not a failure to start. */
int kek_provider_kmip_new(const kmip_provider_options *o, kek_provider **ret, vt_error **err);
/* For tests and status: 1 once the server has been seen to offer
 * Encrypt/Decrypt (-EAGAIN before the first contact). A server without them
 * is refused (-EOPNOTSUPP): the KEK is never fetched. */
int kek_provider_kmip_server_side(kek_provider *p);
