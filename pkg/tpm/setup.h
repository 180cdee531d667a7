/* SPDX-License-Identifier: Apache-2.0 */
/* First-start provisioning with swtpm_setup: EK (RSA and ECC), EK and
 * platform certificates from the local CA, NV locked.
 *
 * Existing state is never overwritten or re-created: when the directory holds
 * a permall file, tpm_setup() returns -EEXIST without running anything and the
 * caller decides (normally: start swtpm on it).
 *
 * The local CA pitfall: swtpm_localca keeps its signing key in a directory
 * (Debian: /var/lib/swtpm-localca, from /etc/swtpm-localca.conf) and must be
 * able to write there as the user swtpm_setup runs as (--runas). Files left
 * there by an earlier run as root make `swtpm_setup --create-ek-cert` exit 1.
 * With `localca_dir` set, the library uses that directory instead (it writes
 * swtpm_setup.conf and swtpm-localca.conf into it and passes --config), and in
 * every case, with `runas` set, it first makes the directory and its files
 * belong to that user (tpm_localca_prepare). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "tpm/sandbox.h"
#include "tpm/state.h"

#define TPM_LOCALCA_DIR_DEFAULT "/var/lib/swtpm-localca"

typedef struct tpm_setup_opts {
        tpm_version version;
        const char *state_dir;        /* must exist; writable by runas */
        const uint8_t *key;           /* NULL: unencrypted state */
        size_t key_len;               /* 32 (aes-256-cbc) or 16 (aes-128-cbc) */
        const char *runas;            /* NULL: run as the caller */
        const char *localca_dir;      /* NULL: the system's (TPM_LOCALCA_DIR_DEFAULT) */
        bool no_certs;                /* only the EK, no EK/platform certificates */
        const char *swtpm_setup_path; /* NULL: "swtpm_setup" in PATH */
        const char *swtpm_path;       /* NULL: swtpm_setup's default ("swtpm" in PATH) */
        usec_t timeout;               /* 0: 60 s */
        const tpm_sandbox *sandbox;   /* non-NULL: swtpm_setup (and what it runs) in this sandbox, as
                                       * its uid (runas must be NULL); state_dir and localca_dir must be
                                       * bound into it at the same paths */
} tpm_setup_opts;

/* Provision state_dir. 0 on success (state files then mode 0600); -EEXIST when
 * state exists (nothing touched); other -errno with swtpm_setup's output tail
 * in the message (it holds no secret: the key travels through a pipe given as
 * --keyfile-fd, as hex, and swtpm gets it as --key fd=N). */
int tpm_setup(const tpm_setup_opts *o, vt_error **err);

/* Create the local CA directory (0750) when missing and make it and its files
 * belong to `user` (NULL: leave owners). With write_config, also write the
 * swtpm_setup.conf / swtpm-localca.conf that point swtpm_setup at it. */
int tpm_localca_prepare(const char *dir, const char *user, bool write_config, vt_error **err);
