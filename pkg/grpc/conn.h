/* SPDX-License-Identifier: Apache-2.0 */
/* One HTTP/2 connection of the node-hook server (server.h): its nghttp2
 * session, the calls on it, the answers. Internal to pkg/grpc. */
#pragma once

#include "server.h"

/* Serve the connected socket fd (non-blocking; the caller closes it) until
 * the peer is done, it idles past o->idle_timeout_ms, or stop_fd becomes
 * readable (then GOAWAY). Problems go to o->on_error. */
void grpc_conn_serve(int fd, const grpc_server_options *o, int stop_fd);

/* Hand a problem to o->on_error, if set. */
void grpc_report(const grpc_server_options *o, int errnum, const char *fmt, ...) _printf_(3, 4);
