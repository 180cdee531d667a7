/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/informer.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hashmap.h"
#include "kube/watchstream.h"

struct kube_informer {
        kube_client *client;
        kube_resource res;
        char *group, *version, *plural;
        char *namespace, *label_selector, *field_selector, *index_label;
        long page_size;
        usec_t backoff_initial, backoff_max;
        long watch_timeout_sec;
        bool optional;
        kube_informer_handlers h;

        pthread_t thread;
        bool started;
        atomic_bool stop;

        pthread_rwlock_t cache_lock; /* guards cache, index, rv */
        vt_hashmap *cache;           /* key -> json_t* */
        vt_hashmap *index;           /* label value -> vt_hashmap (set of keys) */
        char *rv;

        pthread_mutex_t state_lock; /* guards synced, stats; pairs with state_cond */
        pthread_cond_t state_cond;
        bool synced;
        kube_informer_stats stats;

        /* watch-thread only */
        kube_stream *stream;
        kube_watch_decoder *decoder;
        bool need_relist;
};

/* A change to tell the handlers about, collected under the cache lock and
 * delivered after it is released (handlers may read the cache). */
enum change_kind { CHANGE_ADD, CHANGE_UPDATE, CHANGE_DELETE };
typedef struct change {
        enum change_kind kind;
        char *key;
        json_t *old_obj, *new_obj; /* owned references */
} change;
typedef struct changes {
        change *v;
        size_t n, alloc;
} changes;

static void changes_push(changes *cs, enum change_kind kind, const char *key, json_t *old_obj, json_t *new_obj) {
        cs->v = xgrow(cs->v, &cs->alloc, cs->n + 1, sizeof(change));
        cs->v[cs->n++] = (change){kind, xstrdup(key), json_incref(old_obj), json_incref(new_obj)};
}

static void changes_deliver(kube_informer *inf, changes *cs) {
        for (size_t i = 0; i < cs->n; i++) {
                change *c = &cs->v[i];
                switch (c->kind) {
                case CHANGE_ADD:
                        if (inf->h.on_add)
                                inf->h.on_add(c->key, c->new_obj, inf->h.userdata);
                        break;
                case CHANGE_UPDATE:
                        if (inf->h.on_update)
                                inf->h.on_update(c->key, c->old_obj, c->new_obj, inf->h.userdata);
                        break;
                case CHANGE_DELETE:
                        if (inf->h.on_delete)
                                inf->h.on_delete(c->key, c->old_obj, inf->h.userdata);
                        break;
                }
                free(c->key);
                json_decref(c->old_obj);
                json_decref(c->new_obj);
        }
        free(cs->v);
        *cs = (changes){0};
}

static void decref_value(void *v) {
        json_decref(v);
}

static void free_set(void *v) {
        vt_hashmap_free(v);
}

char *kube_object_key(json_t *obj) {
        json_t *md = json_object_get(obj, "metadata");
        const char *name = json_string_value(json_object_get(md, "name"));
        const char *ns = json_string_value(json_object_get(md, "namespace"));
        if (!name)
                return NULL;
        return ns && *ns ? xasprintf("%s/%s", ns, name) : xstrdup(name);
}

static const char *object_rv(json_t *obj) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
}

const char *kube_object_label(json_t *obj, const char *label) {
        return json_string_value(
                json_object_get(json_object_get(json_object_get(obj, "metadata"), "labels"), label));
}

static char *dup_opt(const char *s) {
        return s && *s ? xstrdup(s) : NULL;
}

int kube_informer_new(kube_client *c, const kube_resource *res, const kube_informer_options *opts,
                      const kube_informer_handlers *h, kube_informer **ret) {
        assert_return(c && res && ret, -EINVAL);
        kube_informer_options none = {0};
        if (!opts)
                opts = &none;
        kube_informer *inf = xnew(kube_informer, 1);
        inf->client = c;
        inf->group = xstrdup(res->group ? res->group : "");
        inf->version = xstrdup(res->version);
        inf->plural = xstrdup(res->plural);
        inf->res = (kube_resource){inf->group, inf->version, inf->plural, res->namespaced};
        inf->namespace = dup_opt(opts->namespace);
        inf->label_selector = dup_opt(opts->label_selector);
        inf->field_selector = dup_opt(opts->field_selector);
        inf->index_label = dup_opt(opts->index_label);
        inf->page_size = opts->page_size > 0 ? opts->page_size : KUBE_INFORMER_DEFAULT_PAGE;
        inf->backoff_initial = opts->backoff_initial ? opts->backoff_initial : 800 * USEC_PER_MSEC;
        inf->backoff_max = opts->backoff_max ? opts->backoff_max : 30 * USEC_PER_SEC;
        inf->watch_timeout_sec = opts->watch_timeout_sec > 0 ? opts->watch_timeout_sec : 300;
        inf->optional = opts->optional;
        if (h)
                inf->h = *h;
        pthread_rwlock_init(&inf->cache_lock, NULL);
        inf->cache = vt_hashmap_new(decref_value);
        inf->index = vt_hashmap_new(free_set);
        pthread_mutex_init(&inf->state_lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&inf->state_cond, &ca);
        pthread_condattr_destroy(&ca);
        inf->decoder = kube_watch_decoder_new(KUBE_MAX_RESPONSE);
        kube_stream_new(c, &inf->stream);
        *ret = inf;
        return 0;
}

void kube_informer_free(kube_informer *inf) {
        if (!inf)
                return;
        kube_informer_stop(inf);
        kube_stream_free(inf->stream);
        kube_watch_decoder_free(inf->decoder);
        vt_hashmap_free(inf->cache);
        vt_hashmap_free(inf->index);
        pthread_rwlock_destroy(&inf->cache_lock);
        pthread_mutex_destroy(&inf->state_lock);
        pthread_cond_destroy(&inf->state_cond);
        free(inf->rv);
        free(inf->group);
        free(inf->version);
        free(inf->plural);
        free(inf->namespace);
        free(inf->label_selector);
        free(inf->field_selector);
        free(inf->index_label);
        free(inf);
}

/* ---- cache, under cache_lock held for writing ---- */

static void index_add(kube_informer *inf, const char *key, json_t *obj) {
        const char *v = inf->index_label ? kube_object_label(obj, inf->index_label) : NULL;
        if (!v)
                return;
        vt_hashmap *set = vt_hashmap_get(inf->index, v);
        if (!set) {
                set = vt_hashmap_new(NULL);
                vt_hashmap_put(inf->index, v, set);
        }
        vt_hashmap_put(set, key, (void *)1);
}

static void index_remove(kube_informer *inf, const char *key, json_t *obj) {
        const char *v = inf->index_label ? kube_object_label(obj, inf->index_label) : NULL;
        if (!v)
                return;
        vt_hashmap *set = vt_hashmap_get(inf->index, v);
        if (!set)
                return;
        vt_hashmap_remove(set, key);
        if (vt_hashmap_size(set) == 0)
                vt_hashmap_remove(inf->index, v);
}

/* Store `obj` (a reference we own) at key; queue the change. */
static void cache_upsert(kube_informer *inf, const char *key, json_t *obj, changes *cs) {
        json_t *old = vt_hashmap_get(inf->cache, key);
        if (old) {
                const char *a = object_rv(old), *b = object_rv(obj);
                if (a && b && strcmp(a, b) == 0) {
                        json_decref(obj); /* nothing new */
                        return;
                }
                changes_push(cs, CHANGE_UPDATE, key, old, obj);
                index_remove(inf, key, old);
        } else
                changes_push(cs, CHANGE_ADD, key, NULL, obj);
        index_add(inf, key, obj);
        vt_hashmap_put(inf->cache, key, obj); /* drops old */
}

static void cache_delete(kube_informer *inf, const char *key, json_t *final_obj, changes *cs) {
        json_t *old = vt_hashmap_steal(inf->cache, key);
        if (!old)
                return;
        index_remove(inf, key, old);
        changes_push(cs, CHANGE_DELETE, key, final_obj ? final_obj : old, NULL);
        json_decref(old);
}

static void set_rv(kube_informer *inf, const char *rv) {
        if (!rv || !*rv)
                return;
        free(inf->rv);
        inf->rv = xstrdup(rv);
}

static json_t *transform(kube_informer *inf, json_t *obj) {
        return inf->h.transform ? inf->h.transform(obj, inf->h.userdata) : json_incref(obj);
}

/* ---- thread helpers ---- */

static void stat_add(kube_informer *inf, uint64_t *field, uint64_t n) {
        pthread_mutex_lock(&inf->state_lock);
        *field += n;
        pthread_mutex_unlock(&inf->state_lock);
}

/* Sleep for `usec`, returning early (true) when asked to stop. */
static bool sleep_or_stop(kube_informer *inf, usec_t usec) {
        struct timespec ts;
        monotonic_deadline(usec, &ts);
        pthread_mutex_lock(&inf->state_lock);
        while (!atomic_load(&inf->stop))
                if (pthread_cond_timedwait(&inf->state_cond, &inf->state_lock, &ts) != 0)
                        break;
        pthread_mutex_unlock(&inf->state_lock);
        return atomic_load(&inf->stop);
}

static uint32_t random_u32(void) {
        uint32_t v = 0;
        if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
                v = (uint32_t)now_monotonic();
        return v;
}

/* Exponential backoff with jitter: base * 2^attempt, capped, times [1, 2). */
static usec_t backoff_delay(kube_informer *inf, unsigned attempt) {
        usec_t d = inf->backoff_initial;
        for (unsigned i = 0; i < attempt && d < inf->backoff_max; i++)
                d *= 2;
        if (d > inf->backoff_max)
                d = inf->backoff_max;
        return d + (usec_t)((double)d * (random_u32() / 4294967296.0));
}

static char *collection_path(kube_informer *inf) {
        return kube_path(&inf->res, inf->namespace, NULL, NULL);
}

/* LIST every page, then reconcile the cache with what the server holds.
 * Each page is transformed (trimmed) and dropped before the next is fetched,
 * so memory holds one page of whole objects at a time. A page over the
 * client's response cap (large objects: a tenant's VMs may each carry
 * hundreds of KiB of cloud-init data) is asked for again, from the same
 * continue token, with half the objects, down to one. */
static int do_list(kube_informer *inf, vt_error **err) {
        _cleanup_free_ char *coll = collection_path(inf);
        _cleanup_(vt_hashmap_freep) vt_hashmap *fresh = vt_hashmap_new(decref_value);
        _cleanup_free_ char *cont = NULL, *list_rv = NULL;
        long limit = inf->page_size;
        for (;;) {
                json_t *page = NULL;
                stat_add(inf, &inf->stats.list_pages, 1);
                _cleanup_error_ vt_error *page_err = NULL;
                int r = kube_list_page(inf->client, coll, inf->label_selector, inf->field_selector, limit, cont,
                                       &page, &page_err);
                if (r == -EFBIG && limit > 1) {
                        limit /= 2;
                        stat_add(inf, &inf->stats.list_pages_split, 1);
                        continue;
                }
                if (r < 0 && err && !*err)
                        *err = TAKE_PTR(page_err);
                if (r == -ENOENT && inf->optional) {
                        /* Not served (yet): an empty, synced cache; the caller keeps retrying. */
                        pthread_mutex_lock(&inf->state_lock);
                        inf->synced = true;
                        pthread_cond_broadcast(&inf->state_cond);
                        pthread_mutex_unlock(&inf->state_lock);
                        return r;
                }
                if (r < 0)
                        return r; /* including an expired continue token: the list starts over */
                json_t *items = json_object_get(page, "items");
                size_t i;
                json_t *item;
                json_array_foreach(items, i, item) {
                        _cleanup_free_ char *key = kube_object_key(item);
                        if (key)
                                vt_hashmap_put(fresh, key, transform(inf, item));
                }
                json_t *md = json_object_get(page, "metadata");
                free(cont);
                cont = dup_opt(json_string_value(json_object_get(md, "continue")));
                if (!list_rv)
                        list_rv = dup_opt(json_string_value(json_object_get(md, "resourceVersion")));
                json_decref(page);
                if (!cont || atomic_load(&inf->stop))
                        break;
        }
        if (atomic_load(&inf->stop))
                return -ECANCELED;

        changes cs = {0};
        pthread_rwlock_wrlock(&inf->cache_lock);
        /* Deletions first: keys cached but no longer listed. */
        size_t n_gone = 0, alloc_gone = 0;
        char **gone = NULL;
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(inf->cache, &it, &k, &v);)
                if (!vt_hashmap_contains(fresh, k)) {
                        gone = xgrow(gone, &alloc_gone, n_gone + 1, sizeof(char *));
                        gone[n_gone++] = xstrdup(k);
                }
        for (size_t i = 0; i < n_gone; i++) {
                cache_delete(inf, gone[i], NULL, &cs);
                free(gone[i]);
        }
        free(gone);
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(fresh, &it, &k, &v);)
                cache_upsert(inf, k, json_incref(v), &cs);
        set_rv(inf, list_rv);
        pthread_rwlock_unlock(&inf->cache_lock);
        changes_deliver(inf, &cs);

        pthread_mutex_lock(&inf->state_lock);
        inf->stats.lists++;
        inf->synced = true;
        pthread_cond_broadcast(&inf->state_cond);
        pthread_mutex_unlock(&inf->state_lock);
        return 0;
}

static int on_watch_event(const kube_watch_event *ev, void *userdata) {
        kube_informer *inf = userdata;
        if (ev->type == KUBE_WATCH_ERROR) {
                if (ev->status_code == 410) {
                        inf->need_relist = true;
                        return -ETIME;
                }
                return -EPROTO;
        }
        changes cs = {0};
        pthread_rwlock_wrlock(&inf->cache_lock);
        if (ev->type == KUBE_WATCH_BOOKMARK)
                set_rv(inf, ev->resource_version);
        else {
                _cleanup_free_ char *key = kube_object_key(ev->object);
                if (key) {
                        if (ev->type == KUBE_WATCH_DELETED) {
                                json_t *t = transform(inf, ev->object);
                                cache_delete(inf, key, t, &cs);
                                json_decref(t);
                        } else
                                cache_upsert(inf, key, transform(inf, ev->object), &cs);
                }
                set_rv(inf, ev->resource_version);
        }
        pthread_rwlock_unlock(&inf->cache_lock);
        changes_deliver(inf, &cs);
        stat_add(inf, ev->type == KUBE_WATCH_BOOKMARK ? &inf->stats.bookmarks : &inf->stats.events, 1);
        return 0;
}

static int on_stream_data(const char *data, size_t len, void *userdata) {
        kube_informer *inf = userdata;
        int r = kube_watch_decoder_feed(inf->decoder, data, len, on_watch_event, inf, NULL);
        return r < 0 ? r : 0;
}

/* One WATCH from the cache's resourceVersion until the stream ends. */
static int do_watch(kube_informer *inf, vt_error **err) {
        _cleanup_free_ char *coll = collection_path(inf);
        _cleanup_free_ char *rv = kube_informer_resource_version(inf);
        vt_buf p = {0};
        /* Randomised timeout spreads reconnects of many agents (client-go does the same). */
        long timeout = inf->watch_timeout_sec + (long)(random_u32() % (uint32_t)inf->watch_timeout_sec);
        vt_buf_printf(&p, "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%ld", coll, timeout);
        if (rv) {
                _cleanup_free_ char *e = kube_escape(rv);
                vt_buf_printf(&p, "&resourceVersion=%s", e);
        }
        if (inf->label_selector) {
                _cleanup_free_ char *e = kube_escape(inf->label_selector);
                vt_buf_printf(&p, "&labelSelector=%s", e);
        }
        if (inf->field_selector) {
                _cleanup_free_ char *e = kube_escape(inf->field_selector);
                vt_buf_printf(&p, "&fieldSelector=%s", e);
        }
        kube_watch_decoder_reset(inf->decoder);
        stat_add(inf, &inf->stats.watches, 1);
        int r = kube_stream_get(inf->stream, p.data, timeout + 30, on_stream_data, inf, &inf->stop, err);
        vt_buf_free(&p);
        if (r == 0)
                r = kube_watch_decoder_finish(inf->decoder, err);
        if (r == -ETIME)
                inf->need_relist = true; /* 410 as an HTTP answer or an ERROR event */
        return r;
}

static void *informer_thread(void *userdata) {
        kube_informer *inf = userdata;
        unsigned failures = 0;
        inf->need_relist = true;
        while (!atomic_load(&inf->stop)) {
                _cleanup_error_ vt_error *err = NULL;
                int r;
                if (inf->need_relist) {
                        r = do_list(inf, &err);
                        if (r == 0) {
                                inf->need_relist = false;
                                failures = 0;
                        }
                } else {
                        r = do_watch(inf, &err);
                        if (inf->need_relist) {
                                /* 410: our resourceVersion was compacted away. */
                                stat_add(inf, &inf->stats.relists_gone, 1);
                                continue;
                        }
                        if (r == 0)
                                failures = 0; /* a normal timeout: reconnect at once */
                        else if (r != -ECANCELED)
                                stat_add(inf, &inf->stats.resumes, 1);
                }
                if (r == -ENOENT && inf->optional && inf->need_relist) {
                        /* An optional type not served: look again now and then, quietly. */
                        if (sleep_or_stop(inf, inf->backoff_max))
                                break;
                        continue;
                }
                if (r < 0 && r != -ECANCELED) {
                        stat_add(inf, &inf->stats.errors, 1);
                        if (inf->h.on_error) {
                                if (!err)
                                        vt_error_set(&err, -r, "%s %s: decoding the watch stream failed",
                                                     inf->need_relist ? "LIST" : "WATCH", inf->plural);
                                inf->h.on_error(err, inf->h.userdata);
                        }
                        if (sleep_or_stop(inf, backoff_delay(inf, failures++)))
                                break;
                }
        }
        return NULL;
}

int kube_informer_start(kube_informer *inf, vt_error **err) {
        assert_return(inf && !inf->started, -EINVAL);
        atomic_store(&inf->stop, false);
        int r = pthread_create(&inf->thread, NULL, informer_thread, inf);
        if (r != 0)
                return vt_error_errno(err, r, "cannot start the informer thread for %s", inf->plural);
        inf->started = true;
        return 0;
}

void kube_informer_stop(kube_informer *inf) {
        if (!inf || !inf->started)
                return;
        pthread_mutex_lock(&inf->state_lock);
        atomic_store(&inf->stop, true);
        pthread_cond_broadcast(&inf->state_cond);
        pthread_mutex_unlock(&inf->state_lock);
        pthread_join(inf->thread, NULL);
        inf->started = false;
}

bool kube_informer_has_synced(kube_informer *inf) {
        pthread_mutex_lock(&inf->state_lock);
        bool s = inf->synced;
        pthread_mutex_unlock(&inf->state_lock);
        return s;
}

int kube_informer_wait_synced(kube_informer *inf, usec_t timeout) {
        struct timespec ts;
        monotonic_deadline(timeout, &ts);
        int r = 0;
        pthread_mutex_lock(&inf->state_lock);
        while (!inf->synced && r == 0)
                r = pthread_cond_timedwait(&inf->state_cond, &inf->state_lock, &ts);
        bool s = inf->synced;
        pthread_mutex_unlock(&inf->state_lock);
        return s ? 0 : -ETIMEDOUT;
}

json_t *kube_informer_get(kube_informer *inf, const char *key) {
        pthread_rwlock_rdlock(&inf->cache_lock);
        json_t *o = json_incref(vt_hashmap_get(inf->cache, key));
        pthread_rwlock_unlock(&inf->cache_lock);
        return o;
}

size_t kube_informer_size(kube_informer *inf) {
        pthread_rwlock_rdlock(&inf->cache_lock);
        size_t n = vt_hashmap_size(inf->cache);
        pthread_rwlock_unlock(&inf->cache_lock);
        return n;
}

void kube_informer_foreach(kube_informer *inf, void (*fn)(const char *key, json_t *obj, void *ud), void *ud) {
        pthread_rwlock_rdlock(&inf->cache_lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(inf->cache, &it, &k, &v);)
                fn(k, v, ud);
        pthread_rwlock_unlock(&inf->cache_lock);
}

size_t kube_informer_keys_by_label(kube_informer *inf, const char *value, char ***ret_keys) {
        pthread_rwlock_rdlock(&inf->cache_lock);
        vt_hashmap *set = vt_hashmap_get(inf->index, value);
        size_t n = set ? vt_hashmap_size(set) : 0, i = 0;
        char **keys = xnew(char *, n + 1);
        const char *k;
        void *v;
        if (set)
                for (vt_hashmap_iter it = {0}; vt_hashmap_next(set, &it, &k, &v);)
                        keys[i++] = xstrdup(k);
        pthread_rwlock_unlock(&inf->cache_lock);
        *ret_keys = keys;
        return n;
}

void kube_informer_resync(kube_informer *inf) {
        changes cs = {0};
        pthread_rwlock_rdlock(&inf->cache_lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(inf->cache, &it, &k, &v);)
                changes_push(&cs, CHANGE_UPDATE, k, v, v);
        pthread_rwlock_unlock(&inf->cache_lock);
        changes_deliver(inf, &cs);
}

char *kube_informer_resource_version(kube_informer *inf) {
        pthread_rwlock_rdlock(&inf->cache_lock);
        char *rv = inf->rv ? xstrdup(inf->rv) : NULL;
        pthread_rwlock_unlock(&inf->cache_lock);
        return rv;
}

void kube_informer_get_stats(kube_informer *inf, kube_informer_stats *ret) {
        pthread_mutex_lock(&inf->state_lock);
        *ret = inf->stats;
        pthread_mutex_unlock(&inf->state_lock);
}
