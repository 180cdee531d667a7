/* SPDX-License-Identifier: Apache-2.0 */
/* The attachment pod: the kubelet publishes the state PVC for it, where the
 * node controller bind-mounts it from (README "The node controller", 2). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "attachment_check.h"
#include "attachment_pod.h"
#include "base/alloc.h"
#include "base/log.h"
#include "mount/mountpoint.h"
#include "node/node.h"
#include "resources.h"
#include "vmspec.h"

static char *attach_name(const char *pod_uid) {
        return xasprintf("vtpm-attach-%s", pod_uid);
}

static int create_attachment(node_controller *nc, launcher *l, json_t *launcher_pod, const char *name,
                             const char *pvc, vt_error **err) {
        _cleanup_free_ char *label = vm_label_value(l->vm_name);
        attachment_pod_spec spec = {.namespace = l->ns, .name = name, .launcher_name = node_md(launcher_pod, "name"),
                                    .launcher_uid = l->pod_uid, .vm_label = label, .node = nc->node,
                                    .image = nc->cfg->node.attachment_image, .pvc = pvc};
        json_t *obj = attachment_pod_new(&spec);
        _cleanup_free_ char *coll = kube_path(&res_pod, l->ns, NULL, NULL);
        int r = kube_create(nc->client, coll, obj, NULL, err);
        json_decref(obj);
        if (r < 0)
                return r; /* -EEXIST included: whose pod that is, the caller finds out */
        free(l->attach_pod);
        l->attach_pod = xstrdup(name);
        return 0;
}

/* *ret_state ATTACH_READY with *ret_pod when the pod runs (the volume is
 * published), ATTACH_WAITING, or ATTACH_FOREIGN (*ret_foreign says why, in
 * fixed words) for a pod of that name without the agent's shape. */
int ensure_attachment(node_controller *nc, launcher *l, json_t *launcher_pod, const char *pvc, json_t **ret_pod,
                      attach_state *ret_state, char **ret_foreign, vt_error **err) {
        _cleanup_free_ char *name = attach_name(l->pod_uid);
        _cleanup_free_ char *path = kube_path(&res_pod, l->ns, name, NULL);
        _cleanup_free_ char *cache_key = xasprintf("%s/%s", l->ns, name);
        /* The cache first (the informer wakes us when the kubelet reports the
         * pod Running). When it does not hold the pod, create it: on a first
         * start that is the one request. A pod of that name that exists
         * already is read: ours, made by an earlier look the cache has not
         * seen yet, or someone else's, which is judged below and never
         * becomes ours to delete. */
        json_t *pod = kube_informer_get(nc->attachments, cache_key);
        int r = 0;
        if (!pod) {
                _cleanup_error_ vt_error *create_err = NULL;
                r = create_attachment(nc, l, launcher_pod, name, pvc, &create_err);
                if (r == 0) {
                        *ret_state = ATTACH_WAITING;
                        return 0;
                }
                if (r != -EEXIST) {
                        if (err && !*err)
                                *err = TAKE_PTR(create_err);
                        return r;
                }
                r = kube_get(nc->client, path, &pod, NULL);
                if (r == -ENOENT) { /* deleted in between: the next look creates it */
                        *ret_state = ATTACH_WAITING;
                        return 0;
                }
        }
        if (r < 0)
                return vt_error_set(err, -r, "cannot read attachment pod %s", name);
        const char *why = NULL;
        if (!attachment_pod_is_ours(pod, pvc, nc->cfg->node.attachment_image, nc->node, &why)) {
                /* Not ours, so never deleted by us either (l->attach_pod unset). */
                json_decref(pod);
                *ret_foreign = xasprintf("pod %s in the VM's namespace is not an attachment pod the agent made (%s); "
                                         "the state volume is not used through it, and the TPM waits until it is "
                                         "deleted",
                                         name, why);
                *ret_state = ATTACH_FOREIGN;
                return 0;
        }
        free(l->attach_pod);
        l->attach_pod = xstrdup(name);
        const char *phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
        if (phase && strcmp(phase, "Running") == 0) {
                *ret_pod = pod;
                *ret_state = ATTACH_READY;
                return 0;
        }
        json_decref(pod);
        *ret_state = ATTACH_WAITING;
        return 0;
}

void delete_attachment(node_controller *nc, launcher *l) {
        if (!l->attach_pod)
                return;
        _cleanup_free_ char *path = kube_path(&res_pod, l->ns, l->attach_pod, NULL);
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_delete(nc->client, path, NULL, NULL, "Background", &err);
        if (r < 0 && r != -ENOENT)
                log_kv(LOG_LEVEL_WARN, "cannot delete attachment pod", "pod", l->attach_pod, "error", err->msg, NULL);
}

/* The PVC as the kubelet published it for the attachment pod:
 * <root>/pods/<uid>/volumes/<plugin>/<pv>[/mount], a mount point. */
char *published_path(node_controller *nc, const char *attach_uid, const char *pv) {
        _cleanup_free_ char *vols = xasprintf("%s/pods/%s/volumes", nc->cfg->node.kubelet_root, attach_uid);
        DIR *d = opendir(vols);
        if (!d)
                return NULL;
        char *found = NULL;
        for (struct dirent *de; !found && (de = readdir(d));) {
                if (de->d_name[0] == '.')
                        continue;
                const char *cands[] = {"", "/mount"};
                for (size_t i = 0; !found && i < ELEMENTSOF(cands); i++) {
                        _cleanup_free_ char *p = xasprintf("%s/%s/%s%s", vols, de->d_name, pv, cands[i]);
                        if (is_mount_point(p, NULL) > 0)
                                found = TAKE_PTR(p);
                }
        }
        closedir(d);
        return found;
}
