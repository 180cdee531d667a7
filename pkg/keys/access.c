/* SPDX-License-Identifier: Apache-2.0 */
#include "keys/access.h"

#include <pthread.h>
#include <stdlib.h>

#include "base/alloc.h"

struct keymgr {
        pthread_mutex_t lock; /* the KMIP client is not thread-safe; one call at a time */
        kek_provider *provider; /* "secret", "kmip": this process holds the KEKs */
        broker_client *broker;  /* "broker": the key broker holds them; NULL otherwise */
};

static keymgr *keymgr_alloc(kek_provider *p, broker_client *b) {
        keymgr *km = xnew(keymgr, 1);
        pthread_mutex_init(&km->lock, NULL);
        km->provider = p;
        km->broker = b;
        return km;
}

keymgr *keymgr_new_provider(kek_provider *p) {
        return keymgr_alloc(p, NULL);
}

keymgr *keymgr_new_broker(broker_client *b) {
        return keymgr_alloc(NULL, b);
}

void keymgr_free(keymgr *km) {
        if (!km)
                return;
        kek_provider_free(km->provider);
        broker_client_free(km->broker);
        pthread_mutex_destroy(&km->lock);
        free(km);
}

int keymgr_unwrap(keymgr *km, const key_subject *s, const key_header *entry, secmem **ret_dek, vt_error **err) {
        assert_return(km && s && entry && ret_dek, -EINVAL);
        if (km->broker)
                return broker_client_unwrap(km->broker, s, entry, ret_dek, err);
        pthread_mutex_lock(&km->lock);
        int r = kek_provider_unwrap(km->provider, s->ns, entry, ret_dek, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

int keymgr_kek_version(keymgr *km, const key_subject *s, const char *version, char **ret_kek_id, vt_error **err) {
        assert_return(km && s && version && ret_kek_id, -EINVAL);
        if (km->broker)
                return broker_client_kek_version(km->broker, s, version, ret_kek_id, err);
        pthread_mutex_lock(&km->lock);
        int r = kek_provider_ensure_kek_version(km->provider, s->ns, version, ret_kek_id, err);
        pthread_mutex_unlock(&km->lock);
        return r;
}

int keymgr_wrap(keymgr *km, const key_subject *s, const char *kek_id, const char *version, const secmem *dek,
                key_header *entry, vt_error **err) {
        assert_return(km && s && dek && entry, -EINVAL);
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
