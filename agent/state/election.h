/* SPDX-License-Identifier: Apache-2.0 */
/* Why the state controller cannot campaign for its Lease, said once and kept
 * for /readyz. Started by hand against a cluster without its namespace, the
 * agent would otherwise log "state controller running" and then nothing,
 * forever: no VM gets a PVC and no line says why. The elector retries every
 * retry period and the agent leads as soon as the Lease can be written (the
 * namespace created): no restart.
 *
 * What to log is a pure function (election_log_decide) so it can be
 * table-tested: the first failure, a different one, the same one again once
 * ELECTION_RELOG_USEC has passed, and the recovery; nothing else. */
#pragma once

#include <stdbool.h>

#include "base/error.h"
#include "base/timeutil.h"

#define ELECTION_RELOG_USEC (60 * USEC_PER_SEC)

typedef enum election_log {
        ELECTION_LOG_NOTHING,
        ELECTION_LOG_FAILURE,   /* log the failure (error level) */
        ELECTION_LOG_RECOVERED, /* log that the Lease is reachable again (info) */
} election_log;

/* last_msg: the failure last logged (NULL: none outstanding); logged_at: when;
 * msg: this attempt's failure (NULL: it worked). */
election_log election_log_decide(const char *last_msg, usec_t logged_at, const char *msg, usec_t now);

typedef struct state_election state_election;

state_election *state_election_new(const char *namespace, const char *lease_name);
void state_election_free(state_election *e);

/* After each attempt (the elector's thread): err NULL when it worked. Logs as
 * election_log_decide says. */
void state_election_attempt(state_election *e, const vt_error *err, usec_t now);

/* The outstanding failure, for /readyz (caller frees), or NULL. Any thread. */
char *state_election_problem(state_election *e);
