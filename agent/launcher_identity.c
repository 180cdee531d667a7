/* SPDX-License-Identifier: Apache-2.0 */
#include "launcher_identity.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "proc/peer.h"
#include "proc/podcgroup.h"
#include "proc/proc.h"

#define MAX_CONTAINERS 64

/* "containerd://<id>" -> "<id>"; NULL unless a 64-hex ID follows "://". */
static const char *bare_id(const char *s) {
        const char *p = s ? strstr(s, "://") : NULL;
        if (!p)
                return NULL;
        p += 3;
        if (strlen(p) != 64)
                return NULL;
        for (const char *c = p; *c; c++)
                if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
                        return NULL;
        return p;
}

json_t *launcher_trim_status(json_t *pod) {
        json_t *st = json_object_get(pod, "status");
        json_t *ids = json_array();
        bool reported = true;
        size_t n_specs = json_array_size(json_object_get(json_object_get(pod, "spec"), "containers"));
        size_t n_running = 0;
        static const char *const lists[] = {"containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"};
        for (size_t l = 0; l < ELEMENTSOF(lists); l++) {
                size_t i;
                json_t *cs;
                json_array_foreach(json_object_get(st, lists[l]), i, cs) {
                        const char *id = bare_id(json_string_value(json_object_get(cs, "containerID")));
                        if (id && json_array_size(ids) < MAX_CONTAINERS)
                                json_array_append_new(ids, json_string(id));
                        if (l == 0 && id && json_object_get(json_object_get(cs, "state"), "running"))
                                n_running++;
                }
        }
        /* Every container of the spec running under a reported ID: a peer
         * matching none of them is then not a race with the kubelet. */
        if (n_specs == 0 || n_running < n_specs)
                reported = false;
        return json_pack("{s:o, s:b}", "containerIDs", ids, "containersReported", reported);
}

bool launcher_socket_ref_valid(const char *ref) {
        const char *slash = ref ? strchr(ref, '/') : NULL;
        if (!slash || slash == ref || !slash[1] || strchr(slash + 1, '/'))
                return false;
        size_t vl = (size_t)(slash - ref);
        const char *file = slash + 1;
        if ((vl == 1 && ref[0] == '.') || (vl == 2 && ref[0] == '.' && ref[1] == '.') || strcmp(file, ".") == 0 ||
            strcmp(file, "..") == 0)
                return false;
        return strlen(ref) < 200;
}

/* A pod UID as the API server writes it: hex digits and '-'. */
static bool uid_valid(const char *uid) {
        if (!uid || strlen(uid) != 36)
                return false;
        for (const char *c = uid; *c; c++)
                if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || *c == '-'))
                        return false;
        return true;
}

int launcher_identify(const agent_config *cfg, json_t *pod, pid_t *ret_pid, uint64_t *ret_start_time, vt_error **err) {
        assert_return(cfg && pod && ret_pid && ret_start_time, -EINVAL);
        const char *uid = json_string_value(json_object_get(json_object_get(pod, "metadata"), "uid"));
        if (!uid_valid(uid))
                return vt_error_set(err, EPERM, "the launcher pod has no usable uid");
        const char *ref = cfg->node.launcher_socket;
        const char *slash = strchr(ref, '/');
        _cleanup_free_ char *vol = xstrndup(ref, (size_t)(slash - ref));
        _cleanup_free_ char *rel =
                xasprintf("pods/%s/volumes/kubernetes.io~empty-dir/%s/%s", uid, vol, slash + 1);

        _cleanup_close_ int root = open(cfg->node.kubelet_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return vt_error_errno(err, errno, "cannot open node.kubeletRoot %s", cfg->node.kubelet_root);
        _cleanup_close_ int sock = -1;
        _cleanup_error_ vt_error *cerr = NULL;
        struct stat st;
        int r = unix_connect_at(root, rel, RESOLVE_BENEATH, &sock, &st, &cerr);
        if (r == -ENOENT || r == -ECONNREFUSED || r == -EAGAIN)
                return -EAGAIN; /* not (yet) listening */
        if (r == -ELOOP || r == -ENOTSOCK || r == -EXDEV)
                return vt_error_set(err, EPERM, "the launcher's socket (%s in its emptyDir %s) %s", slash + 1, vol,
                                    r == -ENOTSOCK ? "is not a socket" : "is a symlink");
        if (r < 0)
                return vt_error_set(err, -r, "%s", cerr->msg);

        /* The peer, as a pidfd: it cannot turn into another process under us. */
        _cleanup_close_ int pidfd = -1;
        pid_t pid = 0;
        r = socket_peer_pidfd(sock, (int64_t)st.st_ctim.tv_sec, &pidfd, &pid, NULL);
        if (r == -EREMOTE)
                /* A launcher is a process on this node, visible to a hostPID
                 * agent: this listener is neither (or the DaemonSet lost hostPID). */
                return vt_error_set(err, EPERM,
                                    "the process listening on the launcher's socket is outside the agent's PID "
                                    "namespace: not pod %s's (is the agent's pod hostPID?)",
                                    uid);
        if (r < 0)
                return -EAGAIN; /* the listener went away: a restart, look again */

        json_t *ids_j = json_object_get(json_object_get(pod, "status"), "containerIDs");
        const char *ids[MAX_CONTAINERS + 1] = {0};
        size_t n = 0, i;
        json_t *v;
        json_array_foreach(ids_j, i, v) {
                if (n < MAX_CONTAINERS && json_string_value(v))
                        ids[n++] = json_string_value(v);
        }
        bool reported = json_is_true(json_object_get(json_object_get(pod, "status"), "containersReported"));
        r = proc_cgroup_names_pod(pid, uid, ids, NULL);
        if (r < 0 || !pidfd_is_alive(pidfd))
                return -EAGAIN; /* exited while we looked */
        if (r == 0) {
                if (!reported)
                        return -EAGAIN; /* the kubelet has not reported the containers yet */
                return vt_error_set(err, EPERM,
                                    "the process listening on the launcher's socket (pid %d) is not in pod %s (by its "
                                    "cgroup)",
                                    (int)pid, uid);
        }
        uint64_t start = 0;
        if (proc_start_time(pid, &start, NULL) < 0 || !pidfd_is_alive(pidfd))
                return -EAGAIN;
        *ret_pid = pid;
        *ret_start_time = start;
        return 0;
}
