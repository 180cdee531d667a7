/* SPDX-License-Identifier: Apache-2.0 */
#include "resources.h"

const kube_resource res_cpref = {"instancetype.kubevirt.io", "v1beta1", "virtualmachineclusterpreferences", false};
const kube_resource res_hco = {"hco.kubevirt.io", "v1beta1", "hyperconvergeds", true};
const kube_resource res_kubevirt = {"kubevirt.io", "v1", "kubevirts", true};
const kube_resource res_lease = {"coordination.k8s.io", "v1", "leases", true};
const kube_resource res_node = {"", "v1", "nodes", false};
const kube_resource res_nspref = {"instancetype.kubevirt.io", "v1beta1", "virtualmachinepreferences", true};
const kube_resource res_pod = {"", "v1", "pods", true};
const kube_resource res_pvc = {"", "v1", "persistentvolumeclaims", true};
const kube_resource res_revision = {"apps", "v1", "controllerrevisions", true};
const kube_resource res_sc = {"storage.k8s.io", "v1", "storageclasses", false};
const kube_resource res_secret = {"", "v1", "secrets", true};
const kube_resource res_sprofile = {"cdi.kubevirt.io", "v1beta1", "storageprofiles", false};
const kube_resource res_tpmstate = {"vtpm-agent.io", "v1alpha1", "tpmstates", true};
const kube_resource res_vm = {"kubevirt.io", "v1", "virtualmachines", true};
const kube_resource res_vmi = {"kubevirt.io", "v1", "virtualmachineinstances", true};
