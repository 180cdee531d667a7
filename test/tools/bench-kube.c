/* SPDX-License-Identifier: Apache-2.0 */
/* Benchmark tool for `make bench` (not product code): drives the control
 * plane through the same pkg/kube client the agent uses and prints one JSON
 * object per run on stdout.
 *
 *   bench-kube pvc-burst   --namespace NS --n N [--inflight 16]
 *       N minimal RWX PVCs (storageClassName "bench-unbound": nothing binds
 *       them) created by INFLIGHT threads: the API server's own create limit.
 *   bench-kube vm-create   --namespace NS --n N [--start I] [--inflight 16] [--bulk BYTES] [--no-tpm]
 *       N VMs vm-I..vm-(I+N-1), every other one with a persistent TPM (even
 *       index), the rest without a TPM (--no-tpm: none has one). No waiting.
 *       --bulk: each carries that many bytes in an annotation of its
 *       template (spec.template.metadata.annotations, key BULK_KEY), as a
 *       tenant's VM can: KubeVirt's webhook caps inline cloud-init user data
 *       at 2048 bytes and the API server a VM's own annotations at 256 KiB,
 *       but nothing caps its template's annotations below the API server's
 *       request limit.
 *   bench-kube vm-burst    --namespace NS --n N [--inflight 16] [--timeout S] [--ready-timeout S]
 *       Like vm-create, while informers on the namespace's PVCs and TPMStates
 *       record when each persistent VM's state PVC appears, when its TPMState
 *       first has a status and when it turns Ready. Latency per VM is from
 *       the moment its create returned (the object exists: creationTimestamp
 *       has only 1 s resolution) to the informer seeing the object.
 *   bench-kube count-updates --namespace NS --resource G/V/PLURAL --name NAME --seconds S
 *       How many times the object changed in S seconds, or until SIGTERM (the
 *       agent's Lease renewals, to tell them from other writes).
 *
 * Names: vm-%05d; state PVCs persistent-state-for-vm-%05d. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/timeutil.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/informer.h"

static const kube_resource res_ns = {"", "v1", "namespaces", false};
static const kube_resource res_pvc = {"", "v1", "persistentvolumeclaims", true};
static const kube_resource res_vm = {"kubevirt.io", "v1", "virtualmachines", true};
static const kube_resource res_tpmstate = {"vtpm-agent.io", "v1alpha1", "tpmstates", true};

static kube_client *client;
static const char *ns;
static long n_total, start_index, inflight = 16, bulk_bytes;
static bool no_tpm;
#define BULK_KEY "bench.vtpm-agent.io/bulk"
static char *bulk; /* filler, bulk_bytes long */
static atomic_long next_item, n_errors;
static usec_t *t_created; /* monotonic, per VM, when its create returned */

static void die(const char *what, vt_error *err) {
        fprintf(stderr, "bench-kube: %s: %s\n", what, err ? err->msg : "failed");
        exit(1);
}

static void ensure_namespace(void) {
        json_t *o = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name", ns);
        _cleanup_free_ char *coll = kube_path(&res_ns, NULL, NULL, NULL);
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_create(client, coll, o, NULL, &err);
        json_decref(o);
        if (r < 0 && r != -EEXIST)
                die("cannot create the namespace", err);
}

static json_t *pvc_object(long i) {
        char name[64];
        snprintf(name, sizeof(name), "bench-%05ld", i);
        return json_pack("{s:s, s:s, s:{s:s}, s:{s:[s], s:s, s:s, s:{s:{s:s}}}}", "apiVersion", "v1", "kind",
                         "PersistentVolumeClaim", "metadata", "name", name, "spec", "accessModes", "ReadWriteMany",
                         "volumeMode", "Filesystem", "storageClassName", "bench-unbound", "resources", "requests",
                         "storage", "10Mi");
}

static bool persistent_vm(long i) {
        return i % 2 == 0;
}

static json_t *vm_object(long i) {
        char name[64];
        snprintf(name, sizeof(name), "vm-%05ld", i);
        json_t *devices = persistent_vm(i) && !no_tpm ? json_pack("{s:{s:b}}", "tpm", "persistent", 1) : json_object();
        json_t *vm = json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:{s:{s:{s:o}}}}}", "apiVersion", "kubevirt.io/v1", "kind",
                               "VirtualMachine", "metadata", "name", name, "spec", "runStrategy", "Halted", "template",
                               "spec", "domain", "devices", devices);
        if (bulk) {
                json_t *tmpl = json_object_get(json_object_get(vm, "spec"), "template");
                json_object_set_new(tmpl, "metadata", json_pack("{s:{s:s}}", "annotations", BULK_KEY, bulk));
        }
        return vm;
}

static void make_bulk(void) {
        if (bulk_bytes <= 0)
                return;
        size_t n = (size_t)bulk_bytes;
        bulk = xmalloc(n + 1);
        for (size_t k = 0; k < n; k++)
                bulk[k] = (char)('a' + k % 26);
        bulk[n] = '\0';
}

typedef json_t *(*make_fn)(long i);
struct pool_arg {
        make_fn make;
        const char *coll;
};

static void *creator(void *ud) {
        struct pool_arg *a = ud;
        for (;;) {
                long k = atomic_fetch_add(&next_item, 1);
                if (k >= n_total)
                        break;
                long i = start_index + k;
                json_t *o = a->make(i);
                _cleanup_error_ vt_error *err = NULL;
                int r;
                /* 429/503 under load: the server asks us to come back. */
                for (int tries = 0; (r = kube_create(client, a->coll, o, NULL, &err)) == -EAGAIN && tries < 20; tries++) {
                        vt_error_free(err);
                        err = NULL;
                        sleep_usec(50 * USEC_PER_MSEC);
                }
                json_decref(o);
                if (r < 0 && r != -EEXIST) {
                        if (atomic_fetch_add(&n_errors, 1) < 5)
                                fprintf(stderr, "bench-kube: create %ld: %s\n", i, err ? err->msg : "failed");
                } else if (t_created)
                        t_created[k] = now_monotonic();
        }
        return NULL;
}

/* Create n objects with `inflight` threads; returns the wall time. */
static usec_t run_pool(make_fn make, const kube_resource *res) {
        _cleanup_free_ char *coll = kube_path(res, ns, NULL, NULL);
        struct pool_arg a = {make, coll};
        pthread_t *th = xnew(pthread_t, (size_t)inflight);
        atomic_store(&next_item, 0);
        usec_t t0 = now_monotonic();
        for (long i = 0; i < inflight; i++)
                pthread_create(&th[i], NULL, creator, &a);
        for (long i = 0; i < inflight; i++)
                pthread_join(th[i], NULL);
        usec_t wall = now_monotonic() - t0;
        free(th);
        return wall;
}

/* ---- vm-burst: what the informers see ---- */

static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static usec_t *t_pvc, *t_status, *t_ready;
static long n_pvc, n_status, n_ready;

static long vm_index(const char *name, const char *prefix) {
        size_t pl = strlen(prefix);
        if (!name || strncmp(name, prefix, pl) != 0)
                return -1;
        char *end = NULL;
        long i = strtol(name + pl, &end, 10) - start_index;
        if (!end || *end || i < 0 || i >= n_total || !persistent_vm(i + start_index))
                return -1;
        return i;
}

static const char *name_of(json_t *o) {
        return json_string_value(json_object_get(json_object_get(o, "metadata"), "name"));
}

static void mark(usec_t *arr, long i, long *count) {
        if (i < 0 || arr[i])
                return;
        arr[i] = now_monotonic();
        (*count)++;
}

static void pvc_seen(const char *key, json_t *obj, void *ud) {
        long i = vm_index(name_of(obj), "persistent-state-for-vm-");
        pthread_mutex_lock(&seen_lock);
        mark(t_pvc, i, &n_pvc);
        pthread_mutex_unlock(&seen_lock);
}
static void pvc_seen_update(const char *key, json_t *o, json_t *n, void *ud) {
        pvc_seen(key, n, ud);
}

static bool is_ready(json_t *status) {
        size_t k;
        json_t *c;
        json_array_foreach(json_object_get(status, "conditions"), k, c) {
                const char *t = json_string_value(json_object_get(c, "type"));
                const char *s = json_string_value(json_object_get(c, "status"));
                if (t && s && strcmp(t, "Ready") == 0 && strcmp(s, "True") == 0)
                        return true;
        }
        return false;
}

static void ts_seen(const char *key, json_t *obj, void *ud) {
        long i = vm_index(name_of(obj), "vm-");
        json_t *st = json_object_get(obj, "status");
        pthread_mutex_lock(&seen_lock);
        if (st && json_object_get(st, "phase"))
                mark(t_status, i, &n_status);
        if (is_ready(st))
                mark(t_ready, i, &n_ready);
        pthread_mutex_unlock(&seen_lock);
}
static void ts_seen_update(const char *key, json_t *o, json_t *n, void *ud) {
        ts_seen(key, n, ud);
}

/* Keep only what the handlers read: a 5,000-object cache stays small. */
static json_t *trim_name_status(json_t *o, void *ud) {
        json_t *out = json_object();
        json_t *md = json_object_get(o, "metadata");
        json_object_set_new(out, "metadata",
                            json_pack("{s:O?, s:O?, s:O?}", "name", json_object_get(md, "name"), "namespace",
                                      json_object_get(md, "namespace"), "resourceVersion",
                                      json_object_get(md, "resourceVersion")));
        if (json_object_get(o, "status"))
                json_object_set(out, "status", json_object_get(o, "status"));
        return out;
}

static int cmp_usec(const void *a, const void *b) {
        usec_t x = *(const usec_t *)a, y = *(const usec_t *)b;
        return x < y ? -1 : x > y;
}

/* Latencies (ms) of the VMs that reached `arr`, relative to t_created. */
static void latency_json(FILE *f, const char *name, const usec_t *arr) {
        usec_t *v = xnew(usec_t, (size_t)n_total);
        size_t n = 0;
        for (long i = 0; i < n_total; i++)
                if (arr[i] && t_created[i])
                        v[n++] = arr[i] > t_created[i] ? arr[i] - t_created[i] : 0;
        qsort(v, n, sizeof(usec_t), cmp_usec);
        if (n == 0)
                fprintf(f, "\"%s\":{\"n\":0}", name);
        else
                fprintf(f, "\"%s\":{\"n\":%zu,\"p50_ms\":%.1f,\"p99_ms\":%.1f,\"max_ms\":%.1f}", name, n,
                        (double)v[(n - 1) * 50 / 100] / 1000.0, (double)v[(n - 1) * 99 / 100] / 1000.0,
                        (double)v[n - 1] / 1000.0);
        free(v);
}

static double secs(usec_t u) {
        return (double)u / (double)USEC_PER_SEC;
}

static usec_t last_of(const usec_t *arr) {
        usec_t m = 0;
        for (long i = 0; i < n_total; i++)
                if (arr[i] > m)
                        m = arr[i];
        return m;
}

static int vm_burst(long timeout_s, long ready_timeout_s) {
        long want = 0;
        for (long i = 0; i < n_total; i++)
                want += persistent_vm(start_index + i);
        t_created = xnew(usec_t, (size_t)n_total);
        t_pvc = xnew(usec_t, (size_t)n_total);
        t_status = xnew(usec_t, (size_t)n_total);
        t_ready = xnew(usec_t, (size_t)n_total);
        kube_informer_options io = {.namespace = ns};
        kube_informer_handlers hp = {pvc_seen, pvc_seen_update, NULL, trim_name_status, NULL, NULL};
        kube_informer_handlers ht = {ts_seen, ts_seen_update, NULL, trim_name_status, NULL, NULL};
        _cleanup_(kube_informer_freep) kube_informer *ip = NULL, *it = NULL;
        _cleanup_error_ vt_error *err = NULL;
        kube_informer_new(client, &res_pvc, &io, &hp, &ip);
        kube_informer_new(client, &res_tpmstate, &io, &ht, &it);
        if (kube_informer_start(ip, &err) < 0 || kube_informer_start(it, &err) < 0)
                die("cannot start informers", err);
        if (kube_informer_wait_synced(ip, 60 * USEC_PER_SEC) < 0 || kube_informer_wait_synced(it, 60 * USEC_PER_SEC) < 0)
                die("informers did not sync", NULL);

        usec_t t0 = now_monotonic();
        usec_t create_wall = run_pool(vm_object, &res_vm);
        usec_t all_pvc = 0, all_status = 0, all_ready = 0;
        for (;;) {
                usec_t now = now_monotonic();
                pthread_mutex_lock(&seen_lock);
                long p = n_pvc, s = n_status, r = n_ready;
                pthread_mutex_unlock(&seen_lock);
                if (!all_pvc && p >= want)
                        all_pvc = last_of(t_pvc);
                if (!all_status && s >= want && p >= want)
                        all_status = last_of(t_status) > all_pvc ? last_of(t_status) : all_pvc;
                if (!all_ready && r >= want && p >= want)
                        all_ready = last_of(t_ready) > all_pvc ? last_of(t_ready) : all_pvc;
                if (all_ready)
                        break;
                if (!all_status && now - t0 > (usec_t)timeout_s * USEC_PER_SEC)
                        break;
                if (all_status && now - all_status > (usec_t)ready_timeout_s * USEC_PER_SEC)
                        break;
                sleep_usec(50 * USEC_PER_MSEC);
        }
        kube_informer_stop(ip);
        kube_informer_stop(it);
        printf("{\"mode\":\"vm-burst\",\"namespace\":\"%s\",\"vms\":%ld,\"persistent\":%ld,\"inflight\":%ld,"
               "\"create_errors\":%ld,\"vm_create_wall_s\":%.3f,\"vm_creates_per_s\":%.1f,",
               ns, n_total, want, inflight, atomic_load(&n_errors), secs(create_wall),
               (double)n_total / secs(create_wall));
        printf("\"pvcs_seen\":%ld,\"statuses_seen\":%ld,\"ready_seen\":%ld,", n_pvc, n_status, n_ready);
        printf("\"all_pvcs_s\":%s%.3f,", all_pvc ? "" : "null,\"_all_pvcs_partial_s\":", secs((all_pvc ?: now_monotonic()) - t0));
        printf("\"all_status_s\":%s%.3f,", all_status ? "" : "null,\"_all_status_partial_s\":",
               secs((all_status ?: now_monotonic()) - t0));
        printf("\"all_ready_s\":%s%.3f,", all_ready ? "" : "null,\"_all_ready_partial_s\":",
               secs((all_ready ?: now_monotonic()) - t0));
        latency_json(stdout, "latency_pvc", t_pvc);
        putchar(',');
        latency_json(stdout, "latency_status", t_status);
        putchar(',');
        latency_json(stdout, "latency_ready", t_ready);
        printf("}\n");
        return all_status ? 0 : 3;
}

/* ---- count-updates ---- */

static atomic_long updates;
static void count_update(const char *key, json_t *o, json_t *n, void *ud) {
        atomic_fetch_add(&updates, 1);
}

static sigset_t stop_signals;

static int count_updates(const char *resource, const char *name, long seconds) {
        _cleanup_free_ char *rcopy = xstrdup(resource);
        char *group = rcopy, *version = strchr(group, '/'), *plural = version ? strchr(version + 1, '/') : NULL;
        if (!version || !plural) {
                fprintf(stderr, "bench-kube: --resource wants GROUP/VERSION/PLURAL\n");
                return 2;
        }
        *version++ = '\0';
        *plural++ = '\0';
        kube_resource res = {group, version, plural, true};
        _cleanup_free_ char *fs = xasprintf("metadata.name=%s", name);
        kube_informer_options io = {.namespace = ns, .field_selector = fs};
        kube_informer_handlers h = {.on_update = count_update};
        _cleanup_(kube_informer_freep) kube_informer *inf = NULL;
        _cleanup_error_ vt_error *err = NULL;
        kube_informer_new(client, &res, &io, &h, &inf);
        if (kube_informer_start(inf, &err) < 0)
                die("cannot start the informer", err);
        if (kube_informer_wait_synced(inf, 60 * USEC_PER_SEC) < 0)
                die("informer did not sync", NULL);
        /* Until the time is up or SIGTERM/SIGINT: the caller may end the window early. */
        struct timespec ts = {.tv_sec = seconds};
        (void)sigtimedwait(&stop_signals, NULL, &ts);
        kube_informer_stop(inf);
        printf("{\"mode\":\"count-updates\",\"name\":\"%s\",\"seconds\":%ld,\"updates\":%ld}\n", name, seconds,
               atomic_load(&updates));
        return 0;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"kubeconfig", required_argument, NULL, 'k'}, {"namespace", required_argument, NULL, 'n'},
                {"n", required_argument, NULL, 'N'},          {"start", required_argument, NULL, 's'},
                {"inflight", required_argument, NULL, 'i'},   {"timeout", required_argument, NULL, 't'},
                {"ready-timeout", required_argument, NULL, 'r'}, {"resource", required_argument, NULL, 'R'},
                {"name", required_argument, NULL, 'm'},       {"seconds", required_argument, NULL, 'S'},
                {"bulk", required_argument, NULL, 'u'},        {"no-tpm", no_argument, NULL, 'T'},
                {0},
        };
        const char *kubeconfig = NULL, *resource = NULL, *name = NULL;
        long timeout_s = 300, ready_timeout_s = 60, seconds = 60;
        if (argc < 2) {
                fprintf(stderr, "usage: bench-kube pvc-burst|vm-create|vm-burst|count-updates [OPTIONS]\n");
                return 2;
        }
        const char *mode = argv[1];
        /* Blocked in every thread (informers start later): count-updates takes them with sigtimedwait. */
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGTERM);
        sigaddset(&stop_signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
        optind = 2;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                switch (c) {
                case 'k': kubeconfig = optarg; break;
                case 'n': ns = optarg; break;
                case 'N': n_total = atol(optarg); break;
                case 's': start_index = atol(optarg); break;
                case 'i': inflight = atol(optarg); break;
                case 't': timeout_s = atol(optarg); break;
                case 'r': ready_timeout_s = atol(optarg); break;
                case 'R': resource = optarg; break;
                case 'm': name = optarg; break;
                case 'S': seconds = atol(optarg); break;
                case 'u': bulk_bytes = atol(optarg); break;
                case 'T': no_tpm = true; break;
                default: return 2;
                }
        }
        if (!ns || inflight < 1) {
                fprintf(stderr, "bench-kube: --namespace is required\n");
                return 2;
        }
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        if (kube_config_load_default(kubeconfig, &cfg, &err) < 0 || kube_client_new(cfg, "bench-kube", &client, &err) < 0)
                die("cannot set up the client", err);
        int rc = 0;
        if (strcmp(mode, "pvc-burst") == 0) {
                ensure_namespace();
                usec_t wall = run_pool(pvc_object, &res_pvc);
                printf("{\"mode\":\"pvc-burst\",\"namespace\":\"%s\",\"creates\":%ld,\"inflight\":%ld,\"errors\":%ld,"
                       "\"wall_s\":%.3f,\"creates_per_s\":%.1f}\n",
                       ns, n_total, inflight, atomic_load(&n_errors), secs(wall), (double)n_total / secs(wall));
        } else if (strcmp(mode, "vm-create") == 0) {
                ensure_namespace();
                make_bulk();
                usec_t wall = run_pool(vm_object, &res_vm);
                printf("{\"mode\":\"vm-create\",\"namespace\":\"%s\",\"vms\":%ld,\"start\":%ld,\"errors\":%ld,"
                       "\"wall_s\":%.3f,\"creates_per_s\":%.1f}\n",
                       ns, n_total, start_index, atomic_load(&n_errors), secs(wall), (double)n_total / secs(wall));
        } else if (strcmp(mode, "vm-burst") == 0) {
                ensure_namespace();
                rc = vm_burst(timeout_s, ready_timeout_s);
        } else if (strcmp(mode, "count-updates") == 0) {
                if (!resource || !name)
                        return 2;
                rc = count_updates(resource, name, seconds);
        } else {
                fprintf(stderr, "bench-kube: unknown mode %s\n", mode);
                return 2;
        }
        kube_client_free(client);
        return rc ? rc : atomic_load(&n_errors) ? 1 : 0;
}
