/* SPDX-License-Identifier: Apache-2.0 */
#include "mount/localmount.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "base/alloc.h"
#include "mount/mountpoint.h"

#define LOCAL_MOUNT_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* The mount at exactly `path`: 1 and *ret when path is a mount root, 0 when not. */
static int mount_at(const char *path, mountinfo_entry **ret, vt_error **err) {
        int r = is_mount_point(path, err);
        if (r <= 0)
                return r;
        r = mount_source_identity(path, ret, err);
        return r < 0 ? r : 1;
}

static bool is_tmpfs(const mountinfo_entry *e) {
        return e && e->fstype && strcmp(e->fstype, "tmpfs") == 0;
}

int mount_tmpfs_verified(const char *path, const char *source, const char *options, vt_error **err) {
        assert_return(path && source, -EINVAL);
        _cleanup_mountinfo_entry_ mountinfo_entry *e = NULL;
        int r = mount_at(path, &e, err);
        if (r < 0)
                return r;
        if (r > 0)
                return is_tmpfs(e) ? 1 : vt_error_set(err, EBUSY, "%s: something other than a tmpfs is mounted there", path);
        if (mount(source, path, "tmpfs", LOCAL_MOUNT_FLAGS, options) < 0)
                return vt_error_errno(err, errno, "cannot mount a tmpfs at %s", path);
        mountinfo_entry_free(TAKE_PTR(e));
        r = mount_at(path, &e, err);
        if (r < 0)
                return r;
        if (r == 0 || !is_tmpfs(e))
                return vt_error_set(err, EIO, "%s: the tmpfs mounted there does not show in mountinfo", path);
        return 0;
}

/* What a bind mount of `src` shows in mountinfo: the mount holding it, with
 * the root that directory has in its filesystem (src may be a directory
 * below a mount point: a TPM state generation on a published volume). */
static int bind_source_identity(const char *src, mountinfo_entry **ret, vt_error **err) {
        _cleanup_mountinfo_entry_ mountinfo_entry *id = NULL;
        int r = mount_source_identity(src, &id, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *canon = realpath(src, NULL);
        if (!canon)
                return vt_error_errno(err, errno, "cannot resolve %s", src);
        bool at_root = strcmp(id->mount_point, "/") == 0;
        size_t n = at_root ? 0 : strlen(id->mount_point);
        const char *rel = canon + n;
        if ((at_root || strncmp(canon, id->mount_point, n) == 0) && rel[0] == '/' && rel[1]) {
                char *root = xasprintf("%s%s", strcmp(id->root, "/") == 0 ? "" : id->root, rel);
                free(id->root);
                id->root = root;
        }
        *ret = TAKE_PTR(id);
        return 0;
}

int bind_mount_verified(const char *src, const char *dst, vt_error **err) {
        assert_return(src && dst, -EINVAL);
        _cleanup_mountinfo_entry_ mountinfo_entry *want = NULL, *have = NULL;
        int r = bind_source_identity(src, &want, err);
        if (r < 0)
                return r;
        r = mount_at(dst, &have, err);
        if (r < 0)
                return r;
        if (r > 0)
                return mountinfo_entry_same_source(want, have)
                               ? 1
                               : vt_error_set(err, EBUSY, "%s: something else is mounted there", dst);
        if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
                return vt_error_errno(err, errno, "cannot bind %s at %s", src, dst);
        r = mount_at(dst, &have, err);
        if (r < 0)
                return r;
        if (r == 0 || !mountinfo_entry_same_source(want, have))
                return vt_error_set(err, EIO, "%s: the bind mount of %s does not verify in mountinfo", dst, src);
        return 0;
}

int unmount_detach(const char *path, vt_error **err) {
        assert_return(path, -EINVAL);
        if (umount2(path, MNT_DETACH) == 0)
                return 1;
        if (errno == EINVAL || errno == ENOENT)
                return 0; /* not a mount point, or not there at all */
        return vt_error_errno(err, errno, "cannot unmount %s", path);
}
