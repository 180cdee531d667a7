/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/keys against a REAL PyKMIP server (Debian's python3-pykmip), started
 * and stopped by hack/kmip-server.sh: create and activate a KEK, wrap a DEK
 * server-side (Encrypt) and unwrap it; the wrong KEK (another scope's) and an
 * unknown id fail as the one "unwrap failed", the raw KEK is never fetched
 * (a KWP header is refused), a stopped server is "unavailable",
 * and a restarted server unwraps the old header again. */
#include <arpa/inet.h>
#include <libgen.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/timeutil.h"
#include "keys/dek.h"
#include "keys/provider.h"
#include "keys/wrap.h"
#include "tap.h"

static char *top, *dir, *script;
static char host[64], ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
static unsigned port;

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

static kmip_config config(void) {
        return (kmip_config){.host = host, .port = (uint16_t)port, .ca_file = ca, .cert_file = cert,
                             .key_file = key, .timeout = 5 * USEC_PER_SEC};
}

static kek_provider *provider(void) {
        kmip_provider_options o = {.server = config()};
        kek_provider *p = NULL;
        _cleanup_error_ vt_error *err = NULL;
        if (kek_provider_kmip_new(&o, &p, &err) < 0)
                printf("# %s\n", err->msg);
        return p;
}

static char *kek_a, *kek_b;

static void test_server_starts(void) {
        usec_t t = now_monotonic();
        check_int_eq(server("start"), 0);
        load_env();
        printf("# pykmip-server started in %.2f s on port %u\n", (double)(now_monotonic() - t) / 1e6, port);
        check(port > 0 && ca[0] && cert[0] && key[0]);
}

static void test_client_ops(void) {
        _cleanup_kmip_client_ kmip_client *c = NULL;
        _cleanup_error_ vt_error *err = NULL;
        kmip_config cfg = config();
        check_int_eq(kmip_client_new(&cfg, &c, &err), 0);
        if (!c)
                return;
        uint32_t ops[64];
        size_t n = 0;
        check_int_eq(kmip_query_operations(c, ops, 64, &n, &err), 0);
        bool enc = false, dec = false, get = false;
        printf("# Query Operations:");
        for (size_t i = 0; i < n; i++) {
                printf(" 0x%02x", ops[i]);
                enc |= ops[i] == KMIP_OP_ENCRYPT;
                dec |= ops[i] == KMIP_OP_DECRYPT;
                get |= ops[i] == KMIP_OP_GET;
        }
        printf("\n");
        check(enc && dec && get);

        _cleanup_free_ char *uid = NULL;
        usec_t t = now_monotonic();
        check_int_eq(kmip_create_aes256(c, NULL, &uid, &err), 0);
        check(uid && uid[0]);
        check_int_eq(kmip_activate(c, uid, &err), 0);
        printf("# Create+Activate: %.1f ms\n", (double)(now_monotonic() - t) / 1e3);

        _cleanup_(secmem_freep) secmem *k1 = NULL, *k2 = NULL;
        check_int_eq(kmip_get_key(c, uid, &k1, &err), 0);
        check_int_eq(kmip_get_key(c, uid, &k2, &err), 0);
        check(k1 && k2 && k1->len == 32 && memcmp(k1->data, k2->data, 32) == 0);

        /* Server-side CBC matches OpenSSL with the fetched key. */
        uint8_t iv[16] = {1, 2, 3}, msg[20] = "twenty bytes of data";
        _cleanup_free_ uint8_t *ct = NULL;
        size_t ctl = 0;
        check_int_eq(kmip_encrypt_cbc(c, uid, iv, msg, sizeof(msg), &ct, &ctl, &err), 0);
        check_int_eq(ctl, 32);
        _cleanup_(secmem_freep) secmem *pt = NULL;
        check_int_eq(kmip_decrypt_cbc(c, uid, iv, ct, ctl, &pt, &err), 0);
        check(pt && pt->len == sizeof(msg) && memcmp(pt->data, msg, sizeof(msg)) == 0);

        /* Name lookup finds only Active keys with that name. */
        _cleanup_free_ char *named = NULL, *found = NULL, *none = NULL;
        check_int_eq(kmip_create_aes256(c, "test-keys-kmip/named", &named, &err), 0);
        check_int_eq(kmip_locate_by_name(c, "test-keys-kmip/named", &none, &err), -ENOENT);
        check_int_eq(kmip_activate(c, named, &err), 0);
        check_int_eq(kmip_locate_by_name(c, "test-keys-kmip/named", &found, &err), 0);
        check_str_eq(found, named);

        /* Unknown id: -ENOKEY, naming the id. */
        secmem *x = NULL;
        vt_error *e2 = NULL;
        check_int_eq(kmip_get_key(c, "no-such-key", &x, &e2), -ENOKEY);
        check_contains(e2 ? e2->msg : NULL, "no-such-key");
        if (e2)
                printf("# %s\n", e2->msg);
        vt_error_free(e2);

        /* Revoke + Destroy, then it is gone. */
        check_int_eq(kmip_revoke(c, uid, &err), 0);
        check_int_eq(kmip_destroy(c, uid, &err), 0);
        check_int_eq(kmip_get_key(c, uid, &x, NULL), -ENOKEY);
        if (err)
                printf("# unexpected: %s\n", err->msg);
}

static void roundtrip(const char *want_alg) {
        _cleanup_(kek_provider_freep) kek_provider *p = provider();
        check(p);
        if (!p)
                return;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *id = NULL, *id2 = NULL;
        check_int_eq(kek_provider_ensure_kek(p, "vms", &id, &err), 0);
        check_int_eq(kek_provider_ensure_kek(p, "vms", &id2, &err), 0);
        check_str_eq(id, id2); /* idempotent: found by name */
        if (!kek_a && id)
                kek_a = xstrdup(id);

        _cleanup_(secmem_freep) secmem *dek = NULL, *back = NULL;
        check_int_eq(dek_generate(&dek, NULL), 0);
        _cleanup_(key_header_done) key_header h = {.dek_generation = 1};
        usec_t t = now_monotonic();
        check_int_eq(kek_provider_wrap(p, "vms", id, dek, &h, &err), 0);
        usec_t t2 = now_monotonic();
        check_str_eq(h.provider, "kmip");
        check_str_eq(h.kek_id, id);
        check_str_eq(h.algorithm, want_alg);
        check_int_eq(key_header_validate(&h, &err), 0);
        check_int_eq(kek_provider_unwrap(p, "vms", &h, &back, &err), 0);
        printf("# %s: wrap %.1f ms, unwrap %.1f ms\n", want_alg, (double)(t2 - t) / 1e3,
               (double)(now_monotonic() - t2) / 1e3);
        check(back && back->len == 32 && memcmp(back->data, dek->data, 32) == 0);
        check_int_eq(kek_provider_kmip_server_side(p), 1);
        if (err)
                printf("# %s\n", err->msg);

        /* Another scope's KEK cannot unwrap it: KeyUnwrapFailed, not unavailable. */
        _cleanup_free_ char *other = NULL;
        check_int_eq(kek_provider_ensure_kek(p, "other-namespace", &other, &err), 0);
        check_str_eq(other == NULL || strcmp(other, id) != 0 ? "different" : "same", "different");
        if (!kek_b && other)
                kek_b = xstrdup(other);
        free(h.kek_id);
        h.kek_id = xstrdup(other ? other : "x");
        secmem *bad = NULL;
        vt_error *e2 = NULL;
        check_int_eq(kek_provider_unwrap(p, "vms", &h, &bad, &e2), -EBADMSG);
        check(!bad);
        check_str_eq(e2 ? e2->msg : NULL, KEYS_UNWRAP_FAILED);
        /* ... nor can it unwrap for the other scope: the wrapped key is not its. */
        vt_error_free(e2);
        e2 = NULL;
        check_int_eq(kek_provider_unwrap(p, "other-namespace", &h, &bad, &e2), -EBADMSG);
        check(!bad);
        check_str_eq(e2 ? e2->msg : NULL, KEYS_UNWRAP_FAILED);
        if (e2)
                printf("# wrong KEK: %s\n", e2->msg);
        vt_error_free(e2);
        e2 = NULL;

        /* An id the server never issued. */
        free(h.kek_id);
        h.kek_id = xstrdup("999999");
        check_int_eq(kek_provider_unwrap(p, "vms", &h, &bad, &e2), -EBADMSG);
        check_str_eq(e2 ? e2->msg : NULL, KEYS_UNWRAP_FAILED);
        if (e2)
                printf("# unknown KEK: %s\n", e2->msg);
        vt_error_free(e2);
}

static void test_wrap_server_side(void) {
        roundtrip(KEYS_ALG_KMIP_CBC);
}

/* KEK rotation: a named version is its own key object, found again by name
 * (every VM of the scope asking for it shares it), and a DEK re-wrapped
 * under it unwraps to the same key. */
static void test_kek_version(void) {
        _cleanup_(kek_provider_freep) kek_provider *p = provider();
        check(p);
        if (!p)
                return;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *base = NULL, *v1 = NULL, *v1b = NULL, *v2 = NULL;
        check_int_eq(kek_provider_ensure_kek(p, "rot", &base, &err), 0);
        check_int_eq(kek_provider_ensure_kek_version(p, "rot", "2026-q4", &v1, &err), 0);
        check_int_eq(kek_provider_ensure_kek_version(p, "rot", "2026-q4", &v1b, &err), 0);
        check_int_eq(kek_provider_ensure_kek_version(p, "rot", "2027-q1", &v2, &err), 0);
        if (err)
                printf("# %s\n", err->msg);
        check(base && v1 && v1b && v2);
        if (!base || !v1 || !v1b || !v2)
                return;
        check_str_eq(v1, v1b);
        check(strcmp(v1, base) != 0 && strcmp(v2, v1) != 0);
        vt_error *bad = NULL;
        check_int_eq(kek_provider_ensure_kek_version(p, "rot", "no/slash", &(char *){NULL}, &bad), -EINVAL);
        vt_error_free(bad);

        _cleanup_(secmem_freep) secmem *dek = NULL, *back = NULL, *back2 = NULL;
        check_int_eq(dek_generate(&dek, NULL), 0);
        _cleanup_(key_header_done) key_header h = {.dek_generation = 1};
        check_int_eq(kek_provider_wrap(p, "rot", base, dek, &h, &err), 0);
        check_int_eq(kek_provider_unwrap(p, "rot", &h, &back, &err), 0);
        check_int_eq(kek_provider_wrap(p, "rot", v1, back, &h, &err), 0); /* re-wrap in place */
        check_str_eq(h.kek_id, v1);
        check_int_eq(kek_provider_unwrap(p, "rot", &h, &back2, &err), 0);
        check(back2 && memcmp(back2->data, dek->data, 32) == 0);
        /* "rot@2026-q4" is rot's, not "ro"'s nor "rot-other"'s. */
        secmem *x = NULL;
        vt_error *e2 = NULL;
        check_int_eq(kek_provider_unwrap(p, "ro", &h, &x, &e2), -EBADMSG);
        vt_error_free(e2);
        e2 = NULL;
        check_int_eq(kek_provider_unwrap(p, "rot-other", &h, &x, &e2), -EBADMSG);
        vt_error_free(e2);
        e2 = NULL;
        /* Nor does it wrap under another scope's KEK. */
        check_int_eq(kek_provider_wrap(p, "other-namespace", v1, dek, &h, &e2), -EPERM);
        check(!x);
        vt_error_free(e2);
}

/* No local wrapping: a KMIP header with AES-256-KWP would need the KEK's
 * bytes; it is refused, with the one message, and no Get is sent. */
static void test_no_local_unwrap(void) {
        _cleanup_(kek_provider_freep) kek_provider *p = provider();
        check(p && kek_a);
        if (!p || !kek_a)
                return;
        _cleanup_(secmem_freep) secmem *dek = NULL, *kek = NULL;
        check_int_eq(dek_generate(&dek, NULL), 0);
        _cleanup_kmip_client_ kmip_client *c = NULL;
        kmip_config cfg = config();
        check_int_eq(kmip_client_new(&cfg, &c, NULL), 0);
        check_int_eq(kmip_get_key(c, kek_a, &kek, NULL), 0); /* the test may; the agent never */
        if (!kek)
                return;
        uint8_t *w = NULL;
        size_t wl = 0;
        check_int_eq(keys_wrap_local(kek, dek, &w, &wl, NULL), 0);
        _cleanup_(key_header_done) key_header h = {.provider = xstrdup("kmip"), .kek_id = xstrdup(kek_a),
                                                   .algorithm = xstrdup(KEYS_ALG_AES256_KWP), .wrapped_key = w,
                                                   .wrapped_key_len = wl, .dek_generation = 1};
        secmem *x = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kek_provider_unwrap(p, "vms", &h, &x, &err), -EBADMSG);
        check(!x);
        check_str_eq(err ? err->msg : NULL, KEYS_UNWRAP_FAILED);
}

/* A server that is down is "unavailable" (retry), and a header written
 * before the outage unwraps after the restart: the KEK persisted. */
static void test_server_down_then_back(void) {
        _cleanup_(kek_provider_freep) kek_provider *p = provider();
        check(p && kek_a);
        if (!p || !kek_a)
                return;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_(secmem_freep) secmem *dek = NULL, *back = NULL;
        check_int_eq(dek_generate(&dek, NULL), 0);
        _cleanup_(key_header_done) key_header h = {.dek_generation = 1};
        check_int_eq(kek_provider_wrap(p, "vms", kek_a, dek, &h, &err), 0);

        check_int_eq(server("stop"), 0);
        vt_error *e2 = NULL;
        secmem *x = NULL;
        usec_t t = now_monotonic();
        int r = kek_provider_unwrap(p, "vms", &h, &x, &e2);
        printf("# server stopped: r=%d (%s) after %.1f ms: %s\n", r, strerror(-r),
               (double)(now_monotonic() - t) / 1e3, e2 ? e2->msg : "(no message)");
        /* Refused, or reset by a server still closing: either way "unavailable". */
        check(keys_error_is_unavailable(r));
        check(!x);
        vt_error_free(e2);
        e2 = NULL;
        _cleanup_free_ char *id = NULL;
        r = kek_provider_ensure_kek(p, "vms", &id, &e2);
        check(keys_error_is_unavailable(r));
        vt_error_free(e2);

        check_int_eq(server("start"), 0);
        load_env(); /* the port may differ after a restart */
        _cleanup_(kek_provider_freep) kek_provider *p2 = provider();
        check(p2);
        if (!p2)
                return;
        /* A server that has just come back may refuse for a moment more; the
         * node controller retries such failures with backoff, so does this. */
        usec_t deadline = now_monotonic() + 10 * USEC_PER_SEC;
        for (;;) {
                r = kek_provider_unwrap(p2, "vms", &h, &back, &err);
                if (r >= 0 || !keys_error_is_unavailable(r) || now_monotonic() > deadline)
                        break;
                printf("# after restart: %s; retrying\n", err ? err->msg : strerror(-r));
                vt_error_free(err);
                err = NULL;
                sleep_usec(200 * USEC_PER_MSEC);
        }
        if (err)
                printf("# after restart: %s\n", err->msg);
        check_int_eq(r, 0);
        check(back && memcmp(back->data, dek->data, 32) == 0);
}

static void test_bad_config_and_verification(void) {
        _cleanup_error_ vt_error *err = NULL;
        kmip_config cfg = config();
        cfg.key_file = "/nonexistent/client.key";
        kmip_client *c = NULL;
        check_int_eq(kmip_client_new(&cfg, &c, &err), -EINVAL);
        check_contains(err ? err->msg : NULL, "/nonexistent/client.key");

        /* The server's certificate does not name "kmip.example": refused. */
        cfg = config();
        cfg.server_name = "kmip.example";
        _cleanup_kmip_client_ kmip_client *c2 = NULL;
        check_int_eq(kmip_client_new(&cfg, &c2, NULL), 0);
        vt_error *e2 = NULL;
        check_int_eq(kmip_client_connect(c2, &e2), -EKEYREJECTED);
        check_contains(e2 ? e2->msg : NULL, "did not verify");
        vt_error_free(e2);
}

/* A peer that accepts TCP but never speaks: "unavailable" (-ETIMEDOUT)
 * within the configured timeout, not a hang. */
static void test_silent_server_times_out(void) {
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(a);
        check(bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 4) == 0 &&
              getsockname(l, (struct sockaddr *)&a, &al) == 0);
        kmip_config cfg = config();
        cfg.port = ntohs(a.sin_port);
        cfg.timeout = 300 * USEC_PER_MSEC;
        _cleanup_kmip_client_ kmip_client *c = NULL;
        check_int_eq(kmip_client_new(&cfg, &c, NULL), 0);
        _cleanup_error_ vt_error *err = NULL;
        usec_t t = now_monotonic();
        uint32_t ops[4];
        size_t n;
        int r = c ? kmip_query_operations(c, ops, 4, &n, &err) : -EINVAL;
        usec_t took = now_monotonic() - t;
        check_int_eq(r, -ETIMEDOUT);
        check(keys_error_is_unavailable(r));
        check(took >= 250 * USEC_PER_MSEC && took < 3 * USEC_PER_SEC);
        printf("# silent server: %s after %.0f ms\n", err ? err->msg : "?", (double)took / 1e3);
        close(l);
}

static void test_server_stops(void) {
        check_int_eq(server("stop"), 0);
}

int main(void) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return 1;
        exe[n] = '\0';
        /* build/asan/test/unit/<bin> -> the source tree's top */
        top = xstrdup(exe);
        for (int i = 0; i < 5; i++)
                top = dirname(top);
        script = xasprintf("%s/hack/kmip-server.sh", top);
        if (access(script, X_OK) < 0 || access("/usr/bin/pykmip-server", X_OK) < 0) {
                printf("1..0 # SKIP no hack/kmip-server.sh or pykmip-server\n");
                return 0;
        }
        char tmpl[] = "/tmp/test-keys-kmip.XXXXXX";
        dir = mkdtemp(tmpl);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_server_starts),
                TAP_CASE(test_client_ops),
                TAP_CASE(test_wrap_server_side),
                TAP_CASE(test_no_local_unwrap),
                TAP_CASE(test_kek_version),
                TAP_CASE(test_bad_config_and_verification),
                TAP_CASE(test_silent_server_times_out),
                TAP_CASE(test_server_down_then_back),
                TAP_CASE(test_server_stops),
                {0},
        });
        server("stop");
        _cleanup_free_ char *rm = xasprintf("rm -rf '%s'", dir);
        if (r == 0)
                (void)system(rm);
        else
                printf("# kept %s for inspection\n", dir);
        free(top);
        free(script);
        free(kek_a);
        free(kek_b);
        return r;
}
