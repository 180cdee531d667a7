/* SPDX-License-Identifier: Apache-2.0 */
/* Facts about a TPM state directory shared by provisioning and supervision. */
#pragma once

#include <stdbool.h>

#include <sys/types.h>

#include "base/error.h"

typedef enum tpm_version {
        TPM_VERSION_2 = 0, /* the default */
        TPM_VERSION_1_2 = 1,
} tpm_version;

/* "2.0" / "1.2" */
const char *tpm_version_name(tpm_version v);

/* The file that holds a TPM's permanent state: "tpm2-00.permall" / "tpm-00.permall". */
const char *tpm_state_permall(tpm_version v);

/* Does state_dir hold TPM state of either version? 1 yes (and which in
 * *ret_version when non-NULL), 0 no, -errno when the directory cannot be read.
 * A permall file that exists is state, whatever its content. */
int tpm_state_detect(const char *state_dir, tpm_version *ret_version, vt_error **err);
/* The same on a directory fd (the state volume, opened no-follow). */
int tpm_state_detect_at(int dfd, tpm_version *ret_version, vt_error **err);

/* Make state_dir (which must exist) belong to `user` (NULL: leave the owner)
 * with mode 0700, and every regular file in it mode 0600 owned by that user:
 * swtpm running as `user` must write there, nobody else may read it. */
int tpm_state_dir_prepare(const char *state_dir, const char *user, vt_error **err);
/* The same on a directory fd. Entries are changed through O_PATH | O_NOFOLLOW
 * fds, never by name: symlinks and other non-regular files are left alone. */
int tpm_state_dir_prepare_at(int dfd, const char *user, vt_error **err);
/* The same with numeric ids ((uid_t)-1/(gid_t)-1: leave that owner). */
int tpm_state_dir_prepare_ids(const char *state_dir, uid_t uid, gid_t gid, vt_error **err);
int tpm_state_dir_prepare_ids_at(int dfd, uid_t uid, gid_t gid, vt_error **err);

/* Look up a user: uid and primary gid. -ENOENT when unknown. */
int tpm_lookup_user(const char *user, unsigned *ret_uid, unsigned *ret_gid, vt_error **err);

/* Paths end up inside swtpm's comma-separated option values: refuse the
 * characters that would change their meaning. */
int tpm_check_option_path(const char *what, const char *path, vt_error **err);
