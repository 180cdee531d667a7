/* SPDX-License-Identifier: Apache-2.0 */
#include "keys/broker_client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "keys/provider.h"

#define MAX_TOKEN (64 * 1024)
#define MAX_ANSWER (16 * 1024)

struct broker_client {
        char *url, *ca_file, *token_file;
        long timeout_sec;
};

static void wipe_free(char *s) {
        if (s) {
                OPENSSL_cleanse(s, strlen(s));
                free(s);
        }
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char *, wipe_free)

int broker_client_new(const broker_client_options *o, broker_client **ret, vt_error **err) {
        if (!o->url || strncmp(o->url, "https://", 8) != 0 || !o->ca_file || !o->token_file)
                return vt_error_set(err, EINVAL, "the key broker needs an https:// url, a CA file and a token file");
        curl_global_init(CURL_GLOBAL_DEFAULT); /* reference-counted; the kube client did it already */
        broker_client *b = xnew(broker_client, 1);
        b->url = xstrdup(o->url);
        /* "https://host:port/" and "https://host:port" name the same broker. */
        size_t n = strlen(b->url);
        if (n > 8 && b->url[n - 1] == '/')
                b->url[n - 1] = '\0';
        b->ca_file = xstrdup(o->ca_file);
        b->token_file = xstrdup(o->token_file);
        b->timeout_sec = o->timeout_sec > 0 ? o->timeout_sec : 15;
        *ret = b;
        return 0;
}

void broker_client_free(broker_client *b) {
        if (!b)
                return;
        free(b->url);
        free(b->ca_file);
        free(b->token_file);
        free(b);
}

static size_t answer_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        vt_buf *a = userdata;
        size_t n = size * nmemb;
        if (a->len + n > MAX_ANSWER)
                return 0; /* curl: write error */
        vt_buf_append(a, ptr, n);
        return n;
}

static json_t *subject_json(const key_subject *s) {
        return json_pack("{s:s, s:s, s:s}", "namespace", s->ns, "vm", s->vm, "launcherUid", s->launcher_uid);
}

/* The pod's current token (the kubelet rotates the file). */
static int read_token(broker_client *b, char **ret, vt_error **err) {
        char *t = NULL;
        size_t len = 0;
        int r = read_full_file(b->token_file, MAX_TOKEN, &t, &len, err);
        if (r < 0)
                return r;
        while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
                t[--len] = '\0';
        if (len == 0) {
                wipe_free(t);
                return vt_error_set(err, EINVAL, "the key broker token file %s is empty", b->token_file);
        }
        *ret = t;
        return 0;
}

/* The error an answer's status means (see the header). */
static int answer_error(long code, const char *op, vt_error **err) {
        switch (code) {
        case 422:
                return keys_unwrap_failed(err);
        case 401:
        case 403:
                return vt_error_set(err, EACCES,
                                    "the key broker refused %s for this VM (HTTP %ld): this node may not have its key",
                                    op, code);
        case 502:
        case 503:
        case 504:
                return vt_error_set(err, EHOSTUNREACH, "the key broker cannot serve %s now (HTTP %ld)", op, code);
        default:
                return vt_error_set(err, EPROTO, "the key broker answered %s with HTTP %ld", op, code);
        }
}

/* POST body (wiped afterwards: it may hold a DEK) to path; on 200 the
 * answer's JSON object. */
static int broker_post(broker_client *b, const char *path, const char *op, json_t *body, json_t **ret,
                       vt_error **err) {
        _cleanup_(wipe_freep) char *token = NULL;
        int r = read_token(b, &token, err);
        if (r < 0)
                return r;
        _cleanup_(wipe_freep) char *data = json_dumps(body, JSON_COMPACT);
        if (!data)
                return vt_error_set(err, ENOMEM, "cannot encode the key broker request");
        _cleanup_(wipe_freep) char *auth = xasprintf("Authorization: Bearer %s", token);
        _cleanup_free_ char *url = xasprintf("%s%s", b->url, path);
        _cleanup_(vt_buf_wipe) vt_buf answer = {.sensitive = true};

        CURL *h = curl_easy_init();
        if (!h)
                return vt_error_set(err, ENOMEM, "cannot make an HTTP handle");
        struct curl_slist *hdrs = curl_slist_append(NULL, auth);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
        curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
        curl_easy_setopt(h, CURLOPT_CAINFO, b->ca_file);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, b->timeout_sec);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(data));
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, answer_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
        CURLcode cc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        /* The header list holds the token: wipe each entry before freeing. */
        for (struct curl_slist *e = hdrs; e; e = e->next)
                OPENSSL_cleanse(e->data, strlen(e->data));
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        if (cc != CURLE_OK)
                return vt_error_set(err, EHOSTUNREACH, "cannot reach the key broker at %s for %s: %s", b->url, op,
                                    curl_easy_strerror(cc));
        if (code != 200)
                return answer_error(code, op, err);
        json_error_t je;
        json_t *j = json_loadb(answer.data ? answer.data : "", answer.len, 0, &je);
        if (!j || !json_is_object(j)) {
                json_decref(j);
                return vt_error_set(err, EPROTO, "the key broker's answer to %s is not a JSON object", op);
        }
        *ret = j;
        return 0;
}

static const char *answer_string(json_t *a, const char *key) {
        return json_string_value(json_object_get(a, key));
}

int broker_client_unwrap(broker_client *b, const key_subject *s, const key_header *entry, secmem **ret_dek,
                         vt_error **err) {
        /* The entry as a header of its own: the broker parses it with the
         * same strict parser as the file (key_header_parse). */
        key_header one = {0};
        key_header_copy_entry(entry, &one);
        if (one.dek_generation == 0)
                one.dek_generation = 1;
        _cleanup_free_ char *doc = NULL;
        int r = key_header_format(&one, &doc, err);
        key_header_done(&one);
        if (r < 0)
                return r;
        json_t *body = json_pack("{s:o, s:s}", "subject", subject_json(s), "header", doc);
        json_t *a = NULL;
        r = broker_post(b, "/v1/unwrap", "an unwrap", body, &a, err);
        json_decref(body);
        if (r < 0)
                return r;
        const char *d = answer_string(a, "dek");
        uint8_t *raw = NULL;
        size_t len = 0;
        if (!d || keys_base64_decode(d, strlen(d), &raw, &len) < 0 || len != 32) {
                if (raw)
                        OPENSSL_cleanse(raw, len);
                free(raw);
                json_decref(a);
                return vt_error_set(err, EPROTO, "the key broker's unwrap answer holds no 256-bit key");
        }
        r = secmem_dup(raw, len, ret_dek, err);
        OPENSSL_cleanse(raw, len);
        free(raw);
        json_decref(a);
        return r;
}

int broker_client_wrap(broker_client *b, const key_subject *s, const char *kek_id, const char *version,
                       const secmem *dek, key_header *entry, vt_error **err) {
        _cleanup_(wipe_freep) char *d = keys_base64_encode(dek->data, dek->len);
        json_t *body = json_pack("{s:o, s:s?, s:s?, s:s}", "subject", subject_json(s), "kekId", kek_id, "version",
                                 version, "dek", d);
        json_t *a = NULL;
        int r = broker_post(b, "/v1/wrap", "a wrap", body, &a, err);
        json_decref(body);
        if (r < 0)
                return r;
        const char *doc = answer_string(a, "header");
        key_header h = {0};
        r = doc ? key_header_parse(doc, strlen(doc), &h, NULL) : -EBADMSG;
        json_decref(a);
        if (r < 0 || !key_header_has_current(&h) || (kek_id && strcmp(h.kek_id, kek_id) != 0)) {
                key_header_done(&h);
                return vt_error_set(err, EPROTO, "the key broker's wrap answer is not a key header wrapped as asked");
        }
        key_header_set_wrapping(entry, h.provider, h.kek_id, h.algorithm, TAKE_PTR(h.wrapped_key),
                                h.wrapped_key_len);
        key_header_done(&h);
        return 0;
}

int broker_client_kek_version(broker_client *b, const key_subject *s, const char *version, char **ret_kek_id,
                              vt_error **err) {
        json_t *body = json_pack("{s:o, s:s}", "subject", subject_json(s), "version", version);
        json_t *a = NULL;
        int r = broker_post(b, "/v1/kek-version", "a KEK version", body, &a, err);
        json_decref(body);
        if (r < 0)
                return r;
        const char *id = answer_string(a, "kekId");
        if (!id || !*id || strlen(id) > KEY_ID_MAX) {
                json_decref(a);
                return vt_error_set(err, EPROTO, "the key broker's answer names no KEK");
        }
        *ret_kek_id = xstrdup(id);
        json_decref(a);
        return 0;
}
