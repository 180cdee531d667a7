/* SPDX-License-Identifier: Apache-2.0 */
/* The key broker as the vtpm-controller runs it (config broker.listen): the
 * HTTPS layer (broker_server.h) with the real checks, each request decided
 * from the API server, never from the node's word:
 *
 *   who:   TokenReview of the bearer token for audience BROKER_AUDIENCE, and
 *          GET of the agent pod it is bound to (broker_authn_check);
 *   where: LIST of the VM's launcher pods in its namespace, GET of the VM
 *          (its uid names the state Lease) and of the state Lease
 *          vtpm-state-<vm uid> in cfg->namespace (broker_placement_check);
 *   then:  this process's own keymgr ("secret" or "kmip": it holds the KEKs),
 *          which checks the header's kekId against the VM's namespace.
 *
 * The controller's ServiceAccount needs: tokenreviews create; pods get/list
 * (the agent's namespace and VM namespaces); virtualmachines get; leases get
 * in cfg->namespace; and what its key provider needs (KEK Secrets). */
#pragma once

#include "base/error.h"
#include "config.h"
#include "kube/client.h"

typedef struct broker_service broker_service;

/* Starts serving on cfg->broker.listen with cfg->broker.cert_file/key_file,
 * accepting tokens of cfg->namespace/cfg->broker.agent_service_account bound
 * to pods of the DaemonSet cfg->broker.agent_daemonset. The client must stay
 * valid until broker_service_stop(). */
int broker_service_start(kube_client *c, const agent_config *cfg, broker_service **ret, vt_error **err);
int broker_service_port(const broker_service *b);
/* Stops serving (requests under way finish first). NULL is fine. */
void broker_service_stop(broker_service *b);
