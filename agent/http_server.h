/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's small HTTP endpoint: /metrics, /healthz, /readyz, served by
 * libmicrohttpd from one event loop on its own thread. One request per
 * connection, GET and HEAD only, headers up to a few KiB. A connection that
 * moves no byte for 3 s, or is still open 5 s after it was accepted, is
 * closed; at most 256 connections at once and 16 from one address. So a slow or idle
 * client costs one slot for a few seconds and never delays a kubelet probe. */
#pragma once

#include <stdbool.h>

#include "base/error.h"
#include "metrics/metrics.h"

typedef struct http_server http_server;

/* Answers for /healthz and /readyz: true for 200, false for 503. The probe
 * may set *ret_detail to an allocated explanation, which the server frees. */
typedef bool (*http_probe_fn)(void *userdata, char **ret_detail);

/* listen: "host:port" (port 0 picks one; see http_server_port). */
int http_server_start(const char *listen, vt_metrics *metrics, http_probe_fn healthz, http_probe_fn readyz,
                      void *userdata, http_server **ret, vt_error **err);
int http_server_port(http_server *s);
void http_server_stop(http_server *s);
