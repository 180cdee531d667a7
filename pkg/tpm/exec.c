/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/exec.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"

void tpm_run_result_done(tpm_run_result *r) {
        if (!r)
                return;
        free(r->out);
        free(r->err);
        r->out = r->err = NULL;
}

char *tpm_describe_status(int status) {
        if (WIFEXITED(status))
                return xasprintf("exited with status %d", WEXITSTATUS(status));
        if (WIFSIGNALED(status))
                return xasprintf("killed by signal %d", WTERMSIG(status));
        return xasprintf("ended with wait status 0x%x", (unsigned)status);
}

char *tpm_text_tail(const char *text, size_t len, size_t max) {
        if (!text)
                return xstrdup("");
        if (len <= max)
                return xstrndup(text, len);
        const char *p = text + len - max;
        const char *nl = memchr(p, '\n', max);
        if (nl && (size_t)(nl - p) < max / 2)
                p = nl + 1;
        return xasprintf("...%.*s", (int)(text + len - p), p);
}

/* Keep the last TPM_RUN_OUTPUT_MAX bytes: the end of a tool's output is where
 * it says why it failed. */
static void append_capped(vt_buf *b, const char *p, size_t n) {
        vt_buf_append(b, p, n);
        if (b->len > TPM_RUN_OUTPUT_MAX)
                vt_buf_consume(b, b->len - TPM_RUN_OUTPUT_MAX);
}

/* Child side of tpm_run: only async-signal-safe calls between fork and exec,
 * because the agent is multi-threaded. */
_noreturn_ static void run_child(const tpm_sandbox *sb, const tpm_sandbox_child *sc, const char *const *argv,
                                 const int *keep_fds, size_t n_keep, int out_w, int err_w) {
        if (sb) {
                const char *step = NULL;
                if (tpm_sandbox_enter(sb, sc, &step) < 0) {
                        static const char msg[] = "cannot set up the sandbox: ";
                        (void)!write(err_w, msg, sizeof(msg) - 1);
                        (void)!write(err_w, step, strlen(step));
                        (void)!write(err_w, "\n", 1);
                        _exit(127);
                }
        }
        (void)setpgid(0, 0);
        int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
                _exit(127);
        /* Everything above stderr is closed at exec, except the fds passed on. */
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                _exit(127);
        for (size_t i = 0; i < n_keep; i++) {
                int fl = fcntl(keep_fds[i], F_GETFD);
                if (fl < 0 || fcntl(keep_fds[i], F_SETFD, fl & ~FD_CLOEXEC) < 0)
                        _exit(127);
        }
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        static char *const sandbox_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", NULL};
        if (sb)
                execvpe(argv[0], (char *const *)argv, sandbox_env);
        else
                execvp(argv[0], (char *const *)argv);
        static const char msg[] = "cannot execute ";
        (void)!write(2, msg, sizeof(msg) - 1);
        (void)!write(2, argv[0], strlen(argv[0]));
        (void)!write(2, "\n", 1);
        _exit(127);
}

int tpm_run(const char *const *argv, const int *keep_fds, size_t n_keep, usec_t timeout,
            tpm_run_result *ret, vt_error **err) {
        return tpm_run_in(NULL, argv, keep_fds, n_keep, timeout, ret, err);
}

/* Start argv[0] with its stdout and stderr on pipes, in its own process
 * group, inside sb when that is set. */
static int spawn(const tpm_sandbox *sb, const char *const *argv, const int *keep_fds, size_t n_keep,
                 pid_t *ret_pid, int *ret_out, int *ret_err, vt_error **err) {
        int out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
        if (pipe2(out_p, O_CLOEXEC) < 0)
                return vt_error_errno(err, errno, "cannot create pipe for %s", argv[0]);
        if (pipe2(err_p, O_CLOEXEC) < 0) {
                int r = vt_error_errno(err, errno, "cannot create pipe for %s", argv[0]);
                close(out_p[0]);
                close(out_p[1]);
                return r;
        }
        tpm_sandbox_child sc = {.gate_fd = -1};
        pid_t pid;
        if (sb) {
                int cr = tpm_sandbox_clone(sb, &sc);
                pid = cr;
                if (cr < 0)
                        errno = -cr;
        } else
                pid = fork();
        if (pid < 0) {
                int r = vt_error_errno(err, errno, "cannot %s for %s", sb ? "create a sandbox" : "fork", argv[0]);
                close(out_p[0]), close(out_p[1]), close(err_p[0]), close(err_p[1]);
                return r;
        }
        if (pid == 0)
                run_child(sb, &sc, argv, keep_fds, n_keep, out_p[1], err_p[1]);
        close(out_p[1]);
        close(err_p[1]);
        _cleanup_close_ int out_r = out_p[0], err_r = err_p[0];
        if (sb) {
                int rr = tpm_sandbox_release(sb, &sc, err);
                if (rr < 0)
                        return rr;
        }
        (void)setpgid(pid, pid); /* also in the child: whichever runs first */
        *ret_pid = pid;
        *ret_out = TAKE_FD(out_r);
        *ret_err = TAKE_FD(err_r);
        return 0;
}

/* Read the child's stdout and stderr until both end or the deadline passes;
 * each fd is closed (and set to -1) at its end. True when the deadline
 * passed first. */
static bool collect_output(int *out_r, int *err_r, usec_t deadline, vt_buf *out, vt_buf *errb) {
        while (*out_r >= 0 || *err_r >= 0) {
                usec_t now = now_monotonic();
                if (now >= deadline)
                        return true;
                struct pollfd p[2] = {{.fd = *out_r, .events = POLLIN}, {.fd = *err_r, .events = POLLIN}};
                int n = poll(p, 2, (int)((deadline - now + 999) / 1000));
                if (n < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < 2 && n > 0; i++) {
                        if (!p[i].revents)
                                continue;
                        char chunk[4096];
                        ssize_t k = read(p[i].fd, chunk, sizeof(chunk));
                        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (k <= 0) {
                                int *fd = i == 0 ? out_r : err_r;
                                close(TAKE_FD(*fd));
                                continue;
                        }
                        append_capped(i == 0 ? out : errb, chunk, (size_t)k);
                }
        }
        return false;
}

/* The child's wait status; 0 if it cannot be had. */
static int reap(pid_t pid) {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
                if (errno != EINTR) {
                        status = 0;
                        break;
                }
        }
        return status;
}

int tpm_run_in(const tpm_sandbox *sb, const char *const *argv, const int *keep_fds, size_t n_keep, usec_t timeout,
               tpm_run_result *ret, vt_error **err) {
        assert_return(argv && argv[0] && ret, -EINVAL);
        pid_t pid = 0;
        _cleanup_close_ int out_r = -1, err_r = -1;
        int r = spawn(sb, argv, keep_fds, n_keep, &pid, &out_r, &err_r, err);
        if (r < 0)
                return r;

        vt_buf out = {0}, errb = {0};
        bool timed_out = collect_output(&out_r, &err_r, now_monotonic() + timeout, &out, &errb);
        if (timed_out)
                (void)kill(-pid, SIGKILL), (void)kill(pid, SIGKILL);
        int status = reap(pid);
        if (timed_out) {
                /* swtpm_setup may have left its own swtpm child in the group. */
                (void)kill(-pid, SIGKILL);
                _cleanup_free_ char *tail = tpm_text_tail(errb.data, errb.len, 2000);
                vt_buf_free(&out);
                vt_buf_free(&errb);
                return vt_error_set(err, ETIMEDOUT, "%s did not finish within %llu ms: %s", argv[0],
                                    (unsigned long long)(timeout / USEC_PER_MSEC), tail);
        }
        ret->status = status;
        ret->out = vt_buf_steal(&out);
        ret->err = vt_buf_steal(&errb);
        return 0;
}

const char *tpm_key_cipher(size_t key_len) {
        switch (key_len) {
        case 16:
                return "aes-128-cbc";
        case 32:
                return "aes-256-cbc";
        default:
                return NULL;
        }
}

int tpm_key_pipe(const uint8_t *key, size_t key_len, bool hex, int *ret_fd, vt_error **err) {
        assert_return(key && ret_fd, -EINVAL);
        if (!tpm_key_cipher(key_len))
                return vt_error_set(err, EINVAL, "TPM state key must be 16 or 32 bytes, not %zu", key_len);
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return vt_error_errno(err, errno, "cannot create key pipe");
        _cleanup_close_ int rd = p[0], wr = p[1];
        char buf[129];
        size_t n;
        if (hex) {
                static const char digits[] = "0123456789abcdef";
                for (size_t i = 0; i < key_len; i++) {
                        buf[2 * i] = digits[key[i] >> 4];
                        buf[2 * i + 1] = digits[key[i] & 0xf];
                }
                n = 2 * key_len;
        } else {
                memcpy(buf, key, key_len);
                n = key_len;
        }
        ssize_t w;
        do
                w = write(wr, buf, n);
        while (w < 0 && errno == EINTR);
        OPENSSL_cleanse(buf, sizeof(buf));
        if (w != (ssize_t)n)
                return vt_error_errno(err, w < 0 ? errno : EIO, "cannot write key pipe");
        *ret_fd = TAKE_FD(rd);
        return 0;
}
