/* SPDX-License-Identifier: Apache-2.0 */
/* Garbage collection of the per-VM state Leases (agent/state_lock.h):
 * `vtpm-state-<vm uid>` in the agent's namespace, created by the node agents
 * and never deleted by them (a Lease outlives its launcher, so the next one
 * on any node can take it over).
 *
 * The leader sweeps its Lease cache every lease duration. A Lease whose VM
 * uid is in no cached VM, and whose resourceVersion it has seen unchanged
 * for at least twice the lease duration on its own CLOCK_BOOTTIME, is
 * deleted with that resourceVersion as a precondition. A holder renews its
 * Lease every retry period, so a held Lease never stays unchanged that long;
 * a node's wall clock (renewTime) is never compared with ours; and a Lease
 * changed between our look and the delete is left alone by the API server.
 * A new leader starts its observations afresh. */
#pragma once

#include "base/timeutil.h"
#include "context.h"
#include "kube/informer.h"

#define STATE_LEASE_PREFIX "vtpm-state-"

typedef struct state_lease_gc state_lease_gc;

state_lease_gc *state_lease_gc_new(const char *namespace, usec_t lease_duration);
void state_lease_gc_free(state_lease_gc *gc);
/* Forget what was observed (a new term as leader). */
void state_lease_gc_reset(state_lease_gc *gc);
/* How often to sweep. */
usec_t state_lease_gc_period(const state_lease_gc *gc);

/* One sweep at `now` (CLOCK_BOOTTIME) over the caches of Leases and VMs.
 * Returns the number of Leases deleted. */
unsigned state_lease_gc_sweep(state_lease_gc *gc, const state_ctx *ctx, kube_informer *leases, kube_informer *vms,
                              usec_t now);

/* The sweep's judgement, without the API: the Leases `names` (at
 * resourceVersions `rvs`) have no VM at `now`; ret_due[i] says whether
 * names[i] has been seen unchanged for 2 x the lease duration. Leases not in
 * the list are forgotten. */
void state_lease_gc_observe(state_lease_gc *gc, char *const *names, char *const *rvs, size_t n, usec_t now,
                           bool *ret_due);

/* The VM uid a Lease name stands for (borrowed from `name`), or NULL when
 * it is not a per-VM state Lease. */
const char *state_lease_vm_uid(const char *name);
