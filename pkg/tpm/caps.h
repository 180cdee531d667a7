/* SPDX-License-Identifier: Apache-2.0 */
/* What the installed swtpm and swtpm_setup can do, from their
 * `--print-capabilities` JSON:
 *   { "type": "swtpm", "features": [ "tpm-1.2", "tpm-2.0", ... ], "version": "0.7.1" }
 * The node controller labels the node from this and refuses what is missing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "base/timeutil.h"

/* One tool's answer. */
typedef struct tpm_features {
        char *type;     /* "swtpm" / "swtpm_setup" */
        char *version;  /* "0.7.1"; NULL when the tool did not say (older releases) */
        char **names;   /* feature strings, NULL-terminated */
        size_t n_names;
} tpm_features;

void tpm_features_done(tpm_features *f);
bool tpm_features_has(const tpm_features *f, const char *name);

/* Parse one `--print-capabilities` output (untrusted bytes: any length, no
 * NUL needed). want_type: the "type" value required (NULL: any). Garbage,
 * wrong shapes and a wrong type are -EBADMSG with a message saying what was
 * wrong. */
int tpm_features_parse(const char *data, size_t len, const char *want_type, tpm_features *ret, vt_error **err);

typedef struct tpm_caps {
        tpm_features swtpm, setup;
        /* swtpm socket */
        bool tpm12, tpm2;
        bool key_fd;         /* cmdarg-key-fd: --key fd= */
        bool pwd_fd;         /* cmdarg-pwd-fd */
        bool print_states;   /* cmdarg-print-states */
        bool seccomp;        /* cmdarg-seccomp */
        bool flags_startup;  /* flags-opt-startup */
        bool migration;      /* cmdarg-migration (0.8+; absent on 0.7.1) */
        bool lock_storage;   /* ctrl-lock-storage / CMD_LOCK_STORAGE (0.8+) */
        /* swtpm_setup */
        bool setup_tpm12, setup_tpm2;
        bool setup_keyfile_fd;     /* cmdarg-keyfile-fd: --keyfile-fd */
        bool setup_pwdfile_fd;     /* cmdarg-pwdfile-fd */
        bool setup_create_config;  /* cmdarg-create-config-files */
        bool setup_reconfigure_pcr;/* cmdarg-reconfigure-pcr-banks */
        bool setup_rsa3072;        /* tpm2-rsa-keysize-3072 */
} tpm_caps;

void tpm_caps_done(tpm_caps *c);

/* Combine the two parsed answers (takes ownership of both). */
void tpm_caps_from_features(tpm_features *swtpm, tpm_features *setup, tpm_caps *ret);

/* Run `swtpm socket --print-capabilities` and `swtpm_setup --print-capabilities`
 * (NULL paths: the programs in PATH) and parse both. A tool that is missing,
 * fails, or prints garbage is an error naming the tool and quoting its stderr. */
int tpm_caps_detect(const char *swtpm_path, const char *swtpm_setup_path, usec_t timeout, tpm_caps *ret,
                    vt_error **err);

/* TPM versions this node can run: both tools must support it. */
static inline bool tpm_caps_supports_tpm2(const tpm_caps *c) {
        return c->tpm2 && c->setup_tpm2;
}
static inline bool tpm_caps_supports_tpm12(const tpm_caps *c) {
        return c->tpm12 && c->setup_tpm12;
}
/* Encryption with the key handed over a file descriptor needs both. */
static inline bool tpm_caps_supports_key_fd(const tpm_caps *c) {
        return c->key_fd && c->setup_keyfile_fd;
}
