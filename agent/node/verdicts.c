/* SPDX-License-Identifier: Apache-2.0 */
/* Each launcher's verdict, for KubeVirt's PreVMStart node hook
 * (node_controller_wait_vtpm, agent/kubevirt_hook.c): does its vTPM run, and
 * if not, why. A launcher's record belongs to the worker reconciling it; the
 * hook's threads read this table instead, under nc->lock, and wake on its
 * condition variable the moment a reconcile publishes. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "node/node.h"

typedef struct verdict {
        bool running;
        char *reason; /* the last nodeState's reason, or NULL */
        char *why;    /* and its message, or NULL */
} verdict;

static void verdict_free(void *p) {
        verdict *v = p;
        if (v) {
                free(v->reason);
                free(v->why);
                free(v);
        }
}

void verdicts_init(node_controller *nc) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&nc->verdict_changed, &ca);
        pthread_condattr_destroy(&ca);
        nc->verdicts = vt_hashmap_new(verdict_free);
}

void verdicts_done(node_controller *nc) {
        vt_hashmap_free(nc->verdicts);
        pthread_cond_destroy(&nc->verdict_changed);
}

/* After a reconcile of `l`, on its worker: running means a swtpm of ours
 * serves this launcher and no fence stopped it. */
void verdict_publish(node_controller *nc, const launcher *l) {
        verdict *v = xnew(verdict, 1);
        v->running = l->swtpm_pid > 0 && !l->fenced;
        const char *reason = json_string_value(json_object_get(l->reported, "reason"));
        const char *msg = json_string_value(json_object_get(l->reported, "message"));
        v->reason = reason ? xstrdup(reason) : NULL;
        v->why = msg ? xstrdup(msg) : NULL;
        pthread_mutex_lock(&nc->lock);
        vt_hashmap_put(nc->verdicts, l->pod_uid, v);
        pthread_cond_broadcast(&nc->verdict_changed);
        pthread_mutex_unlock(&nc->lock);
}

void verdict_forget(node_controller *nc, const char *pod_uid) {
        pthread_mutex_lock(&nc->lock);
        vt_hashmap_remove(nc->verdicts, pod_uid);
        pthread_cond_broadcast(&nc->verdict_changed);
        pthread_mutex_unlock(&nc->lock);
}

/* The launcher's key (ns/pod) for a pod uid, if the controller knows it; with nc->lock held. */
static char *key_of_locked(node_controller *nc, const char *ns, const char *pod_uid) {
        const char *k;
        void *p;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(nc->launchers, &it, &k, &p);) {
                const launcher *l = p;
                if (str_eq(l->pod_uid, pod_uid) && str_eq(l->ns, ns))
                        return xstrdup(k);
        }
        return NULL;
}

int node_controller_wait_vtpm(node_controller *nc, const char *ns, const char *pod_uid, usec_t timeout,
                              vt_error **err) {
        assert_return(nc && ns && pod_uid, -EINVAL);
        struct timespec deadline;
        monotonic_deadline(timeout, &deadline);
        pthread_mutex_lock(&nc->lock);
        /* Wake its reconcile now: it may be waiting out a backoff. */
        _cleanup_free_ char *key = key_of_locked(nc, ns, pod_uid);
        pthread_mutex_unlock(&nc->lock);
        if (key)
                kube_controller_enqueue(nc->ctl, key);
        pthread_mutex_lock(&nc->lock);
        int r = 0;
        for (;;) {
                const verdict *v = vt_hashmap_get(nc->verdicts, pod_uid);
                if (v && v->running)
                        break;
                if (atomic_load(&nc->stopping) ||
                    pthread_cond_timedwait(&nc->verdict_changed, &nc->lock, &deadline) == ETIMEDOUT) {
                        v = vt_hashmap_get(nc->verdicts, pod_uid);
                        if (v && v->running)
                                break;
                        if (!v)
                                r = vt_error_set(err, EAGAIN, "the agent on node %s has not brought up the vTPM "
                                                              "of launcher pod %s yet",
                                                 nc->node, pod_uid);
                        else /* the reason as TPMState's nodeState gives it, for whoever reads KubeVirt's event */
                                r = vt_error_set(err, EAGAIN, "the vTPM is not running on node %s: %s%s%s", nc->node,
                                                 v->reason ? v->reason : "", v->reason ? ": " : "",
                                                 v->why ? v->why : "being brought up");
                        break;
                }
        }
        pthread_mutex_unlock(&nc->lock);
        return r;
}
