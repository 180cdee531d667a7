/* SPDX-License-Identifier: Apache-2.0 */
/* The per-VM state key: a random 256-bit DEK, stored only wrapped by a KEK
 * from the configured provider, in the key header (vtpm-key.json) beside
 * the TPM state on the PVC, so state and wrapped key travel together.
 *
 * Providers: "secret" (default) keeps one KEK per VM namespace in a Secret
 * in the agent's own namespace (tenants of the VM namespace cannot read it),
 * created on first use; "kmip" keeps the KEK on a KMIP server.
 *
 * The key header is tenant data: its kekId is used only when it is one of
 * the VM namespace's KEKs (checked by the provider before any unwrap), and
 * every unwrap failure is one message (KEYS_UNWRAP_FAILED).
 *
 * Errors for the caller's status: keymgr_unavailable(r) -> the provider is
 * unreachable (KeyProviderUnavailable, retry); -EBADMSG -> the key cannot be
 * unwrapped (KeyUnwrapFailed). Messages never quote the header or key
 * material. Thread-safe. */
#pragma once

#include <stdbool.h>

#include "base/error.h"
#include "config.h"
#include "keys/header.h"
#include "keys/secmem.h"
#include "kube/client.h"

typedef struct keymgr keymgr;

/* Whose key: the VM (its namespace is the KEK scope: one KEK per namespace)
 * and the launcher pod on this node that runs it. The "secret" and "kmip"
 * providers use only the namespace; the "broker" provider sends all three,
 * and the key broker gives the key only while that launcher runs on the
 * asking node. */
typedef struct key_subject {
        const char *ns;
        const char *vm;
        const char *launcher_uid;
} key_subject;

int keymgr_new(kube_client *c, const agent_config *cfg, keymgr **ret, vt_error **err);
void keymgr_free(keymgr *km);
DEFINE_TRIVIAL_CLEANUP_FUNC(keymgr *, keymgr_free)

typedef struct state_key_info {
        bool created;        /* a new DEK was made (first boot) */
        bool unencrypted;    /* existing state from before encryption: no DEK */
        char *provider;      /* for status: "secret" / "kmip" */
        char *kek_id;
} state_key_info;
void state_key_info_done(state_key_info *i);

/* The DEK for the TPM state in `state_dir` (a path the agent can write):
 *  - a key header exists: unwrap it;
 *  - neither header nor state: make a DEK, wrap it, write the header
 *    (atomically) before any state exists, and return it;
 *  - state without header (written before encryption was on): *ret_dek is
 *    NULL and info->unencrypted is set; the state is left as it is.
 * The KEK is the subject's namespace's. */
int keymgr_state_key(keymgr *km, const key_subject *subject, const char *state_dir, secmem **ret_dek, state_key_info *info,
                     vt_error **err);
/* The same on the state directory's fd (opened no-follow): the header is
 * read and written beneath it only (base/fileat.h). */
int keymgr_state_key_at(keymgr *km, const key_subject *subject, int dfd, secmem **ret_dek, state_key_info *info,
                        vt_error **err);
bool keymgr_unavailable(int r);

/* Building blocks for rotation (agent/key_rotation.c); each one provider
 * call under the lock. */
/* Unwrap one key entry of a header (the current one, or h->next), if its
 * KEK is one of the subject's namespace's. */
int keymgr_unwrap(keymgr *km, const key_subject *subject, const key_header *entry, secmem **ret_dek, vt_error **err);
/* Wrap dek into `entry` (its wrapping fields are replaced): under kek_id, or
 * (which must be one of scope's KEKs), or when NULL under the scope's KEK
 * version `version`, or when that is NULL
 * too under the scope's current KEK (created on first use). */
int keymgr_wrap(keymgr *km, const key_subject *subject, const char *kek_id, const char *version, const secmem *dek,
                key_header *entry, vt_error **err);
/* The KEK id of the scope's version `version` (created on first use). */
int keymgr_kek_version(keymgr *km, const key_subject *subject, const char *version, char **ret_kek_id, vt_error **err);
