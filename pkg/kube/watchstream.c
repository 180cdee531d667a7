/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/watchstream.h"

#include <inttypes.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"

/* A buffer that grew for one large event is released afterwards rather than
 * kept for the life of the watch: thousands of watches may be idle. */
#define KEEP_BUF_CAP ((size_t)256 << 10)

struct kube_watch_decoder {
        size_t max_event;
        /* Framing state of the event being scanned; survives between feeds so
         * no byte is scanned twice. */
        bool in_event;
        bool in_string;
        bool escape;
        size_t depth;
        /* Bytes of the current event from earlier chunks (empty while the event
         * has started in the chunk being fed). */
        vt_buf buf;
        uint64_t offset;       /* stream bytes before the chunk being fed */
        uint64_t event_offset; /* where the current event began */
        int failed;            /* sticky negative errno, 0 while healthy */
};

static const char *const type_names[] = {
        [KUBE_WATCH_ADDED] = "ADDED",
        [KUBE_WATCH_MODIFIED] = "MODIFIED",
        [KUBE_WATCH_DELETED] = "DELETED",
        [KUBE_WATCH_BOOKMARK] = "BOOKMARK",
        [KUBE_WATCH_ERROR] = "ERROR",
};

const char *kube_watch_type_to_string(kube_watch_type t) {
        if ((size_t)t < ELEMENTSOF(type_names))
                return type_names[t];
        return "UNKNOWN";
}

kube_watch_decoder *kube_watch_decoder_new(size_t max_event_size) {
        kube_watch_decoder *d = xnew(kube_watch_decoder, 1);
        d->max_event = max_event_size ? max_event_size : KUBE_WATCH_DEFAULT_MAX_EVENT;
        return d;
}

void kube_watch_decoder_free(kube_watch_decoder *d) {
        if (!d)
                return;
        vt_buf_free(&d->buf);
        free(d);
}

void kube_watch_decoder_reset(kube_watch_decoder *d) {
        if (!d)
                return;
        size_t max = d->max_event;
        vt_buf_free(&d->buf);
        *d = (kube_watch_decoder){.max_event = max};
}

size_t kube_watch_decoder_buffered(const kube_watch_decoder *d) {
        return d ? d->buf.len : 0;
}

static void release_buf(kube_watch_decoder *d) {
        if (d->buf.cap > KEEP_BUF_CAP)
                vt_buf_free(&d->buf);
        else
                vt_buf_reset(&d->buf);
}

/* Record the sticky error. `r` is negative and err already describes it. */
static int fail(kube_watch_decoder *d, int r) {
        d->failed = r;
        d->in_event = false;
        release_buf(d);
        return r;
}

static bool is_ws(unsigned char c) {
        return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Advance over p[*io_i, limit) following the JSON structure of the current
 * event. Returns true with *io_i just past the closing brace when the event
 * is complete, false with *io_i == limit otherwise. Only framing is checked
 * here; jansson validates the grammar afterwards. */
static bool scan(kube_watch_decoder *d, const unsigned char *p, size_t *io_i, size_t limit) {
        size_t i = *io_i, depth = d->depth;
        bool in_string = d->in_string, escape = d->escape;
        bool done = false;

        while (i < limit) {
                if (in_string) {
                        if (escape) {
                                escape = false;
                                i++;
                                continue;
                        }
                        /* Tight loop over the bulk of a string. */
                        while (i < limit && p[i] != '"' && p[i] != '\\')
                                i++;
                        if (i == limit)
                                break;
                        if (p[i] == '\\')
                                escape = true;
                        else
                                in_string = false;
                        i++;
                        continue;
                }
                unsigned char c = p[i++];
                if (c == '"')
                        in_string = true;
                else if (c == '{' || c == '[')
                        depth++;
                else if ((c == '}' || c == ']') && --depth == 0) {
                        done = true;
                        break;
                }
        }
        d->depth = depth;
        d->in_string = in_string;
        d->escape = escape;
        *io_i = i;
        return done;
}

/* jansson's messages end in "near '<token>'", which could quote a piece of a
 * Secret's data: keep only the description. */
static void strip_near(char *text) {
        char *n = strstr(text, " near ");
        if (n)
                *n = '\0';
}

static bool printable(const char *s) {
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
                        return false;
        return true;
}

static const char *json_string_at(json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

static int deliver(kube_watch_decoder *d, const char *ev, size_t len, kube_watch_event_fn cb,
                   void *userdata, vt_error **err) {
        json_error_t jerr;
        json_t *root = json_loadb(ev, len, 0, &jerr);
        if (!root) {
                strip_near(jerr.text);
                return vt_error_set(err, EBADMSG, "malformed watch event at byte offset %" PRIu64
                                                  ": %s (event starts at byte offset %" PRIu64 ")",
                                    d->event_offset + (uint64_t)jerr.position, jerr.text,
                                    d->event_offset);
        }

        int r;
        const char *type = json_string_at(root, "type");
        json_t *object = json_object_get(root, "object");
        kube_watch_event e = {.offset = d->event_offset};

        if (!type) {
                r = vt_error_set(err, EBADMSG,
                                 "watch event at byte offset %" PRIu64 " has no \"type\" string",
                                 d->event_offset);
                goto out;
        }
        size_t t = 0;
        while (t < ELEMENTSOF(type_names) && strcmp(type, type_names[t]) != 0)
                t++;
        if (t == ELEMENTSOF(type_names)) {
                bool show = strlen(type) <= 32 && printable(type);
                r = vt_error_set(err, EBADMSG,
                                 "watch event at byte offset %" PRIu64 " has unknown type %s%s%s",
                                 d->event_offset, show ? "\"" : "", show ? type : "(unprintable)",
                                 show ? "\"" : "");
                goto out;
        }
        if (!json_is_object(object)) {
                r = vt_error_set(err, EBADMSG,
                                 "%s watch event at byte offset %" PRIu64 " has no \"object\"",
                                 type_names[t], d->event_offset);
                goto out;
        }

        e.type = (kube_watch_type)t;
        e.object = object;
        json_t *meta = json_object_get(object, "metadata");
        e.resource_version = json_string_at(meta, "resourceVersion");
        if (e.type == KUBE_WATCH_BOOKMARK) {
                const char *end = json_string_at(json_object_get(meta, "annotations"),
                                                 "k8s.io/initial-events-end");
                e.initial_events_end = end && strcmp(end, "true") == 0;
        } else if (e.type == KUBE_WATCH_ERROR) {
                json_int_t code = json_integer_value(json_object_get(object, "code"));
                e.status_code = code > 0 && code < 1000 ? (int)code : 0;
                e.status_reason = json_string_at(object, "reason");
                e.status_message = json_string_at(object, "message");
        }

        r = cb(&e, userdata);
        if (r < 0)
                vt_error_set(err, -r, "watch event handler failed on the %s event at byte offset %" PRIu64,
                             type_names[t], d->event_offset);
out:
        json_decref(root);
        return r < 0 ? r : 0;
}

int kube_watch_decoder_feed(kube_watch_decoder *d, const void *data, size_t len,
                            kube_watch_event_fn cb, void *userdata, vt_error **err) {
        assert_return(d, -EINVAL);
        assert_return(data || len == 0, -EINVAL);
        assert_return(cb, -EINVAL);

        if (d->failed)
                return vt_error_set(err, -d->failed,
                                    "watch stream decoder stopped by an earlier error; reset it");

        const unsigned char *p = data;
        size_t i = 0;
        int n = 0;
        while (i < len) {
                if (!d->in_event) {
                        while (i < len && is_ws(p[i]))
                                i++;
                        if (i == len)
                                break;
                        if (p[i] != '{') {
                                vt_error_set(err, EBADMSG,
                                             "watch stream: expected '{' at byte offset %" PRIu64
                                             ", found byte 0x%02x",
                                             d->offset + i, p[i]);
                                return fail(d, -EBADMSG);
                        }
                        *d = (kube_watch_decoder){
                                .max_event = d->max_event,
                                .buf = d->buf,
                                .offset = d->offset,
                                .event_offset = d->offset + i,
                                .in_event = true,
                        };
                }

                size_t seg = i, have = d->buf.len;
                size_t room = d->max_event - have; /* have <= max_event always */
                size_t limit = len - i > room ? i + room : len;
                if (!scan(d, p, &i, limit)) {
                        if (limit < len) {
                                vt_error_set(err, EMSGSIZE,
                                             "watch event at byte offset %" PRIu64
                                             " exceeds the %zu-byte limit",
                                             d->event_offset, d->max_event);
                                return fail(d, -EMSGSIZE);
                        }
                        vt_buf_append(&d->buf, p + seg, len - seg);
                        break;
                }

                /* Complete: parse in place when the whole event is in this chunk. */
                const char *ev = (const char *)p + seg;
                size_t evlen = i - seg;
                if (have > 0) {
                        vt_buf_append(&d->buf, p + seg, i - seg);
                        ev = d->buf.data;
                        evlen = d->buf.len;
                }
                d->in_event = false;
                int r = deliver(d, ev, evlen, cb, userdata, err);
                release_buf(d);
                if (r < 0)
                        return fail(d, r);
                n++;
        }
        d->offset += len;
        return n;
}

int kube_watch_decoder_finish(kube_watch_decoder *d, vt_error **err) {
        assert_return(d, -EINVAL);
        if (d->failed)
                return vt_error_set(err, -d->failed,
                                    "watch stream decoder stopped by an earlier error; reset it");
        if (d->in_event) {
                vt_error_set(err, EBADMSG,
                             "watch stream ended inside the event at byte offset %" PRIu64
                             " (%" PRIu64 " bytes received)",
                             d->event_offset, d->offset - d->event_offset);
                return fail(d, -EBADMSG);
        }
        return 0;
}
