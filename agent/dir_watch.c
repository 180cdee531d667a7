/* SPDX-License-Identifier: Apache-2.0 */
#include "dir_watch.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/macro.h"

struct dir_watch {
        int fd;
        dir_watch_fn fn;
        void *userdata;
        atomic_bool stop;
        pthread_t thread;
};

static void *watch_thread(void *ud) {
        dir_watch *w = ud;
        alignas(struct inotify_event) char buf[4096];
        while (!atomic_load(&w->stop)) {
                struct pollfd p = {.fd = w->fd, .events = POLLIN};
                /* A bounded wait, so dir_watch_stop() needs no second fd. */
                if (poll(&p, 1, 100) <= 0)
                        continue;
                ssize_t n = read(w->fd, buf, sizeof(buf));
                if (n <= 0)
                        continue;
                for (char *at = buf; at < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)at;
                        if (ev->len > 0 && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
                                w->fn(ev->name, w->userdata);
                        at += sizeof(*ev) + ev->len;
                }
        }
        return NULL;
}

int dir_watch_start(const char *dir, dir_watch_fn fn, void *userdata, dir_watch **ret, vt_error **err) {
        assert_return(dir && fn && ret, -EINVAL);
        _cleanup_close_ int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0)
                return vt_error_errno(err, errno, "inotify_init1");
        if (inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0)
                return vt_error_errno(err, errno, "cannot watch %s", dir);
        dir_watch *w = xnew(dir_watch, 1);
        w->fn = fn;
        w->userdata = userdata;
        w->fd = TAKE_FD(fd);
        int r = pthread_create(&w->thread, NULL, watch_thread, w);
        if (r != 0) {
                close(w->fd);
                free(w);
                return vt_error_errno(err, r, "cannot start the watch thread for %s", dir);
        }
        *ret = w;
        return 0;
}

void dir_watch_stop(dir_watch *w) {
        if (!w)
                return;
        atomic_store(&w->stop, true);
        pthread_join(w->thread, NULL);
        close(w->fd);
        free(w);
}
