/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "keys/provider.h"
#include "kube/client.h"

/* KEKs in Secrets in `namespace` (the agent's own). */
int kek_provider_secret_new(kube_client *c, const char *namespace, kek_provider **ret);
