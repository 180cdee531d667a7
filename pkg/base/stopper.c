/* SPDX-License-Identifier: Apache-2.0 */
#include "base/stopper.h"

void vt_cond_init_monotonic(pthread_cond_t *c) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(c, &ca);
        pthread_condattr_destroy(&ca);
}

void vt_stopper_init(vt_stopper *s) {
        pthread_mutex_init(&s->lock, NULL);
        vt_cond_init_monotonic(&s->cond);
        atomic_init(&s->stop, false);
}

void vt_stopper_done(vt_stopper *s) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
}

void vt_stopper_stop(vt_stopper *s) {
        pthread_mutex_lock(&s->lock);
        atomic_store(&s->stop, true);
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

bool vt_stopper_stopped(vt_stopper *s) {
        return atomic_load(&s->stop);
}

bool vt_stopper_sleep(vt_stopper *s, usec_t usec) {
        struct timespec ts;
        monotonic_deadline(usec, &ts);
        pthread_mutex_lock(&s->lock);
        while (!atomic_load(&s->stop))
                if (pthread_cond_timedwait(&s->cond, &s->lock, &ts) != 0)
                        break;
        pthread_mutex_unlock(&s->lock);
        return atomic_load(&s->stop);
}
