/* SPDX-License-Identifier: Apache-2.0 */
/* The per-VM state lock: one swtpm per TPM state, cluster-wide, also when a
 * node is cut off from the API server.
 *
 * A Lease `vtpm-state-<vm-uid>` in the agent's namespace names the launcher
 * whose swtpm may write the state ("node/ns/pod/pod-uid"). The node agent
 * holding it renews it every retry period (pkg/kube/lease.c). Fencing:
 *  - the holder measures, on CLOCK_BOOTTIME, the time since the START of its
 *    last successful renewal; when that passes the renew deadline (< the
 *    lease duration) it stops the swtpm (the fence callback) and must have
 *    stopped it before the lease duration has passed;
 *  - a taker never trusts renewTime against its own wall clock: it takes the
 *    record over only when it saw it unchanged for the whole duration on its
 *    own clock, and never while the holder's launcher pod still exists
 *    (StateInUse: the holder may just be slow).
 * So a partitioned node has stopped writing before anyone else can start.
 * The holders' last renewal times are kept in <runDir>/state-leases.json, so
 * an agent restarted on the node keeps the deadline of the one before. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "kube/client.h"

typedef struct state_lock state_lock;

/* What to stop: a swtpm whose lease could not be renewed in time. */
typedef struct state_lock_fence {
        const char *vm_uid;
        const char *identity;     /* the launcher, node/ns/pod/pod-uid */
        pid_t swtpm_pid;
        uint64_t swtpm_start;
        const char *ctrl_via;     /* its control socket, as the agent reaches it */
        usec_t since_renewal;     /* since the last successful renewal was sent */
        usec_t budget;            /* it must be gone within this */
} state_lock_fence;

typedef struct state_lock_options {
        const char *namespace;   /* where the Leases live */
        const char *run_dir;     /* node.runDir: the renewal times */
        usec_t duration;         /* leaseDurationSeconds */
        usec_t renew_deadline;   /* < duration */
        usec_t retry_period;     /* < renew_deadline */
        /* Called on a thread of its own, once per lost lease that has a swtpm. */
        void (*fence)(const state_lock_fence *f, void *userdata);
        void *userdata;
} state_lock_options;

int state_lock_new(kube_client *c, const state_lock_options *o, state_lock **ret, vt_error **err);
/* The renewal and deadline threads. */
int state_lock_start(state_lock *s, vt_error **err);
/* Stops the threads (waits for fences under way). Leases stay held: their
 * swtpm outlive the agent, and the next agent on the node renews them. */
void state_lock_free(state_lock *s);

/* Take the VM's state lock for the launcher `identity`. 0: held, renewed from
 * now on. -EBUSY: another launcher that still exists holds it (*ret_holder).
 * -EINPROGRESS: its holder's launcher is gone, but its lease has not expired
 * by our clock (*ret_holder; *ret_wait: at most this long, unless renewed).
 * Other -errno: API errors. */
int state_lock_acquire(state_lock *s, const char *vm_uid, const char *identity, char **ret_holder,
                       usec_t *ret_wait, vt_error **err);

/* Held, with at least `min_left` until the renew deadline? (Checked before
 * starting swtpm, which takes a while.) */
bool state_lock_fresh(state_lock *s, const char *vm_uid, const char *identity, usec_t min_left);

/* swtpm now runs on the state under this lock: what the fence stops.
 * -ESTALE when the lock was lost meanwhile: stop it yourself, now. */
int state_lock_attach_swtpm(state_lock *s, const char *vm_uid, const char *identity, pid_t pid,
                            uint64_t start_time, const char *ctrl_via);

/* After an agent restart: the previous agent held the lock for this running
 * swtpm; keep renewing it, with the deadline the previous agent had. */
void state_lock_adopt(state_lock *s, const char *vm_uid, const char *identity, pid_t pid, uint64_t start_time,
                      const char *ctrl_via);

/* Was this launcher's swtpm stopped because the lock could not be renewed? */
bool state_lock_fenced(state_lock *s, const char *vm_uid, const char *identity);

/* Does the Lease (as the API server has it now) name this launcher? 1 yes,
 * 0 no, < 0 error. */
int state_lock_names(state_lock *s, const char *vm_uid, const char *identity);

/* Give the lock up (the launcher is gone and its swtpm stopped): the record
 * is released if it is still ours. */
void state_lock_release(state_lock *s, const char *vm_uid, const char *identity);
