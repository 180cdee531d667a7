/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/io.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>

int tpm_io_wait(int fd, short events, usec_t deadline) {
        for (;;) {
                usec_t now = now_monotonic();
                if (now >= deadline)
                        return -ETIMEDOUT;
                struct pollfd p = {.fd = fd, .events = events};
                int n = poll(&p, 1, (int)((deadline - now + 999) / 1000));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n > 0)
                        return 0;
        }
}

int tpm_io_xfer(int fd, void *p, size_t n, bool sending, usec_t deadline) {
        uint8_t *b = p;
        while (n > 0) {
                ssize_t g = sending ? send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, b, n, MSG_DONTWAIT);
                if (g < 0 && errno == EINTR)
                        continue;
                if (g < 0 && errno == EAGAIN) {
                        int r = tpm_io_wait(fd, sending ? POLLOUT : POLLIN, deadline);
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

