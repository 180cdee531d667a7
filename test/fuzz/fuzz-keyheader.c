/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the key header parser (vtpm-key.json comes from a volume): anything
 * it accepts must serialise and parse back to the same header. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keys/header.h"

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
                if (strcmp(h.provider, back.provider) || strcmp(h.kek_id, back.kek_id) ||
                    strcmp(h.algorithm, back.algorithm) || h.wrapped_key_len != back.wrapped_key_len ||
                    memcmp(h.wrapped_key, back.wrapped_key, h.wrapped_key_len) ||
                    h.dek_generation != back.dek_generation)
                        abort();
                free(s);
        }
        key_header_done(&h);
        key_header_done(&back);
        vt_error_free(err);
        free(buf);
        return 0;
}
