/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's key policy. The per-VM state key is a random 256-bit DEK,
 * stored only wrapped by a KEK, in the key header (vtpm-key.json) beside the
 * TPM state on the PVC, so state and wrapped key travel together. What is
 * decided here (the mechanisms are in pkg/keys):
 *
 *  - which provider holds the KEKs (keys.provider): "secret" (default) one
 *    KEK per VM namespace in a Secret in the agent's own namespace (tenants
 *    of the VM namespace cannot read it), created on first use; "kmip" a KEK
 *    on a KMIP server; "broker" none on this node: the key broker holds them;
 *  - the KEK scope is the subject's namespace (key_subject, keys/subject.h);
 *  - what is refused: a header whose kekId is not one of the VM namespace's
 *    KEKs (checked by the provider before any unwrap; every unwrap failure
 *    is one message, KEYS_UNWRAP_FAILED); an unreadable header is never
 *    replaced; state from before encryption is left alone and reported.
 *
 * Errors for the caller's status: keymgr_unavailable(r) -> the provider is
 * unreachable (KeyProviderUnavailable, retry); -EBADMSG -> the key cannot be
 * unwrapped (KeyUnwrapFailed). Messages never quote the header or key
 * material. Thread-safe. keymgr_unwrap/_wrap/_kek_version and keymgr_free
 * are in keys/access.h. */
#pragma once

#include <stdbool.h>

#include "base/error.h"
#include "config.h"
#include "keys/access.h"
#include "keys/header.h"
#include "keys/secmem.h"
#include "kube/client.h"

int keymgr_new(kube_client *c, const agent_config *cfg, keymgr **ret, vt_error **err);

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
