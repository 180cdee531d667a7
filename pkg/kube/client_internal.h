/* SPDX-License-Identifier: Apache-2.0 */
/* Inside pkg/kube: what the client's files (client.c: the client, its token
 * and connection pool; request.c: one request and its errors; stream.c:
 * watches) share. Not for callers outside pkg/kube/client*.c, request.c and
 * stream.c. */
#pragma once

#include <curl/curl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "kube/client.h"

#define KUBE_MAX_POOLED 64

struct kube_client {
        kube_config *cfg; /* our own deep copy of what we need */
        char *user_agent;
        pthread_mutex_t lock;
        CURL *pool[KUBE_MAX_POOLED];
        size_t n_pool;
        /* token: static, or re-read from cfg->token_file when it changes */
        char *token;
        struct timespec token_mtime;
        ino_t token_ino;
        off_t token_size;
        kube_client_stats stats;
};

/* A response body, up to a limit. */
typedef struct kube_body_sink {
        vt_buf buf;
        size_t limit;
        bool overflow;
} kube_body_sink;

/* CURLOPT_WRITEFUNCTION into a kube_body_sink. */
size_t kube_sink_write(char *ptr, size_t size, size_t nmemb, void *userdata);

/* Free a string that held a credential, wiped first. */
void kube_wipe_free(char *s);

/* Current bearer token (caller frees with kube_wipe_free; NULL when there is
 * none), re-reading the token file when it changed on disk (projected tokens
 * rotate) or when forced. */
int kube_client_token(kube_client *c, bool force_reload, char **ret, vt_error **err);

/* A new handle set up for c's server and credentials; pooled ones are taken
 * and given back with acquire/release. */
CURL *kube_handle_new(kube_client *c);
CURL *kube_handle_acquire(kube_client *c);
void kube_handle_release(kube_client *c, CURL *h);

/* Set what differs between requests on a handle. */
void kube_handle_prepare(CURL *h, const char *method, const char *url, const char *body, size_t body_len,
                         struct curl_slist *headers, const char *token);

/* One request sent, by verb and by the resource its path names. */
void kube_client_count(kube_client *c, enum kube_verb verb, const char *path, bool failed);

/* An error answer as a vt_error carrying the Status' reason and message. */
int kube_api_error(const char *method, const char *path, long code, const char *body, size_t len, vt_error **err);
/* A request that got no answer. */
int kube_transport_error(kube_client *c, const char *method, const char *path, CURLcode cc, const char *errbuf,
                         vt_error **err);
