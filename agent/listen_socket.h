/* SPDX-License-Identifier: Apache-2.0 */
/* A listening TCP socket for the agent's servers (agent/http_server.c, the
 * key broker's agent/broker/broker_server.c), from the configuration's
 * "host:port" ("[::1]:9464", ":8443" for every address; port 0 picks one). */
#pragma once

#include "base/error.h"

/* Non-blocking, close-on-exec, SO_REUSEADDR, listening with `backlog`.
 * `what` names the setting in messages ("http.listen"). *ret_port: the port
 * it got (the one asked for, or the one port 0 picked). */
int listen_socket_open(const char *what, const char *listen_addr, int backlog, int *ret_fd, int *ret_port,
                       vt_error **err);
