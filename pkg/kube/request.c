/* SPDX-License-Identifier: Apache-2.0 */
/* One request to the API server and the verbs on top of it; errors as
 * client.h describes them. */
#include "kube/client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "kube/client_internal.h"

#define REQUEST_TIMEOUT_SEC 60L


/* Requests and answers that carry key material or credentials: Secrets, and
 * TokenReviews (the reviewed token is in the request and echoed back). Their
 * bytes are wiped, not just freed. */
static bool path_sensitive(const char *path) {
        return strstr(path, "/secrets") != NULL || strstr(path, "/tokenreviews") != NULL;
}


size_t kube_sink_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        kube_body_sink *s = userdata;
        size_t n = size * nmemb;
        if (s->buf.len + n > s->limit) {
                s->overflow = true;
                return 0;
        }
        vt_buf_append(&s->buf, ptr, n);
        return n;
}

static int errno_for_status(long code, const char *reason) {
        switch (code) {
        case 400:
        case 422:
                return EINVAL;
        case 401:
                return EKEYREJECTED;
        case 403:
                return EACCES;
        case 404:
                return ENOENT;
        case 409:
                return reason && strcmp(reason, "AlreadyExists") == 0 ? EEXIST : ESTALE;
        case 410:
                return ETIME;
        case 429:
        case 503:
        case 504:
                return EAGAIN;
        default:
                return EIO;
        }
}

int kube_api_error(const char *method, const char *path, long code, const char *body, size_t len,
                     vt_error **err) {
        json_t *st = body && len ? json_loadb(body, len, 0, NULL) : NULL;
        const char *reason = json_string_value(json_object_get(st, "reason"));
        const char *message = json_string_value(json_object_get(st, "message"));
        if (!reason || !*reason)
                reason = code == 401 ? "Unauthorized" : code == 403 ? "Forbidden" : code == 404 ? "NotFound" : "Unknown";
        int e = errno_for_status(code, reason);
        int r = vt_error_set(err, e, "%s %s: %s (%ld): %s", method, path, reason, code,
                             message ? message : "no message from the server");
        vt_error_set_reason(err, reason);
        json_decref(st);
        return r;
}

int kube_transport_error(kube_client *c, const char *method, const char *path, CURLcode cc,
                           const char *errbuf, vt_error **err) {
        const char *detail = errbuf && *errbuf ? errbuf : curl_easy_strerror(cc);
        const char *server = c->cfg->server;
        int r;
        switch (cc) {
        case CURLE_COULDNT_CONNECT:
                r = vt_error_set(err, ECONNREFUSED,
                                 "cannot connect to the API server %s: connection refused, is it running? (%s)",
                                 server, detail);
                vt_error_set_reason(err, "Unreachable");
                return r;
        case CURLE_COULDNT_RESOLVE_HOST:
                r = vt_error_set(err, EHOSTUNREACH, "cannot resolve the API server's host in %s (%s)", server, detail);
                vt_error_set_reason(err, "Unreachable");
                return r;
        case CURLE_OPERATION_TIMEDOUT:
                r = vt_error_set(err, ETIMEDOUT, "%s %s: the API server %s did not answer in time (%s)", method, path,
                                 server, detail);
                vt_error_set_reason(err, "Timeout");
                return r;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
                r = vt_error_set(err, EPROTO,
                                 "TLS verification of the API server %s failed: its certificate is not trusted by %s (%s)",
                                 server, c->cfg->ca_origin ? c->cfg->ca_origin : "the system's CA store", detail);
                vt_error_set_reason(err, "TLSVerificationFailed");
                return r;
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CONNECT_ERROR:
                r = vt_error_set(err, EPROTO, "TLS handshake with the API server %s failed (%s)", server, detail);
                vt_error_set_reason(err, "TLSHandshakeFailed");
                return r;
        default:
                r = vt_error_set(err, EIO, "%s %s: request to %s failed (%s)", method, path, server, detail);
                vt_error_set_reason(err, "TransportError");
                return r;
        }
}

void kube_handle_prepare(CURL *h, const char *method, const char *url, const char *body, size_t body_len,
                    struct curl_slist *headers, const char *token) {
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        if (body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        } else
                curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
        if (token) {
                curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
                curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, token);
        } else {
                curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_NONE);
                curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, NULL);
        }
}

/* Free a response body, wiped when it may hold a secret. */
static void sink_done(kube_body_sink *sink, bool sensitive) {
        sensitive ? vt_buf_wipe(&sink->buf) : vt_buf_free(&sink->buf);
}

typedef struct request {
        const char *method, *path, *url, *body;
        size_t body_len;
        struct curl_slist *headers;
        bool sensitive;
} request;

/* The answer's JSON (NULL for an empty body). */
static int decode_body(const request *q, const kube_body_sink *sink, json_t **ret_body, vt_error **err) {
        json_t *j = NULL;
        if (sink->buf.len > 0) {
                json_error_t je;
                j = json_loadb(sink->buf.data, sink->buf.len, 0, &je);
                /* je.text quotes the body: never a Secret's. */
                if (!j)
                        return vt_error_set(err, EBADMSG, "%s %s: invalid JSON in response at byte %d%s%s", q->method,
                                            q->path, je.position, q->sensitive ? "" : ": ", q->sensitive ? "" : je.text);
        }
        if (ret_body)
                *ret_body = j;
        else
                json_decref(j);
        return 0;
}

/* Send it once. 1: answered 401 with a token file (it may have rotated
 * between our stat and the request: retry once with it re-read); 0 answered
 * (*ret_body, if set, the decoded JSON); < 0 error. */
static int attempt(kube_client *c, const request *q, bool reload_token, json_t **ret_body, vt_error **err) {
        char *token = NULL;
        int r = kube_client_token(c, reload_token, &token, err);
        if (r < 0)
                return r;
        CURL *h = kube_handle_acquire(c);
        kube_body_sink sink = {.limit = KUBE_MAX_RESPONSE, .buf = {.sensitive = q->sensitive}};
        char errbuf[CURL_ERROR_SIZE] = "";
        kube_handle_prepare(h, q->method, q->url, q->body, q->body_len, q->headers, token);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kube_sink_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_SEC);
        CURLcode cc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, NULL);
        kube_wipe_free(token);
        if (cc != CURLE_OK && code >= 400 && !sink.overflow) {
                /* The server answered with an error and closed the connection:
                 * kube-apiserver sends an HTTP/2 GOAWAY with a 401, and libcurl
                 * 7.88 then often fails a POST with CURLE_PARTIAL_FILE, the
                 * Status body lost. The status line arrived: report the API
                 * error (from the body if it is there, else from the code),
                 * not a transport failure, so the 401 retry and callers'
                 * Unauthorized handling work. */
                curl_easy_cleanup(h);
        } else if (cc != CURLE_OK) {
                /* A broken connection must not poison the pool. */
                curl_easy_cleanup(h);
                r = sink.overflow ? vt_error_set(err, EFBIG, "%s %s: response larger than %zu bytes", q->method,
                                                 q->path, KUBE_MAX_RESPONSE)
                                  : kube_transport_error(c, q->method, q->path, cc, errbuf, err);
                sink_done(&sink, q->sensitive);
                return r;
        } else
                kube_handle_release(c, h);
        if (code == 401 && c->cfg->token_file && !reload_token) {
                sink_done(&sink, q->sensitive);
                return 1;
        }
        if (code >= 400 || code < 200) {
                r = kube_api_error(q->method, q->path, code, sink.buf.data, sink.buf.len, err);
                sink_done(&sink, q->sensitive);
                return r;
        }
        r = decode_body(q, &sink, ret_body, err);
        sink_done(&sink, q->sensitive);
        return r;
}

int kube_request(kube_client *c, enum kube_verb verb, const char *method, const char *path,
                 const char *content_type, const char *body, size_t body_len, json_t **ret_body,
                 vt_error **err) {
        assert_return(c && method && path && path[0] == '/', -EINVAL);
        _cleanup_free_ char *url = xasprintf("%s%s", c->cfg->server, path);
        struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
        if (body) {
                _cleanup_free_ char *ct = xasprintf("Content-Type: %s", content_type ? content_type : "application/json");
                headers = curl_slist_append(headers, ct);
        }
        request q = {.method = method, .path = path, .url = url, .body = body, .body_len = body_len,
                     .headers = headers, .sensitive = path_sensitive(path)};
        int r = attempt(c, &q, false, ret_body, err);
        if (r > 0)
                r = attempt(c, &q, true, ret_body, err);
        curl_slist_free_all(headers);
        kube_client_count(c, verb, path, r < 0);
        return r < 0 ? r : 0;
}

static int request_json(kube_client *c, enum kube_verb verb, const char *method, const char *path,
                        const char *content_type, json_t *obj, json_t **ret, vt_error **err) {
        char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        if (obj && !body)
                return vt_error_set(err, EINVAL, "%s %s: cannot encode request body", method, path);
        size_t len = body ? strlen(body) : 0;
        int r = kube_request(c, verb, method, path, content_type, body, len, ret, err);
        if (body && path_sensitive(path))
                OPENSSL_cleanse(body, len);
        free(body);
        return r;
}

int kube_get(kube_client *c, const char *path, json_t **ret, vt_error **err) {
        return kube_request(c, KUBE_VERB_GET, "GET", path, NULL, NULL, 0, ret, err);
}

int kube_list_page(kube_client *c, const char *collection, const char *label_selector,
                   const char *field_selector, long limit, const char *cont, json_t **ret, vt_error **err) {
        vt_buf p = {0};
        vt_buf_appends(&p, collection);
        char sep = strchr(collection, '?') ? '&' : '?';
        if (label_selector && *label_selector) {
                _cleanup_free_ char *e = kube_escape(label_selector);
                vt_buf_printf(&p, "%clabelSelector=%s", sep, e);
                sep = '&';
        }
        if (field_selector && *field_selector) {
                _cleanup_free_ char *e = kube_escape(field_selector);
                vt_buf_printf(&p, "%cfieldSelector=%s", sep, e);
                sep = '&';
        }
        if (limit > 0) {
                vt_buf_printf(&p, "%climit=%ld", sep, limit);
                sep = '&';
        }
        if (cont && *cont) {
                _cleanup_free_ char *e = kube_escape(cont);
                vt_buf_printf(&p, "%ccontinue=%s", sep, e);
        }
        int r = kube_request(c, KUBE_VERB_LIST, "GET", p.data, NULL, NULL, 0, ret, err);
        vt_buf_free(&p);
        return r;
}

int kube_create(kube_client *c, const char *collection, json_t *obj, json_t **ret, vt_error **err) {
        return request_json(c, KUBE_VERB_CREATE, "POST", collection, NULL, obj, ret, err);
}

int kube_update(kube_client *c, const char *path, json_t *obj, json_t **ret, vt_error **err) {
        return request_json(c, KUBE_VERB_UPDATE, "PUT", path, NULL, obj, ret, err);
}

int kube_patch(kube_client *c, const char *path, enum kube_patch_type type, json_t *patch,
               const char *field_manager, bool force, json_t **ret, vt_error **err) {
        static const char *const types[] = {
                [KUBE_PATCH_JSON] = "application/json-patch+json",
                [KUBE_PATCH_MERGE] = "application/merge-patch+json",
                [KUBE_PATCH_APPLY] = "application/apply-patch+yaml", /* JSON is valid YAML */
        };
        assert_return(type <= KUBE_PATCH_APPLY, -EINVAL);
        if (type == KUBE_PATCH_APPLY && (!field_manager || !*field_manager))
                return vt_error_set(err, EINVAL, "PATCH %s: server-side apply needs a field manager", path);
        _cleanup_free_ char *full = NULL;
        if (field_manager) {
                _cleanup_free_ char *fm = kube_escape(field_manager);
                full = xasprintf("%s%cfieldManager=%s%s", path, strchr(path, '?') ? '&' : '?', fm,
                                 type == KUBE_PATCH_APPLY && force ? "&force=true" : "");
        }
        return request_json(c, KUBE_VERB_PATCH, "PATCH", full ? full : path, types[type], patch, ret, err);
}

int kube_delete(kube_client *c, const char *path, const char *precondition_uid,
                const char *precondition_rv, const char *propagation, vt_error **err) {
        json_t *opts = json_pack("{s:s, s:s}", "kind", "DeleteOptions", "apiVersion", "v1");
        if (precondition_uid || precondition_rv) {
                json_t *pre = json_object();
                if (precondition_uid)
                        json_object_set_new(pre, "uid", json_string(precondition_uid));
                if (precondition_rv)
                        json_object_set_new(pre, "resourceVersion", json_string(precondition_rv));
                json_object_set_new(opts, "preconditions", pre);
        }
        if (propagation)
                json_object_set_new(opts, "propagationPolicy", json_string(propagation));
        int r = request_json(c, KUBE_VERB_DELETE, "DELETE", path, NULL, opts, NULL, err);
        json_decref(opts);
        return r;
}

int kube_server_version(kube_client *c, char **ret_version, vt_error **err) {
        json_t *v = NULL;
        int r = kube_get(c, "/version", &v, err);
        if (r < 0)
                return r;
        const char *gv = json_string_value(json_object_get(v, "gitVersion"));
        if (!gv) {
                json_decref(v);
                return vt_error_set(err, EBADMSG, "GET /version: no gitVersion in the answer");
        }
        *ret_version = xstrdup(gv);
        json_decref(v);
        return 0;
}

int kube_whoami(kube_client *c, char **ret_username, vt_error **err) {
        json_t *req = json_pack("{s:s, s:s}", "apiVersion", "authentication.k8s.io/v1", "kind", "SelfSubjectReview");
        json_t *resp = NULL;
        int r = request_json(c, KUBE_VERB_CREATE, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", NULL,
                             req, &resp, err);
        json_decref(req);
        if (r < 0)
                return r;
        const char *u = json_string_value(json_object_get(json_object_get(json_object_get(resp, "status"), "userInfo"),
                                                          "username"));
        if (!u) {
                json_decref(resp);
                return vt_error_set(err, EBADMSG, "SelfSubjectReview: no username in the answer");
        }
        *ret_username = xstrdup(u);
        json_decref(resp);
        return 0;
}
