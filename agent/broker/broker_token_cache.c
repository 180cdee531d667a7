/* SPDX-License-Identifier: Apache-2.0 */
#include "broker_token_cache.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hashmap.h"

#define MAX_ENTRIES 1024

struct broker_token_cache {
        pthread_mutex_t lock;
        vt_hashmap *entries; /* hex SHA-256 of the token -> entry */
        usec_t ttl;
};

typedef struct entry {
        json_t *status;
        usec_t expires; /* CLOCK_MONOTONIC */
} entry;

static void entry_free(void *p) {
        entry *e = p;
        if (e) {
                json_decref(e->status);
                free(e);
        }
}

static void token_key(const char *token, char hex[static 2 * SHA256_DIGEST_LENGTH + 1]) {
        unsigned char md[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)token, strlen(token), md);
        for (size_t i = 0; i < sizeof(md); i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        OPENSSL_cleanse(md, sizeof(md));
}

broker_token_cache *broker_token_cache_new(usec_t ttl) {
        broker_token_cache *c = xnew(broker_token_cache, 1);
        pthread_mutex_init(&c->lock, NULL);
        c->entries = vt_hashmap_new(entry_free);
        c->ttl = ttl;
        return c;
}

void broker_token_cache_free(broker_token_cache *c) {
        if (!c)
                return;
        vt_hashmap_free(c->entries);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

json_t *broker_token_cache_get(broker_token_cache *c, const char *token) {
        char key[2 * SHA256_DIGEST_LENGTH + 1];
        token_key(token, key);
        json_t *st = NULL;
        pthread_mutex_lock(&c->lock);
        entry *e = vt_hashmap_get(c->entries, key);
        if (e && e->expires > now_monotonic())
                st = json_incref(e->status);
        else if (e)
                vt_hashmap_remove(c->entries, key);
        pthread_mutex_unlock(&c->lock);
        return st;
}

/* Under the lock: room for one more (expired ones go first, then all). */
static void make_room_locked(broker_token_cache *c) {
        if (vt_hashmap_size(c->entries) < MAX_ENTRIES)
                return;
        usec_t now = now_monotonic();
        char **old = xnew(char *, vt_hashmap_size(c->entries));
        size_t n = 0;
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(c->entries, &it, &k, &v);)
                if (((entry *)v)->expires <= now)
                        old[n++] = xstrdup(k);
        for (size_t i = 0; i < n; i++) {
                vt_hashmap_remove(c->entries, old[i]);
                free(old[i]);
        }
        free(old);
        if (vt_hashmap_size(c->entries) >= MAX_ENTRIES)
                vt_hashmap_clear(c->entries);
}

void broker_token_cache_put(broker_token_cache *c, const char *token, json_t *status) {
        if (!json_is_true(json_object_get(status, "authenticated")) || c->ttl == 0)
                return;
        char key[2 * SHA256_DIGEST_LENGTH + 1];
        token_key(token, key);
        entry *e = xnew(entry, 1);
        e->status = json_incref(status);
        e->expires = now_monotonic() + c->ttl;
        pthread_mutex_lock(&c->lock);
        make_room_locked(c);
        vt_hashmap_put(c->entries, key, e);
        pthread_mutex_unlock(&c->lock);
}
