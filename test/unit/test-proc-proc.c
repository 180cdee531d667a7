/* SPDX-License-Identifier: Apache-2.0 */
/* Finding a launcher from its socket and identifying it through /proc. */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "proc/proc.h"
#include "tap.h"

static char tmpdir[] = "/tmp/vt-proc-XXXXXX";

static int listen_on(const char *path, int type, bool do_listen) {
        int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, path);
        unlink(path);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                abort();
        if (do_listen && listen(fd, 4) < 0)
                abort();
        return fd;
}

static void reap(pid_t pid) {
        if (pid > 0) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
}

/* The listener is a child with its own uid: peercred names it. */
static void test_peercred_names_listener(void) {
        _cleanup_free_ char *path = xasprintf("%s/l.sock", tmpdir);
        int ready[2];
        check(pipe(ready) == 0);
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
                int fd = listen_on(path, SOCK_STREAM, true);
                (void)fd;
                if (setresuid(4242, 4242, 4242) < 0) /* creds are captured at listen(): still 0 */
                        _exit(1);
                if (write(ready[1], "R", 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(ready[1]);
        char c;
        check(read(ready[0], &c, 1) == 1);
        close(ready[0]);
        pid_t pid = 0;
        uid_t uid = 99;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(peercred_of_socket(path, &pid, &uid, &err), 0);
        check_int_eq(pid, child);
        check_int_eq(uid, 0);
        /* and the listener is still fine: the probe connection just closed */
        pid_t again = 0;
        check_int_eq(peercred_of_socket(path, &again, NULL, NULL), 0);
        check_int_eq(again, child);
        reap(child);
        unlink(path);
}

/* SO_PEERCRED is captured when listen() is called: a socket created and
 * listened on by A, then served by its child B after A exited, still reports
 * A (stale, and proc_is_alive says so). If B is the one calling listen(), B. */
static void test_peercred_is_the_listen_caller(void) {
        _cleanup_free_ char *path = xasprintf("%s/handoff.sock", tmpdir);
        for (int who_listens = 0; who_listens < 2; who_listens++) {
                /* Two pipes: b's "R" and a's report of b's pid must not share
                 * one, or a pid whose low byte is 'R' (0x52, e.g. 9042) reads
                 * as the ready byte, and the test kills a wrong pid and leaves
                 * b (holding prove's pipe) alive. */
                int ready[2], pidp[2];
                check(pipe(ready) == 0 && pipe(pidp) == 0);
                fflush(stdout);
                pid_t a = fork();
                if (a == 0) {
                        int fd = listen_on(path, SOCK_STREAM, who_listens == 0);
                        pid_t b = fork();
                        if (b == 0) {
                                if (who_listens == 1 && listen(fd, 4) < 0)
                                        _exit(1);
                                if (write(ready[1], "R", 1) != 1)
                                        _exit(1);
                                for (;;)
                                        pause();
                        }
                        if (write(pidp[1], &b, sizeof(b)) != sizeof(b))
                                _exit(1);
                        _exit(0);
                }
                close(ready[1]);
                close(pidp[1]);
                pid_t b = 0;
                char c = 0;
                check(read(pidp[0], &b, sizeof(b)) == (ssize_t)sizeof(b));
                check(read(ready[0], &c, 1) == 1 && c == 'R');
                close(ready[0]);
                close(pidp[0]);
                waitpid(a, NULL, 0); /* a is gone */
                pid_t pid = 0;
                check_int_eq(peercred_of_socket(path, &pid, NULL, NULL), 0);
                if (who_listens == 0) {
                        check_int_eq(pid, a);
                        check_int_eq(proc_is_alive(pid), 0);
                } else {
                        check_int_eq(pid, b);
                        check_int_eq(proc_is_alive(pid), 1);
                }
                reap(b); /* b was re-parented to init (or us as subreaper): just kill */
                unlink(path);
        }
}

static void test_peercred_errors(void) {
        _cleanup_free_ char *missing = xasprintf("%s/missing.sock", tmpdir);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(peercred_of_socket(missing, NULL, NULL, &err), -ENOENT);
        check_contains(err ? err->msg : NULL, missing);

        /* bound but nobody listening */
        _cleanup_free_ char *dead = xasprintf("%s/dead.sock", tmpdir);
        int fd = listen_on(dead, SOCK_STREAM, false);
        check_int_eq(peercred_of_socket(dead, NULL, NULL, NULL), -ECONNREFUSED);
        close(fd);
        unlink(dead);

        /* a SOCK_SEQPACKET listener works too */
        _cleanup_free_ char *seq = xasprintf("%s/seq.sock", tmpdir);
        fd = listen_on(seq, SOCK_SEQPACKET, true);
        pid_t pid = 0;
        check_int_eq(peercred_of_socket(seq, &pid, NULL, NULL), 0);
        check_int_eq(pid, getpid());
        close(fd);
        unlink(seq);

        char longp[200];
        memset(longp, 'a', sizeof(longp) - 1);
        longp[0] = '/';
        longp[sizeof(longp) - 1] = '\0';
        check_int_eq(peercred_of_socket(longp, NULL, NULL, NULL), -ENAMETOOLONG);
}

/* A full backlog must not block the agent. */
static void test_peercred_full_backlog_does_not_block(void) {
        _cleanup_free_ char *path = xasprintf("%s/full.sock", tmpdir);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, path);
        check(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 0) == 0);
        int clients[8], n = 0;
        for (; n < 8; n++) {
                clients[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (connect(clients[n], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                        close(clients[n]);
                        break;
                }
        }
        check(n < 8); /* the backlog did fill */
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(peercred_of_socket(path, NULL, NULL, &err), -EAGAIN);
        check_contains(err ? err->msg : NULL, "backlog full");
        for (int i = 0; i < n; i++)
                close(clients[i]);
        close(l);
        unlink(path);
}

static void test_alive_and_zombie(void) {
        check_int_eq(proc_is_alive(getpid()), 1);
        check_int_eq(proc_is_alive(1), 1);
        fflush(stdout);
        pid_t child = fork();
        if (child == 0)
                _exit(0);
        /* wait until it is a zombie, without reaping */
        siginfo_t si = {0};
        check(waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT) == 0);
        check_int_eq(proc_is_alive(child), 0);
        waitpid(child, NULL, 0);
        check_int_eq(proc_is_alive(child), 0);
        check_int_eq(proc_is_alive(0), -EINVAL);
}

static void test_cmdline(void) {
        char **argv = NULL;
        int argc = proc_read_cmdline(getpid(), &argv, NULL);
        check(argc >= 1);
        check_contains(argc >= 1 ? argv[0] : NULL, "test-proc-proc");
        proc_argv_free(argv);

        /* cat blocks reading "-" (our pipe) before it looks at "with space" */
        int in[2];
        check(pipe(in) == 0);
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
                dup2(in[0], 0);
                close(in[1]);
                execl("/bin/cat", "cat", "-", "with space", (char *)NULL);
                _exit(127);
        }
        close(in[0]);
        /* wait for the exec to happen */
        for (int i = 0; i < 200; i++) {
                argv = NULL;
                argc = proc_read_cmdline(child, &argv, NULL);
                if (argc == 3)
                        break;
                proc_argv_free(argv);
                argv = NULL;
                usleep(10000);
        }
        check_int_eq(argc, 3);
        if (argc == 3) {
                check_str_eq(argv[0], "cat");
                check_str_eq(argv[2], "with space");
                check(argv[3] == NULL);
        }
        proc_argv_free(argv);
        close(in[1]);
        reap(child);

        argv = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(proc_read_cmdline(999999999, &argv, &err), -ENOENT);
        check(argv == NULL);
}

static void test_start_time(void) {
        uint64_t self = 0, again = 0;
        check_int_eq(proc_start_time(getpid(), &self, NULL), 0);
        check(self > 0);
        /* a comm with ") " in it must not shift the fields */
        char old[16] = {0};
        prctl(PR_GET_NAME, old);
        prctl(PR_SET_NAME, "a) b (c) d 9 9");
        check_int_eq(proc_start_time(getpid(), &again, NULL), 0);
        check_int_eq(again, self);
        prctl(PR_SET_NAME, old);

        uint64_t init = 0;
        check_int_eq(proc_start_time(1, &init, NULL), 0);
        check(init <= self);
        usleep(30 * 1000); /* > 1 tick at USER_HZ 100 */
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
                pause();
                _exit(0);
        }
        uint64_t later = 0;
        check_int_eq(proc_start_time(child, &later, NULL), 0);
        check(later > self);
        reap(child);
        _cleanup_error_ vt_error *err = NULL;
        check(proc_start_time(child, &later, &err) < 0);
}

static void test_stat_numbers(void) {
        /* utime, stime, starttime, vsize, rss: as the process metrics read them */
        uint64_t f[5] = {0}, start = 0;
        char old[16] = {0};
        prctl(PR_GET_NAME, old);
        prctl(PR_SET_NAME, "x) 1 2 (3) 4"); /* must not shift the fields */
        check_int_eq(proc_stat_numbers(getpid(), (const unsigned[]){14, 15, 22, 23, 24}, 5, f, NULL), 0);
        prctl(PR_SET_NAME, old);
        check_int_eq(proc_start_time(getpid(), &start, NULL), 0);
        check_int_eq(f[2], start);
        check(f[3] > 1024 * 1024); /* vsize: this process maps more than 1 MiB */
        check(f[4] > 0);           /* rss in pages */
        check(f[4] * (uint64_t)sysconf(_SC_PAGESIZE) < f[3]);
        /* Out of order, not numeric (field 3, the state), too many: refused, ret untouched. */
        uint64_t untouched[2] = {7, 7};
        check_int_eq(proc_stat_numbers(getpid(), (const unsigned[]){15, 14}, 2, untouched, NULL), -EINVAL);
        check_int_eq(proc_stat_numbers(getpid(), (const unsigned[]){3}, 1, untouched, NULL), -EINVAL);
        check(untouched[0] == 7 && untouched[1] == 7);
        _cleanup_error_ vt_error *err = NULL;
        check(proc_stat_numbers(getpid(), (const unsigned[]){400}, 1, untouched, &err) < 0);
        check(err && strstr(err->msg, "too few fields"));
        check(untouched[0] == 7);
}

static void test_mntns_and_pidfd(void) {
        _cleanup_close_ int fd = proc_open_mntns(getpid(), NULL);
        check(fd >= 0);
        struct stat a = {0}, b = {0};
        check(fstat(fd, &a) == 0 && stat("/proc/self/ns/mnt", &b) == 0);
        check(a.st_ino == b.st_ino && a.st_dev == b.st_dev);

        int p[2];
        check(pipe(p) == 0);
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
                if (unshare(CLONE_NEWNS) < 0 || write(p[1], "R", 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(p[1]);
        char c;
        check(read(p[0], &c, 1) == 1);
        close(p[0]);
        _cleanup_close_ int cfd = proc_open_mntns(child, NULL);
        struct stat cs = {0};
        check(cfd >= 0 && fstat(cfd, &cs) == 0);
        check(cs.st_ino != a.st_ino); /* its own namespace */

        _cleanup_close_ int pidfd = proc_pidfd_open(child, NULL);
        check(pidfd >= 0);
        check(fcntl(pidfd, F_GETFD) & FD_CLOEXEC);
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        check_int_eq(poll(&pfd, 1, 0), 0); /* running */
        kill(child, SIGTERM);
        check_int_eq(poll(&pfd, 1, 5000), 1); /* exited */
        waitpid(child, NULL, 0);

        _cleanup_error_ vt_error *err = NULL;
        check(proc_pidfd_open(child, &err) < 0);
        check(err != NULL);
        _cleanup_error_ vt_error *err2 = NULL;
        check_int_eq(proc_open_mntns(child, &err2), -ENOENT);
        check_contains(err2 ? err2->msg : NULL, "mount namespace");
}

int main(void) {
        if (!mkdtemp(tmpdir))
                return 1;
        int r = tap_run((tap_case[]){
                TAP_CASE(test_peercred_names_listener),
                TAP_CASE(test_peercred_is_the_listen_caller),
                TAP_CASE(test_peercred_errors),
                TAP_CASE(test_peercred_full_backlog_does_not_block),
                TAP_CASE(test_alive_and_zombie),
                TAP_CASE(test_cmdline),
                TAP_CASE(test_start_time),
                TAP_CASE(test_stat_numbers),
                TAP_CASE(test_mntns_and_pidfd),
                {0},
        });
        rmdir(tmpdir);
        return r;
}
