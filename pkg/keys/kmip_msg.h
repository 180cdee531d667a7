/* SPDX-License-Identifier: Apache-2.0 */
/* KMIP 1.x messages: building the requests the client sends and parsing the
 * replies, without any I/O (so the parser can be fuzzed on bytes). Only the
 * operations vtpm-agent uses: Create, Locate, Activate, GetAttributes (Name),
 * Encrypt, Decrypt, Query, Revoke, Destroy, and Get (tests only: the agent
 * never fetches a KEK). One batch item per message. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys/kmip_ttlv.h"
#include "keys/secmem.h"

/* Tags (KMIP 1.4 spec, section 9.1.3.1) */
enum {
        KMIP_TAG_ATTRIBUTE = 0x420008,
        KMIP_TAG_ATTRIBUTE_INDEX = 0x420009,
        KMIP_TAG_ATTRIBUTE_NAME = 0x42000A,
        KMIP_TAG_ATTRIBUTE_VALUE = 0x42000B,
        KMIP_TAG_BATCH_COUNT = 0x42000D,
        KMIP_TAG_BATCH_ITEM = 0x42000F,
        KMIP_TAG_BLOCK_CIPHER_MODE = 0x420011,
        KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM = 0x420028,
        KMIP_TAG_CRYPTOGRAPHIC_LENGTH = 0x42002A,
        KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS = 0x42002B,
        KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK = 0x42002C,
        KMIP_TAG_IV_COUNTER_NONCE = 0x42003D,
        KMIP_TAG_KEY_BLOCK = 0x420040,
        KMIP_TAG_KEY_FORMAT_TYPE = 0x420042,
        KMIP_TAG_KEY_MATERIAL = 0x420043,
        KMIP_TAG_KEY_VALUE = 0x420045,
        KMIP_TAG_KEY_WRAPPING_DATA = 0x420046,
        KMIP_TAG_NAME = 0x420053,
        KMIP_TAG_NAME_TYPE = 0x420054,
        KMIP_TAG_NAME_VALUE = 0x420055,
        KMIP_TAG_OBJECT_TYPE = 0x420057,
        KMIP_TAG_OPERATION = 0x42005C,
        KMIP_TAG_PADDING_METHOD = 0x42005F,
        KMIP_TAG_PROTOCOL_VERSION = 0x420069,
        KMIP_TAG_PROTOCOL_VERSION_MAJOR = 0x42006A,
        KMIP_TAG_PROTOCOL_VERSION_MINOR = 0x42006B,
        KMIP_TAG_QUERY_FUNCTION = 0x420074,
        KMIP_TAG_REQUEST_HEADER = 0x420077,
        KMIP_TAG_REQUEST_MESSAGE = 0x420078,
        KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
        KMIP_TAG_RESPONSE_HEADER = 0x42007A,
        KMIP_TAG_RESPONSE_MESSAGE = 0x42007B,
        KMIP_TAG_RESPONSE_PAYLOAD = 0x42007C,
        KMIP_TAG_RESULT_MESSAGE = 0x42007D,
        KMIP_TAG_RESULT_REASON = 0x42007E,
        KMIP_TAG_RESULT_STATUS = 0x42007F,
        KMIP_TAG_REVOCATION_REASON = 0x420081,
        KMIP_TAG_REVOCATION_REASON_CODE = 0x420082,
        KMIP_TAG_SYMMETRIC_KEY = 0x42008F,
        KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
        KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
        KMIP_TAG_DATA = 0x4200C2,
};

enum kmip_op {
        KMIP_OP_CREATE = 0x01,
        KMIP_OP_LOCATE = 0x08,
        KMIP_OP_GET = 0x0A,
        KMIP_OP_GET_ATTRIBUTES = 0x0B,
        KMIP_OP_ACTIVATE = 0x12,
        KMIP_OP_REVOKE = 0x13,
        KMIP_OP_DESTROY = 0x14,
        KMIP_OP_QUERY = 0x18,
        KMIP_OP_ENCRYPT = 0x1F,
        KMIP_OP_DECRYPT = 0x20,
};

enum {
        KMIP_STATUS_SUCCESS = 0,
        KMIP_STATUS_FAILED = 1,
        KMIP_STATUS_PENDING = 2,
        KMIP_STATUS_UNDONE = 3,
};

enum {
        KMIP_REASON_ITEM_NOT_FOUND = 0x01,
        KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
        KMIP_REASON_INVALID_MESSAGE = 0x04,
        KMIP_REASON_OPERATION_NOT_SUPPORTED = 0x05,
        KMIP_REASON_CRYPTOGRAPHIC_FAILURE = 0x0A,
        KMIP_REASON_PERMISSION_DENIED = 0x0C,
        KMIP_REASON_GENERAL_FAILURE = 0x100,
};

#define KMIP_OBJECT_SYMMETRIC_KEY 2
#define KMIP_ALG_AES 3
#define KMIP_MODE_CBC 1
#define KMIP_PAD_PKCS5 3
#define KMIP_FORMAT_RAW 1
#define KMIP_USAGE_ENCRYPT 0x04
#define KMIP_USAGE_DECRYPT 0x08
#define KMIP_USAGE_WRAP_KEY 0x10
#define KMIP_USAGE_UNWRAP_KEY 0x20

#define KMIP_UID_MAX 256
#define KMIP_MAX_REPLY (64 * 1024)

/* Requests are built into `buf` (secure memory when they carry key bytes).
 * Each returns the encoded length or a negative errno (-ENOBUFS). The
 * protocol version sent is 1.2: the first with Encrypt/Decrypt, and the one
 * PyKMIP parses requests as. */
int kmip_req_create_aes256(uint8_t *buf, size_t cap, const char *name);
/* Locate Active objects whose Name is `name`. */
int kmip_req_locate_by_name(uint8_t *buf, size_t cap, const char *name);
int kmip_req_uid_only(uint8_t *buf, size_t cap, enum kmip_op op, const char *uid); /* Activate, Get, Destroy */
int kmip_req_revoke(uint8_t *buf, size_t cap, const char *uid);
int kmip_req_query_operations(uint8_t *buf, size_t cap);
/* GetAttributes of `uid`, only the attribute called `attribute` ("Name"). */
int kmip_req_get_attribute(uint8_t *buf, size_t cap, const char *uid, const char *attribute);
/* Encrypt/Decrypt with AES-CBC-PKCS5 and an explicit 16-byte IV. */
int kmip_req_crypt(uint8_t *buf, size_t cap, enum kmip_op op, const char *uid, const uint8_t iv[16],
                   const uint8_t *data, size_t len);

/* A parsed reply: the single batch item's result. Pointers go into the reply
 * buffer, which must outlive it. */
typedef struct kmip_reply {
        uint32_t status; /* KMIP_STATUS_* */
        uint32_t reason; /* when failed, else 0 */
        char *message;   /* server's ResultMessage, sanitised to printable ASCII; may be NULL */
        bool has_payload;
        ttlv payload;
} kmip_reply;

void kmip_reply_done(kmip_reply *r);

/* Parse a ResponseMessage: exactly one batch item, for operation `op` (if
 * the reply names one). -EBADMSG on any structural problem. A failed
 * result is not an error here: callers look at status/reason. */
int kmip_parse_reply(const uint8_t *buf, size_t len, enum kmip_op op, kmip_reply *ret, vt_error **err);

/* Payload readers for successful replies. */
int kmip_payload_uid(const kmip_reply *r, char **ret_uid, vt_error **err);
/* Locate: the first identifier, or -ENOENT when none matched. */
int kmip_payload_locate(const kmip_reply *r, char **ret_uid, vt_error **err);
/* Get: a Raw AES key of 32 bytes into secure memory. */
int kmip_payload_get_key(const kmip_reply *r, secmem **ret_key, vt_error **err);
/* GetAttributes: the Name values of the object (up to `max`, each a copy
 * the caller frees; at most KMIP_NAME_MAX bytes) and how many. The reply
 * must be about `uid`. */
#define KMIP_NAME_MAX 256
int kmip_payload_names(const kmip_reply *r, const char *uid, char **names, size_t max, size_t *ret_n,
                       vt_error **err);
/* Query: the list of operations (up to `max`), and how many. */
int kmip_payload_query_ops(const kmip_reply *r, uint32_t *ops, size_t max, size_t *ret_n, vt_error **err);
/* Encrypt/Decrypt: Data (and IV if the server returned one). `data` points
 * into the reply buffer. */
int kmip_payload_crypt(const kmip_reply *r, const uint8_t **ret_data, size_t *ret_len, vt_error **err);

/* Map a failed result to -errno: ITEM_NOT_FOUND -ENOKEY, permission or
 * authentication -EACCES, not supported -EOPNOTSUPP, cryptographic failure
 * -EBADMSG, otherwise -EPROTO. */
int kmip_reason_to_errno(uint32_t reason);
const char *kmip_reason_name(uint32_t reason);
