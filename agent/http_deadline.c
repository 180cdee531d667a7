/* SPDX-License-Identifier: Apache-2.0 */
#include "http_deadline.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/stopper.h"

typedef struct conn {
        int fd;
        usec_t deadline; /* CLOCK_MONOTONIC; 0: exempt */
        bool cut;
        struct conn *prev, *next;
} conn;

struct http_deadline {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        pthread_t thread;
        bool stop;
        usec_t deadline;
        conn *conns;
};

/* Under the lock: shut down the overdue; the time of the next deadline. */
static usec_t cut_overdue_locked(http_deadline *d, usec_t now) {
        usec_t next = now + USEC_PER_SEC;
        for (conn *n = d->conns; n; n = n->next) {
                if (n->cut || n->deadline == 0)
                        continue;
                if (n->deadline <= now) {
                        /* End of file for libmicrohttpd, which then closes it. */
                        if (n->fd >= 0)
                                (void)shutdown(n->fd, SHUT_RDWR);
                        n->cut = true;
                } else if (n->deadline < next)
                        next = n->deadline;
        }
        return next;
}

static void *watch_thread(void *ud) {
        http_deadline *d = ud;
        pthread_mutex_lock(&d->lock);
        while (!d->stop) {
                usec_t now = now_monotonic();
                usec_t next = cut_overdue_locked(d, now); /* > now */
                struct timespec ts;
                monotonic_deadline(next - now + USEC_PER_MSEC, &ts);
                pthread_cond_timedwait(&d->wake, &d->lock, &ts);
        }
        pthread_mutex_unlock(&d->lock);
        return NULL;
}

http_deadline *http_deadline_new(usec_t deadline) {
        http_deadline *d = xnew(http_deadline, 1);
        pthread_mutex_init(&d->lock, NULL);
        vt_cond_init_monotonic(&d->wake);
        d->deadline = deadline;
        if (pthread_create(&d->thread, NULL, watch_thread, d) != 0)
                abort(); /* as an allocation failure: nothing to go on with */
        return d;
}

void http_deadline_free(http_deadline *d) {
        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        d->stop = true;
        pthread_cond_signal(&d->wake);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->thread, NULL);
        while (d->conns) {
                conn *n = d->conns;
                d->conns = n->next;
                free(n);
        }
        pthread_cond_destroy(&d->wake);
        pthread_mutex_destroy(&d->lock);
        free(d);
}

void http_deadline_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        http_deadline *d = cls;
        pthread_mutex_lock(&d->lock);
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
                conn *n = xnew(conn, 1);
                n->fd = ci ? ci->connect_fd : -1;
                n->deadline = now_monotonic() + d->deadline;
                n->next = d->conns;
                if (d->conns)
                        d->conns->prev = n;
                d->conns = n;
                *socket_context = n;
        } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
                conn *n = *socket_context;
                if (n->prev)
                        n->prev->next = n->next;
                else
                        d->conns = n->next;
                if (n->next)
                        n->next->prev = n->prev;
                free(n);
                *socket_context = NULL;
        }
        pthread_mutex_unlock(&d->lock);
}

void http_deadline_exempt(http_deadline *d, struct MHD_Connection *c) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        pthread_mutex_lock(&d->lock);
        conn *n = ci ? ci->socket_context : NULL;
        if (n)
                n->deadline = 0;
        pthread_mutex_unlock(&d->lock);
}
