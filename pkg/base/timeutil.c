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

int parse_rfc3339(const char *s, usec_t *ret) {
        /* The shape first: digits where digits go (sscanf alone takes signs and spaces). */
        static const char shape[] = "dddd-dd-ddTdd:dd:dd";
        for (size_t i = 0; i < sizeof(shape) - 1; i++)
                if (!s || !s[i] || (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i]))
                        return -EINVAL;
        struct tm tm = {0};
        int n = 0;
        if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                         &tm.tm_sec, &n) != 6 || n != 19)
                return -EINVAL;
        const char *p = s + n;
        usec_t frac = 0, scale = USEC_PER_SEC;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                        if (scale > 1) {
                                scale /= 10;
                                frac += (usec_t)(*p - '0') * scale;
                        }
        if (p[0] != 'Z' || p[1] || tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
            tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
                return -EINVAL;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        time_t t = timegm(&tm);
        if (t < 0)
                return -EINVAL;
        *ret = (usec_t)t * USEC_PER_SEC + frac;
        return 0;
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
