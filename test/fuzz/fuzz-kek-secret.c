/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz what the "secret" KEK provider parses (pkg/keys/kek_secret.h): the input
 * is "<kekId>\n<Secret JSON>". The kekId comes from a tenant's key header,
 * the Secret from the API server (a KEK value of any length may be in it:
 * once a 5 KB value was decoded into a 48-byte buffer). Every data key
 * "kek-*" is decoded; what is accepted must be 32 bytes that encode back to
 * exactly the value. */
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keys/kek_secret.h"
#include "keys/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t idlen = nl ? (size_t)(nl - data) : size;
        char *id = malloc(idlen + 1);
        memcpy(id, data, idlen);
        id[idlen] = '\0';
        const char *version = NULL;
        bool bound = kek_id_for_scope("vtpm-agent", "tenant-a", id, &version) == 0;
        if (bound && (strncmp(id, "vtpm-agent/vtpm-kek-tenant-a#", 29) != 0 || version != id + 29))
                abort();

        /* A copy of exactly the JSON's bytes, so ASan sees any overread. */
        size_t jlen = nl ? size - idlen - 1 : 0;
        char *js = malloc(jlen ? jlen : 1);
        if (jlen)
                memcpy(js, nl + 1, jlen);
        json_t *secret = json_loadb(js, jlen, 0, NULL);
        if (secret) {
                secmem *k = NULL;
                if (bound && kek_secret_key(secret, version, &k, NULL) == 0) {
                        if (k->len != 32)
                                abort();
                        secmem_free(k);
                }
                const char *key;
                json_t *v;
                json_object_foreach(json_object_get(secret, "data"), key, v) {
                        /* Versions come from validated kekIds or rotation ids only. */
                        if (strncmp(key, "kek-", 4) != 0 || !keys_rotation_id_valid(key + 4))
                                continue;
                        k = NULL;
                        vt_error *err = NULL;
                        if (kek_secret_key(secret, key + 4, &k, &err) == 0) {
                                unsigned char back[64];
                                if (k->len != 32 || EVP_EncodeBlock(back, k->data, 32) != KEK_SECRET_B64_LEN ||
                                    strcmp((const char *)back, json_string_value(v)) != 0)
                                        abort();
                                secmem_free(k);
                        } else if (err && json_string_value(v) && json_string_length(v) >= 8 &&
                                   strstr(err->msg, json_string_value(v)))
                                abort(); /* the value never shows in a message */
                        vt_error_free(err);
                }
                json_decref(secret);
        }
        free(js);
        free(id);
        return 0;
}
