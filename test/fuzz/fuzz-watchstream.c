/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the watch-stream decoder.
 *
 * Input: byte 0 picks the chunk size (0: everything in one feed), the rest is
 * the stream. Besides memory safety (ASan/UBSan), it checks the decoder's
 * central promise differentially: the chunked run must deliver exactly the
 * same events and end with the same result as the one-shot run, and a reset
 * decoder must behave like a fresh one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "kube/watchstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limit so the oversize path is reached. */
#define FUZZ_MAX_EVENT 4096

static int render(const kube_watch_event *e, void *userdata) {
        vt_buf *out = userdata;
        char *dump = json_dumps(e->object, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
        vt_buf_printf(out, "%d|%s|%d|%d|%s|%s|%llu|%s\n", (int)e->type,
                      e->resource_version ? e->resource_version : "-", e->initial_events_end,
                      e->status_code, e->status_reason ? e->status_reason : "-",
                      e->status_message ? e->status_message : "-", (unsigned long long)e->offset,
                      dump ? dump : "?");
        free(dump);
        return 0;
}

/* Decode in chunks of `chunk` bytes (0: one feed); returns the first error or
 * finish's result, the events rendered into *out. */
static int run(kube_watch_decoder *d, const uint8_t *s, size_t len, size_t chunk, vt_buf *out) {
        if (chunk == 0)
                chunk = len ? len : 1;
        for (size_t pos = 0; pos < len; pos += chunk) {
                size_t n = len - pos < chunk ? len - pos : chunk;
                _cleanup_error_ vt_error *err = NULL;
                int r = kube_watch_decoder_feed(d, s + pos, n, render, out, &err);
                if (r < 0) {
                        if (!err || !err->msg)
                                abort();
                        return r;
                }
        }
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_watch_decoder_finish(d, &err);
        if (r < 0 && (!err || !err->msg))
                abort();
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        size_t chunk = data[0];
        data++;
        size--;

        vt_buf whole = {0}, chunked = {0}, again = {0};
        kube_watch_decoder *d = kube_watch_decoder_new(FUZZ_MAX_EVENT);
        int r1 = run(d, data, size, 0, &whole);
        kube_watch_decoder_reset(d);
        int r3 = run(d, data, size, 0, &again);
        kube_watch_decoder_free(d);

        d = kube_watch_decoder_new(FUZZ_MAX_EVENT);
        int r2 = run(d, data, size, chunk, &chunked);
        kube_watch_decoder_free(d);

        const char *a = whole.data ? whole.data : "", *b = chunked.data ? chunked.data : "",
                   *c = again.data ? again.data : "";
        if (r1 != r2 || strcmp(a, b) != 0) {
                fprintf(stderr, "chunk %zu: whole r=%d chunked r=%d\nwhole:\n%s\nchunked:\n%s\n",
                        chunk, r1, r2, a, b);
                abort();
        }
        if (r1 != r3 || strcmp(a, c) != 0)
                abort();
        vt_buf_free(&whole);
        vt_buf_free(&chunked);
        vt_buf_free(&again);
        return 0;
}
