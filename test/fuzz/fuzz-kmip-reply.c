/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the KMIP reply parser: bytes from the network -> ResponseMessage ->
 * every payload reader. The seed corpus is real PyKMIP 0.10 replies
 * (Query, Create, Activate, Get, Encrypt, Locate, GetAttributes, failures). */
#include <stdint.h>
#include <string.h>

#include "keys/kmip_msg.h"

static const enum kmip_op ops[] = {
        KMIP_OP_CREATE, KMIP_OP_LOCATE, KMIP_OP_GET,     KMIP_OP_ACTIVATE, KMIP_OP_REVOKE,
        KMIP_OP_DESTROY, KMIP_OP_QUERY,  KMIP_OP_ENCRYPT, KMIP_OP_DECRYPT, KMIP_OP_GET_ATTRIBUTES,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* A copy of exactly `size` bytes, so ASan sees any overread. */
        uint8_t *buf = malloc(size ? size : 1);
        memcpy(buf, data, size);
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
                kmip_reply r = {0};
                vt_error *err = NULL;
                if (kmip_parse_reply(buf, size, ops[i], &r, &err) == 0) {
                        (void)kmip_reason_to_errno(r.reason);
                        (void)kmip_reason_name(r.reason);
                        char *uid = NULL;
                        if (kmip_payload_uid(&r, &uid, NULL) == 0)
                                free(uid);
                        uid = NULL;
                        if (kmip_payload_locate(&r, &uid, NULL) == 0)
                                free(uid);
                        secmem *k = NULL;
                        if (kmip_payload_get_key(&r, &k, NULL) == 0)
                                secmem_free(k);
                        char *names[4];
                        size_t nn = 0;
                        if (kmip_payload_names(&r, "1", names, 4, &nn, NULL) == 0)
                                for (size_t j = 0; j < nn; j++)
                                        free(names[j]);
                        uint32_t q[8];
                        size_t n = 0;
                        (void)kmip_payload_query_ops(&r, q, 8, &n, NULL);
                        const uint8_t *d;
                        size_t dl;
                        if (kmip_payload_crypt(&r, &d, &dl, NULL) == 0 && dl)
                                (void)(d[0] + d[dl - 1]);
                }
                kmip_reply_done(&r);
                vt_error_free(err);
        }
        free(buf);
        return 0;
}
