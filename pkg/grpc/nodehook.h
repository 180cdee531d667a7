/* SPDX-License-Identifier: Apache-2.0 */
/* KubeVirt's ExecuteNodeHookRequest (pkg/hooks/plugins/v1alpha1/api.proto,
 * package kubevirt.hooks.plugins.v1alpha1), decoded by hand from the protobuf
 * wire format:
 *
 *     message NodeContext { string node_name = 1; }
 *     message ExecuteNodeHookRequest {
 *             string hookPoint = 1; bytes vmi = 2; NodeContext node_context = 3; }
 *
 * The input is untrusted: the VMI's JSON is the tenant's. Protobuf's rules
 * hold: unknown fields (wire types 0, 1, 2, 5) are skipped, a field that
 * occurs twice keeps its last value (node_context merges, so the last
 * node_name seen wins), absent fields are empty. Stricter than protobuf: a
 * known field with the wrong wire type is refused, not kept as unknown. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define NODEHOOK_SERVICE "kubevirt.hooks.plugins.v1alpha1.NodeHookService"
#define NODEHOOK_METHOD_PATH "/" NODEHOOK_SERVICE "/ExecuteNodeHook"

typedef struct nodehook_request {
        char *hook_point; /* e.g. "PreVMStart"; "" when absent, never NULL */
        char *vmi;        /* the VMI as JSON: vmi_len bytes plus a NUL (json_loadb it: it may hold NULs) */
        size_t vmi_len;
        char *node_name; /* "" when absent */
} nodehook_request;

/* Decode msg[0..len) (one gRPC message, unframed) into *ret, which is
 * filled only on success (release it with nodehook_request_done()).
 * -EBADMSG: malformed wire format, a string that is not UTF-8 or holds a
 * NUL; the message names the field, never quotes the input. */
int nodehook_request_decode(const uint8_t *msg, size_t len, nodehook_request *ret, vt_error **err);
void nodehook_request_done(nodehook_request *r);
