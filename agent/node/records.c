/* SPDX-License-Identifier: Apache-2.0 */
/* The launchers this node knows of, and their records under
 * <node.runDir>/launchers (for adoption): a restarted agent finds the swtpm
 * processes the one before started, and adopts them instead of starting
 * another. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/log.h"
#include "node/node.h"
#include "vmspec.h"

void launcher_free(void *p) {
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
        free(l->migration_uid);
        free(l->generation);
        free(l->volume);
        json_decref(l->reported);
        json_decref(l->keys);
        json_decref(l->applied);
        free(l);
}

int node_run_subdir(node_controller *nc, const char *sub, char **ret, vt_error **err) {
        int r = mkdir_mode(nc->cfg->node.run_dir, 0711, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *p = xasprintf("%s/%s", nc->cfg->node.run_dir, sub);
        r = mkdir_checked(p, strcmp(sub, "launchers") == 0 || strcmp(sub, "sandbox") == 0 ? 0700 : 0711, err);
        if (r < 0)
                return r;
        if (ret)
                *ret = TAKE_PTR(p);
        return 0;
}

static char *record_path(node_controller *nc, const char *pod_uid) {
        return xasprintf("%s/launchers/%s.json", nc->cfg->node.run_dir, pod_uid);
}

void record_save(node_controller *nc, const launcher *l) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s?, s:s?, s:b, s:b, s:I}", "key",
                              l->key, "podUID", l->pod_uid, "vmName", l->vm_name, "vmUID", l->vm_uid, "namespace",
                              l->ns, "pid", (json_int_t)l->pid, "pidStart", (json_int_t)l->pid_start, "swtpmPid",
                              (json_int_t)l->swtpm_pid, "swtpmStart", (json_int_t)l->swtpm_start, "ctrlPath",
                              l->ctrl_path, "attachPod", l->attach_pod, "persistent", l->persistent, "fenced",
                              l->fenced, "sandboxUid", (json_int_t)l->sandbox_uid);
        json_object_set_new(j, "migrationUID", l->migration_uid ? json_string(l->migration_uid) : json_null());
        json_object_set_new(j, "generation", l->generation ? json_string(l->generation) : json_null());
        json_object_set_new(j, "volume", l->volume ? json_string(l->volume) : json_null());
        json_object_set_new(j, "handedOver", json_boolean(l->handed_over));
        json_object_set_new(j, "swtpmEnded", json_boolean(l->swtpm_ended));
        _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        _cleanup_free_ char *p = record_path(nc, l->pod_uid);
        _cleanup_error_ vt_error *err = NULL;
        if (node_run_subdir(nc, "launchers", NULL, &err) < 0 ||
            write_file_atomic(p, text, strlen(text), 0600, &err) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot record a running swtpm; a restarted agent would not adopt it", "error",
                       err->msg, NULL);
}

void record_remove(node_controller *nc, const char *pod_uid) {
        _cleanup_free_ char *p = record_path(nc, pod_uid);
        if (unlink(p) < 0 && errno != ENOENT)
                log_kv(LOG_LEVEL_WARN, "cannot remove a launcher's record", "path", p, "error", strerror(errno), NULL);
}

static char *jstr(json_t *j, const char *k) {
        const char *s = json_string_value(json_object_get(j, k));
        return s ? xstrdup(s) : NULL;
}

static launcher *record_parse(json_t *j) {
        const char *key = json_string_value(json_object_get(j, "key"));
        if (!key || !json_string_value(json_object_get(j, "podUID")))
                return NULL;
        launcher *l = xnew(launcher, 1);
        l->key = xstrdup(key);
        l->pod_uid = jstr(j, "podUID");
        l->vm_name = jstr(j, "vmName") ?: xstrdup("");
        l->vm_uid = jstr(j, "vmUID") ?: xstrdup("");
        l->ns = jstr(j, "namespace") ?: xstrdup("");
        l->pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
        l->pid_start = (uint64_t)json_integer_value(json_object_get(j, "pidStart"));
        l->swtpm_pid = (pid_t)json_integer_value(json_object_get(j, "swtpmPid"));
        l->swtpm_start = (uint64_t)json_integer_value(json_object_get(j, "swtpmStart"));
        l->ctrl_path = jstr(j, "ctrlPath");
        l->attach_pod = jstr(j, "attachPod");
        l->persistent = json_is_true(json_object_get(j, "persistent"));
        l->sandbox_uid = (uid_t)json_integer_value(json_object_get(j, "sandboxUid"));
        l->migration_uid = jstr(j, "migrationUID");
        l->generation = jstr(j, "generation");
        l->volume = jstr(j, "volume");
        l->handed_over = json_is_true(json_object_get(j, "handedOver"));
        l->swtpm_ended = json_is_true(json_object_get(j, "swtpmEnded"));
        /* A migration's target holds no state lock until it has taken the state over. */
        l->lease_held = l->persistent && (!l->migration_uid || l->handed_over);
        l->fenced = json_is_true(json_object_get(j, "fenced"));
        return l;
}

void records_load(node_controller *nc) {
        _cleanup_free_ char *dir = xasprintf("%s/launchers", nc->cfg->node.run_dir);
        DIR *d = opendir(dir);
        if (!d)
                return;
        for (struct dirent *de; (de = readdir(d));) {
                if (de->d_name[0] == '.' || !strstr(de->d_name, ".json"))
                        continue;
                _cleanup_free_ char *p = xasprintf("%s/%s", dir, de->d_name);
                json_t *j = json_load_file(p, 0, NULL);
                launcher *l = record_parse(j);
                json_decref(j);
                if (!l)
                        continue;
                pthread_mutex_lock(&nc->lock);
                vt_hashmap_put(nc->launchers, l->key, l);
                pthread_mutex_unlock(&nc->lock);
        }
        closedir(d);
}

const char *launcher_pod_name(const launcher *l) {
        const char *slash = l->key ? strchr(l->key, '/') : NULL;
        return slash ? slash + 1 : "";
}

launcher *launcher_known(node_controller *nc, const char *key) {
        pthread_mutex_lock(&nc->lock);
        launcher *l = vt_hashmap_get(nc->launchers, key);
        pthread_mutex_unlock(&nc->lock);
        return l;
}

launcher *launcher_get_or_new(node_controller *nc, const char *key, json_t *pod) {
        pthread_mutex_lock(&nc->lock);
        launcher *l = vt_hashmap_get(nc->launchers, key);
        const char *uid = node_md(pod, "uid");
        if (l && uid && strcmp(l->pod_uid, uid) != 0)
                l = NULL; /* same name, new pod: the old one's leftovers went first (reconcile) */
        if (!l) {
                l = xnew(launcher, 1);
                l->key = xstrdup(key);
                l->pod_uid = xstrdup(uid ? uid : "");
                l->ns = xstrdup(node_md(pod, "namespace") ? node_md(pod, "namespace") : "");
                const char *vm = json_string_value(
                        json_object_get(json_object_get(json_object_get(pod, "metadata"), "labels"), "vm.kubevirt.io/name"));
                l->vm_name = xstrdup(vm ? vm : "");
                const char *mig = json_string_value(json_object_get(
                        json_object_get(json_object_get(pod, "metadata"), "labels"), LABEL_MIGRATION_JOB));
                l->migration_uid = mig && *mig ? xstrdup(mig) : NULL;
                vt_hashmap_put(nc->launchers, key, l);
                nc->stats.launchers = vt_hashmap_size(nc->launchers);
        }
        pthread_mutex_unlock(&nc->lock);
        return l;
}

void launcher_forget(node_controller *nc, const char *key) {
        pthread_mutex_lock(&nc->lock);
        vt_hashmap_remove(nc->launchers, key);
        nc->stats.launchers = vt_hashmap_size(nc->launchers);
        pthread_mutex_unlock(&nc->lock);
}

/* The VM's own uid (and gid) for its swtpm: derived from the VM's uid, so a
 * VM keeps one owner of its state files on every node; the next free one
 * when another VM running here has it (a collision in the range). 0 when the
 * range is full. */
uid_t choose_sandbox_uid(node_controller *nc, launcher *l) {
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
