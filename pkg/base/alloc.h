/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation wrappers that abort on out-of-memory (as crun does): no caller
 * carries an untestable ENOMEM branch. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "macro.h"

void *xmalloc(size_t size);
void *xzalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
/* Grow an array of `n` elements of `size` bytes to hold at least `need`;
 * `*allocated` is updated. Doubles, so appends are amortised O(1). */
void *xgrow(void *p, size_t *allocated, size_t need, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);
char *xvasprintf(const char *fmt, va_list ap) _printf_(1, 0);

#define xnew(type, n) ((type *)xcalloc((n), sizeof(type)))
