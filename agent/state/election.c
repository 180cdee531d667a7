/* SPDX-License-Identifier: Apache-2.0 */
#include "election.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"

struct state_election {
        char *lease; /* "namespace/name", as the log and /readyz name it */
        pthread_mutex_t lock;
        char *problem;    /* the outstanding failure as /readyz says it, or NULL */
        char *logged_msg; /* the error last logged, or NULL */
        usec_t logged_at;
};

election_log election_log_decide(const char *last_msg, usec_t logged_at, const char *msg, usec_t now) {
        if (!msg)
                return last_msg ? ELECTION_LOG_RECOVERED : ELECTION_LOG_NOTHING;
        if (!last_msg || strcmp(last_msg, msg) != 0 || now - logged_at >= ELECTION_RELOG_USEC)
                return ELECTION_LOG_FAILURE;
        return ELECTION_LOG_NOTHING;
}

state_election *state_election_new(const char *namespace, const char *lease_name) {
        state_election *e = xnew(state_election, 1);
        e->lease = xasprintf("%s/%s", namespace, lease_name);
        pthread_mutex_init(&e->lock, NULL);
        return e;
}

void state_election_free(state_election *e) {
        if (!e)
                return;
        pthread_mutex_destroy(&e->lock);
        free(e->lease);
        free(e->problem);
        free(e->logged_msg);
        free(e);
}

void state_election_attempt(state_election *e, const vt_error *err, usec_t now) {
        const char *msg = err ? err->msg : NULL;
        election_log what = election_log_decide(e->logged_msg, e->logged_at, msg, now);
        if (what == ELECTION_LOG_FAILURE) {
                /* The API server's NotFound for a create names the missing namespace. */
                const char *hint = err->code == ENOENT ? "does the agent's namespace exist? (manifests/namespace.yaml; "
                                                         "the agent leads once it does, no restart needed)"
                                                       : NULL;
                log_kv(LOG_LEVEL_ERROR, "the state controller cannot campaign for its Lease: no VM gets a state PVC "
                                        "until it can",
                       "lease", e->lease, "error", msg, hint ? "hint" : NULL, hint, NULL);
                free(e->logged_msg);
                e->logged_msg = xstrdup(msg);
                e->logged_at = now;
        } else if (what == ELECTION_LOG_RECOVERED) {
                log_kv(LOG_LEVEL_INFO, "the state controller's Lease is reachable again", "lease", e->lease, NULL);
                free(e->logged_msg);
                e->logged_msg = NULL;
        }
        pthread_mutex_lock(&e->lock);
        free(e->problem);
        e->problem = msg ? xasprintf("the state controller cannot campaign for its Lease %s: %s", e->lease, msg) : NULL;
        pthread_mutex_unlock(&e->lock);
}

char *state_election_problem(state_election *e) {
        pthread_mutex_lock(&e->lock);
        char *p = e->problem ? xstrdup(e->problem) : NULL;
        pthread_mutex_unlock(&e->lock);
        return p;
}
