/* SPDX-License-Identifier: Apache-2.0 */
/* ExecuteNodeHookRequest from the protobuf wire format: what grpc-go sends
 * decodes to its fields; protobuf's rules for unknown and repeated fields
 * hold; malformed or non-UTF-8 input is refused with a message naming what is
 * wrong, and the output stays untouched. */
#include <errno.h>

#include "base/macro.h"
#include "grpc/nodehook.h"
#include "grpc/protowire.h"
#include "pbenc.h"
#include "tap.h"

#define BYTES(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static void check_decodes(const vt_buf *b, const char *hook, const char *vmi, const char *node) {
        nodehook_request r = {0};
        check_int_eq(nodehook_request_decode((const uint8_t *)b->data, b->len, &r, NULL), 0);
        check_str_eq(r.hook_point, hook);
        check_str_eq(r.vmi, vmi);
        check_int_eq(r.vmi_len, strlen(vmi));
        check_str_eq(r.node_name, node);
        nodehook_request_done(&r);
        check(!r.vmi);
}

static void test_full_request(void) {
        vt_buf b = {0};
        pb_nodehook(&b, "PreVMStart", "{\"kind\":\"VirtualMachineInstance\"}", "node-1");
        check_decodes(&b, "PreVMStart", "{\"kind\":\"VirtualMachineInstance\"}", "node-1");
        vt_buf_free(&b);
}

static void test_absent_fields_empty(void) {
        nodehook_request r = {0};
        check_int_eq(nodehook_request_decode(NULL, 0, &r, NULL), 0);
        check_str_eq(r.hook_point, "");
        check_str_eq(r.node_name, "");
        check(r.vmi && r.vmi_len == 0 && r.vmi[0] == '\0');
        nodehook_request_done(&r);
        /* node_context present but empty */
        check_int_eq(nodehook_request_decode(BYTES(0x1a, 0x00), &r, NULL), 0);
        check_str_eq(r.node_name, "");
        nodehook_request_done(&r);
}

static void test_unknown_fields_skipped(void) {
        vt_buf b = {0};
        pb_varint(&b, 9 << 3 | PW_VARINT);
        pb_varint(&b, UINT64_MAX);
        vt_buf_append(&b, BYTES(10 << 3 | PW_I64, 1, 2, 3, 4, 5, 6, 7, 8));
        pb_bytes(&b, 11, "later", 5);
        vt_buf_append(&b, BYTES(12 << 3 | PW_I32, 1, 2, 3, 4));
        /* a large field number, and an unknown field inside node_context */
        pb_bytes(&b, (1u << 29) - 1, "x", 1);
        vt_buf_append(&b, BYTES(0x1a, 0x0a, 0x10, 0x01, 0x0a, 0x06, 'n', 'o', 'd', 'e', '-', '2'));
        pb_nodehook(&b, "PreVMStart", "{}", NULL);
        check_decodes(&b, "PreVMStart", "{}", "node-2");
        vt_buf_free(&b);
}

static void test_last_occurrence_wins(void) {
        vt_buf b = {0};
        pb_nodehook(&b, "first", "{\"a\":1}", "node-a");
        pb_nodehook(&b, "second", "{\"b\":2}", NULL);
        /* a second node_context without node_name: merged, node-a stays */
        vt_buf_append(&b, BYTES(0x1a, 0x00));
        check_decodes(&b, "second", "{\"b\":2}", "node-a");
        pb_nodehook(&b, NULL, NULL, "node-b");
        check_decodes(&b, "second", "{\"b\":2}", "node-b");
        vt_buf_free(&b);
}

static void test_vmi_bytes_kept_whole(void) {
        /* bytes, not a string: a NUL inside is kept, and counted */
        nodehook_request r = {0};
        check_int_eq(nodehook_request_decode(BYTES(0x12, 0x03, '{', 0, '}'), &r, NULL), 0);
        check_int_eq(r.vmi_len, 3);
        check(memcmp(r.vmi, "{\0}", 4) == 0);
        nodehook_request_done(&r);
        /* UTF-8 beyond ASCII in strings */
        check_int_eq(nodehook_request_decode(BYTES(0x0a, 0x04, 'h', 0xc3, 0xa9, '!'), &r, NULL), 0);
        check_str_eq(r.hook_point, "h\xc3\xa9!");
        nodehook_request_done(&r);
}

static void test_varint(void) {
        const uint8_t max[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
        const uint8_t *p = max;
        uint64_t v = 0;
        check_int_eq(pw_varint(&p, max + sizeof(max), &v), 0);
        check(v == UINT64_MAX && p == max + 10);
        const uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
        p = over;
        check_int_eq(pw_varint(&p, over + sizeof(over), &v), -EBADMSG);
        check(p == over); /* not advanced on failure */
        const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
        p = eleven;
        check_int_eq(pw_varint(&p, eleven + sizeof(eleven), &v), -EBADMSG);
        /* a non-minimal encoding is valid protobuf */
        const uint8_t padded[] = {0x81, 0x80, 0x00};
        p = padded;
        check_int_eq(pw_varint(&p, padded + sizeof(padded), &v), 0);
        check(v == 1);
}

static void test_refused(void) {
        static const struct {
                const char *name;
                uint8_t in[16];
                size_t n;
                const char *msg;
        } cases[] = {
                {"truncated tag", {0x80}, 1, "bad field tag"},
                {"tag of 11 bytes", {0x88, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 11, "bad field tag"},
                {"field number 0", {0x02, 0x00}, 2, "invalid field number 0"},
                {"field number 2^29", {0x80, 0x80, 0x80, 0x80, 0x10, 0x00}, 6, "invalid field number 536870912"},
                {"truncated varint value", {0x48, 0x80, 0x80}, 3, "bad varint in field 9"},
                {"varint value overflows", {0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 11, "bad varint in field 9"},
                {"truncated fixed64", {0x49, 1, 2, 3}, 4, "field 9 is truncated"},
                {"truncated fixed32", {0x4d, 1, 2, 3}, 4, "field 9 is truncated"},
                {"length past end", {0x0a, 0x05, 'a'}, 3, "field 1 runs past the end"},
                {"huge length", {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}, 7, "field 2 runs past the end"},
                {"truncated length", {0x12, 0x80}, 2, "bad length of field 2"},
                {"start group", {0x2b, 0x2c}, 2, "group in field 5"},
                {"end group", {0x2c}, 1, "group in field 5"},
                {"wire type 6", {0x0e, 0x00}, 2, "invalid wire type 6"},
                {"wire type 7", {0x0f, 0x00}, 2, "invalid wire type 7"},
                {"NUL in hookPoint", {0x0a, 0x03, 'a', 0, 'b'}, 5, "hookPoint contains a NUL"},
                {"NUL in node_name", {0x1a, 0x05, 0x0a, 0x03, 'a', 0, 'b'}, 7, "node_name contains a NUL"},
                {"overlong UTF-8", {0x0a, 0x02, 0xc0, 0x80}, 4, "hookPoint is not valid UTF-8"},
                {"surrogate", {0x0a, 0x03, 0xed, 0xa0, 0x80}, 5, "hookPoint is not valid UTF-8"},
                {"past U+10FFFF", {0x0a, 0x04, 0xf4, 0x90, 0x80, 0x80}, 6, "hookPoint is not valid UTF-8"},
                {"cut sequence", {0x1a, 0x04, 0x0a, 0x02, 'a', 0xc3}, 6, "node_name is not valid UTF-8"},
                {"stray continuation", {0x0a, 0x01, 0x80}, 3, "hookPoint is not valid UTF-8"},
                {"hookPoint as varint", {0x08, 0x01}, 2, "hookPoint has wire type 0"},
                {"vmi as fixed32", {0x15, 1, 2, 3, 4}, 5, "vmi has wire type 5"},
                {"node_context as varint", {0x18, 0x01}, 2, "node_context has wire type 0"},
                {"node_name as fixed64", {0x1a, 0x09, 0x09, 1, 2, 3, 4, 5, 6, 7, 8}, 11, "node_name has wire type 1"},
                {"malformed inside node_context", {0x1a, 0x02, 0x0a, 0x05}, 4, "node_context: field 1 runs past"},
                {"group inside node_context", {0x1a, 0x01, 0x0b}, 3, "node_context: group in field 1"},
                {"good field then garbage", {0x0a, 0x01, 'a', 0xff}, 4, "bad field tag"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                nodehook_request r = {.hook_point = (char *)"untouched"};
                vt_error *err = NULL;
                printf("# %s\n", cases[i].name);
                check_int_eq(nodehook_request_decode(cases[i].in, cases[i].n, &r, &err), -EBADMSG);
                check_contains(err ? err->msg : NULL, cases[i].msg);
                check_contains(err ? err->msg : NULL, "ExecuteNodeHookRequest");
                check_str_eq(r.hook_point, "untouched");
                vt_error_free(err);
        }
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_full_request),
                TAP_CASE(test_absent_fields_empty),
                TAP_CASE(test_unknown_fields_skipped),
                TAP_CASE(test_last_occurrence_wins),
                TAP_CASE(test_vmi_bytes_kept_whole),
                TAP_CASE(test_varint),
                TAP_CASE(test_refused),
                {0},
        });
}
