/* SPDX-License-Identifier: Apache-2.0 */
#include "act.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "resources.h"
#include "vmspec.h"

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

/* Whether the VM still exists with this uid, asked of the API server rather
 * than the cache; only before re-creating a state PVC that went away (rare),
 * never on a new VM's first provisioning. An error counts as "there": the
 * create then goes ahead as before. */
static bool vm_still_there(const state_ctx *ctx, json_t *vm) {
        _cleanup_free_ char *path = kube_path(&res_vm, md_str(vm, "namespace"), md_str(vm, "name"), NULL);
        _cleanup_error_ vt_error *err = NULL;
        json_t *live = NULL;
        int r = kube_get(ctx->client, path, &live, &err);
        if (r == -ENOENT)
                return false;
        if (r < 0)
                return true;
        const char *live_uid = md_str(live, "uid"), *uid = md_str(vm, "uid");
        bool same = live_uid && uid && strcmp(live_uid, uid) == 0 &&
                    !json_object_get(json_object_get(live, "metadata"), "deletionTimestamp");
        json_decref(live);
        return same;
}

static int create_pvc(const state_ctx *ctx, json_t *pvc, vt_error **err) {
        _cleanup_free_ char *coll = kube_path(&res_pvc, md_str(pvc, "namespace"), NULL, NULL);
        int r = kube_create(ctx->client, coll, pvc, NULL, err);
        if (r == 0)
                atomic_fetch_add(&ctx->counters->pvcs_created, 1);
        return r;
}

static int create_tpmstate(const state_ctx *ctx, json_t *vm, vt_error **err) {
        const char *ns = md_str(vm, "namespace"), *name = md_str(vm, "name");
        _cleanup_free_ char *label = vm_label_value(name);
        json_t *owner = json_pack("[{s:s, s:s, s:s, s:s, s:b, s:b}]", "apiVersion", "kubevirt.io/v1", "kind",
                                  "VirtualMachine", "name", name, "uid", md_str(vm, "uid"), "controller", 1,
                                  "blockOwnerDeletion", 1);
        json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}, s:o}, s:{s:s, s:s}}", "apiVersion",
                                "vtpm-agent.io/v1alpha1", "kind", "TPMState", "metadata", "name", name, "namespace", ns,
                                "labels", LABEL_MANAGED_BY, LABEL_MANAGER_VALUE, LABEL_VM, label, "ownerReferences",
                                owner, "spec", "vmName", name, "vmUID", md_str(vm, "uid"));
        _cleanup_free_ char *coll = kube_path(&res_tpmstate, ns, NULL, NULL);
        json_t *created = NULL;
        int r = kube_create(ctx->client, coll, obj, &created, err);
        json_decref(obj);
        if (r < 0)
                return r;
        atomic_fetch_add(&ctx->counters->tpmstates_created, 1);
        state_written_remember(ctx->written, created);
        json_decref(created);
        return 0;
}

/* A VM's first reconcile creates its PVC and its TPMState: independent
 * requests, sent at the same time (one round trip, not two; the burst of a
 * few thousand VMs keeps twice as many writes in flight). */
struct ts_create {
        const state_ctx *ctx;
        json_t *vm;
        vt_error *err;
        int r;
};

static void *ts_create_thread(void *ud) {
        struct ts_create *t = ud;
        t->r = create_tpmstate(t->ctx, t->vm, &t->err);
        return NULL;
}

/* An error becomes the outcome's (errors of the other request are dropped:
 * one reason is enough); "already exists" is a race, not an error. */
static state_act_result classify(int r, vt_error *e, vt_error **err) {
        if (r >= 0 || r == -EEXIST) {
                vt_error_free(e);
                return r >= 0 ? STATE_ACT_DONE : STATE_ACT_RACED;
        }
        if (err)
                *err = e;
        else
                vt_error_free(e);
        return STATE_ACT_FAILED;
}

static state_act_result provision(const state_ctx *ctx, const state_observed *o, const state_decision *d,
                                  vt_error **err) {
        struct ts_create tc = {ctx, o->vm, NULL, 0};
        pthread_t th;
        bool parallel = d->create_tpmstate && pthread_create(&th, NULL, ts_create_thread, &tc) == 0;
        _cleanup_error_ vt_error *pvc_err = NULL;
        int r = create_pvc(ctx, d->pvc, &pvc_err);
        if (parallel)
                pthread_join(th, NULL);
        else if (d->create_tpmstate && r == 0)
                tc.r = create_tpmstate(ctx, o->vm, &tc.err);
        if (r == 0)
                log_kv(LOG_LEVEL_INFO, "state volume created", "vm", md_str(o->vm, "name"), "namespace",
                       md_str(o->vm, "namespace"), "pvc", o->pvc_name, "storageClass",
                       json_string_value(json_object_get(d->status, "storageClass")), "source",
                       json_string_value(json_object_get(d->status, "storageClassSource")), NULL);
        /* Either one already there: look again once the cache shows it. */
        if (r == -EEXIST || tc.r == -EEXIST) {
                vt_error_free(tc.err);
                return STATE_ACT_RACED;
        }
        if (r < 0) {
                vt_error_free(tc.err);
                return classify(r, TAKE_PTR(pvc_err), err);
        }
        return classify(tc.r, tc.err, err);
}

/* A write to an existing PVC at the version decide.c judged: gone already
 * (404) or changed since (409) is a race (look again), not an error. */
static state_act_result classify_pvc_write(int r, vt_error *e, vt_error **err) {
        if (r == -ENOENT || r == -ESTALE)
                r = -EEXIST;
        return classify(r, e, err);
}

static char *pvc_path(json_t *ref) {
        return kube_path(&res_pvc, json_string_value(json_object_get(ref, "namespace")),
                         json_string_value(json_object_get(ref, "name")), NULL);
}

/* Our PVC lost the race with KubeVirt's: delete exactly the version that
 * was judged unused (uid and resourceVersion preconditions). */
static state_act_result delete_lost_pvc(const state_ctx *ctx, json_t *del, vt_error **err) {
        _cleanup_free_ char *path = pvc_path(del);
        vt_error *e = NULL;
        int r = kube_delete(ctx->client, path, json_string_value(json_object_get(del, "uid")),
                            json_string_value(json_object_get(del, "resourceVersion")), NULL, &e);
        state_act_result res = classify_pvc_write(r, e, err);
        if (res == STATE_ACT_DONE) {
                atomic_fetch_add(&ctx->counters->pvcs_deleted, 1);
                log_kv(LOG_LEVEL_INFO, "own state volume deleted unused: KubeVirt made the VM's first", "path", path,
                       NULL);
        }
        return res;
}

/* KubeVirt's label on our PVC its launcher mounts, at the version judged
 * (a merge patch carrying the resourceVersion). */
static state_act_result label_pvc(const state_ctx *ctx, json_t *lbl, vt_error **err) {
        _cleanup_free_ char *path = pvc_path(lbl);
        _cleanup_(json_decrefp) json_t *patch =
                json_pack("{s:{s:O, s:{s:O}}}", "metadata", "resourceVersion", json_object_get(lbl, "resourceVersion"),
                          "labels", LABEL_KUBEVIRT_STATE, json_object_get(lbl, "vm"));
        vt_error *e = NULL;
        int r = kube_patch(ctx->client, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, &e);
        state_act_result res = classify_pvc_write(r, e, err);
        if (res == STATE_ACT_DONE)
                log_kv(LOG_LEVEL_INFO, "own state volume labelled for KubeVirt (its launcher mounts it)", "path", path,
                       NULL);
        return res;
}

state_act_result state_act(const state_ctx *ctx, const state_observed *o, const state_decision *d, vt_error **err) {
        if (d->pvc_label) {
                state_act_result r = label_pvc(ctx, d->pvc_label, err);
                if (r != STATE_ACT_DONE)
                        return r;
        }
        if (d->pvc_delete) {
                state_act_result r = delete_lost_pvc(ctx, d->pvc_delete, err);
                if (r != STATE_ACT_DONE || !d->create_tpmstate)
                        return r;
        }
        if (d->pvc) {
                /* A re-create, with the VM perhaps already deleted: the garbage
                 * collector removed its PVC before our watch told us the VM
                 * went. Nothing to provision for a VM that is gone. */
                if (d->pvc_recreate && !vm_still_there(ctx, o->vm))
                        return STATE_ACT_VM_GONE;
                return provision(ctx, o, d, err);
        }
        if (d->create_tpmstate) {
                vt_error *e = NULL;
                int r = create_tpmstate(ctx, o->vm, &e);
                return classify(r, e, err);
        }
        return STATE_ACT_DONE;
}
