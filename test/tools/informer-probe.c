/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed tool: runs one pkg/kube informer against the real API server and
 * reports what its handlers see, so shell tests can compare it with kubectl.
 *
 *   informer-probe --kubeconfig F --resource GROUP/VERSION/PLURAL [--namespace NS]
 *                  [--label-selector SEL] [--backoff-ms N]
 *
 * stdout: one line per handler call, "ADD key rv", "UPDATE key oldrv newrv",
 * "DELETE key rv"; "SYNCED n" once the first list is in. stdin commands:
 * "dump" prints "OBJ key rv" for every cached object then "END"; "stats"
 * prints the informer's counters as "STATS {...}"; "resync" re-delivers the
 * cache; "quit" (or EOF) stops. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/informer.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *rv_of(json_t *o) {
        const char *rv = json_string_value(json_object_get(json_object_get(o, "metadata"), "resourceVersion"));
        return rv ? rv : "-";
}

static void say(const char *kind, const char *a, const char *b, const char *c) {
        pthread_mutex_lock(&out_lock);
        printf("%s %s %s%s%s\n", kind, a, b, c ? " " : "", c ? c : "");
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
}

static void on_add(const char *key, json_t *obj, void *ud) {
        say("ADD", key, rv_of(obj), NULL);
}
static void on_update(const char *key, json_t *old, json_t *new, void *ud) {
        say("UPDATE", key, rv_of(old), rv_of(new));
}
static void on_delete(const char *key, json_t *obj, void *ud) {
        say("DELETE", key, rv_of(obj), NULL);
}
static void on_error(const vt_error *err, void *ud) {
        fprintf(stderr, "informer-probe: %s\n", err->msg);
}
static void dump_one(const char *key, json_t *obj, void *ud) {
        printf("OBJ %s %s\n", key, rv_of(obj));
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"kubeconfig", required_argument, NULL, 'k'}, {"resource", required_argument, NULL, 'r'},
                {"namespace", required_argument, NULL, 'n'},  {"label-selector", required_argument, NULL, 'l'},
                {"backoff-ms", required_argument, NULL, 'b'}, {0},
        };
        const char *kubeconfig = NULL, *resource = NULL, *ns = NULL, *sel = NULL;
        long backoff_ms = 0;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                switch (c) {
                case 'k': kubeconfig = optarg; break;
                case 'r': resource = optarg; break;
                case 'n': ns = optarg; break;
                case 'l': sel = optarg; break;
                case 'b': backoff_ms = atol(optarg); break;
                default: return 2;
                }
        }
        if (!resource) {
                fprintf(stderr, "informer-probe: --resource GROUP/VERSION/PLURAL is required\n");
                return 2;
        }
        _cleanup_free_ char *rcopy = xstrdup(resource);
        char *group = rcopy, *version = strchr(group, '/'), *plural = version ? strchr(version + 1, '/') : NULL;
        if (!version || !plural) {
                fprintf(stderr, "informer-probe: --resource wants GROUP/VERSION/PLURAL (core: /v1/configmaps)\n");
                return 2;
        }
        *version++ = '\0';
        *plural++ = '\0';
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        _cleanup_kube_client_ kube_client *client = NULL;
        if (kube_config_load_default(kubeconfig, &cfg, &err) < 0 ||
            kube_client_new(cfg, "informer-probe", &client, &err) < 0) {
                fprintf(stderr, "informer-probe: %s\n", err->msg);
                return 1;
        }
        kube_resource res = {group, version, plural, true};
        kube_informer_options io = {.namespace = ns, .label_selector = sel,
                                    .backoff_initial = (usec_t)backoff_ms * USEC_PER_MSEC};
        kube_informer_handlers h = {.on_add = on_add, .on_update = on_update, .on_delete = on_delete,
                                    .on_error = on_error};
        _cleanup_(kube_informer_freep) kube_informer *inf = NULL;
        kube_informer_new(client, &res, &io, &h, &inf);
        if (kube_informer_start(inf, &err) < 0) {
                fprintf(stderr, "informer-probe: %s\n", err->msg);
                return 1;
        }
        if (kube_informer_wait_synced(inf, 120 * USEC_PER_SEC) < 0) {
                fprintf(stderr, "informer-probe: no initial list within 120 s\n");
                return 1;
        }
        pthread_mutex_lock(&out_lock);
        printf("SYNCED %zu\n", kube_informer_size(inf));
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);

        char line[256];
        while (fgets(line, sizeof(line), stdin)) {
                line[strcspn(line, "\n")] = '\0';
                pthread_mutex_lock(&out_lock);
                if (strcmp(line, "dump") == 0) {
                        kube_informer_foreach(inf, dump_one, NULL);
                        printf("END\n");
                } else if (strcmp(line, "stats") == 0) {
                        kube_informer_stats s;
                        kube_client_stats cs;
                        kube_informer_get_stats(inf, &s);
                        kube_client_get_stats(client, &cs);
                        _cleanup_free_ char *rv = kube_informer_resource_version(inf);
                        printf("STATS {\"lists\":%llu,\"listPages\":%llu,\"watches\":%llu,\"resumes\":%llu,"
                               "\"relistsGone\":%llu,\"events\":%llu,\"bookmarks\":%llu,\"errors\":%llu,"
                               "\"requests\":%llu,\"resourceVersion\":\"%s\"}\n",
                               (unsigned long long)s.lists, (unsigned long long)s.list_pages,
                               (unsigned long long)s.watches, (unsigned long long)s.resumes,
                               (unsigned long long)s.relists_gone, (unsigned long long)s.events,
                               (unsigned long long)s.bookmarks, (unsigned long long)s.errors,
                               (unsigned long long)(cs.requests[KUBE_VERB_LIST] + cs.requests[KUBE_VERB_WATCH] +
                                                    cs.requests[KUBE_VERB_GET]),
                               rv ? rv : "");
                } else if (strcmp(line, "resync") == 0) {
                        pthread_mutex_unlock(&out_lock);
                        kube_informer_resync(inf);
                        pthread_mutex_lock(&out_lock);
                        printf("RESYNCED\n");
                } else if (strcmp(line, "quit") == 0) {
                        pthread_mutex_unlock(&out_lock);
                        break;
                }
                fflush(stdout);
                pthread_mutex_unlock(&out_lock);
        }
        kube_informer_stop(inf);
        return 0;
}
