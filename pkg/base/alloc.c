/* SPDX-License-Identifier: Apache-2.0 */
#include "alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_noreturn_ static void oom(void) {
        static const char msg[] = "vtpm-agent: out of memory\n";
        (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
        abort();
}

void *xmalloc(size_t size) {
        void *p = malloc(size ? size : 1);
        if (!p)
                oom();
        return p;
}

void *xzalloc(size_t size) {
        return xcalloc(1, size);
}

void *xcalloc(size_t n, size_t size) {
        void *p = calloc(n ? n : 1, size ? size : 1);
        if (!p)
                oom();
        return p;
}

void *xrealloc(void *p, size_t size) {
        void *q = realloc(p, size ? size : 1);
        if (!q)
                oom();
        return q;
}

void *xgrow(void *p, size_t *allocated, size_t need, size_t size) {
        if (need <= *allocated)
                return p;
        size_t n = *allocated ? *allocated : 8;
        while (n < need) {
                if (n > SIZE_MAX / 2 / size)
                        oom();
                n *= 2;
        }
        p = xrealloc(p, n * size);
        memset((char *)p + *allocated * size, 0, (n - *allocated) * size);
        *allocated = n;
        return p;
}

char *xstrdup(const char *s) {
        char *r = strdup(s);
        if (!r)
                oom();
        return r;
}

char *xstrndup(const char *s, size_t n) {
        char *r = strndup(s, n);
        if (!r)
                oom();
        return r;
}

void *xmemdup(const void *p, size_t n) {
        void *r = xmalloc(n);
        memcpy(r, p, n);
        return r;
}

char *xvasprintf(const char *fmt, va_list ap) {
        char *r = NULL;
        if (vasprintf(&r, fmt, ap) < 0)
                oom();
        return r;
}

char *xasprintf(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        char *r = xvasprintf(fmt, ap);
        va_end(ap);
        return r;
}
