/* SPDX-License-Identifier: Apache-2.0 */
#include "broker_service.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <string.h>

#include "base/alloc.h"
#include "broker_authz.h"
#include "keys/broker_client.h"
#include "broker_server.h"
#include "broker_token_cache.h"
#include "keymgr.h"
#include "keys/provider.h"
#include "resources.h"

DEFINE_JSON_CLEANUP

#define TOKENREVIEWS "/apis/authentication.k8s.io/v1/tokenreviews"

struct broker_service {
        kube_client *client;
        keymgr *keys;
        char *ns, *sa, *ds; /* whose tokens: <ns>/<sa>, pods of the DaemonSet <ds> */
        broker_token_cache *reviews;
        broker_server *server;
};

/* An API call failed during the checks: -EHOSTUNREACH (503, the caller
 * retries) when the API server may answer later; else -ENOTRECOVERABLE
 * (500: our RBAC, a bad request of ours), never an errno the HTTP layer would
 * take for a verdict about the caller. */
static int api_failure(int r) {
        switch (r) {
        case -EAGAIN:
        case -EIO:
        case -ECONNREFUSED:
        case -ETIMEDOUT:
        case -EPROTO:
        case -EKEYREJECTED: /* our own token, rotating */
        case -EHOSTUNREACH:
                return -EHOSTUNREACH;
        default:
                return -ENOTRECOVERABLE;
        }
}

/* GET path (freed here); a missing object is *ret NULL and 0. */
static int get_optional(broker_service *b, char *path, json_t **ret, vt_error **err) {
        _cleanup_free_ char *p = path;
        vt_error *e = NULL;
        int r = kube_get(b->client, p, ret, &e);
        if (r == -ENOENT) {
                vt_error_free(e);
                *ret = NULL;
                return 0;
        }
        if (r < 0) {
                if (err && !*err)
                        *err = e;
                else
                        vt_error_free(e);
                return api_failure(r);
        }
        return 0;
}

/* The TokenReview's status for this token (the API server's, or a verdict
 * it gave less than a minute ago). */
static int review_token(broker_service *b, const char *token, json_t **ret_status, vt_error **err) {
        json_t *st = broker_token_cache_get(b->reviews, token);
        if (st) {
                *ret_status = st;
                return 0;
        }
        json_t *req = json_pack("{s:s, s:s, s:{s:s, s:[s]}}", "apiVersion", "authentication.k8s.io/v1", "kind",
                                "TokenReview", "spec", "token", token, "audiences", BROKER_AUDIENCE);
        json_t *resp = NULL;
        int r = kube_create(b->client, TOKENREVIEWS, req, &resp, err);
        json_decref(req);
        if (r < 0)
                return api_failure(r);
        st = json_incref(json_object_get(resp, "status"));
        json_decref(resp);
        if (!json_is_object(st)) {
                json_decref(st);
                return vt_error_set(err, ENOTRECOVERABLE, "the TokenReview has no status");
        }
        broker_token_cache_put(b->reviews, token, st);
        *ret_status = st;
        return 0;
}

static int authenticate(void *ud, const char *token, broker_peer *ret, vt_error **err) {
        broker_service *b = ud;
        _cleanup_json_ json_t *status = NULL, *pod = NULL;
        int r = review_token(b, token, &status, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *pod_name = NULL;
        /* Refused here unless it names a pod; broker_authn_check says why. */
        if (broker_authn_pod_name(status, &pod_name, NULL) == 0) {
                r = get_optional(b, kube_path(&res_pod, b->ns, pod_name, NULL), &pod, err);
                if (r < 0)
                        return r;
        }
        return broker_authn_check(status, pod, b->ns, b->sa, b->ds, ret, err);
}

/* The launcher runs on the asking node, and the VM's state Lease, if any,
 * names it. */
static int check_placement(broker_service *b, const broker_peer *peer, const key_subject *s, vt_error **err) {
        _cleanup_free_ char *pods = kube_path(&res_pod, s->ns, NULL, NULL);
        _cleanup_free_ char *sel = xasprintf("kubevirt.io=virt-launcher,vm.kubevirt.io/name=%s", s->vm);
        _cleanup_json_ json_t *list = NULL, *vm = NULL, *lease = NULL, *vmi = NULL;
        int r = kube_list_page(b->client, pods, sel, NULL, 0, NULL, &list, err);
        if (r < 0)
                return api_failure(r);
        r = broker_placement_check(s, peer->node, list, NULL, NULL, err);
        if (r < 0)
                return r;
        /* The Lease is named by the VM's uid, which only the VM has (the
         * node controller reads it there too). */
        r = get_optional(b, kube_path(&res_vm, s->ns, s->vm, NULL), &vm, err);
        if (r < 0)
                return r;
        const char *vm_uid = json_string_value(json_object_get(json_object_get(vm, "metadata"), "uid"));
        if (!vm_uid)
                return vt_error_set(err, EACCES, "node %s, VM %s/%s, launcher %s: no such VirtualMachine", peer->node,
                                    s->ns, s->vm, s->launcher_uid);
        _cleanup_free_ char *lease_name = broker_state_lease_name(vm_uid);
        r = get_optional(b, kube_path(&res_lease, b->ns, lease_name, NULL), &lease, err);
        if (r < 0)
                return r;
        if (broker_placement_check(s, peer->node, list, lease, NULL, NULL) == 0)
                return 0;
        /* Not the holder: a live migration's target? Only then the VMI. */
        r = get_optional(b, kube_path(&res_vmi, s->ns, s->vm, NULL), &vmi, err);
        if (r < 0)
                return r;
        return broker_placement_check(s, peer->node, list, lease, vmi, err);
}

/* keymgr's errors, as the HTTP layer maps them. */
static int key_failure(int r) {
        if (keymgr_unavailable(r))
                return -EHOSTUNREACH;
        if (r == -EBADMSG)
                return r;
        if (r == -EPERM || r == -ENOKEY)
                return -EACCES; /* a kekId that is not this namespace's */
        return r == -EINVAL ? r : -ENOTRECOVERABLE;
}

static int do_unwrap(broker_service *b, const key_subject *s, const broker_request *q, json_t **ret, vt_error **err) {
        _cleanup_(secmem_freep) secmem *dek = NULL;
        int r = keymgr_unwrap(b->keys, s, &q->header, &dek, err);
        if (r < 0)
                return key_failure(r);
        char *d = keys_base64_encode(dek->data, dek->len);
        *ret = json_pack("{s:s}", "dek", d);
        OPENSSL_cleanse(d, strlen(d));
        free(d);
        return 0;
}

static int do_wrap(broker_service *b, const key_subject *s, const broker_request *q, json_t **ret, vt_error **err) {
        key_header h = {0};
        int r = keymgr_wrap(b->keys, s, q->kek_id, q->version, q->dek, &h, err);
        _cleanup_free_ char *doc = NULL;
        if (r >= 0) {
                h.dek_generation = 1;
                r = key_header_format(&h, &doc, err);
        }
        key_header_done(&h);
        if (r < 0)
                return key_failure(r);
        *ret = json_pack("{s:s}", "header", doc);
        return 0;
}

static int do_kek_version(broker_service *b, const key_subject *s, const broker_request *q, json_t **ret,
                          vt_error **err) {
        _cleanup_free_ char *id = NULL;
        int r = keymgr_kek_version(b->keys, s, q->version, &id, err);
        if (r < 0)
                return key_failure(r);
        *ret = json_pack("{s:s}", "kekId", id);
        return 0;
}

static int serve(void *ud, const broker_peer *peer, const broker_request *q, json_t **ret, vt_error **err) {
        broker_service *b = ud;
        key_subject s = broker_request_subject(q);
        int r = check_placement(b, peer, &s, err);
        if (r < 0)
                return r;
        switch (q->op) {
        case BROKER_OP_UNWRAP:
                return do_unwrap(b, &s, q, ret, err);
        case BROKER_OP_WRAP:
                return do_wrap(b, &s, q, ret, err);
        case BROKER_OP_KEK_VERSION:
                return do_kek_version(b, &s, q, ret, err);
        default:
                return vt_error_set(err, EINVAL, "unknown operation");
        }
}

static void service_free(broker_service *b) {
        keymgr_free(b->keys);
        broker_token_cache_free(b->reviews);
        free(b->ns);
        free(b->sa);
        free(b->ds);
        free(b);
}

int broker_service_start(kube_client *c, const agent_config *cfg, broker_service **ret, vt_error **err) {
        assert_return(c && cfg && ret, -EINVAL);
        if (strcmp(cfg->keys.provider, "broker") == 0)
                return vt_error_set(err, EINVAL, "the key broker holds the KEKs itself: keys.provider must be secret "
                                                 "or kmip");
        broker_service *b = xnew(broker_service, 1);
        b->client = c;
        b->ns = xstrdup(cfg->namespace);
        b->sa = xstrdup(cfg->broker.agent_service_account);
        b->ds = xstrdup(cfg->broker.agent_daemonset);
        b->reviews = broker_token_cache_new(BROKER_TOKEN_CACHE_TTL);
        int r = keymgr_new(c, cfg, &b->keys, err);
        if (r >= 0) {
                broker_server_options o = {.listen = cfg->broker.listen, .cert_file = cfg->broker.cert_file,
                                           .key_file = cfg->broker.key_file};
                broker_handler h = {.authenticate = authenticate, .serve = serve, .userdata = b};
                r = broker_server_start(&o, &h, &b->server, err);
        }
        if (r < 0) {
                service_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

int broker_service_port(const broker_service *b) {
        return broker_server_port(b->server);
}

void broker_service_stop(broker_service *b) {
        if (!b)
                return;
        broker_server_stop(b->server);
        service_free(b);
}
