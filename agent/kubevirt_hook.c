/* SPDX-License-Identifier: Apache-2.0 */
#include "kubevirt_hook.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "grpc/listen.h"
#include "grpc/server.h"

DEFINE_JSON_CLEANUP

/* How long one call waits for the vTPM: under virt-handler's own deadline for
 * a hook (30 s unless the Plugin says otherwise), so the answer says why,
 * not just that time ran out. virt-handler calls again on its next sync. */
#define HOOK_WAIT_USEC (20 * USEC_PER_SEC)

struct kubevirt_hook {
        const agent_config *cfg;
        node_controller *nc;
        int listen_fd;
        grpc_server *server;
};

/* The VMI's launcher pods on this node: status.activePods maps pod uid to node. */
static size_t pods_here(json_t *vmi, const char *node, const char **ret, size_t max) {
        json_t *active = json_object_get(json_object_get(vmi, "status"), "activePods");
        const char *uid;
        json_t *where;
        size_t n = 0;
        json_object_foreach(active, uid, where) {
                if (n < max && json_is_string(where) && strcmp(json_string_value(where), node) == 0)
                        ret[n++] = uid;
        }
        return n;
}

/* PreVMStart, and PreMigrationTarget on a migration's target node: both
 * return once the vTPM of the VMI's launcher on this node runs (for a
 * target, on its own state generation: act_migration.c). */
static int wait_vtpm_here(kubevirt_hook *h, const char *hook_point, json_t *vmi, vt_error **err) {
        json_t *md = json_object_get(vmi, "metadata");
        const char *ns = json_string_value(json_object_get(md, "namespace"));
        const char *name = json_string_value(json_object_get(md, "name"));
        if (!ns || !name)
                return vt_error_set(err, EINVAL, "vtpm-agent: the VMI in the %s call has no namespace or name",
                                    hook_point);
        const char *uids[4];
        size_t n = 0;
        _cleanup_free_ char *target_uid = NULL;
        if (strcmp(hook_point, "PreMigrationTarget") == 0) {
                /* Only the migration's target: the VMI's earlier launchers on
                 * this node (a source it migrated away from) have ended. */
                const char *target = json_string_value(
                        json_object_get(json_object_get(json_object_get(vmi, "status"), "migrationState"), "targetPod"));
                target_uid = target ? node_controller_launcher_uid(h->nc, ns, target) : NULL;
                if (target_uid)
                        uids[n++] = target_uid;
        } else
                n = pods_here(vmi, h->cfg->node_name, uids, ELEMENTSOF(uids));
        if (n == 0)
                return vt_error_set(err, EAGAIN, "vtpm-agent: VMI %s/%s has no launcher pod on node %s yet", ns, name,
                                    h->cfg->node_name);
        usec_t t0 = now_monotonic();
        for (size_t i = 0; i < n; i++) {
                int r = node_controller_wait_vtpm(h->nc, ns, uids[i], HOOK_WAIT_USEC, err);
                if (r < 0)
                        return vt_error_prefix(err, r, "vtpm-agent: VM %s/%s: ", ns, name);
        }
        _cleanup_free_ char *ms = xasprintf("%llu", (unsigned long long)((now_monotonic() - t0) / USEC_PER_MSEC));
        /* The same line as before migration existed for PreVMStart (suite 09 and
         * operators' log queries read it). */
        log_kv(LOG_LEVEL_INFO,
               strcmp(hook_point, "PreVMStart") == 0 ? "PreVMStart: the vTPM runs, the VM may start"
                                                      : "PreMigrationTarget: the vTPM runs, the VM may migrate here",
               "vm", name, "namespace", ns, "waitedMs", ms, NULL);
        return 0;
}

static int on_call(const nodehook_request *req, void *userdata, vt_error **err) {
        kubevirt_hook *h = userdata;
        if (*req->node_name && strcmp(req->node_name, h->cfg->node_name) != 0)
                return vt_error_set(err, EINVAL, "vtpm-agent on node %s was called for node %s", h->cfg->node_name,
                                    req->node_name);
        if (strcmp(req->hook_point, "PreVMStart") != 0 && strcmp(req->hook_point, "PreMigrationTarget") != 0)
                return 0; /* the Plugin permits only these two; nothing to do at any other point */
        json_error_t jerr;
        _cleanup_json_ json_t *vmi = json_loadb(req->vmi, req->vmi_len, 0, &jerr);
        if (!json_is_object(vmi))
                return vt_error_set(err, EINVAL, "vtpm-agent: the VMI in the %s call is not a JSON object: %s",
                                    req->hook_point, jerr.text);
        return wait_vtpm_here(h, req->hook_point, vmi, err);
}

static void on_error(const vt_error *e, void *userdata) {
        log_kv(LOG_LEVEL_WARN, "KubeVirt node hook: a call was not served", "error", e ? e->msg : "unknown", NULL);
}

int kubevirt_hook_start(const agent_config *cfg, node_controller *nc, kubevirt_hook **ret, vt_error **err) {
        assert_return(cfg && nc && ret && cfg->node.kubevirt_hook_socket, -EINVAL);
        _cleanup_free_ kubevirt_hook *h = xnew(kubevirt_hook, 1);
        h->cfg = cfg;
        h->nc = nc;
        int r = grpc_listen_unix(cfg->node.kubevirt_hook_socket, 64, &h->listen_fd, err);
        if (r < 0)
                return vt_error_prefix(err, r, "node.kubevirtHookSocket: ");
        grpc_server_options o = {.handler = on_call, .on_error = on_error, .userdata = h, .allow_uid = 0};
        r = grpc_server_start(h->listen_fd, &o, &h->server, err);
        if (r < 0) {
                close(h->listen_fd);
                return r;
        }
        *ret = TAKE_PTR(h);
        return 0;
}

void kubevirt_hook_stop(kubevirt_hook *h) {
        if (!h)
                return;
        grpc_server_stop(h->server);
        close(h->listen_fd);
        unlink(h->cfg->node.kubevirt_hook_socket);
        free(h);
}
