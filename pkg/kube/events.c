/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/events.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hashmap.h"
#include "base/timeutil.h"

#define SERIES_WINDOW (10 * 60 * USEC_PER_SEC)
#define MAX_REMEMBERED 4096
#define MAX_NOTE 1024 /* the API server refuses notes over 1 kB */

static const kube_resource events_res = {"events.k8s.io", "v1", "events", true};

typedef struct seen {
        char *namespace;
        char *name;    /* the Event object's name */
        int32_t count; /* occurrences so far */
        usec_t last;   /* monotonic */
} seen;

struct kube_recorder {
        kube_client *client;
        char *controller, *instance;
        pthread_mutex_t lock;
        vt_hashmap *seen; /* dedup key -> seen */
};

static void seen_free(void *p) {
        seen *s = p;
        free(s->namespace);
        free(s->name);
        free(s);
}

kube_recorder *kube_recorder_new(kube_client *c, const char *controller, const char *instance) {
        kube_recorder *r = xnew(kube_recorder, 1);
        r->client = c;
        r->controller = xstrdup(controller);
        r->instance = xstrdup(instance ? instance : "unknown");
        pthread_mutex_init(&r->lock, NULL);
        r->seen = vt_hashmap_new(seen_free);
        return r;
}

void kube_recorder_free(kube_recorder *r) {
        if (!r)
                return;
        vt_hashmap_free(r->seen);
        pthread_mutex_destroy(&r->lock);
        free(r->controller);
        free(r->instance);
        free(r);
}

/* Forget series that ended long ago, so memory stays bounded. */
static void prune(kube_recorder *r, usec_t now) {
        if (vt_hashmap_size(r->seen) < MAX_REMEMBERED)
                return;
        size_t n = 0, alloc = 0;
        char **old = NULL;
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(r->seen, &it, &k, &v);)
                if (now - ((seen *)v)->last > SERIES_WINDOW) {
                        old = xgrow(old, &alloc, n + 1, sizeof(char *));
                        old[n++] = xstrdup(k);
                }
        for (size_t i = 0; i < n; i++) {
                vt_hashmap_remove(r->seen, old[i]);
                free(old[i]);
        }
        free(old);
        if (vt_hashmap_size(r->seen) >= MAX_REMEMBERED)
                vt_hashmap_clear(r->seen);
}

static json_t *truncated_note(const char *note) {
        size_t len = strlen(note);
        if (len <= MAX_NOTE)
                return json_string(note);
        /* Cut on a UTF-8 boundary. */
        size_t cut = MAX_NOTE - 3;
        while (cut > 0 && ((unsigned char)note[cut] & 0xC0) == 0x80)
                cut--;
        _cleanup_free_ char *t = xasprintf("%.*s...", (int)cut, note);
        return json_string(t);
}

int kube_record(kube_recorder *r, const kube_object_ref *reg, enum kube_event_type type, const char *reason,
                const char *action, const char *note, vt_error **err) {
        assert_return(r && reg && reg->name && reason && action && note, -EINVAL);
        const char *ns = reg->namespace && *reg->namespace ? reg->namespace : "default";
        const char *type_s = type == KUBE_EVENT_WARNING ? "Warning" : "Normal";
        _cleanup_free_ char *key = xasprintf("%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s", reg->uid ? reg->uid : "", ns,
                                             reg->name, type_s, reason, note);
        usec_t now = now_monotonic();
        char when[40];
        format_rfc3339_micro(now_realtime(), when);

        pthread_mutex_lock(&r->lock);
        seen *s = vt_hashmap_get(r->seen, key);
        _cleanup_free_ char *series_ns = NULL, *series_name = NULL;
        int32_t count = 0;
        if (s && now - s->last <= SERIES_WINDOW) {
                s->count++;
                s->last = now;
                series_ns = xstrdup(s->namespace);
                series_name = xstrdup(s->name);
                count = s->count;
        }
        pthread_mutex_unlock(&r->lock);

        if (series_name) {
                json_t *patch = json_pack("{s:{s:i, s:s}}", "series", "count", count, "lastObservedTime", when);
                _cleanup_free_ char *path = kube_path(&events_res, series_ns, series_name, NULL);
                int ret = kube_patch(r->client, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, err);
                json_decref(patch);
                if (ret != -ENOENT)
                        return ret < 0 ? ret : 1;
                /* The event was garbage-collected (TTL): start a new one. */
                if (err && *err) {
                        vt_error_free(*err);
                        *err = NULL;
                }
        }

        unsigned char rnd[8];
        RAND_bytes(rnd, sizeof(rnd));
        /* Object names may be 253 characters: leave room for the 17-character
         * suffix, and do not let the cut end a name segment with '-' or '.'. */
        int keep = (int)strnlen(reg->name, 236);
        while (keep > 1 && (reg->name[keep - 1] == '-' || reg->name[keep - 1] == '.'))
                keep--;
        _cleanup_free_ char *name = xasprintf("%.*s.%02x%02x%02x%02x%02x%02x%02x%02x", keep, reg->name, rnd[0], rnd[1], rnd[2],
                                              rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        json_t *regarding = json_pack("{s:s, s:s, s:s, s:s}", "apiVersion", reg->api_version, "kind", reg->kind,
                                      "namespace", ns, "name", reg->name);
        if (reg->uid)
                json_object_set_new(regarding, "uid", json_string(reg->uid));
        json_t *ev = json_pack("{s:s, s:s, s:{s:s, s:s}, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "apiVersion",
                               "events.k8s.io/v1", "kind", "Event", "metadata", "name", name, "namespace", ns,
                               "eventTime", when, "reportingController", r->controller, "reportingInstance",
                               r->instance, "action", action, "reason", reason, "type", type_s, "note",
                               truncated_note(note), "regarding", regarding);
        _cleanup_free_ char *coll = kube_path(&events_res, ns, NULL, NULL);
        int ret = kube_create(r->client, coll, ev, NULL, err);
        json_decref(ev);
        if (ret < 0)
                return ret;

        pthread_mutex_lock(&r->lock);
        prune(r, now);
        seen *n = xnew(seen, 1);
        n->namespace = xstrdup(ns);
        n->name = xstrdup(name);
        n->count = 1;
        n->last = now;
        vt_hashmap_put(r->seen, key, n);
        pthread_mutex_unlock(&r->lock);
        return 0;
}
