/* SPDX-License-Identifier: Apache-2.0 */
#include "kmip_msg.h"

#include <string.h>

#include "base/alloc.h"

static void begin_request(ttlv_enc *e, uint8_t *buf, size_t cap, enum kmip_op op) {
        ttlv_enc_init(e, buf, cap);
        ttlv_begin(e, KMIP_TAG_REQUEST_MESSAGE);
        ttlv_begin(e, KMIP_TAG_REQUEST_HEADER);
        ttlv_begin(e, KMIP_TAG_PROTOCOL_VERSION);
        ttlv_put_int(e, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
        ttlv_put_int(e, KMIP_TAG_PROTOCOL_VERSION_MINOR, 2);
        ttlv_end(e);
        ttlv_put_int(e, KMIP_TAG_BATCH_COUNT, 1);
        ttlv_end(e);
        ttlv_begin(e, KMIP_TAG_BATCH_ITEM);
        ttlv_put_enum(e, KMIP_TAG_OPERATION, op);
        ttlv_begin(e, KMIP_TAG_REQUEST_PAYLOAD);
}

static int end_request(ttlv_enc *e) {
        ttlv_end(e); /* payload */
        ttlv_end(e); /* batch item */
        ttlv_end(e); /* message */
        size_t n = 0;
        int r = ttlv_enc_finish(e, &n);
        if (r < 0)
                return r;
        return n > INT32_MAX ? -ENOBUFS : (int)n;
}

static void put_name_attribute(ttlv_enc *e, const char *name) {
        ttlv_begin(e, KMIP_TAG_ATTRIBUTE);
        ttlv_put_text(e, KMIP_TAG_ATTRIBUTE_NAME, "Name");
        ttlv_begin(e, KMIP_TAG_ATTRIBUTE_VALUE);
        ttlv_put_text(e, KMIP_TAG_NAME_VALUE, name);
        ttlv_put_enum(e, KMIP_TAG_NAME_TYPE, 1 /* uninterpreted text string */);
        ttlv_end(e);
        ttlv_end(e);
}

int kmip_req_create_aes256(uint8_t *buf, size_t cap, const char *name) {
        ttlv_enc e;
        begin_request(&e, buf, cap, KMIP_OP_CREATE);
        ttlv_put_enum(&e, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY);
        ttlv_begin(&e, KMIP_TAG_TEMPLATE_ATTRIBUTE);
        ttlv_begin(&e, KMIP_TAG_ATTRIBUTE);
        ttlv_put_text(&e, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Algorithm");
        ttlv_put_enum(&e, KMIP_TAG_ATTRIBUTE_VALUE, KMIP_ALG_AES);
        ttlv_end(&e);
        ttlv_begin(&e, KMIP_TAG_ATTRIBUTE);
        ttlv_put_text(&e, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
        ttlv_put_int(&e, KMIP_TAG_ATTRIBUTE_VALUE, 256);
        ttlv_end(&e);
        ttlv_begin(&e, KMIP_TAG_ATTRIBUTE);
        ttlv_put_text(&e, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Usage Mask");
        ttlv_put_int(&e, KMIP_TAG_ATTRIBUTE_VALUE,
                     KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT | KMIP_USAGE_WRAP_KEY | KMIP_USAGE_UNWRAP_KEY);
        ttlv_end(&e);
        if (name)
                put_name_attribute(&e, name);
        ttlv_end(&e);
        return end_request(&e);
}

int kmip_req_locate_by_name(uint8_t *buf, size_t cap, const char *name) {
        ttlv_enc e;
        begin_request(&e, buf, cap, KMIP_OP_LOCATE);
        put_name_attribute(&e, name);
        /* Only usable keys: a Create whose Activate never happened (crash in
         * between) leaves a Pre-Active orphan that must not be picked. */
        ttlv_begin(&e, KMIP_TAG_ATTRIBUTE);
        ttlv_put_text(&e, KMIP_TAG_ATTRIBUTE_NAME, "State");
        ttlv_put_enum(&e, KMIP_TAG_ATTRIBUTE_VALUE, 2 /* Active */);
        ttlv_end(&e);
        return end_request(&e);
}

int kmip_req_uid_only(uint8_t *buf, size_t cap, enum kmip_op op, const char *uid) {
        ttlv_enc e;
        begin_request(&e, buf, cap, op);
        ttlv_put_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        return end_request(&e);
}

int kmip_req_revoke(uint8_t *buf, size_t cap, const char *uid) {
        ttlv_enc e;
        begin_request(&e, buf, cap, KMIP_OP_REVOKE);
        ttlv_put_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        ttlv_begin(&e, KMIP_TAG_REVOCATION_REASON);
        ttlv_put_enum(&e, KMIP_TAG_REVOCATION_REASON_CODE, 5 /* cessation of operation */);
        ttlv_end(&e);
        return end_request(&e);
}

int kmip_req_query_operations(uint8_t *buf, size_t cap) {
        ttlv_enc e;
        begin_request(&e, buf, cap, KMIP_OP_QUERY);
        ttlv_put_enum(&e, KMIP_TAG_QUERY_FUNCTION, 1 /* Query Operations */);
        return end_request(&e);
}

int kmip_req_get_attribute(uint8_t *buf, size_t cap, const char *uid, const char *attribute) {
        ttlv_enc e;
        begin_request(&e, buf, cap, KMIP_OP_GET_ATTRIBUTES);
        ttlv_put_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        ttlv_put_text(&e, KMIP_TAG_ATTRIBUTE_NAME, attribute);
        return end_request(&e);
}

int kmip_req_crypt(uint8_t *buf, size_t cap, enum kmip_op op, const char *uid, const uint8_t iv[16],
                   const uint8_t *data, size_t len) {
        ttlv_enc e;
        begin_request(&e, buf, cap, op);
        ttlv_put_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        /* Field order as the spec lists them; PyKMIP reads them in order. */
        ttlv_begin(&e, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        ttlv_put_enum(&e, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CBC);
        ttlv_put_enum(&e, KMIP_TAG_PADDING_METHOD, KMIP_PAD_PKCS5);
        ttlv_put_enum(&e, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        ttlv_end(&e);
        ttlv_put_bytes(&e, KMIP_TAG_DATA, data, len);
        ttlv_put_bytes(&e, KMIP_TAG_IV_COUNTER_NONCE, iv, 16);
        return end_request(&e);
}

void kmip_reply_done(kmip_reply *r) {
        if (!r)
                return;
        free(r->message);
        *r = (kmip_reply){0};
}

static char *sanitise(const uint8_t *p, size_t n) {
        n = MIN(n, (size_t)200);
        char *s = xmalloc(n + 1);
        for (size_t i = 0; i < n; i++)
                s[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
        s[n] = '\0';
        return s;
}

static int count_children(const ttlv *parent, uint32_t tag, size_t *ret) {
        size_t cur = 0, n = 0;
        ttlv c;
        int r;
        while ((r = ttlv_next(parent, &cur, &c)) > 0)
                if (c.tag == tag)
                        n++;
        if (r < 0)
                return r;
        *ret = n;
        return 0;
}

int kmip_parse_reply(const uint8_t *buf, size_t len, enum kmip_op op, kmip_reply *ret, vt_error **err) {
        assert_return(buf && ret, -EINVAL);
        ttlv msg;
        int r = ttlv_parse(buf, len, &msg, err);
        if (r < 0)
                return r;
        if (msg.tag != KMIP_TAG_RESPONSE_MESSAGE || msg.type != TTLV_STRUCTURE)
                return vt_error_set(err, EBADMSG, "KMIP reply: not a ResponseMessage (tag 0x%06x)", msg.tag);

        ttlv hdr, ver;
        int32_t major = 0, batch_count = 0;
        if (ttlv_find(&msg, KMIP_TAG_RESPONSE_HEADER, TTLV_STRUCTURE, &hdr) < 0 ||
            ttlv_find(&hdr, KMIP_TAG_PROTOCOL_VERSION, TTLV_STRUCTURE, &ver) < 0 ||
            ttlv_get_int(&ver, KMIP_TAG_PROTOCOL_VERSION_MAJOR, &major) < 0 ||
            ttlv_get_int(&hdr, KMIP_TAG_BATCH_COUNT, &batch_count) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: missing or malformed ResponseHeader");
        if (major != 1)
                return vt_error_set(err, EBADMSG, "KMIP reply: protocol version %d.x is not KMIP 1.x", major);

        size_t items = 0;
        if (count_children(&msg, KMIP_TAG_BATCH_ITEM, &items) < 0 || items != 1 || batch_count != 1)
                return vt_error_set(err, EBADMSG, "KMIP reply: expected one batch item, got %zu (count %d)",
                                    items, batch_count);
        ttlv item;
        if (ttlv_find(&msg, KMIP_TAG_BATCH_ITEM, TTLV_STRUCTURE, &item) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed batch item");

        kmip_reply out = {0};
        uint32_t rop = 0;
        r = ttlv_get_enum(&item, KMIP_TAG_OPERATION, &rop);
        if (r == 0 && rop != (uint32_t)op)
                return vt_error_set(err, EBADMSG, "KMIP reply: answers operation 0x%x, expected 0x%x", rop, op);
        if (r < 0 && r != -ENOENT)
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed Operation");
        if (ttlv_get_enum(&item, KMIP_TAG_RESULT_STATUS, &out.status) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: missing ResultStatus");
        if (out.status > KMIP_STATUS_UNDONE)
                return vt_error_set(err, EBADMSG, "KMIP reply: unknown ResultStatus %u", out.status);
        r = ttlv_get_enum(&item, KMIP_TAG_RESULT_REASON, &out.reason);
        if (r < 0 && r != -ENOENT)
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed ResultReason");
        ttlv m;
        r = ttlv_find(&item, KMIP_TAG_RESULT_MESSAGE, TTLV_TEXT_STRING, &m);
        if (r < 0 && r != -ENOENT)
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed ResultMessage");
        bool has_message = r == 0;
        r = ttlv_find(&item, KMIP_TAG_RESPONSE_PAYLOAD, TTLV_STRUCTURE, &out.payload);
        if (r < 0 && r != -ENOENT)
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed ResponsePayload");
        out.has_payload = r == 0;
        if (has_message)
                out.message = sanitise(m.val, m.len);
        *ret = out;
        return 0;
}

static int need_payload(const kmip_reply *r, vt_error **err) {
        if (r->status != KMIP_STATUS_SUCCESS)
                return vt_error_set(err, EINVAL, "KMIP reply: operation did not succeed");
        if (!r->has_payload)
                return vt_error_set(err, EBADMSG, "KMIP reply: missing ResponsePayload");
        return 0;
}

int kmip_payload_uid(const kmip_reply *r, char **ret_uid, vt_error **err) {
        int k = need_payload(r, err);
        if (k < 0)
                return k;
        _cleanup_free_ char *uid = NULL;
        if (ttlv_get_text(&r->payload, KMIP_TAG_UNIQUE_IDENTIFIER, KMIP_UID_MAX, &uid) < 0 || !uid[0])
                return vt_error_set(err, EBADMSG, "KMIP reply: missing or malformed UniqueIdentifier");
        /* Ids end up in headers, statuses and messages: printable ASCII only. */
        for (const char *p = uid; *p; p++)
                if (*p < 0x21 || *p > 0x7e)
                        return vt_error_set(err, EBADMSG, "KMIP reply: UniqueIdentifier is not printable");
        *ret_uid = TAKE_PTR(uid);
        return 0;
}

int kmip_payload_locate(const kmip_reply *r, char **ret_uid, vt_error **err) {
        if (r->status == KMIP_STATUS_SUCCESS && r->has_payload &&
            ttlv_find(&r->payload, KMIP_TAG_UNIQUE_IDENTIFIER, TTLV_TEXT_STRING, NULL) == -ENOENT)
                return -ENOENT;
        if (r->status == KMIP_STATUS_SUCCESS && !r->has_payload)
                return -ENOENT;
        return kmip_payload_uid(r, ret_uid, err);
}

int kmip_payload_get_key(const kmip_reply *r, secmem **ret_key, vt_error **err) {
        int k = need_payload(r, err);
        if (k < 0)
                return k;
        uint32_t type = 0, fmt = 0, alg = 0;
        int32_t bits = 0;
        ttlv sym, block, value;
        const uint8_t *material;
        size_t n;
        if (ttlv_get_enum(&r->payload, KMIP_TAG_OBJECT_TYPE, &type) < 0 || type != KMIP_OBJECT_SYMMETRIC_KEY)
                return vt_error_set(err, EBADMSG, "KMIP reply: object is not a symmetric key");
        if (ttlv_find(&r->payload, KMIP_TAG_SYMMETRIC_KEY, TTLV_STRUCTURE, &sym) < 0 ||
            ttlv_find(&sym, KMIP_TAG_KEY_BLOCK, TTLV_STRUCTURE, &block) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: missing KeyBlock");
        if (ttlv_find(&block, KMIP_TAG_KEY_WRAPPING_DATA, TTLV_STRUCTURE, NULL) != -ENOENT)
                return vt_error_set(err, EBADMSG, "KMIP reply: key is wrapped by the server, not supported");
        if (ttlv_get_enum(&block, KMIP_TAG_KEY_FORMAT_TYPE, &fmt) < 0 || fmt != KMIP_FORMAT_RAW)
                return vt_error_set(err, EBADMSG, "KMIP reply: key format is not Raw");
        if (ttlv_get_enum(&block, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, &alg) < 0 || alg != KMIP_ALG_AES ||
            ttlv_get_int(&block, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, &bits) < 0 || bits != 256)
                return vt_error_set(err, EBADMSG, "KMIP reply: key is not AES-256");
        if (ttlv_find(&block, KMIP_TAG_KEY_VALUE, TTLV_STRUCTURE, &value) < 0 ||
            ttlv_get_bytes(&value, KMIP_TAG_KEY_MATERIAL, &material, &n) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: missing KeyMaterial");
        if (n != 32)
                return vt_error_set(err, EBADMSG, "KMIP reply: key material is %zu bytes, expected 32", n);
        return secmem_dup(material, n, ret_key, err);
}

int kmip_payload_names(const kmip_reply *r, const char *uid, char **names, size_t max, size_t *ret_n,
                       vt_error **err) {
        assert_return(r && uid && (names || max == 0) && ret_n, -EINVAL);
        int k = need_payload(r, err);
        if (k < 0)
                return k;
        _cleanup_free_ char *about = NULL;
        if (ttlv_get_text(&r->payload, KMIP_TAG_UNIQUE_IDENTIFIER, KMIP_UID_MAX, &about) < 0 ||
            strcmp(about, uid) != 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: GetAttributes about another object");
        size_t cur = 0, n = 0;
        ttlv c;
        int q;
        while ((q = ttlv_next(&r->payload, &cur, &c)) > 0) {
                if (c.tag != KMIP_TAG_ATTRIBUTE)
                        continue;
                _cleanup_free_ char *an = NULL, *nv = NULL;
                ttlv val;
                if (c.type != TTLV_STRUCTURE || ttlv_get_text(&c, KMIP_TAG_ATTRIBUTE_NAME, 64, &an) < 0) {
                        q = -EBADMSG;
                        break;
                }
                if (strcmp(an, "Name") != 0)
                        continue;
                if (ttlv_find(&c, KMIP_TAG_ATTRIBUTE_VALUE, TTLV_STRUCTURE, &val) < 0 ||
                    ttlv_get_text(&val, KMIP_TAG_NAME_VALUE, KMIP_NAME_MAX, &nv) < 0) {
                        q = -EBADMSG;
                        break;
                }
                if (n < max)
                        names[n++] = TAKE_PTR(nv);
        }
        if (q < 0) {
                for (size_t i = 0; i < n; i++)
                        free(names[i]);
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed GetAttributes payload");
        }
        *ret_n = n;
        return 0;
}

int kmip_payload_query_ops(const kmip_reply *r, uint32_t *ops, size_t max, size_t *ret_n, vt_error **err) {
        int k = need_payload(r, err);
        if (k < 0)
                return k;
        size_t cur = 0, n = 0;
        ttlv c;
        int q;
        while ((q = ttlv_next(&r->payload, &cur, &c)) > 0) {
                if (c.tag != KMIP_TAG_OPERATION)
                        continue;
                if (c.type != TTLV_ENUMERATION || c.len != 4)
                        return vt_error_set(err, EBADMSG, "KMIP reply: malformed Operation in Query");
                if (n < max)
                        ops[n] = ttlv_be32(c.val);
                n++;
        }
        if (q < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: malformed Query payload");
        *ret_n = MIN(n, max);
        return 0;
}

int kmip_payload_crypt(const kmip_reply *r, const uint8_t **ret_data, size_t *ret_len, vt_error **err) {
        int k = need_payload(r, err);
        if (k < 0)
                return k;
        if (ttlv_get_bytes(&r->payload, KMIP_TAG_DATA, ret_data, ret_len) < 0)
                return vt_error_set(err, EBADMSG, "KMIP reply: missing Data");
        return 0;
}

int kmip_reason_to_errno(uint32_t reason) {
        switch (reason) {
        case KMIP_REASON_ITEM_NOT_FOUND:
                return -ENOKEY;
        case KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL:
        case KMIP_REASON_PERMISSION_DENIED:
                return -EACCES;
        case KMIP_REASON_OPERATION_NOT_SUPPORTED:
                return -EOPNOTSUPP;
        case KMIP_REASON_CRYPTOGRAPHIC_FAILURE:
                return -EBADMSG;
        default:
                return -EPROTO;
        }
}

const char *kmip_reason_name(uint32_t reason) {
        switch (reason) {
        case 0:
                return "none";
        case KMIP_REASON_ITEM_NOT_FOUND:
                return "Item Not Found";
        case KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL:
                return "Authentication Not Successful";
        case KMIP_REASON_INVALID_MESSAGE:
                return "Invalid Message";
        case KMIP_REASON_OPERATION_NOT_SUPPORTED:
                return "Operation Not Supported";
        case 0x06:
                return "Missing Data";
        case 0x07:
                return "Invalid Field";
        case 0x08:
                return "Feature Not Supported";
        case KMIP_REASON_CRYPTOGRAPHIC_FAILURE:
                return "Cryptographic Failure";
        case 0x0B:
                return "Illegal Operation";
        case KMIP_REASON_PERMISSION_DENIED:
                return "Permission Denied";
        case KMIP_REASON_GENERAL_FAILURE:
                return "General Failure";
        default:
                return "other";
        }
}
