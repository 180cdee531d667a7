/* SPDX-License-Identifier: Apache-2.0 */
/* Key rotation: the key header's "next" entry, the recovery decisions and
 * recovery itself on a directory, and re-encrypting TPM state with the real
 * swtpm (tpm_copy_state). */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "keys/rotation.h"
#include "keys/header.h"
#include "keys/provider.h"
#include "tap.h"
#include "tpm/setup.h"
#include "tpm/swtpm.h"

#define W40 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="
#define W40B "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="
#define ENTRY(gen, w) \
        "\"provider\":\"secret\",\"kekId\":\"ns/vtpm-kek-vms#1\",\"algorithm\":\"AES-256-KWP\",\"wrappedKey\":\"" w \
        "\",\"dekGeneration\":" #gen

static const char with_next[] = "{\"version\":1," ENTRY(2, W40) ",\"next\":{" ENTRY(3, W40B)
                                ",\"dekRequest\":\"r-2026\",\"createdAt\":\"2026-11-23T09:00:00Z\"}}";
static const char only_next[] = "{\"version\":1,\"next\":{" ENTRY(1, W40B) "}}";
static const char plain[] = "{\"version\":1," ENTRY(2, W40) "}";

static int parse(const char *s, vt_error **err) {
        key_header h = {0};
        int r = key_header_parse(s, strlen(s), &h, err);
        key_header_done(&h);
        return r;
}

static void test_header_next_roundtrip(void) {
        _cleanup_(key_header_done) key_header h = {0};
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(key_header_parse(with_next, strlen(with_next), &h, &err), 0);
        check(key_header_has_current(&h));
        check_int_eq(h.dek_generation, 2);
        check(h.next != NULL);
        if (!h.next)
                return;
        check_int_eq(h.next->dek_generation, 3);
        check_str_eq(h.next->dek_request, "r-2026");
        check(h.next->wrapped_key[0] == 1);
        _cleanup_free_ char *s = NULL;
        check_int_eq(key_header_format(&h, &s, &err), 0);
        _cleanup_(key_header_done) key_header h2 = {0};
        check_int_eq(key_header_parse(s, strlen(s), &h2, &err), 0);
        check(h2.next && h2.next->dek_generation == 3 && strcmp(h2.next->dek_request, "r-2026") == 0);
        check(h2.next && h2.next->next == NULL);
}

static void test_header_only_next(void) {
        /* Unencrypted state being encrypted: no current key, only "next". */
        _cleanup_(key_header_done) key_header h = {0};
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(key_header_parse(only_next, strlen(only_next), &h, &err), 0);
        check(!key_header_has_current(&h));
        check(h.next && h.next->dek_generation == 1);
        _cleanup_free_ char *s = NULL;
        check_int_eq(key_header_format(&h, &s, &err), 0);
        check(s && !strstr(s, "\"provider\": \"secret\",\n  \"kekId\"") && strstr(s, "\"next\""));
        /* A header with neither current nor next is not a header. */
        check_int_eq(parse("{\"version\":1}", NULL), -EBADMSG);
}

static void test_header_next_invalid(void) {
        _cleanup_error_ vt_error *err = NULL;
        /* next must have a higher generation than the current key */
        check_int_eq(parse("{\"version\":1," ENTRY(3, W40) ",\"next\":{" ENTRY(3, W40B) "}}", &err), -EBADMSG);
        check(err && strstr(err->msg, "next.dekGeneration"));
        /* no nesting, no version inside next */
        check_int_eq(parse("{\"version\":1," ENTRY(1, W40) ",\"next\":{" ENTRY(2, W40B) ",\"next\":{}}}", NULL),
                     -EBADMSG);
        check_int_eq(parse("{\"version\":1," ENTRY(1, W40) ",\"next\":{\"version\":1," ENTRY(2, W40B) "}}", NULL),
                     -EBADMSG);
        /* next must be an object, and complete */
        check_int_eq(parse("{\"version\":1," ENTRY(1, W40) ",\"next\":\"x\"}", NULL), -EBADMSG);
        check_int_eq(parse("{\"version\":1," ENTRY(1, W40) ",\"next\":{\"provider\":\"secret\"}}", NULL), -EBADMSG);
        /* a partial current key beside next is not "no current key" */
        check_int_eq(parse("{\"version\":1,\"kekId\":\"x\",\"next\":{" ENTRY(1, W40B) "}}", NULL), -EBADMSG);
        /* dekRequest is a printable id */
        check_int_eq(parse("{\"version\":1," ENTRY(1, W40) ",\"dekRequest\":\"a b\"}", NULL), -EBADMSG);
        check_int_eq(parse(plain, NULL), 0);
}

static void test_rotation_ids(void) {
        check(keys_rotation_id_valid("2026-q4"));
        check(keys_rotation_id_valid("a.b_c-9"));
        check(!keys_rotation_id_valid(""));
        check(!keys_rotation_id_valid("-x"));
        check(!keys_rotation_id_valid("a/b"));
        check(!keys_rotation_id_valid("a b"));
        check(!keys_rotation_id_valid("0123456789012345678901234567890123456789012345678901234567890123"));
}

static void test_decide(void) {
        check_int_eq(keyrot_decide(false, false, false), KEYROT_NOTHING);
        check_int_eq(keyrot_decide(false, true, false), KEYROT_CLEAN_STAGING);
        check_int_eq(keyrot_decide(false, true, true), KEYROT_CLEAN_STAGING);
        check_int_eq(keyrot_decide(true, false, false), KEYROT_ROLL_BACK);
        check_int_eq(keyrot_decide(true, true, false), KEYROT_ROLL_BACK);
        check_int_eq(keyrot_decide(true, true, true), KEYROT_ROLL_FORWARD);
        check_int_eq(keyrot_decide(true, false, true), KEYROT_ROLL_BACK);
}

static char *tmpdir(void) {
        char t[] = "/tmp/test-keys-rotation.XXXXXX";
        check(mkdtemp(t) != NULL);
        return xstrdup(t);
}

static void put(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
        check_int_eq(write_file_atomic(p, text, strlen(text), 0600, NULL), 0);
}

static char *get(const char *dir, const char *name) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
        char *data = NULL;
        if (read_full_file(p, 1 << 20, &data, NULL, NULL) < 0)
                return NULL;
        return data;
}

static void rm_rf(const char *dir) {
        _cleanup_free_ char *cmd = xasprintf("rm -rf -- '%s'", dir);
        (void)!system(cmd);
}

static bool exists(const char *dir, const char *name) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
        return access(p, F_OK) == 0;
}

static void stage(const char *dir, bool complete) {
        _cleanup_free_ char *st = xasprintf("%s/%s", dir, KEYROT_STAGING);
        check_int_eq(mkdir(st, 0700), 0);
        put(st, "tpm2-00.permall", "NEW");
        if (complete)
                put(st, KEYROT_COMPLETE, "complete\n");
}

static void test_recover_forward(void) {
        _cleanup_free_ char *d = tmpdir();
        put(d, KEY_HEADER_FILE, with_next);
        put(d, "tpm2-00.permall", "OLD");
        stage(d, true);
        check_int_eq(keyrot_recover(d, NULL), KEYROT_ROLL_FORWARD);
        _cleanup_free_ char *perm = get(d, "tpm2-00.permall");
        check_str_eq(perm, "NEW");
        check(!exists(d, KEYROT_STAGING));
        _cleanup_free_ char *hp = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        _cleanup_(key_header_done) key_header h = {0};
        check_int_eq(key_header_read(hp, &h, NULL), 0);
        check(h.next == NULL);
        check_int_eq(h.dek_generation, 3);
        check_str_eq(h.dek_request, "r-2026");
        check(h.wrapped_key && h.wrapped_key[0] == 1);
        /* Nothing left to do the second time. */
        check_int_eq(keyrot_recover(d, NULL), KEYROT_NOTHING);
        rm_rf(d);
}

static void test_recover_forward_half_renamed(void) {
        /* Crash after the rename, before the header was promoted. */
        _cleanup_free_ char *d = tmpdir();
        put(d, KEY_HEADER_FILE, with_next);
        put(d, "tpm2-00.permall", "NEW");
        _cleanup_free_ char *st = xasprintf("%s/%s", d, KEYROT_STAGING);
        check_int_eq(mkdir(st, 0700), 0);
        put(st, KEYROT_COMPLETE, "complete\n");
        check_int_eq(keyrot_recover(d, NULL), KEYROT_ROLL_FORWARD);
        _cleanup_free_ char *perm = get(d, "tpm2-00.permall");
        check_str_eq(perm, "NEW");
        _cleanup_free_ char *hp = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        _cleanup_(key_header_done) key_header h = {0};
        check_int_eq(key_header_read(hp, &h, NULL), 0);
        check(h.next == NULL && h.dek_generation == 3);
        rm_rf(d);
}

static void test_recover_back(void) {
        _cleanup_free_ char *d = tmpdir();
        put(d, KEY_HEADER_FILE, with_next);
        put(d, "tpm2-00.permall", "OLD");
        put(d, KEY_HEADER_FILE ".tmp", "half a header");
        stage(d, false);
        check_int_eq(keyrot_recover(d, NULL), KEYROT_ROLL_BACK);
        _cleanup_free_ char *perm = get(d, "tpm2-00.permall");
        check_str_eq(perm, "OLD");
        check(!exists(d, KEYROT_STAGING));
        check(!exists(d, KEY_HEADER_FILE ".tmp"));
        _cleanup_free_ char *hp = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        _cleanup_(key_header_done) key_header h = {0};
        check_int_eq(key_header_read(hp, &h, NULL), 0);
        check(h.next == NULL);
        check_int_eq(h.dek_generation, 2);
        check(h.wrapped_key && h.wrapped_key[0] == 0);
        rm_rf(d);
}

static void test_recover_back_unencrypted(void) {
        /* Encryption of old unencrypted state interrupted before the marker:
         * the header goes, the state stays unencrypted and untouched. */
        _cleanup_free_ char *d = tmpdir();
        put(d, KEY_HEADER_FILE, only_next);
        put(d, "tpm2-00.permall", "PLAIN");
        check_int_eq(keyrot_recover(d, NULL), KEYROT_ROLL_BACK);
        check(!exists(d, KEY_HEADER_FILE));
        _cleanup_free_ char *perm = get(d, "tpm2-00.permall");
        check_str_eq(perm, "PLAIN");
        rm_rf(d);
}

static void test_recover_clean_and_nothing(void) {
        _cleanup_free_ char *d = tmpdir();
        put(d, KEY_HEADER_FILE, plain);
        put(d, "tpm2-00.permall", "CUR");
        check_int_eq(keyrot_recover(d, NULL), KEYROT_NOTHING);
        stage(d, true); /* promoted already, staging not yet removed */
        check_int_eq(keyrot_recover(d, NULL), KEYROT_CLEAN_STAGING);
        _cleanup_free_ char *perm = get(d, "tpm2-00.permall");
        check_str_eq(perm, "CUR");
        check(!exists(d, KEYROT_STAGING));
        /* A broken header is never "recovered" away. */
        put(d, KEY_HEADER_FILE, "{broken");
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(keyrot_recover(d, &err), -EBADMSG);
        rm_rf(d);
}

static void test_header_write_hooked(void) {
        _cleanup_free_ char *d = tmpdir();
        _cleanup_free_ char *hp = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        _cleanup_(key_header_done) key_header h = {0};
        check_int_eq(key_header_parse(plain, strlen(plain), &h, NULL), 0);
        check_int_eq(key_header_write_hooked(hp, &h, NULL, NULL, NULL), 0);
        struct stat st;
        check(stat(hp, &st) == 0 && (st.st_mode & 0777) == 0600);
        check(!exists(d, KEY_HEADER_FILE ".tmp"));
        _cleanup_(key_header_done) key_header r = {0};
        check_int_eq(key_header_read(hp, &r, NULL), 0);
        check_int_eq(r.dek_generation, 2);
        rm_rf(d);
}

/* ---- with the real swtpm ---- */

static void hash_file(const char *path, unsigned char out[32]) {
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        memset(out, 0, 32);
        if (read_full_file(path, 1 << 24, &data, &len, NULL) < 0)
                return;
        unsigned int ol = 32;
        EVP_Digest(data, len, out, &ol, EVP_sha256(), NULL);
}

static int probe(const char *dir, const uint8_t *key) {
        tpm_swtpm_opts o = TPM_SWTPM_OPTS_INIT;
        o.state_dir = dir;
        o.key = key;
        o.key_len = key ? 32 : 0;
        return tpm_probe_state(&o, NULL);
}

static void test_copy_state_swtpm(void) {
        _cleanup_free_ char *d = tmpdir();
        _cleanup_free_ char *a = xasprintf("%s/a", d), *b = xasprintf("%s/b", d), *c = xasprintf("%s/c", d);
        check_int_eq(mkdir(a, 0700), 0);
        check_int_eq(mkdir(b, 0700), 0);
        check_int_eq(mkdir(c, 0700), 0);
        uint8_t k1[32], k2[32];
        for (int i = 0; i < 32; i++) {
                k1[i] = (uint8_t)(i + 1);
                k2[i] = (uint8_t)(0xa0 + i);
        }
        /* Unencrypted state, as swtpm_setup without a key makes it. */
        _cleanup_error_ vt_error *err = NULL;
        tpm_setup_opts so = {.state_dir = a, .no_certs = true};
        int r = tpm_setup(&so, &err);
        check_int_eq(r, 0);
        if (r < 0) {
                printf("# %s\n", err->msg);
                rm_rf(d);
                return;
        }
        _cleanup_free_ char *pa = xasprintf("%s/tpm2-00.permall", a);
        unsigned char before[32], after[32];
        hash_file(pa, before);

        /* none -> k1 */
        tpm_swtpm_opts from = TPM_SWTPM_OPTS_INIT, to = TPM_SWTPM_OPTS_INIT;
        from.state_dir = a;
        to.state_dir = b;
        to.key = k1;
        to.key_len = 32;
        r = tpm_copy_state(&from, &to, &err);
        if (r < 0)
                printf("# %s\n", err->msg);
        check_int_eq(r, 0);
        hash_file(pa, after);
        check(memcmp(before, after, 32) == 0); /* the source is never written */
        check_int_eq(probe(b, k1), 0);
        check_int_eq(probe(b, NULL), -TPM_ESTATE);
        check_int_eq(probe(b, k2), -TPM_ESTATE);

        /* k1 -> k2 */
        tpm_swtpm_opts from2 = TPM_SWTPM_OPTS_INIT, to2 = TPM_SWTPM_OPTS_INIT;
        from2.state_dir = b;
        from2.key = k1;
        from2.key_len = 32;
        to2.state_dir = c;
        to2.key = k2;
        to2.key_len = 32;
        r = tpm_copy_state(&from2, &to2, NULL);
        check_int_eq(r, 0);
        check_int_eq(probe(c, k2), 0);
        check_int_eq(probe(c, k1), -TPM_ESTATE);
        _cleanup_free_ char *pb = xasprintf("%s/tpm2-00.permall", b), *pc = xasprintf("%s/tpm2-00.permall", c);
        hash_file(pb, before);
        hash_file(pc, after);
        check(memcmp(before, after, 32) != 0);

        /* A wrong source key copies nothing; a non-empty target is refused. */
        _cleanup_free_ char *e = xasprintf("%s/e", d);
        check_int_eq(mkdir(e, 0700), 0);
        tpm_swtpm_opts bad = from2, toe = to2;
        bad.key = k2;
        toe.state_dir = e;
        _cleanup_error_ vt_error *berr = NULL;
        check_int_eq(tpm_copy_state(&bad, &toe, &berr), -TPM_ESTATE);
        check(!exists(e, "tpm2-00.permall"));
        check_int_eq(tpm_copy_state(&from2, &to2, NULL), -EEXIST);
        /* A suspended TPM (volatile state file) is not copied. */
        put(b, "tpm2-00.volatilestate", "x");
        _cleanup_error_ vt_error *verr = NULL;
        check_int_eq(tpm_copy_state(&from2, &toe, &verr), -EBUSY);
        rm_rf(d);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_header_next_roundtrip),
                TAP_CASE(test_header_only_next),
                TAP_CASE(test_header_next_invalid),
                TAP_CASE(test_rotation_ids),
                TAP_CASE(test_decide),
                TAP_CASE(test_recover_forward),
                TAP_CASE(test_recover_forward_half_renamed),
                TAP_CASE(test_recover_back),
                TAP_CASE(test_recover_back_unencrypted),
                TAP_CASE(test_recover_clean_and_nothing),
                TAP_CASE(test_header_write_hooked),
                TAP_CASE(test_copy_state_swtpm),
                {0},
        });
}
