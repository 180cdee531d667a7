/* SPDX-License-Identifier: Apache-2.0 */
/* A launcher's vTPM going away: the teardown when the launcher goes, and the
 * fence when its state lock cannot be renewed in time. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/rmtree.h"
#include "mount/localmount.h"
#include "node/node.h"

/* What the agent made for a launcher on the node goes with it; a failure
 * is logged (left for the next stop or the node's reboot), never fatal. */
static void remove_tree(const char *path) {
        _cleanup_error_ vt_error *err = NULL;
        if (rm_rf(path, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot remove a launcher's files on the node", "path", path, "error",
                       err ? err->msg : "?", NULL);
}

/* Unmount (detached) and remove a directory the agent mounted something on. */
static void unmount_and_remove(const char *path, bool tree) {
        _cleanup_error_ vt_error *err = NULL;
        if (unmount_detach(path, &err) < 0) {
                log_kv(LOG_LEVEL_WARN, "cannot unmount a launcher's directory on the node", "path", path, "error",
                       err->msg, NULL);
                return; /* never remove what may still be a mount */
        }
        if (tree)
                remove_tree(path);
        else if (rmdir(path) < 0 && errno != ENOENT)
                log_kv(LOG_LEVEL_WARN, "cannot remove a launcher's directory on the node", "path", path, "error",
                       strerror(errno), NULL);
}

static void stop_swtpm(node_controller *nc, launcher *l) {
        if (l->swtpm_pid > 0 && swtpm_alive(l->swtpm_pid, l->swtpm_start)) {
                _cleanup_error_ vt_error *err = NULL;
                if (swtpm_stop(l->swtpm_pid, l->swtpm_start, l->ctrl_path, &err) < 0)
                        log_kv(LOG_LEVEL_WARN, "swtpm did not stop cleanly", "vm", l->vm_name, "error", err->msg, NULL);
                else
                        log_kv(LOG_LEVEL_INFO, "swtpm stopped", "vm", l->vm_name, "launcher", l->key, NULL);
                node_stat_inc(nc, &nc->stats.stops, 1);
                node_stat_inc(nc, &nc->stats.swtpm_running, -1);
        }
        l->swtpm_pid = 0;
}

void teardown(node_controller *nc, launcher *l) {
        stop_swtpm(nc, l);
        migration_target_gone(nc, l);
        if (l->pod_uid && *l->pod_uid) {
                const char *run = nc->cfg->node.run_dir;
                if (!l->persistent) {
                        /* Scratch state goes with its launcher, as KubeVirt's non-persistent TPM does. */
                        _cleanup_free_ char *scratch = xasprintf("%s/scratch/%s", run, l->pod_uid);
                        unmount_and_remove(scratch, true);
                }
                _cleanup_free_ char *work = xasprintf("%s/work/%s", run, l->pod_uid);
                _cleanup_free_ char *rundir = xasprintf("%s/swtpm/%s", run, l->pod_uid);
                _cleanup_free_ char *ctrl = xasprintf("%s/ctrl/%s", run, l->pod_uid);
                unmount_and_remove(work, false);
                remove_tree(rundir);
                unmount_and_remove(ctrl, false);
        }
        delete_attachment(nc, l);
        if ((l->lease_held || l->persistent) && l->vm_uid && *l->vm_uid) {
                _cleanup_free_ char *me = lock_identity(nc, l);
                state_lock_release(nc->locks, l->vm_uid, me);
                l->lease_held = false;
        }
        if (l->fenced)
                /* Said again now that the API server answers (the fence's own
                 * event may not have got through): one event with a count. */
                node_fence_event(nc, l->ns, l->vm_name, l->vm_uid);
        record_remove(nc, l->pod_uid);
}

typedef struct fenced_vm {
        char *key, *ns, *vm_name, *vm_uid;
} fenced_vm;

static void fenced_vm_done(fenced_vm *vm) {
        free(vm->key);
        free(vm->ns);
        free(vm->vm_name);
        free(vm->vm_uid);
}

/* Which VM a fenced lock is of: its launcher record. */
static bool fenced_vm_find(node_controller *nc, const state_lock_fence *f, fenced_vm *ret) {
        const char *pod_uid = strrchr(f->identity, '/');
        bool found = false;
        pthread_mutex_lock(&nc->lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; pod_uid && vt_hashmap_next(nc->launchers, &it, &k, &v);) {
                launcher *l = v;
                if (str_eq(l->pod_uid, pod_uid + 1) && str_eq(l->vm_uid, f->vm_uid)) {
                        *ret = (fenced_vm){xstrdup(l->key), xstrdup(l->ns), xstrdup(l->vm_name), xstrdup(l->vm_uid)};
                        found = true;
                        break;
                }
        }
        pthread_mutex_unlock(&nc->lock);
        return found;
}

/* The state lock of a running swtpm could not be renewed in time (the API
 * server is out of reach) or was taken over: stop that swtpm now, before the
 * lease can expire and another node may start one on the same state. The VM
 * keeps running without its TPM (QEMU's TPM backend reports errors to the
 * guest) until it restarts. Runs on a thread of the state lock's. */
void fence_swtpm(const state_lock_fence *f, void *ud) {
        node_controller *nc = ud;
        usec_t t0 = now_monotonic();
        _cleanup_error_ vt_error *err = NULL;
        int r = swtpm_stop_within(f->swtpm_pid, f->swtpm_start, f->ctrl_via, f->budget, &err);
        usec_t took = now_monotonic() - t0;
        _cleanup_free_ char *after = xasprintf("%.1f", (double)f->since_renewal / USEC_PER_SEC);
        _cleanup_free_ char *stop = xasprintf("%.1f", (double)took / USEC_PER_SEC);
        if (r < 0) {
                log_kv(LOG_LEVEL_ERROR, "swtpm could not be stopped although its state lock is lost", "vm", f->vm_uid,
                       "launcher", f->identity, "error", err ? err->msg : strerror(-r), NULL);
                return;
        }
        node_stat_inc(nc, &nc->stats.stops, 1);
        node_stat_inc(nc, &nc->stats.swtpm_running, -1);
        log_kv(LOG_LEVEL_WARN, "swtpm stopped: its state lock could not be renewed; the VM has no TPM until it restarts",
               "vm", f->vm_uid, "launcher", f->identity, "secondsSinceRenewal", after, "stopSeconds", stop, NULL);
        _cleanup_(fenced_vm_done) fenced_vm vm = {0};
        if (!fenced_vm_find(nc, f, &vm))
                return;
        /* An event only, no status: this write may reach the API server after
         * another node has started the VM's TPM and reported it. */
        node_fence_event(nc, vm.ns, vm.vm_name, vm.vm_uid);
        kube_controller_enqueue(nc->ctl, vm.key);
}
