/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz a node-hook request as it arrives (the DATA of a gRPC call: one
 * framed ExecuteNodeHookRequest, whose VMI JSON is the tenant's): framing,
 * then the protobuf decoder. Whatever decodes must hold C strings without
 * NUL and valid UTF-8, a NUL-terminated VMI of the stated length, and encode
 * back to the same fields; an error is printable fixed text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/pbenc.h"
#include "grpc/frame.h"
#include "grpc/nodehook.h"
#include "grpc/protowire.h"

static void check_message(const vt_error *err) {
        if (!err)
                return;
        for (const char *p = err->msg; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                        abort();
}

static void check_round_trip(const nodehook_request *r) {
        if (!pw_utf8_valid((const uint8_t *)r->hook_point, strlen(r->hook_point)) ||
            !pw_utf8_valid((const uint8_t *)r->node_name, strlen(r->node_name)) || r->vmi[r->vmi_len] != '\0')
                abort();
        vt_buf b = {0};
        pb_bytes(&b, 1, r->hook_point, strlen(r->hook_point));
        pb_bytes(&b, 2, r->vmi, r->vmi_len);
        pb_nodehook(&b, NULL, NULL, r->node_name);
        nodehook_request back = {0};
        if (nodehook_request_decode((const uint8_t *)b.data, b.len, &back, NULL) != 0 ||
            strcmp(back.hook_point, r->hook_point) != 0 || strcmp(back.node_name, r->node_name) != 0 ||
            back.vmi_len != r->vmi_len || memcmp(back.vmi, r->vmi, r->vmi_len) != 0)
                abort();
        nodehook_request_done(&back);
        vt_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        vt_error *err = NULL;
        const uint8_t *msg = NULL;
        size_t len = 0, used = 0;
        int r = grpc_frame_parse(data, size, GRPC_MAX_MESSAGE, &msg, &len, &used, &err);
        if (r == 0 && (used > size || msg + len != data + used))
                abort();
        nodehook_request req = {0};
        if (r == 0 && nodehook_request_decode(msg, len, &req, &err) == 0) {
                check_round_trip(&req);
                nodehook_request_done(&req);
        }
        check_message(err);
        vt_error_free(err);
        return 0;
}
