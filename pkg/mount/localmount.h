/* SPDX-License-Identifier: Apache-2.0 */
/* Mounts in the agent's own mount namespace (its run directory), each one
 * verified after it is made, as pkg/mount/nsmount.h does for other
 * namespaces: a mount call that "succeeded" is not trusted until mountinfo
 * shows it where it was asked for. */
#pragma once

#include "base/error.h"

/* A tmpfs at `path` (an existing directory), nosuid, nodev, noexec, with
 * `options` ("size=4m,mode=0700"). 0 when mounted now, 1 when a tmpfs is
 * mounted there already (left as it is); -EBUSY when something else is;
 * -EIO when the new mount does not show up as a tmpfs at `path`. */
int mount_tmpfs_verified(const char *path, const char *source, const char *options, vt_error **err);

/* Bind `src` (the root of a mount: a published volume, a tmpfs) at `dst` (an existing directory). 0 when bound
 * now, 1 when exactly that (same device and root) is bound there already;
 * -EBUSY when something else is mounted at dst; -EIO when the new mount
 * does not verify. */
int bind_mount_verified(const char *src, const char *dst, vt_error **err);

/* umount2(path, MNT_DETACH). 1 when a mount was removed, 0 when nothing was
 * mounted there (or the path does not exist). */
int unmount_detach(const char *path, vt_error **err);
