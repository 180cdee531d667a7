/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/keys: TTLV encoding, KMIP request building and the strict reply
 * parser, on hand-made messages and on real PyKMIP 0.10 replies (the fuzz
 * seed corpus, captured from pykmip-server). */
#include <libgen.h>
#include <limits.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "keys/kmip_msg.h"
#include "tap.h"

static char *corpus;

static uint8_t *load(const char *name, size_t *n) {
        _cleanup_free_ char *p = xasprintf("%s/%s", corpus, name);
        char *d = NULL;
        if (read_full_file(p, 1 << 20, &d, n, NULL) < 0) {
                printf("# cannot read %s\n", p);
                return NULL;
        }
        return (uint8_t *)d;
}

static void test_encode_known_bytes(void) {
        uint8_t buf[64];
        ttlv_enc e;
        ttlv_enc_init(&e, buf, sizeof(buf));
        ttlv_begin(&e, 0x420069);
        ttlv_put_int(&e, 0x42006A, 1);
        ttlv_put_text(&e, 0x420055, "abc");
        ttlv_end(&e);
        size_t n = 0;
        check_int_eq(ttlv_enc_finish(&e, &n), 0);
        static const uint8_t want[] = {
                0x42, 0x00, 0x69, 0x01, 0, 0, 0, 32,                          /* structure, 32 bytes */
                0x42, 0x00, 0x6A, 0x02, 0, 0, 0, 4,    0, 0, 0, 1, 0, 0, 0, 0, /* int 1 + padding */
                0x42, 0x00, 0x55, 0x07, 0, 0, 0, 3,    'a', 'b', 'c', 0, 0, 0, 0, 0,
        };
        check_int_eq(n, sizeof(want));
        check(memcmp(buf, want, sizeof(want)) == 0);

        ttlv t;
        check_int_eq(ttlv_parse(buf, n, &t, NULL), 0);
        int32_t v = 0;
        check_int_eq(ttlv_get_int(&t, 0x42006A, &v), 0);
        check_int_eq(v, 1);
        _cleanup_free_ char *s = NULL;
        check_int_eq(ttlv_get_text(&t, 0x420055, 16, &s), 0);
        check_str_eq(s, "abc");
        check_int_eq(ttlv_get_int(&t, 0x420055, &v), -EBADMSG); /* wrong type */
        check_int_eq(ttlv_get_int(&t, 0x420099, &v), -ENOENT);
}

static void test_encoder_errors(void) {
        uint8_t buf[24];
        ttlv_enc e;
        ttlv_enc_init(&e, buf, sizeof(buf));
        ttlv_begin(&e, 0x420001);
        ttlv_put_long(&e, 0x420002, 5);
        ttlv_put_long(&e, 0x420003, 6); /* does not fit */
        ttlv_end(&e);
        check_int_eq(ttlv_enc_finish(&e, NULL), -ENOBUFS);
        ttlv_enc_init(&e, buf, sizeof(buf));
        ttlv_begin(&e, 0x420001);
        check_int_eq(ttlv_enc_finish(&e, NULL), -EINVAL); /* unbalanced */
        ttlv_enc_init(&e, buf, sizeof(buf));
        ttlv_end(&e);
        check_int_eq(ttlv_enc_finish(&e, NULL), -EINVAL);
        /* Every request fits the client's 2 KiB buffer; a tiny one refuses. */
        uint8_t big[2048], iv[16] = {0}, d[48] = {0};
        check(kmip_req_crypt(big, sizeof(big), KMIP_OP_ENCRYPT, "1", iv, d, 48) > 0);
        check(kmip_req_create_aes256(big, sizeof(big), "vtpm-agent-kek/ns") > 0);
        check_int_eq(kmip_req_create_aes256(big, 100, "x"), -ENOBUFS);
}

static void test_requests_parse_back(void) {
        uint8_t buf[2048], iv[16] = {7}, d[48];
        memset(d, 0x5a, sizeof(d));
        int n = kmip_req_crypt(buf, sizeof(buf), KMIP_OP_DECRYPT, "key-9", iv, d, sizeof(d));
        check(n > 0);
        ttlv msg, hdr, item, payload, params;
        check_int_eq(ttlv_parse(buf, (size_t)n, &msg, NULL), 0);
        check_int_eq(msg.tag, KMIP_TAG_REQUEST_MESSAGE);
        check_int_eq(ttlv_find(&msg, KMIP_TAG_REQUEST_HEADER, TTLV_STRUCTURE, &hdr), 0);
        check_int_eq(ttlv_find(&msg, KMIP_TAG_BATCH_ITEM, TTLV_STRUCTURE, &item), 0);
        uint32_t op = 0, mode = 0;
        check_int_eq(ttlv_get_enum(&item, KMIP_TAG_OPERATION, &op), 0);
        check_int_eq(op, KMIP_OP_DECRYPT);
        check_int_eq(ttlv_find(&item, KMIP_TAG_REQUEST_PAYLOAD, TTLV_STRUCTURE, &payload), 0);
        check_int_eq(ttlv_find(&payload, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS, TTLV_STRUCTURE, &params), 0);
        check_int_eq(ttlv_get_enum(&params, KMIP_TAG_BLOCK_CIPHER_MODE, &mode), 0);
        check_int_eq(mode, KMIP_MODE_CBC);
        const uint8_t *p;
        size_t pl;
        check_int_eq(ttlv_get_bytes(&payload, KMIP_TAG_DATA, &p, &pl), 0);
        check(pl == 48 && memcmp(p, d, 48) == 0);
        check_int_eq(ttlv_get_bytes(&payload, KMIP_TAG_IV_COUNTER_NONCE, &p, &pl), 0);
        check(pl == 16 && p[0] == 7);
}

static void test_real_replies(void) {
        size_t n = 0;
        _cleanup_free_ uint8_t *q = load("pykmip-01-query.bin", &n);
        kmip_reply r = {0};
        check_int_eq(kmip_parse_reply(q, n, KMIP_OP_QUERY, &r, NULL), 0);
        check_int_eq(r.status, KMIP_STATUS_SUCCESS);
        uint32_t ops[32];
        size_t k = 0;
        check_int_eq(kmip_payload_query_ops(&r, ops, 32, &k, NULL), 0);
        bool enc = false;
        for (size_t i = 0; i < k; i++)
                enc |= ops[i] == KMIP_OP_ENCRYPT;
        check(k >= 12 && enc);
        kmip_reply_done(&r);
        /* The wrong operation is refused. */
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kmip_parse_reply(q, n, KMIP_OP_GET, &r, &err), -EBADMSG);
        check_contains(err ? err->msg : NULL, "answers operation");

        _cleanup_free_ uint8_t *c = load("pykmip-02-create.bin", &n);
        check_int_eq(kmip_parse_reply(c, n, KMIP_OP_CREATE, &r, NULL), 0);
        _cleanup_free_ char *uid = NULL;
        check_int_eq(kmip_payload_uid(&r, &uid, NULL), 0);
        check(uid && uid[0]);
        kmip_reply_done(&r);

        _cleanup_free_ uint8_t *g = load("pykmip-04-get.bin", &n);
        check_int_eq(kmip_parse_reply(g, n, KMIP_OP_GET, &r, NULL), 0);
        _cleanup_(secmem_freep) secmem *key = NULL;
        check_int_eq(kmip_payload_get_key(&r, &key, NULL), 0);
        check(key && key->len == 32);
        kmip_reply_done(&r);

        _cleanup_free_ uint8_t *m = load("pykmip-08-get-missing.bin", &n);
        check_int_eq(kmip_parse_reply(m, n, KMIP_OP_GET, &r, NULL), 0);
        check_int_eq(r.status, KMIP_STATUS_FAILED);
        check_int_eq(kmip_reason_to_errno(r.reason), -ENOKEY);
        check_contains(r.message, "no-such-key");
        kmip_reply_done(&r);

        _cleanup_free_ uint8_t *l = load("pykmip-07-locate-none.bin", &n);
        check_int_eq(kmip_parse_reply(l, n, KMIP_OP_LOCATE, &r, NULL), 0);
        check_int_eq(kmip_payload_locate(&r, &uid, NULL), -ENOENT);
        kmip_reply_done(&r);
}

/* Every truncation, and every single-byte change in the headers, of a real
 * Get reply is either refused or parsed without touching memory outside it
 * (ASan watches); truncations must all be refused. */
static void test_truncated_and_mutated(void) {
        size_t n = 0;
        _cleanup_free_ uint8_t *g = load("pykmip-04-get.bin", &n);
        if (!g)
                return;
        int refused = 0;
        for (size_t len = 0; len < n; len++) {
                uint8_t *copy = xmemdup(g, len ? len : 1);
                kmip_reply r = {0};
                if (kmip_parse_reply(copy, len, KMIP_OP_GET, &r, NULL) == -EBADMSG)
                        refused++;
                kmip_reply_done(&r);
                free(copy);
        }
        check_int_eq(refused, (int)n);
        for (size_t i = 0; i < n; i++) {
                uint8_t *copy = xmemdup(g, n);
                copy[i] ^= 0xff;
                kmip_reply r = {0};
                secmem *k = NULL;
                if (kmip_parse_reply(copy, n, KMIP_OP_GET, &r, NULL) == 0 && r.status == 0)
                        (void)kmip_payload_get_key(&r, &k, NULL);
                secmem_free(k);
                kmip_reply_done(&r);
                free(copy);
        }
}

static void test_malformed_handmade(void) {
        _cleanup_error_ vt_error *err = NULL;
        ttlv t;
        /* Non-zero padding. */
        uint8_t pad[] = {0x42, 0, 1, 0x02, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 9};
        check_int_eq(ttlv_parse(pad, sizeof(pad), &t, &err), -EBADMSG);
        check_contains(err ? err->msg : NULL, "padding");
        /* Integer with length 8. */
        uint8_t len8[] = {0x42, 0, 1, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0};
        check_int_eq(ttlv_parse(len8, sizeof(len8), &t, NULL), -EBADMSG);
        /* Unknown type, bad tag, bad boolean, trailing bytes, huge length. */
        uint8_t type[] = {0x42, 0, 1, 0x0B, 0, 0, 0, 0};
        check_int_eq(ttlv_parse(type, sizeof(type), &t, NULL), -EBADMSG);
        uint8_t tag[] = {0x43, 0, 1, 0x01, 0, 0, 0, 0};
        check_int_eq(ttlv_parse(tag, sizeof(tag), &t, NULL), -EBADMSG);
        uint8_t boolean[] = {0x42, 0, 1, 0x06, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2};
        check_int_eq(ttlv_parse(boolean, sizeof(boolean), &t, NULL), -EBADMSG);
        uint8_t trailing[] = {0x42, 0, 1, 0x01, 0, 0, 0, 0, 0};
        check_int_eq(ttlv_parse(trailing, sizeof(trailing), &t, NULL), -EBADMSG);
        uint8_t huge[] = {0x42, 0, 1, 0x08, 0xff, 0xff, 0xff, 0xf9};
        check_int_eq(ttlv_parse(huge, sizeof(huge), &t, NULL), -EBADMSG);
        /* A child overrunning its structure. */
        uint8_t overrun[] = {0x42, 0, 1, 0x01, 0, 0, 0, 8, 0x42, 0, 2, 0x02, 0, 0, 0, 4};
        check_int_eq(ttlv_parse(overrun, sizeof(overrun), &t, NULL), -EBADMSG);
        /* Nesting bomb: 20 structures deep. */
        uint8_t deep[20 * 8];
        for (int i = 0; i < 20; i++) {
                uint32_t l = (uint32_t)(19 - i) * 8;
                uint8_t h[8] = {0x42, 0, 1, 0x01, (uint8_t)(l >> 24), (uint8_t)(l >> 16), (uint8_t)(l >> 8),
                                (uint8_t)l};
                memcpy(deep + i * 8, h, 8);
        }
        vt_error *e2 = NULL;
        check_int_eq(ttlv_parse(deep, sizeof(deep), &t, &e2), -EBADMSG);
        check_contains(e2 ? e2->msg : NULL, "nesting");
        vt_error_free(e2);
}

/* A well-formed ResponseMessage with two batch items, or a Get whose key is
 * 16 bytes, or a protocol 2.0 header: refused. */
static void build_reply(uint8_t *buf, size_t cap, size_t *n, int items, int major, int keylen) {
        ttlv_enc e;
        ttlv_enc_init(&e, buf, cap);
        ttlv_begin(&e, KMIP_TAG_RESPONSE_MESSAGE);
        ttlv_begin(&e, KMIP_TAG_RESPONSE_HEADER);
        ttlv_begin(&e, KMIP_TAG_PROTOCOL_VERSION);
        ttlv_put_int(&e, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major);
        ttlv_put_int(&e, KMIP_TAG_PROTOCOL_VERSION_MINOR, 2);
        ttlv_end(&e);
        ttlv_put_int(&e, KMIP_TAG_BATCH_COUNT, items);
        ttlv_end(&e);
        uint8_t key[64] = {0};
        for (int i = 0; i < items; i++) {
                ttlv_begin(&e, KMIP_TAG_BATCH_ITEM);
                ttlv_put_enum(&e, KMIP_TAG_OPERATION, KMIP_OP_GET);
                ttlv_put_enum(&e, KMIP_TAG_RESULT_STATUS, 0);
                ttlv_begin(&e, KMIP_TAG_RESPONSE_PAYLOAD);
                ttlv_put_enum(&e, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY);
                ttlv_put_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, "1");
                ttlv_begin(&e, KMIP_TAG_SYMMETRIC_KEY);
                ttlv_begin(&e, KMIP_TAG_KEY_BLOCK);
                ttlv_put_enum(&e, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_FORMAT_RAW);
                ttlv_begin(&e, KMIP_TAG_KEY_VALUE);
                ttlv_put_bytes(&e, KMIP_TAG_KEY_MATERIAL, key, (size_t)keylen);
                ttlv_end(&e);
                ttlv_put_enum(&e, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
                ttlv_put_int(&e, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, keylen * 8);
                ttlv_end(&e);
                ttlv_end(&e);
                ttlv_end(&e);
                ttlv_end(&e);
        }
        ttlv_end(&e);
        check_int_eq(ttlv_enc_finish(&e, n), 0);
}

static void test_reply_semantics(void) {
        uint8_t buf[1024];
        size_t n = 0;
        kmip_reply r = {0};
        secmem *k = NULL;
        build_reply(buf, sizeof(buf), &n, 1, 1, 32);
        check_int_eq(kmip_parse_reply(buf, n, KMIP_OP_GET, &r, NULL), 0);
        check_int_eq(kmip_payload_get_key(&r, &k, NULL), 0);
        secmem_free(k);
        k = NULL;
        kmip_reply_done(&r);

        build_reply(buf, sizeof(buf), &n, 2, 1, 32);
        check_int_eq(kmip_parse_reply(buf, n, KMIP_OP_GET, &r, NULL), -EBADMSG);
        build_reply(buf, sizeof(buf), &n, 1, 2, 32);
        check_int_eq(kmip_parse_reply(buf, n, KMIP_OP_GET, &r, NULL), -EBADMSG);
        build_reply(buf, sizeof(buf), &n, 1, 1, 16);
        check_int_eq(kmip_parse_reply(buf, n, KMIP_OP_GET, &r, NULL), 0);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kmip_payload_get_key(&r, &k, &err), -EBADMSG);
        check(!k);
        check_contains(err ? err->msg : NULL, "AES-256");
        kmip_reply_done(&r);
}

int main(void) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return 1;
        exe[n] = '\0';
        char *top = exe;
        for (int i = 0; i < 5; i++)
                top = dirname(top);
        corpus = xasprintf("%s/test/fuzz/corpus/fuzz-kmip-reply", top);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_encode_known_bytes),
                TAP_CASE(test_encoder_errors),
                TAP_CASE(test_requests_parse_back),
                TAP_CASE(test_real_replies),
                TAP_CASE(test_truncated_and_mutated),
                TAP_CASE(test_malformed_handmade),
                TAP_CASE(test_reply_semantics),
                {0},
        });
        free(corpus);
        return r;
}
