/* SPDX-License-Identifier: Apache-2.0 */
/* The node's side of the key broker (pkg/keys/broker_client.c) against the
 * broker's real HTTPS layer (agent/broker/broker_server.c) with a test handler:
 * what each answer means to keymgr's callers (a key, a refusal, an unwrap
 * failure, "unavailable, retry"), that the broker's certificate is verified,
 * and that the token file is re-read for every request (the kubelet rotates
 * it). The real checks against the API server are test/e2e/65-keys-broker.t. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "keys/broker_client.h"
#include "broker/broker_server.h"
#include "keymgr.h"
#include "keys/provider.h"
#include "tap.h"
#include "testcert.h"

static char dir[] = "/tmp/test-broker-client-XXXXXX";
static char cert[256], key[256], other_ca[256], token_file[256];
static broker_server *srv;
static int port;
static uint8_t dek_bytes[32];

static int t_authenticate(void *ud, const char *token, broker_peer *ret, vt_error **err) {
        if (strcmp(token, "node-1-token") != 0 && strcmp(token, "node-1-token-rotated") != 0)
                return vt_error_set(err, EACCES, "not a token of the agent (test)");
        *ret = (broker_peer){.node = xstrdup("node-1"), .pod = xstrdup("vtpm-agent-x")};
        return 0;
}

/* The VM's name says what to answer. */
static int t_serve(void *ud, const broker_peer *peer, const broker_request *q, json_t **ret, vt_error **err) {
        if (strcmp(q->vm, "elsewhere") == 0)
                return vt_error_set(err, EACCES, "launcher on another node (test)");
        if (strcmp(q->vm, "altered") == 0)
                return keys_unwrap_failed(err);
        if (strcmp(q->vm, "kms-down") == 0)
                return vt_error_set(err, EHOSTUNREACH, "KMIP server down (test)");
        if (strcmp(q->vm, "boom") == 0)
                return vt_error_set(err, ENOTRECOVERABLE, "broken (test)");
        if (strcmp(q->vm, "short-key") == 0) {
                *ret = json_pack("{s:s}", "dek", "AAAA");
                return 0;
        }
        if (q->op == BROKER_OP_KEK_VERSION) {
                *ret = json_pack("{s:s}", "kekId", "vtpm-system/vtpm-kek-tenant-a#v2");
                return 0;
        }
        if (q->op == BROKER_OP_WRAP) {
                /* What a provider's wrap sets, under the KEK asked for. */
                key_header h = {.dek_generation = 1};
                uint8_t *w = xnew(uint8_t, 40);
                memset(w, 7, 40);
                key_header_set_wrapping(&h, "secret", q->kek_id ? q->kek_id : "vtpm-system/vtpm-kek-tenant-a#1",
                                        "AES-256-KWP", w, 40);
                char *doc = NULL;
                int r = key_header_format(&h, &doc, err);
                key_header_done(&h);
                if (r < 0)
                        return r;
                *ret = json_pack("{s:s}", "header", doc);
                free(doc);
                return 0;
        }
        _cleanup_free_ char *b64 = keys_base64_encode(dek_bytes, sizeof(dek_bytes));
        *ret = json_pack("{s:s}", "dek", b64);
        return 0;
}

/* A loopback port nobody listens on (bound, then closed). */
static int listen_nobody(void) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        check(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
        close(fd);
        return ntohs(a.sin_port);
}

static void write_token(const char *t) {
        check_int_eq(write_file_atomic(token_file, t, strlen(t), 0600, NULL), 0);
}

static broker_client *client_with(const char *ca, int p) {
        _cleanup_free_ char *url = xasprintf("https://127.0.0.1:%d/", p);
        broker_client_options o = {.url = url, .ca_file = ca, .token_file = token_file, .timeout_sec = 5};
        broker_client *b = NULL;
        check_int_eq(broker_client_new(&o, &b, NULL), 0);
        return b;
}

static key_subject subject(const char *vm) {
        return (key_subject){.ns = "tenant-a", .vm = vm, .launcher_uid = "0b0e3c9e-1111-4a4a-9b9b-222233334444"};
}

/* A header entry as one on a state volume. */
static void entry(key_header *h) {
        *h = (key_header){.dek_generation = 1};
        uint8_t *w = xnew(uint8_t, 40);
        memset(w, 1, 40);
        key_header_set_wrapping(h, "secret", "vtpm-system/vtpm-kek-tenant-a#1", "AES-256-KWP", w, 40);
}

static int unwrap_as(const char *vm, secmem **ret, vt_error **err) {
        _cleanup_(broker_client_freep) broker_client *b = client_with(cert, port);
        key_header h;
        entry(&h);
        key_subject s = subject(vm);
        int r = broker_client_unwrap(b, &s, &h, ret, err);
        key_header_done(&h);
        return r;
}

static void test_unwrap_wrap_version(void) {
        _cleanup_(secmem_freep) secmem *dek = NULL;
        check_int_eq(unwrap_as("win11", &dek, NULL), 0);
        check(dek && dek->len == 32 && memcmp(dek->data, dek_bytes, 32) == 0);

        _cleanup_(broker_client_freep) broker_client *b = client_with(cert, port);
        key_subject s = subject("win11");
        key_header h = {.dek_generation = 3};
        check_int_eq(broker_client_wrap(b, &s, "vtpm-system/vtpm-kek-tenant-a#v2", NULL, dek, &h, NULL), 0);
        check_str_eq(h.provider, "secret");
        check_str_eq(h.kek_id, "vtpm-system/vtpm-kek-tenant-a#v2");
        check(h.wrapped_key_len == 40 && h.dek_generation == 3); /* the rest of the entry is left alone */
        key_header_done(&h);

        _cleanup_free_ char *id = NULL;
        check_int_eq(broker_client_kek_version(b, &s, "v2", &id, NULL), 0);
        check_str_eq(id, "vtpm-system/vtpm-kek-tenant-a#v2");
}

/* Each answer as keymgr's callers need it: -EACCES (refused), -EBADMSG with
 * the one unwrap message, "unavailable" (retry), -EPROTO. */
static void test_answers(void) {
        struct {
                const char *vm;
                int want;
                bool unavailable;
        } rows[] = {
                {"elsewhere", -EACCES, false},  {"altered", -EBADMSG, false},  {"kms-down", -EHOSTUNREACH, true},
                {"boom", -EPROTO, false},       {"short-key", -EPROTO, false},
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                _cleanup_(secmem_freep) secmem *dek = NULL;
                _cleanup_error_ vt_error *err = NULL;
                int r = unwrap_as(rows[i].vm, &dek, &err);
                check_int_eq(r, rows[i].want);
                check(keymgr_unavailable(r) == rows[i].unavailable);
                check(!dek);
                check(err && err->msg[0]);
                if (rows[i].want == -EBADMSG)
                        check_str_eq(err->msg, KEYS_UNWRAP_FAILED);
                printf("# %s: %s\n", rows[i].vm, err ? err->msg : "?");
        }
}

/* Not the broker's certificate, or nobody listening: unavailable (retried),
 * never a key. A token the broker does not accept: refused. */
static void test_transport(void) {
        _cleanup_(secmem_freep) secmem *dek = NULL;
        _cleanup_(broker_client_freep) broker_client *wrong_ca = client_with(other_ca, port);
        key_header h;
        entry(&h);
        key_subject s = subject("win11");
        _cleanup_error_ vt_error *e1 = NULL;
        check_int_eq(broker_client_unwrap(wrong_ca, &s, &h, &dek, &e1), -EHOSTUNREACH);
        check_contains(e1->msg, "cannot reach the key broker");

        int closed = listen_nobody();
        _cleanup_(broker_client_freep) broker_client *nobody = client_with(cert, closed);
        _cleanup_error_ vt_error *e2 = NULL;
        check_int_eq(broker_client_unwrap(nobody, &s, &h, &dek, &e2), -EHOSTUNREACH);

        write_token("someone-else");
        _cleanup_error_ vt_error *e3 = NULL;
        _cleanup_(broker_client_freep) broker_client *b = client_with(cert, port);
        check_int_eq(broker_client_unwrap(b, &s, &h, &dek, &e3), -EACCES);
        check(!strstr(e3->msg, "someone-else"));
        /* Rotated by the kubelet: the same client reads the new one. */
        write_token("node-1-token-rotated\n");
        check_int_eq(broker_client_unwrap(b, &s, &h, &dek, NULL), 0);
        key_header_done(&h);
        write_token("node-1-token");
}

static void setup(void) {
        if (!mkdtemp(dir))
                abort();
        snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
        snprintf(key, sizeof(key), "%s/key.pem", dir);
        snprintf(other_ca, sizeof(other_ca), "%s/other.pem", dir);
        snprintf(token_file, sizeof(token_file), "%s/token", dir);
        _cleanup_free_ char *other_key = xasprintf("%s/other.key", dir);
        if (testcert_make(key, cert, "broker") < 0 || testcert_make(other_key, other_ca, "other") < 0)
                abort();
        for (size_t i = 0; i < sizeof(dek_bytes); i++)
                dek_bytes[i] = (uint8_t)(i * 37 + 11);
        write_token("node-1-token");
        curl_global_init(CURL_GLOBAL_DEFAULT);
        broker_server_options o = {.listen = "127.0.0.1:0", .cert_file = cert, .key_file = key, .threads = 2};
        broker_handler h = {.authenticate = t_authenticate, .serve = t_serve};
        if (broker_server_start(&o, &h, &srv, NULL) < 0)
                abort();
        port = broker_server_port(srv);
}

static void teardown(void) {
        broker_server_stop(srv);
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        (void)!system(cmd);
        curl_global_cleanup();
}

int main(void) {
        setup();
        int r = tap_run((tap_case[]){TAP_CASE(test_unwrap_wrap_version), TAP_CASE(test_answers),
                                     TAP_CASE(test_transport), {0}});
        teardown();
        return r;
}
