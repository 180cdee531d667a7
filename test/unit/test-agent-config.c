/* SPDX-License-Identifier: Apache-2.0 */
/* config.c: defaults, every value type, and file:line:column on errors. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "config.h"
#include "tap.h"

static agent_config *ok_parse(const char *yaml) {
        agent_config *c = NULL;
        _cleanup_error_ vt_error *err = NULL;
        int r = agent_config_parse(yaml, strlen(yaml), "cfg.yaml", &c, &err);
        if (r < 0)
                printf("# unexpected error: %s\n", err ? err->msg : "?");
        check_int_eq(r, 0);
        return c;
}

/* Parse must fail; returns the message (caller frees). */
static char *bad_parse(const char *yaml) {
        agent_config *c = NULL;
        vt_error *err = NULL;
        int r = agent_config_parse(yaml, strlen(yaml), "cfg.yaml", &c, &err);
        check_int_eq(r, -EINVAL);
        check(c == NULL);
        char *m = xstrdup(err ? err->msg : "");
        vt_error_free(err);
        return m;
}

static void test_defaults(void) {
        _cleanup_(agent_config_freep) agent_config *c = agent_config_new_default();
        check_str_eq(c->namespace, "vtpm-system");
        check(c->state.enabled);
        check(c->state.storage_class == NULL);
        check_int_eq(c->state.size, 10LL << 20);
        check_str_eq(c->state.lease_name, "vtpm-agent-state-controller");
        check_int_eq(c->state.workers, 16);
        check_str_eq(c->keys.provider, "secret");
        check_str_eq(c->log.format, "json");
        check_int_eq(agent_config_size_for_class(c, "any"), 10LL << 20);
        /* An empty file is the defaults too. */
        _cleanup_(agent_config_freep) agent_config *e = ok_parse("");
        check(e && e->state.size == 10LL << 20 && strcmp(e->namespace, "vtpm-system") == 0);
}

static void test_values(void) {
        _cleanup_(agent_config_freep) agent_config *c = ok_parse("namespace: vt\n"
                                                                  "state:\n"
                                                                  "  enabled: false\n"
                                                                  "  storageClass: rwx\n"
                                                                  "  size: 1Gi\n"
                                                                  "  minimumSizes: {ceph: 2Gi, tiny: 1Mi}\n"
                                                                  "  leaseName: my-lease\n"
                                                                  "  workers: 4\n"
                                                                  "http: {listen: \"\"}\n"
                                                                  "log: {level: debug, format: text}\n");
        if (!c)
                return;
        check_str_eq(c->namespace, "vt");
        check(!c->state.enabled);
        check_str_eq(c->state.storage_class, "rwx");
        check_int_eq(c->state.size, 1LL << 30);
        check_str_eq(c->state.lease_name, "my-lease");
        check_int_eq(c->state.workers, 4);
        check(c->http.listen == NULL); /* "" disables */
        check_str_eq(c->log.level, "debug");
        /* size raised to a class minimum, never lowered */
        check_int_eq(agent_config_size_for_class(c, "ceph"), 2LL << 30);
        check_int_eq(agent_config_size_for_class(c, "tiny"), 1LL << 30);
        check_int_eq(agent_config_size_for_class(c, "other"), 1LL << 30);
        check_int_eq(agent_config_size_for_class(c, NULL), 1LL << 30);
}

static void test_unknown_key(void) {
        _cleanup_free_ char *m = bad_parse("namespace: a\nstate:\n  size: 10Mi\n  storgeClass: x\n");
        check_contains(m, "cfg.yaml:4:3:");
        check_contains(m, "unknown key \"state.storgeClass\"");
        check_contains(m, "storageClass"); /* the known keys are listed */
        _cleanup_free_ char *m2 = bad_parse("bogus: 1\n");
        check_contains(m2, "cfg.yaml:1:1: unknown key \"bogus\"");
}

static void test_bad_types(void) {
        _cleanup_free_ char *m1 = bad_parse("state:\n  enabled: \"yes\"\n");
        check_contains(m1, "cfg.yaml:2:12:");
        check_contains(m1, "\"state.enabled\" must be true or false");
        _cleanup_free_ char *m2 = bad_parse("state:\n  workers: 0\n");
        check_contains(m2, "cfg.yaml:2:12:");
        check_contains(m2, "\"state.workers\" must be a whole number from 1 to 256");
        _cleanup_free_ char *m3 = bad_parse("state:\n  workers: 4x\n");
        check_contains(m3, "state.workers");
        _cleanup_free_ char *m4 = bad_parse("state:\n  size: ten\n");
        check_contains(m4, "cfg.yaml:2:9: state.size: ");
        _cleanup_free_ char *m5 = bad_parse("state: [1, 2]\n");
        check_contains(m5, "cfg.yaml:1:8:");
        check_contains(m5, "\"state\" must be a mapping");
        _cleanup_free_ char *m6 = bad_parse("namespace: [a]\n");
        check_contains(m6, "\"namespace\" must be a single value");
        _cleanup_free_ char *m7 = bad_parse("log:\n  format: xml\n");
        check_contains(m7, "cfg.yaml:2:11:");
        check_contains(m7, "must be one of: json, text");
        _cleanup_free_ char *m8 = bad_parse("state:\n  minimumSizes: {ceph: lots}\n");
        check_contains(m8, "cfg.yaml:2:24: state.minimumSizes: ");
        _cleanup_free_ char *m9 = bad_parse("state:\n  minimumSizes: 5Gi\n");
        check_contains(m9, "must map storage-class names to sizes");
        /* A state PVC of zero bytes is refused by the API server: refused here, at start. */
        _cleanup_free_ char *m11 = bad_parse("state:\n  size: 0\n");
        check_contains(m11, "cfg.yaml:2:9: state.size must be a size above zero");
        _cleanup_free_ char *m12 = bad_parse("namespace: \"\"\n");
        check_contains(m12, "cfg.yaml:1:12: \"namespace\" must not be empty");
        _cleanup_free_ char *m10 = bad_parse("- a\n- b\n");
        check_contains(m10, "cfg.yaml:1:1: the configuration must be a mapping");
}

static void test_bad_paths(void) {
        _cleanup_free_ char *m1 = bad_parse("node:\n  kubeletRoot: var/lib/kubelet\n");
        check_contains(m1, "cfg.yaml:2:16:");
        check_contains(m1, "\"node.kubeletRoot\" must be an absolute path");
        _cleanup_free_ char *m2 = bad_parse("keys:\n  provider: kmip\n  kmip:\n    caFile: /nonexistent/ca.pem\n");
        check_contains(m2, "cfg.yaml:4:13:");
        check_contains(m2, "cannot read /nonexistent/ca.pem");
        _cleanup_free_ char *m3 = bad_parse("keys: {provider: kmip}\n");
        check_contains(m3, "keys.provider is kmip but keys.kmip is missing");
}

/* The node side of the key broker: an https URL, a CA and a token file. */
static void test_broker(void) {
        _cleanup_(agent_config_freep) agent_config *c = ok_parse(
                "keys:\n  provider: broker\n  broker: {url: \"https://b.example:8443\", caFile: /etc/hostname, "
                "tokenFile: /run/token}\n");
        check(c && strcmp(c->keys.provider, "broker") == 0 && strcmp(c->keys.broker_url, "https://b.example:8443") == 0 &&
              strcmp(c->keys.broker_token_file, "/run/token") == 0);
        _cleanup_(agent_config_freep) agent_config *d = agent_config_new_default();
        check(d->broker.listen == NULL && strcmp(d->broker.agent_service_account, "vtpm-agent") == 0 &&
              strcmp(d->broker.agent_daemonset, "vtpm-agent") == 0);
        _cleanup_free_ char *m1 = bad_parse("keys: {provider: broker}\n");
        check_contains(m1, "keys.provider is broker but keys.broker is missing an https:// url");
        _cleanup_free_ char *m2 = bad_parse(
                "keys:\n  provider: broker\n  broker: {url: \"http://b:80\", caFile: /etc/hostname, tokenFile: /t}\n");
        check_contains(m2, "missing an https:// url");
}

/* node.launcherSocket: the launcher pod's emptyDir volume and file, as
 * KubeVirt's virt-handler looks for them; the old shared directory is gone. */
static void test_launcher_socket(void) {
        _cleanup_(agent_config_freep) agent_config *d = agent_config_new_default();
        check_str_eq(d->node.launcher_socket, "sockets/launcher-sock");
        _cleanup_(agent_config_freep) agent_config *c = ok_parse("node: {launcherSocket: private/cmd.sock}\n");
        check(c && strcmp(c->node.launcher_socket, "private/cmd.sock") == 0);
        const char *bad[] = {"launcher-sock", "/sockets/launcher-sock", "sockets/", "a/b/c", "../x", "x/..", ""};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                _cleanup_free_ char *y = xasprintf("node: {launcherSocket: \"%s\"}\n", bad[i]);
                _cleanup_free_ char *m = bad_parse(y);
                check_contains(m, "node.launcherSocket must be <emptyDir volume name>/<file name>");
        }
        _cleanup_free_ char *m = bad_parse("node: {socketDir: /var/run/kubevirt/sockets}\n");
        check_contains(m, "unknown key \"node.socketDir\"");
}

static void test_syntax_error(void) {
        _cleanup_free_ char *m = bad_parse("state:\n  size: 10Mi\n bad: [\n");
        check_contains(m, "cfg.yaml:");
        check(strstr(m, "cfg.yaml:") == m);
}

static void test_load_file(void) {
        char path[] = "/tmp/test-agent-config-XXXXXX";
        int fd = mkstemp(path);
        check(fd >= 0);
        if (fd < 0)
                return;
        const char *y = "state:\n  workers: 300\n";
        check(write(fd, y, strlen(y)) == (ssize_t)strlen(y));
        close(fd);
        agent_config *c = NULL;
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(agent_config_load(path, &c, &err), -EINVAL);
        _cleanup_free_ char *want = xasprintf("%s:2:12:", path);
        check_contains(err ? err->msg : NULL, want);
        unlink(path);
        vt_error *err2 = NULL;
        check(agent_config_load("/nonexistent/vtpm.yaml", &c, &err2) < 0);
        check_contains(err2 ? err2->msg : NULL, "configuration: ");
        vt_error_free(err2);
}

/* The state lease: 40 s, a renew deadline of two thirds, at most the
 * duration less the time a stop can take (8 s); validated together. */
static void test_state_lease(void) {
        state_lease_timing t;
        _cleanup_(agent_config_freep) agent_config *d = agent_config_new_default();
        agent_config_state_lease_timing(d, &t);
        check_int_eq(t.duration, 40);
        check_int_eq(t.renew_deadline, 26);
        check_int_eq(t.retry_period, 5);
        _cleanup_(agent_config_freep) agent_config *c = ok_parse("node: {stateLeaseSeconds: 15}\n");
        if (c) {
                agent_config_state_lease_timing(c, &t);
                check_int_eq(t.duration, 15);
                check_int_eq(t.renew_deadline, 7); /* not 10: the stop needs 8 s */
                check_int_eq(t.retry_period, 1);
        }
        _cleanup_(agent_config_freep) agent_config *e =
                ok_parse("node: {stateLeaseSeconds: 60, stateLeaseRenewDeadlineSeconds: 30}\n");
        if (e) {
                agent_config_state_lease_timing(e, &t);
                check_int_eq(t.duration, 60);
                check_int_eq(t.renew_deadline, 30);
                check_int_eq(t.retry_period, 6);
        }
        _cleanup_free_ char *m1 = bad_parse("node: {stateLeaseSeconds: 10}\n");
        check_contains(m1, "\"node.stateLeaseSeconds\" must be a whole number from 15 to 3600");
        _cleanup_free_ char *m2 = bad_parse("node: {stateLeaseSeconds: 30, stateLeaseRenewDeadlineSeconds: 25}\n");
        check_contains(m2, "node.stateLeaseRenewDeadlineSeconds must be at least 5 and at most node.stateLeaseSeconds - 8 (22)");
        _cleanup_free_ char *m3 = bad_parse("node: {stateLeaseRenewDeadlineSeconds: 4}\n");
        check_contains(m3, "at least 5");
}

/* The key broker: "" (and absent) is off; on, it needs its TLS files and a
 * provider that holds KEKs (it cannot ask itself). */
static void test_broker_service(void) {
        _cleanup_(agent_config_freep) agent_config *off = ok_parse("broker: {listen: \"\"}\n");
        if (off)
                check(!off->broker.listen); /* "" is unset: no broker */
        _cleanup_(agent_config_freep) agent_config *on =
                ok_parse("broker: {listen: \":8443\", certFile: /etc/passwd, keyFile: /etc/passwd}\n");
        if (on) {
                check_str_eq(on->broker.agent_service_account, "vtpm-agent");
                check_str_eq(on->broker.agent_daemonset, "vtpm-agent");
        }
        _cleanup_free_ char *m1 = bad_parse("broker: {listen: \":8443\"}\n");
        check_contains(m1, "broker.listen needs broker.certFile and broker.keyFile");
        _cleanup_free_ char *m2 = bad_parse("keys: {provider: broker, broker: {url: \"https://b:8443\", caFile: "
                                            "/etc/passwd, tokenFile: /t}}\nbroker: {listen: \":8443\", certFile: "
                                            "/etc/passwd, keyFile: /etc/passwd}\n");
        check_contains(m2, "keys.provider must be secret or kmip");
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_defaults), TAP_CASE(test_values), TAP_CASE(test_unknown_key),
                                    TAP_CASE(test_bad_types), TAP_CASE(test_bad_paths), TAP_CASE(test_broker), TAP_CASE(test_launcher_socket),
                                    TAP_CASE(test_syntax_error), TAP_CASE(test_load_file), TAP_CASE(test_state_lease),
                                    TAP_CASE(test_broker_service), {0}});
}
