/* SPDX-License-Identifier: Apache-2.0 */
#include "nodehook.h"

#include <string.h>

#include "base/alloc.h"
#include "protowire.h"

#define REQUEST "ExecuteNodeHookRequest"

/* A proto3 string kept as a C string: UTF-8 and, for C's sake, no NUL. */
static int take_string(const pw_field *f, const char *name, char **s, vt_error **err) {
        if (f->wire_type != PW_LEN)
                return vt_error_set(err, EBADMSG, "malformed " REQUEST ": %s has wire type %u, not 2", name,
                                    f->wire_type);
        if (!pw_utf8_valid(f->data, f->len))
                return vt_error_set(err, EBADMSG, "invalid " REQUEST ": %s is not valid UTF-8", name);
        if (memchr(f->data, '\0', f->len))
                return vt_error_set(err, EBADMSG, "invalid " REQUEST ": %s contains a NUL character", name);
        free(*s);
        *s = xstrndup((const char *)f->data, f->len);
        return 0;
}

static int decode_node_context(const pw_field *nc, char **node_name, vt_error **err) {
        if (nc->wire_type != PW_LEN)
                return vt_error_set(err, EBADMSG, "malformed " REQUEST ": node_context has wire type %u, not 2",
                                    nc->wire_type);
        pw_reader r = pw_reader_init(nc->data, nc->len);
        pw_field f;
        int k;
        while ((k = pw_next(&r, &f, REQUEST ".node_context", err)) > 0)
                if (f.number == 1) {
                        int q = take_string(&f, "node_context.node_name", node_name, err);
                        if (q < 0)
                                return q;
                }
        return k;
}

int nodehook_request_decode(const uint8_t *msg, size_t len, nodehook_request *ret, vt_error **err) {
        assert_return((msg || len == 0) && ret, -EINVAL);
        _cleanup_free_ char *hook_point = xstrdup(""), *node_name = xstrdup("");
        const uint8_t *vmi = NULL;
        size_t vmi_len = 0;
        pw_reader r = pw_reader_init(msg, len);
        pw_field f;
        int k;
        while ((k = pw_next(&r, &f, REQUEST, err)) > 0) {
                int q = 0;
                switch (f.number) {
                case 1:
                        q = take_string(&f, "hookPoint", &hook_point, err);
                        break;
                case 2:
                        if (f.wire_type != PW_LEN)
                                return vt_error_set(err, EBADMSG, "malformed " REQUEST ": vmi has wire type %u, not 2",
                                                    f.wire_type);
                        /* Kept as a pointer into msg until the end: copied once. */
                        vmi = f.data;
                        vmi_len = f.len;
                        break;
                case 3:
                        q = decode_node_context(&f, &node_name, err);
                        break;
                default: /* a newer KubeVirt's field: skipped, as protobuf does */
                        break;
                }
                if (q < 0)
                        return q;
        }
        if (k < 0)
                return k;
        char *v = xmalloc(vmi_len + 1);
        if (vmi_len)
                memcpy(v, vmi, vmi_len);
        v[vmi_len] = '\0';
        *ret = (nodehook_request){
                .hook_point = TAKE_PTR(hook_point),
                .vmi = v,
                .vmi_len = vmi_len,
                .node_name = TAKE_PTR(node_name),
        };
        return 0;
}

void nodehook_request_done(nodehook_request *r) {
        if (!r)
                return;
        free(r->hook_point);
        free(r->vmi);
        free(r->node_name);
        *r = (nodehook_request){0};
}
