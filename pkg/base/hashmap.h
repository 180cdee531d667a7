/* SPDX-License-Identifier: Apache-2.0 */
/* A string-keyed hash map (open addressing, linear probing, backward-shift
 * deletion, no tombstones), for the informer cache and the work queue.
 *
 * Memory: one 24-byte slot per bucket plus the copied key; the table stays
 * between 1/8 and 3/4 full (it grows and shrinks), so 10,000 entries cost
 * about 400 KiB of table plus the keys.
 *
 * Keys are hashed with SipHash-1-3 under a per-process random key: names come
 * from the API server (tenants choose them), so collisions cannot be forced.
 *
 *     _cleanup_hashmap_ vt_hashmap *m = vt_hashmap_new(free);
 *     vt_hashmap_put(m, "ns/a", xstrdup("x"));
 *     const char *k; void *v;
 *     for (vt_hashmap_iter it = {0}; vt_hashmap_next(m, &it, &k, &v);) ...
 *
 * Not thread-safe: callers lock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct vt_hashmap vt_hashmap;
typedef void (*vt_hashmap_free_fn)(void *value);

/* `free_value` (may be NULL) is called on values the map drops: replaced by
 * put, removed by remove/clear, or left at free. */
vt_hashmap *vt_hashmap_new(vt_hashmap_free_fn free_value);
void vt_hashmap_free(vt_hashmap *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(vt_hashmap *, vt_hashmap_free)
#define _cleanup_hashmap_ _cleanup_(vt_hashmap_freep)

/* Insert or replace. The key is copied; the map owns `value` from now on.
 * Returns 1 if the key was new, 0 if an existing value was replaced (and
 * freed with free_value, unless it is the same pointer). */
int vt_hashmap_put(vt_hashmap *m, const char *key, void *value);
/* The value, or NULL if absent (store non-NULL values to tell them apart, or
 * use vt_hashmap_lookup). */
void *vt_hashmap_get(const vt_hashmap *m, const char *key);
/* True if present; *ret_key (optional) is the map's own copy of the key,
 * stable until the entry is removed, *ret_value (optional) the value. */
bool vt_hashmap_lookup(const vt_hashmap *m, const char *key, const char **ret_key,
                       void **ret_value);
bool vt_hashmap_contains(const vt_hashmap *m, const char *key);
/* Remove and free the value with free_value. Returns true if it was there. */
bool vt_hashmap_remove(vt_hashmap *m, const char *key);
/* Remove and hand the value back to the caller (not freed); NULL if absent. */
void *vt_hashmap_steal(vt_hashmap *m, const char *key);
/* Remove everything (values freed), keeping the map usable. */
void vt_hashmap_clear(vt_hashmap *m);
size_t vt_hashmap_size(const vt_hashmap *m);

/* Iteration in unspecified order. The map must not be modified while
 * iterating (collect the keys first, then remove). Start with `= {0}`. */
typedef struct vt_hashmap_iter {
        size_t pos;
} vt_hashmap_iter;
bool vt_hashmap_next(const vt_hashmap *m, vt_hashmap_iter *it, const char **ret_key,
                     void **ret_value);

/* The keyed hash the map uses (exposed for tests and for callers that shard). */
uint64_t vt_hash_string(const char *s, size_t len);
