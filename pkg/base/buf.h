/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer, always NUL-terminated so text can be read in place. */
#pragma once

#include <stddef.h>

#include "macro.h"

typedef struct vt_buf {
        char *data;
        size_t len;
        size_t cap;
} vt_buf;

void vt_buf_append(vt_buf *b, const void *p, size_t n);
void vt_buf_appends(vt_buf *b, const char *s);
void vt_buf_printf(vt_buf *b, const char *fmt, ...) _printf_(2, 3);
/* Drop the first n bytes (consumed input), keeping the rest. */
void vt_buf_consume(vt_buf *b, size_t n);
void vt_buf_reset(vt_buf *b);
/* Detach the data (caller frees); the buffer is empty afterwards. */
char *vt_buf_steal(vt_buf *b);
void vt_buf_free(vt_buf *b);
/* Overwrite with zeros before freeing: for buffers that held secrets. */
void vt_buf_wipe(vt_buf *b);
