/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed kubelet stand-in (not product code; issue 11 replaces it with the
 * real kubelet). For pods bound to --node that carry the label
 * vtpm-agent.io/attachment-for, it does what the kubelet does for the agent:
 * publishes each PVC volume by bind-mounting the PV's directory (hostPath or
 * local path on the shared backing store) at
 *   <kubelet-root>/pods/<pod-uid>/volumes/kubernetes.io~local-volume/<pv>
 * and reports the pod Running. When the pod goes, it unmounts and removes
 * the directory. Real mounts, real API writes; nothing else is imitated.
 *
 *   kubelet-standin --kubeconfig F --node NAME --root DIR */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/informer.h"

static const kube_resource res_pod = {"", "v1", "pods", true};
static const kube_resource res_pvc = {"", "v1", "persistentvolumeclaims", true};
static const kube_resource res_pv = {"", "v1", "persistentvolumes", false};

static kube_client *client;
static const char *node, *root;

static const char *str(json_t *o, const char *a, const char *b) {
        json_t *n = json_object_get(o, a);
        return json_string_value(b ? json_object_get(n, b) : n);
}

static void mkdir_p(const char *path) {
        _cleanup_free_ char *p = xstrdup(path);
        for (char *s = p + 1; *s; s++)
                if (*s == '/') {
                        *s = '\0';
                        mkdir(p, 0750);
                        *s = '/';
                }
        mkdir(p, 0750);
}

static int set_phase(json_t *pod, const char *phase) {
        char now[40];
        format_rfc3339(now_realtime(), now);
        json_t *patch = json_pack("{s:{s:s, s:s, s:s, s:[{s:s, s:s, s:s}]}}", "status", "phase", phase, "hostIP",
                                  "127.0.0.1", "startTime", now, "conditions", "type", "Ready", "status",
                                  strcmp(phase, "Running") == 0 ? "True" : "False", "lastTransitionTime", now);
        _cleanup_free_ char *path = kube_path(&res_pod, str(pod, "metadata", "namespace"), str(pod, "metadata", "name"),
                                              "status");
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_patch(client, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, &err);
        json_decref(patch);
        if (r < 0)
                fprintf(stderr, "kubelet-standin: status of %s: %s\n", str(pod, "metadata", "name"), err->msg);
        return r;
}

/* The PV's directory on the shared backing store. */
static char *pv_dir(const char *ns, const char *claim, char **ret_pv) {
        _cleanup_free_ char *pvc_path = kube_path(&res_pvc, ns, claim, NULL);
        json_t *pvc = NULL, *pv = NULL;
        if (kube_get(client, pvc_path, &pvc, NULL) < 0)
                return NULL;
        const char *vol = str(json_object_get(pvc, "spec"), "volumeName", NULL);
        char *dir = NULL;
        if (vol) {
                _cleanup_free_ char *pv_path = kube_path(&res_pv, NULL, vol, NULL);
                if (kube_get(client, pv_path, &pv, NULL) == 0) {
                        json_t *spec = json_object_get(pv, "spec");
                        const char *d = str(spec, "hostPath", "path") ? str(spec, "hostPath", "path") : str(spec, "local", "path");
                        if (d) {
                                dir = xstrdup(d);
                                *ret_pv = xstrdup(vol);
                        }
                }
        }
        json_decref(pvc);
        json_decref(pv);
        return dir;
}

static void publish(json_t *pod) {
        const char *phase = str(pod, "status", "phase");
        if (phase && strcmp(phase, "Pending") != 0)
                return;
        const char *ns = str(pod, "metadata", "namespace"), *uid = str(pod, "metadata", "uid");
        json_t *vols = json_object_get(json_object_get(pod, "spec"), "volumes");
        size_t i;
        json_t *v;
        json_array_foreach(vols, i, v) {
                const char *claim = str(v, "persistentVolumeClaim", "claimName");
                if (!claim)
                        continue;
                _cleanup_free_ char *pv = NULL;
                _cleanup_free_ char *src = pv_dir(ns, claim, &pv);
                if (!src) {
                        fprintf(stderr, "kubelet-standin: %s/%s: claim %s not bound yet\n", ns,
                                str(pod, "metadata", "name"), claim);
                        return; /* the informer will bring the pod again; the agent waits */
                }
                _cleanup_free_ char *dst = xasprintf("%s/pods/%s/volumes/kubernetes.io~local-volume/%s", root, uid, pv);
                mkdir_p(dst);
                struct stat a, b;
                if (stat(dst, &a) == 0 && stat(src, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
                        continue; /* already published */
                if (mount(src, dst, NULL, MS_BIND, NULL) < 0) {
                        fprintf(stderr, "kubelet-standin: mount %s on %s: %m\n", src, dst);
                        return;
                }
        }
        set_phase(pod, "Running");
}

static void unpublish(json_t *pod) {
        const char *uid = str(pod, "metadata", "uid");
        if (!uid)
                return;
        _cleanup_free_ char *cmd = xasprintf(
                "for m in $(awk '{print $5}' /proc/self/mountinfo | grep '^%s/pods/%s/'); do umount -l \"$m\"; done; "
                "rm -rf -- '%s/pods/%s'",
                root, uid, root, uid);
        (void)!system(cmd);
}

static void on_add(const char *key, json_t *obj, void *ud) {
        publish(obj);
}
static void on_update(const char *key, json_t *o, json_t *n, void *ud) {
        if (json_object_get(json_object_get(n, "metadata"), "deletionTimestamp")) {
                /* Graceful deletion: unpublish, then finish it as the kubelet would. */
                unpublish(n);
                _cleanup_free_ char *path = kube_path(&res_pod, str(n, "metadata", "namespace"),
                                                      str(n, "metadata", "name"), NULL);
                json_t *opts = NULL;
                (void)opts;
                _cleanup_free_ char *q = xasprintf("%s?gracePeriodSeconds=0", path);
                (void)kube_request(client, KUBE_VERB_DELETE, "DELETE", q, NULL, NULL, 0, NULL, NULL);
                return;
        }
        publish(n);
}
static void on_delete(const char *key, json_t *obj, void *ud) {
        unpublish(obj);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {{"kubeconfig", required_argument, NULL, 'k'},
                                             {"node", required_argument, NULL, 'n'},
                                             {"root", required_argument, NULL, 'r'}, {0}};
        const char *kubeconfig = NULL;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                if (c == 'k')
                        kubeconfig = optarg;
                else if (c == 'n')
                        node = optarg;
                else if (c == 'r')
                        root = optarg;
                else
                        return 2;
        }
        if (!node || !root || root[0] != '/') {
                fprintf(stderr, "usage: kubelet-standin --node NAME --root ABSOLUTE_DIR [--kubeconfig F]\n");
                return 2;
        }
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        if (kube_config_load_default(kubeconfig, &cfg, &err) < 0 ||
            kube_client_new(cfg, "kubelet-standin", &client, &err) < 0) {
                fprintf(stderr, "kubelet-standin: %s\n", err->msg);
                return 1;
        }
        mkdir_p(root);
        _cleanup_free_ char *fs = xasprintf("spec.nodeName=%s", node);
        kube_informer_options o = {.field_selector = fs, .label_selector = "vtpm-agent.io/attachment-for"};
        kube_informer_handlers h = {on_add, on_update, on_delete};
        kube_informer *pods = NULL;
        kube_informer_new(client, &res_pod, &o, &h, &pods);
        if (kube_informer_start(pods, &err) < 0) {
                fprintf(stderr, "kubelet-standin: %s\n", err->msg);
                return 1;
        }
        int sig;
        sigwait(&set, &sig);
        kube_informer_free(pods);
        kube_client_free(client);
        return 0;
}
