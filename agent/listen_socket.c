/* SPDX-License-Identifier: Apache-2.0 */
#include "listen_socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"

static int bound_port(int fd) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
                return 0;
        return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
}

int listen_socket_open(const char *what, const char *listen_addr, int backlog, int *ret_fd, int *ret_port,
                       vt_error **err) {
        _cleanup_free_ char *host = xstrdup(listen_addr);
        char *colon = strrchr(host, ':');
        if (!colon)
                return vt_error_set(err, EINVAL, "%s \"%s\" must be host:port", what, listen_addr);
        *colon = '\0';
        const char *port = colon + 1;
        char *h = host;
        if (h[0] == '[') { /* [::1]:9464 */
                h++;
                h[strcspn(h, "]")] = '\0';
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        int gr = getaddrinfo(*h ? h : NULL, port, &hints, &ai);
        if (gr != 0)
                return vt_error_set(err, EINVAL, "%s \"%s\": %s", what, listen_addr, gai_strerror(gr));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        if (fd >= 0)
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
                int e = errno;
                freeaddrinfo(ai);
                if (fd >= 0)
                        close(fd);
                return vt_error_errno(err, e, "cannot listen on %s", listen_addr);
        }
        freeaddrinfo(ai);
        *ret_fd = fd;
        if (ret_port)
                *ret_port = bound_port(fd);
        return 0;
}
