/* SPDX-License-Identifier: Apache-2.0 */
/* A key header is tenant data: it may name any KEK. Against a REAL PyKMIP
 * server (hack/kmip-server.sh), through the agent's keymgr as the node
 * controller uses it:
 *
 *  - namespace A's vtpm-key.json copied onto B's volume is refused for B,
 *    before any unwrap (also for A's rotated KEK "…/tenant-a@v2");
 *  - a header asking for client-side unwrapping (AES-256-KWP with a KMIP
 *    KEK, i.e. "Get the raw KEK") is refused: the KEK never leaves the server;
 *  - every unwrap failure reads the same (no padding oracle). */
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "config.h"
#include "keymgr.h"
#include "keys/header.h"
#include "keys/kmip_client.h"
#include "keys/wrap.h"
#include "tap.h"

#define SUBJ(n) (&(key_subject){.ns = (n)})

static char *top, *dir, *script;
static char host[64], ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
static unsigned port;
static keymgr *km;

static int server(const char *cmd) {
        _cleanup_free_ char *c = xasprintf("'%s' %s '%s' >&2", script, cmd, dir);
        return system(c);
}

static void load_env(void) {
        _cleanup_free_ char *p = xasprintf("%s/env", dir), *env = NULL;
        if (read_full_file(p, 4096, &env, NULL, NULL) < 0)
                return;
        for (char *l = strtok(env, "\n"); l; l = strtok(NULL, "\n")) {
                sscanf(l, "VTPM_KMIP_HOST=%63s", host);
                sscanf(l, "VTPM_KMIP_PORT=%u", &port);
                sscanf(l, "VTPM_KMIP_CA=%4095s", ca);
                sscanf(l, "VTPM_KMIP_CERT=%4095s", cert);
                sscanf(l, "VTPM_KMIP_KEY=%4095s", key);
        }
}

static char *state_dir(const char *name) {
        char *d = xasprintf("%s/%s", dir, name);
        check(mkdir(d, 0700) == 0);
        return d;
}

static char *header_text(const char *d) {
        _cleanup_free_ char *p = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        char *data = NULL;
        check_int_eq(read_full_file(p, 1 << 16, &data, NULL, NULL), 0);
        return data;
}

static void put_header(const char *d, const char *text) {
        _cleanup_free_ char *p = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        check_int_eq(write_file_atomic(p, text, strlen(text), 0600, NULL), 0);
}

static void put_header_struct(const char *d, const key_header *h) {
        _cleanup_free_ char *s = NULL;
        check_int_eq(key_header_format(h, &s, NULL), 0);
        if (s)
                put_header(d, s);
}

static void test_setup(void) {
        check_int_eq(server("start"), 0);
        load_env();
        check(port > 0);
        agent_config *cfg = agent_config_new_default();
        free(cfg->keys.provider);
        cfg->keys.provider = xstrdup("kmip");
        cfg->keys.kmip_endpoint = xasprintf("%s:%u", host, port);
        cfg->keys.kmip_ca_file = xstrdup(ca);
        cfg->keys.kmip_cert_file = xstrdup(cert);
        cfg->keys.kmip_key_file = xstrdup(key);
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(keymgr_new(NULL, cfg, &km, &err), 0);
        if (err)
                printf("# %s\n", err->msg);
        agent_config_free(cfg);
}

/* Namespace A's first boot, then its header on B's volume. */
static void test_copied_header_refused(void) {
        if (!km)
                return;
        _cleanup_free_ char *a = state_dir("tenant-a"), *b = state_dir("tenant-b");
        _cleanup_(secmem_freep) secmem *dek_a = NULL, *dek_b = NULL;
        _cleanup_(state_key_info_done) state_key_info ia = {0}, ib = {0};
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(keymgr_state_key(km, SUBJ("tenant-a"), a, &dek_a, &ia, &err), 0);
        check(ia.created && dek_a);
        _cleanup_free_ char *ha = header_text(a);
        put_header(b, ha);
        _cleanup_error_ vt_error *berr = NULL;
        int r = keymgr_state_key(km, SUBJ("tenant-b"), b, &dek_b, &ib, &berr);
        printf("# A's header (kekId %s) on B's volume, unwrapped for B: %d%s%s\n", ia.kek_id, r, berr ? ": " : "",
               berr ? berr->msg : "");
        if (r == 0 && dek_a && dek_b)
                printf("# B got %s DEK\n", dek_a->len == dek_b->len && memcmp(dek_a->data, dek_b->data, dek_a->len) == 0
                                                   ? "A's"
                                                   : "a different");
        check(r < 0);
        check(!dek_b);
        /* A itself still gets its key. */
        _cleanup_(secmem_freep) secmem *again = NULL;
        _cleanup_(state_key_info_done) state_key_info i2 = {0};
        check_int_eq(keymgr_state_key(km, SUBJ("tenant-a"), a, &again, &i2, NULL), 0);
        check(again && dek_a && memcmp(again->data, dek_a->data, 32) == 0);
}

/* A's rotated KEK (Name "vtpm-agent-kek/tenant-a@v2") is A's too, not B's. */
static void test_copied_rotated_header_refused(void) {
        if (!km)
                return;
        _cleanup_free_ char *a = state_dir("tenant-a-v2"), *b = state_dir("tenant-b-v2");
        _cleanup_free_ char *kek = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(keymgr_kek_version(km, SUBJ("tenant-a"), "v2", &kek, &err), 0);
        _cleanup_(secmem_freep) secmem *dek = NULL;
        check_int_eq(secmem_new(32, &dek, NULL), 0);
        memset(dek->data, 0x5a, 32);
        _cleanup_(key_header_done) key_header h = {0};
        check_int_eq(keymgr_wrap(km, SUBJ("tenant-a"), kek, NULL, dek, &h, &err), 0);
        h.dek_generation = 1;
        put_header_struct(a, &h);
        put_header_struct(b, &h);
        _cleanup_(secmem_freep) secmem *got_a = NULL, *got_b = NULL;
        _cleanup_(state_key_info_done) state_key_info ia = {0}, ib = {0};
        check_int_eq(keymgr_state_key(km, SUBJ("tenant-a"), a, &got_a, &ia, NULL), 0);
        _cleanup_error_ vt_error *berr = NULL;
        int r = keymgr_state_key(km, SUBJ("tenant-b"), b, &got_b, &ib, &berr);
        printf("# A's v2 header on B's volume: %d%s%s\n", r, berr ? ": " : "", berr ? berr->msg : "");
        check(r < 0 && !got_b);
}

/* A KMIP kekId with the client-side algorithm: the agent would Get the raw
 * KEK to unwrap locally. Here the KEK is B's own, so only the algorithm is
 * wrong. */
static void test_client_side_algorithm_refused(void) {
        if (!km)
                return;
        _cleanup_free_ char *b = state_dir("tenant-b-kwp"), *b0 = state_dir("tenant-b-own");
        _cleanup_(secmem_freep) secmem *dek0 = NULL;
        _cleanup_(state_key_info_done) state_key_info i0 = {0};
        check_int_eq(keymgr_state_key(km, SUBJ("tenant-b"), b0, &dek0, &i0, NULL), 0);
        if (!i0.kek_id)
                return;
        /* The test (not the agent) fetches B's KEK to build the header. */
        kmip_config kc = {.host = host, .port = (uint16_t)port, .ca_file = ca, .cert_file = cert, .key_file = key};
        _cleanup_kmip_client_ kmip_client *c = NULL;
        _cleanup_(secmem_freep) secmem *kek = NULL, *dek = NULL;
        check_int_eq(kmip_client_new(&kc, &c, NULL), 0);
        check_int_eq(kmip_get_key(c, i0.kek_id, &kek, NULL), 0);
        check_int_eq(secmem_new(32, &dek, NULL), 0);
        memset(dek->data, 0x77, 32);
        uint8_t *w = NULL;
        size_t wl = 0;
        if (kek)
                check_int_eq(keys_wrap_local(kek, dek, &w, &wl, NULL), 0);
        key_header h = {.provider = xstrdup("kmip"), .kek_id = xstrdup(i0.kek_id),
                        .algorithm = xstrdup(KEYS_ALG_AES256_KWP), .wrapped_key = w, .wrapped_key_len = wl,
                        .dek_generation = 1};
        put_header_struct(b, &h);
        key_header_done(&h);
        _cleanup_(secmem_freep) secmem *got = NULL;
        _cleanup_(state_key_info_done) state_key_info ib = {0};
        _cleanup_error_ vt_error *err = NULL;
        int r = keymgr_state_key(km, SUBJ("tenant-b"), b, &got, &ib, &err);
        printf("# kmip header with algorithm %s: %d%s%s\n", KEYS_ALG_AES256_KWP, r, err ? ": " : "",
               err ? err->msg : "");
        check(r < 0 && !got);
}

/* One message for every way an unwrap fails: altered IV, altered last
 * ciphertext block (a padding error on the server), altered middle block
 * (padding fine, check wrong). */
static void test_one_failure_message(void) {
        if (!km)
                return;
        _cleanup_free_ char *b = state_dir("tenant-b-oracle");
        _cleanup_(secmem_freep) secmem *dek = NULL;
        _cleanup_(state_key_info_done) state_key_info i = {0};
        check_int_eq(keymgr_state_key(km, SUBJ("tenant-b"), b, &dek, &i, NULL), 0);
        _cleanup_free_ char *text = header_text(b);
        _cleanup_(key_header_done) key_header h = {0};
        check_int_eq(key_header_parse(text, strlen(text), &h, NULL), 0);
        if (!h.wrapped_key)
                return;
        static const size_t at[] = {0, 20, 40, 79};
        char *first = NULL;
        bool same = true;
        for (size_t k = 0; k < ELEMENTSOF(at); k++) {
                h.wrapped_key[at[k]] ^= 0x01;
                put_header_struct(b, &h);
                h.wrapped_key[at[k]] ^= 0x01;
                _cleanup_(secmem_freep) secmem *got = NULL;
                _cleanup_(state_key_info_done) state_key_info ii = {0};
                _cleanup_error_ vt_error *err = NULL;
                int r = keymgr_state_key(km, SUBJ("tenant-b"), b, &got, &ii, &err);
                printf("# byte %zu altered: %d: %s\n", at[k], r, err ? err->msg : "(no error)");
                check(r < 0 && !got);
                if (!first)
                        first = xstrdup(err ? err->msg : "");
                else if (strcmp(first, err ? err->msg : "") != 0)
                        same = false;
        }
        check(same);
        free(first);
}

int main(void) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return 1;
        exe[n] = '\0';
        top = xstrdup(exe);
        for (int i = 0; i < 5; i++)
                top = dirname(top);
        script = xasprintf("%s/hack/kmip-server.sh", top);
        if (access(script, X_OK) < 0 || access("/usr/bin/pykmip-server", X_OK) < 0) {
                printf("1..0 # SKIP no hack/kmip-server.sh or pykmip-server\n");
                return 0;
        }
        char tmpl[] = "/tmp/test-keys-binding.XXXXXX";
        dir = mkdtemp(tmpl);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_setup),
                TAP_CASE(test_copied_header_refused),
                TAP_CASE(test_copied_rotated_header_refused),
                TAP_CASE(test_client_side_algorithm_refused),
                TAP_CASE(test_one_failure_message),
                {0},
        });
        keymgr_free(km);
        server("stop");
        _cleanup_free_ char *rm = xasprintf("rm -rf '%s'", dir);
        if (r == 0)
                (void)system(rm);
        else
                printf("# kept %s for inspection\n", dir);
        free(top);
        free(script);
        return r;
}
