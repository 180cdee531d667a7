/* SPDX-License-Identifier: Apache-2.0 */
#include "keymgr.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/timeutil.h"
#include "keys/dek.h"
#include "keys/header.h"
#include "keys/provider.h"
#include "keys/provider_secret.h"
#include "resources.h"
#include "vmspec.h"
#include "tpm/state.h"

/* The one classification of provider errors is pkg/keys' (it already counts
 * EHOSTUNREACH and EAGAIN, a send timeout, as "unreachable"). */
bool keymgr_unavailable(int r) {
        return keys_error_is_unavailable(r);
}

void state_key_info_done(state_key_info *i) {
        free(i->provider);
        free(i->kek_id);
        *i = (state_key_info){0};
}

/* "broker": this node holds no KEK; the key broker does. */
static int new_broker(const agent_config *cfg, keymgr **ret, vt_error **err) {
        broker_client *b = NULL;
        broker_client_options o = {.url = cfg->keys.broker_url, .ca_file = cfg->keys.broker_ca_file,
                                   .token_file = cfg->keys.broker_token_file};
        int r = broker_client_new(&o, &b, err);
        if (r < 0)
                return r;
        *ret = keymgr_new_broker(b);
        return 0;
}

/* "kmip": keys.kmipEndpoint is host[:port], 5696 by default. */
static int new_kmip(const agent_config *cfg, kek_provider **ret, vt_error **err) {
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
        return kek_provider_kmip_new(&o, ret, err);
}

/* "secret": the KEK Secrets in the agent's own namespace. */
static int new_secret(kube_client *c, const agent_config *cfg, kek_provider **ret, vt_error **err) {
        secret_provider_options o = {.client = c, .secrets = &res_secret, .namespace = cfg->namespace,
                                     .label_key = LABEL_MANAGED_BY, .label_value = LABEL_MANAGER_VALUE};
        int r = kek_provider_secret_new(&o, ret);
        if (r < 0)
                return vt_error_errno(err, -r, "the secret key provider needs a kube client and a namespace");
        return 0;
}

int keymgr_new(kube_client *c, const agent_config *cfg, keymgr **ret, vt_error **err) {
        assert_return(cfg && ret, -EINVAL);
        if (strcmp(cfg->keys.provider, "broker") == 0)
                return new_broker(cfg, ret, err);
        kek_provider *p = NULL;
        int r = strcmp(cfg->keys.provider, "kmip") == 0 ? new_kmip(cfg, &p, err) : new_secret(c, cfg, &p, err);
        if (r < 0)
                return r;
        *ret = keymgr_new_provider(p);
        return 0;
}

int keymgr_state_key_at(keymgr *km, const key_subject *subject, int dfd, secmem **ret_dek, state_key_info *info,
                        vt_error **err) {
        *info = (state_key_info){0};
        key_header h = {0};
        int r = key_header_readat(dfd, &h, err);
        if (r == 0) {
                r = keymgr_unwrap(km, subject, &h, ret_dek, err);
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
        r = keymgr_wrap(km, subject, NULL, NULL, dek, &h, err);
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
