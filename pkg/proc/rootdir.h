/* SPDX-License-Identifier: Apache-2.0 */
/* Creating directories inside another process's root (a launcher's), safely.
 *
 * The launcher's filesystem is controlled by its pod: a path component there
 * may be a symlink meant to redirect the agent (running as root) to a host
 * directory. Every component is resolved with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) relative to /proc/<pid>/root
 * (mounts inside the launcher are crossed on purpose),
 * so nothing outside that root is ever touched and no symlink is followed. */
#pragma once

#include <sys/types.h>

#include "base/error.h"

/* mkdir -p `path` (absolute, as the process sees it) inside the root of
 * `pid`; the last component gets `mode` and owner uid:gid (existing ones
 * too); intermediate ones are created 0755 root. -ELOOP when a component is
 * a symlink, -ENOTDIR when it is not a directory. */
int mkdir_in_root(pid_t pid, const char *path, mode_t mode, uid_t uid, gid_t gid, vt_error **err);

/* Open the directory `path` (absolute, as the process sees it) inside the
 * root of `pid`, following no symlink and never leaving that root. */
int open_dir_in_root(pid_t pid, const char *path, vt_error **err);
