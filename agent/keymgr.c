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
#include "provider_secret.h"
#include "tpm/state.h"

struct keymgr {
        pthread_mutex_t lock; /* the KMIP client is not thread-safe; one call at a time */
        kek_provider *provider;
};

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
        if (strcmp(cfg->keys.provider, "kmip") == 0) {
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
        *ret = km;
        return 0;
}

void keymgr_free(keymgr *km) {
        if (!km)
                return;
        kek_provider_free(km->provider);
        pthread_mutex_destroy(&km->lock);
        free(km);
}

int keymgr_state_key_at(keymgr *km, const char *scope, int dfd, secmem **ret_dek, state_key_info *info,
                        vt_error **err) {
        *info = (state_key_info){0};
        key_header h = {0};
        int r = key_header_readat(dfd, &h, err);
        if (r == 0) {
                pthread_mutex_lock(&km->lock);
                r = kek_provider_unwrap(km->provider, scope, &h, ret_dek, err);
                pthread_mutex_unlock(&km->lock);
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
        _cleanup_free_ char *kek_id = NULL;
        pthread_mutex_lock(&km->lock);
        r = kek_provider_ensure_kek(km->provider, scope, &kek_id, err);
        if (r >= 0)
                r = kek_provider_wrap(km->provider, scope, kek_id, dek, &h, err);
        pthread_mutex_unlock(&km->lock);
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

int keymgr_state_key(keymgr *km, const char *scope, const char *state_dir, secmem **ret_dek, state_key_info *info,
                     vt_error **err) {
        *info = (state_key_info){0};
        _cleanup_close_ int dfd = dir_open_nofollow(state_dir, err);
        if (dfd < 0)
                return dfd;
        return keymgr_state_key_at(km, scope, dfd, ret_dek, info, err);
}

int keymgr_unwrap(keymgr *km, const char *scope, const key_header *entry, secmem **ret_dek, vt_error **err) {
        pthread_mutex_lock(&km->lock);
        int r = kek_provider_unwrap(km->provider, scope, entry, ret_dek, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

int keymgr_kek_version(keymgr *km, const char *scope, const char *version, char **ret_kek_id, vt_error **err) {
        pthread_mutex_lock(&km->lock);
        int r = kek_provider_ensure_kek_version(km->provider, scope, version, ret_kek_id, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

int keymgr_wrap(keymgr *km, const char *scope, const char *kek_id, const char *version, const secmem *dek,
                key_header *entry, vt_error **err) {
        _cleanup_free_ char *id = kek_id ? xstrdup(kek_id) : NULL;
        int r = 0;
        pthread_mutex_lock(&km->lock);
        if (!id && version)
                r = kek_provider_ensure_kek_version(km->provider, scope, version, &id, err);
        else if (!id)
                r = kek_provider_ensure_kek(km->provider, scope, &id, err);
        if (r >= 0)
                r = kek_provider_wrap(km->provider, scope, id, dek, entry, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}
