/* SPDX-License-Identifier: Apache-2.0 */
/* The key broker's HTTPS layer: TLS 1.3 only, the routes of the wire
 * protocol (README "Keys off the nodes", pkg/keys/broker_client.c), bearer
 * tokens, bounded bodies, status codes and the one log line per request.
 * What a token proves and what a request may have are the handler's
 * (agent/broker/broker_service.c in the daemon; a test's own in
 * test/unit/test-agent-broker-http.c).
 *
 * libmicrohttpd with GnuTLS, a small internal thread pool (handlers block on
 * the API server and the key provider), one request per connection, at most
 * BROKER_MAX_BODY bytes of body (413 when Content-Length says more; a
 * chunked body that grows past it has its connection closed), a connection
 * idle for 10 s closed, one that has not sent its whole request 15 s after
 * it was accepted closed too (agent/http_deadline.h), 512 connections at
 * once and 64 from one address.
 *
 * Per request, in this order: unknown path 404; not POST 405; no bearer
 * token 401; handler->authenticate (401 / 503 / 500); the body parsed
 * strictly (broker_request.h; 400); handler->serve (200 / 400 / 403 / 422 /
 * 503 / 500). Error bodies are {"message": "..."}, generic, never quoting the
 * request. The token and every buffer that held the body are wiped. */
#pragma once

#include <jansson.h>

#include "base/error.h"
#include "broker_authz.h"
#include "broker_request.h"

typedef struct broker_server broker_server;

typedef struct broker_handler {
        /* Whose token is this? 0 and *ret; -EACCES: 401; -EHOSTUNREACH: 503
         * (the API server cannot tell now); other: 500. *err is logged. */
        int (*authenticate)(void *userdata, const char *token, broker_peer *ret, vt_error **err);
        /* Answer an authenticated peer's request: 0 and *ret_answer (a JSON
         * object, sent with 200; it may hold a DEK: the server wipes its text);
         * -EINVAL: 400; -EACCES: 403 (placement refused); -EBADMSG: 422
         * (KEYS_UNWRAP_FAILED); -EHOSTUNREACH: 503; other: 500. */
        int (*serve)(void *userdata, const broker_peer *peer, const broker_request *req, json_t **ret_answer,
                     vt_error **err);
        void *userdata;
} broker_handler;

typedef struct broker_server_options {
        const char *listen;    /* "host:port"; port 0 picks one (broker_server_port) */
        const char *cert_file; /* PEM: the certificate (chain) */
        const char *key_file;  /* PEM: its private key */
        unsigned threads;      /* 0: 8 */
        unsigned idle_timeout_sec;    /* no byte moved for this long: closed; 0: 10 */
        unsigned request_timeout_sec; /* the whole request (TLS, headers, body) within; 0: 15 */
} broker_server_options;

int broker_server_start(const broker_server_options *o, const broker_handler *h, broker_server **ret,
                        vt_error **err);
int broker_server_port(const broker_server *s);
/* Stops accepting, waits for the requests under way, frees. NULL is fine. */
void broker_server_stop(broker_server *s);
