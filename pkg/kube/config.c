/* SPDX-License-Identifier: Apache-2.0 */
#include "kube/config.h"

#include <jansson.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/yamljson.h"

#define MAX_CONFIG_FILE (4u << 20)
#define DEFAULT_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

static void free_secret(char *s, size_t len) {
        if (s) {
                OPENSSL_cleanse(s, len ? len : strlen(s));
                free(s);
        }
}

void kube_config_free(kube_config *c) {
        if (!c)
                return;
        free(c->server);
        free(c->tls_server_name);
        free(c->ca_pem);
        free(c->ca_origin);
        free(c->client_cert_pem);
        free_secret(c->client_key_pem, c->client_key_len);
        free_secret(c->token, 0);
        free(c->token_file);
        free(c->namespace);
        free(c->origin);
        free(c);
}

/* Find the entry `name` in a kubeconfig list such as clusters: [{name, cluster}]. */
static json_t *named_entry(json_t *root, const char *list, const char *field, const char *name) {
        json_t *arr = json_object_get(root, list);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
                const char *n = json_string_value(json_object_get(e, "name"));
                if (n && strcmp(n, name) == 0)
                        return json_object_get(e, field);
        }
        return NULL;
}

static const char *str_field(json_t *o, const char *k) {
        return json_string_value(json_object_get(o, k));
}

static char *resolve_path(const char *base_dir, const char *p) {
        if (p[0] == '/' || !base_dir)
                return xstrdup(p);
        return xasprintf("%s/%s", base_dir, p);
}

static int base64_decode(const char *in, const char *what, char **ret, size_t *ret_len, vt_error **err) {
        size_t inlen = strlen(in);
        _cleanup_free_ char *clean = xmalloc(inlen + 1);
        size_t n = 0;
        for (size_t i = 0; i < inlen; i++)
                if (in[i] != '\n' && in[i] != '\r' && in[i] != ' ')
                        clean[n++] = in[i];
        if (n % 4 != 0)
                return vt_error_set(err, EINVAL, "%s is not valid base64", what);
        char *out = xmalloc(n / 4 * 3 + 1);
        int len = n ? EVP_DecodeBlock((unsigned char *)out, (unsigned char *)clean, (int)n) : 0;
        if (len < 0) {
                free(out);
                return vt_error_set(err, EINVAL, "%s is not valid base64", what);
        }
        /* EVP_DecodeBlock counts padding as data bytes: drop them. */
        if (n >= 1 && clean[n - 1] == '=')
                len--;
        if (n >= 2 && clean[n - 2] == '=')
                len--;
        out[len] = '\0';
        *ret = out;
        *ret_len = (size_t)len;
        return 0;
}

/* Load "<key>-data" (base64) or "<key>" (a file path) into a PEM buffer. */
static int load_pem(json_t *o, const char *key, const char *base_dir, const char *what, char **ret,
                    size_t *ret_len, char **ret_origin, vt_error **err) {
        _cleanup_free_ char *data_key = xasprintf("%s-data", key);
        const char *data = str_field(o, data_key);
        const char *file = str_field(o, key);
        if (data && *data) {
                if (ret_origin)
                        *ret_origin = xasprintf("%s (inline %s)", what, data_key);
                return base64_decode(data, data_key, ret, ret_len, err);
        }
        if (file && *file) {
                _cleanup_free_ char *path = resolve_path(base_dir, file);
                int r = read_full_file(path, MAX_CONFIG_FILE, ret, ret_len, err);
                if (r < 0)
                        return vt_error_prefix(err, r, "%s: ", what);
                if (ret_origin)
                        *ret_origin = xasprintf("%s (%s)", what, path);
        }
        return 0;
}

/* What the steps of kube_config_parse share. */
typedef struct kc_parse {
        json_t *root;
        const char *name;     /* the file, in messages */
        const char *base_dir; /* relative file paths are relative to it */
        const char *ctx_name;
        vt_error **err;
} kc_parse;

/* The context's cluster: server URL, TLS settings and certificate authority. */
static int parse_cluster(const kc_parse *p, const char *cluster_name, kube_config *c) {
        json_t *cluster = cluster_name ? named_entry(p->root, "clusters", "cluster", cluster_name) : NULL;
        if (!json_is_object(cluster))
                return vt_error_set(p->err, ENOENT, "%s: cluster \"%s\" of context \"%s\" not found", p->name,
                                    cluster_name ? cluster_name : "", p->ctx_name);
        const char *server = str_field(cluster, "server");
        if (!server || strncmp(server, "https://", 8) != 0)
                return vt_error_set(p->err, EINVAL, "%s: cluster \"%s\" has %s server URL%s%s", p->name, cluster_name,
                                    server ? "an unsupported" : "no",
                                    server ? " (only https:// is accepted): " : "", server ? server : "");
        c->server = xstrdup(server);
        size_t sl = strlen(c->server);
        while (sl > 8 && c->server[sl - 1] == '/')
                c->server[--sl] = '\0';
        if (str_field(cluster, "tls-server-name"))
                c->tls_server_name = xstrdup(str_field(cluster, "tls-server-name"));
        /* Only an explicit boolean true disables verification. */
        c->insecure_skip_tls_verify = json_is_true(json_object_get(cluster, "insecure-skip-tls-verify"));
        return load_pem(cluster, "certificate-authority", p->base_dir, "certificate authority", &c->ca_pem,
                        &c->ca_pem_len, &c->ca_origin, p->err);
}

/* The context's user, if it names one: a client certificate and key, or a
 * token; plugins are refused. */
static int parse_user(const kc_parse *p, const char *user_name, kube_config *c) {
        json_t *user = user_name ? named_entry(p->root, "users", "user", user_name) : NULL;
        if (user_name && !json_is_object(user))
                return vt_error_set(p->err, ENOENT, "%s: user \"%s\" of context \"%s\" not found", p->name, user_name,
                                    p->ctx_name);
        if (!user)
                return 0;
        int r = load_pem(user, "client-certificate", p->base_dir, "client certificate", &c->client_cert_pem,
                         &c->client_cert_len, NULL, p->err);
        if (r < 0)
                return r;
        r = load_pem(user, "client-key", p->base_dir, "client key", &c->client_key_pem, &c->client_key_len, NULL,
                     p->err);
        if (r < 0)
                return r;
        if (!!c->client_cert_pem != !!c->client_key_pem)
                return vt_error_set(p->err, EINVAL, "%s: user \"%s\" has a client %s but no client %s", p->name,
                                    user_name, c->client_cert_pem ? "certificate" : "key",
                                    c->client_cert_pem ? "key" : "certificate");
        const char *tok = str_field(user, "token");
        const char *tokfile = str_field(user, "tokenFile");
        if (tok && *tok)
                c->token = xstrdup(tok);
        if (tokfile && *tokfile)
                c->token_file = resolve_path(p->base_dir, tokfile);
        if (json_object_get(user, "exec") || json_object_get(user, "auth-provider"))
                return vt_error_set(p->err, ENOTSUP,
                                    "%s: user \"%s\" uses an exec/auth-provider plugin, which vtpm-agent "
                                    "does not run; use a client certificate or a token",
                                    p->name, user_name);
        return 0;
}

/* The parsed document: its context, then that context's cluster and user. */
static int parse_tree(json_t *root, const char *name, const char *base_dir, const char *context, kube_config **ret,
                      vt_error **err) {
        if (!json_is_object(root))
                return vt_error_set(err, EINVAL, "%s: not a kubeconfig (top level is not a mapping)", name);
        const char *ctx_name = context ? context : str_field(root, "current-context");
        if (!ctx_name || !*ctx_name)
                return vt_error_set(err, EINVAL, "%s: no current-context set and no context given", name);
        json_t *ctx = named_entry(root, "contexts", "context", ctx_name);
        if (!json_is_object(ctx))
                return vt_error_set(err, ENOENT, "%s: context \"%s\" not found", name, ctx_name);

        kc_parse p = {root, name, base_dir, ctx_name, err};
        _cleanup_kube_config_ kube_config *c = xnew(kube_config, 1);
        int r = parse_cluster(&p, str_field(ctx, "cluster"), c);
        if (r < 0)
                return r;
        r = parse_user(&p, str_field(ctx, "user"), c);
        if (r < 0)
                return r;
        const char *ns = str_field(ctx, "namespace");
        c->namespace = xstrdup(ns && *ns ? ns : "default");
        c->origin = xasprintf("%s (context %s)", name, ctx_name);
        *ret = TAKE_PTR(c);
        return 0;
}

int kube_config_parse(const char *data, size_t len, const char *name, const char *base_dir,
                      const char *context, kube_config **ret, vt_error **err) {
        assert_return(data && name && ret, -EINVAL);
        json_t *root = NULL;
        int r = yaml_to_json(data, len, name, &root, err);
        if (r < 0)
                return r;
        r = parse_tree(root, name, base_dir, context, ret, err);
        /* The tree may hold a token or key: wipe its strings before freeing. */
        json_decref(root);
        return r;
}

int kube_config_load_file(const char *path, const char *context, kube_config **ret, vt_error **err) {
        assert_return(path && ret, -EINVAL);
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        int r = read_full_file(path, MAX_CONFIG_FILE, &data, &len, err);
        if (r < 0)
                return vt_error_prefix(err, r, "kubeconfig: ");
        _cleanup_free_ char *dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        if (slash)
                *slash = '\0';
        r = kube_config_parse(data, len, path, slash ? dir : ".", context, ret, err);
        OPENSSL_cleanse(data, len);
        return r;
}

int kube_config_load_incluster(const char *sa_dir, kube_config **ret, vt_error **err) {
        assert_return(ret, -EINVAL);
        const char *host = getenv("KUBERNETES_SERVICE_HOST");
        const char *port = getenv("KUBERNETES_SERVICE_PORT");
        if (!host || !*host || !port || !*port)
                return vt_error_set(err, ENOENT,
                                    "in-cluster config: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT not set "
                                    "(not running in a pod?)");
        if (!sa_dir)
                sa_dir = DEFAULT_SA_DIR;
        _cleanup_kube_config_ kube_config *c = xnew(kube_config, 1);
        c->server = strchr(host, ':') ? xasprintf("https://[%s]:%s", host, port) : xasprintf("https://%s:%s", host, port);
        c->token_file = xasprintf("%s/token", sa_dir);
        if (access(c->token_file, R_OK) < 0)
                return vt_error_errno(err, errno, "in-cluster config: cannot read %s", c->token_file);
        _cleanup_free_ char *ca = xasprintf("%s/ca.crt", sa_dir);
        int r = read_full_file(ca, MAX_CONFIG_FILE, &c->ca_pem, &c->ca_pem_len, err);
        if (r < 0)
                return vt_error_prefix(err, r, "in-cluster config: ");
        c->ca_origin = xasprintf("certificate authority (%s)", ca);
        _cleanup_free_ char *nsfile = xasprintf("%s/namespace", sa_dir);
        _cleanup_free_ char *ns = NULL;
        if (read_full_file(nsfile, 4096, &ns, NULL, NULL) >= 0) {
                ns[strcspn(ns, "\r\n")] = '\0';
                c->namespace = xstrdup(ns);
        } else
                c->namespace = xstrdup("default");
        c->origin = xstrdup("in-cluster service account");
        *ret = TAKE_PTR(c);
        return 0;
}

int kube_config_load_default(const char *explicit_path, kube_config **ret, vt_error **err) {
        if (explicit_path && *explicit_path)
                return kube_config_load_file(explicit_path, NULL, ret, err);
        const char *env = getenv("KUBECONFIG");
        if (env && *env) {
                /* A list is allowed; the first file that exists is used. */
                _cleanup_free_ char *copy = xstrdup(env);
                char *save = NULL;
                for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save))
                        if (access(p, F_OK) == 0)
                                return kube_config_load_file(p, NULL, ret, err);
        }
        if (getenv("KUBERNETES_SERVICE_HOST"))
                return kube_config_load_incluster(NULL, ret, err);
        const char *home = getenv("HOME");
        if (home) {
                _cleanup_free_ char *p = xasprintf("%s/.kube/config", home);
                if (access(p, F_OK) == 0)
                        return kube_config_load_file(p, NULL, ret, err);
        }
        return vt_error_set(err, ENOENT,
                            "no API server configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod");
}
