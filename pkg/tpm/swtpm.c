/* SPDX-License-Identifier: Apache-2.0 */
/* Starting, stopping and adopting the long-running swtpm of a VM. */
#include "tpm/swtpm.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tpm_ioctl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "proc/peer.h"
#include "tpm/ctrl.h"
#include "tpm/exec.h"
#include "tpm/launch.h"

static char *agent_ctrl_path(const tpm_swtpm_opts *o, pid_t pid) {
        if (o->ctrl_via)
                return xstrdup(o->ctrl_via);
        /* In another mount namespace the socket is reachable through the
         * process's root: /proc/<pid>/root/<path>. */
        if (o->mntns_fd >= 0 || o->sandbox)
                return xasprintf("/proc/%d/root%s", (int)pid, o->ctrl_path);
        return xstrdup(o->ctrl_path);
}

/* Until the control channel answers; on failure the child is gone (killed
 * and reaped) and the error quotes its log. */
static int wait_answering(const tpm_swtpm_opts *o, tpm_child *c, vt_error **err) {
        _cleanup_free_ char *ctrl = agent_ctrl_path(o, c->pid);
        usec_t deadline = now_monotonic() + (o->timeout ? o->timeout : 10 * USEC_PER_SEC);
        for (;;) {
                int status, r;
                if (tpm_child_exited(c, 0, &status)) {
                        _cleanup_free_ char *st = tpm_describe_status(status);
                        _cleanup_free_ char *tail = tpm_child_log_tail(c);
                        tpm_child_done(c);
                        return vt_error_set(err, EIO, "swtpm for %s %s before its control channel answered: %s",
                                            o->state_dir, st, tail);
                }
                _cleanup_error_ vt_error *cerr = NULL;
                r = tpm_ctrl_get_capability(ctrl, 200 * USEC_PER_MSEC, NULL, &cerr);
                if (r >= 0)
                        return 0;
                if (now_monotonic() >= deadline) {
                        tpm_child_kill(c);
                        _cleanup_free_ char *tail = tpm_child_log_tail(c);
                        tpm_child_done(c);
                        return vt_error_set(err, ETIMEDOUT,
                                            "swtpm for %s did not answer on %s in time (%s); log: %s", o->state_dir,
                                            o->ctrl_path, cerr ? cerr->msg : "no answer", tail);
                }
                (void)tpm_child_exited(c, 5, NULL);
                if (c->pid == 0) {
                        /* exited while we waited: report on the next turn */
                        _cleanup_free_ char *tail = tpm_child_log_tail(c);
                        tpm_child_done(c);
                        return vt_error_set(err, EIO, "swtpm for %s exited before its control channel answered: %s",
                                            o->state_dir, tail);
                }
        }
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
        char **argv = NULL;
        _cleanup_close_ int key_fd = -1;
        int r = tpm_swtpm_prepare(&eff, false, &argv, &key_fd, err);
        if (r < 0)
                return r;
        tpm_launch l = {.argv = argv, .log_file = o->log_file, .pid_file = o->pid_file, .mntns_fd = o->mntns_fd,
                    .key_fd = key_fd, .ctrl_fd = -1, .drop_user = drop, .uid = uid, .gid = gid,
                    .sandbox = o->sandbox};
        tpm_child c;
        r = tpm_launch_spawn(&l, &c, err);
        tpm_strv_free(argv);
        /* Our copy of the key pipe goes now: only swtpm holds it. */
        if (key_fd >= 0)
                close(TAKE_FD(key_fd));
        if (r < 0)
                return vt_error_prefix(err, r, "starting swtpm for %s: ", o->state_dir);

        r = wait_answering(o, &c, err);
        if (r < 0)
                return r;
        *ret_pid = c.pid;
        tpm_child_done(&c);
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

