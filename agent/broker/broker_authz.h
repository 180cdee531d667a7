/* SPDX-License-Identifier: Apache-2.0 */
/* The key broker's two decisions, as pure functions over what the caller
 * fetched from the API server (agent/broker/broker_service.c does the fetching), so
 * each rule is table-tested without a cluster:
 *
 *  - who asks (authentication): the TokenReview of the request's bearer
 *    token and the agent pod that token is bound to;
 *  - whether they may have this VM's key (placement): the VM's launcher pods
 *    and, for a persistent VM, its state Lease.
 *
 * Nothing here trusts the node's word: the node name comes from the token
 * (the API server put it there), never from the request body.
 *
 * Every refusal is -EACCES with a message for the broker's log that names
 * node, VM, launcher uid and the rule that failed. Messages never quote a
 * token or key; the HTTP answer stays generic ("unauthenticated", "key access
 * refused") so a refusal is no oracle. */
#pragma once

#include <jansson.h>

#include "base/error.h"
#include "keys/subject.h"

/* "authentication.kubernetes.io/..." extras of a pod-bound ServiceAccount
 * token (Kubernetes >= 1.30 always sets node-name for tokens bound to a pod). */
#define BROKER_EXTRA_NODE_NAME "authentication.kubernetes.io/node-name"
#define BROKER_EXTRA_POD_NAME "authentication.kubernetes.io/pod-name"
#define BROKER_EXTRA_POD_UID "authentication.kubernetes.io/pod-uid"

/* An authenticated caller: the agent pod and the node it runs on. */
typedef struct broker_peer {
        char *node;
        char *pod;
} broker_peer;
void broker_peer_done(broker_peer *p);

/* The pod a token review names: *ret_pod (allocated) is the pod-name extra,
 * to be fetched from agent_ns by the caller before broker_authn_check().
 * -EACCES when the review does not name exactly one pod. */
int broker_authn_pod_name(const json_t *token_review_status, char **ret_pod, vt_error **err);

/* token_review_status: the TokenReview's .status, as the API server answered
 * it for spec.audiences [BROKER_AUDIENCE]. agent_pod: the pod
 * agent_ns/<pod-name extra>, or NULL when it does not exist. Requires:
 * authenticated; BROKER_AUDIENCE among the audiences; username
 * system:serviceaccount:<agent_ns>:<agent_sa>; the node-name, pod-name and
 * pod-uid extras, one value each; that pod with that uid, controlled by the
 * DaemonSet agent_ds, on that node, not being deleted nor finished. */
int broker_authn_check(const json_t *token_review_status, const json_t *agent_pod, const char *agent_ns,
                       const char *agent_sa, const char *agent_ds, broker_peer *ret, vt_error **err);

/* The state Lease's name for a VM (in the agent's namespace), as
 * agent/state_lock.c names it. Caller frees. */
char *broker_state_lease_name(const char *vm_uid);

/* launcher_pods_list: the PodList of s->ns with labelSelector
 * kubevirt.io=virt-launcher,vm.kubevirt.io/name=<s->vm> (each item is
 * checked again: namespace, both labels). One item must have uid
 * s->launcher_uid, spec.nodeName == node, no deletionTimestamp, and a phase
 * other than Succeeded/Failed.
 * state_lease_or_null: the VM's state Lease (broker_state_lease_name) when it
 * exists. Then its holderIdentity must name exactly this launcher on this
 * node ("<node>/<ns>/<pod>/<pod uid>", agent/node_controller.c
 * lock_identity()): a persistent VM's node takes its Lease before it asks for
 * the key, so a Lease naming nobody or someone else means this node does not
 * run that VM's TPM. The one exception is a live migration's target:
 * vmi_or_null (the VMI, as KubeVirt wrote its status.migrationState) names
 * this launcher's pod as the target pod on this node, of a migration neither
 * completed nor failed, whose source pod and node are the Lease's holder. */
int broker_placement_check(const key_subject *s, const char *node, const json_t *launcher_pods_list,
                           const json_t *state_lease_or_null, const json_t *vmi_or_null, vt_error **err);
