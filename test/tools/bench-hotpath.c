/* SPDX-License-Identifier: Apache-2.0 */
/* Benchmark tool for `make bench` (not product code): the agent's hot paths
 * in isolation, for instruction counts under
 *   valgrind --tool=callgrind --collect-atstart=no bench-hotpath MODE ...
 * Only the measured loop is collected (CALLGRIND_TOGGLE_COLLECT), so setup,
 * file reading and teardown do not count; divide the total by the events.
 *
 *   bench-hotpath decode    [--stream FILE] [--n N] [--chunk BYTES]
 *       Feed a recorded watch stream (kube-apiserver `?watch=1` body, e.g. the
 *       initial ADDED events of 1,000 VMs) through pkg/kube/watchstream in
 *       chunks of BYTES (default 16384, like libcurl's), applying the VM
 *       transform vm_trim() to every event and dropping the result, as the
 *       informer does before caching. Without --stream, N (default 1000)
 *       synthetic VM events shaped like what the API server sends.
 *   bench-hotpath reconcile [--stream FILE] [--n N]
 *       The pure part of the state controller's reconcile of an unchanged,
 *       persistent VM: vm_tpm_intent, state_pvc_name (+ cache keys),
 *       resolve_storage_class over three classes, building the desired status
 *       and json_equal against the status already written.
 * Prints {"mode":..,"events":N} on stdout. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/callgrind.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "base/timeutil.h"
#include "kube/watchstream.h"
#include "storageclass.h"
#include "vmspec.h"

static char *synthesize(long n, size_t *ret_len) {
        vt_buf b = {0};
        for (long i = 0; i < n; i++)
                vt_buf_printf(
                        &b,
                        "{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"kubevirt.io/v1\",\"kind\":\"VirtualMachine\","
                        "\"metadata\":{\"creationTimestamp\":\"2026-11-23T10:00:00Z\",\"generation\":1,"
                        "\"managedFields\":[{\"apiVersion\":\"kubevirt.io/v1\",\"fieldsType\":\"FieldsV1\","
                        "\"fieldsV1\":{\"f:spec\":{\".\":{},\"f:runStrategy\":{},\"f:template\":{\".\":{},\"f:spec\":"
                        "{\".\":{},\"f:domain\":{\".\":{},\"f:devices\":{\".\":{},\"f:tpm\":{\".\":{},\"f:persistent\":"
                        "{}}}}}}}},\"manager\":\"bench-kube\",\"operation\":\"Update\",\"time\":\"2026-11-23T10:00:00Z\"}],"
                        "\"name\":\"vm-%05ld\",\"namespace\":\"bench\",\"resourceVersion\":\"%ld\","
                        "\"uid\":\"6f1c2d3e-0000-4000-8000-%012ld\"},\"spec\":{\"runStrategy\":\"Halted\",\"template\":"
                        "{\"spec\":{\"domain\":{\"devices\":{%s}}}}}}}\n",
                        i, 100000 + i, i, i % 2 == 0 ? "\"tpm\":{\"persistent\":true}" : "");
        *ret_len = b.len;
        return b.data;
}

struct decode_ctx {
        long events;
        json_t **keep; /* reconcile mode: trimmed VMs */
        long n_keep, alloc_keep;
};

static int on_event(const kube_watch_event *ev, void *ud) {
        struct decode_ctx *c = ud;
        json_t *t = vm_trim(ev->object);
        c->events++;
        if (c->keep) {
                if (c->n_keep == c->alloc_keep) {
                        c->alloc_keep *= 2;
                        c->keep = realloc(c->keep, sizeof(json_t *) * (size_t)c->alloc_keep);
                }
                c->keep[c->n_keep++] = t;
        } else
                json_decref(t);
        return 0;
}

static int decode_all(const char *data, size_t len, size_t chunk, struct decode_ctx *c) {
        kube_watch_decoder *d = kube_watch_decoder_new(0);
        vt_error *err = NULL;
        for (size_t off = 0; off < len; off += chunk) {
                size_t n = len - off < chunk ? len - off : chunk;
                if (kube_watch_decoder_feed(d, data + off, n, on_event, c, &err) < 0) {
                        fprintf(stderr, "bench-hotpath: %s\n", err->msg);
                        return -1;
                }
        }
        int r = kube_watch_decoder_finish(d, &err);
        kube_watch_decoder_free(d);
        vt_error_free(err);
        return r;
}

/* What reconcile computes for an unchanged persistent VM whose PVC is Bound. */
static json_t *desired_status(json_t *vm, const sc_info *classes, size_t n_classes, long *ret_equal_inputs) {
        tpm_intent intent;
        vm_tpm_intent(vm, &intent);
        json_t *md = json_object_get(vm, "metadata");
        const char *ns = json_string_value(json_object_get(md, "namespace"));
        const char *name = json_string_value(json_object_get(md, "name"));
        char *pvc_name = state_pvc_name(name);
        char *pvc_key = xasprintf("%s/%s", ns, pvc_name);
        char *tskey = xasprintf("%s/%s", ns, name);
        sc_choice choice = {0};
        resolve_storage_class(NULL, NULL, NULL, classes, n_classes, &choice);
        json_int_t gen = json_integer_value(json_object_get(md, "generation"));
        char *msg = xasprintf("state volume %s is bound", pvc_name);
        json_t *conds = json_pack("[{s:s, s:s, s:s, s:s, s:s, s:I}, {s:s, s:s, s:s, s:s, s:s, s:I}]", "type", "Ready",
                                  "status", "True", "reason", "StateVolumeBound", "message", msg, "lastTransitionTime",
                                  "2026-11-23T10:00:01Z", "observedGeneration", gen, "type", "RestartRequired",
                                  "status", "False", "reason", "NoRestartNeeded", "message", "", "lastTransitionTime",
                                  "2026-11-23T10:00:01Z", "observedGeneration", gen);
        json_t *st = json_pack("{s:s, s:s, s:I, s:b, s:b, s:s, s:s, s:s, s:o}", "phase", "Ready", "message", msg,
                               "observedGeneration", gen, "persistent", intent.has_tpm && intent.persistent,
                               "encrypted", 0, "pvcName", pvc_name, "storageClass", choice.name ? choice.name : "",
                               "storageClassSource", sc_source_name(choice.source), "conditions", conds);
        *ret_equal_inputs += intent.persistent + (long)strlen(pvc_key) + (long)strlen(tskey);
        free(msg);
        free(pvc_name);
        free(pvc_key);
        free(tskey);
        sc_choice_done(&choice);
        tpm_intent_done(&intent);
        return st;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {{"stream", required_argument, NULL, 's'},
                                             {"n", required_argument, NULL, 'n'},
                                             {"chunk", required_argument, NULL, 'c'},
                                             {0}};
        if (argc < 2) {
                fprintf(stderr, "usage: bench-hotpath decode|reconcile [--stream FILE] [--n N] [--chunk BYTES]\n");
                return 2;
        }
        const char *mode = argv[1], *stream = NULL;
        long n = 1000;
        size_t chunk = 16384;
        optind = 2;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                switch (c) {
                case 's': stream = optarg; break;
                case 'n': n = atol(optarg); break;
                case 'c': chunk = (size_t)atol(optarg); break;
                default: return 2;
                }
        }
        char *data = NULL;
        size_t len = 0;
        if (stream) {
                vt_error *err = NULL;
                if (read_full_file(stream, (size_t)1 << 30, &data, &len, &err) < 0) {
                        fprintf(stderr, "bench-hotpath: %s\n", err->msg);
                        return 1;
                }
        } else
                data = synthesize(n, &len);

        if (strcmp(mode, "decode") == 0) {
                struct decode_ctx c = {0};
                CALLGRIND_TOGGLE_COLLECT;
                int r = decode_all(data, len, chunk, &c);
                CALLGRIND_TOGGLE_COLLECT;
                if (r < 0)
                        return 1;
                printf("{\"mode\":\"decode\",\"events\":%ld,\"bytes\":%zu}\n", c.events, len);
        } else if (strcmp(mode, "reconcile") == 0) {
                struct decode_ctx c = {.keep = xnew(json_t *, 64), .alloc_keep = 64};
                if (decode_all(data, len, chunk, &c) < 0)
                        return 1;
                sc_info classes[] = {{"standard", "kubernetes.io/no-provisioner", false, false},
                                     {"bench-rwx", "vtpm-agent.io/testbed", true, false},
                                     {"fast", "example.com/csi", false, false}};
                /* The status as written last time (what the TPMState cache holds). */
                json_t **written = xnew(json_t *, (size_t)c.n_keep);
                long sink = 0, equal = 0, persistent = 0;
                for (long i = 0; i < c.n_keep; i++)
                        written[i] = desired_status(c.keep[i], classes, ELEMENTSOF(classes), &sink);
                CALLGRIND_TOGGLE_COLLECT;
                for (long i = 0; i < c.n_keep; i++) {
                        tpm_intent intent;
                        vm_tpm_intent(c.keep[i], &intent);
                        bool p = intent.persistent;
                        tpm_intent_done(&intent);
                        if (!p)
                                continue; /* reconcile returns early for a VM without a TPM */
                        persistent++;
                        json_t *st = desired_status(c.keep[i], classes, ELEMENTSOF(classes), &sink);
                        equal += json_equal(st, written[i]);
                        json_decref(st);
                }
                CALLGRIND_TOGGLE_COLLECT;
                printf("{\"mode\":\"reconcile\",\"events\":%ld,\"persistent\":%ld,\"unchanged\":%ld}\n", c.n_keep,
                       persistent, equal);
                for (long i = 0; i < c.n_keep; i++) {
                        json_decref(written[i]);
                        json_decref(c.keep[i]);
                }
                free(written);
                free(c.keep);
        } else {
                fprintf(stderr, "bench-hotpath: unknown mode %s\n", mode);
                return 2;
        }
        free(data);
        return 0;
}
