/* SPDX-License-Identifier: Apache-2.0 */
/* KubeVirt's own TPM state on a VM's state volume, as the swtpm its
 * launcher's libvirt runs leaves it (plaintext): under the volume's `swtpm`
 * sub-path, in libvirt's layout swtpm/<firmware uuid>/tpm2/tpm2-00.permall.
 * The agent takes it over once, the first time it serves the VM (the
 * state is encrypted where the agent keeps it, the volume's root), and then
 * puts the ciphertext where the plaintext was: a KubeVirt swtpm started on
 * that volume without the agent (its Plugin removed) then fails to load it
 * instead of starting a new, empty TPM.
 *
 * The volume is the tenant's: everything is read and written beneath one
 * directory fd with no symlinks followed (base/fileat.h), regular files
 * only, sizes capped. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define KUBEVIRT_STATE_DIR "swtpm"
#define KUBEVIRT_STATE_MAX (4u << 20)

typedef struct kubevirt_state {
        char uuid[37];     /* the firmware uuid: the directory under swtpm/ */
        uint8_t sha256[32]; /* of the file as found */
        char *data;        /* the file (tpm2-00.permall) */
        size_t size;
} kubevirt_state;

void kubevirt_state_done(kubevirt_state *s);

/* The one KubeVirt TPM 2.0 state beneath dfd (the volume's root). 1: found,
 * *ret filled; 0: none; -EEXIST: states of more than one firmware uuid (the
 * message names them; which one the VM uses is not the agent's guess);
 * other -errno: a file there that is not a plain file, too big, unreadable. */
int kubevirt_state_find(int dfd, kubevirt_state *ret, vt_error **err);

/* A firmware uuid as libvirt names its directory (36 hex digits and dashes). */
bool kubevirt_state_uuid_valid(const char *s);

/* For a VM whose TPM state the agent made: put `data` (a note, not a TPM
 * state) where KubeVirt's swtpm would look for the state of firmware uuid
 * `uuid`, so that a KubeVirt swtpm started on the volume without the agent
 * fails to load it instead of making a new, empty TPM. Only where KubeVirt
 * has its `swtpm` directory and no state of that uuid yet; the directories
 * made get that directory's owner and group (group-writable, as KubeVirt's
 * non-root launcher needs). 1: written; 0: nothing to do. */
int kubevirt_state_guard(int dfd, const char *uuid, const void *data, size_t size, vt_error **err);

/* Replace swtpm/<uuid>/tpm2/tpm2-00.permall beneath dfd with data, only if
 * it still has the digest `was_sha256` (it is what was taken over, not a
 * state KubeVirt wrote since). 1: replaced; 0: it changed or is gone, left
 * as it is. */
int kubevirt_state_replace(int dfd, const char *uuid, const uint8_t was_sha256[32], const void *data, size_t size,
                           vt_error **err);
