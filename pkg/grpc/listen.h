/* SPDX-License-Identifier: Apache-2.0 */
/* The listening Unix socket of a node-hook server, at a path virt-handler
 * (root) dials. Only root may reach it: its directory is root's own and
 * closed to others, so the socket's name cannot be replaced under us and
 * nobody else can connect even in the moment before its mode is set. */
#pragma once

#include "base/error.h"

/* Listen (stream, non-blocking, close-on-exec, `backlog`) at `path`, an
 * absolute path. Its directory is created 0700 if missing (its own parent
 * must exist); an existing one must be a real directory (not a symlink)
 * owned by us and writable by nobody else. A stale socket at `path` is
 * removed; anything else there (a symlink, a file) is refused with -EEXIST.
 * The socket is made 0600. */
int grpc_listen_unix(const char *path, int backlog, int *ret_fd, vt_error **err);
