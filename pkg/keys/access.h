/* SPDX-License-Identifier: Apache-2.0 */
/* keymgr: how this process reaches the KEKs of a key subject. Either it
 * holds them itself through a KEK provider ("secret", "kmip") or it asks the
 * key broker, which holds them ("broker"). Which one is the agent's policy
 * (keymgr_new in agent/keymgr.c); the mechanisms built on the three calls
 * here (rotation.h, the broker's server) do not care.
 *
 * Errors are the provider's or the broker client's (provider.h,
 * broker_client.h). Thread-safe: provider calls are made one at a time (the
 * KMIP client is not thread-safe); broker requests are independent. */
#pragma once

#include "base/error.h"
#include "keys/broker_client.h"
#include "keys/header.h"
#include "keys/provider.h"
#include "keys/secmem.h"
#include "keys/subject.h"

typedef struct keymgr keymgr;

/* Take ownership of p (this process holds the KEKs) or b (the broker
 * does). */
keymgr *keymgr_new_provider(kek_provider *p);
keymgr *keymgr_new_broker(broker_client *b);
void keymgr_free(keymgr *km);
DEFINE_TRIVIAL_CLEANUP_FUNC(keymgr *, keymgr_free)

/* Unwrap one key entry of a header (the current one, or h->next), if its
 * KEK is one of the subject's namespace's. */
int keymgr_unwrap(keymgr *km, const key_subject *subject, const key_header *entry, secmem **ret_dek, vt_error **err);
/* Wrap dek into `entry` (its wrapping fields are replaced): under kek_id
 * (which must be one of the scope's KEKs), or when NULL under the scope's
 * KEK version `version`, or when that is NULL too under the scope's current
 * KEK (created on first use). */
int keymgr_wrap(keymgr *km, const key_subject *subject, const char *kek_id, const char *version, const secmem *dek,
                key_header *entry, vt_error **err);
/* The KEK id of the scope's version `version` (created on first use). */
int keymgr_kek_version(keymgr *km, const key_subject *subject, const char *version, char **ret_kek_id, vt_error **err);
