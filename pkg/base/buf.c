/* SPDX-License-Identifier: Apache-2.0 */
#include "buf.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static void reserve(vt_buf *b, size_t extra) {
        if (b->len + extra + 1 <= b->cap)
                return;
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + extra + 1)
                cap *= 2;
        if (b->sensitive && b->data) {
                /* realloc would leave the old copy in freed memory: move it by
                 * hand and wipe what it leaves behind. */
                char *n = xmalloc(cap);
                memcpy(n, b->data, b->len + 1);
                OPENSSL_cleanse(b->data, b->cap);
                free(b->data);
                b->data = n;
        } else
                b->data = xrealloc(b->data, cap);
        b->cap = cap;
}

void vt_buf_append(vt_buf *b, const void *p, size_t n) {
        reserve(b, n);
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
}

void vt_buf_appends(vt_buf *b, const char *s) {
        vt_buf_append(b, s, strlen(s));
}

void vt_buf_printf(vt_buf *b, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *s = xvasprintf(fmt, ap);
        va_end(ap);
        vt_buf_appends(b, s);
}

void vt_buf_consume(vt_buf *b, size_t n) {
        if (n >= b->len) {
                vt_buf_reset(b);
                return;
        }
        memmove(b->data, b->data + n, b->len - n);
        if (b->sensitive)
                OPENSSL_cleanse(b->data + b->len - n, n);
        b->len -= n;
        b->data[b->len] = '\0';
}

void vt_buf_reset(vt_buf *b) {
        if (b->sensitive && b->data)
                OPENSSL_cleanse(b->data, b->cap);
        b->len = 0;
        if (b->data)
                b->data[0] = '\0';
}

char *vt_buf_steal(vt_buf *b) {
        char *d = b->data ? b->data : xstrdup("");
        *b = (vt_buf){0};
        return d;
}

void vt_buf_free(vt_buf *b) {
        free(b->data);
        *b = (vt_buf){0};
}

void vt_buf_wipe(vt_buf *b) {
        if (b->data)
                OPENSSL_cleanse(b->data, b->cap);
        vt_buf_free(b);
}
