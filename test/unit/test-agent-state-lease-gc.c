/* SPDX-License-Identifier: Apache-2.0 */
/* state/lease_gc.c: which per-VM state Leases are due for deletion. A Lease
 * of no VM goes once its resourceVersion has been seen unchanged for twice
 * the lease duration on the agent's own clock; any change starts over. */
#include "state/lease_gc.h"
#include "tap.h"

#define S USEC_PER_SEC
#define D (15 * S)

static bool due_one(state_lease_gc *gc, const char *name, const char *rv, usec_t now) {
        char *names[] = {(char *)name}, *rvs[] = {(char *)rv};
        bool due = true;
        state_lease_gc_observe(gc, names, rvs, 1, now, &due);
        return due;
}

static void test_timing(void) {
        state_lease_gc *gc = state_lease_gc_new("vtpm-system", D);
        const char *a = "vtpm-state-0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e01";
        usec_t t0 = 1000 * S;
        check(!due_one(gc, a, "10", t0));           /* first seen without its VM */
        check(!due_one(gc, a, "10", t0 + 2 * D - 1)); /* not quite twice the duration */
        check(due_one(gc, a, "10", t0 + 2 * D));      /* unchanged for 2 x duration: due */
        /* Changed (renewed, released, taken): the wait starts over. */
        check(!due_one(gc, a, "11", t0 + 2 * D + S));
        check(!due_one(gc, a, "11", t0 + 4 * D));
        check(due_one(gc, a, "11", t0 + 4 * D + S));
        /* Its VM came back into the cache (a sweep without it): forgotten. */
        state_lease_gc_observe(gc, NULL, NULL, 0, t0 + 5 * D, NULL);
        check(!due_one(gc, a, "11", t0 + 6 * D));
        /* A new term as leader: observations start afresh. */
        state_lease_gc_reset(gc);
        check(!due_one(gc, a, "11", t0 + 10 * D));
        check(due_one(gc, a, "11", t0 + 12 * D));
        check_int_eq(state_lease_gc_period(gc), D);
        state_lease_gc_free(gc);
}

static void test_names(void) {
        check_str_eq(state_lease_vm_uid("vtpm-state-0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e01"),
                     "0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e01");
        check(state_lease_vm_uid("vtpm-agent-state-controller") == NULL); /* the leader's Lease */
        check(state_lease_vm_uid("vtpm-state-not-a-vm-uid") == NULL);
        check(state_lease_vm_uid("vtpm-state-0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e0") == NULL);   /* 35 characters */
        check(state_lease_vm_uid("vtpm-state-0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e01x") == NULL); /* 37 */
        check(state_lease_vm_uid("vtpm-state-0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9eZZ") == NULL);
        check(state_lease_vm_uid("other-0b5c7b1e-7d1c-4b0e-9a43-2f1f6c0d9e01") == NULL);
        check(state_lease_vm_uid(NULL) == NULL);
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_timing), TAP_CASE(test_names), {0}});
}
