/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed stand-in for QEMU's side of libvirt's <backend type='external'>
 * TPM (not product code): connects to swtpm's control socket, hands swtpm the
 * data channel with CMD_SET_DATAFD (a socketpair, over SCM_RIGHTS), sends
 * CMD_INIT, and keeps the control channel for as long as it runs, exactly as
 * QEMU does. It then relays TPM commands from clients of --listen (tpm2-tools
 * through `TPM2TOOLS_TCTI="cmd:socat - UNIX-CONNECT:PATH"`, clevis) to swtpm,
 * so a "guest" can seal and unseal through the VM's vTPM.
 *
 *   tpm-guest-bridge --ctrl CTRL_SOCKET --listen DATA_SOCKET */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CMD_INIT 0x02
#define CMD_SET_DATAFD 0x10
#define TPM_MAX 4096

static int connect_unix(const char *path) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (fd < 0 || strlen(path) >= sizeof(sa.sun_path))
                return -1;
        strcpy(sa.sun_path, path);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

static int read_full(int fd, void *buf, size_t n) {
        size_t off = 0;
        while (off < n) {
                ssize_t r = read(fd, (char *)buf + off, n - off);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return -1;
                off += (size_t)r;
        }
        return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
        size_t off = 0;
        while (off < n) {
                ssize_t r = write(fd, (const char *)buf + off, n - off);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return -1;
                off += (size_t)r;
        }
        return 0;
}

static int ctrl_result(int ctrl, const char *what) {
        uint32_t res;
        if (read_full(ctrl, &res, 4) < 0) {
                fprintf(stderr, "tpm-guest-bridge: no answer to %s\n", what);
                return -1;
        }
        if (ntohl(res) != 0) {
                fprintf(stderr, "tpm-guest-bridge: %s failed with TPM result 0x%x\n", what, ntohl(res));
                return -1;
        }
        return 0;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {{"ctrl", required_argument, NULL, 'c'},
                                             {"listen", required_argument, NULL, 'l'}, {0}};
        const char *ctrl_path = NULL, *listen_path = NULL;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                if (c == 'c')
                        ctrl_path = optarg;
                else if (c == 'l')
                        listen_path = optarg;
                else
                        return 2;
        }
        if (!ctrl_path || !listen_path) {
                fprintf(stderr, "usage: tpm-guest-bridge --ctrl CTRL_SOCKET --listen DATA_SOCKET\n");
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        int ctrl = connect_unix(ctrl_path);
        if (ctrl < 0) {
                fprintf(stderr, "tpm-guest-bridge: cannot connect to %s: %m\n", ctrl_path);
                return 1;
        }
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return 1;
        /* CMD_SET_DATAFD: the command word, with the fd as ancillary data. */
        uint32_t cmd = htonl(CMD_SET_DATAFD);
        struct iovec iov = {&cmd, 4};
        char cbuf[CMSG_SPACE(sizeof(int))] = {0};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &sv[1], sizeof(int));
        if (sendmsg(ctrl, &msg, 0) != 4 || ctrl_result(ctrl, "CMD_SET_DATAFD") < 0)
                return 1;
        close(sv[1]);
        uint32_t init[2] = {htonl(CMD_INIT), 0};
        if (write_full(ctrl, init, sizeof(init)) < 0 || ctrl_result(ctrl, "CMD_INIT") < 0)
                return 1;

        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", listen_path);
        unlink(listen_path);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0) {
                fprintf(stderr, "tpm-guest-bridge: cannot listen on %s: %m\n", listen_path);
                return 1;
        }
        printf("ready\n");
        fflush(stdout);
        unsigned char buf[TPM_MAX];
        for (;;) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                /* One TPM command, one response, until the client hangs up. */
                for (;;) {
                        if (read_full(c, buf, 10) < 0)
                                break;
                        uint32_t len = ntohl(*(uint32_t *)(buf + 2));
                        if (len < 10 || len > TPM_MAX || read_full(c, buf + 10, len - 10) < 0)
                                break;
                        if (write_full(sv[0], buf, len) < 0 || read_full(sv[0], buf, 10) < 0) {
                                fprintf(stderr, "tpm-guest-bridge: swtpm went away\n");
                                return 1;
                        }
                        uint32_t rlen = ntohl(*(uint32_t *)(buf + 2));
                        if (rlen < 10 || rlen > TPM_MAX || read_full(sv[0], buf + 10, rlen - 10) < 0)
                                return 1;
                        if (write_full(c, buf, rlen) < 0)
                                break;
                }
                close(c);
        }
}
