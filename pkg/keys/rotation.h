/* SPDX-License-Identifier: Apache-2.0 */
/* Key rotation on a VM's state directory (the PVC root, as the agent sees it):
 *
 *  - KEK rotation: the DEK is unwrapped with the old KEK and re-wrapped under
 *    the scope's KEK version named by the request id; only the key header is
 *    rewritten (atomically), never the state. Safe while swtpm runs.
 *  - Re-encryption (DEK rotation, or the one-time encryption of state written
 *    before encryption was on): only while no swtpm uses the state. The new
 *    DEK is first written to the header as "next"; swtpm itself copies the
 *    state into the staging directory KEYROT_STAGING encrypted with it; a
 *    "complete" marker is written once everything there is synced; staged
 *    files are renamed over the live ones; "next" becomes current; staging
 *    goes. keyrot_recover() finishes (marker present) or undoes (absent) an
 *    interrupted one, so a crash leaves old key + old files or new key + new
 *    files, never a mix.
 *
 * Keys stay in secure memory; swtpm gets them through pipes only. The
 * KEKs are reached through a keymgr (access.h), whichever provider the
 * agent's policy chose. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "keys/access.h"
#include "keys/header.h"
#include "keys/secmem.h"
#include "tpm/sandbox.h"
#include "tpm/state.h"

#define KEYROT_STAGING ".vtpm-rekey"
#define KEYROT_COMPLETE "COMPLETE"

/* TEST ONLY: crash injection. When the environment variable VTPM_AGENT_FAULT
 * equals `point`, the process ends at once with _exit(99), as a crash would.
 * Points: kek-header-tmp (KEK rotation: new header synced as temp file, not
 * renamed), dek-next-written (header with "next" written), dek-staged (state
 * copied into staging, no marker), dek-complete (marker written, nothing
 * renamed), dek-renamed (live files replaced, header not promoted),
 * dek-promote-tmp (promoted header as temp file, not renamed).
 * Compiled only into the test build (the Makefile's ASan build defines
 * VTPM_TEST_HOOKS); the release daemon has neither the function nor the
 * variable's name, so no environment can make it crash on purpose. Used by
 * test/e2e/54-keys-rotation.t and 57-tenant-launcher.t. */
#ifdef VTPM_TEST_HOOKS
void keyrot_fault(const char *point);
#define KEYROT_FAULT(point) keyrot_fault(point)
#define KEYROT_FAULT_HOOK keyrot_fault
#else
#define KEYROT_FAULT(point) ((void)0)
#define KEYROT_FAULT_HOOK NULL
#endif

typedef enum keyrot_action {
        KEYROT_NOTHING,        /* no interrupted re-encryption */
        KEYROT_CLEAN_STAGING,  /* header final; leftover staging directory to remove */
        KEYROT_ROLL_FORWARD,   /* "next" + complete staging: finish it */
        KEYROT_ROLL_BACK,      /* "next" without complete staging: discard it */
} keyrot_action;

/* The recovery decision (pure, for tests). */
keyrot_action keyrot_decide(bool header_has_next, bool staging_exists, bool staging_complete);
const char *keyrot_action_name(keyrot_action a);

/* Finish or undo an interrupted re-encryption in state_dir. Returns the
 * action taken (KEYROT_NOTHING when there was none). */
int keyrot_recover(const char *state_dir, vt_error **err);
/* The same on the state directory's fd (opened no-follow). Every file
 * operation is relative to it and follows no symlink (base/fileat.h): the
 * volume's contents belong to the tenant. */
int keyrot_recover_at(int dfd, vt_error **err);

/* Re-wrap the header's DEK (and "next", if any) under the scope's KEK
 * version `request`. 1 when the header was rewritten, 0 when it already was
 * under that KEK, -ENOENT when there is no header (unencrypted state). The
 * KEK id of the scope's version in *ret_kek_id (may be NULL): one the agent
 * derived, never one read from the volume. */
int keyrot_rotate_kek(keymgr *km, const key_subject *subject, const char *state_dir, const char *request,
                      char **ret_kek_id, vt_error **err);
int keyrot_rotate_kek_at(keymgr *km, const key_subject *subject, int dfd, const char *request, char **ret_kek_id,
                         vt_error **err);

typedef struct keyrot_tpm {
        tpm_version version;
        const char *runas; /* the swtpm user (owns the state directory); NULL with a sandbox */
        const tpm_sandbox *sandbox; /* non-NULL: the copying swtpm runs there, as its uid (which then owns
                                     * the state); state_dir must be bound into it at the same path */
} keyrot_tpm;

/* Re-encrypt the state in state_dir under a new DEK (no swtpm may run on it):
 * request != NULL: DEK rotation of encrypted state (recorded as the new
 * DEK's dekRequest; 0 without doing anything when the current DEK already
 * came from this request); request == NULL: encrypt unencrypted state (no
 * header) for the first time, under the scope's current KEK. Returns 1 and
 * the new DEK when done. On failure the old state and header are left as
 * they were (rolled back). */
int keyrot_reencrypt(keymgr *km, const key_subject *subject, const char *state_dir, const char *request,
                     const keyrot_tpm *t, secmem **ret_dek, vt_error **err);
