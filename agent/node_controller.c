/* SPDX-License-Identifier: Apache-2.0 */
#include "node_controller.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/rmtree.h"
#include "base/fileat.h"
#include "base/fileio.h"
#include "base/hashmap.h"
#include "base/log.h"
#include "kube/events.h"
#include "kube/informer.h"
#include "kube/workqueue.h"
#include "mount/mountpoint.h"
#include "mount/nsmount.h"
#include "proc/cgroup.h"
#include "proc/proc.h"
#include "proc/rootdir.h"
#include "attachment_pod.h"
#include "key_rotation.h"
#include "attachment_check.h"
#include "launcher_identity.h"
#include "keymgr.h"
#include "keys/header.h"
#include "state_lock.h"
#include "swtpm_runtime.h"
#include "vmspec.h"
#include "resources.h"

DEFINE_JSON_CLEANUP

#define ANN_TPM_VERSION "vtpm-agent.io/tpm-version"
#define ANN_TPM_MODEL "vtpm-agent.io/tpm-model"
#define TICK_USEC (3 * USEC_PER_SEC)
/* A VM waiting for its key server is retried at least this often: a retry is
 * one connection to the server, and the queue's 60 s ceiling (meant for API
 * errors) would let a VM wait up to a minute after the server is back. */
#define KEY_RETRY_MAX_USEC (10 * USEC_PER_SEC)

/* What the agent knows of one launcher; persisted under run_dir so a
 * restarted agent adopts its swtpm instead of starting another. */
typedef struct launcher {
        char *key;            /* ns/pod */
        char *pod_uid;
        char *vm_name, *vm_uid, *ns;
        pid_t pid;            /* the launcher's process */
        uint64_t pid_start;
        pid_t swtpm_pid;
        uint64_t swtpm_start;
        char *ctrl_path;      /* inside the launcher's namespace (and swtpm's sandbox) */
        uid_t sandbox_uid;    /* the VM's own uid its swtpm runs as; 0: not chosen yet */
        char *attach_pod;     /* attachment pod name, if persistent */
        bool persistent;
        bool encrypted;
        bool lease_held;
        bool fenced;          /* swtpm stopped: its state lock could not be renewed */
        json_t *reported;     /* the nodeState last written */
} launcher;

/* Whose key a launcher's start asks for (keymgr.h). */
#define KEY_SUBJECT(l) ((key_subject){.ns = (l)->ns, .vm = (l)->vm_name, .launcher_uid = (l)->pod_uid})

struct node_controller {
        kube_client *client;
        const agent_config *cfg;
        vt_metrics *metrics;
        char *node;
        kube_informer *pods;
        kube_informer *tpmstates; /* rotation requests (annotations) and status.keys */
        kube_informer *attachments; /* our attachment pods: their phase wakes their launcher */
        kube_workqueue *queue;
        kube_recorder *recorder;
        keymgr *keys;
        state_lock *locks;          /* the per-VM state Leases this node holds */
        usec_t lock_start_margin;   /* a swtpm starts only with this long left before the lock's renew deadline */
        pthread_t *workers;
        int n_workers;
        pthread_t ticker;
        atomic_bool stopping;
        bool ticker_started;
        pthread_mutex_t lock; /* launchers, stats */
        vt_hashmap *launchers;
        node_controller_stats stats;
        uid_t swtpm_uid;
        gid_t swtpm_gid;
};

static void launcher_free(void *p) {
        launcher *l = p;
        if (!l)
                return;
        free(l->key);
        free(l->pod_uid);
        free(l->vm_name);
        free(l->vm_uid);
        free(l->ns);
        free(l->ctrl_path);
        free(l->attach_pod);
        json_decref(l->reported);
        free(l);
}

static bool str_eq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

static const char *md(json_t *o, const char *k) {
        return json_string_value(json_object_get(json_object_get(o, "metadata"), k));
}

static void stat_inc(node_controller *nc, uint64_t *f, int64_t d) {
        pthread_mutex_lock(&nc->lock);
        *f += (uint64_t)d;
        pthread_mutex_unlock(&nc->lock);
}

/* ---- persistence of launcher records (for adoption) ---- */

static char *record_path(node_controller *nc, const char *pod_uid) {
        return xasprintf("%s/launchers/%s.json", nc->cfg->node.run_dir, pod_uid);
}

static void record_save(node_controller *nc, const launcher *l) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s?, s:s?, s:b, s:b, s:I}", "key",
                              l->key, "podUID", l->pod_uid, "vmName", l->vm_name, "vmUID", l->vm_uid, "namespace",
                              l->ns, "pid", (json_int_t)l->pid, "pidStart", (json_int_t)l->pid_start, "swtpmPid",
                              (json_int_t)l->swtpm_pid, "swtpmStart", (json_int_t)l->swtpm_start, "ctrlPath",
                              l->ctrl_path, "attachPod", l->attach_pod, "persistent", l->persistent, "fenced",
                              l->fenced, "sandboxUid", (json_int_t)l->sandbox_uid);
        _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        _cleanup_free_ char *dir = xasprintf("%s/launchers", nc->cfg->node.run_dir);
        mkdir(nc->cfg->node.run_dir, 0711);
        mkdir(dir, 0700);
        _cleanup_free_ char *p = record_path(nc, l->pod_uid);
        _cleanup_error_ vt_error *err = NULL;
        if (write_file_atomic(p, text, strlen(text), 0600, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot record a running swtpm; a restarted agent would not adopt it", "error",
                       err->msg, NULL);
}

static void record_remove(node_controller *nc, const char *pod_uid) {
        _cleanup_free_ char *p = record_path(nc, pod_uid);
        unlink(p);
}

static void records_load(node_controller *nc) {
        _cleanup_free_ char *dir = xasprintf("%s/launchers", nc->cfg->node.run_dir);
        DIR *d = opendir(dir);
        if (!d)
                return;
        for (struct dirent *de; (de = readdir(d));) {
                if (de->d_name[0] == '.' || !strstr(de->d_name, ".json"))
                        continue;
                _cleanup_free_ char *p = xasprintf("%s/%s", dir, de->d_name);
                json_t *j = json_load_file(p, 0, NULL);
                const char *key = json_string_value(json_object_get(j, "key"));
                if (!key || !json_string_value(json_object_get(j, "podUID"))) {
                        json_decref(j);
                        continue;
                }
                launcher *l = xnew(launcher, 1);
                l->key = xstrdup(key);
                l->pod_uid = xstrdup(json_string_value(json_object_get(j, "podUID")));
                l->vm_name = xstrdup(json_string_value(json_object_get(j, "vmName")) ?: "");
                l->vm_uid = xstrdup(json_string_value(json_object_get(j, "vmUID")) ?: "");
                l->ns = xstrdup(json_string_value(json_object_get(j, "namespace")) ?: "");
                l->pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
                l->pid_start = (uint64_t)json_integer_value(json_object_get(j, "pidStart"));
                l->swtpm_pid = (pid_t)json_integer_value(json_object_get(j, "swtpmPid"));
                l->swtpm_start = (uint64_t)json_integer_value(json_object_get(j, "swtpmStart"));
                const char *cp = json_string_value(json_object_get(j, "ctrlPath"));
                const char *ap = json_string_value(json_object_get(j, "attachPod"));
                l->ctrl_path = cp ? xstrdup(cp) : NULL;
                l->attach_pod = ap ? xstrdup(ap) : NULL;
                l->persistent = json_is_true(json_object_get(j, "persistent"));
                l->sandbox_uid = (uid_t)json_integer_value(json_object_get(j, "sandboxUid"));
                l->lease_held = l->persistent;
                l->fenced = json_is_true(json_object_get(j, "fenced"));
                json_decref(j);
                pthread_mutex_lock(&nc->lock);
                vt_hashmap_put(nc->launchers, l->key, l);
                pthread_mutex_unlock(&nc->lock);
        }
        closedir(d);
}

/* ---- reporting ---- */

/* Merge one field of the VM's TPMState status (the node controller writes
 * nodeState and keys only); a TPMState already gone is not an error. */
static void patch_status_field(node_controller *nc, launcher *l, const char *field, json_t *value) {
        json_t *patch = json_pack("{s:{s:O}}", "status", field, value);
        _cleanup_free_ char *path = kube_path(&res_tpmstate, l->ns, l->vm_name, "status");
        _cleanup_error_ vt_error *err = NULL;
        if (kube_patch(nc->client, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, &err) < 0 &&
            !(err && err->code == ENOENT))
                log_kv(LOG_LEVEL_WARN, "cannot write the TPMState status", "vm", l->vm_name, "field", field, "error",
                       err ? err->msg : "unknown", NULL);
        json_decref(patch);
}

static void report(node_controller *nc, launcher *l, const char *phase, const char *reason, const char *message,
                   bool warn) {
        json_t *ns = json_pack("{s:s, s:s, s:s, s:s, s:s}", "node", nc->node, "launcher", l->key, "phase", phase,
                               "reason", reason, "message", message ? message : "");
        if (l->swtpm_pid > 0)
                json_object_set_new(ns, "swtpmPid", json_integer(l->swtpm_pid));
        json_object_set_new(ns, "encrypted", json_boolean(l->encrypted));
        if (l->reported && json_equal(l->reported, ns)) {
                json_decref(ns);
                return; /* said already: no write */
        }
        patch_status_field(nc, l, "nodeState", ns);
        json_decref(l->reported);
        l->reported = ns;
        kube_object_ref ref = {"kubevirt.io/v1", "VirtualMachine", l->ns, l->vm_name, l->vm_uid && *l->vm_uid ? l->vm_uid : NULL};
        _cleanup_error_ vt_error *eerr = NULL;
        (void)kube_record(nc->recorder, &ref, warn ? KUBE_EVENT_WARNING : KUBE_EVENT_NORMAL, reason,
                          warn ? "Refuse" : "Start", message ? message : reason, &eerr);
        log_kv(warn ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, message ? message : reason, "vm", l->vm_name, "namespace", l->ns,
               "reason", reason, NULL);
}

/* ---- the per-VM state lock: one swtpm per state, cluster-wide (state_lock.c) ---- */

/* The launcher as the lock's holder: node/ns/pod/pod-uid. */
static char *lock_identity(node_controller *nc, const launcher *l) {
        return xasprintf("%s/%s/%s", nc->node, l->key, l->pod_uid);
}

/* -EBUSY: held by a launcher that still exists; -EINPROGRESS: its holder's
 * launcher is gone, its lease not expired yet (*ret_wait). */
static int lock_state(node_controller *nc, launcher *l, char **ret_holder, usec_t *ret_wait, vt_error **err) {
        _cleanup_free_ char *me = lock_identity(nc, l);
        return state_lock_acquire(nc->locks, l->vm_uid, me, ret_holder, ret_wait, err);
}

static void unlock_state(node_controller *nc, launcher *l) {
        if (!l->vm_uid || !*l->vm_uid)
                return;
        _cleanup_free_ char *me = lock_identity(nc, l);
        state_lock_release(nc->locks, l->vm_uid, me);
        l->lease_held = false;
}

/* The control socket of a running swtpm as swtpm itself sees it: the stop
 * resolves it inside swtpm's root without following symlinks (NULL: signals). */
static char *ctrl_via(const launcher *l) {
        return l->ctrl_path ? xstrdup(l->ctrl_path) : NULL;
}

/* One note for the fence, whoever says it (the fence, or the teardown after
 * the API server answers again): the recorder makes repeats one event. */
static void fence_event(node_controller *nc, const char *ns, const char *vm_name, const char *vm_uid) {
        _cleanup_free_ char *m = xasprintf("the VM's TPM on node %s was stopped: this node could not renew the VM's "
                                           "state lock in time (it could not reach the API server), and another node "
                                           "may take the state over once the lock expires; the VM has no TPM until it "
                                           "restarts",
                                           nc->node);
        kube_object_ref ref = {"kubevirt.io/v1", "VirtualMachine", ns, vm_name, vm_uid && *vm_uid ? vm_uid : NULL};
        _cleanup_error_ vt_error *err = NULL;
        (void)kube_record(nc->recorder, &ref, KUBE_EVENT_WARNING, "TPMFenced", "Fence", m, &err);
}

typedef struct fenced_vm {
        char *key, *ns, *vm_name, *vm_uid;
} fenced_vm;

/* The state lock of a running swtpm could not be renewed in time (the API
 * server is out of reach) or was taken over: stop that swtpm now, before the
 * lease can expire and another node may start one on the same state. The VM
 * keeps running without its TPM (QEMU's TPM backend reports errors to the
 * guest) until it restarts. Runs on a thread of the state lock's. */
static void fence_swtpm(const state_lock_fence *f, void *ud) {
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
        stat_inc(nc, &nc->stats.stops, 1);
        stat_inc(nc, &nc->stats.swtpm_running, -1);
        log_kv(LOG_LEVEL_WARN, "swtpm stopped: its state lock could not be renewed; the VM has no TPM until it restarts",
               "vm", f->vm_uid, "launcher", f->identity, "secondsSinceRenewal", after, "stopSeconds", stop, NULL);
        /* Which VM: its launcher record. */
        fenced_vm vm = {0};
        const char *pod_uid = strrchr(f->identity, '/');
        pthread_mutex_lock(&nc->lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; pod_uid && vt_hashmap_next(nc->launchers, &it, &k, &v);) {
                launcher *l = v;
                if (str_eq(l->pod_uid, pod_uid + 1) && str_eq(l->vm_uid, f->vm_uid)) {
                        vm = (fenced_vm){xstrdup(l->key), xstrdup(l->ns), xstrdup(l->vm_name), xstrdup(l->vm_uid)};
                        break;
                }
        }
        pthread_mutex_unlock(&nc->lock);
        if (!vm.key)
                return;
        /* An event only, no status: this write may reach the API server after
         * another node has started the VM's TPM and reported it. */
        fence_event(nc, vm.ns, vm.vm_name, vm.vm_uid);
        kube_workqueue_add(nc->queue, vm.key);
        free(vm.key);
        free(vm.ns);
        free(vm.vm_name);
        free(vm.vm_uid);
}

/* ---- the attachment pod: the kubelet publishes the state PVC for it ---- */

static char *attach_name(const char *pod_uid) {
        return xasprintf("vtpm-attach-%s", pod_uid);
}

/* Returns 1 when the pod runs (published), 0 while waiting, < 0 on error. */
static int ensure_attachment(node_controller *nc, launcher *l, json_t *launcher_pod, const char *pvc,
                             json_t **ret_pod, vt_error **err) {
        _cleanup_free_ char *name = attach_name(l->pod_uid);
        _cleanup_free_ char *path = kube_path(&res_pod, l->ns, name, NULL);
        _cleanup_free_ char *cache_key = xasprintf("%s/%s", l->ns, name);
        /* The cache first (the informer wakes us when the kubelet reports the
         * pod Running); a GET only when it does not hold the pod (yet). */
        json_t *pod = kube_informer_get(nc->attachments, cache_key);
        int r = pod ? 0 : kube_get(nc->client, path, &pod, NULL);
        if (r == -ENOENT) {
                _cleanup_free_ char *label = vm_label_value(l->vm_name);
                attachment_pod_spec spec = {.namespace = l->ns, .name = name, .launcher_name = md(launcher_pod, "name"),
                                            .launcher_uid = l->pod_uid, .vm_label = label, .node = nc->node,
                                            .image = nc->cfg->node.attachment_image, .pvc = pvc};
                json_t *obj = attachment_pod_new(&spec);
                _cleanup_free_ char *coll = kube_path(&res_pod, l->ns, NULL, NULL);
                r = kube_create(nc->client, coll, obj, NULL, err);
                json_decref(obj);
                if (r < 0 && r != -EEXIST)
                        return r;
                free(l->attach_pod);
                l->attach_pod = xstrdup(name);
                return 0;
        }
        if (r < 0)
                return vt_error_set(err, -r, "cannot read attachment pod %s", name);
        const char *why = NULL;
        if (!attachment_pod_is_ours(pod, pvc, nc->cfg->node.attachment_image, nc->node, &why)) {
                /* Not ours, so never deleted by us either (l->attach_pod unset). */
                json_decref(pod);
                return vt_error_set(err, EPERM,
                                    "pod %s in the VM's namespace is not an attachment pod the agent made (%s); the "
                                    "state volume is not used through it, and the TPM waits until it is deleted",
                                    name, why);
        }
        free(l->attach_pod);
        l->attach_pod = xstrdup(name);
        const char *phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
        if (phase && strcmp(phase, "Running") == 0) {
                *ret_pod = pod;
                return 1;
        }
        json_decref(pod);
        return 0;
}

static void delete_attachment(node_controller *nc, launcher *l) {
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
static char *published_path(node_controller *nc, const char *attach_uid, const char *pv) {
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

/* ---- swtpm's place in the launcher ---- */



/* The VM's own uid (and gid) for its swtpm: derived from the VM's uid, so a
 * VM keeps one owner of its state files on every node; the next free one
 * when another VM running here has it (a collision in the range). 0 when the
 * range is full. */
static uid_t choose_sandbox_uid(node_controller *nc, launcher *l) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (const char *p = l->vm_uid; p && *p; p++)
                h = (h ^ (uint8_t)*p) * 1099511628211ULL;
        uint64_t base = (uint64_t)nc->cfg->node.swtpm_uid_base, count = (uint64_t)nc->cfg->node.swtpm_uid_count;
        uid_t found = 0;
        pthread_mutex_lock(&nc->lock);
        for (uint64_t i = 0; i < count && !found; i++) {
                uid_t cand = (uid_t)(base + (h + i) % count);
                bool taken = cand == nc->swtpm_uid;
                const char *k;
                void *v;
                for (vt_hashmap_iter it = {0}; !taken && vt_hashmap_next(nc->launchers, &it, &k, &v);) {
                        const launcher *o = v;
                        taken = o != l && o->sandbox_uid == cand &&
                                !(o->vm_uid && l->vm_uid && strcmp(o->vm_uid, l->vm_uid) == 0);
                }
                if (!taken)
                        found = cand;
        }
        pthread_mutex_unlock(&nc->lock);
        return found;
}

/* ---- reconcile ---- */

/* What the agent made for a launcher on the node goes with it; a failure
 * is logged (left for the next stop or the node's reboot), never fatal. */
static void remove_tree(const char *path) {
        _cleanup_error_ vt_error *err = NULL;
        if (rm_rf(path, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot remove a launcher's files on the node", "path", path, "error",
                       err ? err->msg : "?", NULL);
}

static void teardown(node_controller *nc, launcher *l) {
        _cleanup_free_ char *ctrl_dir = l->pod_uid ? xasprintf("%s/ctrl/%s", nc->cfg->node.run_dir, l->pod_uid) : NULL;
        if (l->swtpm_pid > 0 && swtpm_alive(l->swtpm_pid, l->swtpm_start)) {
                _cleanup_error_ vt_error *err = NULL;
                if (swtpm_stop(l->swtpm_pid, l->swtpm_start, l->ctrl_path, &err) < 0)
                        log_kv(LOG_LEVEL_WARN, "swtpm did not stop cleanly", "vm", l->vm_name, "error", err->msg, NULL);
                else
                        log_kv(LOG_LEVEL_INFO, "swtpm stopped", "vm", l->vm_name, "launcher", l->key, NULL);
                stat_inc(nc, &nc->stats.stops, 1);
                stat_inc(nc, &nc->stats.swtpm_running, -1);
        }
        l->swtpm_pid = 0;
        if (!l->persistent && l->pod_uid) {
                /* Scratch state goes with its launcher, as KubeVirt's non-persistent TPM does. */
                _cleanup_free_ char *scratch = xasprintf("%s/scratch/%s", nc->cfg->node.run_dir, l->pod_uid);
                (void)umount2(scratch, MNT_DETACH);
                remove_tree(scratch);
        }
        if (l->pod_uid) {
                _cleanup_free_ char *work = xasprintf("%s/work/%s", nc->cfg->node.run_dir, l->pod_uid);
                _cleanup_free_ char *rundir = xasprintf("%s/swtpm/%s", nc->cfg->node.run_dir, l->pod_uid);
                (void)umount2(work, MNT_DETACH);
                (void)rmdir(work);
                remove_tree(rundir);
                (void)umount2(ctrl_dir, MNT_DETACH);
                (void)rmdir(ctrl_dir);
        }
        delete_attachment(nc, l);
        if (l->lease_held || l->persistent)
                unlock_state(nc, l);
        if (l->fenced)
                /* Said again now that the API server answers (the fence's own
                 * event may not have got through): one event with a count. */
                fence_event(nc, l->ns, l->vm_name, l->vm_uid);
        record_remove(nc, l->pod_uid);
}

static bool pod_finished(json_t *pod) {
        const char *phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
        if (phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0))
                return true;
        return json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp") != NULL;
}

static launcher *launcher_get_or_new(node_controller *nc, const char *key, json_t *pod) {
        pthread_mutex_lock(&nc->lock);
        launcher *l = vt_hashmap_get(nc->launchers, key);
        const char *uid = md(pod, "uid");
        if (l && uid && strcmp(l->pod_uid, uid) != 0) {
                /* Same name, new pod: the old one's leftovers go first (caller handles). */
                l = NULL;
        }
        if (!l) {
                l = xnew(launcher, 1);
                l->key = xstrdup(key);
                l->pod_uid = xstrdup(uid ? uid : "");
                l->ns = xstrdup(md(pod, "namespace") ? md(pod, "namespace") : "");
                const char *vm = json_string_value(
                        json_object_get(json_object_get(json_object_get(pod, "metadata"), "labels"), "vm.kubevirt.io/name"));
                l->vm_name = xstrdup(vm ? vm : "");
                vt_hashmap_put(nc->launchers, key, l);
                nc->stats.launchers = vt_hashmap_size(nc->launchers);
        }
        pthread_mutex_unlock(&nc->lock);
        return l;
}

static void launcher_forget(node_controller *nc, const char *key) {
        pthread_mutex_lock(&nc->lock);
        vt_hashmap_remove(nc->launchers, key);
        nc->stats.launchers = vt_hashmap_size(nc->launchers);
        pthread_mutex_unlock(&nc->lock);
}

/* ---- keys: rotation requests and their status ---- */

/* Rotation is requested on the VM's TPMState with these annotations; the
 * value is the operator's request id (for KEK rotation it names the new KEK
 * version, shared by every VM of the namespace asking for it). */
#define ANN_ROTATE_KEK "vtpm-agent.io/rotate-kek"
#define ANN_ROTATE_DEK "vtpm-agent.io/rotate-dek"

static const char *ts_annotation(json_t *ts, const char *name) {
        return json_string_value(json_object_get(json_object_get(json_object_get(ts, "metadata"), "annotations"), name));
}

/* status.keys.<which>.<field> of a TPMState. */
static const char *ts_keys_field(json_t *ts, const char *which, const char *field) {
        json_t *k = json_object_get(json_object_get(ts, "status"), "keys");
        return json_string_value(json_object_get(which ? json_object_get(k, which) : k, field));
}


static void keys_event(node_controller *nc, launcher *l, bool warn, const char *reason, const char *message) {
        kube_object_ref ref = {"kubevirt.io/v1", "VirtualMachine", l->ns, l->vm_name,
                               l->vm_uid && *l->vm_uid ? l->vm_uid : NULL};
        _cleanup_error_ vt_error *err = NULL;
        (void)kube_record(nc->recorder, &ref, warn ? KUBE_EVENT_WARNING : KUBE_EVENT_NORMAL, reason, "RotateKeys",
                          message, &err);
        log_kv(warn ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, message, "vm", l->vm_name, "namespace", l->ns, "reason", reason,
               NULL);
}

/* Merge status.keys (the TPMState's key report): provider, kekId,
 * dekGeneration, encrypted, kekRotation, dekRotation, message. */
static void keys_status(node_controller *nc, launcher *l, json_t *keys) {
        patch_status_field(nc, l, "keys", keys);
}

/* Add what the header on the volume says: provider, kekId, dekGeneration
 * (parsed and validated: printable, bounded; read beneath the state
 * directory's fd without following symlinks). */
static void keys_from_header(json_t *keys, int state_dfd) {
        _cleanup_(key_header_done) key_header h = {0};
        if (state_dfd < 0 || key_header_readat(state_dfd, &h, NULL) < 0 || !key_header_has_current(&h)) {
                json_object_set_new(keys, "encrypted", json_false());
                return;
        }
        json_object_set_new(keys, "encrypted", json_true());
        json_object_set_new(keys, "provider", json_string(h.provider));
        json_object_set_new(keys, "kekId", json_string(h.kek_id));
        json_object_set_new(keys, "dekGeneration", json_integer((json_int_t)h.dek_generation));
}

static json_t *rotation_done(const char *request) {
        char now[40];
        format_rfc3339(now_realtime(), now);
        return json_pack("{s:s, s:s, s:s, s:b}", "requested", request, "completed", request, "completedAt", now,
                         "pending", 0);
}

/* The state directory of a running swtpm, through its mount namespace (the
 * launcher's, where the volume is bound), opened inside that root without
 * following symlinks: the launcher's filesystem is the tenant's. */
static int running_state_dir(node_controller *nc, launcher *l, vt_error **err) {
        _cleanup_free_ char *p = xasprintf("%s/%s", nc->cfg->node.swtpm_state_dir, l->vm_uid);
        return open_dir_in_root(l->swtpm_pid, p, err);
}

/* A running VM: KEK rotation now (only the header changes; swtpm has its
 * key), DEK rotation reported as pending until the next start. Reads the
 * TPMState from the informer cache: no request unless there is work. */
static int keys_running(node_controller *nc, launcher *l, vt_error **err) {
        if (!nc->tpmstates || !l->vm_uid || !*l->vm_uid)
                return 0;
        _cleanup_free_ char *key = xasprintf("%s/%s", l->ns, l->vm_name);
        _cleanup_json_ json_t *ts = kube_informer_get(nc->tpmstates, key);
        if (!ts)
                return 0;
        const char *kek_req = ts_annotation(ts, ANN_ROTATE_KEK), *dek_req = ts_annotation(ts, ANN_ROTATE_DEK);
        bool kek_todo = kek_req && !str_eq(kek_req, ts_keys_field(ts, "kekRotation", "completed"));
        bool dek_todo = dek_req && !str_eq(dek_req, ts_keys_field(ts, "dekRotation", "completed")) &&
                        !str_eq(dek_req, ts_keys_field(ts, "dekRotation", "requested"));
        if (!kek_todo && !dek_todo)
                return 0;
        _cleanup_error_ vt_error *derr = NULL;
        _cleanup_close_ int dfd = running_state_dir(nc, l, &derr);
        _cleanup_json_ json_t *keys = json_object();
        int r = 0;
        if (kek_todo) {
                _cleanup_free_ char *kek_id = NULL;
                _cleanup_error_ vt_error *kerr = NULL;
                r = dfd < 0 ? vt_error_set(&kerr, -dfd, "%s", derr ? derr->msg : "cannot open the state directory")
                            : keyrot_rotate_kek_at(nc->keys, &KEY_SUBJECT(l), dfd, kek_req, &kek_id, &kerr);
                if (r >= 0) {
                        json_object_set_new(keys, "kekRotation", rotation_done(kek_req));
                        _cleanup_free_ char *m = xasprintf("KEK rotation %s: the state key is wrapped by KEK %s%s",
                                                           kek_req, kek_id, r == 0 ? " (already)" : "");
                        json_object_set_new(keys, "message", json_string(m));
                        keys_event(nc, l, false, "KEKRotated", m);
                        r = 0;
                } else if (r == -ENOENT) {
                        json_object_set_new(keys, "kekRotation", rotation_done(kek_req));
                        json_object_set_new(keys, "message",
                                            json_string("KEK rotation: the state is not encrypted; nothing to re-wrap"));
                        r = 0;
                } else {
                        _cleanup_free_ char *m = xasprintf("KEK rotation %s failed: %s", kek_req,
                                                           kerr ? kerr->msg : strerror(-r));
                        json_object_set_new(keys, "kekRotation",
                                            json_pack("{s:s, s:s}", "requested", kek_req, "error", m));
                        json_object_set_new(keys, "message", json_string(m));
                        keys_event(nc, l, true, "KEKRotationFailed", m);
                        if (keymgr_unavailable(r) && err)
                                *err = TAKE_PTR(kerr); /* retried with backoff */
                        else
                                r = 0;           /* said; a new request id retries */
                }
        }
        if (dek_todo) {
                json_object_set_new(keys, "dekRotation", json_pack("{s:s, s:b}", "requested", dek_req, "pending", 1));
                if (!kek_todo)
                        json_object_set_new(keys, "message",
                                            json_string("DEK rotation pending: the state is re-encrypted at the VM's "
                                                        "next start"));
        }
        keys_from_header(keys, dfd);
        keys_status(nc, l, keys);
        return r;
}

/* At start, before swtpm: finish or undo an interrupted re-encryption, do
 * requested rotations, encrypt state from before encryption, and hand back
 * the DEK (NULL: unencrypted). `ts` is the TPMState just read. A failure
 * that leaves the state usable is reported and the start goes on; one that
 * does not refuses the start. */
static int keys_at_start(node_controller *nc, launcher *l, json_t *ts, const char *dir, bool tpm2,
                         const tpm_sandbox *sb, secmem **ret_dek, vt_error **err) {
        _cleanup_json_ json_t *keys = json_object();
        int r = keyrot_recover(dir, err);
        if (r < 0) {
                _cleanup_free_ char *m = xasprintf("an interrupted key rotation could not be finished or undone (%s); "
                                                   "swtpm is not started",
                                                   err && *err ? (*err)->msg : strerror(-r));
                report(nc, l, "Refused", "KeyRotationIncomplete", m, true);
                return r;
        }
        if (r > KEYROT_NOTHING) {
                _cleanup_free_ char *m = xasprintf("key rotation recovery: %s", keyrot_action_name((keyrot_action)r));
                keys_event(nc, l, false, "KeyRotationRecovered", m);
                json_object_set_new(keys, "message", json_string(m));
        }

        const char *kek_req = ts_annotation(ts, ANN_ROTATE_KEK), *dek_req = ts_annotation(ts, ANN_ROTATE_DEK);
        if (kek_req && !str_eq(kek_req, ts_keys_field(ts, "kekRotation", "completed"))) {
                _cleanup_free_ char *kek_id = NULL;
                _cleanup_error_ vt_error *kerr = NULL;
                r = keyrot_rotate_kek(nc->keys, &KEY_SUBJECT(l), dir, kek_req, &kek_id, &kerr);
                if (r >= 0 || r == -ENOENT) {
                        json_object_set_new(keys, "kekRotation", rotation_done(kek_req));
                        if (r > 0) {
                                _cleanup_free_ char *m = xasprintf("KEK rotation %s: the state key is wrapped by KEK %s",
                                                                   kek_req, kek_id);
                                keys_event(nc, l, false, "KEKRotated", m);
                                json_object_set_new(keys, "message", json_string(m));
                        }
                } else if (keymgr_unavailable(r)) {
                        _cleanup_free_ char *m = xasprintf("the key provider is unavailable (%s); the VM's TPM starts "
                                                           "as soon as it answers again",
                                                           kerr ? kerr->msg : strerror(-r));
                        report(nc, l, "Waiting", "KeyProviderUnavailable", m, true);
                        return -EHOSTDOWN;
                } else {
                        /* The old wrapping stands: the VM starts with it. */
                        _cleanup_free_ char *m = xasprintf("KEK rotation %s failed: %s", kek_req,
                                                           kerr ? kerr->msg : strerror(-r));
                        json_object_set_new(keys, "kekRotation",
                                            json_pack("{s:s, s:s}", "requested", kek_req, "error", m));
                        json_object_set_new(keys, "message", json_string(m));
                        keys_event(nc, l, true, "KEKRotationFailed", m);
                }
        }

        _cleanup_(secmem_freep) secmem *dek = NULL;
        _cleanup_(state_key_info_done) state_key_info ki = {0};
        r = keymgr_state_key(nc->keys, &KEY_SUBJECT(l), dir, &dek, &ki, err);
        if (r < 0) {
                if (keymgr_unavailable(r)) {
                        _cleanup_free_ char *m = xasprintf("the key provider is unavailable (%s); the VM's TPM starts "
                                                           "as soon as it answers again",
                                                           err && *err ? (*err)->msg : strerror(-r));
                        report(nc, l, "Waiting", "KeyProviderUnavailable", m, true);
                        return -EHOSTDOWN; /* backoff, then retry */
                }
                _cleanup_free_ char *m = xasprintf("the state key cannot be unwrapped (%s); swtpm is not started and "
                                                   "the state is left untouched",
                                                   err && *err ? (*err)->msg : strerror(-r));
                report(nc, l, "Refused", "KeyUnwrapFailed", m, true);
                stat_inc(nc, &nc->stats.refusals, 1);
                return r;
        }

        keyrot_tpm t = {.version = tpm2 ? TPM_VERSION_2 : TPM_VERSION_1_2, .sandbox = sb};
        if (ki.unencrypted || (dek && dek_req && !str_eq(dek_req, ts_keys_field(ts, "dekRotation", "completed")))) {
                const char *req = ki.unencrypted ? NULL : dek_req;
                _cleanup_(secmem_freep) secmem *fresh = NULL;
                _cleanup_error_ vt_error *rerr = NULL;
                r = keyrot_reencrypt(nc->keys, &KEY_SUBJECT(l), dir, req, &t, &fresh, &rerr);
                if (r < 0) {
                        /* Whatever is left must load: finish or undo, or refuse. */
                        _cleanup_error_ vt_error *cerr = NULL;
                        int c = keyrot_recover(dir, &cerr);
                        _cleanup_free_ char *m = xasprintf(
                                "%s failed (%s)%s%s", req ? "DEK rotation" : "encrypting the existing unencrypted state",
                                rerr ? rerr->msg : strerror(-r), c < 0 ? "; recovery failed too: " : "",
                                c < 0 ? cerr->msg : "");
                        if (keymgr_unavailable(r)) {
                                report(nc, l, "Waiting", "KeyProviderUnavailable", m, true);
                                return -EHOSTDOWN;
                        }
                        if (!req || c < 0) {
                                /* Never started on state whose key we are not sure of, and
                                 * unencrypted state is never started as such again. */
                                _cleanup_free_ char *mm = xasprintf("%s; the old state is left as it was and swtpm is "
                                                                    "not started", m);
                                report(nc, l, "Refused", req ? "KeyRotationIncomplete" : "StateEncryptionFailed", mm,
                                       true);
                                stat_inc(nc, &nc->stats.refusals, 1);
                                if (err && !*err)
                                        *err = TAKE_PTR(rerr);
                                return r;
                        }
                        json_object_set_new(keys, "dekRotation",
                                            json_pack("{s:s, s:s, s:b}", "requested", req, "error", m, "pending", 0));
                        json_object_set_new(keys, "message", json_string(m));
                        keys_event(nc, l, true, "DEKRotationFailed", m);
                        if (c == KEYROT_ROLL_FORWARD) {
                                /* Failed past its marker and finished now: the new key is current. */
                                secmem_free(TAKE_PTR(dek));
                                state_key_info_done(&ki);
                                r = keymgr_state_key(nc->keys, &KEY_SUBJECT(l), dir, &dek, &ki, err);
                                if (r < 0) {
                                        report(nc, l, "Refused", "KeyUnwrapFailed",
                                               err && *err ? (*err)->msg : "the state key cannot be unwrapped", true);
                                        return r;
                                }
                        }
                } else if (r > 0) {
                        secmem_free(dek);
                        dek = TAKE_PTR(fresh);
                        _cleanup_free_ char *m =
                                req ? xasprintf("DEK rotation %s: the TPM state is re-encrypted under a new key", req)
                                    : xstrdup("the existing unencrypted TPM state is now encrypted");
                        keys_event(nc, l, false, req ? "DEKRotated" : "StateEncrypted", m);
                        json_object_set_new(keys, "message", json_string(m));
                        if (req)
                                json_object_set_new(keys, "dekRotation", rotation_done(req));
                } else if (req)
                        json_object_set_new(keys, "dekRotation", rotation_done(req));
        }
        {
                _cleanup_close_ int dfd = dir_open_nofollow(dir, NULL);
                keys_from_header(keys, dfd);
        }
        keys_status(nc, l, keys);
        *ret_dek = TAKE_PTR(dek);
        return 0;
}

/* Enqueue every known launcher that `match` accepts. Informer callbacks and
 * the ticker use it: they only wake launchers, reconcile does the work. */
static void wake_launchers(node_controller *nc, bool (*match)(const launcher *l, const void *arg), const void *arg) {
        pthread_mutex_lock(&nc->lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(nc->launchers, &it, &k, &v);)
                if (match(v, arg))
                        kube_workqueue_add(nc->queue, k);
        pthread_mutex_unlock(&nc->lock);
}

typedef struct vm_ref {
        const char *ns, *name;
} vm_ref;

static bool launcher_is_for_vm(const launcher *l, const void *arg) {
        const vm_ref *vm = arg;
        return str_eq(l->ns, vm->ns) && str_eq(l->vm_name, vm->name);
}

/* TPMStates with a rotation request: wake the launchers of that VM on this
 * node. Only a change of the request (or a first sight) enqueues, so the
 * agent's own status writes do not. */
static void ts_wake(node_controller *nc, json_t *ts) {
        vm_ref vm = {md(ts, "namespace"), md(ts, "name")};
        if (vm.ns && vm.name)
                wake_launchers(nc, launcher_is_for_vm, &vm);
}

static void ts_added(const char *key, json_t *obj, void *ud) {
        if (ts_annotation(obj, ANN_ROTATE_KEK) || ts_annotation(obj, ANN_ROTATE_DEK))
                ts_wake(ud, obj);
}

static bool ann_changed(json_t *o, json_t *n, const char *name) {
        const char *a = ts_annotation(o, name), *b = ts_annotation(n, name);
        return (a || b) && !str_eq(a, b);
}

static void ts_updated(const char *key, json_t *o, json_t *n, void *ud) {
        if (ann_changed(o, n, ANN_ROTATE_KEK) || ann_changed(o, n, ANN_ROTATE_DEK))
                ts_wake(ud, n);
}

static void ts_deleted(const char *key, json_t *obj, void *ud) {
}

/* Cache only what rotation reads: names, the two annotations, status.keys. */
static json_t *ts_trim(json_t *o, void *ud) {
        json_t *m = json_object();
        json_t *omd = json_object_get(o, "metadata");
        const char *keep[] = {"name", "namespace", "uid", "resourceVersion"};
        for (size_t i = 0; i < ELEMENTSOF(keep); i++)
                if (json_object_get(omd, keep[i]))
                        json_object_set(m, keep[i], json_object_get(omd, keep[i]));
        json_t *ann = json_object();
        const char *anns[] = {ANN_ROTATE_KEK, ANN_ROTATE_DEK};
        for (size_t i = 0; i < ELEMENTSOF(anns); i++) {
                json_t *v = json_object_get(json_object_get(omd, "annotations"), anns[i]);
                if (v)
                        json_object_set(ann, anns[i], v);
        }
        json_object_set_new(m, "annotations", ann);
        json_t *out = json_pack("{s:o}", "metadata", m);
        json_t *keys = json_object_get(json_object_get(o, "status"), "keys");
        if (keys)
                json_object_set_new(out, "status", json_pack("{s:O}", "keys", keys));
        return out;
}

/* A fenced launcher: said in its status once the API server answers, but only
 * while the state lock still names it (if another node took the state over,
 * the status is that node's to write). */
static int fenced(node_controller *nc, launcher *l) {
        _cleanup_free_ char *me = lock_identity(nc, l);
        if (state_lock_names(nc->locks, l->vm_uid, me) > 0)
                report(nc, l, "Stopped", "TPMFenced",
                       "swtpm was stopped because this node could not renew the VM's state lock in time; the VM "
                       "has no TPM until it restarts",
                       true);
        return 0;
}

/* Bring a launcher's vTPM up: every check passes before swtpm starts. */
static int bring_up(node_controller *nc, launcher *l, json_t *pod, vt_error **err) {
        int r = 0;
        _cleanup_json_ json_t *vm = NULL, *ts = NULL, *attach = NULL, *pvc = NULL;
        _cleanup_free_ char *published = NULL, *host_state = NULL, *holder = NULL;
        usec_t lease_wait = 0;
        const char *vm_ns = l->ns;

        /* Stopped for want of state lock renewals: not started again for this
         * launcher (QEMU lost its TPM; the VM gets one at its next start). */
        if (l->fenced)
                return fenced(nc, l);
        /* Already running (ours, or adopted after a restart)? Leave it alone. */
        if (l->swtpm_pid > 0) {
                if (swtpm_alive(l->swtpm_pid, l->swtpm_start))
                        return keys_running(nc, l, err);
                if (l->persistent && l->vm_uid) {
                        _cleanup_free_ char *me = lock_identity(nc, l);
                        if (state_lock_fenced(nc->locks, l->vm_uid, me)) {
                                l->fenced = true;
                                l->swtpm_pid = 0;
                                record_save(nc, l);
                                return fenced(nc, l);
                        }
                }
                /* QEMU shuts swtpm down (CMD_SHUTDOWN) whenever the VM stops: that is
                 * normal, not a warning. Said only while the launcher still runs;
                 * a launcher that went is torn down without a word. */
                uint64_t st = 0;
                if (l->pid > 0 && proc_start_time(l->pid, &st, NULL) == 0 && st == l->pid_start)
                        report(nc, l, "Stopped", "SwtpmExited",
                               "swtpm exited (the VM shut its TPM down, or swtpm failed); it starts again with the "
                               "VM's next launcher",
                               false);
                l->swtpm_pid = 0;
                record_save(nc, l);
                return r;
        }
        if (!*l->vm_name)
                return r; /* not a KubeVirt launcher we can place */

        /* What the cluster decided: the VM (uid, TPM asks) and its TPMState. */
        _cleanup_free_ char *vm_path = kube_path(&res_vm, vm_ns, l->vm_name, NULL);
        r = kube_get(nc->client, vm_path, &vm, err);
        if (r < 0)
                return r;
        free(l->vm_uid);
        l->vm_uid = xstrdup(md(vm, "uid") ? md(vm, "uid") : "");
        _cleanup_free_ char *ts_path = kube_path(&res_tpmstate, vm_ns, l->vm_name, NULL);
        if (kube_get(nc->client, ts_path, &ts, NULL) < 0) {
                r = -EAGAIN; /* the state controller has not looked at this VM yet */
                return r;
        }
        json_t *st = json_object_get(ts, "status");
        tpm_intent intent;
        vm_tpm_intent(vm, &intent);
        bool has_tpm = intent.has_tpm, persistent = intent.persistent;
        if (intent.source == TPM_SOURCE_NONE) {
                /* A preference decided: the state controller's verdict says which. */
                persistent = json_is_true(json_object_get(st, "persistent"));
                has_tpm = persistent;
        }
        tpm_intent_done(&intent);
        if (!has_tpm)
                return r;
        l->persistent = persistent;

        json_t *ann = json_object_get(json_object_get(vm, "metadata"), "annotations");
        const char *version = json_string_value(json_object_get(ann, ANN_TPM_VERSION));
        const char *model = json_string_value(json_object_get(ann, ANN_TPM_MODEL));
        if (!version)
                version = "2.0";
        if (!model)
                model = "tpm-crb";
        if ((strcmp(version, "2.0") != 0 && strcmp(version, "1.2") != 0) ||
            (strcmp(model, "tpm-crb") != 0 && strcmp(model, "tpm-tis") != 0)) {
                _cleanup_free_ char *m = xasprintf("TPM version \"%s\" / model \"%s\" is not supported (versions 2.0, "
                                                   "1.2; models tpm-crb, tpm-tis)", version, model);
                report(nc, l, "Refused", "TPMVersionUnsupported", m, true);
                stat_inc(nc, &nc->stats.refusals, 1);
                return r;
        }
        if (strcmp(version, "1.2") == 0 && strcmp(model, "tpm-crb") == 0) {
                report(nc, l, "Refused", "TPMModelUnsupported",
                       "the tpm-crb model needs TPM 2.0; use tpm-tis for TPM 1.2", true);
                stat_inc(nc, &nc->stats.refusals, 1);
                return r;
        }
        const char *phase = json_string_value(json_object_get(st, "phase"));
        if (persistent && (!phase || strcmp(phase, "Ready") != 0)) {
                report(nc, l, "Waiting", "WaitingForStateVolume",
                       "waiting for the state volume to be bound before starting the TPM", false);
                r = -EAGAIN;
                return r;
        }

        /* The launcher's process: the peer of the socket in the pod's own
         * emptyDir, proven by its cgroup to be in this pod (launcher_identity.h). */
        pid_t pid = 0;
        r = launcher_identify(nc->cfg, pod, &pid, &l->pid_start, err);
        if (r == -EPERM) {
                report(nc, l, "Refused", "LauncherIdentityRefused", err && *err ? (*err)->msg : "refused", true);
                stat_inc(nc, &nc->stats.refusals, 1);
                return r;
        }
        if (r < 0)
                return r; /* -EAGAIN: not listening yet */
        l->pid = pid;

        _cleanup_free_ char *state_in_ns = xasprintf("%s/%s", nc->cfg->node.swtpm_state_dir, l->vm_uid);
        if (persistent) {
                r = lock_state(nc, l, &holder, &lease_wait, err);
                if (r == -EINPROGRESS) {
                        _cleanup_free_ char *m = xasprintf("waiting up to %llu s for the state lock of %s to expire "
                                                           "(its launcher is gone; its node may still be running "
                                                           "swtpm until then)",
                                                           (unsigned long long)((lease_wait + USEC_PER_SEC - 1) /
                                                                                USEC_PER_SEC),
                                                           holder);
                        /* Said once, not with every countdown: the count is in the log. */
                        report(nc, l, "Waiting", "WaitingForStateLock",
                               "waiting for the state lock of a launcher that is gone to expire", false);
                        log_kv(LOG_LEVEL_INFO, m, "vm", l->vm_name, "namespace", l->ns, NULL);
                        return r;
                }
                if (r == -EBUSY) {
                        _cleanup_free_ char *m = xasprintf("the VM's TPM state is in use by %s; a second swtpm on the "
                                                           "same state is never started",
                                                           holder);
                        report(nc, l, "Refused", "StateInUse", m, true);
                        stat_inc(nc, &nc->stats.refusals, 1);
                        return r;
                }
                if (r < 0)
                        return r;
                l->lease_held = true;
                const char *pvc_name = json_string_value(json_object_get(st, "pvcName"));
                _cleanup_free_ char *pvc_path = kube_path(&res_pvc, vm_ns, pvc_name ? pvc_name : "", NULL);
                r = kube_get(nc->client, pvc_path, &pvc, err);
                if (r < 0)
                        return r;
                const char *pv = json_string_value(json_object_get(json_object_get(pvc, "spec"), "volumeName"));
                r = ensure_attachment(nc, l, pod, pvc_name, &attach, err);
                if (r == -EPERM) {
                        report(nc, l, "Refused", "AttachmentPodForeign", err && *err ? (*err)->msg : "refused", true);
                        stat_inc(nc, &nc->stats.refusals, 1);
                        return r;
                }
                if (r <= 0) {
                        if (r == 0) {
                                report(nc, l, "Waiting", "WaitingForAttachment",
                                       "waiting for the kubelet to publish the state volume on this node", false);
                                r = -EAGAIN;
                        }
                        return r;
                }
                published = pv ? published_path(nc, md(attach, "uid"), pv) : NULL;
                if (!published) {
                        report(nc, l, "Refused", "StateVolumeNotMounted",
                               "the state volume is not mounted on this node; swtpm is not started on scratch state",
                               true);
                        stat_inc(nc, &nc->stats.refusals, 1);
                        r = -EAGAIN;
                        return r;
                }
                r = bind_mount_in_namespace(pid, published, state_in_ns, err);
                if (r >= 0)
                        r = check_mount_in_namespace(pid, published, state_in_ns, err);
                if (r <= 0) {
                        _cleanup_free_ char *m = xasprintf("the state volume could not be mounted into the launcher "
                                                           "and verified: %s; swtpm is not started",
                                                           err && *err ? (*err)->msg : "not mounted");
                        report(nc, l, "Refused", "StateVolumeNotMounted", m, true);
                        stat_inc(nc, &nc->stats.refusals, 1);
                        if (r == 0)
                                r = -EIO;
                        return r;
                }
                host_state = xstrdup(published);
        } else {
                /* KubeVirt's non-persistent TPM: scratch state that lives and dies with
                 * the launcher. A private tmpfs, mounted into the launcher like a volume. */
                _cleanup_free_ char *scratch_parent = xasprintf("%s/scratch", nc->cfg->node.run_dir);
                _cleanup_free_ char *scratch = xasprintf("%s/%s", scratch_parent, l->pod_uid);
                mkdir(nc->cfg->node.run_dir, 0711);
                mkdir(scratch_parent, 0711);
                mkdir(scratch, 0700);
                if (is_mount_point(scratch, NULL) <= 0 &&
                    mount("vtpm-scratch", scratch, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4m,mode=0700") < 0)
                        return vt_error_errno(err, errno, "cannot mount scratch state for %s", l->key);
                r = bind_mount_in_namespace(pid, scratch, state_in_ns, err);
                if (r < 0)
                        return r;
                host_state = TAKE_PTR(scratch);
        }
        /* swtpm runs as the VM's own uid: the volume root and the state files
         * are that uid's, 0700/0600 (state from before, owned by the shared
         * swtpm user, changes hands here, before any swtpm reads it). */
        if (!l->sandbox_uid)
                l->sandbox_uid = choose_sandbox_uid(nc, l);
        if (!l->sandbox_uid) {
                report(nc, l, "Refused", "SwtpmUidUnavailable",
                       "every uid of node.swtpmUidBase/swtpmUidCount is taken by another VM on this node", true);
                return -EAGAIN;
        }
        uid_t vm_uid_n = l->sandbox_uid;
        r = tpm_state_dir_prepare_ids(host_state, vm_uid_n, (gid_t)vm_uid_n, err);
        if (r < 0)
                return r;
        /* The VM's control-socket directory: a small tmpfs of the node's, the
         * VM's uid's; bound into swtpm's sandbox (writable) and into the
         * launcher (read-only: QEMU connects, nothing can be planted) at
         * node.swtpmSocketDir. The bind refuses symlinks on the launcher's side. */
        _cleanup_free_ char *ctrl_parent = xasprintf("%s/ctrl", nc->cfg->node.run_dir);
        _cleanup_free_ char *host_ctrl = xasprintf("%s/%s", ctrl_parent, l->pod_uid);
        mkdir(nc->cfg->node.run_dir, 0711);
        mkdir(ctrl_parent, 0711);
        (void)mkdir(host_ctrl, 0700);
        if (is_mount_point(host_ctrl, NULL) <= 0) {
                _cleanup_free_ char *opts = xasprintf("size=64k,nr_inodes=16,mode=0711,uid=%u,gid=%u", (unsigned)vm_uid_n,
                                                      (unsigned)vm_uid_n);
                if (mount("vtpm-ctrl", host_ctrl, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
                        return vt_error_errno(err, errno, "cannot mount the control-socket directory for %s", l->key);
        }
        r = bind_mount_in_namespace_ro(pid, host_ctrl, nc->cfg->node.swtpm_socket_dir, err);
        if (r < 0)
                return vt_error_prefix(err, "the control-socket directory in the launcher: ");
        free(l->ctrl_path);
        l->ctrl_path = xasprintf("%s/%s.sock", nc->cfg->node.swtpm_socket_dir, l->vm_uid);
        _cleanup_free_ char *run_dir = xasprintf("%s/swtpm/%s", nc->cfg->node.run_dir, l->pod_uid);
        _cleanup_free_ char *run_parent = xasprintf("%s/swtpm", nc->cfg->node.run_dir);
        _cleanup_free_ char *stage = xasprintf("%s/sandbox", nc->cfg->node.run_dir);
        mkdir(nc->cfg->node.run_dir, 0711);
        chmod(nc->cfg->node.run_dir, 0711);
        mkdir(run_parent, 0711);
        mkdir(run_dir, 0700);
        mkdir(stage, 0700);
        /* The tools work on a private bind mount of the state under our run
         * dir, bound into their sandboxes at that same path. */
        _cleanup_free_ char *work_parent = xasprintf("%s/work", nc->cfg->node.run_dir);
        _cleanup_free_ char *work = xasprintf("%s/%s", work_parent, l->pod_uid);
        mkdir(work_parent, 0711);
        mkdir(work, 0700);
        if (is_mount_point(work, NULL) <= 0 && mount(host_state, work, NULL, MS_BIND, NULL) < 0)
                return vt_error_errno(err, errno, "cannot bind the state directory for provisioning");

        /* swtpm belongs to the launcher's pod: created in its cgroups, so an
         * agent upgrade (its container's cgroup killed) never stops a VM's
         * TPM. Where they cannot be reached, no swtpm at all. */
        _cleanup_(proc_cgroups_done) proc_cgroups cg = PROC_CGROUPS_INIT;
        _cleanup_error_ vt_error *cgerr = NULL;
        r = proc_cgroups_open(pid, &cg, &cgerr);
        if (r < 0) {
                _cleanup_free_ char *m = xasprintf("swtpm cannot join the launcher's cgroup (%s); it is not started: in "
                                                   "the agent's cgroup, replacing the agent would stop the VM's TPM",
                                                   cgerr ? cgerr->msg : strerror(-r));
                report(nc, l, "Refused", "SwtpmCgroupUnavailable", m, true);
                stat_inc(nc, &nc->stats.refusals, 1);
                return r;
        }
        /* The state key: unwrapped from the header on the volume, or made and
         * wrapped there before the first state exists; requested rotations and
         * the encryption of old unencrypted state happen here, before swtpm
         * starts. Only pipes carry the key on. */
        _cleanup_(secmem_freep) secmem *dek = NULL;
        swtpm_spec spec = {.tpm2 = strcmp(version, "2.0") == 0, .state_dir = state_in_ns,
                           .ctrl_path = l->ctrl_path, .ctrl_dir = nc->cfg->node.swtpm_socket_dir,
                           .host_state_dir = host_state, .host_ctrl_dir = host_ctrl,
                           .user = nc->cfg->node.swtpm_user, .setup_uid = nc->swtpm_uid, .setup_gid = nc->swtpm_gid,
                           .uid = vm_uid_n, .gid = (gid_t)vm_uid_n, .stage_dir = stage, .run_dir = run_dir};
        tpm_sandbox work_sb;
        swtpm_work_sandbox(&spec, work, &work_sb);
        r = keys_at_start(nc, l, ts, work, strcmp(version, "2.0") == 0, &work_sb, &dek, err);
        if (r < 0)
                return r;
        l->encrypted = dek != NULL;
        spec.key = dek ? dek->data : NULL;
        spec.key_len = dek ? dek->len : 0;
        usec_t t0 = now_monotonic();
        r = swtpm_provision(&spec, work, err);
        if (r < 0) {
                report(nc, l, "Failed", "ProvisionFailed", err && *err ? (*err)->msg : "swtpm_setup failed", true);
                return r;
        }
        if (r == 0) {
                stat_inc(nc, &nc->stats.provisions, 1);
                if (nc->metrics)
                        vt_histogram_observe(nc->metrics, "vtpm_agent_swtpm_provision_seconds",
                                             "First-boot provisioning (swtpm_setup with EK and certificates).", NULL,
                                             (double)(now_monotonic() - t0) / USEC_PER_SEC, vt_latency_buckets,
                                             vt_latency_buckets_n);
        } else {
                r = swtpm_probe(&spec, work, err);
                if (r < 0) {
                        _cleanup_free_ char *m = xasprintf("the TPM state cannot be loaded (%s); it is left untouched "
                                                           "and swtpm is not started",
                                                           err && *err ? (*err)->msg : "unreadable");
                        report(nc, l, "Refused", "StateUnreadable", m, true);
                        stat_inc(nc, &nc->stats.refusals, 1);
                        return r;
                }
        }
        (void)umount2(work, MNT_DETACH);
        /* Re-check right before start: the launcher may have gone meanwhile. */
        uint64_t again = 0;
        if (proc_start_time(pid, &again, NULL) < 0 || again != l->pid_start) {
                r = -EAGAIN;
                return r;
        }
        if (persistent && check_mount_in_namespace(pid, published, state_in_ns, NULL) != 1) {
                report(nc, l, "Refused", "StateVolumeNotMounted",
                       "the state volume is no longer mounted in the launcher; swtpm is not started", true);
                r = -EAGAIN;
                return r;
        }
        _cleanup_free_ char *me = lock_identity(nc, l);
        /* Starting takes a while: only with the lock renewed recently enough. */
        if (persistent && !state_lock_fresh(nc->locks, l->vm_uid, me, nc->lock_start_margin)) {
                r = -EAGAIN;
                return r;
        }
        spec.cgroups = &cg;
        t0 = now_monotonic();
        r = swtpm_start(&spec, &l->swtpm_pid, &l->swtpm_start, err);
        if (r < 0) {
                report(nc, l, "Failed", "SwtpmStartFailed", err && *err ? (*err)->msg : "swtpm did not start", true);
                return r;
        }
        if (persistent) {
                _cleanup_free_ char *via = ctrl_via(l);
                if (state_lock_attach_swtpm(nc->locks, l->vm_uid, me, l->swtpm_pid, l->swtpm_start, via) < 0) {
                        /* Lost while it started: it must not run on. */
                        (void)swtpm_stop(l->swtpm_pid, l->swtpm_start, via, NULL);
                        l->swtpm_pid = 0;
                        r = -EAGAIN;
                        return r;
                }
        }
        record_save(nc, l);
        stat_inc(nc, &nc->stats.starts, 1);
        stat_inc(nc, &nc->stats.swtpm_running, 1);
        if (nc->metrics)
                vt_histogram_observe(nc->metrics, "vtpm_agent_swtpm_start_seconds",
                                     "From start request to swtpm answering on its control channel.", NULL,
                                     (double)(now_monotonic() - t0) / USEC_PER_SEC, vt_latency_buckets,
                                     vt_latency_buckets_n);
        _cleanup_free_ char *m = xasprintf("vTPM %s (%s) started on node %s with %s%s state", version, model, nc->node,
                                           !l->encrypted ? "unencrypted " : "",
                                           persistent ? "persistent" : "ephemeral");
        report(nc, l, "Running", "VTPMStarted", m, false);
        return r;
}

static int reconcile(node_controller *nc, const char *key, vt_error **err) {
        json_t *pod = kube_informer_get(nc->pods, key);
        pthread_mutex_lock(&nc->lock);
        launcher *known = vt_hashmap_get(nc->launchers, key);
        pthread_mutex_unlock(&nc->lock);
        if (known && (!pod || pod_finished(pod) || (md(pod, "uid") && strcmp(known->pod_uid, md(pod, "uid")) != 0))) {
                teardown(nc, known);
                launcher_forget(nc, key);
                known = NULL;
        }
        if (!pod || pod_finished(pod)) {
                json_decref(pod);
                return 0;
        }
        launcher *l = launcher_get_or_new(nc, key, pod);
        int r = bring_up(nc, l, pod, err);
        json_decref(pod);
        return r;
}

/* ---- plumbing ---- */

static void enqueue(const char *key, json_t *obj, void *ud) {
        node_controller *nc = ud;
        kube_workqueue_add(nc->queue, key);
}
static void enqueue_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue(key, n, ud);
}

static json_t *trim_pod(json_t *o, void *ud) {
        json_t *out = json_object();
        json_t *m = json_object();
        json_t *omd = json_object_get(o, "metadata");
        const char *keep[] = {"name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp"};
        for (size_t i = 0; i < ELEMENTSOF(keep); i++)
                if (json_object_get(omd, keep[i]))
                        json_object_set(m, keep[i], json_object_get(omd, keep[i]));
        json_object_set_new(out, "metadata", m);
        json_t *status = launcher_trim_status(o);
        json_t *phase = json_object_get(json_object_get(o, "status"), "phase");
        if (phase)
                json_object_set(status, "phase", phase);
        json_object_set_new(out, "status", status);
        return out;
}

/* Attachment pods: only what ensure_attachment() reads, and the launcher
 * (their controlling owner) to wake when one changes. */
static json_t *trim_attachment(json_t *o, void *ud) {
        json_t *out = trim_pod(o, ud);
        json_object_set_new(out, "spec", attachment_trim_spec(o));
        json_t *owners = json_object_get(json_object_get(o, "metadata"), "ownerReferences");
        json_t *md_out = json_object_get(out, "metadata");
        size_t i;
        json_t *ref;
        json_array_foreach(owners, i, ref) {
                if (json_is_true(json_object_get(ref, "controller")) && json_object_get(ref, "name")) {
                        json_object_set_new(md_out, "owner", json_incref(json_object_get(ref, "name")));
                        break;
                }
        }
        return out;
}

static void attachment_changed(const char *key, json_t *obj, void *ud) {
        node_controller *nc = ud;
        const char *ns = md(obj, "namespace"), *owner = md(obj, "owner");
        if (!ns || !owner)
                return;
        _cleanup_free_ char *launcher_key = xasprintf("%s/%s", ns, owner);
        kube_workqueue_add(nc->queue, launcher_key);
}
static void attachment_updated(const char *key, json_t *o, json_t *n, void *ud) {
        attachment_changed(key, n, ud);
}

static void *worker(void *ud) {
        node_controller *nc = ud;
        for (;;) {
                _cleanup_free_ char *key = kube_workqueue_get(nc->queue);
                if (!key)
                        break;
                _cleanup_error_ vt_error *err = NULL;
                int r = reconcile(nc, key, &err);
                if (r == -EAGAIN)
                        /* Waiting on the launcher's socket or the kubelet: look again soon. */
                        kube_workqueue_add_after(nc->queue, key, 250 * USEC_PER_MSEC);
                else if (r == -EINPROGRESS)
                        /* Waiting for a state lock to expire (or be released). */
                        kube_workqueue_add_after(nc->queue, key, USEC_PER_SEC);
                else if (r == -EHOSTDOWN && kube_workqueue_peek_backoff(nc->queue, key) > KEY_RETRY_MAX_USEC)
                        /* KeyProviderUnavailable (reported already): back off, but not past the ceiling. */
                        kube_workqueue_add_after(nc->queue, key, KEY_RETRY_MAX_USEC);
                else if (r < 0) {
                        log_kv(LOG_LEVEL_WARN, "launcher reconcile failed; will retry", "launcher", key, "error",
                               err ? err->msg : strerror(-r), NULL);
                        kube_workqueue_add_rate_limited(nc->queue, key);
                } else
                        kube_workqueue_forget(nc->queue, key);
                kube_workqueue_done(nc->queue, key);
        }
        return NULL;
}

static bool launcher_or_swtpm_gone(const launcher *l, const void *unused) {
        bool gone = l->pid > 0 && (proc_start_time(l->pid, &(uint64_t){0}, NULL) < 0);
        bool tpm_gone = l->swtpm_pid > 0 && !swtpm_alive(l->swtpm_pid, l->swtpm_start);
        return gone || tpm_gone;
}

/* Launchers can die without their pod changing (the process exits first):
 * look at every known one now and then. No API requests: reconcile of a
 * running launcher only checks /proc. */
static void *ticker(void *ud) {
        node_controller *nc = ud;
        while (!atomic_load(&nc->stopping)) {
                for (usec_t slept = 0; slept < TICK_USEC && !atomic_load(&nc->stopping); slept += 100 * USEC_PER_MSEC)
                        sleep_usec(100 * USEC_PER_MSEC);
                wake_launchers(nc, launcher_or_swtpm_gone, NULL);
        }
        return NULL;
}

static void label_node(node_controller *nc) {
        bool t12 = false, t2 = false;
        _cleanup_error_ vt_error *err = NULL;
        if (nc->cfg->node.enabled && swtpm_capabilities(&t12, &t2, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot read swtpm's capabilities; the node offers no vTPM", "error", err->msg,
                       NULL);
        json_t *patch = json_pack("{s:{s:{s:s, s:s, s:s}}}", "metadata", "labels", "vtpm-agent.io/enabled",
                                  nc->cfg->node.enabled ? "true" : "false", "vtpm-agent.io/tpm-1.2",
                                  t12 ? "true" : "false", "vtpm-agent.io/tpm-2.0", t2 ? "true" : "false");
        _cleanup_free_ char *path = kube_path(&res_node, NULL, nc->node, NULL);
        _cleanup_error_ vt_error *perr = NULL;
        if (kube_patch(nc->client, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, &perr) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot label the node with its TPM capabilities", "node", nc->node, "error",
                       perr->msg, NULL);
        json_decref(patch);
}

int node_controller_new(kube_client *c, const agent_config *cfg, vt_metrics *metrics, node_controller **ret,
                        vt_error **err) {
        if (!cfg->node_name || !*cfg->node_name)
                return vt_error_set(err, EINVAL, "the node controller needs this node's name: set NODE_NAME (the "
                                                 "DaemonSet passes spec.nodeName) or nodeName in the configuration");
        struct passwd *pw = getpwnam(cfg->node.swtpm_user);
        if (!pw)
                return vt_error_set(err, ENOENT, "node.swtpmUser \"%s\" does not exist on this node", cfg->node.swtpm_user);
        node_controller *nc = xnew(node_controller, 1);
        nc->client = c;
        nc->cfg = cfg;
        nc->metrics = metrics;
        nc->node = xstrdup(cfg->node_name);
        nc->swtpm_uid = pw->pw_uid;
        nc->swtpm_gid = pw->pw_gid;
        pthread_mutex_init(&nc->lock, NULL);
        nc->launchers = vt_hashmap_new(launcher_free);
        kube_workqueue_options qo = {.base_delay = 500 * USEC_PER_MSEC, .max_delay = 60 * USEC_PER_SEC,
                                     .disable_bucket = true};
        nc->queue = kube_workqueue_new(&qo);
        _cleanup_free_ char *instance = xasprintf("vtpm-agent-%s", nc->node);
        nc->recorder = kube_recorder_new(c, "vtpm-agent.io/node-controller", instance);
        int kr = keymgr_new(c, cfg, &nc->keys, err);
        if (kr < 0) {
                node_controller_free(nc);
                return kr;
        }
        state_lease_timing lt;
        agent_config_state_lease_timing(cfg, &lt);
        state_lock_options lo = {.namespace = cfg->namespace, .run_dir = cfg->node.run_dir,
                                 .duration = (usec_t)lt.duration * USEC_PER_SEC,
                                 .renew_deadline = (usec_t)lt.renew_deadline * USEC_PER_SEC,
                                 .retry_period = (usec_t)lt.retry_period * USEC_PER_SEC,
                                 .fence = fence_swtpm, .userdata = nc};
        nc->lock_start_margin = lo.renew_deadline / 2;
        kr = state_lock_new(c, &lo, &nc->locks, err);
        if (kr < 0) {
                node_controller_free(nc);
                return kr;
        }
        _cleanup_free_ char *fs = xasprintf("spec.nodeName=%s", nc->node);
        kube_informer_options o = {.label_selector = "kubevirt.io=virt-launcher", .field_selector = fs};
        kube_informer_handlers h = {enqueue, enqueue_update, enqueue, trim_pod, NULL, nc};
        kube_informer_new(c, &res_pod, &o, &h, &nc->pods);
        kube_informer_options to = {0};
        kube_informer_handlers th = {ts_added, ts_updated, ts_deleted, ts_trim, NULL, nc};
        kube_informer_new(c, &res_tpmstate, &to, &th, &nc->tpmstates);
        kube_informer_options ao = {.label_selector = LABEL_ATTACHMENT_FOR, .field_selector = fs};
        kube_informer_handlers ah = {attachment_changed, attachment_updated, attachment_changed, trim_attachment,
                                     NULL, nc};
        kube_informer_new(c, &res_pod, &ao, &ah, &nc->attachments);
        *ret = nc;
        return 0;
}

int node_controller_start(node_controller *nc, vt_error **err) {
        records_load(nc);
        label_node(nc);
        int r = kube_informer_start(nc->pods, err);
        if (r >= 0)
                r = kube_informer_start(nc->tpmstates, err);
        if (r >= 0)
                r = kube_informer_start(nc->attachments, err);
        if (r < 0)
                return r;
        if (kube_informer_wait_synced(nc->pods, 300 * USEC_PER_SEC) < 0)
                return vt_error_set(err, ETIMEDOUT, "the node controller's launcher cache did not fill in 5 minutes");
        /* Adopt: records of launchers from before a restart. */
        pthread_mutex_lock(&nc->lock);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(nc->launchers, &it, &k, &v);) {
                launcher *l = v;
                if (l->swtpm_pid > 0 && swtpm_alive(l->swtpm_pid, l->swtpm_start)) {
                        nc->stats.adoptions++;
                        nc->stats.swtpm_running++;
                        if (l->persistent && l->vm_uid && *l->vm_uid && !l->fenced) {
                                /* Its lock is renewed from now on, with the deadline the
                                 * previous agent had. */
                                _cleanup_free_ char *me = lock_identity(nc, l);
                                _cleanup_free_ char *via = ctrl_via(l);
                                state_lock_adopt(nc->locks, l->vm_uid, me, l->swtpm_pid, l->swtpm_start, via);
                        }
                        log_kv(LOG_LEVEL_INFO, "adopted a running swtpm", "vm", l->vm_name, "launcher", l->key, NULL);
                }
                kube_workqueue_add(nc->queue, k);
        }
        pthread_mutex_unlock(&nc->lock);
        if (!nc->cfg->node.enabled)
                return 0;
        r = state_lock_start(nc->locks, err);
        if (r < 0)
                return r;
        nc->n_workers = nc->cfg->node.max_concurrent_starts;
        nc->workers = xnew(pthread_t, (size_t)nc->n_workers);
        for (int i = 0; i < nc->n_workers; i++)
                pthread_create(&nc->workers[i], NULL, worker, nc);
        pthread_create(&nc->ticker, NULL, ticker, nc);
        nc->ticker_started = true;
        /* A launcher's socket appears in its pod's own directory: the 250 ms
         * retries of a launcher not yet listening find it. */
        return 0;
}

bool node_controller_synced(node_controller *nc) {
        return kube_informer_has_synced(nc->pods);
}

void node_controller_stop(node_controller *nc) {
        if (!nc)
                return;
        atomic_store(&nc->stopping, true);
        kube_workqueue_shutdown(nc->queue);
        for (int i = 0; nc->workers && i < nc->n_workers; i++)
                pthread_join(nc->workers[i], NULL);
        free(nc->workers);
        nc->workers = NULL;
        nc->n_workers = 0;
        if (nc->ticker_started) {
                pthread_join(nc->ticker, NULL);
                nc->ticker_started = false;
        }
        /* The leases stay held: their swtpm run on, and the next agent renews them. */
        state_lock_free(nc->locks);
        nc->locks = NULL;
        kube_informer_stop(nc->pods);
        kube_informer_stop(nc->tpmstates);
        kube_informer_stop(nc->attachments);
}

void node_controller_free(node_controller *nc) {
        if (!nc)
                return;
        node_controller_stop(nc);
        kube_informer_free(nc->pods);
        kube_informer_free(nc->tpmstates);
        kube_informer_free(nc->attachments);
        kube_recorder_free(nc->recorder);
        keymgr_free(nc->keys);
        kube_workqueue_free(nc->queue);
        vt_hashmap_free(nc->launchers);
        pthread_mutex_destroy(&nc->lock);
        free(nc->node);
        free(nc);
}

void node_controller_get_stats(node_controller *nc, node_controller_stats *ret) {
        pthread_mutex_lock(&nc->lock);
        *ret = nc->stats;
        pthread_mutex_unlock(&nc->lock);
}
