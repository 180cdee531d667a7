/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/tpm/sandbox.c and pkg/proc/cgroup.c with the real swtpm and
 * swtpm_setup: provisioning (EK certificates from a local CA) and a running
 * swtpm inside the sandbox, what the kernel says about that process (uid,
 * namespaces, capabilities, no_new_privs, seccomp, its root), and the cgroup
 * path arithmetic. */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/fileio.h"
#include "proc/cgroup.h"
#include "tap.h"
#include "tpm/ctrl.h"
#include "tpm/sandbox.h"
#include "tpm/setup.h"
#include "tpm/swtpm.h"

#define VM_UID 2100000123u

static char root_dir[] = "/tmp/test-tpm-sandbox-XXXXXX";

static void print_err(vt_error *err) {
        if (err)
                printf("# error: %s\n", err->msg);
}

static void test_cgroup_path_below(void) {
        const char *rel = NULL;
        check_int_eq(proc_cgroup_path_below("/k8s.io/abc", "/", &rel), 0);
        check_str_eq(rel, "k8s.io/abc");
        check_int_eq(proc_cgroup_path_below("/../../kubepods/pod1/c", "/../..", &rel), 0);
        check_str_eq(rel, "kubepods/pod1/c");
        check_int_eq(proc_cgroup_path_below("/a/b", "/a/b", &rel), 0);
        check_str_eq(rel, "");
        /* Outside the mount's root: a private cgroup2 mount shows "/" for the
         * agent's own cgroup; the launcher is "/../.." away. */
        check_int_eq(proc_cgroup_path_below("/../k8s.io/abc", "/", &rel), -EXDEV);
        check_int_eq(proc_cgroup_path_below("/ab/c", "/a", &rel), -EXDEV);
        check_int_eq(proc_cgroup_path_below("/a/../b", "/a", &rel), -EXDEV);
        check_int_eq(proc_cgroup_path_below("relative", "/", &rel), -EXDEV);
}

static void test_cgroups_open_self(void) {
        /* Our own cgroups are below the mounts we see (a test run on the host). */
        proc_cgroups c = PROC_CGROUPS_INIT;
        vt_error *err = NULL;
        int r = proc_cgroups_open(getpid(), &c, &err);
        print_err(err);
        check_int_eq(r, 0);
        proc_cgroups_done(&c);
        vt_error_free(err);
}

static char *status_field(pid_t pid, const char *key) {
        _cleanup_free_ char *p = xasprintf("/proc/%d/status", (int)pid), *s = NULL;
        if (read_full_file(p, 1 << 16, &s, NULL, NULL) < 0)
                return NULL;
        _cleanup_free_ char *k = xasprintf("\n%s:", key);
        char *at = strstr(s, k);
        if (!at)
                return NULL;
        at += strlen(k);
        at += strspn(at, " \t");
        return xstrndup(at, strcspn(at, " \t\n"));
}

static bool same_ns(pid_t a, pid_t b, const char *ns) {
        char pa[64], pb[64], la[128] = "", lb[128] = "";
        snprintf(pa, sizeof(pa), "/proc/%d/ns/%s", (int)a, ns);
        snprintf(pb, sizeof(pb), "/proc/%d/ns/%s", (int)b, ns);
        if (readlink(pa, la, sizeof(la) - 1) < 0 || readlink(pb, lb, sizeof(lb) - 1) < 0)
                return true;
        return strcmp(la, lb) == 0;
}

static void test_provision_and_run_sandboxed(void) {
        _cleanup_free_ char *state = xasprintf("%s/state", root_dir), *ctrl = xasprintf("%s/ctrl", root_dir),
                            *stage = xasprintf("%s/stage", root_dir), *ca = xasprintf("%s/localca", root_dir),
                            *log = xasprintf("%s/swtpm.log", root_dir);
        check(mkdir(state, 0700) == 0 && mkdir(ctrl, 0700) == 0 && mkdir(stage, 0700) == 0);
        unsigned tss_uid = 0, tss_gid = 0;
        vt_error *err = NULL;
        check_int_eq(tpm_lookup_user("tss", &tss_uid, &tss_gid, &err), 0);
        check_int_eq(tpm_localca_prepare(ca, "tss", true, &err), 0);
        print_err(err);
        check(chown(state, tss_uid, tss_gid) == 0);
        uint8_t key[32];
        check(RAND_bytes(key, sizeof(key)) == 1);

        /* swtpm_setup with certificates, as the CA's user, seeing only the
         * state and the CA. */
        tpm_sandbox sb = TPM_SANDBOX_INIT;
        sb.uid = tss_uid;
        sb.gid = tss_gid;
        sb.stage_dir = stage;
        check_int_eq(tpm_sandbox_add_bind(&sb, state, NULL, true), 0);
        check_int_eq(tpm_sandbox_add_bind(&sb, ca, NULL, true), 0);
        tpm_setup_opts so = {.version = TPM_VERSION_2, .state_dir = state, .key = key, .key_len = sizeof(key),
                             .localca_dir = ca, .sandbox = &sb};
        int r = tpm_setup(&so, &err);
        print_err(err);
        check_int_eq(r, 0);
        vt_error_free(TAKE_PTR(err));

        /* The running swtpm: the VM's own uid, its state at another path. */
        check_int_eq(tpm_state_dir_prepare_ids(state, VM_UID, VM_UID, &err), 0);
        check(chown(ctrl, VM_UID, VM_UID) == 0);
        tpm_sandbox run = TPM_SANDBOX_INIT;
        run.uid = VM_UID;
        run.gid = VM_UID;
        run.stage_dir = stage;
        check_int_eq(tpm_sandbox_add_bind(&run, state, "/var/lib/libvirt/swtpm/vm", true), 0);
        check_int_eq(tpm_sandbox_add_bind(&run, ctrl, "/run/vtpm", true), 0);
        _cleanup_free_ char *via = xasprintf("%s/vm.sock", ctrl);
        tpm_swtpm_opts o = TPM_SWTPM_OPTS_INIT;
        o.version = TPM_VERSION_2;
        o.state_dir = "/var/lib/libvirt/swtpm/vm";
        o.ctrl_path = "/run/vtpm/vm.sock";
        o.ctrl_via = via;
        o.log_file = log;
        o.key = key;
        o.key_len = sizeof(key);
        o.sandbox = &run;
        pid_t pid = 0;
        r = tpm_swtpm_start(&o, &pid, &err);
        print_err(err);
        check_int_eq(r, 0);
        if (r < 0)
                return;
        check_int_eq(tpm_ctrl_get_capability(via, 2 * USEC_PER_SEC, NULL, NULL), 0);
        _cleanup_free_ char *uid = status_field(pid, "Uid"), *cap = status_field(pid, "CapEff"),
                            *nnp = status_field(pid, "NoNewPrivs"), *sec = status_field(pid, "Seccomp");
        check_str_eq(uid, "2100000123");
        check_str_eq(cap, "0000000000000000");
        check_str_eq(nnp, "1");
        check_str_eq(sec, "2");
        const char *nss[] = {"net", "pid", "ipc", "uts", "mnt", "cgroup"};
        for (size_t i = 0; i < ELEMENTSOF(nss); i++) {
                printf("# namespace %s\n", nss[i]);
                check(!same_ns(pid, getpid(), nss[i]));
        }
        /* Its root: what the sandbox gave it, nothing of ours. */
        _cleanup_free_ char *rootp = xasprintf("/proc/%d/root/tmp", (int)pid);
        DIR *d = opendir(rootp);
        check(d != NULL);
        int entries = 0;
        for (struct dirent *de; d && (de = readdir(d));)
                if (de->d_name[0] != '.')
                        entries++;
        if (d)
                closedir(d);
        check_int_eq(entries, 0); /* a private /tmp: not ours (where root_dir is) */
        _cleanup_free_ char *agent_dir = xasprintf("/proc/%d/root%s", (int)pid, root_dir);
        check(access(agent_dir, F_OK) < 0);
        _cleanup_free_ char *usr = xasprintf("/proc/%d/root/usr/bin/swtpm", (int)pid);
        check(access(usr, X_OK) == 0);
        check_int_eq(tpm_swtpm_stop(via, pid, 5 * USEC_PER_SEC, &err), 0);
        print_err(err);
        vt_error_free(err);
}

static void test_refuses_root(void) {
        tpm_sandbox sb = TPM_SANDBOX_INIT;
        sb.stage_dir = "/tmp";
        tpm_sandbox_child c;
        check_int_eq(tpm_sandbox_clone(&sb, &c), -EINVAL);
}

int main(void) {
        if (geteuid() != 0 || !mkdtemp(root_dir)) {
                printf("1..0 # SKIP needs root\n");
                return 0;
        }
        check(chmod(root_dir, 0755) == 0);
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_cgroup_path_below),
                TAP_CASE(test_cgroups_open_self),
                TAP_CASE(test_refuses_root),
                TAP_CASE(test_provision_and_run_sandboxed),
                {0},
        });
        if (!getenv("KEEP_TEST_DIRS")) {
                _cleanup_free_ char *cmd = xasprintf("rm -rf -- '%s'", root_dir);
                (void)!system(cmd);
        }
        return r;
}
