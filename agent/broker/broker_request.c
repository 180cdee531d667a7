/* SPDX-License-Identifier: Apache-2.0 */
#include "broker_request.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <string.h>

#include "base/alloc.h"
#include "keys/provider.h"

#define DEK_LEN 32
#define UID_MAX 64

static const char *const op_names[_BROKER_OP_MAX] = {"unwrap", "wrap", "kek-version"};
static const char *const op_paths[_BROKER_OP_MAX] = {"/v1/unwrap", "/v1/wrap", "/v1/kek-version"};

/* The fields each body has, beside "subject". */
static const char *const op_fields[_BROKER_OP_MAX][4] = {
        [BROKER_OP_UNWRAP] = {"subject", "header", NULL},
        [BROKER_OP_WRAP] = {"subject", "kekId", "version", "dek"},
        [BROKER_OP_KEK_VERSION] = {"subject", "version", NULL},
};
static const char *const subject_fields[] = {"namespace", "vm", "launcherUid", NULL};

const char *broker_op_name(broker_op op) {
        return op < _BROKER_OP_MAX ? op_names[op] : "unknown";
}

int broker_op_from_path(const char *path) {
        for (int i = 0; i < _BROKER_OP_MAX; i++)
                if (path && strcmp(path, op_paths[i]) == 0)
                        return i;
        return -ENOENT;
}

void broker_request_done(broker_request *r) {
        free(r->ns);
        free(r->vm);
        free(r->launcher_uid);
        key_header_done(&r->header);
        free(r->kek_id);
        free(r->version);
        secmem_free(r->dek);
        *r = (broker_request){0};
}

/* Exactly these keys (NULL-terminated list, at most n), all present. */
static bool keys_exactly(const json_t *o, const char *const *names, size_t n) {
        size_t want = 0;
        while (want < n && names[want])
                want++;
        if (!json_is_object(o) || json_object_size(o) != want)
                return false;
        for (size_t i = 0; i < want; i++)
                if (!json_object_get(o, names[i]))
                        return false;
        return true;
}

/* A DNS-1123 label (a namespace; a VM name, which its launcher carries as a
 * label value, so also at most 63 characters). */
static bool dns_label(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-' || s[n - 1] == '.' || s[0] == '.')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
                        return false;
        return true;
}

static bool pod_uid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > UID_MAX)
                return false;
        return strspn(s, "0123456789abcdef-") == n;
}

static int parse_subject(const json_t *sub, broker_request *r, vt_error **err) {
        if (!keys_exactly(sub, subject_fields, ELEMENTSOF(subject_fields)))
                return vt_error_set(err, EBADMSG, "the subject must have exactly namespace, vm and launcherUid");
        const char *ns = json_string_value(json_object_get(sub, "namespace"));
        const char *vm = json_string_value(json_object_get(sub, "vm"));
        const char *uid = json_string_value(json_object_get(sub, "launcherUid"));
        if (!dns_label(ns) || strchr(ns, '.'))
                return vt_error_set(err, EBADMSG, "the subject's namespace is not a namespace name");
        if (!dns_label(vm))
                return vt_error_set(err, EBADMSG, "the subject's vm is not a VM name");
        if (!pod_uid(uid))
                return vt_error_set(err, EBADMSG, "the subject's launcherUid is not a pod uid");
        r->ns = xstrdup(ns);
        r->vm = xstrdup(vm);
        r->launcher_uid = xstrdup(uid);
        return 0;
}

static int parse_header(const json_t *v, key_header *ret, vt_error **err) {
        const char *doc = json_string_value(v);
        size_t n = json_string_length(v);
        if (!doc || n > KEY_HEADER_MAX_SIZE)
                return vt_error_set(err, EBADMSG, "header must be a key header document (a JSON string)");
        key_header h = {0};
        if (key_header_parse(doc, n, &h, NULL) < 0)
                return vt_error_set(err, EBADMSG, "header is not a valid key header");
        if (!key_header_has_current(&h) || h.next || h.dek_generation < 1) {
                key_header_done(&h);
                return vt_error_set(err, EBADMSG, "header must hold one current key entry and no next");
        }
        *ret = h;
        return 0;
}

/* A JSON string or null into *ret (NULL for null). */
static int optional_string(const json_t *v, bool (*valid)(const char *), const char *name, char **ret,
                           vt_error **err) {
        if (json_is_null(v))
                return 0;
        const char *s = json_string_value(v);
        if (!s || strlen(s) != json_string_length(v) || !valid(s))
                return vt_error_set(err, EBADMSG, "%s must be null or a valid %s", name, name);
        *ret = xstrdup(s);
        return 0;
}

static int parse_dek(const json_t *v, secmem **ret, vt_error **err) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        /* base64 of 32 bytes is 44 characters; decode nothing longer. */
        if (!s || n != 4 * ((DEK_LEN + 2) / 3))
                return vt_error_set(err, EBADMSG, "dek must be the base64 of a 256-bit key");
        uint8_t *raw = NULL;
        size_t len = 0;
        int r = keys_base64_decode(s, n, &raw, &len);
        if (r == 0 && len == DEK_LEN)
                r = secmem_dup(raw, len, ret, err);
        else
                r = vt_error_set(err, EBADMSG, "dek must be the base64 of a 256-bit key");
        if (raw)
                OPENSSL_cleanse(raw, len);
        free(raw);
        return r;
}

static int parse_fields(broker_op op, const json_t *root, broker_request *r, vt_error **err) {
        int k = parse_subject(json_object_get(root, "subject"), r, err);
        if (k < 0)
                return k;
        switch (op) {
        case BROKER_OP_UNWRAP:
                return parse_header(json_object_get(root, "header"), &r->header, err);
        case BROKER_OP_WRAP:
                k = optional_string(json_object_get(root, "kekId"), key_id_valid, "kekId", &r->kek_id, err);
                if (k >= 0)
                        k = optional_string(json_object_get(root, "version"), keys_rotation_id_valid, "version",
                                            &r->version, err);
                if (k >= 0)
                        k = parse_dek(json_object_get(root, "dek"), &r->dek, err);
                return k;
        case BROKER_OP_KEK_VERSION:
                k = optional_string(json_object_get(root, "version"), keys_rotation_id_valid, "version", &r->version,
                                    err);
                if (k >= 0 && !r->version)
                        k = vt_error_set(err, EBADMSG, "version must be a valid version");
                return k;
        default:
                return vt_error_set(err, EINVAL, "unknown key broker operation");
        }
}

int broker_request_parse(broker_op op, const char *body, size_t len, broker_request *ret, vt_error **err) {
        assert_return(op < _BROKER_OP_MAX && ret, -EINVAL);
        if (len > BROKER_MAX_BODY)
                return vt_error_set(err, EBADMSG, "the request body is larger than %u bytes", BROKER_MAX_BODY);
        json_error_t je;
        /* No message from jansson: it would quote the body. */
        json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
        int r = 0;
        broker_request q = {.op = op};
        if (!root)
                r = vt_error_set(err, EBADMSG, "the request body is not JSON");
        else if (!keys_exactly(root, op_fields[op], ELEMENTSOF(op_fields[op])))
                r = vt_error_set(err, EBADMSG, "the %s request must have exactly the fields of the protocol",
                                 broker_op_name(op));
        else
                r = parse_fields(op, root, &q, err);
        json_decref(root);
        if (r < 0) {
                broker_request_done(&q);
                return r;
        }
        *ret = q;
        return 0;
}
