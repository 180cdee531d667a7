/* SPDX-License-Identifier: Apache-2.0 */
/* Which StorageClass a VM's state PVC gets. First match wins:
 *   1. the agent's config (state.storageClass)
 *   2. the KubeVirt CR's spec.configuration.vmStateStorageClass
 *   3. the HyperConverged CR's spec.vmStateStorageClass
 *   4. a StorageClass annotated storageclass.kubevirt.io/is-default-virt-class=true
 *   5. the cluster default (storageclass.kubernetes.io/is-default-class=true)
 * A class named by 1-3 that does not exist is an error, not a reason to fall
 * through: the operator asked for it. Pure function: unit-tested. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef enum sc_source {
        SC_SOURCE_NONE,
        SC_SOURCE_CONFIG,
        SC_SOURCE_KUBEVIRT,
        SC_SOURCE_HYPERCONVERGED,
        SC_SOURCE_VIRT_DEFAULT,
        SC_SOURCE_CLUSTER_DEFAULT,
} sc_source;

typedef struct sc_info {
        const char *name;
        const char *provisioner;
        bool is_default;
        bool is_virt_default;
} sc_info;

typedef struct sc_choice {
        char *name;          /* NULL when none could be chosen */
        sc_source source;
        const char *reason;  /* NULL, "StorageClassNotFound" or "NoStorageClass" */
        char *message;       /* for status and events */
        bool rwx_unlikely;   /* the class's provisioner is known not to offer RWX Filesystem */
} sc_choice;

const char *sc_source_name(sc_source s);
void resolve_storage_class(const char *config_class, const char *kubevirt_class, const char *hco_class,
                           const sc_info *classes, size_t n_classes, sc_choice *ret);
void sc_choice_done(sc_choice *c);
/* True for provisioners known to offer only ReadWriteOnce filesystems. */
bool provisioner_lacks_rwx(const char *provisioner);
