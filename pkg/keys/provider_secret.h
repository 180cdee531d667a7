/* SPDX-License-Identifier: Apache-2.0 */
/* The "secret" KEK provider (provider.h): one KEK per scope (VM namespace)
 * in a Kubernetes Secret of the agent's own namespace. */
#pragma once

#include "base/error.h"
#include "keys/provider.h"
#include "kube/client.h"

typedef struct secret_provider_options {
        kube_client *client;
        /* core/v1 secrets, from the caller's one resource table (pkg/ holds
         * none: which API versions the agent uses is the agent's, with its
         * RBAC). */
        const kube_resource *secrets;
        const char *namespace;   /* where the KEK Secrets are: the agent's own */
        const char *label_key;   /* the label the Secrets it creates carry */
        const char *label_value;
} secret_provider_options;

/* Does not contact the API server: a Secret that cannot be read is an error
 * of the first wrap or unwrap. -EINVAL only when an option is missing. */
int kek_provider_secret_new(const secret_provider_options *o, kek_provider **ret);
