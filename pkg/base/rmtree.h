/* SPDX-License-Identifier: Apache-2.0 */
/* Removing a directory tree the agent made on the node (a launcher's
 * scratch TPM state, swtpm's run directory) without a shell: symlinks are
 * removed, never followed, and nothing on another mount is touched (a
 * mount point found inside is an error, left in place). */
#pragma once

#include "base/error.h"

/* Remove path and everything below it. A path that does not exist is done
 * (0). -EXDEV: something below is another mount (nothing of it removed);
 * -ELOOP: deeper than 64 levels. Best effort past the first error: what
 * can go goes, the first error is returned. */
int rm_rf(const char *path, vt_error **err);

/* The same for the entry `name` (one path component) of the directory dfd:
 * a symlink or file there is unlinked, a directory emptied and removed; a
 * mount point below is -EXDEV, the entry itself on another mount too. */
int rm_rf_beneath(int dfd, const char *name, vt_error **err);
