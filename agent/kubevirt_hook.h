/* SPDX-License-Identifier: Apache-2.0 */
/* KubeVirt's PreVMStart node hook, served to virt-handler (the Plugin in
 * manifests/kubevirt-plugin/plugin.yaml names this socket): a VM with a persistent
 * vTPM starts only once the agent's swtpm serves its launcher, so QEMU finds
 * the control socket its domain connects to (the Plugin's domain hook makes
 * the TPM's backend external). Until then virt-handler is told why, and
 * retries. */
#pragma once

#include "base/error.h"
#include "config.h"
#include "node_controller.h"

typedef struct kubevirt_hook kubevirt_hook;

/* Listen on cfg->node.kubevirt_hook_socket and serve. */
int kubevirt_hook_start(const agent_config *cfg, node_controller *nc, kubevirt_hook **ret, vt_error **err);
/* Stops serving (calls under way end first); NULL: nothing. */
void kubevirt_hook_stop(kubevirt_hook *h);
