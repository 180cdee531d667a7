/* SPDX-License-Identifier: Apache-2.0 */
#include "storageclass.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"

const char *sc_source_name(sc_source s) {
        static const char *const names[] = {
                [SC_SOURCE_NONE] = "None",
                [SC_SOURCE_CONFIG] = "AgentConfig",
                [SC_SOURCE_KUBEVIRT] = "KubeVirt",
                [SC_SOURCE_HYPERCONVERGED] = "HyperConverged",
                [SC_SOURCE_VIRT_DEFAULT] = "DefaultVirtClass",
                [SC_SOURCE_CLUSTER_DEFAULT] = "ClusterDefault",
        };
        return s <= SC_SOURCE_CLUSTER_DEFAULT ? names[s] : "Unknown";
}

bool provisioner_lacks_rwx(const char *p) {
        static const char *const rwo_only[] = {
                "kubernetes.io/aws-ebs", "ebs.csi.aws.com",        "kubernetes.io/gce-pd", "pd.csi.storage.gke.io",
                "kubernetes.io/azure-disk", "disk.csi.azure.com",  "kubernetes.io/cinder", "cinder.csi.openstack.org",
                "rancher.io/local-path", "topolvm.io",             "kubernetes.io/rbd",    "rbd.csi.ceph.com",
                "csi.vsphere.vmware.com-block", "linodebs.csi.linode.com", "dobs.csi.digitalocean.com",
        };
        if (!p)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(rwo_only); i++)
                if (strcmp(p, rwo_only[i]) == 0)
                        return true;
        return false;
}

static const sc_info *find(const sc_info *classes, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(classes[i].name, name) == 0)
                        return &classes[i];
        return NULL;
}

/* Of several annotated classes pick the alphabetically first, so every agent
 * replica and every run choose the same one. */
static const sc_info *first_flagged(const sc_info *classes, size_t n, bool virt) {
        const sc_info *best = NULL;
        for (size_t i = 0; i < n; i++) {
                bool f = virt ? classes[i].is_virt_default : classes[i].is_default;
                if (f && (!best || strcmp(classes[i].name, best->name) < 0))
                        best = &classes[i];
        }
        return best;
}

void resolve_storage_class(const char *config_class, const char *kubevirt_class, const char *hco_class,
                           const sc_info *classes, size_t n, sc_choice *ret) {
        *ret = (sc_choice){0};
        const struct {
                const char *name;
                sc_source source;
                const char *where;
        } named[] = {
                {config_class, SC_SOURCE_CONFIG, "the agent's configuration (state.storageClass)"},
                {kubevirt_class, SC_SOURCE_KUBEVIRT, "the KubeVirt CR (spec.configuration.vmStateStorageClass)"},
                {hco_class, SC_SOURCE_HYPERCONVERGED, "the HyperConverged CR (spec.vmStateStorageClass)"},
        };
        const sc_info *chosen = NULL;
        for (size_t i = 0; i < ELEMENTSOF(named); i++) {
                if (!named[i].name || !*named[i].name)
                        continue;
                ret->source = named[i].source;
                chosen = find(classes, n, named[i].name);
                if (!chosen) {
                        ret->reason = "StorageClassNotFound";
                        ret->message = xasprintf("StorageClass \"%s\", named by %s, does not exist; no state volume "
                                                 "is created until it does",
                                                 named[i].name, named[i].where);
                        return;
                }
                break;
        }
        if (!chosen && (chosen = first_flagged(classes, n, true)))
                ret->source = SC_SOURCE_VIRT_DEFAULT;
        if (!chosen && (chosen = first_flagged(classes, n, false)))
                ret->source = SC_SOURCE_CLUSTER_DEFAULT;
        if (!chosen) {
                ret->source = SC_SOURCE_NONE;
                ret->reason = "NoStorageClass";
                ret->message = xstrdup(
                        "no storage class for vTPM state: set spec.configuration.vmStateStorageClass in the KubeVirt CR "
                        "or spec.vmStateStorageClass in the HyperConverged CR, annotate a StorageClass with "
                        "storageclass.kubevirt.io/is-default-virt-class=true (or mark a cluster default), or set "
                        "state.storageClass in the agent's configuration");
                return;
        }
        ret->name = xstrdup(chosen->name);
        ret->rwx_unlikely = provisioner_lacks_rwx(chosen->provisioner);
}

void sc_choice_done(sc_choice *c) {
        free(c->name);
        free(c->message);
        *c = (sc_choice){0};
}
