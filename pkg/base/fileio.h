/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "error.h"

/* Read a whole file (at most max_size bytes; larger is -EFBIG). The result is
 * NUL-terminated; *ret_size excludes the NUL. */
int read_full_file(const char *path, size_t max_size, char **ret_data, size_t *ret_size, vt_error **err);
/* The same from an open fd; `name` is only for messages. */
int read_full_fd(int fd, const char *name, size_t max_size, char **ret_data, size_t *ret_size, vt_error **err);
/* Write atomically: temp file in the same directory, fsync, rename. */
int write_file_atomic(const char *path, const void *data, size_t size, int mode, vt_error **err);

/* mkdir(path, mode) where an existing directory is fine: -ENOTDIR when
 * something else (a symlink included: never followed) is there. An existing
 * directory keeps its mode. Returns 1 when it existed, 0 when made now. */
int mkdir_checked(const char *path, mode_t mode, vt_error **err);
/* The same, and the mode set to exactly `mode` either way. */
int mkdir_mode(const char *path, mode_t mode, vt_error **err);
