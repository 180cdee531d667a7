/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/mount/localmount.c: verified tmpfs and bind mounts in the agent's own
 * namespace (its run directory), in a private mount namespace of the test's. */
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/rmtree.h"
#include "mount/localmount.h"
#include "mount/mountpoint.h"
#include "tap.h"

static char root[] = "/tmp/test-localmount-XXXXXX";

static char *dir(const char *name) {
        char *p = xasprintf("%s/%s", root, name);
        check(mkdir_checked(p, 0700, NULL) >= 0);
        return p;
}

static void test_tmpfs(void) {
        _cleanup_free_ char *t = dir("tmpfs");
        check_int_eq(mount_tmpfs_verified(t, "test-tmpfs", "size=64k,mode=0700", NULL), 0);
        check_int_eq(is_mount_point(t, NULL), 1);
        check_int_eq(mount_tmpfs_verified(t, "test-tmpfs", "size=64k,mode=0700", NULL), 1); /* already: left as it is */
        check_int_eq(unmount_detach(t, NULL), 1);
        check_int_eq(unmount_detach(t, NULL), 0);
        check_int_eq(is_mount_point(t, NULL), 0);
}

static void test_tmpfs_over_other_mount_is_busy(void) {
        _cleanup_free_ char *src = dir("bindsrc"), *t = dir("notmpfs");
        check_int_eq(mount_tmpfs_verified(src, "test-src", "size=64k", NULL), 0);
        /* A bind of a tmpfs is a tmpfs too: use a bind of the root's filesystem. */
        check(mount("/", t, NULL, MS_BIND, NULL) == 0);
        _cleanup_error_ vt_error *err = NULL;
        int r = mount_tmpfs_verified(t, "test-tmpfs", "size=64k", &err);
        check_int_eq(r, -EBUSY);
        check(unmount_detach(t, NULL) == 1 && unmount_detach(src, NULL) == 1);
}

static void test_bind(void) {
        _cleanup_free_ char *a = dir("a"), *b = dir("b"), *dst = dir("dst");
        check_int_eq(mount_tmpfs_verified(a, "test-a", "size=64k", NULL), 0);
        check_int_eq(mount_tmpfs_verified(b, "test-b", "size=64k", NULL), 0);
        check_int_eq(bind_mount_verified(a, dst, NULL), 0);
        check_int_eq(bind_mount_verified(a, dst, NULL), 1); /* the same source: fine */
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_verified(b, dst, &err), -EBUSY); /* something else is there: never stacked */
        check(unmount_detach(dst, NULL) == 1);
        check(unmount_detach(a, NULL) == 1 && unmount_detach(b, NULL) == 1);
}

/* A directory below a mount point (a TPM state generation on the published
 * volume): its bind verifies, and is not mistaken for the whole volume's. */
static void test_bind_subdirectory(void) {
        _cleanup_free_ char *vol = dir("vol"), *gen = xasprintf("%s/m-1", vol), *dst = dir("gen-dst"),
                            *whole = dir("whole-dst");
        check_int_eq(mount_tmpfs_verified(vol, "test-vol", "size=64k", NULL), 0);
        check(mkdir(gen, 0700) == 0);
        check_int_eq(bind_mount_verified(gen, dst, NULL), 0);
        check_int_eq(bind_mount_verified(gen, dst, NULL), 1);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(bind_mount_verified(vol, dst, &err), -EBUSY); /* the whole volume is something else */
        check_int_eq(bind_mount_verified(vol, whole, NULL), 0);
        check(unmount_detach(dst, NULL) == 1 && unmount_detach(whole, NULL) == 1 && unmount_detach(vol, NULL) == 1);
}

static void test_mkdir_checked(void) {
        _cleanup_free_ char *d = xasprintf("%s/m", root), *l = xasprintf("%s/link", root);
        check_int_eq(mkdir_checked(d, 0700, NULL), 0);
        check_int_eq(mkdir_checked(d, 0700, NULL), 1);
        check(symlink(d, l) == 0);
        check_int_eq(mkdir_checked(l, 0700, NULL), -ENOTDIR); /* a symlink is never followed */
        check_int_eq(mkdir_mode(d, 0711, NULL), 1);
        struct stat st;
        check(stat(d, &st) == 0 && (st.st_mode & 07777) == 0711);
}

int main(void) {
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root for mounts\n");
                return 0;
        }
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                printf("1..0 # SKIP cannot create a mount namespace: %m\n");
                return 0;
        }
        if (!mkdtemp(root)) {
                printf("1..0 # SKIP cannot make a temporary directory: %m\n");
                return 0;
        }
        int r = tap_run((tap_case[]){TAP_CASE(test_tmpfs), TAP_CASE(test_tmpfs_over_other_mount_is_busy),
                                     TAP_CASE(test_bind), TAP_CASE(test_bind_subdirectory),
                                     TAP_CASE(test_mkdir_checked), {0}});
        if (rm_rf(root, NULL) < 0)
                printf("# cannot remove %s\n", root);
        return r;
}
