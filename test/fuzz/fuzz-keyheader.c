/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the key header parser (vtpm-key.json comes from a tenant's volume):
 * anything it accepts must serialise and parse back to the same header, and
 * an error never quotes the input (no "near '...'" from the JSON parser; only
 * printable fixed text). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keys/header.h"

static bool str_same(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool entry_equal(const key_header *a, const key_header *b) {
        return str_same(a->provider, b->provider) && str_same(a->kek_id, b->kek_id) &&
               str_same(a->algorithm, b->algorithm) && str_same(a->dek_request, b->dek_request) &&
               a->wrapped_key_len == b->wrapped_key_len &&
               (a->wrapped_key_len == 0 || memcmp(a->wrapped_key, b->wrapped_key, a->wrapped_key_len) == 0) &&
               a->dek_generation == b->dek_generation;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *buf = malloc(size ? size : 1);
        memcpy(buf, data, size);
        key_header h = {0}, back = {0};
        vt_error *err = NULL;
        if (key_header_parse(buf, size, &h, &err) == 0) {
                char *s = NULL;
                if (key_header_format(&h, &s, NULL) != 0)
                        abort();
                if (key_header_parse(s, strlen(s), &back, NULL) != 0)
                        abort();
                /* A header may have no current key (only "next"): compare the
                 * entries field by field, NULL-safe. */
                if (!entry_equal(&h, &back) || !h.next != !back.next || (h.next && !entry_equal(h.next, back.next)))
                        abort();
                free(s);
        }
        if (err) {
                if (strstr(err->msg, "near") || strchr(err->msg, '\''))
                        abort();
                for (const char *p = err->msg; *p; p++)
                        if (*p < 0x20 || *p > 0x7e)
                                abort();
        }
        key_header_done(&h);
        key_header_done(&back);
        vt_error_free(err);
        free(buf);
        return 0;
}
