/* SPDX-License-Identifier: Apache-2.0 */
/* A stop request that background threads sleep on: a loop sleeps its period
 * with vt_stopper_sleep() and ends at once when another thread calls
 * vt_stopper_stop(), instead of finishing its sleep. Waits are on
 * CLOCK_MONOTONIC, so a wall-clock step neither shortens nor stretches them. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "base/timeutil.h"

typedef struct vt_stopper {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        atomic_bool stop;
} vt_stopper;

/* A condition variable whose timed waits are on CLOCK_MONOTONIC (deadlines
 * from monotonic_deadline()). */
void vt_cond_init_monotonic(pthread_cond_t *c);

void vt_stopper_init(vt_stopper *s);
void vt_stopper_done(vt_stopper *s);

/* Ask every sleeper to end; stays set. */
void vt_stopper_stop(vt_stopper *s);
bool vt_stopper_stopped(vt_stopper *s);

/* Sleep up to usec. true when a stop was asked for (before or meanwhile). */
bool vt_stopper_sleep(vt_stopper *s, usec_t usec);
