/* SPDX-License-Identifier: Apache-2.0 */
/* KEK providers: who wraps and unwraps a VM's DEK.
 *
 *   "secret": a 256-bit KEK per VM namespace held in a Kubernetes Secret
 *             (agent/, not here); it wraps locally with keys_wrap_local().
 *   "kmip":   a KEK object on a KMIP server; wrapping by the server's
 *             Encrypt/Decrypt when offered (the KEK never leaves it),
 *             otherwise Get into secure memory and RFC 5649 locally.
 *
 * Error contract, so the caller can set the right status:
 *   keys_error_is_unavailable(r)  -> KeyProviderUnavailable, retry with backoff
 *   -EBADMSG (wrong KEK, altered wrapped key), -ENOKEY (no such KEK id)
 *                                 -> KeyUnwrapFailed, naming provider and kekId
 *   anything else                 -> configuration or protocol error
 * Messages name providers, key ids, hosts; never key material. */
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
        /* Wrap `dek` under kek_id; sets h's provider, kekId, algorithm,
         * wrappedKey and wrappedAt (replacing old values: a KEK rotation
         * re-wraps in place) and leaves dekGeneration/createdAt alone. */
        int (*wrap)(kek_provider *p, const char *kek_id, const secmem *dek, key_header *h, vt_error **err);
        /* Unwrap h's wrappedKey into secure memory. */
        int (*unwrap)(kek_provider *p, const key_header *h, secmem **ret_dek, vt_error **err);
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
static inline int kek_provider_wrap(kek_provider *p, const char *kek_id, const secmem *dek, key_header *h,
                                    vt_error **err) {
        return p->ops->wrap(p, kek_id, dek, h, err);
}
static inline int kek_provider_unwrap(kek_provider *p, const key_header *h, secmem **ret_dek, vt_error **err) {
        return p->ops->unwrap(p, h, ret_dek, err);
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

/* Set h's wrapping fields (provider, kekId, algorithm, wrappedKey, and
 * wrappedAt = now), freeing what was there. Takes ownership of wrapped. */
void key_header_set_wrapping(key_header *h, const char *provider, const char *kek_id, const char *algorithm,
                             uint8_t *wrapped, size_t wrapped_len);

/* ---- kmip ---- */
enum kmip_wrap_mode {
        KMIP_WRAP_AUTO,        /* server-side if Query lists Encrypt and Decrypt, else Get */
        KMIP_WRAP_SERVER_SIDE, /* Encrypt/Decrypt only; fail if not offered */
        KMIP_WRAP_GET,         /* Get + local RFC 5649 */
};

typedef struct kmip_provider_options {
        kmip_config server;
        const char *name_prefix; /* KEK object Name = prefix + scope; default "vtpm-agent-kek/" */
        enum kmip_wrap_mode mode;
} kmip_provider_options;

/* Does not connect: a key server that is down at start-up is "unavailable"
 * at the first wrap/unwrap, not a failure to start. */
int kek_provider_kmip_new(const kmip_provider_options *o, kek_provider **ret, vt_error **err);
/* For tests and status: whether wrapping is done server-side (after the
 * first successful contact; -EAGAIN before). */
int kek_provider_kmip_server_side(kek_provider *p);
