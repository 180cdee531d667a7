/* SPDX-License-Identifier: Apache-2.0 */
/* Where swtpm's state and control socket are: the state volume (persistent)
 * or a scratch tmpfs, mounted into the launcher and verified; the VM's
 * control-socket directory; the agent's own work directories. */
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/log.h"
#include "mount/localmount.h"
#include "mount/nsmount.h"
#include "node/act.h"
#include "proc/proc.h"

DEFINE_JSON_CLEANUP

/* The pod whose volume the kubelet publishes the state PVC for: KubeVirt's
 * launcher itself when it mounts the VM's state PVC (its volume vm-state
 * names the claim the state controller resolved for the VM), so no second
 * pod and no wait for one; else an attachment pod of the agent's. True with
 * *ret_uid (caller frees); false with *ret set when not (yet). */
static bool publishing_pod(bring_up *b, char **ret_uid, kube_outcome *ret) {
        node_controller *nc = b->nc;
        launcher *l = b->l;
        if (str_eq(json_string_value(json_object_get(b->pod, "stateClaim")), b->d->pvc_name)) {
                *ret_uid = xstrdup(l->pod_uid);
                return true;
        }
        _cleanup_json_ json_t *attach = NULL;
        _cleanup_free_ char *foreign = NULL;
        _cleanup_error_ vt_error *err = NULL;
        attach_state as = ATTACH_WAITING;
        int r = ensure_attachment(nc, l, b->pod, b->d->pvc_name, &attach, &as, &foreign, &err);
        if (r < 0) {
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        if (as == ATTACH_FOREIGN) {
                vt_error_set(&err, EPERM, "%s", foreign);
                *ret = node_halt(nc, l, NR_ATTACHMENT_POD_FOREIGN, foreign, &err);
                return false;
        }
        if (as == ATTACH_WAITING) {
                *ret = node_halt(nc, l, NR_WAITING_FOR_ATTACHMENT, NULL, NULL);
                return false;
        }
        *ret_uid = xstrdup(node_md(attach, "uid"));
        return true;
}

/* The state PVC, published by the kubelet (for KubeVirt's launcher or our
 * attachment pod), bound into the launcher's mount namespace and verified
 * there: a persistent TPM never runs on scratch state. */
bool step_state_volume(bring_up *b, kube_outcome *ret) {
        node_controller *nc = b->nc;
        launcher *l = b->l;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *publisher = NULL;
        if (!publishing_pod(b, &publisher, ret))
                return false;
        b->published = b->d->pv && publisher ? published_path(nc, publisher, b->d->pv) : NULL;
        if (!b->published) {
                *ret = node_halt(nc, l, NR_STATE_VOLUME_NOT_PUBLISHED, NULL, NULL);
                return false;
        }
        int r = bind_mount_in_namespace(b->pid, b->published, b->state_in_ns, &err);
        if (r >= 0)
                r = check_mount_in_namespace(b->pid, b->published, b->state_in_ns, &err);
        if (r <= 0) {
                const char *why = err ? err->msg : NULL;
                _cleanup_free_ char *m = node_reason_message(NR_STATE_VOLUME_MOUNT_FAILED, why);
                if (!err)
                        vt_error_set(&err, EIO, "%s", m);
                *ret = node_halt(nc, l, NR_STATE_VOLUME_MOUNT_FAILED, why ? why : NULL, &err);
                return false;
        }
        b->host_state = xstrdup(b->published);
        return true;
}

/* KubeVirt's non-persistent TPM: scratch state that lives and dies with the
 * launcher. A private tmpfs, mounted into the launcher like a volume. */
bool step_scratch_volume(bring_up *b, kube_outcome *ret) {
        _cleanup_free_ char *parent = NULL, *scratch = NULL;
        _cleanup_error_ vt_error *err = NULL;
        int r = node_run_subdir(b->nc, "scratch", &parent, &err);
        if (r >= 0) {
                scratch = xasprintf("%s/%s", parent, b->l->pod_uid);
                r = mkdir_checked(scratch, 0700, &err);
        }
        if (r >= 0)
                r = mount_tmpfs_verified(scratch, "vtpm-scratch", "size=4m,mode=0700", &err);
        if (r >= 0)
                r = bind_mount_in_namespace(b->pid, scratch, b->state_in_ns, &err);
        if (r < 0) {
                vt_error_prefix(&err, r, "scratch state for %s: ", b->l->key);
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        b->host_state = TAKE_PTR(scratch);
        return true;
}

/* The VM's control-socket directory: a small tmpfs of the node's, the VM's
 * uid's; bound into swtpm's sandbox (writable) and into the launcher
 * (read-only: QEMU connects, nothing can be planted) at node.swtpmSocketDir.
 * The bind refuses symlinks on the launcher's side. Its group is the
 * launcher's (KubeVirt's non-root launcher and its QEMU run as 107:107), set
 * group id: the socket swtpm makes in it (0660) is then QEMU's group's,
 * without swtpm being a member of that group or anyone chown'ing it. */
static int ctrl_dir(bring_up *b, vt_error **err) {
        node_controller *nc = b->nc;
        uid_t uid = b->l->sandbox_uid;
        gid_t qemu_gid = 0;
        int r = proc_effective_gid(b->pid, &qemu_gid, err);
        if (r < 0)
                return vt_error_prefix(err, r, "the launcher's group: ");
        _cleanup_free_ char *parent = NULL;
        r = node_run_subdir(nc, "ctrl", &parent, err);
        if (r < 0)
                return r;
        b->host_ctrl = xasprintf("%s/%s", parent, b->l->pod_uid);
        r = mkdir_checked(b->host_ctrl, 0700, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *opts = xasprintf("size=64k,nr_inodes=16,mode=02710,uid=%u,gid=%u", (unsigned)uid,
                                              (unsigned)qemu_gid);
        r = mount_tmpfs_verified(b->host_ctrl, "vtpm-ctrl", opts, err);
        if (r < 0)
                return vt_error_prefix(err, r, "the control-socket directory for %s: ", b->l->key);
        r = bind_mount_in_namespace_ro(b->pid, b->host_ctrl, nc->cfg->node.swtpm_socket_dir, err);
        if (r < 0)
                return vt_error_prefix(err, r, "the control-socket directory in the launcher: ");
        free(b->l->ctrl_path);
        b->l->ctrl_path = xasprintf("%s/%s.sock", nc->cfg->node.swtpm_socket_dir, b->l->vm_uid);
        return 0;
}

/* swtpm's run directory, the sandboxes' stage, and a private bind mount of
 * the state under our run dir that the tools work on (bound into their
 * sandboxes at that same path). */
static int work_dirs(bring_up *b, vt_error **err) {
        node_controller *nc = b->nc;
        _cleanup_free_ char *run_parent = NULL, *work_parent = NULL;
        int r = node_run_subdir(nc, "swtpm", &run_parent, err);
        if (r >= 0)
                r = node_run_subdir(nc, "sandbox", &b->stage, err);
        if (r >= 0)
                r = node_run_subdir(nc, "work", &work_parent, err);
        if (r < 0)
                return r;
        b->run_dir = xasprintf("%s/%s", run_parent, b->l->pod_uid);
        b->work = xasprintf("%s/%s", work_parent, b->l->pod_uid);
        r = mkdir_checked(b->run_dir, 0700, err);
        if (r >= 0)
                r = mkdir_checked(b->work, 0700, err);
        if (r >= 0)
                r = bind_mount_verified(b->host_state, b->work, err);
        if (r < 0)
                return vt_error_prefix(err, r, "cannot bind the state directory for provisioning: ");
        b->work_mounted = true;
        return 0;
}

bool step_sandbox_dirs(bring_up *b, kube_outcome *ret) {
        _cleanup_error_ vt_error *err = NULL;
        if (ctrl_dir(b, &err) < 0 || work_dirs(b, &err) < 0) {
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        return true;
}
