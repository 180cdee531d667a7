/* SPDX-License-Identifier: Apache-2.0 */
/* The node's one status writer and its one place for events. A launcher's
 * status is the node's whole set of TPMState fields (nodeState, keys,
 * encrypted), applied together by server-side apply under this node's
 * field manager (agent/tpmstate_status.h); written only when it changed,
 * and a nodeState that changed is said once as an event. */
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "node/node.h"
#include "tpmstate_status.h"

DEFINE_JSON_CLEANUP

const char *node_md(json_t *o, const char *k) {
        return json_string_value(json_object_get(json_object_get(o, "metadata"), k));
}

void node_stat_inc(node_controller *nc, uint64_t *f, int64_t d) {
        pthread_mutex_lock(&nc->lock);
        *f += (uint64_t)d;
        pthread_mutex_unlock(&nc->lock);
}

static json_t *cached_status_field(node_controller *nc, const launcher *l, const char *field) {
        _cleanup_free_ char *key = xasprintf("%s/%s", l->ns, l->vm_name);
        _cleanup_json_ json_t *ts = kube_informer_get(nc->tpmstates, key);
        json_t *v = json_object_get(json_object_get(ts, "status"), field);
        return v ? json_deep_copy(v) : NULL;
}

/* status.keys as the cluster has it, the first time this launcher touches
 * it: an apply without keys would remove the ones this node wrote before. */
static void keys_seed(node_controller *nc, launcher *l) {
        if (l->keys)
                return;
        l->keys = cached_status_field(nc, l, "keys");
        if (l->keys && !json_is_object(l->keys)) {
                json_decref(l->keys);
                l->keys = NULL;
        }
}

/* The nodeState to carry when only keys changed: what this node said last
 * for this launcher (also before an agent restart, from the cache). */
static bool node_state_seed(node_controller *nc, launcher *l) {
        if (l->reported)
                return true;
        json_t *ns = cached_status_field(nc, l, "nodeState");
        if (ns && str_eq(json_string_value(json_object_get(ns, "node")), nc->node) &&
            str_eq(json_string_value(json_object_get(ns, "launcher")), l->key)) {
                l->reported = ns;
                return true;
        }
        json_decref(ns);
        return false;
}

/* Apply {nodeState, keys, encrypted} if it differs from the last applied.
 * A TPMState already gone is not an error. */
static void status_apply(node_controller *nc, launcher *l) {
        if (!l->reported)
                return; /* keys wait for the first nodeState: the admission policy needs one naming us */
        keys_seed(nc, l);
        /* Copies: l->keys is merged into in place, and what was applied must not change with it. */
        _cleanup_json_ json_t *want = json_pack("{s:o, s:o?}", "nodeState", json_deep_copy(l->reported), "keys",
                                                l->keys ? json_deep_copy(l->keys) : NULL);
        if (l->applied && json_equal(l->applied, want))
                return;
        _cleanup_error_ vt_error *err = NULL;
        int r = tpmstate_apply_node(nc->client, nc->node, l->ns, l->vm_name, l->reported, l->keys, NULL, &err);
        if (r < 0 && !(err && err->code == ENOENT)) {
                log_kv(LOG_LEVEL_WARN, "cannot write the TPMState status", "vm", l->vm_name, "error",
                       err ? err->msg : "unknown", NULL);
                return; /* l->applied unchanged: written with the next report */
        }
        json_decref(l->applied);
        l->applied = TAKE_PTR(want);
}

static void record_event(node_controller *nc, const char *ns, const char *vm_name, const char *vm_uid, bool warn,
                         const char *reason, const char *action, const char *message) {
        kube_object_ref ref = {"kubevirt.io/v1", "VirtualMachine", ns, vm_name, vm_uid && *vm_uid ? vm_uid : NULL};
        _cleanup_error_ vt_error *err = NULL;
        if (kube_record(nc->recorder, &ref, warn ? KUBE_EVENT_WARNING : KUBE_EVENT_NORMAL, reason, action, message,
                        &err) < 0)
                log_kv(LOG_LEVEL_DEBUG, "cannot record an event", "vm", vm_name, "reason", reason, "error",
                       err ? err->msg : "unknown", NULL);
}

void node_report(node_controller *nc, launcher *l, node_reason r, const char *detail) {
        const node_reason_info *i = node_reason_get(r);
        _cleanup_free_ char *message = node_reason_message(r, detail);
        json_t *ns = json_pack("{s:s, s:s, s:s, s:s, s:s}", "node", nc->node, "launcher", l->key, "phase", i->phase,
                               "reason", i->reason, "message", message);
        if (l->swtpm_pid > 0)
                json_object_set_new(ns, "swtpmPid", json_integer(l->swtpm_pid));
        json_object_set_new(ns, "encrypted", json_boolean(l->encrypted));
        if (l->reported && json_equal(l->reported, ns)) {
                json_decref(ns);
                status_apply(nc, l); /* said already; only an earlier failed write is retried */
                return;
        }
        json_decref(l->reported);
        l->reported = ns;
        status_apply(nc, l);
        record_event(nc, l->ns, l->vm_name, l->vm_uid, i->warn, i->reason, i->warn ? "Refuse" : "Start", message);
        log_kv(i->warn ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, message, "vm", l->vm_name, "namespace", l->ns, "reason",
               i->reason, NULL);
}

/* RFC 7386 semantics, as the merge patches of status.keys had: objects
 * merge field by field, null removes. */
static void merge_into(json_t *target, json_t *patch) {
        const char *k;
        json_t *v;
        json_object_foreach(patch, k, v) {
                json_t *cur = json_object_get(target, k);
                if (json_is_null(v))
                        json_object_del(target, k);
                else if (json_is_object(v) && json_is_object(cur))
                        merge_into(cur, v);
                else
                        json_object_set_new(target, k, json_deep_copy(v));
        }
}

void node_keys_update(node_controller *nc, launcher *l, json_t *partial) {
        keys_seed(nc, l);
        if (!l->keys)
                l->keys = json_object();
        merge_into(l->keys, partial);
        if (node_state_seed(nc, l))
                status_apply(nc, l);
}

void node_keys_event(node_controller *nc, launcher *l, bool warn, const char *reason, const char *message) {
        record_event(nc, l->ns, l->vm_name, l->vm_uid, warn, reason, "RotateKeys", message);
        log_kv(warn ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, message, "vm", l->vm_name, "namespace", l->ns, "reason", reason,
               NULL);
}

/* One note for the fence, whoever says it (the fence, or the teardown after
 * the API server answers again): the recorder makes repeats one event. */
void node_fence_event(node_controller *nc, const char *ns, const char *vm_name, const char *vm_uid) {
        _cleanup_free_ char *m = xasprintf("the VM's TPM on node %s was stopped: this node could not renew the VM's "
                                           "state lock in time (it could not reach the API server), and another node "
                                           "may take the state over once the lock expires; the VM has no TPM until it "
                                           "restarts",
                                           nc->node);
        record_event(nc, ns, vm_name, vm_uid, true, "TPMFenced", "Fence", m);
}

kube_outcome node_outcome(node_reason r, vt_error **err) {
        switch (node_reason_get(r)->then) {
        case NODE_THEN_DONE:
                return kube_done();
        case NODE_THEN_RETRY:
                return kube_requeue_after(NODE_RETRY_USEC);
        case NODE_THEN_LOCK_WAIT:
                return kube_requeue_after(NODE_LOCK_RETRY_USEC);
        case NODE_THEN_KEYS_BACKOFF:
                return kube_backoff(KEY_RETRY_MAX_USEC);
        case NODE_THEN_FAIL:
                break;
        }
        vt_error *e = err ? TAKE_PTR(*err) : NULL;
        if (!e)
                vt_error_set(&e, EPERM, "%s", node_reason_get(r)->reason);
        return kube_failed(e);
}

kube_outcome node_halt(node_controller *nc, launcher *l, node_reason r, const char *detail, vt_error **err) {
        if (r != NR_NONE)
                node_report(nc, l, r, detail);
        if (node_reason_get(r)->refusal)
                node_stat_inc(nc, &nc->stats.refusals_by_reason[r], 1);
        return node_outcome(r, err);
}
