/* SPDX-License-Identifier: Apache-2.0 */
#include "written.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hashmap.h"
#include "vmspec.h"

struct state_written {
        pthread_mutex_t lock;
        vt_hashmap *map; /* ns/vm -> json_t */
};

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

static void value_free(void *p) {
        json_decref(p);
}

state_written *state_written_new(void) {
        state_written *w = xnew(state_written, 1);
        pthread_mutex_init(&w->lock, NULL);
        w->map = vt_hashmap_new(value_free);
        return w;
}

void state_written_free(state_written *w) {
        if (!w)
                return;
        vt_hashmap_free(w->map);
        pthread_mutex_destroy(&w->lock);
        free(w);
}

json_t *state_tpmstate_trim(json_t *ts) {
        static const char *const keep[] = {"spec", "status", NULL};
        return metadata_trim(ts, keep);
}

void state_written_remember(state_written *w, json_t *ts) {
        const char *ns = md_str(ts, "namespace"), *name = md_str(ts, "name");
        if (!ns || !name)
                return;
        _cleanup_free_ char *key = xasprintf("%s/%s", ns, name);
        pthread_mutex_lock(&w->lock);
        vt_hashmap_put(w->map, key, state_tpmstate_trim(ts));
        pthread_mutex_unlock(&w->lock);
}

void state_written_forget(state_written *w, const char *key) {
        pthread_mutex_lock(&w->lock);
        vt_hashmap_remove(w->map, key);
        pthread_mutex_unlock(&w->lock);
}

void state_written_clear(state_written *w) {
        pthread_mutex_lock(&w->lock);
        vt_hashmap_clear(w->map);
        pthread_mutex_unlock(&w->lock);
}

/* resourceVersions are opaque, but the API server's are etcd revisions:
 * compare them as numbers when both are, else only tell equal from not. */
static bool rv_at_least(const char *a, const char *b) {
        if (!a || !b)
                return false;
        char *ea = NULL, *eb = NULL;
        unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
        if (*a && *b && !*ea && !*eb)
                return x >= y;
        return strcmp(a, b) == 0;
}

json_t *state_written_current(state_written *w, const char *key, json_t *cached, const char *vm_uid) {
        pthread_mutex_lock(&w->lock);
        json_t *mine = vt_hashmap_get(w->map, key);
        const char *wuid = mine ? json_string_value(json_object_get(json_object_get(mine, "spec"), "vmUID")) : NULL;
        bool use_mine = mine && wuid && vm_uid && strcmp(wuid, vm_uid) == 0;
        if (use_mine && cached) {
                const char *cu = md_str(cached, "uid"), *wu = md_str(mine, "uid");
                /* Another object, or the cache has our write (or newer): done with the memo. */
                if (!cu || !wu || strcmp(cu, wu) != 0 ||
                    rv_at_least(md_str(cached, "resourceVersion"), md_str(mine, "resourceVersion")))
                        use_mine = false;
        }
        json_t *ret = use_mine ? json_incref(mine) : json_incref(cached);
        if (!use_mine && mine)
                vt_hashmap_remove(w->map, key);
        pthread_mutex_unlock(&w->lock);
        json_decref(cached);
        return ret;
}
