/* SPDX-License-Identifier: Apache-2.0 */
/* The launcher: fork (or clone3 into a sandbox), set up swtpm's fds and
 * namespace, exec. See tpm/launch.h. */
#include "tpm/launch.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"

/* Where the launcher parks fds while it rearranges them. */
#define CHILD_FD_PARK 64

#define LOG_TAIL_MAX 3000

/* What the launcher child tells the parent over a SOCK_SEQPACKET pair. */
enum { REPORT_LOG_FD = 1, REPORT_FAILED = 2 };
enum { STAGE_SETSID = 1, STAGE_SETNS, STAGE_LOG, STAGE_PID, STAGE_FDS, STAGE_EXEC, STAGE_USER, STAGE_SANDBOX };
struct report {
        int kind;
        int stage;
        int error;
        long long log_offset;
        char step[48]; /* STAGE_SANDBOX: which step */
};

static const char *stage_name(int stage) {
        static const char *const names[] = {
                [STAGE_SETSID] = "setsid",
                [STAGE_SETNS] = "entering the mount namespace",
                [STAGE_LOG] = "opening the log file",
                [STAGE_PID] = "opening the pid file",
                [STAGE_FDS] = "setting up file descriptors",
                [STAGE_EXEC] = "executing swtpm",
                [STAGE_USER] = "becoming the swtpm user",
                [STAGE_SANDBOX] = "setting up the sandbox",
        };
        if (stage > 0 && (size_t)stage < ELEMENTSOF(names) && names[stage])
                return names[stage];
        return "starting swtpm";
}

/* What sandboxed tools see as their environment: nothing of the agent's. */
static char *const sandbox_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", NULL};

static void child_fail_step(int report_fd, int stage, int error, const char *step) {
        struct report m = {.kind = REPORT_FAILED, .stage = stage, .error = error};
        if (step) {
                size_t n = strlen(step);
                memcpy(m.step, step, n < sizeof(m.step) - 1 ? n : sizeof(m.step) - 1);
        }
        (void)send(report_fd, &m, sizeof(m), MSG_NOSIGNAL);
        _exit(127);
}

static void child_fail(int report_fd, int stage, int error) {
        child_fail_step(report_fd, stage, error, NULL);
}

static int park(int fd, int report_fd) {
        if (fd < 0)
                return -1;
        int p = fcntl(fd, F_DUPFD_CLOEXEC, CHILD_FD_PARK);
        if (p < 0)
                child_fail(report_fd, STAGE_FDS, errno);
        return p;
}

/* Between fork and exec, like everything below: async-signal-safe calls only.
 * The log fd and where swtpm's output starts in it, to the parent. */
static void send_log_fd(int report_fd, int log_fd, off_t off) {
        struct report m = {.kind = REPORT_LOG_FD, .log_offset = off < 0 ? 0 : (long long)off};
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } u;
        memset(&u, 0, sizeof(u));
        struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &log_fd, sizeof(int));
        if (sendmsg(report_fd, &mh, MSG_NOSIGNAL) < 0)
                child_fail(report_fd, STAGE_LOG, errno);
}

/* swtpm's fds at their fixed numbers, stdio on /dev/null and the log; returns
 * where the report socket went. */
static int arrange_fds(const tpm_launch *l, int report_fd, int log_fd, int pid_fd) {
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
                child_fail(report_fd, STAGE_FDS, errno);

        report_fd = park(report_fd, report_fd);
        int p_null = park(null_fd, report_fd), p_log = park(log_fd, report_fd), p_pid = park(pid_fd, report_fd),
            p_key = park(l->key_fd, report_fd), p_ctrl = park(l->ctrl_fd, report_fd);
        /* Nothing below the park area survives except what we put there. */
        if (close_range(0, CHILD_FD_PARK - 1, 0) < 0)
                child_fail(report_fd, STAGE_FDS, errno);
        if (dup2(p_null, 0) < 0 || dup2(p_log, 1) < 0 || dup2(p_log, 2) < 0 || dup2(p_log, TPM_CHILD_FD_LOG) < 0 ||
            (p_pid >= 0 && dup2(p_pid, TPM_CHILD_FD_PID) < 0) || (p_key >= 0 && dup2(p_key, TPM_CHILD_FD_KEY) < 0) ||
            (p_ctrl >= 0 && dup2(p_ctrl, TPM_CHILD_FD_CTRL) < 0))
                child_fail(report_fd, STAGE_FDS, errno);
        /* Every other inherited fd (the agent's sockets, other VMs' key pipes)
         * is closed at exec; the report socket stays open until then. */
        if (close_range(TPM_CHILD_FD_FIRST_FREE, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                child_fail(report_fd, STAGE_FDS, errno);
        return report_fd;
}

static void reset_signals(void) {
        struct sigaction sa = {.sa_handler = SIG_DFL};
        for (int s = 1; s < NSIG; s++)
                (void)sigaction(s, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Between fork and exec: async-signal-safe calls only. */
_noreturn_ static void launch_child(const tpm_launch *l, const tpm_sandbox_child *sc, int report_fd) {
        if (setsid() < 0)
                child_fail(report_fd, STAGE_SETSID, errno);
        /* The log and pid files are the agent's (node.runDir): open them before
         * entering the launcher, whose filesystem has no such paths. */
        int log_fd;
        if (l->log_file)
                log_fd = open(l->log_file, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
        else
                log_fd = memfd_create("swtpm-log", MFD_CLOEXEC);
        if (log_fd < 0)
                child_fail(report_fd, STAGE_LOG, errno);
        off_t off = lseek(log_fd, 0, SEEK_END);
        int pid_fd = -1;
        if (l->pid_file) {
                pid_fd = open(l->pid_file, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (pid_fd < 0)
                        child_fail(report_fd, STAGE_PID, errno);
        }
        if (l->sandbox) {
                const char *step = NULL;
                int sr = tpm_sandbox_enter(l->sandbox, sc, &step);
                if (sr < 0)
                        child_fail_step(report_fd, STAGE_SANDBOX, -sr, step);
        } else if (l->mntns_fd >= 0) {
                if (setns(l->mntns_fd, CLONE_NEWNS) < 0)
                        child_fail(report_fd, STAGE_SETNS, errno);
        }
        if (chdir("/") < 0)
                child_fail(report_fd, STAGE_SETNS, errno);

        /* Hand the log to the parent: it quotes the tail if swtpm fails, even
         * when the file lives in another mount namespace or only in memory. */
        send_log_fd(report_fd, log_fd, off);

        report_fd = arrange_fds(l, report_fd, log_fd, pid_fd);

        if (l->drop_user && (setgroups(0, NULL) < 0 || setgid(l->gid) < 0 || setuid(l->uid) < 0))
                child_fail(report_fd, STAGE_USER, errno);
        reset_signals();

        if (l->sandbox)
                execvpe(l->argv[0], l->argv, sandbox_env);
        else
                execvp(l->argv[0], l->argv);
        child_fail(report_fd, STAGE_EXEC, errno);
        _exit(127);
}

static char *read_log_tail(int log_fd, long long offset) {
        if (log_fd < 0)
                return xstrdup("(no log)");
        struct stat st;
        if (fstat(log_fd, &st) < 0 || st.st_size <= offset)
                return xstrdup("(log empty)");
        size_t len = (size_t)(st.st_size - offset);
        long long from = offset;
        if (len > LOG_TAIL_MAX) {
                from = st.st_size - LOG_TAIL_MAX;
                len = LOG_TAIL_MAX;
        }
        _cleanup_free_ char *buf = xmalloc(len + 1);
        ssize_t n = pread(log_fd, buf, len, from);
        if (n <= 0)
                return xstrdup("(log unreadable)");
        /* swtpm's hex dumps at higher log levels are noise in a message. */
        vt_buf b = {0};
        char *save = NULL;
        buf[n] = '\0';
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (line[0] == ' ' && strspn(line, " 0123456789ABCDEF") == strlen(line))
                        continue;
                if (b.len)
                        vt_buf_appends(&b, "; ");
                vt_buf_appends(&b, line);
        }
        if (!b.len) {
                vt_buf_free(&b);
                return xstrdup("(log empty)");
        }
        return vt_buf_steal(&b);
}

void tpm_child_done(tpm_child *c) {
        if (c->pidfd >= 0)
                close(c->pidfd);
        if (c->log_fd >= 0)
                close(c->log_fd);
        c->pidfd = c->log_fd = -1;
}

void tpm_child_kill(tpm_child *c) {
        if (c->pid <= 0)
                return;
        if (c->pidfd >= 0)
                (void)pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
        else
                (void)kill(c->pid, SIGKILL);
        while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        c->pid = 0;
}

/* Until exec closes the report socket: the log fd, or the step that failed
 * (the child is then reaped). */
static int read_reports(int rep, tpm_child *c, vt_error **err) {
        for (;;) {
                struct report m = {0};
                union {
                        char buf[CMSG_SPACE(sizeof(int))];
                        struct cmsghdr align;
                } u;
                struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
                struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                    .msg_controllen = sizeof(u.buf)};
                ssize_t n = recvmsg(rep, &mh, MSG_CMSG_CLOEXEC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n == 0)
                        return 0; /* exec closed the report socket: swtpm runs */
                if (n < 0 || (size_t)n != sizeof(m)) {
                        int e = n < 0 ? errno : EPROTO;
                        tpm_child_kill(c);
                        tpm_child_done(c);
                        return vt_error_errno(err, e, "lost contact with the swtpm launcher");
                }
                struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                if (m.kind == REPORT_LOG_FD && cm && cm->cmsg_type == SCM_RIGHTS) {
                        memcpy(&c->log_fd, CMSG_DATA(cm), sizeof(int));
                        c->log_offset = m.log_offset;
                        continue;
                }
                if (m.kind == REPORT_FAILED) {
                        while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                                ;
                        c->pid = 0;
                        tpm_child_done(c);
                        m.step[sizeof(m.step) - 1] = '\0';
                        return vt_error_errno(err, m.error, "swtpm launcher failed %s%s%s%s", stage_name(m.stage),
                                              m.step[0] ? " (" : "", m.step, m.step[0] ? ")" : "");
                }
        }
}

int tpm_launch_spawn(const tpm_launch *l, tpm_child *ret, vt_error **err) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
                return vt_error_errno(err, errno, "cannot create socketpair");
        _cleanup_close_ int rep = sp[0];
        tpm_sandbox_child sc = {.gate_fd = -1};
        pid_t pid;
        if (l->sandbox) {
                int cr = tpm_sandbox_clone(l->sandbox, &sc);
                if (cr < 0) {
                        close(sp[1]);
                        return vt_error_errno(err, -cr, "cannot create swtpm's sandbox (clone3)");
                }
                pid = cr;
        } else
                pid = fork();
        if (pid < 0) {
                close(sp[1]);
                return vt_error_errno(err, errno, "cannot fork");
        }
        if (pid == 0) {
                close(sp[0]);
                launch_child(l, &sc, sp[1]);
        }
        close(sp[1]);
        if (l->sandbox) {
                int rr = tpm_sandbox_release(l->sandbox, &sc, err);
                if (rr < 0)
                        return rr;
        }
        tpm_child c = {.pid = pid, .pidfd = -1, .log_fd = -1};
        int r = read_reports(rep, &c, err);
        if (r < 0)
                return r;
        c.pidfd = pidfd_open(pid, 0);
        if (c.pidfd < 0) {
                int e = errno;
                tpm_child_kill(&c);
                tpm_child_done(&c);
                return vt_error_errno(err, e, "pidfd_open(%d)", (int)pid);
        }
        *ret = c;
        return 0;
}

bool tpm_child_exited(tpm_child *c, int wait_ms, int *ret_status) {
        struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
        if (poll(&p, 1, wait_ms) <= 0)
                return false;
        int st = 0;
        while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR)
                ;
        c->pid = 0;
        if (ret_status)
                *ret_status = st;
        return true;
}

char *tpm_child_log_tail(const tpm_child *c) {
        return read_log_tail(c->log_fd, c->log_offset);
}
