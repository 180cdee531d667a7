/* SPDX-License-Identifier: Apache-2.0 */
#include "http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/timeutil.h"
#include "http_deadline.h"
#include "listen_socket.h"

/* What a kubelet probe or a Prometheus scrape needs, and no more. A client
 * that is slower than this is cut off; it never delays anybody else, because
 * libmicrohttpd serves every connection from one event loop. */
#define MAX_CONNECTIONS 256u             /* at once, from everywhere */
#define MAX_CONNECTIONS_PER_IP 16u       /* at once, from one address */
#define IDLE_TIMEOUT_SEC 3u              /* no byte moved for this long: closed */
#define DEADLINE_USEC (5 * USEC_PER_SEC) /* accepted to last byte of the answer */
#define REQUEST_MEMORY (8u << 10)        /* per connection: request line and headers (more: 431) */

struct http_server {
        struct MHD_Daemon *daemon;
        int epoll_fd;
        int stop_pipe[2];
        int port;
        pthread_t thread;
        http_deadline *deadline; /* cuts connections still open DEADLINE_USEC after they were accepted */
        vt_metrics *metrics;
        http_probe_fn healthz, readyz;
        void *userdata;
};

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *ctype, char *body) {
        /* body: allocated, handed over. */
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
                free(body);
                return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
        /* One request per connection: the deadline then bounds a request, and
         * an idle keep-alive connection holds no slot. */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        enum MHD_Result ret = MHD_queue_response(c, code, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result probe(http_server *s, struct MHD_Connection *c, http_probe_fn fn) {
        char *detail = NULL;
        bool ok = fn ? fn(s->userdata, &detail) : true;
        char *body = xasprintf("%s%s%s\n", ok ? "ok" : "not ready", detail ? ": " : "", detail ? detail : "");
        free(detail);
        return respond(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **req_cls) {
        http_server *s = cls;
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", xstrdup("only GET\n"));
        /* url has no query string: libmicrohttpd splits it off. */
        if (strcmp(url, "/metrics") == 0)
                return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", vt_metrics_render(s->metrics));
        if (strcmp(url, "/healthz") == 0 || strcmp(url, "/livez") == 0)
                return probe(s, c, s->healthz);
        if (strcmp(url, "/readyz") == 0)
                return probe(s, c, s->readyz);
        return respond(c, MHD_HTTP_NOT_FOUND, "text/plain", xstrdup("not found: try /metrics, /healthz or /readyz\n"));
}

/* External polling, on our own thread: every libmicrohttpd callback runs
 * here. A connection the deadline cuts (shutdown(): end of file) wakes the
 * poll, and libmicrohttpd closes it in its next round. */
static void *server_thread(void *ud) {
        http_server *s = ud;
        for (;;) {
                int timeout = -1;
                MHD_UNSIGNED_LONG_LONG mhd_ms = 0;
                if (MHD_get_timeout(s->daemon, &mhd_ms) == MHD_YES)
                        timeout = mhd_ms > INT_MAX ? INT_MAX : (int)mhd_ms;
                struct pollfd p[2] = {{s->epoll_fd, POLLIN, 0}, {s->stop_pipe[0], POLLIN, 0}};
                if (poll(p, 2, timeout) < 0 && errno != EINTR)
                        break;
                if (p[1].revents)
                        break;
                MHD_run(s->daemon);
        }
        return NULL;
}

int http_server_start(const char *listen_addr, vt_metrics *metrics, http_probe_fn healthz, http_probe_fn readyz,
                      void *userdata, http_server **ret, vt_error **err) {
        assert_return(listen_addr && ret, -EINVAL);
        int fd = -1, port = 0;
        int r = listen_socket_open("http.listen", listen_addr, (int)MAX_CONNECTIONS, &fd, &port, err);
        if (r < 0)
                return r;

        http_server *s = xnew(http_server, 1);
        s->metrics = metrics;
        s->healthz = healthz;
        s->readyz = readyz;
        s->userdata = userdata;
        s->port = port;
        /* libmicrohttpd has only an inactivity timeout, which a client sending a
         * byte every second never meets: the deadline bounds the whole exchange. */
        s->deadline = http_deadline_new(DEADLINE_USEC);
        if (pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
                int e = errno;
                close(fd);
                http_deadline_free(s->deadline);
                free(s);
                return vt_error_errno(err, e, "cannot start the HTTP server");
        }
        /* No MHD_USE_ERROR_LOG: the library stays quiet; we log. From here on
         * the listening socket is libmicrohttpd's (it closes it, also when it
         * fails to start). */
        s->daemon = MHD_start_daemon(
                MHD_USE_EPOLL, 0, NULL, NULL, handle, s, MHD_OPTION_LISTEN_SOCKET, fd,
                MHD_OPTION_CONNECTION_LIMIT, MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                MAX_CONNECTIONS_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_SEC,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)REQUEST_MEMORY, MHD_OPTION_NOTIFY_CONNECTION,
                http_deadline_notify, s->deadline, MHD_OPTION_END);
        const union MHD_DaemonInfo *di = s->daemon ? MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
        if (!di) {
                if (s->daemon)
                        MHD_stop_daemon(s->daemon);
                close(s->stop_pipe[0]);
                close(s->stop_pipe[1]);
                http_deadline_free(s->deadline);
                free(s);
                return vt_error_set(err, EIO, "cannot start the HTTP server on %s", listen_addr);
        }
        s->epoll_fd = di->epoll_fd;
        r = pthread_create(&s->thread, NULL, server_thread, s);
        if (r != 0) {
                MHD_stop_daemon(s->daemon);
                close(s->stop_pipe[0]);
                close(s->stop_pipe[1]);
                http_deadline_free(s->deadline);
                free(s);
                return vt_error_errno(err, r, "cannot start the HTTP server");
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
        MHD_stop_daemon(s->daemon); /* closes what is still open, reporting each closed */
        http_deadline_free(s->deadline);
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
        free(s);
}
