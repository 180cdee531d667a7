/* SPDX-License-Identifier: Apache-2.0 */
/* The client itself: its copy of the configuration, the bearer token, the
 * pool of curl handles and the request counters. Requests: request.c;
 * watches: stream.c; paths: path.c. */
#include "kube/client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "kube/client_internal.h"

#define MAX_TOKEN (64u << 10)
#define CONNECT_TIMEOUT_SEC 10L

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

static const char *const verb_names[_KUBE_VERB_MAX] = {"GET", "LIST", "WATCH", "CREATE", "UPDATE", "PATCH", "DELETE"};

const char *kube_verb_name(enum kube_verb v) {
        return v < _KUBE_VERB_MAX ? verb_names[v] : "UNKNOWN";
}

void kube_wipe_free(char *s) {
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
        kube_wipe_free(c->token);
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

int kube_client_token(kube_client *c, bool force_reload, char **ret, vt_error **err) {
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
                        kube_wipe_free(c->token);
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

CURL *kube_handle_new(kube_client *c) {
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

CURL *kube_handle_acquire(kube_client *c) {
        CURL *h = NULL;
        pthread_mutex_lock(&c->lock);
        if (c->n_pool > 0)
                h = c->pool[--c->n_pool];
        pthread_mutex_unlock(&c->lock);
        return h ? h : kube_handle_new(c);
}

void kube_handle_release(kube_client *c, CURL *h) {
        pthread_mutex_lock(&c->lock);
        if (c->n_pool < KUBE_MAX_POOLED) {
                c->pool[c->n_pool++] = h;
                h = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        if (h)
                curl_easy_cleanup(h);
}


static kube_resource_requests *find_row(kube_client_stats *s, const char *name) {
        for (size_t i = 0; i < s->n_resources; i++)
                if (strcmp(s->by_resource[i].resource, name) == 0)
                        return &s->by_resource[i];
        return NULL;
}

/* Under c->lock: the row of this resource; once the table is full, the row of
 * "other" (the last row is kept for it, so the label set stays bounded). */
static kube_resource_requests *resource_row_locked(kube_client *c, const char *name) {
        kube_client_stats *s = &c->stats;
        kube_resource_requests *row = find_row(s, name);
        if (row)
                return row;
        if (s->n_resources >= KUBE_STATS_RESOURCES - 1) {
                row = find_row(s, "other");
                if (row)
                        return row;
                name = "other"; /* into the last row */
        }
        row = &s->by_resource[s->n_resources++];
        snprintf(row->resource, sizeof(row->resource), "%s", name);
        return row;
}

void kube_client_count(kube_client *c, enum kube_verb verb, const char *path, bool failed) {
        char name[KUBE_RESOURCE_NAME_MAX] = "other";
        (void)kube_path_resource(path, name, sizeof(name));
        pthread_mutex_lock(&c->lock);
        c->stats.requests[verb]++;
        resource_row_locked(c, name)->requests[verb]++;
        if (failed)
                c->stats.errors++;
        pthread_mutex_unlock(&c->lock);
}
