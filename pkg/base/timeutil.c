/* SPDX-License-Identifier: Apache-2.0 */
#include "timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

static usec_t ts_to_usec(const struct timespec *ts) {
        return (usec_t)ts->tv_sec * USEC_PER_SEC + (usec_t)ts->tv_nsec / 1000;
}

usec_t now_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts_to_usec(&ts);
}

usec_t now_boottime(void) {
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return ts_to_usec(&ts);
}

usec_t now_realtime(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return ts_to_usec(&ts);
}

void format_rfc3339_micro(usec_t t, char buf[static 40]) {
        time_t s = (time_t)(t / USEC_PER_SEC);
        struct tm tm;
        gmtime_r(&s, &tm);
        size_t n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, 40 - n, ".%06uZ", (unsigned)(t % USEC_PER_SEC));
}

void format_rfc3339(usec_t t, char buf[static 40]) {
        time_t s = (time_t)(t / USEC_PER_SEC);
        struct tm tm;
        gmtime_r(&s, &tm);
        strftime(buf, 40, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void sleep_usec(usec_t usec) {
        struct timespec ts = {.tv_sec = (time_t)(usec / USEC_PER_SEC), .tv_nsec = (long)(usec % USEC_PER_SEC) * 1000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

void monotonic_deadline(usec_t usec, struct timespec *ret) {
        usec_t end = now_monotonic() + usec;
        ret->tv_sec = (time_t)(end / USEC_PER_SEC);
        ret->tv_nsec = (long)(end % USEC_PER_SEC) * 1000;
}
