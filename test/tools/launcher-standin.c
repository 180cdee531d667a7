/* SPDX-License-Identifier: Apache-2.0 */
/* Test bed only: a stand-in for KubeVirt's virt-launcher, as the node
 * controller sees one. It
 *   - creates its own mount namespace with private propagation (a pod's
 *     container does: nothing mounted inside shows up on the host);
 *   - optionally mounts tmpfs at the given paths inside it (--tmpfs PATH, may
 *     repeat), standing for the container's own filesystem, so that what the
 *     agent creates there (e.g. /var/lib/libvirt/swtpm/<uid>) never touches
 *     the host's disk; PATH is created on the host if missing;
 *   - listens on a unix socket (--socket PATH), the way virt-launcher listens
 *     on /var/run/kubevirt/sockets/<pod-uid>.sock: the agent finds this
 *     process through SO_PEERCRED, which names the process that called
 *     listen() - this one;
 *   - optionally runs a command inside the namespace (--exec CMD ARGS...,
 *     the rest of the command line), e.g. libvirtd;
 *   - prints "ready pid=N" on stdout once listening, then stays until it gets
 *     SIGTERM/SIGINT or a client writes "quit" to the socket ("ping" answers
 *     "pong"). On the way out it stops the command (SIGTERM) and removes the
 *     socket. Its mount namespace, and every mount in it, goes with it.
 *
 *   launcher-standin --socket /var/run/kubevirt/sockets/UID.sock --tmpfs /var/lib [--exec CMD...]
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TMPFS 16

static void die(const char *what) {
        fprintf(stderr, "launcher-standin: %s: %s\n", what, strerror(errno));
        exit(1);
}

static void usage(void) {
        fprintf(stderr, "usage: launcher-standin --socket PATH [--tmpfs PATH]... [--exec CMD [ARGS...]]\n");
        exit(2);
}

/* Serve one client: read a short command with a deadline, so a client that
 * connects and says nothing (the agent's SO_PEERCRED probe) cannot wedge us. */
static bool serve(int lfd) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
                return false;
        char buf[64] = {0};
        struct pollfd p = {.fd = c, .events = POLLIN};
        bool quit = false;
        if (poll(&p, 1, 1000) > 0) {
                ssize_t n = read(c, buf, sizeof(buf) - 1);
                if (n > 0) {
                        buf[n] = '\0';
                        if (strncmp(buf, "quit", 4) == 0)
                                quit = true;
                        else if (strncmp(buf, "ping", 4) == 0 && write(c, "pong\n", 5) != 5)
                                fprintf(stderr, "launcher-standin: cannot answer ping\n");
                }
        }
        close(c);
        return quit;
}

int main(int argc, char **argv) {
        const char *sock = NULL;
        const char *tmpfs[MAX_TMPFS];
        int n_tmpfs = 0;
        char **exec_argv = NULL;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
                        sock = argv[++i];
                else if (strcmp(argv[i], "--tmpfs") == 0 && i + 1 < argc && n_tmpfs < MAX_TMPFS)
                        tmpfs[n_tmpfs++] = argv[++i];
                else if (strcmp(argv[i], "--exec") == 0 && i + 1 < argc) {
                        exec_argv = argv + i + 1;
                        break;
                } else
                        usage();
        }
        if (!sock)
                usage();

        if (unshare(CLONE_NEWNS) < 0)
                die("unshare(CLONE_NEWNS)");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                die("making / private");
        for (int i = 0; i < n_tmpfs; i++) {
                if (mkdir(tmpfs[i], 0755) < 0 && errno != EEXIST)
                        die(tmpfs[i]);
                if (mount("tmpfs", tmpfs[i], "tmpfs", 0, "mode=0755") < 0)
                        die(tmpfs[i]);
        }

        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(sock) >= sizeof(sa.sun_path)) {
                errno = ENAMETOOLONG;
                die(sock);
        }
        strcpy(sa.sun_path, sock);
        unlink(sock);
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0)
                die("socket");
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die(sock);
        if (listen(lfd, 16) < 0)
                die("listen");

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0)
                die("signalfd");

        pid_t child = -1;
        if (exec_argv) {
                child = fork();
                if (child < 0)
                        die("fork");
                if (child == 0) {
                        sigprocmask(SIG_UNBLOCK, &mask, NULL);
                        execvp(exec_argv[0], exec_argv);
                        fprintf(stderr, "launcher-standin: exec %s: %s\n", exec_argv[0], strerror(errno));
                        _exit(127);
                }
        }

        printf("ready pid=%d\n", (int)getpid());
        fflush(stdout);

        bool done = false;
        while (!done) {
                struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        die("poll");
                }
                if (p[0].revents & POLLIN)
                        done = serve(lfd);
                if (p[1].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) != sizeof(si))
                                continue;
                        if (si.ssi_signo == SIGCHLD) {
                                int st;
                                pid_t w;
                                while ((w = waitpid(-1, &st, WNOHANG)) > 0)
                                        if (w == child) {
                                                fprintf(stderr, "launcher-standin: command exited (status %d)\n",
                                                        WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
                                                child = -1;
                                        }
                        } else
                                done = true;
                }
        }

        if (child > 0) {
                kill(child, SIGTERM);
                waitpid(child, NULL, 0);
        }
        close(lfd);
        unlink(sock);
        return 0;
}
