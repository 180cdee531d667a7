/* SPDX-License-Identifier: Apache-2.0 */
/* Decoder for kube-apiserver watch responses (`?watch=1`, JSON).
 *
 * The body is a stream of objects `{"type":"ADDED","object":{...}}`, each
 * normally followed by "\n", arriving in HTTP chunks that may split anywhere
 * (inside an object, inside a UTF-8 sequence, several events per read). Feed
 * the bytes as they come; the callback runs once per complete event.
 *
 *     kube_watch_decoder *d = kube_watch_decoder_new(0);
 *     // in the libcurl write callback:
 *     r = kube_watch_decoder_feed(d, ptr, n, on_event, ctx, &err);
 *     if (r < 0) -> log err->msg, drop the connection, re-watch (after reset)
 *     // when the server closes the stream:
 *     r = kube_watch_decoder_finish(d, &err);   // < 0: it ended inside an event
 *
 * Framing does not depend on the newline: a small state machine follows
 * strings, escapes and nesting depth, so an object ends at its closing brace
 * even with no newline after it, and whitespace (blank lines, "\r\n")
 * between objects is skipped. Each byte is scanned once, whatever the chunk
 * sizes (no re-scan of a growing buffer); an event lying entirely inside one
 * chunk is parsed in place, without copying. The delimited bytes are then
 * parsed strictly by jansson (UTF-8 validated).
 *
 * Errors are sticky: after feed or finish return < 0 (malformed JSON, an event
 * over the size limit, an unknown type, a missing "object", or the callback's
 * own error), the decoder refuses input until kube_watch_decoder_reset(). An
 * event was lost, so the caller must restart the watch anyway (from the last
 * resourceVersion it delivered, or relist); the decoder does not guess where
 * the next event might begin. Messages name the byte offset in the stream
 * (counted from creation or the last reset). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/macro.h"

typedef enum kube_watch_type {
        KUBE_WATCH_ADDED,
        KUBE_WATCH_MODIFIED,
        KUBE_WATCH_DELETED,
        KUBE_WATCH_BOOKMARK,
        KUBE_WATCH_ERROR,
} kube_watch_type;

/* "ADDED", ... for logs. */
const char *kube_watch_type_to_string(kube_watch_type t);

typedef struct kube_watch_event {
        kube_watch_type type;
        /* The event's "object", BORROWED: valid only during the callback. Take
         * json_incref(object) to keep it (e.g. in a cache); never decref it
         * without that incref. The callback may modify it. */
        json_t *object;
        /* object.metadata.resourceVersion, borrowed from `object`; NULL when
         * absent (ERROR events usually have none). */
        const char *resource_version;
        /* BOOKMARK only: metadata.annotations["k8s.io/initial-events-end"] ==
         * "true" (the end of the initial list with sendInitialEvents=true). */
        bool initial_events_end;
        /* ERROR only, from the Status object: code (e.g. 410 for Expired/Gone
         * -> relist; 0 if absent), reason and message (borrowed; NULL if
         * absent). */
        int status_code;
        const char *status_reason;
        const char *status_message;
        /* Byte offset of the event's first byte in the stream. */
        uint64_t offset;
} kube_watch_event;

/* Return >= 0 to continue, or a negative errno to stop: feed then returns
 * that value and the decoder needs a reset (the rest of the chunk is
 * dropped). The callback must not feed, reset or free the decoder that is
 * calling it. */
typedef int (*kube_watch_event_fn)(const kube_watch_event *ev, void *userdata);

typedef struct kube_watch_decoder kube_watch_decoder;

#define KUBE_WATCH_DEFAULT_MAX_EVENT ((size_t)16 << 20) /* 16 MiB */

/* `max_event_size` bounds one event's bytes (0: the 16 MiB default; the
 * apiserver caps objects at about 1.5 MiB in etcd, far below). */
kube_watch_decoder *kube_watch_decoder_new(size_t max_event_size);
void kube_watch_decoder_free(kube_watch_decoder *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_watch_decoder *, kube_watch_decoder_free)
#define _cleanup_watch_decoder_ _cleanup_(kube_watch_decoder_freep)

/* Feed the next `len` bytes of the stream. Calls `cb` for each event that
 * completes, in order. Returns the number of events delivered, or a negative
 * errno: -EBADMSG (malformed JSON, not an object, no/unknown "type", no
 * "object"), -EMSGSIZE (event over the limit), the callback's error, or the
 * sticky error of an earlier failure. */
int kube_watch_decoder_feed(kube_watch_decoder *d, const void *data, size_t len,
                            kube_watch_event_fn cb, void *userdata, vt_error **err);

/* The stream ended (server closed it). Returns 0 if it ended cleanly between
 * events, -EBADMSG if an event was cut off (the partial bytes are dropped),
 * or the sticky error. */
int kube_watch_decoder_finish(kube_watch_decoder *d, vt_error **err);

/* Forget all state (buffered bytes, sticky error, offset) for a new stream.
 * Keeps the configured limit. */
void kube_watch_decoder_reset(kube_watch_decoder *d);

/* Bytes of an unfinished event currently buffered (0 between events or
 * while the event still lies in the caller's chunk). */
size_t kube_watch_decoder_buffered(const kube_watch_decoder *d);
