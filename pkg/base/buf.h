/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer, always NUL-terminated so text can be read in place. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

typedef struct vt_buf {
        char *data;
        size_t len;
        size_t cap;
        /* Holds secrets (a Secret's JSON, key material): when it grows, the
         * old allocation is wiped before it is freed, and consumed bytes are
         * wiped too; free it with vt_buf_wipe(). */
        bool sensitive;
} vt_buf;

void vt_buf_append(vt_buf *b, const void *p, size_t n);
void vt_buf_appends(vt_buf *b, const char *s);
void vt_buf_printf(vt_buf *b, const char *fmt, ...) _printf_(2, 3);
/* Drop the first n bytes (consumed input), keeping the rest. */
void vt_buf_consume(vt_buf *b, size_t n);
void vt_buf_reset(vt_buf *b);
/* Detach the data (caller frees, and wipes if sensitive); the buffer is
 * empty afterwards (and no longer sensitive). */
char *vt_buf_steal(vt_buf *b);
void vt_buf_free(vt_buf *b);
/* Overwrite with zeros before freeing: for buffers that held secrets. */
void vt_buf_wipe(vt_buf *b);
