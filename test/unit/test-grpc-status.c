/* SPDX-License-Identifier: Apache-2.0 */
/* grpc-status from a handler's errno, and grpc-message's percent-encoding
 * (the text KubeVirt shows for a failed hook). */
#include <errno.h>
#include <stdlib.h>

#include "base/macro.h"
#include "grpc/status.h"
#include "tap.h"

static void test_from_errno(void) {
        check_int_eq(grpc_status_from_errno(-EAGAIN), GRPC_STATUS_UNAVAILABLE);
        check_int_eq(grpc_status_from_errno(-EBUSY), GRPC_STATUS_UNAVAILABLE);
        check_int_eq(grpc_status_from_errno(-EPERM), GRPC_STATUS_PERMISSION_DENIED);
        check_int_eq(grpc_status_from_errno(-EACCES), GRPC_STATUS_PERMISSION_DENIED);
        check_int_eq(grpc_status_from_errno(-EINVAL), GRPC_STATUS_INVALID_ARGUMENT);
        check_int_eq(grpc_status_from_errno(-EBADMSG), GRPC_STATUS_INVALID_ARGUMENT);
        check_int_eq(grpc_status_from_errno(-EMSGSIZE), GRPC_STATUS_RESOURCE_EXHAUSTED);
        check_int_eq(grpc_status_from_errno(-ETIMEDOUT), GRPC_STATUS_DEADLINE_EXCEEDED);
        check_int_eq(grpc_status_from_errno(-EIO), GRPC_STATUS_UNKNOWN);
        check_int_eq(grpc_status_from_errno(-ENOENT), GRPC_STATUS_UNKNOWN);
}

static void test_message_encode(void) {
        static const struct {
                const char *in;
                size_t max;
                const char *out;
        } cases[] = {
                {"vTPM not ready: 50% done", 1024, "vTPM not ready: 50%25 done"},
                {"line\nbreak\ttab", 1024, "line%0Abreak%09tab"},
                {"caf\xc3\xa9 ~", 1024, "caf%C3%A9 ~"},
                {"", 1024, ""},
                {"abcdef", 3, "abc"},
                /* Cut before a multi-byte sequence, not inside it. */
                {"ab\xc3\xa9", 3, "ab"},
                {"a\xe2\x82\xac", 3, "a"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                vt_buf b = {0};
                grpc_message_encode(cases[i].in, cases[i].max, &b);
                check_str_eq(b.data ? b.data : "", cases[i].out);
                vt_buf_free(&b);
        }
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_from_errno),
                TAP_CASE(test_message_encode),
                {0},
        });
}
