/* SPDX-License-Identifier: Apache-2.0 */
#include "report.h"

#include "base/alloc.h"
#include "base/log.h"
#include "tpmstate_status.h"

static const char *md_str(json_t *obj, const char *k) {
        return json_string_value(json_object_get(json_object_get(obj, "metadata"), k));
}

static int write_status(const state_ctx *ctx, const state_observed *o, const state_decision *d, vt_error **err) {
        if (!tpmstate_state_fields_differ(json_object_get(o->tpmstate, "status"), d->status))
                return 0;
        const char *ns = md_str(o->vm, "namespace"), *name = md_str(o->vm, "name");
        json_t *updated = NULL;
        int r = tpmstate_apply_state(ctx->client, ns, name, d->status, &updated, err);
        if (r < 0)
                return r;
        atomic_fetch_add(&ctx->counters->status_updates, 1);
        state_written_remember(ctx->written, updated);
        json_decref(updated);
        return 0;
}

static void send_event(const state_ctx *ctx, json_t *vm, const state_event *ev) {
        kube_object_ref ref = {"kubevirt.io/v1", "VirtualMachine", md_str(vm, "namespace"), md_str(vm, "name"),
                               md_str(vm, "uid")};
        _cleanup_error_ vt_error *err = NULL;
        if (kube_record(ctx->recorder, &ref, KUBE_EVENT_WARNING, ev->reason, ev->action, ev->note, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot record event", "reason", ev->reason, "error", err ? err->msg : "?",
                       NULL);
        else
                atomic_fetch_add(&ctx->counters->events, 1);
}

int state_report(const state_ctx *ctx, const state_observed *o, const state_decision *d, vt_error **err) {
        int r = write_status(ctx, o, d, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < d->n_events; i++)
                send_event(ctx, o->vm, &d->events[i]);
        return 0;
}
