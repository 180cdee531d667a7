/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the key broker's request-body parser (agent/broker/broker_request.c): any
 * client that reaches the broker's Service may send a body, and an
 * authenticated node agent may send any. The first byte picks the operation,
 * the rest is the body. Whatever is accepted has every field of its operation
 * set and valid; an error never quotes the input (only printable fixed text,
 * no "near '...'" from the JSON parser). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_request.h"

static void check_message(const vt_error *err) {
        if (!err)
                return;
        if (strstr(err->msg, "near"))
                abort();
        for (const char *p = err->msg; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                        abort();
}

static void check_accepted(const broker_request *q) {
        if (!q->ns || !*q->ns || !q->vm || !*q->vm || !q->launcher_uid || !*q->launcher_uid)
                abort();
        /* They go into API paths and a label selector. */
        if (strpbrk(q->ns, "/,=!?&%. ") || strpbrk(q->vm, "/,=!?&% ") || strpbrk(q->launcher_uid, "/,=!?&%. "))
                abort();
        switch (q->op) {
        case BROKER_OP_UNWRAP:
                if (!key_header_has_current(&q->header) || q->header.next || q->dek || q->kek_id || q->version)
                        abort();
                break;
        case BROKER_OP_WRAP:
                if (!q->dek || q->dek->len != 32)
                        abort();
                break;
        case BROKER_OP_KEK_VERSION:
                if (!q->version || q->dek || q->kek_id)
                        abort();
                break;
        default:
                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        broker_op op = (broker_op)(data[0] % _BROKER_OP_MAX);
        size_t n = size - 1;
        char *buf = malloc(n ? n : 1);
        memcpy(buf, data + 1, n);
        broker_request q = {0};
        vt_error *err = NULL;
        int r = broker_request_parse(op, buf, n, &q, &err);
        if (r == 0) {
                if (err || q.op != op)
                        abort();
                check_accepted(&q);
        } else if (r != -EBADMSG || !err || q.ns || q.dek)
                abort();
        check_message(err);
        broker_request_done(&q);
        vt_error_free(err);
        free(buf);
        return 0;
}
