/* SPDX-License-Identifier: Apache-2.0 */
/* Streaming GETs for watches, each on a long-lived handle of its own. */
#include "kube/client.h"

#include <curl/curl.h>
#include <stdlib.h>

#include "base/alloc.h"
#include "kube/client_internal.h"

struct kube_stream {
        kube_client *client;
        CURL *h;
};

int kube_stream_new(kube_client *c, kube_stream **ret) {
        assert_return(c && ret, -EINVAL);
        kube_stream *s = xnew(kube_stream, 1);
        s->client = c;
        s->h = kube_handle_new(c);
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
        kube_body_sink error_body; /* collected instead of streamed on HTTP errors */
        int cb_result;
};

static size_t stream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct stream_ctx *x = userdata;
        size_t n = size * nmemb;
        if (x->code == 0)
                curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
        if (x->code >= 300)
                return kube_sink_write(ptr, size, nmemb, &x->error_body);
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
        int r = kube_client_token(c, false, &token, err);
        if (r < 0) {
                curl_slist_free_all(headers);
                return r;
        }
        struct stream_ctx x = {.h = s->h, .cb = on_data, .userdata = userdata, .stop = stop,
                               .error_body = {.limit = 1u << 20}};
        char errbuf[CURL_ERROR_SIZE] = "";
        kube_handle_prepare(s->h, "GET", url, NULL, 0, headers, token);
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
        kube_wipe_free(token);
        curl_slist_free_all(headers);
        if (x.code == 0)
                curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &x.code);

        if (x.cb_result < 0)
                r = x.cb_result;
        else if (cc == CURLE_ABORTED_BY_CALLBACK)
                r = -ECANCELED;
        else if (x.code >= 300)
                r = kube_api_error("WATCH", path, x.code, x.error_body.buf.data, x.error_body.buf.len, err);
        else if (cc == CURLE_OPERATION_TIMEDOUT && timeout_sec > 0)
                r = 0; /* our own ceiling on a quiet stream: just reconnect */
        else if (cc != CURLE_OK)
                r = kube_transport_error(c, "WATCH", path, cc, errbuf, err);
        else
                r = 0;
        if (r < 0 && r != -ECANCELED && x.cb_result == 0) {
                /* Reconnect on a fresh connection next time. */
                curl_easy_cleanup(s->h);
                s->h = kube_handle_new(c);
        }
        vt_buf_free(&x.error_body.buf);
        kube_client_count(c, KUBE_VERB_WATCH, path, r < 0 && r != -ECANCELED);
        return r;
}
