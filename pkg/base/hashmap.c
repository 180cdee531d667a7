/* SPDX-License-Identifier: Apache-2.0 */
#include "hashmap.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "alloc.h"

/* A slot is empty when key == NULL. `hash` keeps the low 32 bits of the
 * key's hash: it finds the home bucket without rehashing during a shift
 * and skips most strcmp calls on a probe. */
typedef struct slot {
        char *key;
        void *value;
        uint32_t hash;
} slot;

struct vt_hashmap {
        slot *slots;
        size_t cap; /* power of two, or 0 before the first put */
        size_t size;
        vt_hashmap_free_fn free_value;
};

#define MIN_CAP 8

/* ---- SipHash-1-3 (Aumasson & Bernstein), keyed once per process. ---- */

static uint64_t sip_k0, sip_k1;
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static void sip_init(void) {
        uint64_t k[2];
        if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
                /* Early boot without entropy: still better than a constant. */
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
                k[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ULL ^ (uint64_t)(uintptr_t)&k;
        }
        sip_k0 = k[0];
        sip_k1 = k[1];
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
        do {                                                                                       \
                v0 += v1;                                                                          \
                v1 = ROTL(v1, 13);                                                                 \
                v1 ^= v0;                                                                          \
                v0 = ROTL(v0, 32);                                                                 \
                v2 += v3;                                                                          \
                v3 = ROTL(v3, 16);                                                                 \
                v3 ^= v2;                                                                          \
                v0 += v3;                                                                          \
                v3 = ROTL(v3, 21);                                                                 \
                v3 ^= v0;                                                                          \
                v2 += v1;                                                                          \
                v1 = ROTL(v1, 17);                                                                 \
                v1 ^= v2;                                                                          \
                v2 = ROTL(v2, 32);                                                                 \
        } while (0)

uint64_t vt_hash_string(const char *s, size_t len) {
        pthread_once(&sip_once, sip_init);
        uint64_t v0 = 0x736f6d6570736575ULL ^ sip_k0, v1 = 0x646f72616e646f6dULL ^ sip_k1,
                 v2 = 0x6c7967656e657261ULL ^ sip_k0, v3 = 0x7465646279746573ULL ^ sip_k1;
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;
        for (; i + 8 <= len; i += 8) {
                uint64_t m;
                memcpy(&m, p + i, 8); /* little-endian hosts only matter here: x86/arm64 */
                v3 ^= m;
                SIPROUND;
                v0 ^= m;
        }
        uint64_t b = (uint64_t)len << 56;
        for (size_t j = 0; i + j < len; j++)
                b |= (uint64_t)p[i + j] << (8 * j);
        v3 ^= b;
        SIPROUND;
        v0 ^= b;
        v2 ^= 0xff;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table ---- */

vt_hashmap *vt_hashmap_new(vt_hashmap_free_fn free_value) {
        vt_hashmap *m = xnew(vt_hashmap, 1);
        m->free_value = free_value;
        return m;
}

static void drop_value(vt_hashmap *m, void *value) {
        if (m->free_value && value)
                m->free_value(value);
}

void vt_hashmap_clear(vt_hashmap *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->cap; i++)
                if (m->slots[i].key) {
                        free(m->slots[i].key);
                        drop_value(m, m->slots[i].value);
                }
        free(m->slots);
        m->slots = NULL;
        m->cap = m->size = 0;
}

void vt_hashmap_free(vt_hashmap *m) {
        if (!m)
                return;
        vt_hashmap_clear(m);
        free(m);
}

size_t vt_hashmap_size(const vt_hashmap *m) {
        return m ? m->size : 0;
}

static uint32_t hash32(const char *key) {
        return (uint32_t)vt_hash_string(key, strlen(key));
}

/* Index of the slot holding `key`, or of the empty slot ending its probe. */
static size_t probe(const vt_hashmap *m, const char *key, uint32_t h) {
        size_t mask = m->cap - 1;
        for (size_t i = h & mask;; i = (i + 1) & mask) {
                const slot *s = &m->slots[i];
                if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
                        return i;
        }
}

static void resize(vt_hashmap *m, size_t cap) {
        slot *old = m->slots;
        size_t old_cap = m->cap;
        m->slots = xnew(slot, cap);
        m->cap = cap;
        size_t mask = cap - 1;
        for (size_t i = 0; i < old_cap; i++) {
                if (!old[i].key)
                        continue;
                size_t j = old[i].hash & mask;
                while (m->slots[j].key)
                        j = (j + 1) & mask;
                m->slots[j] = old[i];
        }
        free(old);
}

int vt_hashmap_put(vt_hashmap *m, const char *key, void *value) {
        if (m->cap == 0)
                resize(m, MIN_CAP);
        uint32_t h = hash32(key);
        size_t i = probe(m, key, h);
        if (m->slots[i].key) {
                void *old = m->slots[i].value;
                m->slots[i].value = value;
                if (old != value)
                        drop_value(m, old);
                return 0;
        }
        /* Keep the load at most 3/4 so probes stay short. */
        if ((m->size + 1) * 4 > m->cap * 3) {
                resize(m, m->cap * 2);
                i = probe(m, key, h);
        }
        m->slots[i] = (slot){.key = xstrdup(key), .value = value, .hash = h};
        m->size++;
        return 1;
}

bool vt_hashmap_lookup(const vt_hashmap *m, const char *key, const char **ret_key,
                       void **ret_value) {
        if (!m || m->size == 0)
                return false;
        size_t i = probe(m, key, hash32(key));
        if (!m->slots[i].key)
                return false;
        if (ret_key)
                *ret_key = m->slots[i].key;
        if (ret_value)
                *ret_value = m->slots[i].value;
        return true;
}

void *vt_hashmap_get(const vt_hashmap *m, const char *key) {
        void *v = NULL;
        return vt_hashmap_lookup(m, key, NULL, &v) ? v : NULL;
}

bool vt_hashmap_contains(const vt_hashmap *m, const char *key) {
        return vt_hashmap_lookup(m, key, NULL, NULL);
}

/* Take the entry at `i` out and close the gap by shifting later members of
 * the same probe run back (Knuth's algorithm R), so no tombstones pile up. */
static void *take_at(vt_hashmap *m, size_t i) {
        size_t mask = m->cap - 1;
        void *value = m->slots[i].value;
        free(m->slots[i].key);
        m->slots[i] = (slot){0};
        m->size--;
        for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
                size_t home = m->slots[j].hash & mask;
                /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
                bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
                if (stays)
                        continue;
                m->slots[i] = m->slots[j];
                m->slots[j] = (slot){0};
                i = j;
        }
        /* Give memory back after mass deletions (a relist that shrank the cache). */
        if (m->cap > MIN_CAP && m->size * 8 < m->cap)
                resize(m, m->cap / 2);
        return value;
}

void *vt_hashmap_steal(vt_hashmap *m, const char *key) {
        if (!m || m->size == 0)
                return NULL;
        size_t i = probe(m, key, hash32(key));
        if (!m->slots[i].key)
                return NULL;
        return take_at(m, i);
}

bool vt_hashmap_remove(vt_hashmap *m, const char *key) {
        if (!m || m->size == 0)
                return false;
        size_t i = probe(m, key, hash32(key));
        if (!m->slots[i].key)
                return false;
        drop_value(m, take_at(m, i));
        return true;
}

bool vt_hashmap_next(const vt_hashmap *m, vt_hashmap_iter *it, const char **ret_key,
                     void **ret_value) {
        if (!m)
                return false;
        for (; it->pos < m->cap; it->pos++) {
                const slot *s = &m->slots[it->pos];
                if (!s->key)
                        continue;
                if (ret_key)
                        *ret_key = s->key;
                if (ret_value)
                        *ret_value = s->value;
                it->pos++;
                return true;
        }
        return false;
}
