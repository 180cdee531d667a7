/* SPDX-License-Identifier: Apache-2.0 */
/* Questions about mounts in the agent's own mount namespace: is the volume
 * kubelet published really mounted, and which filesystem is it. */
#pragma once

#include "base/error.h"
#include "mount/mountinfo.h"

/* 1 if `path` (symlinks followed) is the root of a mount, 0 if not, -errno
 * (e.g. -ENOENT) on failure. Uses statx's STATX_ATTR_MOUNT_ROOT (Linux 5.8+),
 * else compares with /proc/self/mountinfo. */
int is_mount_point(const char *path, vt_error **err);

/* The mount holding `path` (symlinks followed) in this mount namespace, read
 * from /proc/self/mountinfo: its major:minor and root are the identity that
 * the same volume shows in another namespace after a bind mount
 * (mountinfo_entry_same_source). The entry is found by statx's STATX_MNT_ID
 * where available, so there is no guessing among stacked mounts. Free *ret
 * with mountinfo_entry_free(). */
int mount_source_identity(const char *path, mountinfo_entry **ret, vt_error **err);
