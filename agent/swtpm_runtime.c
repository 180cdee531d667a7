/* SPDX-License-Identifier: Apache-2.0 */
#include "swtpm_runtime.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "proc/proc.h"
#include "tpm/caps.h"
#include "tpm/setup.h"
#include "tpm/state.h"
#include "tpm/swtpm.h"

#define STOP_TIMEOUT (10 * USEC_PER_SEC)

static tpm_version version_of(const swtpm_spec *s) {
        return s->tpm2 ? TPM_VERSION_2 : TPM_VERSION_1_2;
}

static void base_sandbox(const swtpm_spec *s, uid_t uid, gid_t gid, tpm_sandbox *ret) {
        *ret = (tpm_sandbox)TPM_SANDBOX_INIT;
        ret->uid = uid;
        ret->gid = gid;
        ret->stage_dir = s->stage_dir;
}

void swtpm_work_sandbox(const swtpm_spec *s, const char *host_dir, tpm_sandbox *ret) {
        base_sandbox(s, s->uid, s->gid, ret);
        (void)tpm_sandbox_add_bind(ret, host_dir, NULL, true);
}

int swtpm_provision(const swtpm_spec *s, const char *host_state_dir, vt_error **err) {
        int r = tpm_state_detect(host_state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r > 0)
                return 1; /* existing state is never re-created */
        /* swtpm_setup runs as the local CA's user (the CA key stays that
         * user's), in a sandbox holding this state directory and the CA
         * only; the state is the VM's uid's afterwards. */
        r = tpm_localca_prepare(TPM_LOCALCA_DIR_DEFAULT, s->user, false, err);
        if (r < 0)
                return vt_error_prefix(err, r, "preparing the local CA: ");
        if (chown(host_state_dir, s->setup_uid, s->setup_gid) < 0)
                return vt_error_errno(err, errno, "cannot hand the state directory to the provisioning user");
        tpm_sandbox sb;
        base_sandbox(s, s->setup_uid, s->setup_gid, &sb);
        (void)tpm_sandbox_add_bind(&sb, host_state_dir, NULL, true);
        (void)tpm_sandbox_add_bind(&sb, TPM_LOCALCA_DIR_DEFAULT, NULL, true);
        tpm_setup_opts o = {.version = version_of(s), .state_dir = host_state_dir, .key = s->key,
                            .key_len = s->key_len, .sandbox = &sb};
        r = tpm_setup(&o, err);
        if (r == -EEXIST)
                r = 1;
        _cleanup_error_ vt_error *perr = NULL;
        int p = tpm_state_dir_prepare_ids(host_state_dir, s->uid, s->gid, &perr);
        if (r >= 0 && p < 0 && err && !*err)
                *err = TAKE_PTR(perr);
        return r < 0 ? r : p < 0 ? p : r;
}

int swtpm_probe(const swtpm_spec *s, const char *host_state_dir, vt_error **err) {
        tpm_sandbox sb;
        swtpm_work_sandbox(s, host_state_dir, &sb);
        tpm_swtpm_opts o = TPM_SWTPM_OPTS_INIT;
        o.version = version_of(s);
        o.state_dir = host_state_dir;
        o.key = s->key;
        o.key_len = s->key_len;
        o.sandbox = &sb;
        return tpm_probe_state(&o, err);
}

int swtpm_start(const swtpm_spec *s, pid_t *ret_pid, uint64_t *ret_start_time, vt_error **err) {
        assert_return(s->cgroups, -EINVAL);
        _cleanup_free_ char *log_file = xasprintf("%s/swtpm.log", s->run_dir);
        /* Through an fd of the directory: the node's path of the socket may be
         * longer than a unix socket address can be (108 bytes). */
        _cleanup_close_ int dfd = open(s->host_ctrl_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return vt_error_errno(err, errno, "cannot open the control-socket directory %s", s->host_ctrl_dir);
        _cleanup_free_ char *via = xasprintf("/proc/self/fd/%d/%s", dfd, strrchr(s->ctrl_path, '/') + 1);
        /* The VM's state and its control-socket directory, nothing else; in
         * the launcher's cgroups from its first instruction. */
        tpm_sandbox sb;
        base_sandbox(s, s->uid, s->gid, &sb);
        (void)tpm_sandbox_add_bind(&sb, s->host_state_dir, s->state_dir, true);
        (void)tpm_sandbox_add_bind(&sb, s->host_ctrl_dir, s->ctrl_dir, true);
        sb.cgroup2_fd = s->cgroups->cgroup2_fd;
        for (size_t i = 0; i < s->cgroups->n_v1 && i < TPM_SANDBOX_MAX_CGROUPS; i++)
                sb.cgroup_procs_fds[sb.n_cgroup_procs++] = s->cgroups->v1_procs_fds[i];
        tpm_swtpm_opts o = TPM_SWTPM_OPTS_INIT;
        o.version = version_of(s);
        o.state_dir = s->state_dir;
        o.ctrl_path = s->ctrl_path;
        o.ctrl_via = via;
        o.ctrl_mode = 0660;
        o.key = s->key;
        o.key_len = s->key_len;
        o.sandbox = &sb;
        /* No --pid: the agent records pid and start time itself (node
         * controller records). */
        o.log_file = log_file;
        pid_t pid = 0;
        int r = tpm_swtpm_start(&o, &pid, err);
        if (r < 0)
                return r;
        uint64_t st = 0;
        r = proc_start_time(pid, &st, err);
        if (r < 0)
                return r;
        *ret_pid = pid;
        *ret_start_time = st;
        return 0;
}

bool swtpm_alive(pid_t pid, uint64_t start_time) {
        if (pid <= 0)
                return false;
        /* Our own child that exited: reap it (only this pid, never -1, so the
         * helpers' own children keep their statuses). */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
                return false;
        uint64_t st = 0;
        if (proc_start_time(pid, &st, NULL) < 0 || st != start_time)
                return false;
        char **argv = NULL;
        if (proc_read_cmdline(pid, &argv, NULL) < 0 || !argv || !argv[0]) {
                proc_argv_free(argv); /* a zombie's cmdline is empty */
                return false;
        }
        bool is = strstr(argv[0], "swtpm") != NULL;
        proc_argv_free(argv);
        return is;
}

int swtpm_stop(pid_t pid, uint64_t start_time, const char *ctrl_in_ns, vt_error **err) {
        if (!swtpm_alive(pid, start_time))
                return 0;
        int r = ctrl_in_ns ? tpm_swtpm_stop_in_root(ctrl_in_ns, pid, STOP_TIMEOUT, err)
                           : tpm_swtpm_stop(NULL, pid, STOP_TIMEOUT, err);
        int status;
        (void)waitpid(pid, &status, WNOHANG);
        return r < 0 ? r : 0;
}

int swtpm_stop_within(pid_t pid, uint64_t start_time, const char *ctrl_in_ns, usec_t budget, vt_error **err) {
        if (!swtpm_alive(pid, start_time))
                return 0;
        /* tpm_swtpm_stop() takes at most `timeout`, then 3 s after SIGTERM and
         * 3 s after SIGKILL: the control channel only when that leaves
         * `timeout` at least a second. */
        const usec_t signals = 7 * USEC_PER_SEC;
        usec_t timeout = budget > signals + USEC_PER_SEC ? budget - signals : 0;
        if (timeout > STOP_TIMEOUT)
                timeout = STOP_TIMEOUT;
        int r = timeout && ctrl_in_ns ? tpm_swtpm_stop_in_root(ctrl_in_ns, pid, timeout, err)
                                      : tpm_swtpm_stop(NULL, pid, USEC_PER_SEC, err);
        int status;
        (void)waitpid(pid, &status, WNOHANG);
        return r < 0 ? r : 0;
}

int swtpm_capabilities(bool *ret_tpm12, bool *ret_tpm2, vt_error **err) {
        tpm_caps caps = {0};
        int r = tpm_caps_detect(NULL, NULL, 10 * USEC_PER_SEC, &caps, err);
        if (r < 0)
                return r;
        *ret_tpm12 = tpm_caps_supports_tpm12(&caps);
        *ret_tpm2 = tpm_caps_supports_tpm2(&caps);
        tpm_caps_done(&caps);
        return 0;
}
