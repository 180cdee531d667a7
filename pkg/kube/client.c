/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"

#define MAX_TOKEN (64u << 10)
#define REQUEST_TIMEOUT_SEC 60L
#define CONNECT_TIMEOUT_SEC 10L
#define MAX_POOLED 64

struct kube_client {
        kube_config *cfg; /* our own deep copy of what we need */
        char *user_agent;
        pthread_mutex_t lock;
        CURL *pool[MAX_POOLED];
        size_t n_pool;
        /* token: static, or re-read from cfg->token_file when it changes */
        char *token;
        struct timespec token_mtime;
        ino_t token_ino;
        off_t token_size;
        kube_client_stats stats;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
/* Secrets arrive as JSON text: jansson's lexer and string buffers grow by
 * realloc while they hold a KEK's base64, and json_dumps of a Secret we
 * write does the same. Everything jansson frees is wiped first. */
static void *json_alloc(size_t n) {
        return malloc(n);
}

static void json_wipe_free(void *p) {
        if (!p)
                return;
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
}

static void curl_init_once(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        json_set_alloc_funcs(json_alloc, json_wipe_free);
}

/* Requests and answers that carry key material or credentials: Secrets, and
 * TokenReviews (the reviewed token is in the request and echoed back). Their
 * bytes are wiped, not just freed. */
static bool path_sensitive(const char *path) {
        return strstr(path, "/secrets") != NULL || strstr(path, "/tokenreviews") != NULL;
}

static const char *const verb_names[_KUBE_VERB_MAX] = {"GET", "LIST", "WATCH", "CREATE", "UPDATE", "PATCH", "DELETE"};

const char *kube_verb_name(enum kube_verb v) {
        return v < _KUBE_VERB_MAX ? verb_names[v] : "UNKNOWN";
}

static void wipe_free(char *s) {
        if (s) {
                OPENSSL_cleanse(s, strlen(s));
                free(s);
        }
}

static char *dup_or_null(const char *s) {
        return s ? xstrdup(s) : NULL;
}

static char *memdup_or_null(const char *s, size_t len) {
        if (!s)
                return NULL;
        char *r = xmalloc(len + 1);
        memcpy(r, s, len);
        r[len] = '\0';
        return r;
}

/* Refuse an expired client certificate up front: the API server would only
 * answer 401, which names no cause. */
static int check_client_cert(const kube_config *cfg, vt_error **err) {
        if (!cfg->client_cert_pem)
                return 0;
        BIO *bio = BIO_new_mem_buf(cfg->client_cert_pem, (int)cfg->client_cert_len);
        X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (!x)
                return vt_error_set(err, EINVAL, "%s: the client certificate is not a PEM certificate", cfg->origin);
        int r = 0;
        char subject[256] = "";
        X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
        if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
                BIO *m = BIO_new(BIO_s_mem());
                ASN1_TIME_print(m, X509_get0_notAfter(x));
                char when[64] = "";
                int n = BIO_read(m, when, sizeof(when) - 1);
                when[n > 0 ? n : 0] = '\0';
                BIO_free(m);
                r = vt_error_set(err, EKEYEXPIRED, "%s: the client certificate %s expired on %s", cfg->origin,
                                 subject, when);
        } else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
                r = vt_error_set(err, EKEYEXPIRED, "%s: the client certificate %s is not valid yet", cfg->origin,
                                 subject);
        X509_free(x);
        return r;
}

int kube_client_new(const kube_config *cfg, const char *user_agent, kube_client **ret, vt_error **err) {
        assert_return(cfg && cfg->server && ret, -EINVAL);
        pthread_once(&curl_once, curl_init_once);
        int r = check_client_cert(cfg, err);
        if (r < 0)
                return r;
        kube_client *c = xnew(kube_client, 1);
        kube_config *k = xnew(kube_config, 1);
        k->server = xstrdup(cfg->server);
        k->tls_server_name = dup_or_null(cfg->tls_server_name);
        k->ca_pem = memdup_or_null(cfg->ca_pem, cfg->ca_pem_len);
        k->ca_pem_len = cfg->ca_pem_len;
        k->ca_origin = dup_or_null(cfg->ca_origin);
        k->client_cert_pem = memdup_or_null(cfg->client_cert_pem, cfg->client_cert_len);
        k->client_cert_len = cfg->client_cert_len;
        k->client_key_pem = memdup_or_null(cfg->client_key_pem, cfg->client_key_len);
        k->client_key_len = cfg->client_key_len;
        k->token = dup_or_null(cfg->token);
        k->token_file = dup_or_null(cfg->token_file);
        k->namespace = xstrdup(cfg->namespace ? cfg->namespace : "default");
        k->insecure_skip_tls_verify = cfg->insecure_skip_tls_verify;
        k->origin = xstrdup(cfg->origin ? cfg->origin : "configuration");
        c->cfg = k;
        c->user_agent = xstrdup(user_agent ? user_agent : "vtpm-agent");
        pthread_mutex_init(&c->lock, NULL);
        *ret = c;
        return 0;
}

void kube_client_free(kube_client *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n_pool; i++)
                curl_easy_cleanup(c->pool[i]);
        wipe_free(c->token);
        kube_config_free(c->cfg);
        free(c->user_agent);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

const char *kube_client_server(const kube_client *c) {
        return c->cfg->server;
}

const char *kube_client_namespace(const kube_client *c) {
        return c->cfg->namespace;
}

void kube_client_get_stats(kube_client *c, kube_client_stats *ret) {
        pthread_mutex_lock(&c->lock);
        *ret = c->stats;
        pthread_mutex_unlock(&c->lock);
}

/* Current bearer token (caller frees with wipe_free), re-reading the token
 * file when it changed on disk (projected tokens rotate) or when forced. */
static int current_token(kube_client *c, bool force_reload, char **ret, vt_error **err) {
        int r = 0;
        pthread_mutex_lock(&c->lock);
        if (c->cfg->token_file) {
                struct stat st;
                if (stat(c->cfg->token_file, &st) < 0) {
                        r = vt_error_errno(err, errno, "cannot read token file %s", c->cfg->token_file);
                        goto out;
                }
                if (force_reload || !c->token || st.st_ino != c->token_ino || st.st_size != c->token_size ||
                    st.st_mtim.tv_sec != c->token_mtime.tv_sec || st.st_mtim.tv_nsec != c->token_mtime.tv_nsec) {
                        char *t = NULL;
                        size_t len = 0;
                        r = read_full_file(c->cfg->token_file, MAX_TOKEN, &t, &len, err);
                        if (r < 0)
                                goto out;
                        while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
                                t[--len] = '\0';
                        if (c->token)
                                c->stats.token_reloads++;
                        wipe_free(c->token);
                        c->token = t;
                        c->token_ino = st.st_ino;
                        c->token_size = st.st_size;
                        c->token_mtime = st.st_mtim;
                }
        } else if (c->cfg->token && !c->token)
                c->token = xstrdup(c->cfg->token);
        *ret = c->token ? xstrdup(c->token) : NULL;
out:
        pthread_mutex_unlock(&c->lock);
        return r;
}

static CURL *handle_new(kube_client *c) {
        CURL *h = curl_easy_init();
        if (!h)
                abort(); /* only fails on out-of-memory */
        const kube_config *k = c->cfg;
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_SEC);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, k->insecure_skip_tls_verify ? 0L : 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, k->insecure_skip_tls_verify ? 0L : 2L);
        if (k->ca_pem) {
                struct curl_blob blob = {.data = k->ca_pem, .len = k->ca_pem_len, .flags = CURL_BLOB_COPY};
                curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
        }
        if (k->client_cert_pem) {
                struct curl_blob cert = {.data = k->client_cert_pem, .len = k->client_cert_len, .flags = CURL_BLOB_COPY};
                struct curl_blob key = {.data = k->client_key_pem, .len = k->client_key_len, .flags = CURL_BLOB_COPY};
                curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
                curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cert);
                curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
                curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key);
        }
        return h;
}

static CURL *handle_acquire(kube_client *c) {
        CURL *h = NULL;
        pthread_mutex_lock(&c->lock);
        if (c->n_pool > 0)
                h = c->pool[--c->n_pool];
        pthread_mutex_unlock(&c->lock);
        return h ? h : handle_new(c);
}

static void handle_release(kube_client *c, CURL *h) {
        pthread_mutex_lock(&c->lock);
        if (c->n_pool < MAX_POOLED) {
                c->pool[c->n_pool++] = h;
                h = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        if (h)
                curl_easy_cleanup(h);
}

static void count(kube_client *c, enum kube_verb verb, bool failed) {
        pthread_mutex_lock(&c->lock);
        c->stats.requests[verb]++;
        if (failed)
                c->stats.errors++;
        pthread_mutex_unlock(&c->lock);
}

struct body_sink {
        vt_buf buf;
        size_t limit;
        bool overflow;
};

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct body_sink *s = userdata;
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

/* Turn an error answer into a vt_error carrying the Status' reason and message. */
static int api_error(const char *method, const char *path, long code, const char *body, size_t len,
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

static int transport_error(kube_client *c, const char *method, const char *path, CURLcode cc,
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

/* Set what differs between requests on a pooled handle. */
static void prepare(CURL *h, const char *method, const char *url, const char *body, size_t body_len,
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
        int r = 0;
        bool sensitive = path_sensitive(path);
        for (int attempt = 0; attempt < 2; attempt++) {
                char *token = NULL;
                r = current_token(c, attempt > 0, &token, err);
                if (r < 0)
                        break;
                CURL *h = handle_acquire(c);
                struct body_sink sink = {.limit = KUBE_MAX_RESPONSE, .buf = {.sensitive = sensitive}};
                char errbuf[CURL_ERROR_SIZE] = "";
                prepare(h, method, url, body, body_len, headers, token);
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
                curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
                curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
                curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_SEC);
                CURLcode cc = curl_easy_perform(h);
                long code = 0;
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
                curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, NULL);
                wipe_free(token);
                if (cc != CURLE_OK && code >= 400 && !sink.overflow) {
                        /* The server answered with an error and closed the connection:
                         * kube-apiserver sends an HTTP/2 GOAWAY with a 401, and libcurl
                         * 7.88 then often fails a POST with CURLE_PARTIAL_FILE, the
                         * Status body lost. The status line arrived: report the API
                         * error (from the body if it is there, else from the code),
                         * not a transport failure, so the 401 retry below and callers'
                         * Unauthorized handling work. */
                        curl_easy_cleanup(h);
                        h = NULL;
                } else if (cc != CURLE_OK) {
                        /* A broken connection must not poison the pool. */
                        curl_easy_cleanup(h);
                        r = sink.overflow ? vt_error_set(err, EFBIG, "%s %s: response larger than %zu bytes", method,
                                                         path, KUBE_MAX_RESPONSE)
                                          : transport_error(c, method, path, cc, errbuf, err);
                        sensitive ? vt_buf_wipe(&sink.buf) : vt_buf_free(&sink.buf);
                        break;
                }
                if (h)
                        handle_release(c, h);
                if (code == 401 && c->cfg->token_file && attempt == 0) {
                        /* The token may have rotated between our stat and the request. */
                        sensitive ? vt_buf_wipe(&sink.buf) : vt_buf_free(&sink.buf);
                        continue;
                }
                if (code >= 400 || code < 200) {
                        r = api_error(method, path, code, sink.buf.data, sink.buf.len, err);
                        sensitive ? vt_buf_wipe(&sink.buf) : vt_buf_free(&sink.buf);
                        break;
                }
                json_t *j = NULL;
                if (sink.buf.len > 0) {
                        json_error_t je;
                        j = json_loadb(sink.buf.data, sink.buf.len, 0, &je);
                        if (!j) {
                                /* je.text quotes the body: never a Secret's. */
                                r = vt_error_set(err, EBADMSG, "%s %s: invalid JSON in response at byte %d%s%s", method,
                                                 path, je.position, sensitive ? "" : ": ", sensitive ? "" : je.text);
                                sensitive ? vt_buf_wipe(&sink.buf) : vt_buf_free(&sink.buf);
                                break;
                        }
                }
                sensitive ? vt_buf_wipe(&sink.buf) : vt_buf_free(&sink.buf);
                if (ret_body)
                        *ret_body = j;
                else
                        json_decref(j);
                r = 0;
                break;
        }
        curl_slist_free_all(headers);
        count(c, verb, r < 0);
        return r;
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

/* ---- streaming ---- */

struct kube_stream {
        kube_client *client;
        CURL *h;
};

int kube_stream_new(kube_client *c, kube_stream **ret) {
        assert_return(c && ret, -EINVAL);
        kube_stream *s = xnew(kube_stream, 1);
        s->client = c;
        s->h = handle_new(c);
        *ret = s;
        return 0;
}

void kube_stream_free(kube_stream *s) {
        if (!s)
                return;
        if (s->h)
                curl_easy_cleanup(s->h);
        free(s);
}

struct stream_ctx {
        CURL *h;
        kube_stream_cb cb;
        void *userdata;
        const atomic_bool *stop;
        long code;
        struct body_sink error_body; /* collected instead of streamed on HTTP errors */
        int cb_result;
};

static size_t stream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct stream_ctx *x = userdata;
        size_t n = size * nmemb;
        if (x->code == 0)
                curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
        if (x->code >= 300)
                return sink_write(ptr, size, nmemb, &x->error_body);
        int r = x->cb(ptr, n, x->userdata);
        if (r < 0) {
                x->cb_result = r;
                return 0;
        }
        return n;
}

static int stream_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
        struct stream_ctx *x = userdata;
        return x->stop && atomic_load(x->stop) ? 1 : 0;
}

int kube_stream_get(kube_stream *s, const char *path, long timeout_sec, kube_stream_cb on_data,
                    void *userdata, const atomic_bool *stop, vt_error **err) {
        assert_return(s && path && on_data, -EINVAL);
        kube_client *c = s->client;
        _cleanup_free_ char *url = xasprintf("%s%s", c->cfg->server, path);
        struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
        char *token = NULL;
        int r = current_token(c, false, &token, err);
        if (r < 0) {
                curl_slist_free_all(headers);
                return r;
        }
        struct stream_ctx x = {.h = s->h, .cb = on_data, .userdata = userdata, .stop = stop,
                               .error_body = {.limit = 1u << 20}};
        char errbuf[CURL_ERROR_SIZE] = "";
        prepare(s->h, "GET", url, NULL, 0, headers, token);
        curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, stream_write);
        curl_easy_setopt(s->h, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(s->h, CURLOPT_TIMEOUT, timeout_sec > 0 ? timeout_sec : 0L);
        curl_easy_setopt(s->h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(s->h, CURLOPT_XFERINFOFUNCTION, stream_progress);
        curl_easy_setopt(s->h, CURLOPT_XFERINFODATA, &x);
        CURLcode cc = curl_easy_perform(s->h);
        curl_easy_setopt(s->h, CURLOPT_NOPROGRESS, 1L);
        curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(s->h, CURLOPT_XOAUTH2_BEARER, NULL);
        wipe_free(token);
        curl_slist_free_all(headers);
        if (x.code == 0)
                curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &x.code);

        if (x.cb_result < 0)
                r = x.cb_result;
        else if (cc == CURLE_ABORTED_BY_CALLBACK)
                r = -ECANCELED;
        else if (x.code >= 300)
                r = api_error("WATCH", path, x.code, x.error_body.buf.data, x.error_body.buf.len, err);
        else if (cc == CURLE_OPERATION_TIMEDOUT && timeout_sec > 0)
                r = 0; /* our own ceiling on a quiet stream: just reconnect */
        else if (cc != CURLE_OK)
                r = transport_error(c, "WATCH", path, cc, errbuf, err);
        else
                r = 0;
        if (r < 0 && r != -ECANCELED && x.cb_result == 0) {
                /* Reconnect on a fresh connection next time. */
                curl_easy_cleanup(s->h);
                s->h = handle_new(c);
        }
        vt_buf_free(&x.error_body.buf);
        count(c, KUBE_VERB_WATCH, r < 0 && r != -ECANCELED);
        return r;
}

/* ---- paths ---- */

char *kube_escape(const char *s) {
        vt_buf b = {0};
        static const char hex[] = "0123456789ABCDEF";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '_' || *p == '.' || *p == '~')
                        vt_buf_append(&b, p, 1);
                else {
                        char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
                        vt_buf_append(&b, e, 3);
                }
        }
        return vt_buf_steal(&b);
}

char *kube_path(const kube_resource *r, const char *namespace, const char *name, const char *subresource) {
        vt_buf b = {0};
        if (!r->group || !*r->group)
                vt_buf_printf(&b, "/api/%s", r->version);
        else
                vt_buf_printf(&b, "/apis/%s/%s", r->group, r->version);
        if (r->namespaced && namespace) {
                _cleanup_free_ char *e = kube_escape(namespace);
                vt_buf_printf(&b, "/namespaces/%s", e);
        }
        vt_buf_printf(&b, "/%s", r->plural);
        if (name) {
                _cleanup_free_ char *e = kube_escape(name);
                vt_buf_printf(&b, "/%s", e);
                if (subresource)
                        vt_buf_printf(&b, "/%s", subresource);
        }
        return vt_buf_steal(&b);
}
