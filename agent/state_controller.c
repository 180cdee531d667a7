/* SPDX-License-Identifier: Apache-2.0 */
/* Level-triggered and idempotent: every reconcile reads the caches, computes
 * what should be, and writes only what differs. A steady cluster costs no
 * writes, including after a restart. Never deletes or adopts a PVC. */
#include "state_controller.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/hashmap.h"
#include "base/log.h"
#include "base/quantity.h"
#include "kube/events.h"
#include "kube/informer.h"
#include "kube/lease.h"
#include "kube/workqueue.h"
#include "storageclass.h"
#include "preference.h"
#include "vmspec.h"
#include "resources.h"

#define FIELD_MANAGER "vtpm-agent"
#define CONTROLLER_NAME "vtpm-agent.io/state-controller"

enum { INF_VM, INF_PVC, INF_SC, INF_KUBEVIRT, INF_HCO, INF_POD, INF_TPMSTATE, INF_CPREF, INF_NSPREF, INF_REVISION,
       INF_SPROFILE, _INF_MAX };

struct state_controller {
        kube_client *client;
        const agent_config *cfg;
        char *identity;
        kube_informer *inf[_INF_MAX];
        kube_workqueue *queue;
        kube_recorder *recorder;
        kube_elector *elector;
        pthread_t *workers;
        int n_workers;
        atomic_bool leader;
        /* TPMStates as our own last write returned them, until the informer
         * has caught up: the next reconcile of the same VM (often triggered
         * by that very write) must not judge from an older cached status, or
         * it re-sends the events the status dedups. ns/vm -> json_t. */
        pthread_mutex_t written_lock;
        vt_hashmap *written;
        pthread_mutex_t stats_lock;
        state_controller_stats stats;
};

static void bump(state_controller *sc, uint64_t *field) {
        pthread_mutex_lock(&sc->stats_lock);
        (*field)++;
        pthread_mutex_unlock(&sc->stats_lock);
}

/* ---- informer handlers: map every change to the VM keys it concerns ---- */

static void enqueue_key(state_controller *sc, const char *key) {
        kube_workqueue_add(sc->queue, key);
}

static void on_vm(const char *key, json_t *obj, void *ud) {
        enqueue_key(ud, key);
}
static void on_vm_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue_key(ud, key);
}

static void enqueue_all_vm(const char *key, json_t *obj, void *ud) {
        enqueue_key(ud, key);
}

/* A cluster-wide input (StorageClass, KubeVirt, HyperConverged) changed:
 * every VM may resolve differently now. Reconciles of unchanged VMs write
 * nothing, so this costs CPU, not API requests. */
static void enqueue_all(state_controller *sc) {
        kube_informer_foreach(sc->inf[INF_VM], enqueue_all_vm, sc);
}
static void on_global(const char *key, json_t *obj, void *ud) {
        enqueue_all(ud);
}
static void on_global_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue_all(ud);
}

/* PVC and TPMState keys map to their VM: by controlling owner when it is a
 * VM, else by the PVC naming rule (a foreign PVC in the way). */
static void enqueue_owner_vm(state_controller *sc, json_t *obj, bool strip_prefix) {
        const char *ns = json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
        const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
        json_t *ref = controller_ref(obj);
        const char *vm = NULL;
        if (ref && json_string_value(json_object_get(ref, "kind")) &&
            strcmp(json_string_value(json_object_get(ref, "kind")), "VirtualMachine") == 0)
                vm = json_string_value(json_object_get(ref, "name"));
        else if (name && strip_prefix && strncmp(name, STATE_PVC_PREFIX, strlen(STATE_PVC_PREFIX)) == 0)
                vm = name + strlen(STATE_PVC_PREFIX);
        else if (name && !strip_prefix)
                vm = name;
        if (!ns || !vm)
                return;
        _cleanup_free_ char *key = xasprintf("%s/%s", ns, vm);
        enqueue_key(sc, key);
}
static void on_pvc(const char *key, json_t *obj, void *ud) {
        enqueue_owner_vm(ud, obj, true);
}
static void on_pvc_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue_owner_vm(ud, n, true);
}
static void on_tpmstate(const char *key, json_t *obj, void *ud) {
        enqueue_owner_vm(ud, obj, false);
}
static void on_tpmstate_update(const char *key, json_t *o, json_t *n, void *ud) {
        enqueue_owner_vm(ud, n, false);
}
static void on_pod(const char *key, json_t *obj, void *ud) {
        const char *ns = json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
        const char *vm = json_string_value(
                json_object_get(json_object_get(json_object_get(obj, "metadata"), "labels"), "vm.kubevirt.io/name"));
        if (ns && vm) {
                _cleanup_free_ char *k = xasprintf("%s/%s", ns, vm);
                enqueue_key(ud, k);
        }
}
static void on_pod_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_pod(key, n, ud);
}

/* A preference changed: requeue the VMs that name it without a frozen
 * revision (those with one keep what KubeVirt froze). A scan of the cache,
 * never a request per VM; preferences change rarely. */
struct pref_match {
        state_controller *sc;
        const char *key;
};
static void enqueue_if_uses(const char *vm_key, json_t *vm, void *ud) {
        struct pref_match *m = ud;
        _cleanup_free_ char *k = vm_live_preference_key(vm);
        if (k && strcmp(k, m->key) == 0)
                kube_workqueue_add(m->sc->queue, vm_key);
}
static void on_pref_common(json_t *obj, const char *kind, void *ud) {
        state_controller *sc = ud;
        json_t *md = json_object_get(obj, "metadata");
        _cleanup_free_ char *key = preference_key(kind, json_string_value(json_object_get(md, "namespace")),
                                                  json_string_value(json_object_get(md, "name")));
        struct pref_match m = {sc, key};
        kube_informer_foreach(sc->inf[INF_VM], enqueue_if_uses, &m);
}
static void on_cpref(const char *key, json_t *obj, void *ud) {
        on_pref_common(obj, "VirtualMachineClusterPreference", ud);
}
static void on_cpref_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_pref_common(n, "VirtualMachineClusterPreference", ud);
}
static void on_nspref(const char *key, json_t *obj, void *ud) {
        on_pref_common(obj, "VirtualMachinePreference", ud);
}
static void on_nspref_update(const char *key, json_t *o, json_t *n, void *ud) {
        on_pref_common(n, "VirtualMachinePreference", ud);
}

/* Keep only preferredTPM of preferences and of frozen revisions. */
static json_t *trim_preferred_tpm(json_t *o, const char *const *path, size_t n) {
        json_t *out = metadata_trim(o, NULL);
        json_object_del(json_object_get(out, "metadata"), "annotations");
        json_object_del(json_object_get(out, "metadata"), "ownerReferences");
        json_t *v = o;
        for (size_t i = 0; v && i < n; i++)
                v = json_object_get(v, path[i]);
        json_t *spec = v ? json_pack("{s:{s:O}}", "devices", "preferredTPM", v) : json_object();
        if (n == 4) /* a revision keeps its data even without preferredTPM: frozen means frozen */
                json_object_set_new(out, "data", json_pack("{s:o}", "spec", spec));
        else
                json_object_set_new(out, "spec", spec);
        return out;
}
static json_t *trim_pref(json_t *o, void *ud) {
        static const char *const path[] = {"spec", "devices", "preferredTPM"};
        return trim_preferred_tpm(o, path, 3);
}
static json_t *trim_revision(json_t *o, void *ud) {
        static const char *const path[] = {"data", "spec", "devices", "preferredTPM"};
        return trim_preferred_tpm(o, path, 4);
}
static json_t *trim_sprofile(json_t *o, void *ud) {
        json_t *out = metadata_trim(o, NULL);
        json_t *sets = json_object_get(json_object_get(o, "status"), "claimPropertySets");
        if (sets)
                json_object_set_new(out, "status", json_pack("{s:O}", "claimPropertySets", sets));
        return out;
}

static json_t *lookup_preference(const char *kind, const char *namespace, const char *name, void *ud) {
        state_controller *sc = ud;
        if (namespace) {
                _cleanup_free_ char *k = xasprintf("%s/%s", namespace, name);
                return kube_informer_get(sc->inf[INF_NSPREF], k);
        }
        return kube_informer_get(sc->inf[INF_CPREF], name);
}
static json_t *lookup_revision(const char *namespace, const char *name, void *ud) {
        state_controller *sc = ud;
        _cleanup_free_ char *k = xasprintf("%s/%s", namespace ? namespace : "", name);
        return kube_informer_get(sc->inf[INF_REVISION], k);
}

/* CDI's StorageProfile for the class, when there is one, says which access
 * and volume modes the class really offers. */
static bool profile_lacks_rwx_fs(state_controller *sc, const char *cls) {
        json_t *p = kube_informer_get(sc->inf[INF_SPROFILE], cls);
        if (!p)
                return false;
        json_t *sets = json_object_get(json_object_get(p, "status"), "claimPropertySets");
        bool found = false;
        size_t i;
        json_t *set;
        json_array_foreach(sets, i, set) {
                const char *vm = json_string_value(json_object_get(set, "volumeMode"));
                size_t j;
                json_t *mode;
                json_array_foreach(json_object_get(set, "accessModes"), j, mode) if (json_string_value(mode) &&
                                                                                     strcmp(json_string_value(mode),
                                                                                            "ReadWriteMany") == 0 &&
                                                                                     (!vm || strcmp(vm, "Filesystem") == 0))
                        found = true;
        }
        json_decref(p);
        return !found;
}

static void on_informer_error(const vt_error *err, void *ud) {
        log_kv(LOG_LEVEL_WARN, "list/watch failed; retrying with backoff", "error", err->msg, NULL);
}

/* ---- transforms: cache only what reconcile reads ---- */

static json_t *trim_vm(json_t *o, void *ud) {
        return vm_trim(o);
}
static json_t *trim_pvc(json_t *o, void *ud) {
        return pvc_trim(o);
}
static json_t *trim_sc(json_t *o, void *ud) {
        static const char *const keep[] = {"provisioner", NULL};
        return metadata_trim(o, keep);
}
static json_t *trim_spec(json_t *o, void *ud) {
        static const char *const keep[] = {"spec", NULL};
        return metadata_trim(o, keep);
}
static json_t *trim_pod(json_t *o, void *ud) {
        json_t *out = metadata_trim(o, NULL);
        json_t *md = json_object_get(out, "metadata");
        json_object_del(md, "annotations");
        json_object_del(md, "ownerReferences");
        json_t *phase = json_object_get(json_object_get(o, "status"), "phase");
        json_t *node = json_object_get(json_object_get(o, "spec"), "nodeName");
        if (phase)
                json_object_set(out, "phase", phase);
        if (node)
                json_object_set(out, "nodeName", node);
        return out;
}

/* ---- reading the caches ---- */

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

struct first_class {
        const char *path[3];
        char *value;
        char *key;
};
static void find_class(const char *key, json_t *obj, void *ud) {
        struct first_class *f = ud;
        json_t *n = json_object_get(obj, "spec");
        for (size_t i = 0; n && i < ELEMENTSOF(f->path) && f->path[i]; i++)
                n = json_object_get(n, f->path[i]);
        const char *v = json_string_value(n);
        /* Several CRs: the alphabetically first key decides, deterministically
         * (the cache is a hash map: its iteration order is not). */
        if (v && *v && (!f->key || strcmp(key, f->key) < 0)) {
                free(f->value);
                free(f->key);
                f->value = xstrdup(v);
                f->key = xstrdup(key);
        }
}

struct sc_list {
        sc_info *v;
        size_t n, alloc;
};
static void collect_sc(const char *key, json_t *obj, void *ud) {
        struct sc_list *l = ud;
        json_t *ann = json_object_get(json_object_get(obj, "metadata"), "annotations");
        const char *d = json_string_value(json_object_get(ann, "storageclass.kubernetes.io/is-default-class"));
        const char *vd = json_string_value(json_object_get(ann, "storageclass.kubevirt.io/is-default-virt-class"));
        l->v = xgrow(l->v, &l->alloc, l->n + 1, sizeof(sc_info));
        l->v[l->n++] = (sc_info){xstrdup(md_str(obj, "name")), json_string_value(json_object_get(obj, "provisioner"))
                                                                       ? xstrdup(json_string_value(json_object_get(obj, "provisioner")))
                                                                       : NULL,
                                 d && strcmp(d, "true") == 0, vd && strcmp(vd, "true") == 0};
}

static void choose_class(state_controller *sc, sc_choice *ret) {
        struct first_class kv = {{"configuration", "vmStateStorageClass", NULL}, NULL};
        struct first_class hco = {{"vmStateStorageClass", NULL, NULL}, NULL};
        kube_informer_foreach(sc->inf[INF_KUBEVIRT], find_class, &kv);
        kube_informer_foreach(sc->inf[INF_HCO], find_class, &hco);
        struct sc_list l = {0};
        kube_informer_foreach(sc->inf[INF_SC], collect_sc, &l);
        resolve_storage_class(sc->cfg->state.storage_class, kv.value, hco.value, l.v, l.n, ret);
        for (size_t i = 0; i < l.n; i++) {
                free((char *)l.v[i].name);
                free((char *)l.v[i].provisioner);
        }
        free(l.v);
        free(kv.value);
        free(kv.key);
        free(hco.value);
        free(hco.key);
}

/* The VM's current launcher pod (not finished), or NULL. New reference. */
static json_t *find_launcher(state_controller *sc, const char *ns, const char *vm) {
        char **keys = NULL;
        size_t n = kube_informer_keys_by_label(sc->inf[INF_POD], vm, &keys);
        json_t *found = NULL;
        for (size_t i = 0; i < n; i++) {
                json_t *p = kube_informer_get(sc->inf[INF_POD], keys[i]);
                const char *pns = md_str(p, "namespace");
                const char *phase = json_string_value(json_object_get(p, "phase"));
                bool live = !phase || (strcmp(phase, "Succeeded") != 0 && strcmp(phase, "Failed") != 0);
                if (!found && pns && strcmp(pns, ns) == 0 && live && !json_object_get(json_object_get(p, "metadata"), "deletionTimestamp"))
                        found = json_incref(p);
                json_decref(p);
                free(keys[i]);
        }
        free(keys);
        return found;
}

/* ---- desired state ---- */

typedef struct desired {
        const char *phase;
        const char *ready_reason; /* Ready condition */
        bool ready;
        char *message;
        const char *event_reason; /* a Warning to emit when this reason is new for this generation */
        char *event_note;
} desired;

static void desired_done(desired *d) {
        free(d->message);
        free(d->event_note);
}

static json_t *condition(const char *type, bool status, const char *reason, const char *message, json_t *old_conditions,
                         json_int_t generation) {
        char now[40];
        format_rfc3339(now_realtime(), now);
        const char *st = status ? "True" : "False";
        const char *ltt = now;
        size_t i;
        json_t *c;
        json_array_foreach(old_conditions, i, c) {
                const char *t = json_string_value(json_object_get(c, "type"));
                const char *s = json_string_value(json_object_get(c, "status"));
                const char *when = json_string_value(json_object_get(c, "lastTransitionTime"));
                if (t && strcmp(t, type) == 0 && s && strcmp(s, st) == 0 && when)
                        ltt = when; /* unchanged status keeps its transition time */
        }
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", type, "status", st, "reason", reason, "message",
                         message ? message : "", "lastTransitionTime", ltt, "observedGeneration", generation);
}

static bool pvc_controlled_by(json_t *pvc, const char *vm_uid) {
        json_t *ref = controller_ref(pvc);
        const char *uid = json_string_value(json_object_get(ref, "uid"));
        return uid && vm_uid && strcmp(uid, vm_uid) == 0;
}

static char *describe_owner(json_t *obj) {
        json_t *ref = controller_ref(obj);
        if (!ref)
                return xstrdup("no controlling owner");
        return xasprintf("controlled by %s %s (uid %s)", json_string_value(json_object_get(ref, "kind")) ?: "?",
                         json_string_value(json_object_get(ref, "name")) ?: "?",
                         json_string_value(json_object_get(ref, "uid")) ?: "?");
}

static bool has_string(json_t *arr, const char *s) {
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) if (json_string_value(v) && strcmp(json_string_value(v), s) == 0) return true;
        return false;
}

static int record(state_controller *sc, json_t *vm, enum kube_event_type type, const char *reason, const char *action,
                  const char *note) {
        kube_object_ref ref = {"kubevirt.io/v1", "VirtualMachine", md_str(vm, "namespace"), md_str(vm, "name"),
                               md_str(vm, "uid")};
        _cleanup_error_ vt_error *err = NULL;
        int r = kube_record(sc->recorder, &ref, type, reason, action, note, &err);
        if (r < 0)
                log_kv(LOG_LEVEL_WARN, "cannot record event", "reason", reason, "error", err->msg, NULL);
        else
                bump(sc, &sc->stats.events);
        return r;
}

static json_t *owner_ref_to(json_t *vm) {
        return json_pack("[{s:s, s:s, s:s, s:s, s:b, s:b}]", "apiVersion", "kubevirt.io/v1", "kind", "VirtualMachine",
                         "name", md_str(vm, "name"), "uid", md_str(vm, "uid"), "controller", 1, "blockOwnerDeletion", 1);
}

/* Whether the VM still exists with this uid, asked of the API server rather
 * than the cache; only before re-creating a state PVC that went away (rare),
 * never on a new VM's first provisioning. An error counts as "there": the
 * create then goes ahead as before. */
static bool vm_still_there(state_controller *sc, const char *ns, const char *name, const char *uid) {
        _cleanup_free_ char *path = kube_path(&res_vm, ns, name, NULL);
        _cleanup_error_ vt_error *err = NULL;
        json_t *live = NULL;
        int r = kube_get(sc->client, path, &live, &err);
        if (r == -ENOENT)
                return false;
        if (r < 0)
                return true;
        const char *live_uid = md_str(live, "uid");
        bool same = live_uid && uid && strcmp(live_uid, uid) == 0 &&
                    !json_object_get(json_object_get(live, "metadata"), "deletionTimestamp");
        json_decref(live);
        return same;
}

static int create_pvc(state_controller *sc, json_t *vm, const char *pvc_name, const char *cls, vt_error **err) {
        const char *ns = md_str(vm, "namespace"), *name = md_str(vm, "name");
        _cleanup_free_ char *label = vm_label_value(name);
        _cleanup_free_ char *size = quantity_format(agent_config_size_for_class(sc->cfg, cls));
        json_t *pvc = json_pack(
                "{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}, s:{s:s}, s:o}, s:{s:[s], s:s, s:s, s:{s:{s:s}}}}", "apiVersion", "v1",
                "kind", "PersistentVolumeClaim", "metadata", "name", pvc_name, "namespace", ns, "labels",
                LABEL_MANAGED_BY, LABEL_MANAGER_VALUE, LABEL_VM, label, "annotations", ANNOTATION_VM_NAME, name,
                "ownerReferences", owner_ref_to(vm), "spec", "accessModes", "ReadWriteMany", "volumeMode", "Filesystem",
                "storageClassName", cls, "resources", "requests", "storage", size);
        _cleanup_free_ char *coll = kube_path(&res_pvc, ns, NULL, NULL);
        int r = kube_create(sc->client, coll, pvc, NULL, err);
        json_decref(pvc);
        if (r == 0)
                bump(sc, &sc->stats.pvcs_created);
        return r;
}

static void written_free(void *p) {
        json_decref(p);
}

/* TPMStates as cached and remembered: without managedFields, which were
 * most of their size (about 25 KB parsed, each). */
static json_t *trim_tpmstate(json_t *o, void *ud) {
        static const char *const keep[] = {"spec", "status", NULL};
        return metadata_trim(o, keep);
}

static void remember_written(state_controller *sc, const char *key, json_t *ts) {
        if (!ts)
                return;
        pthread_mutex_lock(&sc->written_lock);
        vt_hashmap_put(sc->written, key, trim_tpmstate(ts, NULL));
        pthread_mutex_unlock(&sc->written_lock);
}

static void forget_written(state_controller *sc, const char *key) {
        pthread_mutex_lock(&sc->written_lock);
        vt_hashmap_remove(sc->written, key);
        pthread_mutex_unlock(&sc->written_lock);
}

/* resourceVersions are opaque, but the API server's are etcd revisions:
 * compare them as numbers when both are, else only tell equal from not. */
static bool rv_at_least(const char *a, const char *b) {
        if (!a || !b)
                return false;
        char *ea = NULL, *eb = NULL;
        unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
        if (*a && *b && !*ea && !*eb)
                return x >= y;
        return strcmp(a, b) == 0;
}

/* The VM's TPMState as we know it best: the cache, unless our own last write
 * is newer than what the cache holds. New reference or NULL. */
static json_t *current_tpmstate(state_controller *sc, const char *key, const char *vm_uid) {
        json_t *cached = kube_informer_get(sc->inf[INF_TPMSTATE], key);
        pthread_mutex_lock(&sc->written_lock);
        json_t *w = vt_hashmap_get(sc->written, key);
        const char *wuid = w ? json_string_value(json_object_get(json_object_get(w, "spec"), "vmUID")) : NULL;
        bool use_written = w && wuid && vm_uid && strcmp(wuid, vm_uid) == 0;
        if (use_written && cached) {
                const char *cu = md_str(cached, "uid"), *wu = md_str(w, "uid");
                /* Same object and the cache has our write (or newer): done with the memo. */
                if (!cu || !wu || strcmp(cu, wu) != 0 ||
                    rv_at_least(md_str(cached, "resourceVersion"), md_str(w, "resourceVersion")))
                        use_written = false;
        }
        json_t *ret = use_written ? json_incref(w) : cached;
        if (!use_written && w)
                vt_hashmap_remove(sc->written, key);
        pthread_mutex_unlock(&sc->written_lock);
        if (use_written)
                json_decref(cached);
        return ret;
}

static int ensure_tpmstate(state_controller *sc, json_t *vm, json_t *current, json_t **ret_existing, vt_error **err) {
        const char *ns = md_str(vm, "namespace"), *name = md_str(vm, "name");
        _cleanup_free_ char *key = xasprintf("%s/%s", ns, name);
        if (current) {
                *ret_existing = json_incref(current);
                return 0;
        }
        _cleanup_free_ char *label = vm_label_value(name);
        json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}, s:o}, s:{s:s, s:s}}", "apiVersion",
                                "vtpm-agent.io/v1alpha1", "kind", "TPMState", "metadata", "name", name, "namespace", ns,
                                "labels", LABEL_MANAGED_BY, LABEL_MANAGER_VALUE, LABEL_VM, label, "ownerReferences",
                                owner_ref_to(vm), "spec", "vmName", name, "vmUID", md_str(vm, "uid"));
        _cleanup_free_ char *coll = kube_path(&res_tpmstate, ns, NULL, NULL);
        json_t *created = NULL;
        int r = kube_create(sc->client, coll, obj, &created, err);
        json_decref(obj);
        if (r == -EEXIST)
                return -EAGAIN; /* another replica, or a cache behind: look again soon */
        if (r < 0)
                return r;
        bump(sc, &sc->stats.tpmstates_created);
        remember_written(sc, key, created);
        *ret_existing = created;
        return 0;
}

/* A VM's first reconcile creates its PVC and its TPMState: independent
 * requests, sent at the same time (one round trip, not two; the burst of a
 * few thousand VMs keeps twice as many writes in flight). The status write
 * needs the TPMState, so it waits for both. */
struct ts_create {
        state_controller *sc;
        json_t *vm;
        json_t *ts;
        vt_error *err;
        int r;
};

static void *ts_create_thread(void *ud) {
        struct ts_create *t = ud;
        t->r = ensure_tpmstate(t->sc, t->vm, NULL, &t->ts, &t->err);
        return NULL;
}

/* Write status only when it differs from what is there. */
static int update_status(state_controller *sc, const char *key, json_t *ts, json_t *status, vt_error **err) {
        json_t *old = json_object_get(ts, "status");
        /* status.nodeState belongs to the node controllers: carry it over untouched. */
        json_t *node_state = json_object_get(old, "nodeState");
        if (node_state) {
                json_object_set(status, "nodeState", node_state);
                /* Whether the state is encrypted at rest is known where swtpm runs. */
                json_t *enc = json_object_get(node_state, "encrypted");
                if (json_is_boolean(enc))
                        json_object_set(status, "encrypted", enc);
        }
        /* status.keys too (key rotation reports, written where swtpm runs). */
        json_t *keys = json_object_get(old, "keys");
        if (keys)
                json_object_set(status, "keys", keys);
        if (old && json_equal(old, status))
                return 0;
        /* Merge patch: fields we no longer set must be removed explicitly. */
        json_t *st = json_deep_copy(status);
        const char *k;
        json_t *v;
        json_object_foreach(old, k, v) if (!json_object_get(st, k)) json_object_set_new(st, k, json_null());
        json_t *patch = json_pack("{s:o}", "status", st);
        _cleanup_free_ char *path = kube_path(&res_tpmstate, md_str(ts, "namespace"), md_str(ts, "name"), "status");
        json_t *updated = NULL;
        int r = kube_patch(sc->client, path, KUBE_PATCH_MERGE, patch, NULL, false, &updated, err);
        json_decref(patch);
        if (r == 0) {
                bump(sc, &sc->stats.status_updates);
                remember_written(sc, key, updated);
        }
        json_decref(updated);
        return r;
}

static json_int_t vm_generation(json_t *vm) {
        return json_integer_value(json_object_get(json_object_get(vm, "metadata"), "generation"));
}

/* Was this Ready reason already reported for this generation? Then no new event. */
static bool already_reported(json_t *old_status, const char *reason, json_int_t gen) {
        json_t *conds = json_object_get(old_status, "conditions");
        size_t i;
        json_t *c;
        json_array_foreach(conds, i, c) {
                const char *t = json_string_value(json_object_get(c, "type"));
                const char *r = json_string_value(json_object_get(c, "reason"));
                if (t && strcmp(t, "Ready") == 0 && r && strcmp(r, reason) == 0 &&
                    json_integer_value(json_object_get(c, "observedGeneration")) == gen)
                        return true;
        }
        return false;
}

static int reconcile(state_controller *sc, const char *key, vt_error **err) {
        json_t *vm = kube_informer_get(sc->inf[INF_VM], key);
        if (!vm) {
                forget_written(sc, key);
                return 0; /* deleted: the garbage collector removes PVC and TPMState through ownerReferences */
        }
        int r = 0;
        json_t *pvc = NULL, *launcher = NULL, *ts = NULL, *status = NULL, *cached_ts = NULL;
        _cleanup_free_ char *pvc_name = NULL, *pvc_key = NULL, *tskey = NULL;
        sc_choice choice = {0};
        desired d = {0};
        /* The VM's own devices.tpm, else its preference (frozen revision first). */
        preference_lookup lookup = {lookup_preference, lookup_revision, sc};
        effective_tpm eff;
        vm_effective_tpm(vm, &lookup, &eff);
        tpm_intent intent = eff.intent;
        eff.intent = (tpm_intent){0};
        if (!intent.invalid && intent.source == TPM_SOURCE_PREFERENCE && intent.has_tpm)
                intent.invalid = vm_tpm_annotations_invalid(vm);
        if (json_object_get(json_object_get(vm, "metadata"), "deletionTimestamp"))
                goto out;

        const char *ns = md_str(vm, "namespace"), *name = md_str(vm, "name"), *uid = md_str(vm, "uid");
        json_int_t gen = vm_generation(vm);
        pvc_name = state_pvc_name(name);
        pvc_key = xasprintf("%s/%s", ns, pvc_name);
        pvc = kube_informer_get(sc->inf[INF_PVC], pvc_key);
        bool pvc_ours = pvc && pvc_controlled_by(pvc, uid);
        tskey = xasprintf("%s/%s", ns, name);
        cached_ts = current_tpmstate(sc, tskey, uid);
        json_t *old_status = json_object_get(cached_ts, "status");
        const char *storage_class = NULL, *class_source = NULL;

        if (eff.missing) {
                d = (desired){"Error", "PreferenceNotFound", false,
                              xasprintf("%s; the TPM it may ask for is unknown until it exists", eff.missing),
                              "PreferenceNotFound",
                              xasprintf("%s: if it asks for a persistent TPM (Windows preferences do), the VM's state "
                                        "volume is provisioned as soon as the preference appears",
                                        eff.missing)};
        } else if (intent.invalid) {
                d = (desired){"Error", "InvalidTPMSpec", false, xstrdup(intent.invalid), "InvalidTPMSpec",
                              xasprintf("the VM's TPM settings cannot be used: %s", intent.invalid)};
        } else if (!intent.has_tpm) {
                if (!pvc_ours && !cached_ts)
                        goto out; /* nothing to report for a VM without a TPM */
                d = (desired){pvc_ours ? "Retained" : "NoTPM", pvc_ours ? "StateRetained" : "NoTPM", false,
                              pvc_ours ? xasprintf("the VM has no TPM now; its state is retained in PVC %s. Delete "
                                                   "that PVC to release the state on purpose",
                                                   pvc_name)
                                       : xstrdup("the VM has no TPM")};
        } else if (!intent.persistent) {
                d = (desired){pvc_ours ? "Retained" : "Ephemeral", pvc_ours ? "StateRetained" : "NotPersistent", false,
                              pvc_ours ? xasprintf("the TPM is not persistent now; earlier state is retained in PVC %s. "
                                                   "Delete that PVC to release it on purpose",
                                                   pvc_name)
                                       : xstrdup("the TPM is not persistent: its state lives in the launcher pod and is "
                                                 "lost when the VM stops")};
                if (!old_status || json_integer_value(json_object_get(old_status, "warnedGeneration")) != gen)
                        d.event_reason = "NonPersistentTPM",
                        d.event_note = xstrdup("this VM's TPM is not persistent: secrets sealed to it (BitLocker keys) "
                                               "are lost when the VM stops. Set "
                                               "spec.template.spec.domain.devices.tpm.persistent: true to keep them");
        } else if (pvc && !pvc_ours) {
                _cleanup_free_ char *owner = describe_owner(pvc);
                d = (desired){"Conflict", "StateVolumeConflict", false,
                              xasprintf("PVC %s already exists and is not this VM's (%s); it is not adopted, changed "
                                        "or deleted. Rename or remove it to let the VM's state be provisioned",
                                        pvc_name, owner),
                              "StateVolumeConflict", NULL};
                d.event_note = xstrdup(d.message);
        } else if (pvc) {
                json_t *spec = json_object_get(pvc, "spec");
                json_t *modes = json_object_get(spec, "accessModes");
                const char *vmode = json_string_value(json_object_get(spec, "volumeMode"));
                storage_class = json_string_value(json_object_get(spec, "storageClassName"));
                class_source = old_status ? json_string_value(json_object_get(old_status, "storageClassSource")) : NULL;
                const char *phase = json_string_value(json_object_get(pvc, "phase"));
                if (!has_string(modes, "ReadWriteMany") || (vmode && strcmp(vmode, "Filesystem") != 0)) {
                        _cleanup_free_ char *m = json_dumps(modes, JSON_COMPACT);
                        d = (desired){"Error", "StateVolumeWrongShape", false,
                                      xasprintf("PVC %s has accessModes %s and volumeMode %s; the TPM state needs "
                                                "ReadWriteMany and Filesystem (for live migration). It is left as it is",
                                                pvc_name, m ? m : "[]", vmode ? vmode : "Filesystem"),
                                      "StateVolumeWrongShape", NULL};
                        d.event_note = xstrdup(d.message);
                } else if (phase && strcmp(phase, "Bound") == 0)
                        d = (desired){"Ready", "StateVolumeBound", true, xasprintf("state volume %s is bound", pvc_name)};
                else
                        d = (desired){"Pending", "WaitingForBinding", false,
                                      xasprintf("state volume %s is %s, waiting for it to bind", pvc_name,
                                                phase ? phase : "not yet bound")};
        } else {
                choose_class(sc, &choice);
                class_source = sc_source_name(choice.source);
                if (choice.reason) {
                        d = (desired){"Error", choice.reason, false, xstrdup(choice.message), choice.reason,
                                      xstrdup(choice.message)};
                } else if (cached_ts && !vm_still_there(sc, ns, name, uid)) {
                        /* A re-create, with the VM already deleted: the garbage
                         * collector removed its PVC before our watch told us the
                         * VM went. Nothing to provision for a VM that is gone. */
                        r = 0;
                        goto out;
                } else {
                        struct ts_create tc = {sc, vm, NULL, NULL, 0};
                        pthread_t th;
                        bool parallel = !cached_ts && pthread_create(&th, NULL, ts_create_thread, &tc) == 0;
                        r = create_pvc(sc, vm, pvc_name, choice.name, err);
                        if (parallel) {
                                pthread_join(th, NULL);
                                ts = tc.ts; /* freed at out, whatever happens next */
                                if (tc.r < 0 && r >= 0) {
                                        r = tc.r;
                                        if (err && !*err)
                                                *err = TAKE_PTR(tc.err);
                                }
                                vt_error_free(tc.err);
                                if (r < 0 && r != -EEXIST)
                                        goto out;
                        }
                        if (r == -EEXIST) {
                                /* Created meanwhile (another replica, or our cache is behind): look again soon. */
                                r = -EAGAIN;
                                goto out;
                        }
                        if (r < 0)
                                goto out;
                        storage_class = choice.name;
                        /* The same words the next reconcile will find for a Pending PVC:
                         * no second status write just to change the message. */
                        d = (desired){"Pending", "WaitingForBinding", false,
                                      xasprintf("state volume %s is Pending, waiting for it to bind", pvc_name)};
                        if (choice.rwx_unlikely)
                                d.event_reason = "StorageClassNotRWX",
                                d.event_note = xasprintf(
                                        "StorageClass %s (chosen by %s) uses a provisioner known not to offer "
                                        "ReadWriteMany filesystems; the state PVC %s asks for ReadWriteMany and may "
                                        "stay Pending, and live migration will not be possible. No other class is "
                                        "picked silently",
                                        choice.name, class_source, pvc_name);
                        else if (profile_lacks_rwx_fs(sc, choice.name))
                                d.event_reason = "StorageClassNotRWX",
                                d.event_note = xasprintf(
                                        "the CDI StorageProfile of StorageClass %s (chosen by %s) offers no "
                                        "ReadWriteMany + Filesystem pair: live migration of this VM will not be "
                                        "possible. The state PVC %s is provisioned anyway; no other class is picked",
                                        choice.name, class_source, pvc_name);
                }
        }

        /* Restart required: persistence changed under a running launcher. */
        launcher = find_launcher(sc, ns, name);
        bool restart_required = false;
        json_t *launcher_rec = NULL;
        if (launcher && intent.has_tpm) {
                json_t *old_rec = json_object_get(old_status, "launcher");
                const char *lu = md_str(launcher, "uid");
                const char *old_uid = json_string_value(json_object_get(old_rec, "uid"));
                if (old_uid && lu && strcmp(old_uid, lu) == 0) {
                        launcher_rec = json_incref(old_rec);
                        restart_required = json_is_true(json_object_get(old_rec, "persistent")) != intent.persistent;
                } else
                        launcher_rec = json_pack("{s:s, s:b}", "uid", lu ? lu : "", "persistent", intent.persistent);
        }

        status = json_object();
        json_object_set_new(status, "phase", json_string(d.phase));
        json_object_set_new(status, "message", json_string(d.message ? d.message : ""));
        json_object_set_new(status, "observedGeneration", json_integer(gen));
        json_object_set_new(status, "persistent", json_boolean(intent.has_tpm && intent.persistent));
        json_object_set_new(status, "encrypted", json_false());
        if (pvc || storage_class)
                json_object_set_new(status, "pvcName", json_string(pvc_name));
        if (storage_class)
                json_object_set_new(status, "storageClass", json_string(storage_class));
        if (class_source)
                json_object_set_new(status, "storageClassSource", json_string(class_source));
        if (launcher) {
                const char *node = json_string_value(json_object_get(launcher, "nodeName"));
                if (node)
                        json_object_set_new(status, "node", json_string(node));
        }
        if (launcher_rec)
                json_object_set_new(status, "launcher", launcher_rec);
        json_int_t warned = json_integer_value(json_object_get(old_status, "warnedGeneration"));
        if (d.event_reason && strcmp(d.event_reason, "NonPersistentTPM") == 0)
                warned = gen;
        if (warned)
                json_object_set_new(status, "warnedGeneration", json_integer(warned));
        json_t *old_conds = json_object_get(old_status, "conditions");
        json_t *conds = json_array();
        json_array_append_new(conds, condition("Ready", d.ready, d.ready_reason, d.message, old_conds, gen));
        json_array_append_new(
                conds, condition("RestartRequired", restart_required,
                                 restart_required ? "PersistenceChanged" : "NoRestartNeeded",
                                 restart_required ? "TPM persistence changed while the VM runs; it takes effect at the "
                                                    "VM's next start"
                                                  : "",
                                 old_conds, gen));
        json_object_set_new(status, "conditions", conds);

        bool was_restart_required = false;
        {
                size_t i;
                json_t *c;
                json_array_foreach(old_conds, i, c) {
                        const char *t = json_string_value(json_object_get(c, "type"));
                        if (t && strcmp(t, "RestartRequired") == 0)
                                was_restart_required = strcmp(json_string_value(json_object_get(c, "status")) ?: "", "True") == 0;
                }
        }

        if (!ts) {
                r = ensure_tpmstate(sc, vm, cached_ts, &ts, err);
                if (r < 0)
                        goto out;
        }
        r = update_status(sc, tskey, ts, status, err);
        if (r < 0)
                goto out;

        /* Events last, once the status that dedups them is written. */
        if (d.event_reason && (strcmp(d.event_reason, "NonPersistentTPM") == 0 || strcmp(d.event_reason, "StorageClassNotRWX") == 0 ||
                               !already_reported(old_status, d.ready_reason, gen)))
                record(sc, vm, KUBE_EVENT_WARNING, d.event_reason, "Provision", d.event_note ? d.event_note : d.message);
        if (restart_required && !was_restart_required)
                record(sc, vm, KUBE_EVENT_WARNING, "RestartRequired", "Reconcile",
                       intent.persistent ? "TPM persistence was turned on while the VM runs: restart the VM to move its "
                                           "TPM state onto the persistent volume"
                                         : "TPM persistence was turned off while the VM runs: it takes effect at the next "
                                           "start; the state volume is retained");
        if (pvc == NULL && storage_class && !d.event_reason)
                log_kv(LOG_LEVEL_INFO, "state volume created", "vm", key, "pvc", pvc_name, "storageClass", storage_class,
                       "source", class_source, NULL);
out:
        json_decref(cached_ts);
        json_decref(ts);
        json_decref(status);
        json_decref(launcher);
        json_decref(pvc);
        json_decref(vm);
        desired_done(&d);
        sc_choice_done(&choice);
        tpm_intent_done(&intent);
        effective_tpm_done(&eff);
        return r;
}

/* ---- workers and leadership ---- */

static void *worker(void *ud) {
        state_controller *sc = ud;
        for (;;) {
                _cleanup_free_ char *key = kube_workqueue_get(sc->queue);
                if (!key)
                        break;
                if (!atomic_load(&sc->leader)) {
                        /* Stand-by: the new leader relists everything anyway. */
                        kube_workqueue_forget(sc->queue, key);
                        kube_workqueue_done(sc->queue, key);
                        continue;
                }
                _cleanup_error_ vt_error *err = NULL;
                bump(sc, &sc->stats.reconciles);
                int r = reconcile(sc, key, &err);
                if (r < 0) {
                        bump(sc, &sc->stats.reconcile_errors);
                        if (r != -EAGAIN)
                                log_kv(LOG_LEVEL_WARN, "reconcile failed; will retry", "vm", key, "error",
                                       err ? err->msg : strerror(-r), NULL);
                        kube_workqueue_add_rate_limited(sc->queue, key);
                } else
                        kube_workqueue_forget(sc->queue, key);
                kube_workqueue_done(sc->queue, key);
        }
        return NULL;
}

static void started_leading(void *ud) {
        state_controller *sc = ud;
        log_kv(LOG_LEVEL_INFO, "became the state controller's leader", "identity", sc->identity, NULL);
        /* Whatever we wrote in an earlier term may have been overwritten since. */
        pthread_mutex_lock(&sc->written_lock);
        vt_hashmap_clear(sc->written);
        pthread_mutex_unlock(&sc->written_lock);
        atomic_store(&sc->leader, true);
        enqueue_all(sc);
}

static void stopped_leading(void *ud) {
        state_controller *sc = ud;
        log_kv(LOG_LEVEL_INFO, "no longer the state controller's leader", "identity", sc->identity, NULL);
        atomic_store(&sc->leader, false);
}

int state_controller_new(kube_client *c, const agent_config *cfg, const char *identity, state_controller **ret,
                         vt_error **err) {
        state_controller *sc = xnew(state_controller, 1);
        sc->client = c;
        sc->cfg = cfg;
        sc->identity = xstrdup(identity);
        pthread_mutex_init(&sc->stats_lock, NULL);
        pthread_mutex_init(&sc->written_lock, NULL);
        sc->written = vt_hashmap_new(written_free);
        /* Failures back off per VM; the token bucket would only slow a burst of 5,000. */
        kube_workqueue_options qo = {.base_delay = 50 * USEC_PER_MSEC, .max_delay = 300 * USEC_PER_SEC,
                                     .disable_bucket = true};
        sc->queue = kube_workqueue_new(&qo);
        sc->recorder = kube_recorder_new(c, CONTROLLER_NAME, identity);

        struct {
                const kube_resource *res;
                kube_informer_options o;
                kube_informer_handlers h;
        } defs[_INF_MAX] = {
                [INF_VM] = {&res_vm, {0}, {on_vm, on_vm_update, on_vm, trim_vm}},
                [INF_PVC] = {&res_pvc, {0}, {on_pvc, on_pvc_update, on_pvc, trim_pvc}},
                [INF_SC] = {&res_sc, {0}, {on_global, on_global_update, on_global, trim_sc}},
                [INF_KUBEVIRT] = {&res_kubevirt, {.optional = true}, {on_global, on_global_update, on_global, trim_spec}},
                [INF_HCO] = {&res_hco, {.optional = true}, {on_global, on_global_update, on_global, trim_spec}},
                [INF_POD] = {&res_pod, {.label_selector = "kubevirt.io=virt-launcher", .index_label = "vm.kubevirt.io/name"},
                             {on_pod, on_pod_update, on_pod, trim_pod}},
                [INF_TPMSTATE] = {&res_tpmstate, {.label_selector = LABEL_MANAGED_BY "=" LABEL_MANAGER_VALUE},
                                  {on_tpmstate, on_tpmstate_update, on_tpmstate, trim_tpmstate}},
                [INF_CPREF] = {&res_cpref, {.optional = true}, {on_cpref, on_cpref_update, on_cpref, trim_pref}},
                [INF_NSPREF] = {&res_nspref, {.optional = true}, {on_nspref, on_nspref_update, on_nspref, trim_pref}},
                /* Revisions are read, not reacted to: KubeVirt updates the VM when it freezes one. */
                [INF_REVISION] = {&res_revision, {0}, {NULL, NULL, NULL, trim_revision}},
                [INF_SPROFILE] = {&res_sprofile, {.optional = true}, {NULL, NULL, NULL, trim_sprofile}},
        };
        for (int i = 0; i < _INF_MAX; i++) {
                defs[i].h.userdata = sc;
                defs[i].h.on_error = on_informer_error;
                kube_informer_new(c, defs[i].res, &defs[i].o, &defs[i].h, &sc->inf[i]);
        }
        kube_elector_options eo = {.namespace = cfg->namespace, .name = cfg->state.lease_name, .identity = identity,
                                   .on_started_leading = started_leading, .on_stopped_leading = stopped_leading,
                                   .userdata = sc};
        int r = kube_elector_new(c, &eo, &sc->elector, err);
        if (r < 0) {
                state_controller_free(sc);
                return r;
        }
        *ret = sc;
        return 0;
}

int state_controller_start(state_controller *sc, vt_error **err) {
        for (int i = 0; i < _INF_MAX; i++) {
                int r = kube_informer_start(sc->inf[i], err);
                if (r < 0)
                        return r;
        }
        for (int i = 0; i < _INF_MAX; i++)
                if (kube_informer_wait_synced(sc->inf[i], 300 * USEC_PER_SEC) < 0)
                        return vt_error_set(err, ETIMEDOUT, "the state controller's caches did not fill within 5 minutes");
        sc->n_workers = sc->cfg->state.workers;
        sc->workers = xnew(pthread_t, (size_t)sc->n_workers);
        for (int i = 0; i < sc->n_workers; i++)
                pthread_create(&sc->workers[i], NULL, worker, sc);
        return kube_elector_start(sc->elector, err);
}

bool state_controller_synced(state_controller *sc) {
        for (int i = 0; i < _INF_MAX; i++)
                if (!kube_informer_has_synced(sc->inf[i]))
                        return false;
        return true;
}

void state_controller_stop(state_controller *sc) {
        if (!sc)
                return;
        kube_workqueue_shutdown(sc->queue);
        for (int i = 0; sc->workers && i < sc->n_workers; i++)
                pthread_join(sc->workers[i], NULL);
        free(sc->workers);
        sc->workers = NULL;
        sc->n_workers = 0;
        kube_elector_stop(sc->elector); /* releases the Lease: a stand-by takes over at once */
        for (int i = 0; i < _INF_MAX; i++)
                kube_informer_stop(sc->inf[i]);
}

void state_controller_free(state_controller *sc) {
        if (!sc)
                return;
        state_controller_stop(sc);
        kube_elector_free(sc->elector);
        for (int i = 0; i < _INF_MAX; i++)
                kube_informer_free(sc->inf[i]);
        kube_recorder_free(sc->recorder);
        kube_workqueue_free(sc->queue);
        pthread_mutex_destroy(&sc->stats_lock);
        vt_hashmap_free(sc->written);
        pthread_mutex_destroy(&sc->written_lock);
        free(sc->identity);
        free(sc);
}

void state_controller_get_stats(state_controller *sc, state_controller_stats *ret) {
        pthread_mutex_lock(&sc->stats_lock);
        *ret = sc->stats;
        pthread_mutex_unlock(&sc->stats_lock);
        ret->queue_depth = kube_workqueue_len(sc->queue);
        ret->leader = atomic_load(&sc->leader);
}
