/* SPDX-License-Identifier: Apache-2.0 */
/* agent/broker/broker_request.c: the key broker's request bodies, exactly as
 * pkg/keys/broker_client.c sends them, are accepted; anything else is 400
 * (-EBADMSG) with a message that never quotes the body. One row per rule:
 * each row is a JSON merge patch (null deletes) of a good body, or raw text. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "broker/broker_request.h"
#include "keys/header.h"
#include "keys/wrap.h"
#include "tap.h"

#define DEK_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" /* bytes 0..31 */

/* A key header document of one current entry, as key_header_format() makes it. */
static char *header_doc(bool with_next) {
        static uint8_t wrapped[40];
        for (size_t i = 0; i < sizeof(wrapped); i++)
                wrapped[i] = (uint8_t)(0xa0 + i);
        key_header h = {.provider = "secret", .kek_id = "vtpm-system/vtpm-kek-tenant-a/v1",
                        .algorithm = KEYS_ALG_AES256_KWP, .wrapped_key = wrapped, .wrapped_key_len = 40,
                        .dek_generation = 1};
        key_header next = h;
        next.dek_generation = 2;
        if (with_next)
                h.next = &next;
        char *doc = NULL;
        if (key_header_format(&h, &doc, NULL) < 0)
                abort();
        return doc;
}

static json_t *subject(void) {
        return json_pack("{s:s, s:s, s:s}", "namespace", "tenant-a", "vm", "vm1", "launcherUid",
                         "6f1c2d3e-0000-4000-8000-00000000abcd");
}

static json_t *good_body(broker_op op) {
        switch (op) {
        case BROKER_OP_UNWRAP: {
                char *doc = header_doc(false);
                json_t *j = json_pack("{s:o, s:s}", "subject", subject(), "header", doc);
                free(doc);
                return j;
        }
        case BROKER_OP_WRAP:
                return json_pack("{s:o, s:n, s:n, s:s}", "subject", subject(), "kekId", "version", "dek", DEK_B64);
        default:
                return json_pack("{s:o, s:s}", "subject", subject(), "version", "2026-q4");
        }
}

static void merge_patch(json_t *target, json_t *patch) {
        const char *k;
        json_t *v;
        json_object_foreach(patch, k, v) {
                json_t *t = json_object_get(target, k);
                if (json_is_null(v) && !json_is_null(t))
                        json_object_del(target, k);
                else if (json_is_object(v) && json_is_object(t))
                        merge_patch(t, v);
                else
                        json_object_set(target, k, v);
        }
}

typedef struct row {
        const char *name;
        broker_op op;
        const char *patch; /* merge patch of the good body; or */
        const char *raw;   /* the whole body */
        bool ok;
        const char *why;
} row;

static const row rows[] = {
        {"unwrap as the client sends it", BROKER_OP_UNWRAP, NULL, NULL, true, NULL},
        {"wrap with kekId and version null", BROKER_OP_WRAP, NULL, NULL, true, NULL},
        {"wrap under a kekId", BROKER_OP_WRAP, "{\"kekId\": \"vtpm-system/vtpm-kek-tenant-a/v1\"}", NULL, true, NULL},
        {"wrap under a version", BROKER_OP_WRAP, "{\"version\": \"2026-q4\"}", NULL, true, NULL},
        {"kek-version", BROKER_OP_KEK_VERSION, NULL, NULL, true, NULL},
        {"VM name with dots", BROKER_OP_KEK_VERSION, "{\"subject\": {\"vm\": \"vm.1.example\"}}", NULL, true, NULL},
        {"not JSON", BROKER_OP_UNWRAP, NULL, "{\"subject\": EVILVALUE", false, "not JSON"},
        {"empty body", BROKER_OP_WRAP, NULL, "", false, "not JSON"},
        {"an array", BROKER_OP_UNWRAP, NULL, "[1, 2]", false, "exactly the fields"},
        {"duplicate field", BROKER_OP_KEK_VERSION, NULL,
         "{\"subject\": {\"namespace\": \"a\", \"vm\": \"b\", \"launcherUid\": \"c\"}, \"version\": \"v1\", "
         "\"version\": \"v2\"}",
         false, "not JSON"},
        {"unknown field", BROKER_OP_UNWRAP, "{\"node\": \"node-2\"}", NULL, false, "exactly the fields"},
        {"unwrap without header", BROKER_OP_UNWRAP, "{\"header\": null}", NULL, false, "exactly the fields"},
        {"wrap without kekId (null is not absent)", BROKER_OP_WRAP, NULL,
         "{\"subject\": {\"namespace\": \"a\", \"vm\": \"b\", \"launcherUid\": \"c\"}, \"version\": null, \"dek\": \""
         DEK_B64 "\"}",
         false, "exactly the fields"},
        {"subject with an extra field", BROKER_OP_UNWRAP, "{\"subject\": {\"node\": \"node-2\"}}", NULL, false,
         "subject must have exactly"},
        {"subject without launcherUid", BROKER_OP_UNWRAP, "{\"subject\": {\"launcherUid\": null}}", NULL, false,
         "subject must have exactly"},
        {"subject not an object", BROKER_OP_KEK_VERSION, "{\"subject\": \"tenant-a/vm1\"}", NULL, false,
         "subject must have exactly"},
        {"namespace with capitals", BROKER_OP_UNWRAP, "{\"subject\": {\"namespace\": \"EVILVALUE\"}}", NULL, false,
         "namespace"},
        {"namespace with a dot", BROKER_OP_UNWRAP, "{\"subject\": {\"namespace\": \"a.b\"}}", NULL, false, "namespace"},
        {"namespace a path", BROKER_OP_UNWRAP, "{\"subject\": {\"namespace\": \"../secrets\"}}", NULL, false,
         "namespace"},
        {"namespace of 64 characters", BROKER_OP_UNWRAP,
         "{\"subject\": {\"namespace\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}", NULL,
         false, "namespace"},
        {"namespace not a string", BROKER_OP_UNWRAP, "{\"subject\": {\"namespace\": 7}}", NULL, false, "namespace"},
        {"VM name widening the label selector", BROKER_OP_UNWRAP,
         "{\"subject\": {\"vm\": \"vm1,kubevirt.io!=x\"}}", NULL, false, "vm is not"},
        {"VM name empty", BROKER_OP_UNWRAP, "{\"subject\": {\"vm\": \"\"}}", NULL, false, "vm is not"},
        {"VM name ending in a dash", BROKER_OP_UNWRAP, "{\"subject\": {\"vm\": \"vm-\"}}", NULL, false, "vm is not"},
        {"launcher uid with capitals", BROKER_OP_UNWRAP, "{\"subject\": {\"launcherUid\": \"EVILVALUE\"}}", NULL,
         false, "launcherUid"},
        {"launcher uid with a slash", BROKER_OP_UNWRAP, "{\"subject\": {\"launcherUid\": \"abc/def\"}}", NULL, false,
         "launcherUid"},
        {"header not a string", BROKER_OP_UNWRAP, "{\"header\": {\"version\": 1}}", NULL, false, "JSON string"},
        {"header not a key header", BROKER_OP_UNWRAP, "{\"header\": \"{\\\"version\\\": 1}\"}", NULL, false,
         "not a valid key header"},
        {"header garbage", BROKER_OP_UNWRAP, "{\"header\": \"EVILVALUE\"}", NULL, false, "not a valid key header"},
        {"dek not base64", BROKER_OP_WRAP, "{\"dek\": \"EVILVALUE!!EVILVALUE!!EVILVALUE!!EVILVALUE!!\"}", NULL, false,
         "256-bit"},
        {"dek of 31 bytes", BROKER_OP_WRAP, "{\"dek\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\"}", NULL, false,
         "256-bit"},
        {"dek of 33 bytes", BROKER_OP_WRAP, "{\"dek\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\"}", NULL, false,
         "256-bit"},
        {"dek unpadded", BROKER_OP_WRAP, "{\"dek\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}", NULL, false,
         "256-bit"},
        {"dek null", BROKER_OP_WRAP, NULL,
         "{\"subject\": {\"namespace\": \"a\", \"vm\": \"b\", \"launcherUid\": \"c\"}, \"kekId\": null, \"version\": "
         "null, \"dek\": null}",
         false, "256-bit"},
        {"kekId with a newline", BROKER_OP_WRAP, "{\"kekId\": \"a\\nb\"}", NULL, false, "kekId"},
        {"kekId empty", BROKER_OP_WRAP, "{\"kekId\": \"\"}", NULL, false, "kekId"},
        {"kekId a number", BROKER_OP_WRAP, "{\"kekId\": 42}", NULL, false, "kekId"},
        {"version a path", BROKER_OP_WRAP, "{\"version\": \"../x\"}", NULL, false, "version"},
        {"kek-version without a version", BROKER_OP_KEK_VERSION, "{\"version\": null}", NULL, false,
         "exactly the fields"},
        {"kek-version with version null", BROKER_OP_KEK_VERSION, NULL,
         "{\"subject\": {\"namespace\": \"a\", \"vm\": \"b\", \"launcherUid\": \"c\"}, \"version\": null}", false,
         "version"},
        {"kek-version with a wrap's fields", BROKER_OP_KEK_VERSION, "{\"dek\": \"" DEK_B64 "\"}", NULL, false,
         "exactly the fields"},
};

static void run_row(const row *w) {
        char *text = NULL;
        if (w->raw)
                text = strdup(w->raw);
        else {
                json_t *b = good_body(w->op);
                if (w->patch) {
                        json_t *p = json_loads(w->patch, 0, NULL);
                        if (!p)
                                abort();
                        merge_patch(b, p);
                        json_decref(p);
                }
                text = json_dumps(b, JSON_COMPACT);
                json_decref(b);
        }
        broker_request q = {0};
        vt_error *err = NULL;
        int r = broker_request_parse(w->op, text, strlen(text), &q, &err);
        printf("# %s: %s -> %d %s\n", broker_op_name(w->op), w->name, r, err ? err->msg : "");
        if (w->ok) {
                check_int_eq(r, 0);
                check_str_eq(q.ns, "tenant-a");
                check(q.launcher_uid && q.vm);
        } else {
                check_int_eq(r, -EBADMSG);
                check_contains(err ? err->msg : NULL, w->why);
                /* Never what the body said. */
                check(!err || !strstr(err->msg, "EVILVALUE"));
                check(!q.ns && !q.dek && !q.header.provider); /* nothing half-set */
        }
        broker_request_done(&q);
        vt_error_free(err);
        free(text);
}

static void test_rows(void) {
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                run_row(&rows[i]);
}

static void test_fields(void) {
        json_t *b = good_body(BROKER_OP_WRAP);
        json_object_set_new(b, "kekId", json_string("vtpm-system/vtpm-kek-tenant-a/v1"));
        char *text = json_dumps(b, JSON_COMPACT);
        broker_request q = {0};
        check_int_eq(broker_request_parse(BROKER_OP_WRAP, text, strlen(text), &q, NULL), 0);
        check_str_eq(q.kek_id, "vtpm-system/vtpm-kek-tenant-a/v1");
        check(!q.version);
        check(q.dek && q.dek->len == 32 && q.dek->data[0] == 0 && q.dek->data[31] == 31);
        key_subject s = broker_request_subject(&q);
        check_str_eq(s.ns, "tenant-a");
        check_str_eq(s.vm, "vm1");
        check_str_eq(s.launcher_uid, "6f1c2d3e-0000-4000-8000-00000000abcd");
        broker_request_done(&q);
        free(text);
        json_decref(b);

        b = good_body(BROKER_OP_UNWRAP);
        text = json_dumps(b, JSON_COMPACT);
        check_int_eq(broker_request_parse(BROKER_OP_UNWRAP, text, strlen(text), &q, NULL), 0);
        check_str_eq(q.header.kek_id, "vtpm-system/vtpm-kek-tenant-a/v1");
        check_int_eq(q.header.wrapped_key_len, 40);
        check_int_eq(q.header.dek_generation, 1);
        broker_request_done(&q);
        free(text);
        json_decref(b);
}

static void test_header_with_next(void) {
        char *doc = header_doc(true);
        json_t *b = json_pack("{s:o, s:s}", "subject", subject(), "header", doc);
        char *text = json_dumps(b, JSON_COMPACT);
        broker_request q = {0};
        vt_error *err = NULL;
        check_int_eq(broker_request_parse(BROKER_OP_UNWRAP, text, strlen(text), &q, &err), -EBADMSG);
        check_contains(err ? err->msg : NULL, "no next");
        vt_error_free(err);
        free(text);
        free(doc);
        json_decref(b);
}

static void test_too_large(void) {
        size_t n = BROKER_MAX_BODY + 1;
        char *big = malloc(n);
        memset(big, ' ', n);
        check_int_eq(broker_request_parse(BROKER_OP_UNWRAP, big, n, &(broker_request){0}, NULL), -EBADMSG);
        free(big);
}

static void test_paths(void) {
        check_int_eq(broker_op_from_path("/v1/unwrap"), BROKER_OP_UNWRAP);
        check_int_eq(broker_op_from_path("/v1/wrap"), BROKER_OP_WRAP);
        check_int_eq(broker_op_from_path("/v1/kek-version"), BROKER_OP_KEK_VERSION);
        check_int_eq(broker_op_from_path("/v1/unwrap/"), -ENOENT);
        check_int_eq(broker_op_from_path("/v1/Unwrap"), -ENOENT);
        check_int_eq(broker_op_from_path("/v2/wrap"), -ENOENT);
        check_int_eq(broker_op_from_path(""), -ENOENT);
        check_str_eq(broker_op_name(BROKER_OP_KEK_VERSION), "kek-version");
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_rows),
                TAP_CASE(test_fields),
                TAP_CASE(test_header_with_next),
                TAP_CASE(test_too_large),
                TAP_CASE(test_paths),
                {0},
        });
}
