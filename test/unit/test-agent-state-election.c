/* SPDX-License-Identifier: Apache-2.0 */
/* state/election.c: what the state controller says about its Lease. Every
 * failure is said once, a different one at once, the same one again only
 * after ELECTION_RELOG_USEC, and the recovery once; /readyz carries the
 * outstanding failure until an attempt works. */
#include <errno.h>
#include <stdlib.h>

#include "state/election.h"
#include "tap.h"

#define S USEC_PER_SEC
#define NS_MISSING "namespaces \"vtpm-system\" not found"

static void test_decide(void) {
        static const struct {
                const char *last, *msg;
                usec_t logged_at, now;
                election_log want;
        } rows[] = {
                {NULL, NULL, 0, 5 * S, ELECTION_LOG_NOTHING},                          /* works, as before */
                {NULL, NS_MISSING, 0, 5 * S, ELECTION_LOG_FAILURE},                    /* first failure */
                {NS_MISSING, NS_MISSING, 5 * S, 7 * S, ELECTION_LOG_NOTHING},          /* same, 2 s later */
                {NS_MISSING, NS_MISSING, 5 * S, 5 * S + ELECTION_RELOG_USEC - 1, ELECTION_LOG_NOTHING},
                {NS_MISSING, NS_MISSING, 5 * S, 5 * S + ELECTION_RELOG_USEC, ELECTION_LOG_FAILURE}, /* a reminder */
                {NS_MISSING, "leases is forbidden", 5 * S, 7 * S, ELECTION_LOG_FAILURE}, /* a different one */
                {NS_MISSING, NULL, 5 * S, 9 * S, ELECTION_LOG_RECOVERED},               /* the namespace exists */
        };
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
                check_int_eq(election_log_decide(rows[i].last, rows[i].logged_at, rows[i].msg, rows[i].now),
                             rows[i].want);
}

static void test_problem(void) {
        state_election *e = state_election_new("vtpm-system", "vtpm-agent-state-controller");
        check(state_election_problem(e) == NULL);
        vt_error missing = {.code = ENOENT, .msg = (char *)NS_MISSING};
        state_election_attempt(e, &missing, 5 * S);
        char *p = state_election_problem(e);
        check_contains(p, "vtpm-system/vtpm-agent-state-controller");
        check_contains(p, NS_MISSING);
        free(p);
        state_election_attempt(e, &missing, 7 * S); /* still failing: still reported */
        p = state_election_problem(e);
        check(p != NULL);
        free(p);
        state_election_attempt(e, NULL, 9 * S); /* it worked */
        check(state_election_problem(e) == NULL);
        state_election_free(e);
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_decide), TAP_CASE(test_problem), {0}});
}
