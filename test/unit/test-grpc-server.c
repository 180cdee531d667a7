/* SPDX-License-Identifier: Apache-2.0 */
/* The node-hook server over a real Unix socket, driven by an nghttp2 client
 * written here as grpc-go would call: a call reaches the handler with its
 * fields and gets grpc-status 0; a handler's error comes back as its status
 * and message; an unknown method is UNIMPLEMENTED; a bad body is
 * INVALID_ARGUMENT; a peer of another uid is cut off; a handler that blocks
 * holds up its own connection only. */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/rmtree.h"
#include "grpc/frame.h"
#include "grpc/listen.h"
#include "grpc/server.h"
#include "pbenc.h"
#include "tap.h"

static char top[] = "/tmp/test-grpc-server.XXXXXX";
static char *sock_path;

/* ---- the handler: records what it saw; "fail-*" hook points fail; "block" waits for release ---- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool blocked, released;
static char seen_hook[64], seen_node[64], seen_vmi[256];
static size_t seen_vmi_len;
static char last_error[512];

static int handler(const nodehook_request *req, void *userdata, vt_error **err) {
        pthread_mutex_lock(&lock);
        snprintf(seen_hook, sizeof(seen_hook), "%s", req->hook_point);
        snprintf(seen_node, sizeof(seen_node), "%s", req->node_name);
        snprintf(seen_vmi, sizeof(seen_vmi), "%s", req->vmi);
        seen_vmi_len = req->vmi_len;
        if (strcmp(req->hook_point, "block") == 0) {
                blocked = true;
                pthread_cond_broadcast(&cond);
                while (!released)
                        pthread_cond_wait(&cond, &lock);
        }
        pthread_mutex_unlock(&lock);
        if (strcmp(req->hook_point, "fail-busy") == 0)
                return vt_error_set(err, EBUSY, "vTPM of vm-1 is not running yet: 50%% done\n(retry)");
        if (strcmp(req->hook_point, "fail-denied") == 0)
                return vt_error_set(err, EACCES, "caf\xc3\xa9 denied");
        if (strcmp(req->hook_point, "fail-quiet") == 0)
                return -EIO;
        return 0;
}

static void on_error(const vt_error *e, void *userdata) {
        pthread_mutex_lock(&lock);
        snprintf(last_error, sizeof(last_error), "%s", e->msg);
        pthread_mutex_unlock(&lock);
}

/* ---- a gRPC client on nghttp2 ---- */

typedef struct reply {
        int http_status, grpc_status; /* -1: none */
        char message[512];            /* grpc-message, percent-decoded */
        size_t data_len;
        bool closed; /* the stream ended */
} reply;

typedef struct body {
        const uint8_t *p;
        size_t n, off;
} body;

static void percent_decode(const uint8_t *v, size_t n, char *out, size_t cap) {
        size_t o = 0;
        for (size_t i = 0; i < n && o + 1 < cap; i++) {
                if (v[i] == '%' && i + 2 < n) {
                        char hex[3] = {(char)v[i + 1], (char)v[i + 2], 0};
                        out[o++] = (char)strtol(hex, NULL, 16);
                        i += 2;
                } else {
                        out[o++] = (char)v[i];
                }
        }
        out[o] = '\0';
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
        reply *r = ud;
        char v[64];
        snprintf(v, sizeof(v), "%.*s", (int)vl, (const char *)value);
        if (nl == 7 && memcmp(name, ":status", 7) == 0)
                r->http_status = atoi(v);
        else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
                r->grpc_status = atoi(v);
        else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0)
                percent_decode(value, vl, r->message, sizeof(r->message));
        return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t n, void *ud) {
        ((reply *)ud)->data_len += n;
        return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud) {
        ((reply *)ud)->closed = true;
        return 0;
}

static ssize_t c_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                           nghttp2_data_source *src, void *ud) {
        body *b = src->ptr;
        size_t n = MIN(length, b->n - b->off);
        memcpy(buf, b->p + b->off, n);
        b->off += n;
        if (b->off == b->n)
                *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
}

static int dial(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                abort();
        return fd;
}

#define CNV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}

/* One call on a new connection; the framed body as given. */
static reply call_raw(const char *path, const char *ctype, const uint8_t *frame, size_t n) {
        reply r = {.http_status = -1, .grpc_status = -1};
        int fd = dial();
        nghttp2_session_callbacks *cb;
        nghttp2_session *s;
        nghttp2_session_callbacks_new(&cb);
        nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
        nghttp2_session_client_new(&s, cb, &r);
        nghttp2_session_callbacks_del(cb);
        nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
        const nghttp2_nv hdrs[] = {CNV(":method", "POST"), CNV(":scheme", "http"), CNV(":path", path),
                                   CNV(":authority", "localhost"), CNV("content-type", ctype), CNV("te", "trailers")};
        body b = {frame, n, 0};
        nghttp2_data_provider dp = {.source.ptr = &b, .read_callback = c_read_body};
        nghttp2_submit_request(s, NULL, hdrs, ELEMENTSOF(hdrs), &dp, NULL);
        uint8_t buf[16384];
        while (!r.closed) {
                const uint8_t *out;
                ssize_t k;
                while ((k = nghttp2_session_mem_send(s, &out)) > 0)
                        if (send(fd, out, (size_t)k, MSG_NOSIGNAL) != k)
                                goto done;
                struct pollfd pf = {fd, POLLIN, 0};
                if (poll(&pf, 1, 10000) <= 0)
                        break;
                k = read(fd, buf, sizeof(buf));
                if (k <= 0 || nghttp2_session_mem_recv(s, buf, (size_t)k) < 0)
                        break;
        }
done:
        nghttp2_session_del(s);
        close(fd);
        return r;
}

static reply call(const char *hook, const char *vmi, const char *node) {
        vt_buf m = {0};
        pb_nodehook(&m, hook, vmi, node);
        uint8_t *f;
        size_t n;
        grpc_frame_encode(m.data, m.len, &f, &n);
        reply r = call_raw(NODEHOOK_METHOD_PATH, "application/grpc", f, n);
        free(f);
        vt_buf_free(&m);
        return r;
}

/* ---- the server under test ---- */

static int listen_fd = -1;

static grpc_server *start(uid_t allow_uid) {
        grpc_server *s = NULL;
        if (grpc_listen_unix(sock_path, 16, &listen_fd, NULL) < 0)
                abort();
        grpc_server_options o = {.handler = handler, .on_error = on_error, .allow_uid = allow_uid};
        if (grpc_server_start(listen_fd, &o, &s, NULL) < 0)
                abort();
        return s;
}

static void stop(grpc_server *s) {
        grpc_server_stop(s);
        close(listen_fd);
}

/* A gRPC answer (HTTP 200) with this status and, if msg, a message containing it. */
static void check_reply(const reply *r, int grpc_status, const char *msg) {
        check_int_eq(r->http_status, 200);
        check_int_eq(r->grpc_status, grpc_status);
        check(r->closed);
        if (msg)
                check_contains(r->message, msg);
}

static void test_call_ok(void) {
        grpc_server *s = start(0);
        reply r = call("PreVMStart", "{\"metadata\":{\"name\":\"vm-1\"}}", "node-1");
        check_reply(&r, 0, NULL);
        check_int_eq(r.data_len, 5); /* the empty ExecuteNodeHookResponse, framed */
        check_str_eq(seen_hook, "PreVMStart");
        check_str_eq(seen_node, "node-1");
        check_str_eq(seen_vmi, "{\"metadata\":{\"name\":\"vm-1\"}}");
        check_int_eq(seen_vmi_len, strlen(seen_vmi));
        /* a VMI bigger than the initial flow-control windows */
        size_t big = 3u << 20;
        char *vmi = xmalloc(big + 1);
        memset(vmi, 'x', big);
        vmi[big] = '\0';
        r = call("PreVMStart", vmi, "node-2");
        check_int_eq(r.grpc_status, 0);
        check_int_eq(seen_vmi_len, big);
        free(vmi);
        stop(s);
}

static void test_handler_errors(void) {
        grpc_server *s = start(0);
        reply r = call("fail-busy", "{}", "n");
        check_reply(&r, 14, NULL); /* UNAVAILABLE */
        check_str_eq(r.message, "vTPM of vm-1 is not running yet: 50% done\n(retry)");
        check_int_eq(r.data_len, 0); /* trailers-only */
        r = call("fail-denied", "{}", "n");
        check_int_eq(r.grpc_status, 7);
        check_str_eq(r.message, "caf\xc3\xa9 denied");
        r = call("fail-quiet", "{}", "n");
        check_reply(&r, 2, "node hook fail-quiet failed: Input/output error");
        stop(s);
}

static void test_refusals(void) {
        grpc_server *s = start(0);
        static const uint8_t empty[] = {0, 0, 0, 0, 0};
        reply r = call_raw("/kubevirt.hooks.plugins.v1alpha1.DomainHookService/MutateDomain", "application/grpc",
                           empty, sizeof(empty));
        check_reply(&r, 12, "unknown method");
        r = call_raw(NODEHOOK_METHOD_PATH, "application/json", empty, sizeof(empty));
        check_int_eq(r.http_status, 415);
        /* "application/grpc+proto" is gRPC too */
        r = call_raw(NODEHOOK_METHOD_PATH, "application/grpc+proto", empty, sizeof(empty));
        check_int_eq(r.grpc_status, 0);

        static const uint8_t compressed[] = {1, 0, 0, 0, 1, 0};
        r = call_raw(NODEHOOK_METHOD_PATH, "application/grpc", compressed, sizeof(compressed));
        check_reply(&r, 3, "compressed");
        static const uint8_t group[] = {0, 0, 0, 0, 1, 0x2b};
        r = call_raw(NODEHOOK_METHOD_PATH, "application/grpc", group, sizeof(group));
        check_reply(&r, 3, "group in field 5");
        check_contains(last_error, "node hook request refused: malformed ExecuteNodeHookRequest");
        static const uint8_t two[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        r = call_raw(NODEHOOK_METHOD_PATH, "application/grpc", two, sizeof(two));
        check_reply(&r, 3, "carries one message");
        static const uint8_t huge[] = {0, 0x01, 0, 0, 1};
        r = call_raw(NODEHOOK_METHOD_PATH, "application/grpc", huge, sizeof(huge));
        check_reply(&r, 8, "over the limit");
        /* the server is still serving */
        r = call("PreVMStart", "{}", "n");
        check_int_eq(r.grpc_status, 0);
        stop(s);
}

static void test_other_uid_cut_off(void) {
        grpc_server *s = start(4242);
        last_error[0] = '\0';
        reply r = call("PreVMStart", "{}", "n");
        check_int_eq(r.http_status, -1);
        check_int_eq(r.grpc_status, -1);
        check(!r.closed);
        check_contains(last_error, "has uid 0, not 4242");
        stop(s);
}

static void *blocking_call(void *p) {
        *(reply *)p = call("block", "{}", "node-b");
        return NULL;
}

static void test_blocking_handler_holds_only_its_connection(void) {
        grpc_server *s = start(0);
        reply rb = {0};
        pthread_t t;
        pthread_create(&t, NULL, blocking_call, &rb);
        pthread_mutex_lock(&lock);
        while (!blocked)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        reply r = call("PreVMStart", "{}", "node-a"); /* while "block" waits */
        check_int_eq(r.grpc_status, 0);
        pthread_mutex_lock(&lock);
        check_str_eq(seen_node, "node-a");
        released = true;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        pthread_join(t, NULL);
        check_int_eq(rb.grpc_status, 0);
        stop(s);
}

static void test_stop_ends_idle_connections(void) {
        grpc_server *s = start(0);
        int fd = dial(); /* connected, says nothing */
        char buf[256];
        /* Served (the server's SETTINGS came), not just in the backlog. */
        check(read(fd, buf, sizeof(buf)) > 0);
        stop(s); /* returns: the idle connection is ended, not waited for */
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0) /* GOAWAY */
                ;
        check_int_eq(n, 0);
        close(fd);
}

int main(void) {
        if (!mkdtemp(top))
                return 1;
        sock_path = xasprintf("%s/hooks/vtpm.sock", top);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_call_ok),
                TAP_CASE(test_handler_errors),
                TAP_CASE(test_refusals),
                TAP_CASE(test_other_uid_cut_off),
                TAP_CASE(test_blocking_handler_holds_only_its_connection),
                TAP_CASE(test_stop_ends_idle_connections),
                {0},
        });
        (void)rm_rf(top, NULL);
        free(sock_path);
        return r;
}
