/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/swtpm.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <linux/close_range.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tpm_ioctl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "keys/secmem.h"
#include "proc/peer.h"
#include "tpm/ctrl.h"
#include "tpm/exec.h"

/* Fixed fd numbers in the swtpm process (see tpm_swtpm_argv). */
enum { CHILD_FD_LOG = 3, CHILD_FD_PID = 4, CHILD_FD_KEY = 5, CHILD_FD_CTRL = 6, CHILD_FD_FIRST_FREE = 7 };
/* Where the launcher parks fds while it rearranges them. */
#define CHILD_FD_PARK 64

#define LOG_TAIL_MAX 3000

void tpm_strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static int push(char ***v, size_t *n, char *s) {
        *v = xrealloc(*v, (*n + 2) * sizeof(char *));
        (*v)[(*n)++] = s;
        (*v)[*n] = NULL;
        return 0;
}

/* argv for the real start (ctrl_clientfd false) or for a probe (control
 * channel on inherited fd CHILD_FD_CTRL, no sockets, no pid file). */
static char **build_argv(const tpm_swtpm_opts *o, bool probe, vt_error **err) {
        int r;
        if ((r = tpm_check_option_path("TPM state", o->state_dir, err)) < 0)
                return NULL;
        if (!probe && (r = tpm_check_option_path("control socket", o->ctrl_path, err)) < 0)
                return NULL;
        if (!probe && o->server_path && (r = tpm_check_option_path("data socket", o->server_path, err)) < 0)
                return NULL;
        const char *cipher = NULL;
        if (o->key && !(cipher = tpm_key_cipher(o->key_len))) {
                vt_error_set(err, EINVAL, "TPM state key must be 16 or 32 bytes, not %zu", o->key_len);
                return NULL;
        }
        _cleanup_free_ char *owner = NULL;
        if (!probe && o->ctrl_owner) {
                unsigned uid, gid;
                if (tpm_lookup_user(o->ctrl_owner, &uid, &gid, err) < 0)
                        return NULL;
                owner = xasprintf(",uid=%u,gid=%u", uid, gid);
        }
        _cleanup_free_ char *mode = (!probe && o->ctrl_mode) ? xasprintf(",mode=0%o", o->ctrl_mode) : xstrdup("");

        char **v = NULL;
        size_t n = 0;
        push(&v, &n, xstrdup(o->swtpm_path ? o->swtpm_path : "swtpm"));
        push(&v, &n, xstrdup("socket"));
        if (o->version == TPM_VERSION_2)
                push(&v, &n, xstrdup("--tpm2"));
        push(&v, &n, xstrdup("--tpmstate"));
        push(&v, &n, xasprintf("dir=%s,mode=0600", o->state_dir));
        push(&v, &n, xstrdup("--ctrl"));
        if (probe)
                push(&v, &n, xasprintf("type=unixio,clientfd=%d", CHILD_FD_CTRL));
        else
                push(&v, &n, xasprintf("type=unixio,path=%s%s%s", o->ctrl_path, mode, owner ? owner : ""));
        if (!probe && o->server_path) {
                push(&v, &n, xstrdup("--server"));
                push(&v, &n, xasprintf("type=unixio,path=%s%s%s", o->server_path, mode, owner ? owner : ""));
        }
        push(&v, &n, xstrdup("--log"));
        push(&v, &n, xasprintf("fd=%d,level=%d", CHILD_FD_LOG, o->log_level > 0 ? o->log_level : 1));
        if (!probe && o->pid_file) {
                push(&v, &n, xstrdup("--pid"));
                push(&v, &n, xasprintf("fd=%d", CHILD_FD_PID));
        }
        if (o->key) {
                push(&v, &n, xstrdup("--key"));
                push(&v, &n, xasprintf("fd=%d,mode=%s,format=binary", CHILD_FD_KEY, cipher));
        }
        if (o->runas) {
                push(&v, &n, xstrdup("--runas"));
                push(&v, &n, xstrdup(o->runas));
        }
        if (o->sandbox) {
                /* swtpm's own filter on top of the sandbox: a syscall it never
                 * needs (exec, mount, ptrace, ...) kills it. */
                push(&v, &n, xstrdup("--seccomp"));
                push(&v, &n, xstrdup("action=kill"));
        }
        return v;
}

char **tpm_swtpm_argv(const tpm_swtpm_opts *o, vt_error **err) {
        if (!o) {
                vt_error_set(err, EINVAL, "no options");
                return NULL;
        }
        return build_argv(o, false, err);
}

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
        switch (stage) {
        case STAGE_SETSID:
                return "setsid";
        case STAGE_SETNS:
                return "entering the mount namespace";
        case STAGE_LOG:
                return "opening the log file";
        case STAGE_PID:
                return "opening the pid file";
        case STAGE_FDS:
                return "setting up file descriptors";
        case STAGE_EXEC:
                return "executing swtpm";
        case STAGE_USER:
                return "becoming the swtpm user";
        case STAGE_SANDBOX:
                return "setting up the sandbox";
        default:
                return "starting swtpm";
        }
}

typedef struct launch {
        char **argv;
        const char *log_file, *pid_file;
        int mntns_fd;
        int key_fd;   /* -1 or read end of the key pipe */
        int ctrl_fd;  /* -1 or the child's end of the control socketpair */
        bool drop_user; /* become uid/gid before exec (instead of swtpm's --runas) */
        uid_t uid;
        gid_t gid;
        const tpm_sandbox *sandbox; /* NULL: none */
} launch;

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

/* Between fork and exec: async-signal-safe calls only. */
_noreturn_ static void launch_child(const launch *l, const tpm_sandbox_child *sc, int report_fd) {
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

        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
                child_fail(report_fd, STAGE_FDS, errno);

        report_fd = park(report_fd, report_fd);
        int p_null = park(null_fd, report_fd), p_log = park(log_fd, report_fd), p_pid = park(pid_fd, report_fd),
            p_key = park(l->key_fd, report_fd), p_ctrl = park(l->ctrl_fd, report_fd);
        /* Nothing below the park area survives except what we put there. */
        if (close_range(0, CHILD_FD_PARK - 1, 0) < 0)
                child_fail(report_fd, STAGE_FDS, errno);
        if (dup2(p_null, 0) < 0 || dup2(p_log, 1) < 0 || dup2(p_log, 2) < 0 || dup2(p_log, CHILD_FD_LOG) < 0 ||
            (p_pid >= 0 && dup2(p_pid, CHILD_FD_PID) < 0) || (p_key >= 0 && dup2(p_key, CHILD_FD_KEY) < 0) ||
            (p_ctrl >= 0 && dup2(p_ctrl, CHILD_FD_CTRL) < 0))
                child_fail(report_fd, STAGE_FDS, errno);
        /* Every other inherited fd (the agent's sockets, other VMs' key pipes)
         * is closed at exec; the report socket stays open until then. */
        if (close_range(CHILD_FD_FIRST_FREE, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                child_fail(report_fd, STAGE_FDS, errno);

        if (l->drop_user && (setgroups(0, NULL) < 0 || setgid(l->gid) < 0 || setuid(l->uid) < 0))
                child_fail(report_fd, STAGE_USER, errno);

        struct sigaction sa = {.sa_handler = SIG_DFL};
        for (int s = 1; s < NSIG; s++)
                (void)sigaction(s, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);

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

typedef struct child {
        pid_t pid;
        int pidfd;
        int log_fd;
        long long log_offset;
} child;

static void child_done(child *c) {
        if (c->pidfd >= 0)
                close(c->pidfd);
        if (c->log_fd >= 0)
                close(c->log_fd);
        c->pidfd = c->log_fd = -1;
}

static void kill_and_reap(child *c) {
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

/* Fork the launcher; on success the child has exec'ed swtpm. */
static int spawn(const launch *l, child *ret, vt_error **err) {
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
        child c = {.pid = pid, .pidfd = -1, .log_fd = -1};
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
                        break; /* exec closed the report socket: swtpm runs */
                if (n < 0 || (size_t)n != sizeof(m)) {
                        int e = n < 0 ? errno : EPROTO;
                        kill_and_reap(&c);
                        child_done(&c);
                        return vt_error_errno(err, e, "lost contact with the swtpm launcher");
                }
                struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                if (m.kind == REPORT_LOG_FD && cm && cm->cmsg_type == SCM_RIGHTS) {
                        memcpy(&c.log_fd, CMSG_DATA(cm), sizeof(int));
                        c.log_offset = m.log_offset;
                        continue;
                }
                if (m.kind == REPORT_FAILED) {
                        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                                ;
                        c.pid = 0;
                        child_done(&c);
                        m.step[sizeof(m.step) - 1] = '\0';
                        return vt_error_errno(err, m.error, "swtpm launcher failed %s%s%s%s", stage_name(m.stage),
                                              m.step[0] ? " (" : "", m.step, m.step[0] ? ")" : "");
                }
        }
        c.pidfd = pidfd_open(pid, 0);
        if (c.pidfd < 0) {
                int e = errno;
                kill_and_reap(&c);
                child_done(&c);
                return vt_error_errno(err, e, "pidfd_open(%d)", (int)pid);
        }
        *ret = c;
        return 0;
}

/* Has the child exited? Reaps it (status in *ret_status) if so. */
static bool child_exited(child *c, int wait_ms, int *ret_status) {
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

static char *agent_ctrl_path(const tpm_swtpm_opts *o, pid_t pid) {
        if (o->ctrl_via)
                return xstrdup(o->ctrl_via);
        /* In another mount namespace the socket is reachable through the
         * process's root: /proc/<pid>/root/<path>. */
        if (o->mntns_fd >= 0 || o->sandbox)
                return xasprintf("/proc/%d/root%s", (int)pid, o->ctrl_path);
        return xstrdup(o->ctrl_path);
}

int tpm_swtpm_start(const tpm_swtpm_opts *o, pid_t *ret_pid, vt_error **err) {
        assert_return(o && o->state_dir && o->ctrl_path && ret_pid, -EINVAL);
        /* Inside a launcher, the user is ours to resolve: the launcher's image
         * need not know it (or may give the name another uid than the one
         * owning the state files). So no --runas: the child drops to the
         * uid/gid resolved here, just before exec. */
        if (o->sandbox && (o->runas || o->mntns_fd >= 0))
                return vt_error_set(err, EINVAL, "a sandboxed swtpm takes neither runas nor a mount namespace");
        tpm_swtpm_opts eff = *o;
        bool drop = o->mntns_fd >= 0 && o->runas;
        uid_t uid = 0;
        gid_t gid = 0;
        if (drop) {
                struct passwd pw, *found = NULL;
                char buf[4096];
                int e = getpwnam_r(o->runas, &pw, buf, sizeof(buf), &found);
                if (!found)
                        return vt_error_set(err, e ? e : ENOENT, "swtpm user '%s' does not exist on this node",
                                            o->runas);
                uid = pw.pw_uid;
                gid = pw.pw_gid;
                eff.runas = NULL;
        }
        char **argv = build_argv(&eff, false, err);
        if (!argv)
                return err && *err ? -(*err)->code : -EINVAL;
        _cleanup_close_ int key_fd = -1;
        int r;
        if (o->key && (r = tpm_key_pipe(o->key, o->key_len, false, &key_fd, err)) < 0) {
                tpm_strv_free(argv);
                return r;
        }
        launch l = {.argv = argv, .log_file = o->log_file, .pid_file = o->pid_file, .mntns_fd = o->mntns_fd,
                    .key_fd = key_fd, .ctrl_fd = -1, .drop_user = drop, .uid = uid, .gid = gid,
                    .sandbox = o->sandbox};
        child c;
        r = spawn(&l, &c, err);
        tpm_strv_free(argv);
        /* Our copy of the key pipe goes now: only swtpm holds it. */
        if (key_fd >= 0)
                close(TAKE_FD(key_fd));
        if (r < 0)
                return vt_error_prefix(err, "starting swtpm for %s: ", o->state_dir);

        _cleanup_free_ char *ctrl = agent_ctrl_path(o, c.pid);
        usec_t deadline = now_monotonic() + (o->timeout ? o->timeout : 10 * USEC_PER_SEC);
        for (;;) {
                int status;
                if (child_exited(&c, 0, &status)) {
                        _cleanup_free_ char *st = tpm_describe_status(status);
                        _cleanup_free_ char *tail = read_log_tail(c.log_fd, c.log_offset);
                        child_done(&c);
                        return vt_error_set(err, EIO, "swtpm for %s %s before its control channel answered: %s",
                                            o->state_dir, st, tail);
                }
                _cleanup_error_ vt_error *cerr = NULL;
                r = tpm_ctrl_get_capability(ctrl, 200 * USEC_PER_MSEC, NULL, &cerr);
                if (r >= 0)
                        break;
                if (now_monotonic() >= deadline) {
                        kill_and_reap(&c);
                        _cleanup_free_ char *tail = read_log_tail(c.log_fd, c.log_offset);
                        child_done(&c);
                        return vt_error_set(err, ETIMEDOUT,
                                            "swtpm for %s did not answer on %s in time (%s); log: %s", o->state_dir,
                                            o->ctrl_path, cerr ? cerr->msg : "no answer", tail);
                }
                (void)child_exited(&c, 5, NULL);
                if (c.pid == 0) {
                        /* exited while we waited: report on the next turn */
                        _cleanup_free_ char *tail = read_log_tail(c.log_fd, c.log_offset);
                        child_done(&c);
                        return vt_error_set(err, EIO, "swtpm for %s exited before its control channel answered: %s",
                                            o->state_dir, tail);
                }
        }
        *ret_pid = c.pid;
        child_done(&c);
        return 0;
}

static bool wait_gone(int pidfd, usec_t deadline) {
        for (;;) {
                usec_t now = now_monotonic();
                int ms = now >= deadline ? 0 : (int)((deadline - now + 999) / 1000);
                struct pollfd p = {.fd = pidfd, .events = POLLIN};
                int n = poll(&p, 1, ms);
                if (n > 0)
                        return true;
                if (n < 0 && errno == EINTR)
                        continue;
                return false;
        }
}

static void reap_if_child(pid_t pid) {
        /* Our own child: collect it. Adopted (not ours): ECHILD, nothing to do. */
        while (waitpid(pid, NULL, WNOHANG) < 0 && errno == EINTR)
                ;
}

/* CMD_SHUTDOWN over the control socket at `ctrl_in_root` inside the root
 * of swtpm itself (/proc/<pid>/root): resolved with RESOLVE_IN_ROOT and no
 * symlinks (the root is a launcher's, which the launcher can rewrite), and
 * sent only if swtpm itself is the listener. Best effort: the caller falls
 * back to signals through the pidfd. true when the request was answered. */
static bool shutdown_in_root(int pidfd, pid_t pid, const char *ctrl_in_root, usec_t timeout) {
        _cleanup_free_ char *rootp = xasprintf("/proc/%d/root", (int)pid);
        _cleanup_close_ int root = open(rootp, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0 || pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
                return false; /* gone, or the pid is another process's now */
        _cleanup_close_ int fd = -1;
        if (unix_connect_at(root, ctrl_in_root, RESOLVE_IN_ROOT, &fd, NULL, NULL) < 0)
                return false;
        struct ucred uc = {0};
        socklen_t len = sizeof(uc);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0 || uc.pid != pid)
                return false; /* someone else's socket: not told to shut down */
        uint8_t resp[4];
        return tpm_ctrl_call_fd(fd, ctrl_in_root, CMD_SHUTDOWN, NULL, 0, resp, 4, 4, timeout, NULL) >= 4;
}

static int stop(const char *ctrl_path, const char *ctrl_in_root, pid_t pid, usec_t timeout, vt_error **err) {
        assert_return(pid > 0, -EINVAL);
        if (!timeout)
                timeout = 10 * USEC_PER_SEC;
        _cleanup_close_ int pidfd = pidfd_open(pid, 0);
        if (pidfd < 0) {
                if (errno == ESRCH) {
                        reap_if_child(pid);
                        return 0;
                }
                return vt_error_errno(err, errno, "cannot watch swtpm pid %d", (int)pid);
        }
        usec_t start = now_monotonic(), deadline = start + timeout;
        if (ctrl_in_root) {
                /* Not sent (refused, or QEMU holds the channel): signals at once. */
                bool sent = shutdown_in_root(pidfd, pid, ctrl_in_root, timeout / 2);
                if (wait_gone(pidfd, sent ? deadline : now_monotonic())) {
                        reap_if_child(pid);
                        return 0;
                }
        } else if (ctrl_path) {
                /* Half the budget for the control channel; if QEMU still holds
                 * it, the request is never read and we fall back to signals. */
                _cleanup_error_ vt_error *cerr = NULL;
                (void)tpm_ctrl_shutdown(ctrl_path, timeout / 2, &cerr);
                if (wait_gone(pidfd, deadline)) {
                        reap_if_child(pid);
                        return 0;
                }
        }
        /* swtpm handles SIGTERM by shutting the TPM down and writing its state. */
        (void)pidfd_send_signal(pidfd, SIGTERM, NULL, 0);
        if (wait_gone(pidfd, now_monotonic() + 3 * USEC_PER_SEC)) {
                reap_if_child(pid);
                return 1;
        }
        (void)pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        if (wait_gone(pidfd, now_monotonic() + 3 * USEC_PER_SEC)) {
                reap_if_child(pid);
                return 1;
        }
        return vt_error_set(err, ETIMEDOUT, "swtpm pid %d did not exit even after SIGKILL", (int)pid);
}

int tpm_swtpm_stop(const char *ctrl_path, pid_t pid, usec_t timeout, vt_error **err) {
        return stop(ctrl_path, NULL, pid, timeout, err);
}

int tpm_swtpm_stop_in_root(const char *ctrl_in_root, pid_t pid, usec_t timeout, vt_error **err) {
        return stop(NULL, ctrl_in_root, pid, timeout, err);
}

/* Does the comma-separated option value `arg` contain field `path=<want>`? */
static bool arg_has_path(const char *arg, const char *want) {
        size_t wl = strlen(want);
        for (const char *p = arg; p && *p;) {
                const char *end = strchr(p, ',');
                size_t l = end ? (size_t)(end - p) : strlen(p);
                if (l == 5 + wl && strncmp(p, "path=", 5) == 0 && strncmp(p + 5, want, wl) == 0)
                        return true;
                p = end ? end + 1 : NULL;
        }
        return false;
}

int tpm_swtpm_adopt(const char *pid_file, const char *ctrl_path, const char *ctrl_path_in_ns, usec_t timeout,
                    pid_t *ret_pid, bool *ret_ctrl_busy, vt_error **err) {
        assert_return(pid_file && ctrl_path && ret_pid, -EINVAL);
        const char *want = ctrl_path_in_ns ? ctrl_path_in_ns : ctrl_path;
        _cleanup_free_ char *txt = NULL;
        int r = read_full_file(pid_file, 64, &txt, NULL, err);
        if (r < 0)
                return r;
        char *end = NULL;
        errno = 0;
        long v = strtol(txt, &end, 10);
        if (errno || end == txt || v <= 1 || v > 0x3fffffff || (*end && *end != '\n'))
                return vt_error_set(err, EBADMSG, "pid file %s does not hold a pid", pid_file);
        pid_t pid = (pid_t)v;

        /* Hold a pidfd while checking, so a recycled pid cannot slip in
         * between the checks and the answer. */
        _cleanup_close_ int pidfd = pidfd_open(pid, 0);
        if (pidfd < 0)
                return vt_error_errno(err, errno == ESRCH ? ESRCH : errno, "swtpm pid %d from %s is not running",
                                      (int)pid, pid_file);
        if (wait_gone(pidfd, 0))
                return vt_error_set(err, ESRCH, "swtpm pid %d from %s has exited", (int)pid, pid_file);

        char path[64], exe[4096];
        snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
        ssize_t n = readlink(path, exe, sizeof(exe) - 1);
        if (n < 0)
                return vt_error_errno(err, errno, "cannot read %s", path);
        exe[n] = '\0';
        const char *base = strrchr(exe, '/');
        base = base ? base + 1 : exe;
        /* "swtpm", or "swtpm (deleted)" after a package upgrade. */
        if (strncmp(base, "swtpm", 5) != 0 || (base[5] != '\0' && base[5] != ' '))
                return vt_error_set(err, ESRCH, "pid %d from %s is %s, not swtpm", (int)pid, pid_file, exe);

        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        _cleanup_free_ char *cmd = NULL;
        size_t cl = 0;
        r = read_full_file(path, 64 * 1024, &cmd, &cl, err);
        if (r < 0)
                return r;
        bool found = false;
        for (size_t i = 0; i < cl;) {
                const char *a = cmd + i;
                size_t al = strlen(a);
                if (strcmp(a, "--ctrl") == 0 && i + al + 1 < cl && arg_has_path(cmd + i + al + 1, want))
                        found = true;
                i += al + 1;
        }
        if (!found)
                return vt_error_set(err, ESRCH, "swtpm pid %d from %s does not serve control socket %s", (int)pid,
                                    pid_file, want);

        _cleanup_error_ vt_error *cerr = NULL;
        r = tpm_ctrl_get_capability(ctrl_path, timeout ? timeout : 2 * USEC_PER_SEC, NULL, &cerr);
        bool busy = false;
        if (r == -ETIMEDOUT)
                busy = true; /* QEMU holds the channel: the VM is using its TPM */
        else if (r < 0)
                return vt_error_set(err, -r, "swtpm pid %d is running but its control channel fails: %s", (int)pid,
                                    cerr ? cerr->msg : "unknown error");
        if (wait_gone(pidfd, 0))
                return vt_error_set(err, ESRCH, "swtpm pid %d exited while being adopted", (int)pid);
        *ret_pid = pid;
        if (ret_ctrl_busy)
                *ret_ctrl_busy = busy;
        return 0;
}

/* ---- copying a state from one key to another ---- */

static int io_wait(int fd, short ev, usec_t deadline) {
        for (;;) {
                usec_t now = now_monotonic();
                if (now >= deadline)
                        return -ETIMEDOUT;
                struct pollfd p = {.fd = fd, .events = ev};
                int n = poll(&p, 1, (int)((deadline - now) / USEC_PER_MSEC) + 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n > 0)
                        return 0;
        }
}

static int io_send(int fd, const void *p, size_t n, usec_t deadline) {
        const uint8_t *b = p;
        while (n > 0) {
                ssize_t w = send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN) {
                        int r = io_wait(fd, POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (w < 0)
                        return -errno;
                b += w;
                n -= (size_t)w;
        }
        return 0;
}

/* Exactly n bytes; -EPIPE when the peer closed first. */
static int io_recv(int fd, void *p, size_t n, usec_t deadline) {
        uint8_t *b = p;
        while (n > 0) {
                ssize_t g = recv(fd, b, n, MSG_DONTWAIT);
                if (g < 0 && errno == EINTR)
                        continue;
                if (g < 0 && errno == EAGAIN) {
                        int r = io_wait(fd, POLLIN, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (g < 0)
                        return -errno;
                if (g == 0)
                        return -EPIPE;
                b += g;
                n -= (size_t)g;
        }
        return 0;
}

static uint32_t get_be32(const uint8_t *p) {
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

/* A private swtpm on o->state_dir, controlled over a socketpair. */
typedef struct private_tpm {
        child c;
        int fd;
        const char *dir;
} private_tpm;

static int private_open(const tpm_swtpm_opts *o, private_tpm *ret, vt_error **err) {
        char **argv = build_argv(o, true, err);
        if (!argv)
                return err && *err ? -(*err)->code : -EINVAL;
        _cleanup_close_ int key_fd = -1;
        int r;
        if (o->key && (r = tpm_key_pipe(o->key, o->key_len, false, &key_fd, err)) < 0) {
                tpm_strv_free(argv);
                return r;
        }
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
                tpm_strv_free(argv);
                return vt_error_errno(err, errno, "cannot create socketpair");
        }
        _cleanup_close_ int ours = sp[0], theirs = sp[1];
        launch l = {.argv = argv, .mntns_fd = o->mntns_fd, .key_fd = key_fd, .ctrl_fd = theirs,
                    .sandbox = o->sandbox};
        child c;
        r = spawn(&l, &c, err);
        tpm_strv_free(argv);
        if (r < 0)
                return vt_error_prefix(err, "swtpm on %s: ", o->state_dir);
        *ret = (private_tpm){.c = c, .fd = TAKE_FD(ours), .dir = o->state_dir};
        return 0;
}

/* CMD_SHUTDOWN (writes what the TPM holds), then wait for the process. */
static char *private_close(private_tpm *t) {
        if (t->fd >= 0) {
                uint8_t resp[4];
                (void)tpm_ctrl_call_fd(t->fd, t->dir, CMD_SHUTDOWN, NULL, 0, resp, 4, 4, 5 * USEC_PER_SEC, NULL);
                close(TAKE_FD(t->fd));
        }
        if (t->c.pid > 0 && !child_exited(&t->c, 5000, NULL))
                kill_and_reap(&t->c);
        char *tail = read_log_tail(t->c.log_fd, t->c.log_offset);
        child_done(&t->c);
        return tail;
}

static int private_init(private_tpm *t, usec_t timeout, vt_error **err) {
        uint32_t req = 0; /* keep any volatile state file */
        uint8_t resp[4];
        int r = tpm_ctrl_call_fd(t->fd, t->dir, CMD_INIT, &req, 4, resp, 4, 4, timeout, err);
        if (r < 0)
                return r;
        uint32_t res = get_be32(resp);
        if (res != 0)
                return vt_error_set(err, TPM_ESTATE, "TPM state in %s cannot be loaded (CMD_INIT: TPM result 0x%x)",
                                    t->dir, res);
        return 0;
}

/* Load the state in a private swtpm (CMD_INIT) and stop it again. */
int tpm_probe_state(const tpm_swtpm_opts *o, vt_error **err) {
        assert_return(o && o->state_dir, -EINVAL);
        int r = tpm_state_detect(o->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, ENOENT, "no TPM state in %s to probe", o->state_dir);
        private_tpm t;
        r = private_open(o, &t, err);
        if (r < 0)
                return vt_error_prefix(err, "probing TPM state: ");

        usec_t timeout = o->timeout ? o->timeout : 10 * USEC_PER_SEC;
        _cleanup_error_ vt_error *cerr = NULL;
        uint32_t req = 0; /* flags 0: do not delete the volatile state file */
        uint8_t resp[4];
        r = tpm_ctrl_call_fd(t.fd, t.dir, CMD_INIT, &req, 4, resp, 4, 4, timeout, &cerr);
        uint32_t res = r >= 0 ? get_be32(resp) : 0;
        _cleanup_free_ char *tail = private_close(&t);

        if (r < 0)
                return vt_error_set(err, cerr ? cerr->code : EIO, "probing TPM state in %s: %s; log: %s", o->state_dir,
                                    cerr ? cerr->msg : "no answer", tail);
        if (res != 0) {
                /* Another swtpm holding the directory is not a broken state. */
                if (strstr(tail, "lockfile"))
                        return vt_error_set(err, EBUSY, "TPM state in %s is in use by another swtpm: %s",
                                            o->state_dir, tail);
                return vt_error_set(err, TPM_ESTATE,
                                    "TPM state in %s cannot be loaded%s (CMD_INIT: TPM result 0x%x): %s", o->state_dir,
                                    o->key ? " with the given key" : " without a key", res, tail);
        }
        return 0;
}

#define STATEBLOB_MAX (1024 * 1024)

/* The plaintext state holds the TPM's seeds: it goes into locked memory. */
static int private_get_blob(private_tpm *t, uint32_t type, usec_t timeout, secmem **ret, vt_error **err) {
        usec_t deadline = now_monotonic() + timeout;
        uint8_t msg[16];
        put_be32(msg, CMD_GET_STATEBLOB);
        put_be32(msg + 4, PTM_STATE_FLAG_DECRYPTED);
        put_be32(msg + 8, type);
        put_be32(msg + 12, 0); /* offset */
        int r = io_send(t->fd, msg, sizeof(msg), deadline);
        uint8_t hdr[16];
        if (r >= 0)
                r = io_recv(t->fd, hdr, 4, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "CMD_GET_STATEBLOB to swtpm on %s", t->dir);
        uint32_t res = get_be32(hdr);
        if (res != 0)
                return vt_error_set(err, EIO, "CMD_GET_STATEBLOB (type %u) on %s: TPM result 0x%x", type, t->dir, res);
        r = io_recv(t->fd, hdr + 4, 12, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "CMD_GET_STATEBLOB from swtpm on %s", t->dir);
        uint32_t flags = get_be32(hdr + 4), tot = get_be32(hdr + 8), len = get_be32(hdr + 12);
        if (flags & PTM_STATE_FLAG_ENCRYPTED)
                return vt_error_set(err, EPROTO, "swtpm on %s returned the state still encrypted", t->dir);
        if (len != tot || len == 0 || len > STATEBLOB_MAX)
                return vt_error_set(err, EPROTO, "CMD_GET_STATEBLOB on %s: unexpected length %u of %u", t->dir,
                                    len, tot);
        _cleanup_secmem_ secmem *data = NULL;
        r = secmem_new(len, &data, err);
        if (r < 0)
                return r;
        r = io_recv(t->fd, data->data, len, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "CMD_GET_STATEBLOB data from swtpm on %s", t->dir);
        *ret = TAKE_PTR(data);
        return 0;
}

static int private_set_blob(private_tpm *t, uint32_t type, const uint8_t *data, size_t len, usec_t timeout,
                            vt_error **err) {
        usec_t deadline = now_monotonic() + timeout;
        uint8_t msg[16];
        put_be32(msg, CMD_SET_STATEBLOB);
        put_be32(msg + 4, 0); /* plaintext: swtpm encrypts it with its own key */
        put_be32(msg + 8, type);
        put_be32(msg + 12, (uint32_t)len);
        int r = io_send(t->fd, msg, sizeof(msg), deadline);
        if (r >= 0)
                r = io_send(t->fd, data, len, deadline);
        uint8_t resp[4];
        if (r >= 0)
                r = io_recv(t->fd, resp, 4, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "CMD_SET_STATEBLOB to swtpm on %s", t->dir);
        uint32_t res = get_be32(resp);
        if (res != 0)
                return vt_error_set(err, EIO, "CMD_SET_STATEBLOB (type %u) on %s: TPM result 0x%x", type, t->dir, res);
        return 0;
}

int tpm_copy_state(const tpm_swtpm_opts *from, const tpm_swtpm_opts *to, vt_error **err) {
        assert_return(from && to && from->state_dir && to->state_dir, -EINVAL);
        tpm_version v = TPM_VERSION_2;
        int r = tpm_state_detect(from->state_dir, &v, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, ENOENT, "no TPM state in %s to copy", from->state_dir);
        /* Only the permanent state is carried over. A volatile or savestate
         * file exists only after a suspend or migration of the running TPM;
         * copying it would mean resuming a TPM outside QEMU: refuse instead. */
        const char *extra[] = {"tpm2-00.volatilestate", "tpm2-00.savestate", "tpm-00.volatilestate",
                               "tpm-00.savestate"};
        for (size_t i = 0; i < ELEMENTSOF(extra); i++) {
                _cleanup_free_ char *p = xasprintf("%s/%s", from->state_dir, extra[i]);
                if (access(p, F_OK) == 0)
                        return vt_error_set(err, EBUSY,
                                            "%s holds %s (a suspended TPM); its state is not re-encrypted",
                                            from->state_dir, extra[i]);
        }
        r = tpm_state_detect(to->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r > 0)
                return vt_error_set(err, EEXIST, "%s already holds TPM state", to->state_dir);
        usec_t timeout = from->timeout ? from->timeout : 10 * USEC_PER_SEC;

        /* 1. The plaintext permanent state, from a swtpm with the old key.
         *    INIT loads (and decrypts) it; no TPM command runs, so nothing is
         *    written to the source directory. */
        private_tpm src = {.fd = -1};
        r = private_open(from, &src, err);
        if (r < 0)
                return r;
        _cleanup_secmem_ secmem *blob = NULL;
        r = private_init(&src, timeout, err);
        if (r >= 0)
                r = private_get_blob(&src, PTM_BLOB_TYPE_PERMANENT, timeout, &blob, err);
        _cleanup_free_ char *src_tail = private_close(&src);
        if (r < 0)
                return vt_error_prefix(err, "reading the state (swtpm log: %s): ", src_tail);

        /* 2. Into a swtpm with the new key on the empty target: SET before
         *    INIT, INIT writes it there (encrypted with the new key), and
         *    SHUTDOWN ends it. */
        private_tpm dst = {.fd = -1};
        r = private_open(to, &dst, err);
        if (r >= 0) {
                r = private_set_blob(&dst, PTM_BLOB_TYPE_PERMANENT, blob->data, blob->len, timeout, err);
                if (r >= 0)
                        r = private_init(&dst, timeout, err);
                _cleanup_free_ char *dst_tail = private_close(&dst);
                if (r < 0)
                        (void)vt_error_prefix(err, "writing the state (swtpm log: %s): ", dst_tail);
        }
        if (r < 0)
                return r;
        r = tpm_state_detect(to->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, EIO, "swtpm wrote no state into %s", to->state_dir);
        return 0;
}
