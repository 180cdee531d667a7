/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>

typedef uint64_t usec_t;
#define USEC_PER_SEC ((usec_t)1000000)
#define USEC_PER_MSEC ((usec_t)1000)

usec_t now_monotonic(void);
usec_t now_realtime(void);
/* CLOCK_BOOTTIME: like the monotonic clock, but it also counts time the
 * machine was suspended. Deadlines that must hold in real elapsed time (a
 * lease another node may take over) are measured on it. */
usec_t now_boottime(void);
/* RFC 3339 with microseconds, as Kubernetes MicroTime wants ("...T...000000Z"). */
void format_rfc3339_micro(usec_t realtime, char buf[static 40]);
/* RFC 3339 to the second, as Kubernetes Time wants. */
void format_rfc3339(usec_t realtime, char buf[static 40]);
/* "YYYY-MM-DDTHH:MM:SS[.frac]Z", as the API server writes metav1.Time;
 * -EINVAL for anything else. */
int parse_rfc3339(const char *s, usec_t *ret);
/* The absolute CLOCK_MONOTONIC time `usec` from now, as pthread_cond_timedwait
 * wants it for condition variables created with pthread_condattr_setclock. */
struct timespec;
void monotonic_deadline(usec_t usec, struct timespec *ret);
/* Sleep, resuming after signals, until `usec` passed. */
void sleep_usec(usec_t usec);
