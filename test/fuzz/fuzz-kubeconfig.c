/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the kubeconfig parser (kube_config_parse), followed by
 * kube_client_new on what it accepted (which parses the client certificate
 * PEM and checks its dates, without connecting).
 *
 * Input: the kubeconfig text. When byte 0 is '@' it is dropped and the
 * context "other" is asked for instead of current-context, so both ways of
 * choosing a context are reached.
 *
 * Relative file paths (certificate-authority, client-certificate,
 * client-key) resolve in a fixture directory made at start-up (ca.crt,
 * client.crt, client.key, token: a real CA and client pair). So that the
 * fuzzer never opens arbitrary host files (/dev/stdin would block, /proc and
 * /sys are slow), inputs with a string value that is an absolute path outside
 * the fixture directory or that contains ".." are skipped.
 *
 * Checks besides ASan/UBSan: the documented results (0 with *ret set, or a
 * negative errno with a message and *ret untouched); an accepted config has
 * an https:// server without trailing slash, a namespace and an origin, and a
 * client key exactly when it has a client certificate; kube_client_new keeps
 * the server; and no error message contains a token given in the input
 * (secrets never in messages). */
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/yamljson.h"
#include "kube/client.h"
#include "kube/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fixture_dir[] = "/tmp/fuzz-kubeconfig.XXXXXX";

/* Fixtures: a self-signed CA, and a client certificate it signed (CN=fuzz-client,
 * valid 2026-11-23 to 2036-11-20) with its key. Never used to connect. */
static const char ca_pem[] =
        "-----BEGIN CERTIFICATE-----\n"
        "MIIBejCCAR+gAwIBAgIUDQ0bpUO5RKe2lxzjlklTSY4XFO8wCgYIKoZIzj0EAwIw\n"
        "EjEQMA4GA1UEAwwHZnV6ei1jYTAeFw0yNjExMjMxMDQwMjhaFw0zNjExMjAxMDQw\n"
        "MjhaMBIxEDAOBgNVBAMMB2Z1enotY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n"
        "AAQVZXa9DF2GR6YT+FJ/UUvBYMzkAB/XbM5e43hoOpXXWhSCmQ0lEJDqw0KiWUrM\n"
        "rba7a1yFwcNtFjKaaHrJ0el6o1MwUTAdBgNVHQ4EFgQUIpQ1fOMK4lx6pru6+lp3\n"
        "FXhnwQAwHwYDVR0jBBgwFoAUIpQ1fOMK4lx6pru6+lp3FXhnwQAwDwYDVR0TAQH/\n"
        "BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAgnT15XXwJ7+FoOV+CSC/qF28ScSG\n"
        "RIzVjRD+EgHrR5oCIQDvbbvew/CMumRbXdMKlPBkktT3HatCWvkwskDg7J2aFQ==\n"
        "-----END CERTIFICATE-----\n";
static const char client_pem[] =
        "-----BEGIN CERTIFICATE-----\n"
        "MIIBIjCByQIUNV3yoKUZvpBKDK1qUc4tlbx2fYgwCgYIKoZIzj0EAwIwEjEQMA4G\n"
        "A1UEAwwHZnV6ei1jYTAeFw0yNjExMjMxMDQwMjhaFw0zNjExMjAxMDQwMjhaMBYx\n"
        "FDASBgNVBAMMC2Z1enotY2xpZW50MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        "Nab+KbKYC4MBQuWIviLh4RkLu9NEqUxg3cnen3mA46SbeVYEroCCmg3q+ZYnxxDD\n"
        "1z3Gk/pK3n1MRXen2g3LnTAKBggqhkjOPQQDAgNIADBFAiBtRU3fvlIF1x2OQC+M\n"
        "sNzHFDnymtgakAo2x4YIvcwDogIhAKk1XuXxQ/qB+UjveypgfhTJn2oiBJOICBqa\n"
        "8Gq46ix5\n"
        "-----END CERTIFICATE-----\n";
static const char client_key_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjSRj65VBYMuKJBsa\n"
        "mvfh2cj6NGq7EsOQ9WToNEJgeWGhRANCAAQ1pv4pspgLgwFC5Yi+IuHhGQu700Sp\n"
        "TGDdyd6feYDjpJt5VgSugIKaDer5lifHEMPXPcaT+krefUxFd6faDcud\n"
        "-----END PRIVATE KEY-----\n";

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
        return remove(p);
}

static void cleanup(void) {
        nftw(fixture_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void write_fixture(const char *name, const char *text) {
        _cleanup_free_ char *p = xasprintf("%s/%s", fixture_dir, name);
        FILE *f = fopen(p, "w");
        if (!f)
                abort();
        fputs(text, f);
        fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        if (!mkdtemp(fixture_dir))
                abort();
        atexit(cleanup);
        write_fixture("ca.crt", ca_pem);
        write_fixture("client.crt", client_pem);
        write_fixture("client.key", client_key_pem);
        write_fixture("token", "fixture-token-value\n");
        return 0;
}

typedef struct strings {
        const char **v; /* borrowed from the tree */
        bool *is_token;
        size_t n;
} strings;

static void strings_free(strings *st) {
        free(st->v);
        free(st->is_token);
}

/* Collect every string value; false if one is a path the fuzzer must not open. */
static bool collect(json_t *j, strings *st, const char *key) {
        if (json_is_string(j)) {
                const char *s = json_string_value(j);
                if (strstr(s, ".."))
                        return false;
                if (s[0] == '/' && strncmp(s, fixture_dir, strlen(fixture_dir)) != 0)
                        return false;
                st->v = realloc(st->v, (st->n + 1) * sizeof(char *));
                st->is_token = realloc(st->is_token, (st->n + 1) * sizeof(bool));
                if (!st->v || !st->is_token)
                        abort();
                st->v[st->n] = s;
                st->is_token[st->n++] = key && strcmp(key, "token") == 0;
                return true;
        }
        const char *k;
        size_t i;
        json_t *v;
        if (json_is_object(j)) {
                json_object_foreach(j, k, v) {
                        if (!collect(v, st, k))
                                return false;
                }
        } else if (json_is_array(j)) {
                json_array_foreach(j, i, v) {
                        if (!collect(v, st, key))
                                return false;
                }
        }
        return true;
}

/* A token we can tell apart in a message: long, with a digit, and not part
 * of any other string of the input (a name or URL may rightly be quoted). */
static bool distinctive_token(const strings *st, size_t t) {
        const char *tok = st->v[t];
        if (!st->is_token[t] || strlen(tok) < 12 || !strpbrk(tok, "0123456789"))
                return false;
        for (size_t i = 0; i < st->n; i++)
                if (i != t && strstr(st->v[i], tok))
                        return false;
        return true;
}

static void check_no_token(const strings *st, const char *msg) {
        for (size_t i = 0; i < st->n; i++)
                if (distinctive_token(st, i) && strstr(msg, st->v[i]))
                        abort(); /* a secret in an error message */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *context = NULL;
        if (size > 0 && data[0] == '@') {
                context = "other";
                data++;
                size--;
        }
        /* The parser takes text with a length: a copy with no terminator
         * after `size`, so an overread is caught. */
        char *text = xmalloc(size ? size : 1);
        memcpy(text, data, size);

        json_t *tree = NULL;
        strings st = {0};
        if (yaml_to_json(text, size, "fuzz", &tree, NULL) >= 0 && !collect(tree, &st, NULL))
                goto out;

        kube_config *cfg = (kube_config *)(uintptr_t)1; /* must stay untouched on failure */
        vt_error *err = NULL;
        int r = kube_config_parse(text, size, "fuzz", fixture_dir, context, &cfg, &err);
        if (r < 0) {
                if (!err || !err->msg || err->code != -r || cfg != (kube_config *)(uintptr_t)1)
                        abort();
                check_no_token(&st, err->msg);
        } else {
                if (r != 0 || err || !cfg || !cfg->server || strncmp(cfg->server, "https://", 8) != 0 ||
                    !cfg->namespace || !cfg->origin)
                        abort();
                size_t sl = strlen(cfg->server);
                if (sl > 8 && cfg->server[sl - 1] == '/')
                        abort();
                if (!!cfg->client_cert_pem != !!cfg->client_key_pem)
                        abort();
                kube_client *c = NULL;
                vt_error *cerr = NULL;
                int rc = kube_client_new(cfg, "fuzz", &c, &cerr);
                if (rc < 0) {
                        if (!cerr || !cerr->msg || c)
                                abort();
                        check_no_token(&st, cerr->msg);
                } else if (!c || strcmp(kube_client_server(c), cfg->server) != 0)
                        abort();
                kube_client_free(c);
                vt_error_free(cerr);
                kube_config_free(cfg);
        }
        vt_error_free(err);
out:
        json_decref(tree);
        strings_free(&st);
        free(text);
        return 0;
}
