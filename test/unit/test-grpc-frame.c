/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC message framing: what encodes parses back; a truncated, compressed
 * or oversized frame is refused with a message that says which. */
#include <errno.h>

#include "base/macro.h"
#include "grpc/frame.h"
#include "tap.h"

static void test_round_trip(void) {
        uint8_t *f = NULL;
        size_t n = 0, len = 0, used = 0;
        const uint8_t *msg = NULL;
        check_int_eq(grpc_frame_encode("abc", 3, &f, &n), 0);
        check_int_eq(n, 8);
        check(memcmp(f, "\0\0\0\0\3abc", 8) == 0);
        check_int_eq(grpc_frame_parse(f, n, GRPC_MAX_MESSAGE, &msg, &len, &used, NULL), 0);
        check_int_eq(len, 3);
        check(msg == f + 5);
        check_int_eq(used, 8);
        free(f);

        /* The empty message (every ExecuteNodeHookResponse) */
        check_int_eq(grpc_frame_encode(NULL, 0, &f, &n), 0);
        check_int_eq(n, 5);
        check(memcmp(f, "\0\0\0\0\0", 5) == 0);
        check_int_eq(grpc_frame_parse(f, n, 0, &msg, &len, &used, NULL), 0);
        check_int_eq(len, 0);
        free(f);
}

static void test_trailing_bytes_left_to_caller(void) {
        static const uint8_t two[] = {0, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0};
        size_t len = 0, used = 0;
        check_int_eq(grpc_frame_parse(two, sizeof(two), 10, NULL, &len, &used, NULL), 0);
        check_int_eq(len, 1);
        check_int_eq(used, 6);
}

static void test_refused(void) {
        static const struct {
                const char *name;
                uint8_t in[8];
                size_t n, max;
                int r;
                const char *msg;
        } cases[] = {
                {"empty", {0}, 0, 10, -EBADMSG, "0 of the 5 header bytes"},
                {"short header", {0, 0, 0}, 3, 10, -EBADMSG, "3 of the 5 header bytes"},
                {"body short", {0, 0, 0, 0, 4, 'a', 'b'}, 7, 10, -EBADMSG, "2 of 4 bytes"},
                {"compressed", {1, 0, 0, 0, 1, 'a'}, 6, 10, -EBADMSG, "compressed gRPC message"},
                {"bad flag", {2, 0, 0, 0, 0}, 5, 10, -EBADMSG, "flag 2"},
                {"over max", {0, 0, 0, 0, 4, 'a', 'b', 'c'}, 8, 3, -EMSGSIZE, "4 bytes is over the limit of 3"},
                {"over 16 MiB", {0, 1, 0, 0, 1}, 5, GRPC_MAX_MESSAGE, -EMSGSIZE, "16777217 bytes"},
                {"4 GiB", {0, 0xff, 0xff, 0xff, 0xff}, 5, GRPC_MAX_MESSAGE, -EMSGSIZE, "over the limit"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                vt_error *err = NULL;
                size_t len = 42;
                printf("# %s\n", cases[i].name);
                check_int_eq(grpc_frame_parse(cases[i].in, cases[i].n, cases[i].max, NULL, &len, NULL, &err),
                             cases[i].r);
                check(err && err->code == -cases[i].r);
                check_contains(err ? err->msg : NULL, cases[i].msg);
                check_int_eq(len, 42); /* untouched on failure */
                vt_error_free(err);
        }
}

static void test_exactly_max(void) {
        static const uint8_t in[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
        check_int_eq(grpc_frame_parse(in, sizeof(in), 3, NULL, NULL, NULL, NULL), 0);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_round_trip),
                TAP_CASE(test_trailing_bytes_left_to_caller),
                TAP_CASE(test_refused),
                TAP_CASE(test_exactly_max),
                {0},
        });
}
