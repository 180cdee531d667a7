/* SPDX-License-Identifier: Apache-2.0 */
/* A launcher's socket, opened the way a tenant cannot redirect, its peer as
 * a pidfd, and the peer's pod from its cgroup. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "proc/peer.h"
#include "proc/podcgroup.h"
#include "tap.h"

static char tmpdir[] = "/tmp/vt-peer-XXXXXX";

#define UID "0d2f5c3e-8a41-4b7e-9c55-3f1a2b3c4d5e"
#define UID2 "11111111-2222-3333-4444-555555555555"
#define CID "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
#define CID2 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* A child listening on `path`; returns its pid once it listens. */
static pid_t listener(const char *path) {
        int ready[2];
        if (pipe(ready) < 0)
                abort();
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                strcpy(sa.sun_path, path);
                unlink(path);
                if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0)
                        _exit(1);
                if (write(ready[1], "R", 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(ready[1]);
        char c;
        if (read(ready[0], &c, 1) != 1)
                abort();
        close(ready[0]);
        return child;
}

static void reap(pid_t pid) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
}

static void test_connect_and_peer_pidfd(void) {
        _cleanup_free_ char *dir = xasprintf("%s/pods/p/sockets", tmpdir);
        _cleanup_free_ char *cmd = xasprintf("mkdir -p %s", dir);
        check(system(cmd) == 0);
        _cleanup_free_ char *path = xasprintf("%s/launcher-sock", dir);
        pid_t child = listener(path);
        _cleanup_close_ int root = open(tmpdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int fd = -1;
        struct stat st;
        check_int_eq(unix_connect_at(root, "pods/p/sockets/launcher-sock", RESOLVE_BENEATH, &fd, &st, NULL), 0);
        check(S_ISSOCK(st.st_mode));
        _cleanup_close_ int pidfd = -1;
        pid_t pid = 0;
        check_int_eq(socket_peer_pidfd(fd, (int64_t)st.st_ctim.tv_sec, &pidfd, &pid, NULL), 0);
        check_int_eq(pid, child);
        check_int_eq(pidfd_is_alive(pidfd), 1);
        reap(child);
        check_int_eq(pidfd_is_alive(pidfd), 0);
        /* The listener gone: nobody to connect to. */
        _cleanup_close_ int fd2 = -1;
        check_int_eq(unix_connect_at(root, "pods/p/sockets/launcher-sock", RESOLVE_BENEATH, &fd2, NULL, NULL),
                     -ECONNREFUSED);
}

/* An agent in a PID namespace below the listener's (a pod without hostPID;
 * a node of the test bed, where the listener is the machine's): the peer
 * lives but has no pid here, which is -EREMOTE, not "exited" (-ESRCH).
 * Needs CAP_SYS_ADMIN (a new PID namespace and its own /proc). */
static void test_peer_outside_our_pid_namespace(void) {
        if (geteuid() != 0) {
                printf("# skipped: needs root for a PID namespace\n");
                return;
        }
        _cleanup_free_ char *dir = xasprintf("%s/pods/outside/sockets", tmpdir);
        _cleanup_free_ char *cmd = xasprintf("mkdir -p %s", dir);
        check(system(cmd) == 0);
        _cleanup_free_ char *path = xasprintf("%s/launcher-sock", dir);
        pid_t server = listener(path);
        int report[2];
        if (pipe(report) < 0)
                abort();
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
                /* The child's children are in the new namespace; the first is its init. */
                if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
                        _exit(2);
                pid_t inner = fork();
                if (inner == 0) {
                        int r = 1;
                        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
                            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) {
                                int root = open(tmpdir, O_PATH | O_DIRECTORY | O_CLOEXEC), fd = -1, pidfd = -1;
                                pid_t pid = 0;
                                struct stat st;
                                if (root >= 0 &&
                                    unix_connect_at(root, "pods/outside/sockets/launcher-sock", RESOLVE_BENEATH, &fd, &st, NULL) == 0)
                                        r = socket_peer_pidfd(fd, (int64_t)st.st_ctim.tv_sec, &pidfd, &pid, NULL);
                        }
                        if (write(report[1], &r, sizeof(r)) != sizeof(r))
                                _exit(1);
                        _exit(0);
                }
                int status = 0;
                waitpid(inner, &status, 0);
                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
        }
        close(report[1]);
        int r = 0, status = 0;
        bool got = read(report[0], &r, sizeof(r)) == sizeof(r);
        close(report[0]);
        waitpid(child, &status, 0);
        check(got && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        check_int_eq(r, -EREMOTE);
        reap(server);
}

/* What a tenant can plant in its own socket directory. */
static void test_refuses_symlinks_and_non_sockets(void) {
        _cleanup_free_ char *dir = xasprintf("%s/pods/q/sockets", tmpdir);
        _cleanup_free_ char *cmd = xasprintf("mkdir -p %s", dir);
        check(system(cmd) == 0);
        _cleanup_free_ char *real = xasprintf("%s/host.sock", tmpdir);
        pid_t child = listener(real);
        _cleanup_free_ char *link = xasprintf("%s/launcher-sock", dir);
        check(symlink(real, link) == 0); /* absolute: to a host socket */
        _cleanup_free_ char *rel = xasprintf("%s/rel-sock", dir);
        check(symlink("../../../host.sock", rel) == 0);
        _cleanup_free_ char *file = xasprintf("%s/file-sock", dir);
        check(close(open(file, O_CREAT | O_WRONLY, 0600)) == 0);
        _cleanup_free_ char *dirlink = xasprintf("%s/pods/r", tmpdir);
        check(symlink("q", dirlink) == 0); /* a directory on the way */

        _cleanup_close_ int root = open(tmpdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        int fd = -1;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(unix_connect_at(root, "pods/q/sockets/launcher-sock", RESOLVE_BENEATH, &fd, NULL, &err), -ELOOP);
        check_contains(err ? err->msg : NULL, "symlink");
        check_int_eq(unix_connect_at(root, "pods/q/sockets/rel-sock", RESOLVE_BENEATH, &fd, NULL, NULL), -ELOOP);
        check_int_eq(unix_connect_at(root, "pods/r/sockets/launcher-sock", RESOLVE_BENEATH, &fd, NULL, NULL), -ELOOP);
        check_int_eq(unix_connect_at(root, "pods/q/sockets/file-sock", RESOLVE_BENEATH, &fd, NULL, NULL), -ENOTSOCK);
        check_int_eq(unix_connect_at(root, "pods/q/sockets/none", RESOLVE_BENEATH, &fd, NULL, NULL), -ENOENT);
        check_int_eq(unix_connect_at(root, "../x", RESOLVE_BENEATH, &fd, NULL, NULL), -EXDEV);
        check_int_eq(fd, -1);
        /* RESOLVE_IN_ROOT: an absolute path is inside the root, not the host's. */
        _cleanup_close_ int fd2 = -1;
        check_int_eq(unix_connect_at(root, "/host.sock", RESOLVE_IN_ROOT, &fd2, NULL, NULL), 0);
        reap(child);
}

static int names(const char *text, const char *uid, const char *const *ids) {
        return cgroup_text_names_pod(text, strlen(text), uid, ids);
}

static void test_cgroup_names_pod(void) {
        const char *ids[] = {CID, NULL};
        /* cgroupfs driver, v1 and v2 */
        check_int_eq(names("4:memory:/kubepods/burstable/pod" UID "/" CID "\n", UID, NULL), 1);
        check_int_eq(names("0::/kubepods/besteffort/pod" UID "/" CID "\n", UID, NULL), 1);
        check_int_eq(names("0::/kubepods/pod" UID "/" CID "\n", UID2, NULL), 0);
        /* systemd driver: '-' of the uid written as '_' */
        check_int_eq(names("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d2f5c3e_8a41_4b7e_9c55_"
                           "3f1a2b3c4d5e.slice/cri-containerd-" CID ".scope\n",
                           UID, NULL),
                     1);
        /* a private cgroup namespace: "/.." first */
        check_int_eq(names("0::/../../kubepods/pod" UID "/" CID "\n", UID, NULL), 1);
        /* no per-pod cgroups (cgroupsPerQOS: false): the container ID decides */
        check_int_eq(names("9:name=systemd:/\n4:memory:/k8s.io/" CID "\n0::/\n", UID, ids), 1);
        check_int_eq(names("4:memory:/k8s.io/" CID2 "\n", UID, ids), 0);
        check_int_eq(names("0::/system.slice/containerd.service\n", UID, ids), 0);
        check_int_eq(names("0::/\n", UID, ids), 0);
        /* a child cgroup named after another pod or container below one's own
         * (a delegated subtree) does not make a process that pod's */
        check_int_eq(names("0::/kubepods/pod" UID2 "/" CID2 "/pod" UID "\n", UID, ids), 0);
        check_int_eq(names("0::/k8s.io/" CID2 "/" CID "\n", UID, ids), 0);
        /* one hierarchy says another pod: not ours */
        check_int_eq(names("4:memory:/kubepods/pod" UID "/x\n0::/kubepods/pod" UID2 "/y\n", UID, NULL), 0);
        /* names that merely start like one */
        check_int_eq(names("0::/podman/" CID "\n", UID, ids), 1);
        check_int_eq(names("0::/pods\n", UID, NULL), 0);
        /* not a cgroup file */
        check_int_eq(names("", UID, NULL), -EBADMSG);
        check_int_eq(names("garbage\n", UID, NULL), -EBADMSG);
        check_int_eq(names("0::relative\n", UID, NULL), -EBADMSG);
        /* our own process: the test runs in some cgroup that names no such pod */
        check_int_eq(proc_cgroup_names_pod(getpid(), UID, ids, NULL), 0);
}

int main(void) {
        if (!mkdtemp(tmpdir))
                return 1;
        int r = tap_run((tap_case[]){
                TAP_CASE(test_connect_and_peer_pidfd),
                TAP_CASE(test_peer_outside_our_pid_namespace),
                TAP_CASE(test_refuses_symlinks_and_non_sockets),
                TAP_CASE(test_cgroup_names_pod),
                {0},
        });
        _cleanup_free_ char *cmd = xasprintf("rm -rf %s", tmpdir);
        (void)!system(cmd);
        return r;
}
