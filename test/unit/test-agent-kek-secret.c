/* SPDX-License-Identifier: Apache-2.0 */
/* The "secret" provider's parsing (pkg/keys/kek_secret.h): a kekId from a
 * tenant's key header names the VM namespace's KEK or nothing, and a KEK
 * value of any length in the Secret is refused before it is decoded (a 6 KB
 * value once overflowed a 48-byte buffer; ASan would say so here). */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "keys/kek_secret.h"
#include "tap.h"

static json_t *secret_with(const char *field, const char *value) {
        return json_pack("{s:s, s:{s:s}, s:{s:s}}", "kind", "Secret", "metadata", "name", "vtpm-kek-tenant-a",
                         "data", field, value);
}

static void test_kek_id_binding(void) {
        const char *v = NULL;
        _cleanup_free_ char *id = kek_id_make("vtpm", "tenant-a", "1");
        check_str_eq(id, "vtpm/vtpm-kek-tenant-a#1");
        check_int_eq(kek_id_for_scope("vtpm", "tenant-a", id, &v), 0);
        check_str_eq(v, "1");
        check_int_eq(kek_id_for_scope("vtpm", "tenant-a", "vtpm/vtpm-kek-tenant-a#2026-q4", &v), 0);
        check_str_eq(v, "2026-q4");
        /* Another namespace's KEK, another agent namespace, look-alikes. */
        static const char *const bad[] = {
                "vtpm/vtpm-kek-tenant-b#1",       "other/vtpm-kek-tenant-a#1",     "vtpm/vtpm-kek-tenant-a-x#1",
                "vtpm/vtpm-kek-tenant#1",         "vtpm/vtpm-kek-tenant-a#",       "vtpm/vtpm-kek-tenant-a#../1",
                "vtpm/vtpm-kek-tenant-a#1#2",     "vtpm/vtpm-kek-tenant-a",        "",
                "vtpm/vtpm-kek-tenant-a#-1",      " vtpm/vtpm-kek-tenant-a#1",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                v = NULL;
                if (!check(kek_id_for_scope("vtpm", "tenant-a", bad[i], &v) == -EPERM))
                        printf("# accepted: \"%s\"\n", bad[i]);
                check(v == NULL);
        }
}

static void test_kek_value(void) {
        uint8_t raw[32];
        for (int i = 0; i < 32; i++)
                raw[i] = (uint8_t)(i * 9 + 1);
        char good[64];
        EVP_EncodeBlock((unsigned char *)good, raw, 32);
        json_t *s = secret_with("kek-1", good);
        _cleanup_(secmem_freep) secmem *k = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kek_secret_key(s, "1", &k, &err), 0);
        check(k && k->len == 32 && memcmp(k->data, raw, 32) == 0);
        check_int_eq(kek_secret_key(s, "2", &(secmem *){NULL}, NULL), -ENOKEY);
        json_decref(s);

        /* 6000 bytes of base64 (4500 bytes): refused before any decoding. */
        size_t n = 6000;
        char *longv = xmalloc(n + 1);
        for (size_t i = 0; i < n; i++)
                longv[i] = "ABCDEFGHabcdefgh01234567+/"[i % 26];
        longv[n] = '\0';
        static const char *const bad_values[] = {NULL, "", "AAAA", "not base64 at all, but 44 characters long!!=",
                                                 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj",
                                                 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh*=",
                                                 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",
                                                 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="};
        for (size_t i = 0; i < ELEMENTSOF(bad_values); i++) {
                const char *val = bad_values[i] ? bad_values[i] : longv;
                json_t *b = secret_with("kek-1", val);
                secmem *x = NULL;
                vt_error *e = NULL;
                int r = kek_secret_key(b, "1", &x, &e);
                if (!check(r == -EBADMSG && !x))
                        printf("# value #%zu (%zu chars): %d\n", i, strlen(val), r);
                check(e && !strstr(e->msg, val[0] ? val : "\x01"));
                if (i == 0 && e)
                        printf("# a %zu-character value: %s\n", n, e->msg);
                secmem_free(x);
                vt_error_free(e);
                json_decref(b);
        }
        /* Not a string at all. */
        json_t *num = json_pack("{s:{s:i}}", "data", "kek-1", 5);
        check_int_eq(kek_secret_key(num, "1", &(secmem *){NULL}, NULL), -EBADMSG);
        json_decref(num);
        free(longv);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_kek_id_binding),
                TAP_CASE(test_kek_value),
                {0},
        });
}
