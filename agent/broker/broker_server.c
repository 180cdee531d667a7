/* SPDX-License-Identifier: Apache-2.0 */
#include "broker_server.h"

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "http_deadline.h"
#include "keys/provider.h"
#include "listen_socket.h"

#define MAX_CONNECTIONS 512u       /* at once, from everywhere */
#define MAX_CONNECTIONS_PER_IP 64u /* a node's agent asks for all its VMs from one address */
#define IDLE_TIMEOUT_SEC 10u       /* no byte moved for this long: closed */
#define REQUEST_TIMEOUT_SEC 15u    /* accepted to whole request received (http_deadline.h) */
#define CONNECTION_MEMORY (32u << 10) /* request line, headers, a chunk of body (more: 431) */
#define DEFAULT_THREADS 8u
#define MAX_PEM (64u << 10)
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3"

struct broker_server {
        struct MHD_Daemon *daemon;
        http_deadline *deadline;
        broker_handler h;
        int port;
        char *cert, *key; /* PEM, NUL-terminated; the key is wiped at stop */
        size_t key_len;
};

/* One request (one per connection). */
typedef struct request {
        int op;      /* broker_op */
        bool done;   /* answered before its body: take no more of it */
        vt_buf body; /* sensitive: a wrap request holds a DEK */
} request;

/* What the log line says about a request. */
typedef struct outcome {
        const char *op;
        broker_peer peer;
        broker_request req;
        unsigned status;
        const char *verdict;
        vt_error *err;
} outcome;

static void wipe_free(void *p) {
        if (p) {
                OPENSSL_cleanse(p, strlen(p));
                free(p);
        }
}

/* body: allocated NUL-terminated text, handed over; wiped when sent. */
static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, char *body) {
        struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(strlen(body), body, wipe_free);
        if (!r) {
                wipe_free(body);
                return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        /* One request per connection: an idle keep-alive connection holds no slot. */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "POST");
        enum MHD_Result ret = MHD_queue_response(c, code, r);
        MHD_destroy_response(r);
        return ret;
}

static char *message_body(const char *msg) {
        json_t *j = json_pack("{s:s}", "message", msg);
        char *t = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return t ? t : xstrdup("{}");
}

static void log_outcome(const outcome *o) {
        enum log_level lvl = o->status == 200 ? LOG_LEVEL_INFO : o->status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN;
        char status[8];
        snprintf(status, sizeof(status), "%u", o->status);
        log_kv(lvl, "key broker request", "op", o->op, "node", o->peer.node, "agentPod", o->peer.pod, "namespace",
               o->req.ns, "vm", o->req.vm, "launcherUid", o->req.launcher_uid, "status", status, "verdict",
               o->verdict, "reason", o->err ? o->err->msg : NULL, NULL);
}

/* The answer to a request refused before it reached the handler. */
static enum MHD_Result early_answer(struct MHD_Connection *c, request *rq, unsigned code, const char *verdict,
                                    const char *msg) {
        outcome o = {.op = rq->op >= 0 ? broker_op_name(rq->op) : NULL, .status = code, .verdict = verdict};
        log_outcome(&o);
        rq->done = true;
        return respond(c, code, message_body(msg));
}

static enum MHD_Result first_call(struct MHD_Connection *c, const char *url, const char *method, void **req_cls) {
        request *rq = xnew(request, 1);
        rq->op = broker_op_from_path(url);
        rq->body.sensitive = true;
        *req_cls = rq;
        if (rq->op < 0)
                return early_answer(c, rq, MHD_HTTP_NOT_FOUND, "not found", "not found");
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
                return early_answer(c, rq, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", "only POST");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > BROKER_MAX_BODY)
                return early_answer(c, rq, MHD_HTTP_CONTENT_TOO_LARGE, "too large", "request body too large");
        return MHD_YES;
}

/* "Bearer <token>": the token, or NULL. */
static const char *bearer(const char *auth) {
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
                return NULL;
        const char *t = auth + 7;
        while (*t == ' ')
                t++;
        if (!*t)
                return NULL;
        for (const char *p = t; *p; p++)
                if (*p <= 0x20 || *p >= 0x7f)
                        return NULL;
        return t;
}

static unsigned status_of_serve(int r, const char **verdict) {
        switch (r) {
        case -EINVAL:
                *verdict = "bad request";
                return MHD_HTTP_BAD_REQUEST;
        case -EACCES:
                *verdict = "refused";
                return MHD_HTTP_FORBIDDEN;
        case -EBADMSG:
                *verdict = "unwrap failed";
                return MHD_HTTP_UNPROCESSABLE_CONTENT;
        case -EHOSTUNREACH:
                *verdict = "unavailable";
                return MHD_HTTP_SERVICE_UNAVAILABLE;
        default:
                *verdict = "error";
                return MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
}

static const char *status_message(unsigned code) {
        switch (code) {
        case MHD_HTTP_UNAUTHORIZED:
                return "unauthenticated";
        case MHD_HTTP_FORBIDDEN:
                return "key access refused";
        case MHD_HTTP_UNPROCESSABLE_CONTENT:
                return KEYS_UNWRAP_FAILED;
        case MHD_HTTP_SERVICE_UNAVAILABLE:
                return "the key provider or the API server is unavailable; retry";
        case MHD_HTTP_BAD_REQUEST:
                return "malformed request";
        default:
                return "internal error";
        }
}

/* Token, body, handler: the status, and on 200 *ret_text (wiped when sent). */
static unsigned process(broker_server *s, struct MHD_Connection *c, request *rq, outcome *o, char **ret_text) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const char *token = bearer(auth);
        o->verdict = "unauthenticated";
        int r = token ? s->h.authenticate(s->h.userdata, token, &o->peer, &o->err)
                      : vt_error_set(&o->err, EACCES, "no bearer token");
        /* The header lives in the connection's buffer (writable memory that
         * libmicrohttpd hands out as const): nothing reads it after this. */
        if (auth)
                OPENSSL_cleanse((char *)auth, strlen(auth));
        if (r < 0) {
                if (r == -EACCES)
                        return MHD_HTTP_UNAUTHORIZED;
                return status_of_serve(r == -EHOSTUNREACH ? r : -EIO, &o->verdict);
        }
        r = broker_request_parse(rq->op, rq->body.data, rq->body.len, &o->req, &o->err);
        vt_buf_wipe(&rq->body);
        if (r < 0) {
                o->verdict = "bad request";
                return MHD_HTTP_BAD_REQUEST;
        }
        json_t *a = NULL;
        r = s->h.serve(s->h.userdata, &o->peer, &o->req, &a, &o->err);
        if (r < 0)
                return status_of_serve(r, &o->verdict);
        *ret_text = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        if (!*ret_text) {
                o->verdict = "error";
                return MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
        o->verdict = "ok";
        return MHD_HTTP_OK;
}

static enum MHD_Result answer(broker_server *s, struct MHD_Connection *c, request *rq) {
        outcome o = {.op = broker_op_name(rq->op)};
        char *text = NULL;
        o.status = process(s, c, rq, &o, &text);
        log_outcome(&o);
        if (o.status != MHD_HTTP_OK) {
                const char *m = status_message(o.status);
                /* A parser's message says what is wrong, never what was sent. */
                _cleanup_free_ char *m400 = o.status == MHD_HTTP_BAD_REQUEST && o.err
                                                    ? xasprintf("%s: %s", m, o.err->msg)
                                                    : NULL;
                text = message_body(m400 ? m400 : m);
        }
        broker_peer_done(&o.peer);
        broker_request_done(&o.req);
        vt_error_free(o.err);
        rq->done = true;
        return respond(c, o.status, text);
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **req_cls) {
        broker_server *s = cls;
        request *rq = *req_cls;
        if (!rq)
                return first_call(c, url, method, req_cls);
        if (rq->done)
                return MHD_NO; /* answered already; the rest of the body is not read */
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;
                bool fits = rq->body.len + n <= BROKER_MAX_BODY;
                if (fits)
                        vt_buf_append(&rq->body, upload_data, n);
                /* The chunk sits in the connection's read buffer: wipe it there too. */
                OPENSSL_cleanse((char *)upload_data, n);
                *upload_data_size = 0;
                if (fits)
                        return MHD_YES;
                /* Chunked and too large (Content-Length was checked): the
                 * connection is closed without an answer. */
                rq->done = true;
                log_outcome(&(outcome){.op = broker_op_name(rq->op), .status = MHD_HTTP_CONTENT_TOO_LARGE,
                                       .verdict = "too large (connection closed)"});
                return MHD_NO;
        }
        /* The request is complete: from now on the time is the handler's. */
        http_deadline_exempt(s->deadline, c);
        return answer(s, c, rq);
}

static void request_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                              enum MHD_RequestTerminationCode toe) {
        request *rq = *req_cls;
        if (!rq)
                return;
        vt_buf_wipe(&rq->body);
        free(rq);
        *req_cls = NULL;
}

static void server_free(broker_server *s) {
        http_deadline_free(s->deadline);
        if (s->key)
                OPENSSL_cleanse(s->key, s->key_len);
        free(s->key);
        free(s->cert);
        free(s);
}

static int load_pems(broker_server *s, const broker_server_options *o, vt_error **err) {
        int r = read_full_file(o->cert_file, MAX_PEM, &s->cert, NULL, err);
        if (r < 0)
                return vt_error_prefix(err, r, "the key broker's certificate: ");
        r = read_full_file(o->key_file, MAX_PEM, &s->key, &s->key_len, err);
        if (r < 0)
                return vt_error_prefix(err, r, "the key broker's private key: ");
        return 0;
}

int broker_server_start(const broker_server_options *o, const broker_handler *h, broker_server **ret,
                        vt_error **err) {
        assert_return(o && o->listen && o->cert_file && o->key_file && h && h->authenticate && h->serve && ret,
                      -EINVAL);
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
                return vt_error_set(err, EOPNOTSUPP, "libmicrohttpd was built without TLS: no key broker");
        broker_server *s = xnew(broker_server, 1);
        s->h = *h;
        s->deadline = http_deadline_new((o->request_timeout_sec ? o->request_timeout_sec : REQUEST_TIMEOUT_SEC) *
                                        USEC_PER_SEC);
        int r = load_pems(s, o, err);
        int fd = -1;
        if (r >= 0)
                r = listen_socket_open("broker.listen", o->listen, (int)MAX_CONNECTIONS, &fd, &s->port, err);
        if (r < 0) {
                server_free(s);
                return r;
        }
        /* No MHD_USE_ERROR_LOG: the library stays quiet; we log. The
         * listening socket is libmicrohttpd's from here (also on failure). */
        unsigned threads = o->threads ? o->threads : DEFAULT_THREADS;
        unsigned idle = o->idle_timeout_sec ? o->idle_timeout_sec : IDLE_TIMEOUT_SEC;
        s->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TLS, 0, NULL, NULL, access_handler, s,
                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
                MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT, MAX_CONNECTIONS_PER_IP,
                MHD_OPTION_CONNECTION_TIMEOUT, idle,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY, MHD_OPTION_STRICT_FOR_CLIENT, 1,
                MHD_OPTION_HTTPS_MEM_CERT, s->cert, MHD_OPTION_HTTPS_MEM_KEY, s->key, MHD_OPTION_HTTPS_PRIORITIES,
                TLS_PRIORITIES, MHD_OPTION_NOTIFY_COMPLETED, request_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
                http_deadline_notify, s->deadline, MHD_OPTION_END);
        if (!s->daemon) {
                server_free(s);
                return vt_error_set(err, EIO,
                                    "cannot start the key broker on %s (is the certificate and key a valid PEM pair?)",
                                    o->listen);
        }
        *ret = s;
        return 0;
}

int broker_server_port(const broker_server *s) {
        return s->port;
}

void broker_server_stop(broker_server *s) {
        if (!s)
                return;
        MHD_stop_daemon(s->daemon);
        server_free(s);
}
