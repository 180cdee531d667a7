/* SPDX-License-Identifier: Apache-2.0 */
#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

static enum log_level min_level = LOG_LEVEL_INFO;
static bool json_output = true;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level min, bool json) {
        min_level = min;
        json_output = json;
}

int log_level_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcmp(s, level_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

bool log_enabled(enum log_level level) {
        return level >= min_level;
}

static void timestamp(char buf[static 32]) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void emit(enum log_level level, const char *msg, va_list *kv) {
        char ts[32];
        timestamp(ts);
        pthread_mutex_lock(&log_lock);
        if (json_output) {
                json_t *o = json_object();
                json_object_set_new(o, "ts", json_string(ts));
                json_object_set_new(o, "level", json_string(level_names[level]));
                json_object_set_new(o, "msg", json_string(msg));
                if (kv)
                        for (const char *k; (k = va_arg(*kv, const char *));) {
                                const char *v = va_arg(*kv, const char *);
                                json_object_set_new(o, k, v ? json_string(v) : json_null());
                        }
                char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
                if (line)
                        fprintf(stderr, "%s\n", line);
                free(line);
                json_decref(o);
        } else {
                fprintf(stderr, "%s %-5s %s", ts, level_names[level], msg);
                if (kv)
                        for (const char *k; (k = va_arg(*kv, const char *));) {
                                const char *v = va_arg(*kv, const char *);
                                fprintf(stderr, " %s=%s", k, v ? v : "null");
                        }
                fputc('\n', stderr);
        }
        pthread_mutex_unlock(&log_lock);
}

void log_msg(enum log_level level, const char *fmt, ...) {
        if (!log_enabled(level))
                return;
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *m = xvasprintf(fmt, ap);
        va_end(ap);
        emit(level, m, NULL);
}

void log_kv(enum log_level level, const char *msg, ...) {
        if (!log_enabled(level))
                return;
        va_list ap;
        va_start(ap, msg);
        emit(level, msg, &ap);
        va_end(ap);
}
