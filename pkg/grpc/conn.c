/* SPDX-License-Identifier: Apache-2.0 */
#include "conn.h"

#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "frame.h"
#include "status.h"

/* virt-handler makes one call per connection; a few more cost nothing, and
 * each may buffer a message of up to 16 MiB. */
#define MAX_STREAMS 4u
#define WINDOW (1u << 20) /* a VMI of a few hundred KiB in a round trip or two */
#define MAX_GRPC_MESSAGE_HEADER 1024u
#define READ_CHUNK (16u << 10)

typedef struct stream {
        bool post, grpc, method_known, too_large;
        vt_buf body; /* the request's DATA: one framed message */
        size_t sent; /* bytes of the empty response message sent */
} stream;

typedef struct conn {
        const grpc_server_options *o;
        nghttp2_session *session;
        int32_t *ready; /* streams whose request is complete, to answer */
        size_t n_ready, ready_cap;
} conn;

void grpc_report(const grpc_server_options *o, int errnum, const char *fmt, ...) {
        if (!o->on_error)
                return;
        va_list ap;
        va_start(ap, fmt);
        vt_error e = {.code = errnum, .msg = xvasprintf(fmt, ap)};
        va_end(ap);
        o->on_error(&e, o->userdata);
        free(e.msg);
}

static bool name_is(const uint8_t *p, size_t n, const char *s) {
        return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* "application/grpc", optionally "+proto" or ";params" (PROTOCOL-HTTP2.md). */
static bool grpc_content_type(const uint8_t *v, size_t n) {
        static const char ct[] = "application/grpc";
        size_t k = sizeof(ct) - 1;
        return n >= k && memcmp(v, ct, k) == 0 && (n == k || v[k] == '+' || v[k] == ';');
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
                nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, xnew(stream, 1));
        return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
        stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!st || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0; /* the client's trailers, if any: nothing in them matters */
        if (name_is(name, namelen, ":method"))
                st->post = name_is(value, valuelen, "POST");
        else if (name_is(name, namelen, ":path"))
                st->method_known = name_is(value, valuelen, NODEHOOK_METHOD_PATH);
        else if (name_is(name, namelen, "content-type"))
                st->grpc = grpc_content_type(value, valuelen);
        return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *ud) {
        stream *st = nghttp2_session_get_stream_user_data(session, stream_id);
        if (!st || st->too_large)
                return 0;
        /* Over the limit the rest is dropped as it comes, not held. */
        if (st->body.len + len > GRPC_FRAME_HEADER + GRPC_MAX_MESSAGE) {
                st->too_large = true;
                vt_buf_free(&st->body);
                return 0;
        }
        vt_buf_append(&st->body, data, len);
        return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        conn *c = ud;
        if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
            !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
            !nghttp2_session_get_stream_user_data(session, frame->hd.stream_id))
                return 0;
        c->ready = xgrow(c->ready, &c->ready_cap, c->n_ready + 1, sizeof(*c->ready));
        c->ready[c->n_ready++] = frame->hd.stream_id;
        return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *ud) {
        stream *st = nghttp2_session_get_stream_user_data(session, stream_id);
        if (st) {
                vt_buf_free(&st->body);
                free(st);
        }
        return 0;
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

/* The empty ExecuteNodeHookResponse, framed (5 zero bytes), then the trailers. */
static ssize_t read_response(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                             uint32_t *data_flags, nghttp2_data_source *source, void *ud) {
        stream *st = source->ptr;
        size_t n = MIN(length, GRPC_FRAME_HEADER - st->sent);
        memset(buf, 0, n);
        st->sent += n;
        if (st->sent == GRPC_FRAME_HEADER) {
                *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                const nghttp2_nv trailers[] = {NV("grpc-status", "0")};
                if (nghttp2_submit_trailer(session, stream_id, trailers, ELEMENTSOF(trailers)) != 0)
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
}

static void answer_ok(conn *c, int32_t id, stream *st) {
        const nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
        nghttp2_data_provider data = {.source.ptr = st, .read_callback = read_response};
        (void)nghttp2_submit_response(c->session, id, hdrs, ELEMENTSOF(hdrs), &data);
}

/* Trailers-only: the status in the one HEADERS frame, which ends the stream. */
static void answer_status(conn *c, int32_t id, grpc_status code, const char *msg) {
        char num[12];
        snprintf(num, sizeof(num), "%d", (int)code);
        _cleanup_(vt_buf_free) vt_buf m = {0};
        grpc_message_encode(msg, MAX_GRPC_MESSAGE_HEADER, &m);
        const nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                                   NV("grpc-status", num), NV("grpc-message", m.data ? m.data : "")};
        (void)nghttp2_submit_response(c->session, id, hdrs, ELEMENTSOF(hdrs), NULL);
}

static void answer_http(conn *c, int32_t id, const char *status) {
        const nghttp2_nv hdrs[] = {NV(":status", status)};
        (void)nghttp2_submit_response(c->session, id, hdrs, ELEMENTSOF(hdrs), NULL);
}

/* The request's message, decoded; a negative errno and *err when it is not one. */
static int request_of(const stream *st, nodehook_request *ret, vt_error **err) {
        if (st->too_large)
                return vt_error_set(err, EMSGSIZE, "request over the limit of %u bytes", GRPC_MAX_MESSAGE);
        const uint8_t *msg = NULL;
        size_t len = 0, used = 0;
        int r = grpc_frame_parse((const uint8_t *)st->body.data, st->body.len, GRPC_MAX_MESSAGE, &msg, &len,
                                 &used, err);
        if (r < 0)
                return r;
        if (used != st->body.len)
                return vt_error_set(err, EBADMSG, "a unary request carries one message; this one carries more");
        return nodehook_request_decode(msg, len, ret, err);
}

static void answer_call(conn *c, int32_t id, stream *st) {
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_(nodehook_request_done) nodehook_request req = {0};
        int r = request_of(st, &req, &err);
        vt_buf_free(&st->body);
        if (r < 0) {
                const char *m = err ? err->msg : "malformed request";
                grpc_report(c->o, -r, "node hook request refused: %s", m);
                answer_status(c, id, grpc_status_from_errno(r), m);
                return;
        }
        r = c->o->handler(&req, c->o->userdata, &err);
        if (r >= 0) {
                answer_ok(c, id, st);
                return;
        }
        _cleanup_free_ char *fallback =
                err ? NULL : xasprintf("node hook %s failed: %s", req.hook_point, strerror(-r));
        answer_status(c, id, grpc_status_from_errno(r), err ? err->msg : fallback);
}

static void answer(conn *c, int32_t id, stream *st) {
        if (!st->post)
                answer_http(c, id, "405");
        else if (!st->grpc)
                answer_http(c, id, "415");
        else if (!st->method_known)
                answer_status(c, id, GRPC_STATUS_UNIMPLEMENTED,
                              "unknown method: this server has only " NODEHOOK_METHOD_PATH);
        else
                answer_call(c, id, st);
}

/* Write all of p within the idle timeout; false on error, stop or timeout. */
static bool write_all(int fd, const uint8_t *p, size_t n, int stop_fd, int timeout_ms) {
        while (n > 0) {
                ssize_t w = send(fd, p, n, MSG_NOSIGNAL); /* a peer gone is an error, not SIGPIPE */
                if (w > 0) {
                        p += w, n -= (size_t)w;
                        continue;
                }
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                        return false;
                struct pollfd pf[2] = {{fd, POLLOUT, 0}, {stop_fd, POLLIN, 0}};
                int k = poll(pf, 2, timeout_ms);
                if (k == 0 || pf[1].revents || (k < 0 && errno != EINTR))
                        return false;
        }
        return true;
}

static bool flush(conn *c, int fd, int stop_fd) {
        for (;;) {
                const uint8_t *data = NULL;
                ssize_t n = nghttp2_session_mem_send(c->session, &data);
                if (n < 0) {
                        grpc_report(c->o, EPROTO, "node hook connection: %s", nghttp2_strerror((int)n));
                        return false;
                }
                if (n == 0)
                        return true;
                if (!write_all(fd, data, (size_t)n, stop_fd, (int)c->o->idle_timeout_ms))
                        return false;
        }
}

static void answer_ready(conn *c) {
        for (size_t i = 0; i < c->n_ready; i++) {
                stream *st = nghttp2_session_get_stream_user_data(c->session, c->ready[i]);
                if (st) /* else reset by the client meanwhile */
                        answer(c, c->ready[i], st);
        }
        c->n_ready = 0;
}

static nghttp2_session *session_new(conn *c) {
        nghttp2_session_callbacks *cb = NULL;
        nghttp2_session *s = NULL;
        if (nghttp2_session_callbacks_new(&cb) != 0)
                abort(); /* out of memory, as xmalloc */
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        if (nghttp2_session_server_new(&s, cb, c) != 0)
                abort();
        nghttp2_session_callbacks_del(cb);
        const nghttp2_settings_entry settings[] = {
                {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS},
                {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW},
        };
        (void)nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, settings, ELEMENTSOF(settings));
        (void)nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, (int32_t)WINDOW * MAX_STREAMS);
        return s;
}

void grpc_conn_serve(int fd, const grpc_server_options *o, int stop_fd) {
        conn c = {.o = o};
        c.session = session_new(&c);
        _cleanup_free_ uint8_t *buf = xmalloc(READ_CHUNK);
        while (flush(&c, fd, stop_fd) &&
               (nghttp2_session_want_read(c.session) || nghttp2_session_want_write(c.session))) {
                struct pollfd pf[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
                int k = poll(pf, 2, (int)o->idle_timeout_ms);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break; /* idle, or poll failed */
                if (pf[1].revents) {
                        (void)nghttp2_session_terminate_session(c.session, NGHTTP2_NO_ERROR);
                        (void)flush(&c, fd, -1);
                        break;
                }
                ssize_t n = read(fd, buf, READ_CHUNK);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (n <= 0)
                        break; /* the peer is gone */
                ssize_t used = nghttp2_session_mem_recv(c.session, buf, (size_t)n);
                if (used < 0) {
                        grpc_report(c.o, EPROTO, "node hook connection: %s", nghttp2_strerror((int)used));
                        break;
                }
                answer_ready(&c);
        }
        nghttp2_session_del(c.session);
        free(c.ready);
}
