/* SPDX-License-Identifier: Apache-2.0 */
/* The key broker's request bodies (the wire protocol is in README "Keys off
 * the nodes" and pkg/keys/broker_client.c, its client): parsed strictly, since
 * anybody who reaches the Service can send one. Unknown, missing or
 * duplicate fields, wrong types, names that are not Kubernetes names, bad
 * base64, a DEK that is not 256 bits and a key header that key_header_parse()
 * refuses are all -EBADMSG (HTTP 400). Messages say what is wrong, never what
 * the body says. The DEK lands in locked memory (secmem); every other buffer
 * that held it is wiped. */
#pragma once

#include <stddef.h>

#include "base/error.h"
#include "keys/subject.h"
#include "keys/header.h"
#include "keys/secmem.h"

#define BROKER_MAX_BODY (16u << 10)

typedef enum broker_op {
        BROKER_OP_UNWRAP,      /* POST /v1/unwrap */
        BROKER_OP_WRAP,        /* POST /v1/wrap */
        BROKER_OP_KEK_VERSION, /* POST /v1/kek-version */
        _BROKER_OP_MAX,
} broker_op;

/* "unwrap", "wrap", "kek-version" (for logs). */
const char *broker_op_name(broker_op op);
/* The operation a URL path names; -ENOENT for any other path. */
int broker_op_from_path(const char *path);

typedef struct broker_request {
        broker_op op;
        char *ns, *vm, *launcher_uid; /* the subject */
        key_header header;            /* unwrap: the entry (current, dekGeneration >= 1, no next) */
        char *kek_id;                 /* wrap: NULL when null */
        char *version;                /* wrap: NULL when null; kek-version: set */
        secmem *dek;                  /* wrap: 32 bytes */
} broker_request;

int broker_request_parse(broker_op op, const char *body, size_t len, broker_request *ret, vt_error **err);
void broker_request_done(broker_request *r);

static inline key_subject broker_request_subject(const broker_request *r) {
        return (key_subject){.ns = r->ns, .vm = r->vm, .launcher_uid = r->launcher_uid};
}
