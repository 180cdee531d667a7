/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed tool (not product code): performs pkg/kube requests against the
 * real API server and prints what the client returned, so shell tests can
 * check results and the exact error a caller would see.
 *
 *   kube-call [--kubeconfig F [--context C] | --incluster DIR] [--user-agent UA] [CMD ARG...]
 *
 * With a command in argv it runs that one and exits 0 (success) or 1 (error).
 * Without one it reads one command per line from stdin and runs each on the
 * same client (so a test can change a token file between requests); it exits
 * 1 if any failed. --incluster takes the service-account directory and reads
 * KUBERNETES_SERVICE_HOST/PORT from the environment.
 *
 * Commands (JSON is the rest of the line / the last argument):
 *   version | whoami | namespace | stats
 *   get PATH | list PATH [LABEL-SELECTOR]
 *   create PATH JSON | update PATH JSON | patch-json PATH JSON | patch-merge PATH JSON
 *   apply PATH MANAGER FORCE(0|1) JSON
 *   delete PATH [uid=U] [rv=R] [propagation=P]
 *
 * Output, one line per command: "OK <text or compact JSON>" or
 * "ERROR reason=<vt_error reason> errno=<ENAME>: <message>". stats prints the
 * client's counters: {"requests":N,"errors":N,"tokenReloads":N}. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "kube/client.h"
#include "kube/config.h"

#define MAX_WORDS 8

static int print_error(const vt_error *err, int r) {
        const char *name = strerrorname_np(-r);
        printf("ERROR reason=%s errno=%s: %s\n", err && vt_error_reason(err)[0] ? vt_error_reason(err) : "-",
               name ? name : "?", err && err->msg ? err->msg : "(no message)");
        fflush(stdout);
        return r;
}

static void print_json(json_t *j) {
        _cleanup_free_ char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        printf("OK %s\n", s ? s : "");
        fflush(stdout);
}

static json_t *parse_body(const char *text, vt_error **err) {
        json_error_t je;
        json_t *j = text ? json_loads(text, JSON_DECODE_ANY, &je) : NULL;
        if (!j)
                vt_error_set(err, EINVAL, "bad JSON argument%s%s", text ? ": " : " (missing)", text ? je.text : "");
        return j;
}

/* words[0] is the command; `rest` the JSON text when the command takes one. */
static int run(kube_client *c, char **w, size_t n, const char *rest) {
        _cleanup_error_ vt_error *err = NULL;
        const char *cmd = w[0];
        int r;
        if (strcmp(cmd, "version") == 0 || strcmp(cmd, "whoami") == 0) {
                _cleanup_free_ char *s = NULL;
                r = cmd[0] == 'v' ? kube_server_version(c, &s, &err) : kube_whoami(c, &s, &err);
                if (r < 0)
                        return print_error(err, r);
                printf("OK %s\n", s);
        } else if (strcmp(cmd, "namespace") == 0) {
                printf("OK %s\n", kube_client_namespace(c));
        } else if (strcmp(cmd, "stats") == 0) {
                kube_client_stats s;
                kube_client_get_stats(c, &s);
                uint64_t total = 0;
                for (int v = 0; v < _KUBE_VERB_MAX; v++)
                        total += s.requests[v];
                printf("OK {\"requests\":%llu,\"errors\":%llu,\"tokenReloads\":%llu}\n", (unsigned long long)total,
                       (unsigned long long)s.errors, (unsigned long long)s.token_reloads);
        } else if (n >= 2 && strcmp(cmd, "get") == 0) {
                json_t *j = NULL;
                r = kube_get(c, w[1], &j, &err);
                if (r < 0)
                        return print_error(err, r);
                print_json(j);
                json_decref(j);
        } else if (n >= 2 && strcmp(cmd, "list") == 0) {
                /* Every page (limit 50): prints the names, one JSON array. */
                json_t *names = json_array();
                _cleanup_free_ char *cont = NULL;
                do {
                        json_t *page = NULL;
                        r = kube_list_page(c, w[1], n >= 3 ? w[2] : NULL, NULL, 50, cont, &page, &err);
                        if (r < 0) {
                                json_decref(names);
                                return print_error(err, r);
                        }
                        size_t i;
                        json_t *item;
                        json_array_foreach(json_object_get(page, "items"), i, item)
                                json_array_append(names, json_object_get(json_object_get(item, "metadata"), "name"));
                        free(cont);
                        const char *t = json_string_value(
                                json_object_get(json_object_get(page, "metadata"), "continue"));
                        cont = t && *t ? xstrdup(t) : NULL;
                        json_decref(page);
                } while (cont);
                print_json(names);
                json_decref(names);
        } else if (n >= 2 && (strcmp(cmd, "create") == 0 || strcmp(cmd, "update") == 0 ||
                              strcmp(cmd, "patch-json") == 0 || strcmp(cmd, "patch-merge") == 0 ||
                              (strcmp(cmd, "apply") == 0 && n >= 4))) {
                json_t *body = parse_body(rest, &err);
                if (!body)
                        return print_error(err, -EINVAL);
                json_t *j = NULL;
                if (cmd[0] == 'c')
                        r = kube_create(c, w[1], body, &j, &err);
                else if (cmd[0] == 'u')
                        r = kube_update(c, w[1], body, &j, &err);
                else if (cmd[0] == 'a')
                        r = kube_patch(c, w[1], KUBE_PATCH_APPLY, body, w[2], strcmp(w[3], "1") == 0, &j, &err);
                else
                        r = kube_patch(c, w[1], strcmp(cmd, "patch-json") == 0 ? KUBE_PATCH_JSON : KUBE_PATCH_MERGE,
                                       body, NULL, false, &j, &err);
                json_decref(body);
                if (r < 0)
                        return print_error(err, r);
                print_json(j);
                json_decref(j);
        } else if (n >= 2 && strcmp(cmd, "delete") == 0) {
                const char *uid = NULL, *rv = NULL, *prop = NULL;
                for (size_t i = 2; i < n; i++) {
                        if (strncmp(w[i], "uid=", 4) == 0)
                                uid = w[i] + 4;
                        else if (strncmp(w[i], "rv=", 3) == 0)
                                rv = w[i] + 3;
                        else if (strncmp(w[i], "propagation=", 12) == 0)
                                prop = w[i] + 12;
                }
                r = kube_delete(c, w[1], uid, rv, prop, &err);
                if (r < 0)
                        return print_error(err, r);
                printf("OK deleted\n");
        } else {
                printf("ERROR reason=Usage errno=EINVAL: unknown command or missing arguments: %s\n", cmd);
                fflush(stdout);
                return -EINVAL;
        }
        fflush(stdout);
        return 0;
}

/* How many leading words a command has before its JSON text. */
static size_t words_before_json(const char *cmd) {
        if (strcmp(cmd, "apply") == 0)
                return 4;
        if (strcmp(cmd, "create") == 0 || strcmp(cmd, "update") == 0 || strcmp(cmd, "patch-json") == 0 ||
            strcmp(cmd, "patch-merge") == 0)
                return 2;
        return MAX_WORDS;
}

static int run_line(kube_client *c, char *line) {
        char *w[MAX_WORDS];
        size_t n = 0;
        char *p = line;
        const char *rest = NULL;
        while (n < MAX_WORDS) {
                p += strspn(p, " \t");
                if (!*p)
                        break;
                if (n > 0 && n == words_before_json(w[0])) {
                        rest = p;
                        break;
                }
                w[n++] = p;
                p += strcspn(p, " \t");
                if (*p)
                        *p++ = '\0';
        }
        if (n == 0)
                return 0;
        return run(c, w, n, rest);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"kubeconfig", required_argument, NULL, 'k'}, {"context", required_argument, NULL, 'c'},
                {"incluster", required_argument, NULL, 'i'},  {"user-agent", required_argument, NULL, 'u'},
                {0},
        };
        const char *kubeconfig = NULL, *context = NULL, *incluster = NULL, *ua = "kube-call";
        for (int o; (o = getopt_long(argc, argv, "+", opts, NULL)) != -1;) {
                switch (o) {
                case 'k': kubeconfig = optarg; break;
                case 'c': context = optarg; break;
                case 'i': incluster = optarg; break;
                case 'u': ua = optarg; break;
                default: return 2;
                }
        }
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        _cleanup_kube_client_ kube_client *client = NULL;
        int r = incluster ? kube_config_load_incluster(incluster, &cfg, &err)
              : kubeconfig ? kube_config_load_file(kubeconfig, context, &cfg, &err)
                           : kube_config_load_default(NULL, &cfg, &err);
        if (r >= 0)
                r = kube_client_new(cfg, ua, &client, &err);
        if (r < 0) {
                print_error(err, r);
                return 1;
        }
        if (optind < argc) {
                char *w[MAX_WORDS];
                size_t n = 0;
                size_t before = words_before_json(argv[optind]);
                const char *rest = NULL;
                for (int i = optind; i < argc && n < MAX_WORDS; i++) {
                        if (n > 0 && n == before) {
                                rest = argv[i];
                                break;
                        }
                        w[n++] = argv[i];
                }
                return run(client, w, n, rest) < 0 ? 1 : 0;
        }
        bool failed = false;
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, stdin)) >= 0) {
                line[strcspn(line, "\r\n")] = '\0';
                if (run_line(client, line) < 0)
                        failed = true;
        }
        free(line);
        return failed ? 1 : 0;
}
