/* SPDX-License-Identifier: Apache-2.0 */
/* vtpm-agent: the node agent's command line. Parses options, sets up logging,
 * connects to the API server, then hands over to the controllers. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "kube/client.h"
#include "kube/config.h"
#include "broker/broker_service.h"
#include "kubevirt_hook.h"
#include "config.h"
#include "http_server.h"
#include "metrics/metrics.h"
#include "node_controller.h"
#include "process_metrics.h"
#include "state_controller.h"

static void usage(FILE *f) {
        fputs("Usage: vtpm-agent [OPTIONS]\n"
              "\n"
              "Gives KubeVirt virtual machines a persistent, encrypted virtual TPM.\n"
              "\n"
              "Options:\n"
              "  --kubeconfig FILE   API server credentials (default: $KUBECONFIG, then the\n"
              "                      in-cluster service account, then ~/.kube/config)\n"
              "  --config FILE       the agent's configuration (YAML; see README)\n"
              "  --identity NAME     leader-election identity (default: $POD_NAME, else\n"
              "                      hostname and pid)\n"
              "  --check             connect, print the server version and identity, and exit\n"
              "  --log-level LEVEL   debug, info, warn or error (default info)\n"
              "  --log-format FMT    json (default) or text\n"
              "  -h, --help          show this help and exit\n"
              "  --version           show the version and exit\n"
              "\n"
              "Exit status: 0 on success, 1 when the API server cannot be used (the message\n"
              "names the cause), 2 on a usage error.\n",
              f);
}

/* Connect and prove the credentials work: /version alone is readable
 * anonymously, so also ask who we are. */
static int connect_and_identify(const char *kubeconfig, kube_client **ret_client) {
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        int r = kube_config_load_default(kubeconfig, &cfg, &err);
        if (r < 0) {
                log_kv(LOG_LEVEL_ERROR, "cannot load API server configuration", "error", err->msg, NULL);
                return r;
        }
        _cleanup_kube_client_ kube_client *client = NULL;
        r = kube_client_new(cfg, "vtpm-agent/" VTPM_VERSION, &client, &err);
        if (r < 0) {
                log_kv(LOG_LEVEL_ERROR, "cannot set up the API client", "error", err->msg, NULL);
                return r;
        }
        _cleanup_free_ char *version = NULL;
        r = kube_server_version(client, &version, &err);
        if (r < 0) {
                log_kv(LOG_LEVEL_ERROR, "cannot reach the API server", "server", cfg->server, "error", err->msg, NULL);
                return r;
        }
        _cleanup_free_ char *user = NULL;
        r = kube_whoami(client, &user, &err);
        if (r < 0) {
                log_kv(LOG_LEVEL_ERROR, "the API server refused our credentials", "server", cfg->server, "config",
                       cfg->origin, "error", err->msg, NULL);
                return r;
        }
        if (strcmp(user, "system:anonymous") == 0) {
                log_kv(LOG_LEVEL_ERROR, "the API server treats us as system:anonymous: no usable credentials",
                       "server", cfg->server, "config", cfg->origin, NULL);
                return -EKEYREJECTED;
        }
        log_kv(LOG_LEVEL_INFO, "connected to the API server", "server", cfg->server, "serverVersion", version, "user",
               user, "config", cfg->origin, NULL);
        *ret_client = TAKE_PTR(client);
        return 0;
}

static char *default_identity(void) {
        const char *pod = getenv("POD_NAME");
        if (pod && *pod)
                return xstrdup(pod);
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        return xasprintf("%s_%d", host, (int)getpid());
}

typedef struct agent {
        kube_client *client;
        state_controller *sc;
        node_controller *nc;
        vt_metrics *metrics;
} agent;

static void collect(vt_metrics *m, void *ud) {
        agent *a = ud;
        process_metrics_collect(m, VTPM_VERSION);
        kube_client_stats cs;
        kube_client_get_stats(a->client, &cs);
        /* By verb and resource: `sum by (verb)` is the count by verb. */
        for (size_t i = 0; i < cs.n_resources; i++)
                for (int v = 0; v < _KUBE_VERB_MAX; v++) {
                        const kube_resource_requests *rr = &cs.by_resource[i];
                        if (!rr->requests[v])
                                continue;
                        _cleanup_free_ char *l = xasprintf("verb=\"%s\",resource=\"%s\"", kube_verb_name(v),
                                                           rr->resource);
                        vt_counter_set(m, "vtpm_agent_api_requests_total",
                                       "Requests sent to the API server, by verb and resource.", l,
                                       (double)rr->requests[v]);
                }
        vt_counter_set(m, "vtpm_agent_api_errors_total", "Requests to the API server that failed.", NULL,
                       (double)cs.errors);
        vt_counter_set(m, "vtpm_agent_token_reloads_total", "Rotated service-account tokens re-read.", NULL,
                       (double)cs.token_reloads);
        if (a->sc) {
                state_controller_stats s;
                state_controller_get_stats(a->sc, &s);
                const char *l = "controller=\"state\"";
                vt_counter_set(m, "vtpm_agent_reconciles_total", "Reconciles run.", l, (double)s.reconciles);
                vt_counter_set(m, "vtpm_agent_reconcile_errors_total", "Reconciles that failed and were requeued.", l,
                               (double)s.reconcile_errors);
                vt_gauge_set(m, "vtpm_agent_workqueue_depth", "Keys waiting in the work queue.", l, (double)s.queue_depth);
                vt_gauge_set(m, "vtpm_agent_leader", "1 while this replica is the state controller's writer.", NULL,
                             (double)s.leader);
                vt_counter_set(m, "vtpm_agent_state_pvcs_created_total", "State PVCs created.", NULL,
                               (double)s.pvcs_created);
                vt_counter_set(m, "vtpm_agent_state_pvcs_deleted_total",
                               "Own state PVCs deleted unused: KubeVirt made the VM's state volume first.", NULL,
                               (double)s.pvcs_deleted);
                vt_counter_set(m, "vtpm_agent_tpmstates_created_total", "TPMState objects created.", NULL,
                               (double)s.tpmstates_created);
                vt_counter_set(m, "vtpm_agent_status_updates_total", "TPMState status writes.", NULL,
                               (double)s.status_updates);
                vt_counter_set(m, "vtpm_agent_events_total", "Events recorded.", NULL, (double)s.events);
                vt_counter_set(m, "vtpm_agent_state_leases_deleted_total", "State Leases of deleted VMs removed.", NULL,
                               (double)s.leases_deleted);
        }
        if (a->nc) {
                node_controller_stats n;
                node_controller_get_stats(a->nc, &n);
                vt_gauge_set(m, "vtpm_agent_launchers", "virt-launchers on this node.", NULL, (double)n.launchers);
                vt_gauge_set(m, "vtpm_agent_swtpm_processes", "swtpm processes supervised on this node.", NULL,
                             (double)n.swtpm_running);
                vt_counter_set(m, "vtpm_agent_swtpm_provisions_total", "First-boot provisions (swtpm_setup).", NULL,
                               (double)n.provisions);
                vt_counter_set(m, "vtpm_agent_swtpm_starts_total", "swtpm starts.", NULL, (double)n.starts);
                vt_counter_set(m, "vtpm_agent_swtpm_adoptions_total", "Running swtpm adopted after an agent restart.",
                               NULL, (double)n.adoptions);
                vt_counter_set(m, "vtpm_agent_swtpm_stops_total", "swtpm stopped when its launcher went.", NULL,
                               (double)n.stops);
                /* By the nodeState reason that refused it: `sum` is the old total. */
                for (unsigned i = 0; node_controller_reason_name(i); i++) {
                        if (!n.refusals_by_reason[i])
                                continue;
                        _cleanup_free_ char *l = xasprintf("reason=\"%s\"", node_controller_reason_name(i));
                        vt_counter_set(m, "vtpm_agent_swtpm_refusals_total",
                                       "swtpm starts refused, by the nodeState reason (mount, state, lock, keys, version).",
                                       l, (double)n.refusals_by_reason[i]);
                }
        }
}

static bool healthz(void *ud, char **detail) {
        return true; /* the process answers: its threads are alive */
}

static bool readyz(void *ud, char **detail) {
        agent *a = ud;
        char *problem = a->sc ? state_controller_problem(a->sc) : NULL;
        if (problem) {
                *detail = problem;
                return false;
        }
        if (a->sc && !state_controller_synced(a->sc)) {
                *detail = xstrdup("state controller caches not synced yet");
                return false;
        }
        if (a->nc && !node_controller_synced(a->nc)) {
                *detail = xstrdup("node controller cache not synced yet");
                return false;
        }
        return true;
}

/* Log a start-up step that failed (r < 0) with its error; true if it did. */
static bool start_failed(int r, const char *what, vt_error **err) {
        if (r >= 0)
                return false;
        log_kv(LOG_LEVEL_ERROR, what, "error", *err ? (*err)->msg : strerror(-r), NULL);
        return true;
}

/* /metrics, /healthz and /readyz, when http.listen is set (else *ret_http
 * is NULL). */
static int start_http(const agent_config *cfg, agent *a, http_server **ret_http) {
        http_server *http = NULL;
        if (cfg->http.listen && *cfg->http.listen) {
                _cleanup_error_ vt_error *err = NULL;
                int r = http_server_start(cfg->http.listen, a->metrics, healthz, readyz, a, &http, &err);
                if (r < 0) {
                        log_kv(LOG_LEVEL_ERROR, "cannot serve /metrics, /healthz, /readyz", "error", err->msg, NULL);
                        return r;
                }
                _cleanup_free_ char *port = xasprintf("%d", http_server_port(http));
                log_kv(LOG_LEVEL_INFO, "serving /metrics, /healthz and /readyz", "listen", cfg->http.listen, "port",
                       port, NULL);
        }
        *ret_http = http;
        return 0;
}

/* The key broker, when broker.listen is set (else *ret_broker is NULL). */
static int start_broker(kube_client *client, const agent_config *cfg, broker_service **ret_broker) {
        broker_service *broker = NULL;
        if (cfg->broker.listen && *cfg->broker.listen) {
                _cleanup_error_ vt_error *err = NULL;
                int r = broker_service_start(client, cfg, &broker, &err);
                if (r < 0) {
                        log_kv(LOG_LEVEL_ERROR, "cannot start the key broker", "error", err->msg, NULL);
                        return r;
                }
                _cleanup_free_ char *port = xasprintf("%d", broker_service_port(broker));
                log_kv(LOG_LEVEL_INFO, "key broker serving", "listen", cfg->broker.listen, "port", port, "provider",
                       cfg->keys.provider, NULL);
        }
        *ret_broker = broker;
        return 0;
}

/* *sc is the caller's, set even when the start fails, so that the caller
 * stops and frees it with the rest. a->sc is set before the start, so that
 * /readyz reports the controller's caches as not synced while it starts. */
static int start_state_controller(agent *a, const agent_config *cfg, const char *identity, state_controller **sc) {
        if (!cfg->state.enabled)
                return 0;
        _cleanup_error_ vt_error *err = NULL;
        int r = state_controller_new(a->client, cfg, identity, sc, &err);
        a->sc = *sc; /* NULL when that failed */
        if (start_failed(r, "cannot set up the state controller", &err))
                return r;
        r = state_controller_start(*sc, &err);
        if (start_failed(r, "cannot start the state controller", &err))
                return r;
        log_kv(LOG_LEVEL_INFO, "state controller running", "identity", identity, "lease", cfg->state.lease_name,
               "namespace", cfg->namespace, NULL);
        return 0;
}

/* As start_state_controller, for the node controller. */
static int start_node_controller(agent *a, const agent_config *cfg, bool broker_running, node_controller **nc) {
        /* The vtpm-controller (the key broker, node.enabled false) runs no node
         * controller, even where NODE_NAME is set: it would label its node as
         * offering no vTPM over the DaemonSet agent's verdict. */
        bool broker_only = broker_running && !cfg->node.enabled;
        if (cfg->node.enabled && (!cfg->node_name || !*cfg->node_name)) {
                log_kv(LOG_LEVEL_WARN, "node controller not started: this node's name is unknown (set NODE_NAME, as "
                                       "the DaemonSet does, or nodeName in the configuration)",
                       NULL);
                return 0;
        }
        if (broker_only || !cfg->node_name || !*cfg->node_name)
                return 0;
        /* With node.enabled false the controller still labels the node as
         * offering no vTPM, and starts nothing. */
        _cleanup_error_ vt_error *err = NULL;
        int r = node_controller_new(a->client, cfg, a->metrics, nc, &err);
        a->nc = *nc; /* NULL when that failed */
        if (start_failed(r, "cannot set up the node controller", &err))
                return r;
        r = node_controller_start(*nc, &err);
        if (start_failed(r, "cannot start the node controller", &err))
                return r;
        log_kv(LOG_LEVEL_INFO, "node controller running", "node", cfg->node_name, "enabled",
               cfg->node.enabled ? "true" : "false", NULL);
        return 0;
}

/* KubeVirt's PreVMStart node hook, where node.kubevirtHookSocket is set and
 * a node controller runs (*ret NULL otherwise). */
static int start_kubevirt_hook(const agent_config *cfg, node_controller *nc, kubevirt_hook **ret) {
        *ret = NULL;
        if (!nc || !cfg->node.enabled || !cfg->node.kubevirt_hook_socket || !*cfg->node.kubevirt_hook_socket)
                return 0;
        _cleanup_error_ vt_error *err = NULL;
        int r = kubevirt_hook_start(cfg, nc, ret, &err);
        if (start_failed(r, "cannot serve KubeVirt's node hook", &err))
                return r;
        log_kv(LOG_LEVEL_INFO, "serving KubeVirt's PreVMStart node hook", "socket", cfg->node.kubevirt_hook_socket,
               NULL);
        return 0;
}

/* Run the controllers until SIGTERM or SIGINT. Signals are blocked in every
 * thread and taken here with sigwait(), so no handler races the workers.
 * Stopping never stops a VM's swtpm: those processes are not our children. */
static int run(kube_client *client, const agent_config *cfg, const char *identity_opt) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        _cleanup_free_ char *identity = identity_opt ? xstrdup(identity_opt) : default_identity();
        _cleanup_(state_controller_freep) state_controller *sc = NULL;
        _cleanup_(node_controller_freep) node_controller *nc = NULL;
        _cleanup_(vt_metrics_freep) vt_metrics *metrics = vt_metrics_new();
        agent a = {client, NULL, NULL, metrics};
        vt_metrics_add_collector(metrics, collect, &a);
        http_server *http = NULL;
        if (start_http(cfg, &a, &http) < 0)
                return 1;
        int rc = 0;
        broker_service *broker = NULL;
        kubevirt_hook *hook = NULL;
        if (start_broker(client, cfg, &broker) < 0 || start_state_controller(&a, cfg, identity, &sc) < 0 ||
            start_node_controller(&a, cfg, broker != NULL, &nc) < 0 || start_kubevirt_hook(cfg, nc, &hook) < 0)
                rc = 1;
        else {
                int sig = 0;
                sigwait(&set, &sig);
                log_kv(LOG_LEVEL_INFO, "stopping", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
        }
        http_server_stop(http);
        broker_service_stop(broker); /* requests under way finish first */
        node_controller_stop(nc); /* never stops a VM's swtpm; hook calls waiting on it give up */
        kubevirt_hook_stop(hook);
        state_controller_stop(sc);
        if (rc == 0)
                log_kv(LOG_LEVEL_INFO, "stopped cleanly", NULL);
        return rc;
}

typedef struct options {
        const char *kubeconfig, *config_path, *identity;
        int level; /* -1: from the configuration, else info */
        int json;  /* -1: from the configuration, else JSON */
        bool check;
} options;

/* 1: go on; 0: done (--help, --version); -EINVAL: a usage error, said on stderr. */
static int parse_argv(int argc, char **argv, options *ret) {
        enum { OPT_KUBECONFIG = 256, OPT_CHECK, OPT_LOG_LEVEL, OPT_LOG_FORMAT, OPT_VERSION, OPT_CONFIG, OPT_IDENTITY };
        static const struct option opts[] = {
                {"kubeconfig", required_argument, NULL, OPT_KUBECONFIG},
                {"check", no_argument, NULL, OPT_CHECK},
                {"config", required_argument, NULL, OPT_CONFIG},
                {"identity", required_argument, NULL, OPT_IDENTITY},
                {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
                {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, OPT_VERSION},
                {0},
        };
        options o = {.level = -1, .json = -1};
        for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
                switch (c) {
                case OPT_KUBECONFIG:
                        o.kubeconfig = optarg;
                        break;
                case OPT_CHECK:
                        o.check = true;
                        break;
                case OPT_CONFIG:
                        o.config_path = optarg;
                        break;
                case OPT_IDENTITY:
                        o.identity = optarg;
                        break;
                case OPT_LOG_LEVEL:
                        o.level = log_level_from_string(optarg);
                        if (o.level < 0) {
                                fprintf(stderr, "vtpm-agent: unknown log level \"%s\" (debug, info, warn, error)\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case OPT_LOG_FORMAT:
                        if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                                fprintf(stderr, "vtpm-agent: unknown log format \"%s\" (json, text)\n", optarg);
                                return -EINVAL;
                        }
                        o.json = strcmp(optarg, "json") == 0 ? 1 : 0;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case OPT_VERSION:
                        printf("vtpm-agent %s\n", VTPM_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "vtpm-agent: unexpected argument \"%s\"\n", argv[optind]);
                usage(stderr);
                return -EINVAL;
        }
        *ret = o;
        return 1;
}

/* The configuration (--config, else the defaults), with NODE_NAME from the
 * environment over its nodeName. */
static int load_config(const char *path, agent_config **ret_cfg) {
        _cleanup_(agent_config_freep) agent_config *cfg = NULL;
        if (path) {
                _cleanup_error_ vt_error *err = NULL;
                int r = agent_config_load(path, &cfg, &err);
                if (r < 0) {
                        /* Plain stderr: the configuration is what would set up logging. */
                        fprintf(stderr, "vtpm-agent: %s\n", err->msg);
                        return r;
                }
        } else
                cfg = agent_config_new_default();
        const char *node = getenv("NODE_NAME");
        if (node && *node) {
                free(cfg->node_name);
                cfg->node_name = xstrdup(node);
        }
        *ret_cfg = TAKE_PTR(cfg);
        return 0;
}

/* Command-line flags win over the configuration's log section. */
static void setup_logging(const options *o, const agent_config *cfg) {
        int level = o->level >= 0 ? o->level : log_level_from_string(cfg->log.level);
        int json = o->json >= 0 ? o->json : strcmp(cfg->log.format, "text") != 0;
        log_setup(level < 0 ? LOG_LEVEL_INFO : level, json);
}

int main(int argc, char **argv) {
        options o;
        int r = parse_argv(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        _cleanup_(agent_config_freep) agent_config *cfg = NULL;
        if (load_config(o.config_path, &cfg) < 0)
                return 2;
        setup_logging(&o, cfg);
        _cleanup_kube_client_ kube_client *client = NULL;
        if (connect_and_identify(o.kubeconfig, &client) < 0)
                return 1;
        if (o.check)
                return 0;
        return run(client, cfg, o.identity);
}
