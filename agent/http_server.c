/* SPDX-License-Identifier: Apache-2.0 */
#include "http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"

#define MAX_REQUEST 8192
#define READ_TIMEOUT_MS 5000

struct http_server {
        int fd;
        int stop_pipe[2];
        int port;
        pthread_t thread;
        vt_metrics *metrics;
        http_probe_fn healthz, readyz;
        void *userdata;
};

static void respond(int fd, int code, const char *ctype, const char *body) {
        const char *text = code == 200 ? "OK" : code == 404 ? "Not Found" : code == 405 ? "Method Not Allowed"
                                                            : code == 503 ? "Service Unavailable" : "Bad Request";
        size_t len = strlen(body);
        _cleanup_free_ char *head = xasprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                                              "Connection: close\r\n\r\n",
                                              code, text, ctype, len);
        vt_buf out = {0};
        vt_buf_appends(&out, head);
        vt_buf_append(&out, body, len);
        size_t off = 0;
        while (off < out.len) {
                ssize_t n = send(fd, out.data + off, out.len - off, MSG_NOSIGNAL);
                if (n <= 0)
                        break;
                off += (size_t)n;
        }
        vt_buf_free(&out);
}

static void probe(http_server *s, int fd, http_probe_fn fn) {
        char *detail = NULL;
        bool ok = fn ? fn(s->userdata, &detail) : true;
        _cleanup_free_ char *body = xasprintf("%s%s%s\n", ok ? "ok" : "not ready", detail ? ": " : "", detail ? detail : "");
        free(detail);
        respond(fd, ok ? 200 : 503, "text/plain; charset=utf-8", body);
}

static void serve(http_server *s, int fd) {
        char req[MAX_REQUEST + 1];
        size_t len = 0;
        while (len < MAX_REQUEST) {
                struct pollfd p = {fd, POLLIN, 0};
                if (poll(&p, 1, READ_TIMEOUT_MS) <= 0)
                        return;
                ssize_t n = recv(fd, req + len, MAX_REQUEST - len, 0);
                if (n <= 0)
                        return;
                len += (size_t)n;
                req[len] = '\0';
                if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
                        break;
        }
        req[len] = '\0';
        char method[8] = "", path[256] = "";
        if (sscanf(req, "%7s %255s", method, path) != 2) {
                respond(fd, 400, "text/plain", "bad request\n");
                return;
        }
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                respond(fd, 405, "text/plain", "only GET\n");
                return;
        }
        char *q = strchr(path, '?');
        if (q)
                *q = '\0';
        if (strcmp(path, "/metrics") == 0) {
                _cleanup_free_ char *body = vt_metrics_render(s->metrics);
                respond(fd, 200, "text/plain; version=0.0.4; charset=utf-8", body);
        } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/livez") == 0)
                probe(s, fd, s->healthz);
        else if (strcmp(path, "/readyz") == 0)
                probe(s, fd, s->readyz);
        else
                respond(fd, 404, "text/plain", "not found: try /metrics, /healthz or /readyz\n");
}

static void *server_thread(void *ud) {
        http_server *s = ud;
        for (;;) {
                struct pollfd p[2] = {{s->fd, POLLIN, 0}, {s->stop_pipe[0], POLLIN, 0}};
                if (poll(p, 2, -1) < 0)
                        continue;
                if (p[1].revents)
                        break;
                int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                serve(s, c);
                close(c);
        }
        return NULL;
}

int http_server_start(const char *listen_addr, vt_metrics *metrics, http_probe_fn healthz, http_probe_fn readyz,
                      void *userdata, http_server **ret, vt_error **err) {
        assert_return(listen_addr && ret, -EINVAL);
        _cleanup_free_ char *host = xstrdup(listen_addr);
        char *colon = strrchr(host, ':');
        if (!colon)
                return vt_error_set(err, EINVAL, "http.listen \"%s\" must be host:port", listen_addr);
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
                return vt_error_set(err, EINVAL, "http.listen \"%s\": %s", listen_addr, gai_strerror(gr));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0)
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
                int e = errno;
                freeaddrinfo(ai);
                if (fd >= 0)
                        close(fd);
                return vt_error_errno(err, e, "cannot listen on %s", listen_addr);
        }
        freeaddrinfo(ai);
        http_server *s = xnew(http_server, 1);
        s->fd = fd;
        s->metrics = metrics;
        s->healthz = healthz;
        s->readyz = readyz;
        s->userdata = userdata;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
        if (pipe2(s->stop_pipe, O_CLOEXEC) < 0 || pthread_create(&s->thread, NULL, server_thread, s) != 0) {
                int e = errno;
                close(fd);
                free(s);
                return vt_error_errno(err, e, "cannot start the HTTP server");
        }
        *ret = s;
        return 0;
}

int http_server_port(http_server *s) {
        return s->port;
}

void http_server_stop(http_server *s) {
        if (!s)
                return;
        (void)!write(s->stop_pipe[1], "x", 1);
        pthread_join(s->thread, NULL);
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
        close(s->fd);
        free(s);
}
