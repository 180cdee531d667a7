/* SPDX-License-Identifier: Apache-2.0 */
/* The watch-stream decoder: the same events whatever the chunking, and clear,
 * sticky errors on hostile input. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "kube/watchstream.h"
#include "tap.h"

/* A realistic stream: what kube-apiserver sends for a VM watch with
 * allowWatchBookmarks, including strings with escaped newlines, quotes,
 * braces and backslashes, and multi-byte UTF-8 (which the splits cut). */
static const char STREAM[] =
        "{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"kubevirt.io/v1\",\"kind\":"
        "\"VirtualMachine\",\"metadata\":{\"name\":\"win11\",\"namespace\":\"vms\","
        "\"resourceVersion\":\"1001\",\"annotations\":{\"note\":\"line1\\nline2\\r\\n\\ttab\"}},"
        "\"spec\":{\"template\":{\"spec\":{\"domain\":{\"devices\":{\"tpm\":{\"persistent\":true}}}}}}}}\n"
        "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"VirtualMachine\",\"metadata\":{\"name\":"
        "\"caf\xc3\xa9-\xf0\x9f\x94\x92\",\"namespace\":\"vms\",\"resourceVersion\":\"1002\"},"
        "\"weird\":\"}{\\\"][\\\\\",\"arr\":[[],{},[{\"x\":\"]\"}]]}}\n"
        "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"VirtualMachine\",\"apiVersion\":"
        "\"kubevirt.io/v1\",\"metadata\":{\"resourceVersion\":\"1003\",\"annotations\":"
        "{\"k8s.io/initial-events-end\":\"true\"}}}}\n"
        "{\"type\":\"DELETED\",\"object\":{\"kind\":\"VirtualMachine\",\"metadata\":{\"name\":"
        "\"win11\",\"namespace\":\"vms\",\"resourceVersion\":\"1004\"}}}\n"
        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
        "\"status\":\"Failure\",\"message\":\"too old resource version: 1 (1004)\",\"reason\":"
        "\"Expired\",\"code\":410}}\n";
#define STREAM_EVENTS 5

/* Each event rendered canonically, so runs can be compared as strings. */
typedef struct recorder {
        vt_buf out;
        int count;
        json_t *kept; /* an object kept past its callback (json_incref) */
        int fail_at;  /* return an error from this event on (1-based), 0: never */
} recorder;

static int record(const kube_watch_event *e, void *userdata) {
        recorder *r = userdata;
        r->count++;
        if (r->fail_at && r->count >= r->fail_at)
                return -ECANCELED;
        char *dump = json_dumps(e->object, JSON_SORT_KEYS | JSON_COMPACT);
        vt_buf_printf(&r->out, "%s rv=%s end=%d code=%d reason=%s msg=%s off=%llu %s\n",
                      kube_watch_type_to_string(e->type),
                      e->resource_version ? e->resource_version : "-", e->initial_events_end,
                      e->status_code, e->status_reason ? e->status_reason : "-",
                      e->status_message ? e->status_message : "-",
                      (unsigned long long)e->offset, dump);
        free(dump);
        if (!r->kept) {
                r->kept = e->object;
                json_incref(r->kept);
        }
        return 0;
}

static void recorder_done(recorder *r) {
        vt_buf_free(&r->out);
        json_decref(r->kept);
        *r = (recorder){0};
}

/* Feed `s` in the chunk sizes produced by `next_size`; returns the events
 * rendered (caller frees) or NULL on a decoder error. */
static char *decode_chunked(const char *s, size_t len, size_t (*next_size)(size_t pos, void *),
                            void *ctx, int *ret_count) {
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        recorder rec = {0};
        size_t pos = 0;
        int total = 0;
        bool ok = true;
        while (pos < len) {
                size_t n = next_size(pos, ctx); /* once: MIN() evaluates twice */
                n = MIN(n, len - pos);
                _cleanup_error_ vt_error *err = NULL;
                int r = kube_watch_decoder_feed(d, s + pos, n, record, &rec, &err);
                if (r < 0) {
                        printf("# feed failed at %zu: %s\n", pos, err ? err->msg : "?");
                        ok = false;
                        break;
                }
                total += r;
                pos += n;
        }
        if (ok && kube_watch_decoder_finish(d, NULL) < 0)
                ok = false;
        if (ok && total != rec.count)
                ok = false;
        kube_watch_decoder_free(d);
        *ret_count = rec.count;
        char *res = ok ? vt_buf_steal(&rec.out) : NULL;
        recorder_done(&rec);
        return res;
}

static size_t size_all(size_t pos, void *ctx) {
        return SIZE_MAX;
}
static size_t size_one(size_t pos, void *ctx) {
        return 1;
}
static size_t size_split(size_t pos, void *ctx) {
        size_t at = *(size_t *)ctx;
        return pos < at ? at - pos : SIZE_MAX;
}
static size_t size_random(size_t pos, void *ctx) {
        unsigned *seed = ctx;
        /* Mostly small chunks, sometimes large ones. */
        return (size_t)(rand_r(seed) % 4 == 0 ? rand_r(seed) % 600 : rand_r(seed) % 9) + 1;
}

static void test_split_anywhere(void) {
        size_t len = strlen(STREAM);
        int count;
        _cleanup_free_ char *ref = decode_chunked(STREAM, len, size_all, NULL, &count);
        check(ref);
        check_int_eq(count, STREAM_EVENTS);
        check_contains(ref, "ADDED rv=1001");
        check_contains(ref, "\"note\":\"line1\\nline2\\r\\n\\ttab\"");
        check_contains(ref, "caf\xc3\xa9-\xf0\x9f\x94\x92");
        check_contains(ref, "\"weird\":\"}{\\\"][\\\\\"");

        _cleanup_free_ char *bytewise = decode_chunked(STREAM, len, size_one, NULL, &count);
        check_str_eq(bytewise, ref);

        int bad_splits = 0;
        for (size_t at = 1; at < len; at++) {
                char *got = decode_chunked(STREAM, len, size_split, &at, &count);
                if (!got || strcmp(got, ref) != 0)
                        bad_splits++;
                free(got);
        }
        check_int_eq(bad_splits, 0);

        int bad_random = 0;
        for (unsigned seed = 1; seed <= 300; seed++) {
                unsigned s = seed;
                char *got = decode_chunked(STREAM, len, size_random, &s, &count);
                if (!got || strcmp(got, ref) != 0)
                        bad_random++;
                free(got);
        }
        check_int_eq(bad_random, 0);
}

/* No newline between objects, CRLF, blank lines and indentation: framing
 * follows the JSON, not the line breaks. */
static void test_whitespace_and_no_newline(void) {
        static const char s[] =
                "\r\n\n  {\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}"
                "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"2\"}}}\r\n"
                "\n\t\n{ \"type\" : \"DELETED\" ,\n \"object\" : {\"metadata\":{\"resourceVersion\":"
                "\"3\"}} }";
        int count;
        _cleanup_free_ char *all = decode_chunked(s, strlen(s), size_all, NULL, &count);
        check_int_eq(count, 3);
        check_contains(all, "ADDED rv=1");
        check_contains(all, "MODIFIED rv=2");
        check_contains(all, "DELETED rv=3");
        _cleanup_free_ char *one = decode_chunked(s, strlen(s), size_one, NULL, &count);
        check_str_eq(one, all);
}

static void test_bookmark(void) {
        static const char s[] =
                "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":"
                "\"777\"}}}\n"
                "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":"
                "\"778\",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}}}}\n";
        int count;
        _cleanup_free_ char *all = decode_chunked(s, strlen(s), size_all, NULL, &count);
        check_int_eq(count, 2);
        check_contains(all, "BOOKMARK rv=777 end=0");
        check_contains(all, "BOOKMARK rv=778 end=1");
}

static void test_error_410(void) {
        static const char s[] =
                "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":"
                "{},\"status\":\"Failure\",\"message\":\"The resourceVersion for the provided watch "
                "is too old.\",\"reason\":\"Gone\",\"code\":410}}\n";
        int count;
        _cleanup_free_ char *all = decode_chunked(s, strlen(s), size_all, NULL, &count);
        check_int_eq(count, 1);
        check_contains(all, "ERROR rv=- end=0 code=410 reason=Gone msg=The resourceVersion for "
                            "the provided watch is too old.");
        /* and the Expired variant from the reference stream */
        _cleanup_free_ char *ref = decode_chunked(STREAM, strlen(STREAM), size_all, NULL, &count);
        check_contains(ref, "ERROR rv=- end=0 code=410 reason=Expired msg=too old resource version");
}

/* Feed `s` in one call to a decoder with limit `max`; returns feed's result. */
static int feed_once(kube_watch_decoder *d, const char *s, recorder *rec, char **ret_msg) {
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_watch_decoder_feed(d, s, strlen(s), record, rec, &err);
        if (ret_msg)
                *ret_msg = err ? xstrdup(err->msg) : NULL;
        return r;
}

static void test_oversize(void) {
        /* 100 bytes exactly, then 101. */
        char ev100[128], ev101[128];
        const char *head = "{\"type\":\"ADDED\",\"object\":{\"p\":\"";
        const char *tail = "\"}}";
        size_t pad = 100 - strlen(head) - strlen(tail);
        snprintf(ev100, sizeof(ev100), "%s%.*s%s", head, (int)pad,
                 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", tail);
        snprintf(ev101, sizeof(ev101), "%s%.*s%s", head, (int)pad + 1,
                 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", tail);
        check_int_eq(strlen(ev100), 100);

        /* Exactly at the limit is accepted, whole or byte by byte. */
        kube_watch_decoder *d = kube_watch_decoder_new(100);
        recorder rec = {0};
        check_int_eq(feed_once(d, ev100, &rec, NULL), 1);
        for (size_t i = 0; i < 100; i++)
                check(kube_watch_decoder_feed(d, ev100 + i, 1, record, &rec, NULL) >= 0);
        check_int_eq(rec.count, 2);

        /* One byte over fails, with the limit named, whole... */
        _cleanup_free_ char *msg = NULL;
        check_int_eq(feed_once(d, ev101, &rec, &msg), -EMSGSIZE);
        check_contains(msg, "exceeds the 100-byte limit");
        check_contains(msg, "byte offset 200");
        /* ...and stays failed until reset. */
        _cleanup_free_ char *msg2 = NULL;
        check_int_eq(feed_once(d, ev100, &rec, &msg2), -EMSGSIZE);
        check_contains(msg2, "reset");
        check_int_eq(rec.count, 2);

        /* Byte by byte: the 101st byte is refused, nothing is buffered past it. */
        kube_watch_decoder_reset(d);
        int r = 0;
        size_t i;
        for (i = 0; i < 101 && r >= 0; i++)
                r = kube_watch_decoder_feed(d, ev101 + i, 1, record, &rec, NULL);
        check_int_eq(r, -EMSGSIZE);
        check_int_eq(i, 101);
        check_int_eq(kube_watch_decoder_buffered(d), 0);

        /* A never-ending string does not grow the buffer past the limit. */
        kube_watch_decoder_reset(d);
        check_int_eq(feed_once(d, "{\"type\":\"ADDED\",\"object\":{\"p\":\"", &rec, NULL), 0);
        for (r = 0, i = 0; i < 1000 && r >= 0; i++) {
                r = feed_once(d, "aaaaaaaaaa", &rec, NULL);
                check(kube_watch_decoder_buffered(d) <= 100);
        }
        check_int_eq(r, -EMSGSIZE);

        kube_watch_decoder_free(d);
        recorder_done(&rec);
}

static void test_malformed(void) {
        static const char good[] = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{}}}\n"; /* 42 */
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        recorder rec = {0};
        check_int_eq(strlen(good), 42);

        /* Trailing comma inside the second event: the offset is past the first. */
        check_int_eq(feed_once(d, good, &rec, NULL), 1);
        _cleanup_free_ char *msg = NULL;
        check_int_eq(feed_once(d, "{\"type\":\"ADDED\",\"object\":{\"a\":1,}}\n", &rec, &msg),
                     -EBADMSG);
        check_contains(msg, "malformed watch event at byte offset");
        check_contains(msg, "(event starts at byte offset 42)");
        check(!strstr(msg, "near")); /* no quoted input in messages */
        /* Sticky, until reset; then usable again with offsets from zero. */
        check_int_eq(feed_once(d, good, &rec, NULL), -EBADMSG);
        check_int_eq(kube_watch_decoder_finish(d, NULL), -EBADMSG);
        kube_watch_decoder_reset(d);
        check_int_eq(feed_once(d, good, &rec, NULL), 1);
        check_int_eq(kube_watch_decoder_finish(d, NULL), 0);

        /* Garbage that is not an object. */
        kube_watch_decoder_reset(d);
        _cleanup_free_ char *m2 = NULL;
        check_int_eq(feed_once(d, "  \nHTTP/1.1 500", &rec, &m2), -EBADMSG);
        check_contains(m2, "expected '{' at byte offset 3, found byte 0x48");

        /* Invalid UTF-8 in a string. */
        kube_watch_decoder_reset(d);
        check_int_eq(feed_once(d, "{\"type\":\"ADDED\",\"object\":{\"n\":\"\xc3\x28\"}}", &rec, NULL),
                     -EBADMSG);

        /* Mismatched brackets are framed, then refused by the parser. */
        kube_watch_decoder_reset(d);
        check_int_eq(feed_once(d, "{\"type\":\"ADDED\",\"object\":{]]\n", &rec, NULL), -EBADMSG);

        /* Unknown type, missing type, missing or non-object "object". */
        kube_watch_decoder_reset(d);
        _cleanup_free_ char *m3 = NULL;
        check_int_eq(feed_once(d, "{\"type\":\"SYNC\",\"object\":{}}", &rec, &m3), -EBADMSG);
        check_contains(m3, "unknown type \"SYNC\"");
        kube_watch_decoder_reset(d);
        _cleanup_free_ char *m4 = NULL;
        check_int_eq(feed_once(d, "{\"object\":{}}", &rec, &m4), -EBADMSG);
        check_contains(m4, "no \"type\"");
        kube_watch_decoder_reset(d);
        _cleanup_free_ char *m5 = NULL;
        check_int_eq(feed_once(d, "{\"type\":\"DELETED\",\"object\":\"x\"}", &rec, &m5), -EBADMSG);
        check_contains(m5, "DELETED watch event at byte offset 0 has no \"object\"");

        check_int_eq(rec.count, 2);
        kube_watch_decoder_free(d);
        recorder_done(&rec);
}

static void test_truncated_stream(void) {
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        recorder rec = {0};
        check_int_eq(feed_once(d, "{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":\"MOD", &rec, NULL),
                     1);
        check_int_eq(kube_watch_decoder_buffered(d), 12);
        _cleanup_free_ char *msg = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kube_watch_decoder_finish(d, &err), -EBADMSG);
        check_contains(err ? err->msg : NULL, "ended inside the event at byte offset 29");
        (void)msg;
        kube_watch_decoder_free(d);
        recorder_done(&rec);
}

/* The callback's error stops the feed, is returned, and is sticky. */
static void test_callback_error(void) {
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        recorder rec = {.fail_at = 2};
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_watch_decoder_feed(d, STREAM, strlen(STREAM), record, &rec, &err);
        check_int_eq(r, -ECANCELED);
        check_int_eq(rec.count, 2);
        check_contains(err ? err->msg : NULL, "handler failed on the MODIFIED event");
        check_int_eq(feed_once(d, "{\"type\":\"ADDED\",\"object\":{}}", &rec, NULL), -ECANCELED);
        check_int_eq(rec.count, 2);
        kube_watch_decoder_free(d);
        recorder_done(&rec);
}

/* An object kept with json_incref outlives its callback and the decoder. */
static void test_object_ownership(void) {
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        recorder rec = {0};
        check_int_eq(feed_once(d, STREAM, &rec, NULL), STREAM_EVENTS);
        kube_watch_decoder_free(d);
        check(rec.kept);
        check_str_eq(json_string_value(json_object_get(json_object_get(rec.kept, "metadata"),
                                                        "name")),
                     "win11");
        recorder_done(&rec);
}

/* A 4 MiB event arriving in 7-byte chunks, between small events: linear
 * work (a re-scan per chunk would take hours and time the test out). */
static void test_large_event_small_chunks(void) {
        size_t big = (size_t)4 << 20;
        vt_buf s = {0};
        vt_buf_appends(&s, "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}\n");
        vt_buf_appends(&s, "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"2\"},"
                           "\"data\":[");
        while (s.len < big)
                vt_buf_appends(&s, "{\"k\":\"v\\n\\\"}\"},");
        vt_buf_appends(&s, "0]}}\n{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"resourceVersion\":"
                           "\"3\"}}}\n");
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        recorder rec = {0};
        int total = 0;
        for (size_t pos = 0; pos < s.len; pos += 7) {
                int r = kube_watch_decoder_feed(d, s.data + pos, MIN((size_t)7, s.len - pos),
                                                record, &rec, NULL);
                check(r >= 0);
                if (r < 0)
                        break;
                total += r;
        }
        check_int_eq(total, 3);
        check_contains(rec.out.data, "DELETED rv=3");
        check_int_eq(kube_watch_decoder_buffered(d), 0);
        kube_watch_decoder_free(d);
        recorder_done(&rec);
        vt_buf_free(&s);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_split_anywhere),
                TAP_CASE(test_whitespace_and_no_newline),
                TAP_CASE(test_bookmark),
                TAP_CASE(test_error_410),
                TAP_CASE(test_oversize),
                TAP_CASE(test_malformed),
                TAP_CASE(test_truncated_stream),
                TAP_CASE(test_callback_error),
                TAP_CASE(test_object_ownership),
                TAP_CASE(test_large_event_small_chunks),
                {0},
        });
}
