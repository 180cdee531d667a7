/* SPDX-License-Identifier: Apache-2.0 */
/* A gRPC server for one unary method, KubeVirt's node hook
 * (NodeHookService/ExecuteNodeHook, nodehook.h), over HTTP/2 without TLS
 * (nghttp2) on a listening Unix socket: what virt-handler dials for an
 * admin-installed Plugin.
 *
 * Each connection is served by a thread of its own, so a handler that blocks
 * (until a vTPM runs) delays only its own connection; virt-handler dials one
 * per call. The calls of one connection are answered one after the other.
 * Only peers whose SO_PEERCRED uid is `allow_uid` are served.
 *
 * Answers: OK with an empty ExecuteNodeHookResponse; the handler's error as
 * trailers-only with grpc-status (grpc_status_from_errno()) and its message
 * as grpc-message, which KubeVirt shows; an undecodable request
 * INVALID_ARGUMENT (RESOURCE_EXHAUSTED over 16 MiB); any other path
 * UNIMPLEMENTED; not POST or not application/grpc: HTTP 405 or 415.
 * grpc-timeout is not read: the client gives up by itself and resets the
 * stream, and the handler bounds its own time. */
#pragma once

#include <sys/types.h>

#include "base/error.h"
#include "nodehook.h"

/* Runs on the connection's thread; may block. 0, or a negative errno with
 * *err's message for the client (no secrets: it reaches KubeVirt's events). */
typedef int (*grpc_nodehook_handler)(const nodehook_request *req, void *userdata, vt_error **err);
/* Optional: what the server could not serve (a refused peer, a request that
 * did not decode, a broken connection), for the caller to log. */
typedef void (*grpc_server_error_fn)(const vt_error *e, void *userdata);

typedef struct grpc_server_options {
        grpc_nodehook_handler handler;
        grpc_server_error_fn on_error;
        void *userdata;           /* for both */
        uid_t allow_uid;          /* 0: root, virt-handler's uid */
        unsigned max_connections; /* at once; 0: 64. More are closed at once */
        unsigned idle_timeout_ms; /* a connection with nothing received for this long is closed; 0: 120 s */
} grpc_server_options;

typedef struct grpc_server grpc_server;

/* Serve on listen_fd (a listening stream socket; it stays the caller's and
 * must outlive the server) from a thread of the server's own. */
int grpc_server_start(int listen_fd, const grpc_server_options *o, grpc_server **ret, vt_error **err);
/* Stop accepting, end every connection (GOAWAY) and wait for their threads:
 * a handler running is waited for, so a blocking handler should watch the
 * caller's own stop (base/stopper.h). NULL: nothing. */
void grpc_server_stop(grpc_server *s);
