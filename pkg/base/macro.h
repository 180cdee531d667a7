/* SPDX-License-Identifier: Apache-2.0 */
/* Small macros shared by every file: cleanup attributes, ownership transfer,
 * argument guards. Modelled on systemd's src/basic/macro.h. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand ownership of a pointer or fd to someone else: the local variable is
 * reset so its cleanup handler does nothing. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _p_ = (p);                                                           \
                (p) = NULL;                                                                        \
                _p_;                                                                               \
        })
#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd_ = (fd);                                                                   \
                (fd) = -1;                                                                         \
                _fd_;                                                                              \
        })

static inline void freep(void *p) {
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Declare a cleanup helper `namep(type **)` that calls `func(*p)` when set. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
        static inline void func##p(type *p) {                                                      \
                if (*p)                                                                            \
                        func(*p);                                                                  \
        }

/* Guard a public entry point against programming errors: returns -EINVAL
 * instead of crashing on a NULL argument (systemd's assert_return()). */
#define assert_return(expr, r)                                                                     \
        do {                                                                                       \
                if (_unlikely_(!(expr)))                                                           \
                        return (r);                                                                \
        } while (0)

static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/* jansson references: `_cleanup_json_ json_t *o = NULL;` (include <jansson.h> first). */
#define _cleanup_json_ _cleanup_(vt_json_unrefp)
#define DEFINE_JSON_CLEANUP                                                                        \
        static inline void vt_json_unrefp(json_t **p) {                                            \
                json_decref(*p);                                                                   \
        }
