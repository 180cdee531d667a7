/* SPDX-License-Identifier: Apache-2.0 */
#include "mount/mountpoint.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "base/alloc.h"

int is_mount_point(const char *path, vt_error **err) {
        assert_return(path, -EINVAL);
        struct statx sx = {0};
        if (statx(AT_FDCWD, path, AT_NO_AUTOMOUNT, STATX_TYPE | STATX_MNT_ID, &sx) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", path);
        if (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
                return (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;

        /* Older kernel: the path is a mount point if mountinfo lists its
         * canonical name as one. */
        _cleanup_free_ char *canon = realpath(path, NULL);
        if (!canon)
                return vt_error_errno(err, errno, "cannot resolve %s", path);
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        int r = mountinfo_read(0, &t, err);
        if (r < 0)
                return r;
        return mountinfo_find_mount_point(t, canon) ? 1 : 0;
}

int mount_source_identity(const char *path, mountinfo_entry **ret, vt_error **err) {
        assert_return(path && ret, -EINVAL);
        struct statx sx = {0};
        if (statx(AT_FDCWD, path, AT_NO_AUTOMOUNT, STATX_TYPE | STATX_MNT_ID, &sx) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", path);
        _cleanup_mountinfo_table_ mountinfo_table *t = NULL;
        int r = mountinfo_read(0, &t, err);
        if (r < 0)
                return r;
        const mountinfo_entry *e = NULL;
        if (sx.stx_mask & STATX_MNT_ID)
                e = mountinfo_find_id(t, (int)sx.stx_mnt_id);
        if (!e) {
                _cleanup_free_ char *canon = realpath(path, NULL);
                if (!canon)
                        return vt_error_errno(err, errno, "cannot resolve %s", path);
                e = mountinfo_find_covering(t, canon);
        }
        if (!e)
                return vt_error_set(err, ENOENT, "no mount holding %s in /proc/self/mountinfo", path);
        *ret = mountinfo_entry_copy(e);
        return 0;
}
