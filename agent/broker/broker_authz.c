/* SPDX-License-Identifier: Apache-2.0 */
#include "broker_authz.h"

#include <string.h>

#include "base/alloc.h"
#include "keys/broker_client.h"
#include "vmi_migration.h"

void broker_peer_done(broker_peer *p) {
        free(p->node);
        free(p->pod);
        *p = (broker_peer){0};
}

static bool str_eq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

static const char *field(const json_t *o, const char *a, const char *b) {
        return json_string_value(json_object_get(json_object_get(o, a), b));
}

/* The one value of a user.extra entry, or NULL (absent, not a one-element
 * array of a non-empty string). */
static const char *extra_one(const json_t *status, const char *key) {
        const json_t *v = json_object_get(json_object_get(json_object_get(status, "user"), "extra"), key);
        if (!json_is_array(v) || json_array_size(v) != 1)
                return NULL;
        const char *s = json_string_value(json_array_get(v, 0));
        return s && *s ? s : NULL;
}

static bool has_audience(const json_t *status, const char *aud) {
        const json_t *a = json_object_get(status, "audiences");
        for (size_t i = 0; i < json_array_size(a); i++)
                if (str_eq(json_string_value(json_array_get(a, i)), aud))
                        return true;
        return false;
}

int broker_authn_pod_name(const json_t *status, char **ret_pod, vt_error **err) {
        const char *pod = extra_one(status, BROKER_EXTRA_POD_NAME);
        if (!pod)
                return vt_error_set(err, EACCES, "the token is not bound to one pod");
        *ret_pod = xstrdup(pod);
        return 0;
}

/* The token review's verdict alone: authenticated, for the broker, as the
 * agent's ServiceAccount, bound to a pod on a node. */
static int review_ok(const json_t *status, const char *agent_ns, const char *agent_sa, vt_error **err) {
        if (!json_is_true(json_object_get(status, "authenticated")))
                return vt_error_set(err, EACCES, "the token is not authenticated (TokenReview)");
        if (!has_audience(status, BROKER_AUDIENCE))
                return vt_error_set(err, EACCES, "the token is not for the audience %s", BROKER_AUDIENCE);
        const char *user = field(status, "user", "username");
        _cleanup_free_ char *want = xasprintf("system:serviceaccount:%s:%s", agent_ns, agent_sa);
        if (!str_eq(user, want))
                return vt_error_set(err, EACCES, "the token is %s's, not %s's", user ? user : "nobody's", want);
        if (!extra_one(status, BROKER_EXTRA_NODE_NAME) || !extra_one(status, BROKER_EXTRA_POD_NAME) ||
            !extra_one(status, BROKER_EXTRA_POD_UID))
                return vt_error_set(err, EACCES, "the token of %s is not bound to one pod on one node", user);
        return 0;
}

static bool controlled_by_daemonset(const json_t *pod, const char *ds) {
        const json_t *refs = json_object_get(json_object_get(pod, "metadata"), "ownerReferences");
        for (size_t i = 0; i < json_array_size(refs); i++) {
                const json_t *ref = json_array_get(refs, i);
                if (json_is_true(json_object_get(ref, "controller")) &&
                    str_eq(json_string_value(json_object_get(ref, "kind")), "DaemonSet") &&
                    str_eq(json_string_value(json_object_get(ref, "name")), ds))
                        return true;
        }
        return false;
}

static bool pod_finished(const json_t *pod) {
        const char *phase = field(pod, "status", "phase");
        return str_eq(phase, "Succeeded") || str_eq(phase, "Failed");
}

int broker_authn_check(const json_t *status, const json_t *agent_pod, const char *agent_ns, const char *agent_sa,
                       const char *agent_ds, broker_peer *ret, vt_error **err) {
        int r = review_ok(status, agent_ns, agent_sa, err);
        if (r < 0)
                return r;
        const char *node = extra_one(status, BROKER_EXTRA_NODE_NAME), *pod = extra_one(status, BROKER_EXTRA_POD_NAME),
                   *uid = extra_one(status, BROKER_EXTRA_POD_UID);
        const char *why = NULL;
        if (!agent_pod)
                why = "does not exist";
        else if (!str_eq(field(agent_pod, "metadata", "name"), pod) ||
                 !str_eq(field(agent_pod, "metadata", "namespace"), agent_ns))
                why = "is not the pod fetched";
        else if (!str_eq(field(agent_pod, "metadata", "uid"), uid))
                why = "has another uid (a pod of that name replaced it)";
        else if (!controlled_by_daemonset(agent_pod, agent_ds))
                why = "is not controlled by the agent's DaemonSet";
        else if (!str_eq(field(agent_pod, "spec", "nodeName"), node))
                why = "runs on another node than the token names";
        else if (json_object_get(json_object_get(agent_pod, "metadata"), "deletionTimestamp"))
                why = "is being deleted";
        else if (pod_finished(agent_pod))
                why = "has finished";
        if (why)
                return vt_error_set(err, EACCES, "the token's pod %s/%s (uid %s, node %s) %s", agent_ns, pod, uid, node,
                                    why);
        *ret = (broker_peer){.node = xstrdup(node), .pod = xstrdup(pod)};
        return 0;
}

char *broker_state_lease_name(const char *vm_uid) {
        return xasprintf("vtpm-state-%s", vm_uid);
}

/* Why this launcher pod may not have the key (NULL: it may). */
static const char *launcher_refusal(const json_t *p, const key_subject *s, const char *node) {
        const json_t *labels = json_object_get(json_object_get(p, "metadata"), "labels");
        if (!str_eq(field(p, "metadata", "namespace"), s->ns))
                return "is in another namespace";
        if (!str_eq(json_string_value(json_object_get(labels, "kubevirt.io")), "virt-launcher") ||
            !str_eq(json_string_value(json_object_get(labels, "vm.kubevirt.io/name")), s->vm))
                return "is not this VM's virt-launcher";
        if (!str_eq(field(p, "spec", "nodeName"), node))
                return "is not on the asking node";
        if (json_object_get(json_object_get(p, "metadata"), "deletionTimestamp"))
                return "is being deleted";
        if (pod_finished(p))
                return "has finished";
        return NULL;
}

/* A live migration under way whose target is this launcher on this node,
 * and whose source holds the Lease (KubeVirt's migrationState, which only
 * KubeVirt writes). */
static bool migration_target_of_holder(const key_subject *s, const char *node, const char *pod, const char *holder,
                                       const json_t *vmi) {
        vmi_migration m;
        if (!vmi_migration_get(vmi, &m) || !vmi_migration_under_way(&m) || !holder)
                return false;
        if (!str_eq(field(vmi, "metadata", "namespace"), s->ns) || !str_eq(field(vmi, "metadata", "name"), s->vm) ||
            !str_eq(m.target_pod, pod) || !str_eq(m.target_node, node) || !m.source_node || !m.source_pod)
                return false;
        _cleanup_free_ char *prefix = xasprintf("%s/%s/%s/", m.source_node, s->ns, m.source_pod);
        return strncmp(holder, prefix, strlen(prefix)) == 0;
}

/* The Lease must name this launcher: "<node>/<ns>/<pod>/<pod uid>"; or this
 * launcher is the target of a migration from the launcher it names. */
static int lease_check(const key_subject *s, const char *node, const char *pod, const json_t *lease,
                       const json_t *vmi, vt_error **err) {
        const char *holder = field(lease, "spec", "holderIdentity");
        _cleanup_free_ char *want = xasprintf("%s/%s/%s/%s", node, s->ns, pod, s->launcher_uid);
        if (str_eq(holder, want) || migration_target_of_holder(s, node, pod, holder, vmi))
                return 0;
        if (!holder || !*holder)
                return vt_error_set(err, EACCES, "node %s, VM %s/%s, launcher %s: the VM's state Lease is held by nobody",
                                    node, s->ns, s->vm, s->launcher_uid);
        size_t n = strcspn(holder, "/");
        bool same_node = strlen(node) == n && strncmp(holder, node, n) == 0;
        return vt_error_set(err, EACCES, "node %s, VM %s/%s, launcher %s: the VM's state Lease is held for %s",
                            node, s->ns, s->vm, s->launcher_uid,
                            same_node ? "another launcher on this node" : "another node");
}

int broker_placement_check(const key_subject *s, const char *node, const json_t *list, const json_t *lease,
                           const json_t *vmi, vt_error **err) {
        const json_t *items = json_object_get(list, "items");
        const json_t *mine = NULL;
        for (size_t i = 0; i < json_array_size(items); i++)
                if (str_eq(field(json_array_get(items, i), "metadata", "uid"), s->launcher_uid)) {
                        mine = json_array_get(items, i);
                        break;
                }
        if (!mine)
                return vt_error_set(err, EACCES,
                                    "node %s, VM %s/%s, launcher %s: no virt-launcher pod of this VM has that uid",
                                    node, s->ns, s->vm, s->launcher_uid);
        const char *why = launcher_refusal(mine, s, node);
        if (why)
                return vt_error_set(err, EACCES, "node %s, VM %s/%s, launcher %s: the launcher pod %s", node, s->ns,
                                    s->vm, s->launcher_uid, why);
        if (lease)
                return lease_check(s, node, field(mine, "metadata", "name"), lease, vmi, err);
        return 0;
}
