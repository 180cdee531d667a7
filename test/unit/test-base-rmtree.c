/* SPDX-License-Identifier: Apache-2.0 */
/* rm_rf(): the tree goes; what a symlink in it points to stays; a mount
 * below it is left alone and said; a missing path is done. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/rmtree.h"
#include "tap.h"

static char top[] = "/tmp/test-rmtree-XXXXXX";

static void touch(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        check(fd >= 0);
        if (fd >= 0)
                close(fd);
}

static char *at(const char *rel) {
        return xasprintf("%s/%s", top, rel);
}

static void test_tree_goes_symlink_targets_stay(void) {
        _cleanup_free_ char *tree = at("tree"), *a = at("tree/a"), *b = at("tree/a/b"), *f = at("tree/a/b/tpm2-00.permall"),
                            *outside = at("outside"), *keep = at("outside/keep"), *l1 = at("tree/a/link-to-dir"),
                            *l2 = at("tree/link-to-file");
        check(mkdir(tree, 0700) == 0 && mkdir(a, 0700) == 0 && mkdir(b, 0700) == 0 && mkdir(outside, 0700) == 0);
        touch(f);
        touch(keep);
        check(symlink(outside, l1) == 0 && symlink(keep, l2) == 0);
        check_int_eq(rm_rf(tree, NULL), 0);
        check(access(tree, F_OK) < 0);
        check(access(keep, F_OK) == 0); /* followed by nobody */
}

static void test_missing_and_file(void) {
        _cleanup_free_ char *none = at("none"), *file = at("file");
        check_int_eq(rm_rf(none, NULL), 0);
        touch(file);
        check_int_eq(rm_rf(file, NULL), 0);
        check(access(file, F_OK) < 0);
}

/* Root only (a tmpfs mounted below the tree): it and what is on it stay. */
static void test_mount_below_left_alone(void) {
        if (geteuid() != 0) {
                printf("# skipped: needs root to mount\n");
                return;
        }
        _cleanup_free_ char *tree = at("mounted"), *mnt = at("mounted/m"), *on = at("mounted/m/on-the-mount");
        check(mkdir(tree, 0700) == 0 && mkdir(mnt, 0700) == 0);
        if (mount("rmtree-test", mnt, "tmpfs", 0, "size=1m") < 0) {
                printf("# skipped: cannot mount a tmpfs here\n");
                return;
        }
        touch(on);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(rm_rf(tree, &err), -EXDEV);
        check(err && strstr(err->msg, "mount point"));
        check(access(on, F_OK) == 0);
        check(umount2(mnt, MNT_DETACH) == 0);
        check_int_eq(rm_rf(tree, NULL), 0);
}

int main(void) {
        if (!mkdtemp(top))
                return 1;
        int r = tap_run((tap_case[]){TAP_CASE(test_tree_goes_symlink_targets_stay), TAP_CASE(test_missing_and_file),
                                     TAP_CASE(test_mount_below_left_alone), {0}});
        (void)rm_rf(top, NULL);
        return r;
}
