/* SPDX-License-Identifier: Apache-2.0 */
/* kube_client failures a caller must be able to tell apart, without an API
 * server: an expired, not-yet-valid or garbled client certificate is refused
 * up front by kube_client_new (the server would only say 401), a closed port
 * is "connection refused", a missing token file is named, and a server-side
 * apply without a field manager never leaves the process. The real server's
 * answers are tested end to end in test/e2e/1x-kube-*.t. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "kube/client.h"
#include "kube/config.h"
#include "tap.h"

/* Signed by a throwaway CA: CN=expired-unit valid 2020-01-01..2020-01-02,
 * CN=future-unit valid 2040-01-01..2041-01-01, both for this key. */
static const char expired_pem[] =
        "-----BEGIN CERTIFICATE-----\n"
        "MIIBEjCBuAICEAAwCgYIKoZIzj0EAwIwEjEQMA4GA1UEAwwHZnV6ei1jYTAeFw0y\n"
        "MDAxMDEwMDAwMDBaFw0yMDAxMDIwMDAwMDBaMBcxFTATBgNVBAMMDGV4cGlyZWQt\n"
        "dW5pdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABIB7eu4NBYRtCCN7to+BH+vP\n"
        "JNw0nOzXfprZZHLXzjmGVqYnrVVbrgJUzToYMbLlUsE7L0eeLVinFfVYJwAlXicw\n"
        "CgYIKoZIzj0EAwIDSQAwRgIhAIR1wPKJ5UXecq8FUMfEB1EaAKK2LNZV+P6OknAt\n"
        "YqIpAiEA1blVS07kEAoAATRIpL5PXLv4s1IX4ETCdzkR4+DtRHc=\n"
        "-----END CERTIFICATE-----\n";
static const char future_pem[] =
        "-----BEGIN CERTIFICATE-----\n"
        "MIIBEDCBtwICEAEwCgYIKoZIzj0EAwIwEjEQMA4GA1UEAwwHZnV6ei1jYTAeFw00\n"
        "MDAxMDEwMDAwMDBaFw00MTAxMDEwMDAwMDBaMBYxFDASBgNVBAMMC2Z1dHVyZS11\n"
        "bml0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEgHt67g0FhG0II3u2j4Ef688k\n"
        "3DSc7Nd+mtlkctfOOYZWpietVVuuAlTNOhgxsuVSwTsvR54tWKcV9VgnACVeJzAK\n"
        "BggqhkjOPQQDAgNIADBFAiB9q18CeWrEQ1KiQB+Fv88Klc04TSaE/jD11OQI/prS\n"
        "iAIhALkyQ47+1mu7kqxc28gO61kcWMiHNCO9odvItlfybjS6\n"
        "-----END CERTIFICATE-----\n";
static const char key_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgH0Os8QxrFkm9O/9y\n"
        "m85fMDa8Ooy3C7rjVsvHQ1cvIfqhRANCAASAe3ruDQWEbQgje7aPgR/rzyTcNJzs\n"
        "136a2WRy1845hlamJ61VW64CVM06GDGy5VLBOy9Hni1YpxX1WCcAJV4n\n"
        "-----END PRIVATE KEY-----\n";

static kube_config *config_with_cert(const char *cert) {
        kube_config *c = xnew(kube_config, 1);
        c->server = xstrdup("https://127.0.0.1:1");
        c->namespace = xstrdup("default");
        c->origin = xstrdup("unit-test kubeconfig (context t)");
        if (cert) {
                c->client_cert_pem = xstrdup(cert);
                c->client_cert_len = strlen(cert);
                c->client_key_pem = xstrdup(key_pem);
                c->client_key_len = strlen(key_pem);
        }
        return c;
}

static void test_expired_client_cert_refused_up_front(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert(expired_pem);
        _cleanup_error_ vt_error *err = NULL;
        kube_client *c = NULL;
        int r = kube_client_new(cfg, "unit", &c, &err);
        check_int_eq(r, -EKEYEXPIRED);
        check(c == NULL);
        check(err != NULL);
        if (err) {
                check_contains(err->msg, "expired on Jan  2 00:00:00 2020 GMT");
                check_contains(err->msg, "expired-unit");
                check_contains(err->msg, "unit-test kubeconfig (context t)");
        }
}

static void test_future_client_cert_refused(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert(future_pem);
        _cleanup_error_ vt_error *err = NULL;
        kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, &err), -EKEYEXPIRED);
        if (err)
                check_contains(err->msg, "not valid yet");
}

static void test_garbled_client_cert_refused(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        _cleanup_error_ vt_error *err = NULL;
        kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, &err), -EINVAL);
        if (err)
                check_contains(err->msg, "not a PEM certificate");
}

static void test_connection_refused_named(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert(NULL);
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_client_ kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, &err), 0);
        if (!c)
                return;
        json_t *j = NULL;
        check_int_eq(kube_get(c, "/version", &j, &err), -ECONNREFUSED);
        check(j == NULL);
        if (err) {
                check_str_eq(vt_error_reason(err), "Unreachable");
                check_contains(err->msg, "connection refused");
                check_contains(err->msg, "https://127.0.0.1:1");
        }
        kube_client_stats st;
        kube_client_get_stats(c, &st);
        check_int_eq(st.requests[KUBE_VERB_GET], 1);
        check_int_eq(st.errors, 1);
}

static void test_missing_token_file_named(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert(NULL);
        cfg->token_file = xstrdup("/nonexistent/vtpm-unit/token");
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_client_ kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, &err), 0);
        if (!c)
                return;
        check_int_eq(kube_get(c, "/version", NULL, &err), -ENOENT);
        if (err)
                check_contains(err->msg, "/nonexistent/vtpm-unit/token");
}

static void test_apply_needs_field_manager(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert(NULL);
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_client_ kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, &err), 0);
        if (!c)
                return;
        json_t *patch = json_pack("{s:s}", "kind", "ConfigMap");
        check_int_eq(kube_patch(c, "/api/v1/namespaces/a/configmaps/b", KUBE_PATCH_APPLY, patch, NULL, false, NULL, &err),
                     -EINVAL);
        json_decref(patch);
        if (err)
                check_contains(err->msg, "field manager");
        kube_client_stats st;
        kube_client_get_stats(c, &st);
        check_int_eq(st.requests[KUBE_VERB_PATCH], 0); /* refused before any request */
}

/* /metrics counts requests by the resource their path names; one row per
 * path shape the agent sends, and the paths that name none. */
static void test_path_resource(void) {
        static const struct {
                const char *path, *want; /* want NULL: names none */
        } rows[] = {
                {"/api/v1/namespaces/x/pods/y", "pods"},
                {"/api/v1/namespaces/x/pods", "pods"},
                {"/api/v1/namespaces/x/pods?labelSelector=a%3Db&limit=500", "pods"},
                {"/apis/vtpm.example.io/v1alpha1/namespaces/x/tpmstates/y/status", "tpmstates"},
                {"/apis/kubevirt.io/v1/namespaces/x/virtualmachines/vm-1", "virtualmachines"},
                {"/apis/kubevirt.io/v1/virtualmachineinstances?watch=1&resourceVersion=5", "virtualmachineinstances"},
                {"/apis/coordination.k8s.io/v1/namespaces/vtpm-system/leases/vtpm-state-1234", "leases"},
                {"/api/v1/namespaces/x/secrets/kek?fieldManager=vtpm", "secrets"},
                {"/api/v1/nodes/node-1", "nodes"},
                {"/apis/storage.k8s.io/v1/storageclasses", "storageclasses"},
                {"/apis/authentication.k8s.io/v1/selfsubjectreviews", "selfsubjectreviews"},
                {"/api/v1/namespaces/x", "namespaces"},
                {"/api/v1/namespaces", "namespaces"},
                {"/api/v1/namespaces/x/", "namespaces"},
                {"/version", NULL},
                {"/api", NULL},
                {"/api/v1", NULL},
                {"/apis/kubevirt.io/v1", NULL},
                {"/apis/kubevirt.io", NULL},
                {"/healthz", NULL},
                {"", NULL},
                {"/api/v1/Pods", NULL},                 /* not a DNS label */
                {"/api/v1/namespaces/x/po%2Fds/y", NULL}, /* escaped bytes */
                {"/api/v1/-pods", NULL},
                {"/api/v1/namespaces/x/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/y", NULL},
        };
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                char buf[KUBE_RESOURCE_NAME_MAX] = "untouched";
                bool ok = kube_path_resource(rows[i].path, buf, sizeof(buf));
                if (!check(ok == (rows[i].want != NULL)))
                        fprintf(stderr, "#     path \"%s\" -> %s\n", rows[i].path, ok ? buf : "(none)");
                check_str_eq(buf, rows[i].want ? rows[i].want : "untouched");
        }
        char small[4] = "";
        check(!kube_path_resource("/api/v1/namespaces/x/pods/y", small, sizeof(small))); /* no room for "pods" */
        check(!kube_path_resource(NULL, small, sizeof(small)));
}

/* The label set stays bounded whatever paths are asked for: past the table's
 * size every new resource counts as "other", and nothing is lost. */
static void test_resource_counts_bounded(void) {
        _cleanup_kube_config_ kube_config *cfg = config_with_cert(NULL);
        _cleanup_kube_client_ kube_client *c = NULL;
        check_int_eq(kube_client_new(cfg, "unit", &c, NULL), 0);
        if (!c)
                return;
        unsigned n = KUBE_STATS_RESOURCES + 8;
        for (unsigned i = 0; i < n; i++) {
                _cleanup_free_ char *p = xasprintf("/apis/unit.example/v1/namespaces/x/things%u/a", i);
                check(kube_get(c, p, NULL, NULL) < 0); /* port 1: refused, still counted */
        }
        check(kube_get(c, "/version", NULL, NULL) < 0);
        kube_client_stats st;
        kube_client_get_stats(c, &st);
        check_int_eq(st.requests[KUBE_VERB_GET], n + 1);
        check_int_eq(st.n_resources, KUBE_STATS_RESOURCES);
        uint64_t sum = 0, other = 0;
        for (size_t i = 0; i < st.n_resources; i++) {
                sum += st.by_resource[i].requests[KUBE_VERB_GET];
                if (strcmp(st.by_resource[i].resource, "other") == 0)
                        other = st.by_resource[i].requests[KUBE_VERB_GET];
        }
        check_int_eq(sum, n + 1);
        /* things0..things30 have rows; things31.. and /version are "other" */
        check_int_eq(other, n + 1 - (KUBE_STATS_RESOURCES - 1));
        check_str_eq(st.by_resource[0].resource, "things0");
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_expired_client_cert_refused_up_front),
                TAP_CASE(test_future_client_cert_refused),
                TAP_CASE(test_garbled_client_cert_refused),
                TAP_CASE(test_connection_refused_named),
                TAP_CASE(test_missing_token_file_named),
                TAP_CASE(test_apply_needs_field_manager),
                TAP_CASE(test_path_resource),
                TAP_CASE(test_resource_counts_bounded),
                {0},
        });
}
