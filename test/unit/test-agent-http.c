/* SPDX-License-Identifier: Apache-2.0 */
/* agent/http_server.c: /healthz answers within a second whatever other
 * clients do (a slow one, many idle ones, many from one address), slow and
 * idle connections are cut off within seconds, and stopping the server does
 * not wait for them. The end-to-end twin with the whole agent is
 * test/e2e/64-http-slow-client.t. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/timeutil.h"
#include "http_server.h"
#include "tap.h"

static bool probe_ok(void *ud, char **detail) {
        return true;
}

static http_server *start(vt_metrics **ret_m) {
        vt_metrics *m = vt_metrics_new();
        vt_counter_add(m, "vtpm_test_total", "A counter.", NULL, 1);
        http_server *s = NULL;
        vt_error *err = NULL;
        if (!check(http_server_start("127.0.0.1:0", m, probe_ok, probe_ok, NULL, &s, &err) == 0)) {
                fprintf(stderr, "# %s\n", err ? err->msg : "?");
                vt_error_free(err);
                abort();
        }
        *ret_m = m;
        return s;
}

static void stop(http_server *s, vt_metrics *m) {
        http_server_stop(s);
        vt_metrics_free(m);
}

/* A connection from 127.0.0.src to the server; -1 if it is not established
 * within 1.5 s (a full accept queue drops the handshake). */
static int connect_from(int port, int src) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(0x7f000000u | (unsigned)src);
        struct sockaddr_in b = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        b.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            (connect(fd, (struct sockaddr *)&b, sizeof(b)) < 0 && errno != EINPROGRESS)) {
                close(fd);
                return -1;
        }
        struct pollfd p = {fd, POLLOUT, 0};
        int e = 0;
        socklen_t el = sizeof(e);
        if (poll(&p, 1, 1500) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* True once the server closed fd (end of file or reset); waits up to ms. */
static bool closed_by_server(int fd, int ms) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, ms) <= 0)
                return false;
        char b[512];
        ssize_t n;
        while ((n = recv(fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
                ;
        return n == 0 || (n < 0 && errno != EAGAIN);
}

/* The status of a request (or 0 without an answer within timeout_ms), as a
 * kubelet probe sees it. */
static int request(int port, const char *req, int timeout_ms, char **ret_body) {
        int fd = connect_from(port, 1);
        if (fd < 0)
                return 0;
        usec_t deadline = now_monotonic() + (usec_t)timeout_ms * USEC_PER_MSEC;
        (void)!send(fd, req, strlen(req), MSG_NOSIGNAL);
        char buf[65536];
        size_t len = 0;
        for (;;) {
                usec_t now = now_monotonic();
                if (now >= deadline)
                        break;
                struct pollfd p = {fd, POLLIN, 0};
                if (poll(&p, 1, (int)((deadline - now) / USEC_PER_MSEC) + 1) <= 0)
                        break;
                ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        close(fd);
        buf[len] = '\0';
        int code = 0;
        if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
                return 0;
        if (ret_body) {
                char *b = strstr(buf, "\r\n\r\n");
                *ret_body = xstrdup(b ? b + 4 : "");
        }
        return code;
}

static int healthz(int port) {
        return request(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1000, NULL);
}

static void test_answers(void) {
        vt_metrics *m;
        http_server *s = start(&m);
        int port = http_server_port(s);
        char *body = NULL;
        check_int_eq(request(port, "GET /healthz?verbose HTTP/1.1\r\nHost: x\r\n\r\n", 1000, &body), 200);
        check_str_eq(body, "ok\n");
        free(body);
        body = NULL;
        check_int_eq(request(port, "GET /metrics HTTP/1.0\r\n\r\n", 1000, &body), 200);
        check_contains(body, "vtpm_test_total 1");
        free(body);
        check_int_eq(request(port, "HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 1000, NULL), 200);
        check_int_eq(request(port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 1000, NULL), 404);
        check_int_eq(request(port, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 1000, NULL),
                     405);
        stop(s, m);
}

struct slow_client {
        int port;
        atomic_bool stop;
        atomic_int connected;
        usec_t closed_after; /* 0: never */
};

/* Headers that never end, one byte every 200 ms, for 10 s at most (so the
 * test ends against a server that would wait for it for hours). */
static void *slow_thread(void *ud) {
        struct slow_client *c = ud;
        int fd = connect_from(c->port, 9);
        if (fd < 0)
                return NULL;
        usec_t t0 = now_monotonic();
        (void)!send(fd, "GET /healthz HTTP/1.1\r\nX-Slow: ", 31, MSG_NOSIGNAL);
        atomic_store(&c->connected, 1);
        while (!atomic_load(&c->stop) && now_monotonic() - t0 < 10 * USEC_PER_SEC) {
                if (send(fd, "a", 1, MSG_NOSIGNAL) < 0 || closed_by_server(fd, 200)) {
                        c->closed_after = now_monotonic() - t0;
                        break;
                }
        }
        close(fd);
        return NULL;
}

static void test_slow_client(void) {
        vt_metrics *m;
        http_server *s = start(&m);
        struct slow_client c = {.port = http_server_port(s)};
        pthread_t t;
        pthread_create(&t, NULL, slow_thread, &c);
        while (!atomic_load(&c.connected))
                sleep_usec(10 * USEC_PER_MSEC);
        sleep_usec(300 * USEC_PER_MSEC);
        for (int i = 0; i < 3; i++)
                check_int_eq(healthz(c.port), 200);
        /* Cut off by the 5 s deadline (it moves a byte every 200 ms: never idle). */
        for (int i = 0; i < 80 && !c.closed_after; i++)
                sleep_usec(100 * USEC_PER_MSEC);
        atomic_store(&c.stop, true);
        pthread_join(t, NULL);
        check(c.closed_after > 0);
        check(c.closed_after < 7 * USEC_PER_SEC);
        stop(s, m);
}

static void test_idle_connections(void) {
        vt_metrics *m;
        http_server *s = start(&m);
        int port = http_server_port(s);
        enum { N = 200 };
        int fds[N], opened = 0;
        for (int i = 0; i < N; i++) /* 16 per address, from 127.0.0.2 on */
                if ((fds[i] = connect_from(port, 2 + i / 16)) >= 0)
                        opened++;
        check_int_eq(opened, N);
        sleep_usec(200 * USEC_PER_MSEC);
        for (int i = 0; i < 3; i++)
                check_int_eq(healthz(port), 200);
        /* All cut off after the 3 s idle timeout. */
        int closed = 0;
        usec_t until = now_monotonic() + 6 * USEC_PER_SEC;
        for (int i = 0; i < N; i++) {
                if (fds[i] < 0)
                        continue;
                usec_t now = now_monotonic();
                if (now < until && closed_by_server(fds[i], (int)((until - now) / USEC_PER_MSEC)))
                        closed++;
                close(fds[i]);
        }
        check_int_eq(closed, N);
        stop(s, m);
}

static void test_per_address_limit(void) {
        vt_metrics *m;
        http_server *s = start(&m);
        int port = http_server_port(s);
        enum { N = 40 };
        int fds[N], open_ = 0;
        for (int i = 0; i < N; i++)
                fds[i] = connect_from(port, 30);
        sleep_usec(500 * USEC_PER_MSEC);
        for (int i = 0; i < N; i++) {
                if (fds[i] >= 0 && !closed_by_server(fds[i], 0))
                        open_++;
        }
        check_int_eq(open_, 16);
        check_int_eq(healthz(port), 200);
        for (int i = 0; i < N; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        stop(s, m);
}

static void test_stop_with_slow_client(void) {
        vt_metrics *m;
        http_server *s = start(&m);
        struct slow_client c = {.port = http_server_port(s)};
        pthread_t t;
        pthread_create(&t, NULL, slow_thread, &c);
        while (!atomic_load(&c.connected))
                sleep_usec(10 * USEC_PER_MSEC);
        sleep_usec(300 * USEC_PER_MSEC);
        usec_t t0 = now_monotonic();
        stop(s, m);
        check(now_monotonic() - t0 < USEC_PER_SEC);
        atomic_store(&c.stop, true);
        pthread_join(t, NULL);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_answers),
                TAP_CASE(test_slow_client),
                TAP_CASE(test_idle_connections),
                TAP_CASE(test_per_address_limit),
                TAP_CASE(test_stop_with_slow_client),
                {0},
        });
}
