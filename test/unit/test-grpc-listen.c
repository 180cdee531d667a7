/* SPDX-License-Identifier: Apache-2.0 */
/* The node-hook socket: made 0600 in a 0700 directory of ours; a stale
 * socket is replaced, a symlink or a file in its place is not, and a
 * directory others can write to is refused. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/rmtree.h"
#include "grpc/listen.h"
#include "tap.h"

static char top[] = "/tmp/test-grpc-listen.XXXXXX";

static mode_t mode_of(const char *p) {
        struct stat st;
        return lstat(p, &st) == 0 ? st.st_mode : 0;
}

static void test_creates_dir_and_socket(void) {
        _cleanup_free_ char *dir = xasprintf("%s/hooks", top), *path = xasprintf("%s/vtpm.sock", dir);
        int fd = -1;
        check_int_eq(grpc_listen_unix(path, 8, &fd, NULL), 0);
        check(fd >= 0);
        check(S_ISDIR(mode_of(dir)) && (mode_of(dir) & 07777) == 0700);
        check(S_ISSOCK(mode_of(path)) && (mode_of(path) & 07777) == 0600);
        check(fcntl(fd, F_GETFL) & O_NONBLOCK);
        close(fd);
        /* The socket left behind is stale now: replaced. */
        fd = -1;
        check_int_eq(grpc_listen_unix(path, 8, &fd, NULL), 0);
        check(fd >= 0);
        close(fd);
}

static void test_refuses_what_is_not_a_socket(void) {
        _cleanup_free_ char *link = xasprintf("%s/link.sock", top), *file = xasprintf("%s/file.sock", top);
        check(symlink("/etc/passwd", link) == 0);
        check(close(open(file, O_CREAT | O_WRONLY, 0600)) == 0);
        int fd = -1;
        vt_error *err = NULL;
        check_int_eq(grpc_listen_unix(link, 8, &fd, &err), -EEXIST);
        check_contains(err ? err->msg : NULL, "is not a socket");
        check(S_ISLNK(mode_of(link)));
        vt_error_free(err), err = NULL;
        check_int_eq(grpc_listen_unix(file, 8, &fd, &err), -EEXIST);
        check(S_ISREG(mode_of(file)));
        vt_error_free(err);
        check(fd == -1);
}

static void test_refuses_unsafe_dir(void) {
        _cleanup_free_ char *open_dir = xasprintf("%s/open", top), *in_open = xasprintf("%s/s.sock", open_dir),
                            *ldir = xasprintf("%s/ldir", top), *in_link = xasprintf("%s/s.sock", ldir);
        check(mkdir(open_dir, 0700) == 0 && chmod(open_dir, 0777) == 0);
        check(symlink(top, ldir) == 0);
        int fd = -1;
        vt_error *err = NULL;
        check_int_eq(grpc_listen_unix(in_open, 8, &fd, &err), -EPERM);
        check_contains(err ? err->msg : NULL, "writable by nobody else");
        vt_error_free(err), err = NULL;
        check_int_eq(grpc_listen_unix(in_link, 8, &fd, &err), -ENOTDIR);
        check_contains(err ? err->msg : NULL, "not a directory");
        vt_error_free(err), err = NULL;
        check_int_eq(grpc_listen_unix("relative.sock", 8, &fd, &err), -EINVAL);
        vt_error_free(err);
        check(fd == -1);
}

int main(void) {
        if (!mkdtemp(top))
                return 1;
        int r = tap_run((tap_case[]){
                TAP_CASE(test_creates_dir_and_socket),
                TAP_CASE(test_refuses_what_is_not_a_socket),
                TAP_CASE(test_refuses_unsafe_dir),
                {0},
        });
        (void)rm_rf(top, NULL);
        return r;
}
