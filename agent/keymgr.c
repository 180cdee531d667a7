/* SPDX-License-Identifier: Apache-2.0 */
#include "keymgr.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/timeutil.h"
#include "keys/dek.h"
#include "keys/header.h"
#include "keys/provider.h"
#include "broker_client.h"
#include "provider_secret.h"
#include "tpm/state.h"

struct keymgr {
        pthread_mutex_t lock; /* the KMIP client is not thread-safe; one call at a time */
        kek_provider *provider; /* "secret", "kmip": this process holds the KEKs */
        broker_client *broker;  /* "broker": the key broker holds them; NULL otherwise */
};

/* The three things a node asks of whoever holds the KEKs. */
static int km_unwrap(keymgr *km, const key_subject *s, const key_header *entry, secmem **ret_dek, vt_error **err) {
        if (km->broker)
                return broker_client_unwrap(km->broker, s, entry, ret_dek, err);
        pthread_mutex_lock(&km->lock);
        int r = kek_provider_unwrap(km->provider, s->ns, entry, ret_dek, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

static int km_kek_version(keymgr *km, const key_subject *s, const char *version, char **ret_kek_id, vt_error **err) {
        if (km->broker)
                return broker_client_kek_version(km->broker, s, version, ret_kek_id, err);
        pthread_mutex_lock(&km->lock);
        int r = kek_provider_ensure_kek_version(km->provider, s->ns, version, ret_kek_id, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

/* Under kek_id, or the version's KEK, or the namespace's current one. */
static int km_wrap(keymgr *km, const key_subject *s, const char *kek_id, const char *version, const secmem *dek,
                   key_header *entry, vt_error **err) {
        if (km->broker)
                return broker_client_wrap(km->broker, s, kek_id, version, dek, entry, err);
        _cleanup_free_ char *id = kek_id ? xstrdup(kek_id) : NULL;
        int r = 0;
        pthread_mutex_lock(&km->lock);
        if (!id && version)
                r = kek_provider_ensure_kek_version(km->provider, s->ns, version, &id, err);
        else if (!id)
                r = kek_provider_ensure_kek(km->provider, s->ns, &id, err);
        if (r >= 0)
                r = kek_provider_wrap(km->provider, s->ns, id, dek, entry, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

bool keymgr_unavailable(int r) {
        return keys_error_is_unavailable(r) || r == -EHOSTUNREACH || r == -EAGAIN;
}

void state_key_info_done(state_key_info *i) {
        free(i->provider);
        free(i->kek_id);
        *i = (state_key_info){0};
}

int keymgr_new(kube_client *c, const agent_config *cfg, keymgr **ret, vt_error **err) {
        _cleanup_kek_provider_ kek_provider *p = NULL;
        _cleanup_(broker_client_freep) broker_client *b = NULL;
        if (strcmp(cfg->keys.provider, "broker") == 0) {
                broker_client_options o = {.url = cfg->keys.broker_url, .ca_file = cfg->keys.broker_ca_file,
                                           .token_file = cfg->keys.broker_token_file};
                int r = broker_client_new(&o, &b, err);
                if (r < 0)
                        return r;
        } else if (strcmp(cfg->keys.provider, "kmip") == 0) {
                _cleanup_free_ char *host = xstrdup(cfg->keys.kmip_endpoint);
                char *colon = strrchr(host, ':');
                uint16_t port = 5696;
                if (colon) {
                        *colon = '\0';
                        port = (uint16_t)atoi(colon + 1);
                }
                kmip_provider_options o = {.server = {.host = host, .port = port, .ca_file = cfg->keys.kmip_ca_file,
                                                      .cert_file = cfg->keys.kmip_cert_file,
                                                      .key_file = cfg->keys.kmip_key_file}};
                int r = kek_provider_kmip_new(&o, &p, err);
                if (r < 0)
                        return r;
        } else
                kek_provider_secret_new(c, cfg->namespace, &p);
        keymgr *km = xnew(keymgr, 1);
        pthread_mutex_init(&km->lock, NULL);
        km->provider = TAKE_PTR(p);
        km->broker = TAKE_PTR(b);
        *ret = km;
        return 0;
}

void keymgr_free(keymgr *km) {
        if (!km)
                return;
        kek_provider_free(km->provider);
        broker_client_free(km->broker);
        pthread_mutex_destroy(&km->lock);
        free(km);
}

int keymgr_state_key_at(keymgr *km, const key_subject *subject, int dfd, secmem **ret_dek, state_key_info *info,
                        vt_error **err) {
        *info = (state_key_info){0};
        key_header h = {0};
        int r = key_header_readat(dfd, &h, err);
        if (r == 0) {
                r = km_unwrap(km, subject, &h, ret_dek, err);
                if (r == 0) {
                        /* Bound to the scope by the provider: no longer just tenant data. */
                        info->provider = xstrdup(h.provider);
                        info->kek_id = xstrdup(h.kek_id);
                }
                key_header_done(&h);
                return r;
        }
        if (r != -ENOENT)
                return r; /* an unreadable header is never replaced: the state would be lost */
        if (err && *err) {
                vt_error_free(*err);
                *err = NULL;
        }
        r = tpm_state_detect_at(dfd, NULL, err);
        if (r < 0)
                return r;
        if (r > 0) {
                /* State from before encryption: left alone, reported. */
                info->unencrypted = true;
                *ret_dek = NULL;
                return 0;
        }
        /* First boot: the wrapped key lands on the volume before any state does,
         * so a crash in between leaves a header and no state (retried with the
         * same DEK), never state without its key. */
        _cleanup_(secmem_freep) secmem *dek = NULL;
        r = dek_generate(&dek, err);
        if (r < 0)
                return r;
        r = km_wrap(km, subject, NULL, NULL, dek, &h, err);
        if (r < 0) {
                key_header_done(&h);
                return r;
        }
        char now[40];
        format_rfc3339(now_realtime(), now);
        h.dek_generation = 1;
        h.created_at = xstrdup(now);
        r = key_header_writeat(dfd, &h, NULL, NULL, err);
        info->provider = xstrdup(h.provider);
        info->kek_id = xstrdup(h.kek_id);
        key_header_done(&h);
        if (r < 0)
                return r;
        info->created = true;
        *ret_dek = TAKE_PTR(dek);
        return 0;
}

int keymgr_state_key(keymgr *km, const key_subject *subject, const char *state_dir, secmem **ret_dek, state_key_info *info,
                     vt_error **err) {
        *info = (state_key_info){0};
        _cleanup_close_ int dfd = dir_open_nofollow(state_dir, err);
        if (dfd < 0)
                return dfd;
        return keymgr_state_key_at(km, subject, dfd, ret_dek, info, err);
}

int keymgr_unwrap(keymgr *km, const key_subject *subject, const key_header *entry, secmem **ret_dek, vt_error **err) {
        return km_unwrap(km, subject, entry, ret_dek, err);
}

int keymgr_kek_version(keymgr *km, const key_subject *subject, const char *version, char **ret_kek_id, vt_error **err) {
        return km_kek_version(km, subject, version, ret_kek_id, err);
}

int keymgr_wrap(keymgr *km, const key_subject *subject, const char *kek_id, const char *version, const secmem *dek,
                key_header *entry, vt_error **err) {
        return km_wrap(km, subject, kek_id, version, dek, entry, err);
}
