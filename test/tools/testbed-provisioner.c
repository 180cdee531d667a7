/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed storage provisioner (not product code): stands in for a CSI
 * driver offering ReadWriteMany filesystems. For every Pending PVC of a
 * StorageClass whose provisioner is "vtpm-agent.io/testbed" it creates a
 * hostPath PersistentVolume over a directory under --root, pre-bound to the
 * claim; the real kube-controller-manager's binder then binds them. Like a
 * real external provisioner it acts only once the PV controller has handed
 * the claim over (the volume.kubernetes.io/storage-provisioner annotation):
 * a PV created before that races the controller's own update of the claim,
 * which then fails with a conflict and a ProvisioningFailed Warning. Released
 * volumes are deleted again (their directories too), as a Delete reclaim
 * policy would. One shared root across test nodes is the RWX backing store.
 * With --local the volumes are `local` PersistentVolumes instead, whose node
 * affinity admits every node: real kubelets bind-mount those into a pod's
 * volume directory (a hostPath volume is used in place, never mounted), as a
 * CSI driver's node plugin would publish a shared filesystem.
 *
 *   testbed-provisioner --kubeconfig F --root DIR [--local] */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/informer.h"

#define PROVISIONER "vtpm-agent.io/testbed"

static const kube_resource res_pvc = {"", "v1", "persistentvolumeclaims", true};
static const kube_resource res_pv = {"", "v1", "persistentvolumes", false};
static const kube_resource res_sc = {"storage.k8s.io", "v1", "storageclasses", false};

static kube_client *client;
static kube_informer *classes;
static const char *root;
static bool local_volumes;

static const char *s(json_t *o, const char *a, const char *b) {
        json_t *n = json_object_get(o, a);
        return json_string_value(b ? json_object_get(n, b) : n);
}

static bool our_class(const char *cls) {
        if (!cls)
                return false;
        json_t *sc = kube_informer_get(classes, cls);
        bool ours = sc && s(sc, "provisioner", NULL) && strcmp(s(sc, "provisioner", NULL), PROVISIONER) == 0;
        json_decref(sc);
        return ours;
}

static void provision(json_t *pvc) {
        const char *phase = s(pvc, "status", "phase");
        const char *cls = s(pvc, "spec", "storageClassName");
        if ((phase && strcmp(phase, "Pending") != 0) || s(pvc, "spec", "volumeName") || !our_class(cls))
                return;
        const char *handed_to = json_string_value(json_object_get(
                json_object_get(json_object_get(pvc, "metadata"), "annotations"), "volume.kubernetes.io/storage-provisioner"));
        if (!handed_to || strcmp(handed_to, PROVISIONER) != 0)
                return;
        const char *ns = s(pvc, "metadata", "namespace"), *name = s(pvc, "metadata", "name"),
                   *uid = s(pvc, "metadata", "uid");
        json_t *req = json_object_get(json_object_get(json_object_get(pvc, "spec"), "resources"), "requests");
        const char *size = json_string_value(json_object_get(req, "storage"));
        _cleanup_free_ char *pv_name = xasprintf("testbed-%s", uid);
        _cleanup_free_ char *dir = xasprintf("%s/%s", root, pv_name);
        mkdir(dir, 0755);
        json_t *pv = json_pack("{s:s, s:s, s:{s:s, s:{s:s}, s:{s:s}}, s:{s:{s:s}, s:o, s:s, s:s, s:s, s:{s:s, s:s}, "
                               "s:{s:s, s:s, s:s, s:s, s:s}}}",
                               "apiVersion", "v1", "kind", "PersistentVolume", "metadata", "name", pv_name, "labels",
                               "vtpm-agent.io/testbed", "true", "annotations", "pv.kubernetes.io/provisioned-by",
                               PROVISIONER, "spec", "capacity", "storage", size ? size : "10Mi", "accessModes",
                               json_incref(json_object_get(json_object_get(pvc, "spec"), "accessModes")),
                               "persistentVolumeReclaimPolicy", "Retain", "storageClassName", cls, "volumeMode",
                               s(pvc, "spec", "volumeMode") ? s(pvc, "spec", "volumeMode") : "Filesystem", "hostPath",
                               "path", dir, "type", "Directory", "claimRef", "apiVersion", "v1", "kind",
                               "PersistentVolumeClaim", "namespace", ns, "name", name, "uid", uid);
        if (local_volumes) {
                json_t *spec = json_object_get(pv, "spec");
                json_object_del(spec, "hostPath");
                json_object_set_new(spec, "local", json_pack("{s:s}", "path", dir));
                json_object_set_new(spec, "nodeAffinity",
                                    json_pack("{s:{s:[{s:[{s:s, s:s}]}]}}", "required", "nodeSelectorTerms",
                                              "matchExpressions", "key", "kubernetes.io/hostname", "operator",
                                              "Exists"));
        }
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *coll = kube_path(&res_pv, NULL, NULL, NULL);
        int r = kube_create(client, coll, pv, NULL, &err);
        if (r < 0 && r != -EEXIST)
                fprintf(stderr, "testbed-provisioner: %s/%s: %s\n", ns, name, err->msg);
        json_decref(pv);
}

static void on_pvc(const char *key, json_t *obj, void *ud) {
        provision(obj);
}
static void on_pvc_update(const char *key, json_t *o, json_t *n, void *ud) {
        provision(n);
}

static void reclaim(json_t *pv) {
        const char *phase = s(pv, "status", "phase");
        if (!phase || strcmp(phase, "Released") != 0)
                return;
        const char *name = s(pv, "metadata", "name");
        _cleanup_free_ char *path = kube_path(&res_pv, NULL, name, NULL);
        if (kube_delete(client, path, s(pv, "metadata", "uid"), NULL, NULL, NULL) == 0) {
                _cleanup_free_ char *cmd = xasprintf("rm -rf -- '%s/%s'", root, name);
                (void)!system(cmd);
        }
}
static void on_pv(const char *key, json_t *obj, void *ud) {
        reclaim(obj);
}
static void on_pv_update(const char *key, json_t *o, json_t *n, void *ud) {
        reclaim(n);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {{"kubeconfig", required_argument, NULL, 'k'},
                                             {"root", required_argument, NULL, 'r'},
                                             {"local", no_argument, NULL, 'l'}, {0}};
        const char *kubeconfig = NULL;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                if (c == 'k')
                        kubeconfig = optarg;
                else if (c == 'r')
                        root = optarg;
                else if (c == 'l')
                        local_volumes = true;
                else
                        return 2;
        }
        if (!root || root[0] != '/') {
                fprintf(stderr, "testbed-provisioner: --root ABSOLUTE_DIR is required\n");
                return 2;
        }
        mkdir(root, 0755);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        if (kube_config_load_default(kubeconfig, &cfg, &err) < 0 ||
            kube_client_new(cfg, "testbed-provisioner", &client, &err) < 0) {
                fprintf(stderr, "testbed-provisioner: %s\n", err->msg);
                return 1;
        }
        kube_informer *pvcs = NULL, *pvs = NULL;
        kube_informer_handlers hc = {0}, hp = {on_pvc, on_pvc_update, NULL}, hv = {on_pv, on_pv_update, NULL};
        kube_informer_options ov = {.label_selector = "vtpm-agent.io/testbed=true"};
        kube_informer_new(client, &res_sc, NULL, &hc, &classes);
        kube_informer_new(client, &res_pvc, NULL, &hp, &pvcs);
        kube_informer_new(client, &res_pv, &ov, &hv, &pvs);
        if (kube_informer_start(classes, &err) < 0 || kube_informer_wait_synced(classes, 60 * USEC_PER_SEC) < 0 ||
            kube_informer_start(pvcs, &err) < 0 || kube_informer_start(pvs, &err) < 0) {
                fprintf(stderr, "testbed-provisioner: cannot start\n");
                return 1;
        }
        int sig;
        sigwait(&set, &sig);
        kube_informer_free(pvs);
        kube_informer_free(pvcs);
        kube_informer_free(classes);
        kube_client_free(client);
        return 0;
}
