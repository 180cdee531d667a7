/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/keys: the key header file (vtpm-key.json) and its strict parser. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "keys/header.h"
#include "tap.h"

/* 40 bytes of "wrapped key" (KWP size for a 256-bit DEK). */
#define W40 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="

static const char good[] = "{\"version\":1,\"provider\":\"secret\",\"kekId\":\"vtpm-kek-vms/3\","
                           "\"algorithm\":\"AES-256-KWP\",\"wrappedKey\":\"" W40 "\","
                           "\"dekGeneration\":2,\"createdAt\":\"2026-11-23T09:00:00Z\"}";

static int parse(const char *s, vt_error **err) {
        key_header h = {0};
        int r = key_header_parse(s, strlen(s), &h, err);
        key_header_done(&h);
        return r;
}

static void test_parse_good(void) {
        _cleanup_(key_header_done) key_header h = {0};
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(key_header_parse(good, strlen(good), &h, &err), 0);
        check_str_eq(h.provider, "secret");
        check_str_eq(h.kek_id, "vtpm-kek-vms/3");
        check_str_eq(h.algorithm, "AES-256-KWP");
        check_int_eq(h.wrapped_key_len, 40);
        check(h.wrapped_key && h.wrapped_key[0] == 0 && h.wrapped_key[39] == 39);
        check_int_eq(h.dek_generation, 2);
        check_str_eq(h.created_at, "2026-11-23T09:00:00Z");
        check(h.wrapped_at == NULL);
}

static void test_roundtrip_file(void) {
        char dir[] = "/tmp/test-keys-header.XXXXXX";
        check(mkdtemp(dir) != NULL);
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, KEY_HEADER_FILE);
        key_header h = {.provider = "kmip", .kek_id = "17", .algorithm = KEYS_ALG_KMIP_CBC, .dek_generation = 1,
                        .wrapped_at = "2026-11-23T10:00:00Z"};
        uint8_t w[80];
        for (int i = 0; i < 80; i++)
                w[i] = (uint8_t)(i * 7);
        h.wrapped_key = w;
        h.wrapped_key_len = 80;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(key_header_write(path, &h, &err), 0);
        struct stat st;
        check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

        _cleanup_free_ char *text = NULL;
        check_int_eq(read_full_file(path, 4096, &text, NULL, NULL), 0);
        check_contains(text, "\"version\": 1");
        check_contains(text, "\"provider\": \"kmip\"");
        check_contains(text, "\"algorithm\": \"KMIP-AES-256-CBC-PKCS5\"");

        _cleanup_(key_header_done) key_header back = {0};
        check_int_eq(key_header_read(path, &back, &err), 0);
        check_str_eq(back.kek_id, "17");
        check_int_eq(back.wrapped_key_len, 80);
        check(back.wrapped_key && memcmp(back.wrapped_key, w, 80) == 0);
        check_str_eq(back.wrapped_at, "2026-11-23T10:00:00Z");
        check(back.created_at == NULL);

        unlink(path);
        key_header none = {0};
        check_int_eq(key_header_read(path, &none, NULL), -ENOENT);
        rmdir(dir);
}

static void test_format_refuses_invalid(void) {
        uint8_t w[40] = {0};
        key_header h = {.provider = "secret", .kek_id = "k", .algorithm = "AES-256-KWP", .wrapped_key = w,
                        .wrapped_key_len = 39, .dek_generation = 1};
        char *s = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(key_header_format(&h, &s, &err), -EBADMSG);
        check(!s);
        check_contains(err ? err->msg : NULL, "wrappedKey is 39 bytes");
}

static void check_bad(const char *json, int want, const char *msg) {
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(parse(json, &err), want);
        check_contains(err ? err->msg : NULL, msg);
}

#define HDR(x) "{\"version\":1,\"provider\":\"secret\",\"kekId\":\"k\",\"algorithm\":\"AES-256-KWP\"," x "}"

static void test_parse_bad(void) {
        check_bad("", -EBADMSG, "not valid JSON");
        check_bad("[1]", -EBADMSG, "not a JSON object");
        check_bad("{\"version\":2}", -EPROTONOSUPPORT, "version is not supported (this agent reads version 1)");
        check_bad("{\"version\":\"1\"}", -EBADMSG, "\"version\" must be an integer");
        check_bad("{\"provider\":\"secret\"}", -EBADMSG, "missing field \"version\"");
        check_bad(HDR("\"wrappedKey\":\"" W40 "\""), -EBADMSG, "missing field \"dekGeneration\"");
        check_bad(HDR("\"dekGeneration\":1"), -EBADMSG, "missing field \"wrappedKey\"");
        check_bad(HDR("\"wrappedKey\":\"" W40 "\",\"dekGeneration\":0"), -EBADMSG, "positive integer");
        check_bad(HDR("\"wrappedKey\":\"" W40 "\",\"dekGeneration\":1,\"extra\":1"), -EBADMSG,
                  "unknown field");
        check_bad(HDR("\"wrappedKey\":\"AAEC*wQF\",\"dekGeneration\":1"), -EBADMSG, "not valid base64");
        check_bad(HDR("\"wrappedKey\":\"AAECAw\",\"dekGeneration\":1"), -EBADMSG, "not valid base64");
        check_bad(HDR("\"wrappedKey\":\"AAECAwQF\",\"dekGeneration\":1"), -EBADMSG, "wrappedKey is 6 bytes");
        check_bad(HDR("\"wrappedKey\":7,\"dekGeneration\":1"), -EBADMSG, "\"wrappedKey\" must be a string");
        check_bad(HDR("\"wrappedKey\":\"" W40 "\",\"dekGeneration\":1,\"createdAt\":\"yesterday\""), -EBADMSG,
                  "createdAt");
        check_bad("{\"version\":1,\"provider\":\"vault\",\"kekId\":\"k\",\"algorithm\":\"AES-256-KWP\","
                  "\"wrappedKey\":\"" W40 "\",\"dekGeneration\":1}",
                  -EBADMSG, "provider must be");
        check_bad("{\"version\":1,\"provider\":\"secret\",\"kekId\":\"a b\",\"algorithm\":\"AES-256-KWP\","
                  "\"wrappedKey\":\"" W40 "\",\"dekGeneration\":1}",
                  -EBADMSG, "kekId");
        check_bad("{\"version\":1,\"provider\":\"secret\",\"kekId\":\"k\",\"algorithm\":\"ROT13\","
                  "\"wrappedKey\":\"" W40 "\",\"dekGeneration\":1}",
                  -EBADMSG, "unknown algorithm");
        check_bad("{\"version\":1,\"version\":1}", -EBADMSG, "not valid JSON"); /* duplicate key */
        check_bad("{\"version\":1,\"provider\":\"sec\\u0000ret\"}", -EBADMSG, "not valid JSON"); /* jansson refuses \\u0000 */
        char big[KEY_HEADER_MAX_SIZE + 2];
        memset(big, ' ', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        check_bad(big, -EBADMSG, "larger than");
}

static void test_base64_strict(void) {
        uint8_t *out = NULL;
        size_t n = 0;
        check_int_eq(keys_base64_decode("Zm9vYg==", 8, &out, &n), 0);
        check(n == 4 && memcmp(out, "foob", 4) == 0);
        free(out);
        out = NULL;
        check_int_eq(keys_base64_decode("Zm9vYh==", 8, &out, &n), -EBADMSG); /* non-canonical */
        check_int_eq(keys_base64_decode("Zm9v\nYg==", 9, &out, &n), -EBADMSG);
        check_int_eq(keys_base64_decode("Zm=vYg==", 8, &out, &n), -EBADMSG);
        check_int_eq(keys_base64_decode("====", 4, &out, &n), -EBADMSG);
        check(out == NULL);
        for (size_t len = 1; len < 70; len++) {
                uint8_t in[70];
                for (size_t i = 0; i < len; i++)
                        in[i] = (uint8_t)(i * 37 + len);
                _cleanup_free_ char *b = keys_base64_encode(in, len);
                uint8_t *d = NULL;
                size_t dn = 0;
                check_int_eq(keys_base64_decode(b, strlen(b), &d, &dn), 0);
                check(dn == len && d && memcmp(d, in, len) == 0);
                free(d);
        }
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_parse_good),
                TAP_CASE(test_roundtrip_file),
                TAP_CASE(test_format_refuses_invalid),
                TAP_CASE(test_parse_bad),
                TAP_CASE(test_base64_strict),
                {0},
        });
}
