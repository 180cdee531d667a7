/* SPDX-License-Identifier: Apache-2.0 */
/* Memory for key material: its own anonymous mapping, locked (never swapped),
 * excluded from core dumps, zeroed in forked children, and wiped with
 * OPENSSL_cleanse() before it is unlocked and unmapped.
 *
 *     _cleanup_secmem_ secmem *dek = NULL;
 *     r = secmem_new(32, &dek, err);
 *     ... dek->data[0 .. dek->len) ...
 *
 * Locking needs CAP_IPC_LOCK or room under RLIMIT_MEMLOCK; without either,
 * secmem_new() fails with -ENOMEM/-EPERM and says so rather than silently
 * handing out swappable memory. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct secmem {
        uint8_t *data; /* len usable bytes, page-aligned */
        size_t len;
        size_t map_len; /* private: the mapping's size */
} secmem;

/* A zeroed, locked region of len bytes (1 <= len <= 1 MiB). */
int secmem_new(size_t len, secmem **ret, vt_error **err);
/* A locked copy of p[0..len). */
int secmem_dup(const void *p, size_t len, secmem **ret, vt_error **err);
/* Shrink the usable length (the tail is wiped); for results whose size is
 * known only after they were written. */
void secmem_truncate(secmem *m, size_t len);
/* Wipe, unlock, unmap. NULL is fine. */
void secmem_free(secmem *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(secmem *, secmem_free)
#define _cleanup_secmem_ _cleanup_(secmem_freep)

#define SECMEM_MAX ((size_t)1 << 20)
