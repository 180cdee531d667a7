/* SPDX-License-Identifier: Apache-2.0 */
/* kubeconfig and in-cluster configuration parsing. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "kube/client.h"
#include "kube/config.h"
#include "tap.h"

/* "-----BEGIN CERTIFICATE-----\nabc\n" in base64 */
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFiYwo="

static const char kubeconfig[] =
        "apiVersion: v1\n"
        "kind: Config\n"
        "current-context: main\n"
        "clusters:\n"
        "- name: c1\n"
        "  cluster:\n"
        "    server: https://127.0.0.1:16443/\n"
        "    certificate-authority-data: " CA_B64 "\n"
        "- name: c2\n"
        "  cluster:\n"
        "    server: https://10.0.0.1:6443\n"
        "    insecure-skip-tls-verify: true\n"
        "- name: c3\n"
        "  cluster:\n"
        "    server: https://10.0.0.1:6443\n"
        "    insecure-skip-tls-verify: \"true\"\n"
        "contexts:\n"
        "- name: main\n"
        "  context: {cluster: c1, user: tok, namespace: vms}\n"
        "- name: insecure\n"
        "  context: {cluster: c2, user: tokfile}\n"
        "- name: quoted\n"
        "  context: {cluster: c3, user: tok}\n"
        "- name: broken\n"
        "  context: {cluster: nope, user: tok}\n"
        "users:\n"
        "- name: tok\n"
        "  user:\n"
        "    token: s3cr3t-token\n"
        "- name: tokfile\n"
        "  user:\n"
        "    tokenFile: relative/token\n";

static void test_current_context(void) {
        _cleanup_kube_config_ kube_config *c = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(kube_config_parse(kubeconfig, sizeof(kubeconfig) - 1, "t", "/etc/kube", NULL, &c, &err), 0);
        if (!c)
                return;
        check_str_eq(c->server, "https://127.0.0.1:16443");
        check_str_eq(c->namespace, "vms");
        check_str_eq(c->token, "s3cr3t-token");
        check(c->ca_pem && strcmp(c->ca_pem, "-----BEGIN CERTIFICATE-----\nabc\n") == 0);
        check_int_eq(c->ca_pem_len, 32);
        check(!c->insecure_skip_tls_verify);
}

static void test_named_context_and_relative_token_file(void) {
        _cleanup_kube_config_ kube_config *c = NULL;
        check_int_eq(kube_config_parse(kubeconfig, sizeof(kubeconfig) - 1, "t", "/etc/kube", "insecure", &c, NULL), 0);
        if (!c)
                return;
        check(c->insecure_skip_tls_verify);
        check_str_eq(c->token_file, "/etc/kube/relative/token");
        check_str_eq(c->namespace, "default");
}

static void test_insecure_only_when_explicit_boolean(void) {
        _cleanup_kube_config_ kube_config *c = NULL;
        check_int_eq(kube_config_parse(kubeconfig, sizeof(kubeconfig) - 1, "t", "/", "quoted", &c, NULL), 0);
        if (c)
                check(!c->insecure_skip_tls_verify);
}

static void test_errors_name_the_cause(void) {
        _cleanup_kube_config_ kube_config *c = NULL;
        _cleanup_error_ vt_error *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
        check_int_eq(kube_config_parse(kubeconfig, sizeof(kubeconfig) - 1, "t", "/", "broken", &c, &e1), -ENOENT);
        check_contains(e1 ? e1->msg : NULL, "cluster \"nope\"");
        check_int_eq(kube_config_parse(kubeconfig, sizeof(kubeconfig) - 1, "t", "/", "missing", &c, &e2), -ENOENT);
        check_contains(e2 ? e2->msg : NULL, "context \"missing\" not found");
        const char bad[] = "clusters: [\n  - a: b\n  x";
        check_int_eq(kube_config_parse(bad, sizeof(bad) - 1, "bad.yaml", "/", NULL, &c, &e3), -EINVAL);
        check_contains(e3 ? e3->msg : NULL, "bad.yaml:");
        const char http[] = "current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n"
                            "clusters: [{name: c, cluster: {server: 'http://x'}}]\n";
        check_int_eq(kube_config_parse(http, sizeof(http) - 1, "h", "/", NULL, &c, &e4), -EINVAL);
        check_contains(e4 ? e4->msg : NULL, "only https://");
        check(!c);
}

static void test_secrets_not_in_errors(void) {
        /* A user with a token but a missing cluster: the message must not echo the token. */
        const char cfg[] = "current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                           "users: [{name: u, user: {token: hunter2-SECRET}}]\n";
        _cleanup_kube_config_ kube_config *c = NULL;
        _cleanup_error_ vt_error *e = NULL;
        check(kube_config_parse(cfg, sizeof(cfg) - 1, "s", "/", NULL, &c, &e) < 0);
        check(e && !strstr(e->msg, "hunter2"));
}

static void test_aliases_refused(void) {
        const char cfg[] = "a: &x [1, 2]\nb: *x\n";
        _cleanup_kube_config_ kube_config *c = NULL;
        _cleanup_error_ vt_error *e = NULL;
        check_int_eq(kube_config_parse(cfg, sizeof(cfg) - 1, "alias", "/", NULL, &c, &e), -EINVAL);
        check_contains(e ? e->msg : NULL, "aliases");
}

static void test_incluster(void) {
        char dir[] = "/tmp/vtpm-sa-XXXXXX";
        check(mkdtemp(dir) != NULL);
        _cleanup_free_ char *tok = xasprintf("%s/token", dir), *ca = xasprintf("%s/ca.crt", dir),
                            *ns = xasprintf("%s/namespace", dir);
        check_int_eq(write_file_atomic(tok, "tkn\n", 4, 0600, NULL), 0);
        check_int_eq(write_file_atomic(ca, "PEM", 3, 0644, NULL), 0);
        check_int_eq(write_file_atomic(ns, "vtpm-system\n", 12, 0644, NULL), 0);
        setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
        setenv("KUBERNETES_SERVICE_PORT", "16443", 1);
        _cleanup_kube_config_ kube_config *c = NULL;
        check_int_eq(kube_config_load_incluster(dir, &c, NULL), 0);
        if (c) {
                check_str_eq(c->server, "https://127.0.0.1:16443");
                check_str_eq(c->token_file, tok);
                check_str_eq(c->namespace, "vtpm-system");
                check_int_eq(c->ca_pem_len, 3);
        }
        unsetenv("KUBERNETES_SERVICE_HOST");
        _cleanup_kube_config_ kube_config *c2 = NULL;
        _cleanup_error_ vt_error *e = NULL;
        check_int_eq(kube_config_load_incluster(dir, &c2, &e), -ENOENT);
        check_contains(e ? e->msg : NULL, "KUBERNETES_SERVICE_HOST");
        unlink(tok);
        unlink(ca);
        unlink(ns);
        rmdir(dir);
}

static void test_paths(void) {
        static const kube_resource pvc = {"", "v1", "persistentvolumeclaims", true};
        static const kube_resource vm = {"kubevirt.io", "v1", "virtualmachines", true};
        _cleanup_free_ char *a = kube_path(&pvc, "vms", "persistent-state-for-win11", NULL);
        _cleanup_free_ char *b = kube_path(&vm, NULL, NULL, NULL);
        _cleanup_free_ char *c = kube_path(&vm, "ns", "x y", "status");
        _cleanup_free_ char *d = kube_escape("kubevirt.io=virt-launcher,a in (b)");
        check_str_eq(a, "/api/v1/namespaces/vms/persistentvolumeclaims/persistent-state-for-win11");
        check_str_eq(b, "/apis/kubevirt.io/v1/virtualmachines");
        check_str_eq(c, "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines/x%20y/status");
        check_str_eq(d, "kubevirt.io%3Dvirt-launcher%2Ca%20in%20%28b%29");
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_current_context),
                TAP_CASE(test_named_context_and_relative_token_file),
                TAP_CASE(test_insecure_only_when_explicit_boolean),
                TAP_CASE(test_errors_name_the_cause),
                TAP_CASE(test_secrets_not_in_errors),
                TAP_CASE(test_aliases_refused),
                TAP_CASE(test_incluster),
                TAP_CASE(test_paths),
                {0},
        });
}
