/* SPDX-License-Identifier: Apache-2.0 */
/* agent/broker/broker_server.c, the key broker's HTTPS layer, on 127.0.0.1:0 with a
 * throwaway certificate (openssl CLI) and a test handler, asked with libcurl
 * as pkg/keys/broker_client.c asks: TLS 1.3 works and TLS 1.2 (or plain HTTP)
 * gets no answer; no or a bad token 401; a body over 16 KiB 413; bad JSON
 * 400; unknown route 404; the handler's verdicts 403/422/503/500 with generic
 * messages; a slow handler does not hold up another request; an idle
 * connection and one that trickles its request byte by byte are closed in
 * seconds; and neither
 * the token nor a DEK reaches the log. The API server checks behind the
 * handler are the lead's e2e suite. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "broker/broker_server.h"
#include "keys/provider.h"
#include "tap.h"
#include "testcert.h"

#define TOKEN "tok-0123456789-good"
#define DEK_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static char dir[] = "/tmp/test-broker-http-XXXXXX";
static char cert[256], key[256], logfile[256];
static broker_server *srv;
static int port, saved_stderr = -1;

/* ---- the test handler ---- */

static int t_authenticate(void *ud, const char *token, broker_peer *ret, vt_error **err) {
        if (strcmp(token, "api-down") == 0)
                return vt_error_set(err, EHOSTUNREACH, "the API server is down (test)");
        if (strcmp(token, TOKEN) != 0)
                return vt_error_set(err, EACCES, "not a token of the agent (test)");
        *ret = (broker_peer){.node = xstrdup("node-1"), .pod = xstrdup("vtpm-agent-x7k2p")};
        return 0;
}

/* The VM's name says what to answer. */
static int t_serve(void *ud, const broker_peer *peer, const broker_request *q, json_t **ret, vt_error **err) {
        if (strcmp(peer->node, "node-1") != 0 || strcmp(q->ns, "tenant-a") != 0)
                return vt_error_set(err, EIO, "the handler got the wrong peer or subject");
        if (strcmp(q->vm, "refused") == 0)
                return vt_error_set(err, EACCES, "launcher on another node (test)");
        if (strcmp(q->vm, "badkey") == 0)
                return keys_unwrap_failed(err);
        if (strcmp(q->vm, "kms-down") == 0)
                return vt_error_set(err, EHOSTUNREACH, "KMIP server down (test)");
        if (strcmp(q->vm, "boom") == 0)
                return vt_error_set(err, ENOTRECOVERABLE, "broken (test)");
        if (strcmp(q->vm, "slow") == 0)
                sleep_usec(2 * USEC_PER_SEC);
        if (q->op == BROKER_OP_WRAP)
                *ret = json_pack("{s:s}", "header", "wrapped");
        else
                *ret = json_pack("{s:s}", "dek", DEK_B64);
        return 0;
}

/* ---- a client, as broker_client.c ---- */

typedef struct answer {
        long code;
        CURLcode cc;
        char tls[16]; /* the negotiated version */
        vt_buf body;
} answer;

/* While the connection is open: the TLS version it negotiated. */
static void note_tls(CURL *h, answer *a) {
        struct curl_tlssessioninfo *ti = NULL;
        if (!a->tls[0] && curl_easy_getinfo(h, CURLINFO_TLS_SSL_PTR, &ti) == CURLE_OK && ti &&
            ti->backend == CURLSSLBACKEND_OPENSSL && ti->internals)
                snprintf(a->tls, sizeof(a->tls), "%s", SSL_get_version(ti->internals));
}

static __thread CURL *thread_handle;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
        answer *a = ud;
        note_tls(thread_handle, a);
        vt_buf_append(&a->body, p, size * n);
        return size * n;
}

typedef struct call {
        const char *method, *path, *auth, *body;
        size_t body_len; /* 0: strlen(body) */
        bool tls12, plain, chunked;
} call;

static answer ask(const call *c) {
        answer a = {0};
        CURL *h = curl_easy_init();
        char url[128];
        snprintf(url, sizeof(url), "%s://127.0.0.1:%d%s", c->plain ? "http" : "https", port, c->path);
        struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        char authz[256];
        if (c->auth) {
                snprintf(authz, sizeof(authz), "Authorization: %s", c->auth);
                hdrs = curl_slist_append(hdrs, authz);
        }
        if (c->chunked)
                hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CAINFO, cert);
        curl_easy_setopt(h, CURLOPT_SSLVERSION, c->tls12 ? (long)(CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2)
                                                         : (long)CURL_SSLVERSION_TLSv1_3);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 8L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method ? c->method : "POST");
        if (c->body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
                if (!c->chunked)
                        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(c->body_len ? c->body_len : strlen(c->body)));
        }
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
        thread_handle = h;
        a.cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.code);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        return a;
}

static const char *subject_body(const char *vm) {
        static char b[512];
        snprintf(b, sizeof(b),
                 "{\"subject\": {\"namespace\": \"tenant-a\", \"vm\": \"%s\", \"launcherUid\": \"6f1c2d3e-0000\"}, "
                 "\"version\": \"2026-q4\"}",
                 vm);
        return b;
}

/* POST /v1/kek-version for vm with the good token. */
static answer ask_vm(const char *vm) {
        return ask(&(call){.path = "/v1/kek-version", .auth = "Bearer " TOKEN, .body = subject_body(vm)});
}

static const char *message(answer *a) {
        static char m[512];
        json_t *j = json_loadb(a->body.data ? a->body.data : "", a->body.len, 0, NULL);
        snprintf(m, sizeof(m), "%s", json_string_value(json_object_get(j, "message")) ?: "(none)");
        json_decref(j);
        return m;
}

/* ---- cases ---- */

static void test_tls13_works(void) {
        answer a = ask_vm("vm1");
        check_int_eq(a.cc, CURLE_OK);
        check_int_eq(a.code, 200);
        check_str_eq(a.tls, "TLSv1.3");
        check_contains(a.body.data, DEK_B64);
        vt_buf_free(&a.body);
        /* The wrap body too (a DEK in the request). */
        char wrap[512];
        snprintf(wrap, sizeof(wrap),
                 "{\"subject\": {\"namespace\": \"tenant-a\", \"vm\": \"vm1\", \"launcherUid\": \"6f1c2d3e\"}, "
                 "\"kekId\": null, \"version\": null, \"dek\": \"%s\"}",
                 DEK_B64);
        a = ask(&(call){.path = "/v1/wrap", .auth = "Bearer " TOKEN, .body = wrap});
        check_int_eq(a.code, 200);
        check_contains(a.body.data, "wrapped");
        vt_buf_free(&a.body);
}

static void test_tls12_refused(void) {
        answer a = ask(&(call){.path = "/v1/kek-version", .auth = "Bearer " TOKEN, .body = subject_body("vm1"),
                               .tls12 = true});
        printf("# TLS 1.2: curl %d (%s), HTTP %ld\n", a.cc, curl_easy_strerror(a.cc), a.code);
        check(a.cc != CURLE_OK);
        check_int_eq(a.code, 0);
        vt_buf_free(&a.body);
        a = ask(&(call){.path = "/v1/kek-version", .auth = "Bearer " TOKEN, .body = subject_body("vm1"), .plain = true});
        printf("# plain HTTP: curl %d (%s), HTTP %ld\n", a.cc, curl_easy_strerror(a.cc), a.code);
        check(a.code != 200);
        vt_buf_free(&a.body);
}

static void test_tokens(void) {
        static const char *const bad[] = {NULL, "", "Bearer ", "Bearer  ", "Basic dXNlcjpwYXNz", "bearer wrong-token",
                                          "Bearer " TOKEN "x", "Bearer a b"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                answer a = ask(&(call){.path = "/v1/kek-version", .auth = bad[i], .body = subject_body("vm1")});
                check_int_eq(a.code, 401);
                check_str_eq(message(&a), "unauthenticated");
                vt_buf_free(&a.body);
        }
        /* The scheme is case-insensitive (RFC 7235). */
        answer a = ask(&(call){.path = "/v1/kek-version", .auth = "bearer " TOKEN, .body = subject_body("vm1")});
        check_int_eq(a.code, 200);
        vt_buf_free(&a.body);
        /* The API server cannot say: retry later, not "unauthenticated". */
        a = ask(&(call){.path = "/v1/kek-version", .auth = "Bearer api-down", .body = subject_body("vm1")});
        check_int_eq(a.code, 503);
        vt_buf_free(&a.body);
}

static void test_body_limit(void) {
        size_t n = BROKER_MAX_BODY + 1;
        char *big = xmalloc(n + 1);
        memset(big, ' ', n);
        big[n] = '\0';
        answer a = ask(&(call){.path = "/v1/unwrap", .auth = "Bearer " TOKEN, .body = big});
        check_int_eq(a.code, 413);
        vt_buf_free(&a.body);
        /* Exactly the limit is read (and is malformed: spaces). */
        big[n - 1] = '\0';
        a = ask(&(call){.path = "/v1/unwrap", .auth = "Bearer " TOKEN, .body = big});
        check_int_eq(a.code, 400);
        vt_buf_free(&a.body);
        /* Chunked, no Content-Length: cut off past the limit, never served. */
        char *huge = xmalloc(4 * n + 1);
        memset(huge, ' ', 4 * n);
        huge[4 * n] = '\0';
        a = ask(&(call){.path = "/v1/unwrap", .auth = "Bearer " TOKEN, .body = huge, .chunked = true});
        printf("# chunked 64 KiB: curl %d, HTTP %ld\n", a.cc, a.code);
        check(a.code != 200 && a.code != 400);
        vt_buf_free(&a.body);
        free(huge);
        free(big);
}

static void test_malformed(void) {
        static const char *const bodies[] = {"{not json", "", "[]", "{\"subject\": {}, \"version\": \"v1\"}",
                                             "{\"subject\": {\"namespace\": \"tenant-a\", \"vm\": \"vm1\", "
                                             "\"launcherUid\": \"6f1c\"}, \"version\": \"v1\", \"node\": \"node-2\"}"};
        for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
                answer a = ask(&(call){.path = "/v1/kek-version", .auth = "Bearer " TOKEN, .body = bodies[i]});
                check_int_eq(a.code, 400);
                check_contains(message(&a), "malformed request");
                check(!strstr(message(&a), "node-2") && !strstr(message(&a), "not json"));
                vt_buf_free(&a.body);
        }
}

static void test_routes(void) {
        answer a = ask(&(call){.path = "/v1/secrets", .auth = "Bearer " TOKEN, .body = subject_body("vm1")});
        check_int_eq(a.code, 404);
        vt_buf_free(&a.body);
        a = ask(&(call){.path = "/v1/unwrap/", .auth = "Bearer " TOKEN, .body = subject_body("vm1")});
        check_int_eq(a.code, 404);
        vt_buf_free(&a.body);
        a = ask(&(call){.method = "GET", .path = "/v1/unwrap", .auth = "Bearer " TOKEN});
        check_int_eq(a.code, 405);
        vt_buf_free(&a.body);
        /* A 404 needs no token: it says nothing about keys. */
        a = ask(&(call){.method = "GET", .path = "/"});
        check_int_eq(a.code, 404);
        vt_buf_free(&a.body);
}

static void test_verdicts(void) {
        static const struct {
                const char *vm;
                long code;
                const char *msg;
        } v[] = {
                {"refused", 403, "key access refused"},
                {"badkey", 422, KEYS_UNWRAP_FAILED},
                {"kms-down", 503, "unavailable"},
                {"boom", 500, "internal error"},
        };
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                answer a = ask_vm(v[i].vm);
                check_int_eq(a.code, v[i].code);
                check_contains(message(&a), v[i].msg);
                check(!strstr(message(&a), "(test)")); /* the handler's reason is for the log only */
                vt_buf_free(&a.body);
        }
}

static void *slow_request(void *ud) {
        answer a = ask_vm("slow");
        *(long *)ud = a.code;
        vt_buf_free(&a.body);
        return NULL;
}

static void test_slow_handler_blocks_nobody(void) {
        long slow_code = 0;
        pthread_t t;
        pthread_create(&t, NULL, slow_request, &slow_code);
        sleep_usec(300 * USEC_PER_MSEC); /* the slow one is in its handler */
        usec_t t0 = now_monotonic();
        answer a = ask_vm("vm1");
        usec_t took = now_monotonic() - t0;
        check_int_eq(a.code, 200);
        printf("# a request beside a 2 s handler took %llu ms\n", (unsigned long long)(took / USEC_PER_MSEC));
        check(took < USEC_PER_SEC);
        vt_buf_free(&a.body);
        pthread_join(t, NULL);
        check_int_eq(slow_code, 200);
}

/* A plain TCP connection to the broker; -1 on failure. */
static int raw_connect(void) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* True once the server closed fd (end of file or reset) within ms; bytes
 * it sends first (a TLS alert) are read and skipped. */
static bool closed_by_server(int fd, int ms) {
        usec_t end = now_monotonic() + (usec_t)ms * USEC_PER_MSEC;
        for (usec_t now; (now = now_monotonic()) < end;) {
                struct pollfd p = {fd, POLLIN, 0};
                if (poll(&p, 1, (int)((end - now) / USEC_PER_MSEC) + 1) <= 0)
                        return false;
                char b[512];
                ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN))
                        return true;
        }
        return false;
}

/* Connects and sends nothing: closed after the idle timeout (3 s here). */
static void test_idle_connection_closed(void) {
        int fd = raw_connect();
        check(fd >= 0);
        usec_t t0 = now_monotonic();
        bool closed = closed_by_server(fd, 8000);
        usec_t took = now_monotonic() - t0;
        printf("# idle connection closed: %s after %llu ms\n", closed ? "yes" : "no",
               (unsigned long long)(took / USEC_PER_MSEC));
        check(closed && took >= 2 * USEC_PER_SEC && took < 6 * USEC_PER_SEC);
        close(fd);
}

/* A TLS session whose request headers never end, one byte (one TLS record)
 * every 300 ms: the idle timeout never fires, the request deadline (4 s
 * here) does. Given up after 10 s. */
static void test_trickling_client_cut(void) {
        int fd = raw_connect();
        check(fd >= 0);
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        usec_t t0 = now_monotonic();
        check(SSL_connect(ssl) == 1);
        const char *start = "POST /v1/unwrap HTTP/1.1\r\nHost: broker\r\nX-Slow: ";
        check(SSL_write(ssl, start, (int)strlen(start)) > 0);
        bool closed = false;
        while (!closed && now_monotonic() - t0 < 10 * USEC_PER_SEC) {
                if (SSL_write(ssl, "a", 1) <= 0)
                        closed = true;
                struct pollfd p = {fd, POLLIN, 0};
                char b[256];
                if (!closed && poll(&p, 1, 300) > 0 && SSL_read(ssl, b, sizeof(b)) <= 0)
                        closed = true;
        }
        usec_t took = now_monotonic() - t0;
        printf("# trickling client: %s after %llu ms\n", closed ? "cut" : "still connected",
               (unsigned long long)(took / USEC_PER_MSEC));
        check(closed && took >= 3 * USEC_PER_SEC && took < 7 * USEC_PER_SEC);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
}

/* Runs last: everything above was logged to logfile. */
static void test_log_has_no_secrets(void) {
        fflush(stderr);
        char *log = NULL;
        size_t len = 0;
        check_int_eq(read_full_file(logfile, 1 << 20, &log, &len, NULL), 0);
        check_contains(log, "\"msg\":\"key broker request\"");
        check_contains(log, "\"op\":\"kek-version\"");
        check_contains(log, "\"node\":\"node-1\"");
        check_contains(log, "\"verdict\":\"refused\"");
        check_contains(log, "launcher on another node (test)");
        check(log && !strstr(log, TOKEN));
        check(log && !strstr(log, DEK_B64));
        free(log);
}

static void setup(void) {
        if (!mkdtemp(dir))
                abort();
        snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
        snprintf(key, sizeof(key), "%s/key.pem", dir);
        snprintf(logfile, sizeof(logfile), "%s/log", dir);
        if (testcert_make(key, cert, "broker") < 0) {
                fprintf(stderr, "# openssl could not make a certificate\n");
                abort();
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        /* The log goes to a file the last case reads. */
        saved_stderr = dup(2);
        int fd = open(logfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(fd, 2);
        close(fd);
        log_setup(LOG_LEVEL_INFO, true);
        broker_server_options o = {.listen = "127.0.0.1:0", .cert_file = cert, .key_file = key, .threads = 4,
                                   .idle_timeout_sec = 3, .request_timeout_sec = 4};
        broker_handler h = {.authenticate = t_authenticate, .serve = t_serve};
        vt_error *err = NULL;
        if (broker_server_start(&o, &h, &srv, &err) < 0) {
                dprintf(saved_stderr, "# cannot start: %s\n", err ? err->msg : "?");
                abort();
        }
        port = broker_server_port(srv);
}

static void teardown(void) {
        broker_server_stop(srv);
        fflush(stderr);
        dup2(saved_stderr, 2);
        /* The checks' own complaints went to the log file too: show them. */
        char *log = NULL;
        if (read_full_file(logfile, 1 << 20, &log, NULL, NULL) == 0)
                for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
                        if (line[0] == '#')
                                fprintf(stderr, "%s\n", line);
        free(log);
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        (void)!system(cmd);
        curl_global_cleanup();
}

int main(void) {
        setup();
        int r = tap_run((tap_case[]){
                TAP_CASE(test_tls13_works),
                TAP_CASE(test_tls12_refused),
                TAP_CASE(test_tokens),
                TAP_CASE(test_body_limit),
                TAP_CASE(test_malformed),
                TAP_CASE(test_routes),
                TAP_CASE(test_verdicts),
                TAP_CASE(test_slow_handler_blocks_nobody),
                TAP_CASE(test_idle_connection_closed),
                TAP_CASE(test_trickling_client_cut),
                TAP_CASE(test_log_has_no_secrets),
                {0},
        });
        teardown();
        return r;
}
