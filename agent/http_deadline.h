/* SPDX-License-Identifier: Apache-2.0 */
/* A whole-request deadline for a libmicrohttpd daemon, whether it runs its
 * own threads (the key broker's thread pool) or is polled from one of ours
 * (http_server.c: there the deadline bounds the whole exchange, nothing is
 * exempted). libmicrohttpd has only an idle timeout,
 * which a client sending one byte a second never meets: a few hundred such
 * connections would hold every slot and stop every VM start in the cluster.
 * So a connection that has not delivered its whole request (TLS handshake,
 * headers, body) within the deadline after it was accepted is shut down.
 * Once the request is complete (http_deadline_exempt), the time is the
 * handler's (bounded by its own calls' timeouts), not the client's.
 *
 * Pass http_deadline_notify as MHD_OPTION_NOTIFY_CONNECTION with the
 * http_deadline as its closure. libmicrohttpd reports a connection closed
 * before it closes its socket, and both that report and the cutting happen
 * under one lock, so a socket number reused by a new connection is never
 * shut down by mistake. */
#pragma once

#include <microhttpd.h>

#include "base/timeutil.h"

typedef struct http_deadline http_deadline;

/* Starts the watching thread. */
http_deadline *http_deadline_new(usec_t deadline);
/* Stops it. Call after MHD_stop_daemon() (which reports every connection
 * closed). NULL is fine. */
void http_deadline_free(http_deadline *d);

void http_deadline_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);
/* The request on c is complete: no deadline from now on. */
void http_deadline_exempt(http_deadline *d, struct MHD_Connection *c);
