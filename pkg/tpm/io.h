/* SPDX-License-Identifier: Apache-2.0 */
/* Inside pkg/tpm: moving bytes over swtpm's control sockets with a deadline
 * (CLOCK_MONOTONIC), whether the fd is blocking or not. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/timeutil.h"

/* Until fd is ready for `events` (POLLIN, POLLOUT): 0, or -ETIMEDOUT at the
 * deadline, or -errno. */
int tpm_io_wait(int fd, short events, usec_t deadline);

/* Exactly n bytes sent (sending) or received: 0; -EPIPE when the peer closed
 * first, -ETIMEDOUT at the deadline, other -errno. */
int tpm_io_xfer(int fd, void *p, size_t n, bool sending, usec_t deadline);
