/* SPDX-License-Identifier: Apache-2.0 */
/* The Kubernetes resources the agent reads and writes, defined once (their
 * API groups and versions are the ones the manifests' RBAC names). */
#pragma once

#include "kube/client.h"

extern const kube_resource res_cpref;
extern const kube_resource res_hco;
extern const kube_resource res_kubevirt;
extern const kube_resource res_lease;
extern const kube_resource res_node;
extern const kube_resource res_nspref;
extern const kube_resource res_pod;
extern const kube_resource res_pvc;
extern const kube_resource res_revision;
extern const kube_resource res_sc;
extern const kube_resource res_secret;
extern const kube_resource res_sprofile;
extern const kube_resource res_tpmstate;
extern const kube_resource res_vm;
extern const kube_resource res_vmi;
