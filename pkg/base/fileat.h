/* SPDX-License-Identifier: Apache-2.0 */
/* Files beneath a directory that somebody else controls (a VM's state
 * volume, which any pod of the tenant can write), for a caller that is root.
 *
 * The directory is opened once (state_dir_open: O_DIRECTORY | O_NOFOLLOW)
 * and everything else is relative to that fd with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW: a symlink,
 * "..", or a path that leaves the directory fails with -ELOOP / -EXDEV,
 * whatever the tenant renames in the meantime. Only regular files are read
 * (a FIFO would block, a device could do anything); sizes are capped.
 * Error messages name the file, never what it contains. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "error.h"

/* open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC): path is the
 * caller's (trusted up to its last component, which must not be a symlink). */
int dir_open_nofollow(const char *path, vt_error **err);

/* openat2(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode) beneath dfd with
 * no symlinks at all. Returns the fd or -errno (no message). */
int openat_beneath(int dfd, const char *name, int flags, mode_t mode);

/* A whole regular file `name` beneath dfd (at most max_size bytes, larger is
 * -EFBIG; not a regular file -EBADMSG; a symlink -ELOOP; missing -ENOENT).
 * NUL-terminated; *ret_size excludes the NUL. */
int read_file_beneath(int dfd, const char *name, size_t max_size, char **ret_data, size_t *ret_size,
                      vt_error **err);

/* Atomically replace `name` beneath dfd: "<name>.tmp" is created fresh
 * (O_EXCL, after removing a leftover), written, fsynced; then
 * before_rename(point) if given (crash-injection tests); renameat; the
 * directory is fsynced. */
int write_file_beneath(int dfd, const char *name, const void *data, size_t size, mode_t mode,
                       void (*before_rename)(const char *point), const char *point, vt_error **err);

/* fsync the file or directory `name` beneath dfd ("." for dfd itself). */
int fsync_beneath(int dfd, const char *name, vt_error **err);
