/* SPDX-License-Identifier: Apache-2.0 */
#include "server.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "conn.h"

#define DEFAULT_MAX_CONNECTIONS 64u
#define DEFAULT_IDLE_TIMEOUT_MS 120000u
#define ACCEPT_BACKOFF_MS 100 /* after an accept() error such as EMFILE, instead of spinning */

struct grpc_server {
        grpc_server_options o;
        int listen_fd;
        int stop_pipe[2]; /* written once by stop; every poll of every thread watches [0] */
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t drained; /* n_conns became 0 */
        unsigned n_conns;
};

typedef struct conn_thread_arg {
        grpc_server *s;
        int fd;
} conn_thread_arg;

static void conn_done(grpc_server *s) {
        pthread_mutex_lock(&s->lock);
        if (--s->n_conns == 0)
                pthread_cond_broadcast(&s->drained);
        pthread_mutex_unlock(&s->lock);
}

/* Detached: stop waits for n_conns to reach 0 instead of joining, so the
 * accept loop keeps no list of threads to reap. */
static void *conn_thread(void *p) {
        conn_thread_arg *a = p;
        grpc_server *s = a->s;
        grpc_conn_serve(a->fd, &s->o, s->stop_pipe[0]);
        close(a->fd);
        free(a);
        conn_done(s);
        return NULL;
}

static bool peer_allowed(grpc_server *s, int fd) {
        struct ucred uc;
        socklen_t l = sizeof(uc);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0) {
                grpc_report(&s->o, errno, "node hook connection refused: cannot read its peer's credentials: %m");
                return false;
        }
        if (uc.uid != s->o.allow_uid) {
                grpc_report(&s->o, EPERM, "node hook connection refused: peer pid %d has uid %u, not %u", (int)uc.pid,
                       (unsigned)uc.uid, (unsigned)s->o.allow_uid);
                return false;
        }
        return true;
}

static void start_conn(grpc_server *s, int fd) {
        pthread_mutex_lock(&s->lock);
        bool full = s->n_conns >= s->o.max_connections;
        if (!full)
                s->n_conns++;
        pthread_mutex_unlock(&s->lock);
        if (full) {
                grpc_report(&s->o, EBUSY, "node hook connection refused: %u connections already", s->o.max_connections);
                close(fd);
                return;
        }
        conn_thread_arg *a = xnew(conn_thread_arg, 1);
        *a = (conn_thread_arg){s, fd};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        int r = pthread_create(&t, &attr, conn_thread, a);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                grpc_report(&s->o, r, "node hook connection refused: no thread for it");
                close(fd);
                free(a);
                conn_done(s);
        }
}

static void *accept_thread(void *p) {
        grpc_server *s = p;
        for (;;) {
                struct pollfd pf[2] = {{s->listen_fd, POLLIN, 0}, {s->stop_pipe[0], POLLIN, 0}};
                if (poll(pf, 2, -1) < 0 && errno != EINTR)
                        break;
                if (pf[1].revents)
                        break;
                if (!pf[0].revents)
                        continue;
                int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                continue;
                        grpc_report(&s->o, errno, "node hook server: accept failed: %m");
                        (void)poll(&pf[1], 1, ACCEPT_BACKOFF_MS);
                        continue;
                }
                if (!peer_allowed(s, fd)) {
                        close(fd);
                        continue;
                }
                start_conn(s, fd);
        }
        return NULL;
}

int grpc_server_start(int listen_fd, const grpc_server_options *o, grpc_server **ret, vt_error **err) {
        assert_return(listen_fd >= 0 && o && o->handler && ret, -EINVAL);
        grpc_server *s = xnew(grpc_server, 1);
        s->o = *o;
        if (!s->o.max_connections)
                s->o.max_connections = DEFAULT_MAX_CONNECTIONS;
        if (!s->o.idle_timeout_ms)
                s->o.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
        s->listen_fd = listen_fd;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->drained, NULL);
        /* A peer gone between poll() and accept() must not block the loop. */
        int fl = fcntl(listen_fd, F_GETFL);
        int r = fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 ? errno : 0;
        if (r == 0 && pipe2(s->stop_pipe, O_CLOEXEC) < 0)
                r = errno;
        else if (r == 0 && (r = pthread_create(&s->thread, NULL, accept_thread, s)) != 0) {
                close(s->stop_pipe[0]);
                close(s->stop_pipe[1]);
        }
        if (r != 0) {
                pthread_cond_destroy(&s->drained);
                pthread_mutex_destroy(&s->lock);
                free(s);
                return vt_error_errno(err, r, "cannot start the node hook server");
        }
        *ret = s;
        return 0;
}

void grpc_server_stop(grpc_server *s) {
        if (!s)
                return;
        /* Never read: the pipe stays readable, so every poll wakes and ends. */
        (void)!write(s->stop_pipe[1], "x", 1);
        pthread_join(s->thread, NULL);
        pthread_mutex_lock(&s->lock);
        while (s->n_conns > 0)
                pthread_cond_wait(&s->drained, &s->lock);
        pthread_mutex_unlock(&s->lock);
        pthread_cond_destroy(&s->drained);
        pthread_mutex_destroy(&s->lock);
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
        free(s);
}
