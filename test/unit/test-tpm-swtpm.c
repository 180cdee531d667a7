/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/tpm against the real swtpm, swtpm_setup and tpm2-tools: provisioning,
 * the control channel, TPM commands on the data socket, clean stop and warm
 * restart, encryption with a key passed by fd, state probing, adoption by a
 * new process, mount namespaces. Every test leaves no swtpm behind. */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <tpm_ioctl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/fileio.h"
#include "tap.h"
#include "tpm/ctrl.h"
#include "tpm/exec.h"
#include "tpm/setup.h"
#include "tpm/swtpm.h"

#define RUNAS "tss"

static char root_dir[] = "/tmp/test-tpm-swtpm-XXXXXX";
static char *localca;
static int case_no;

typedef struct tbed {
        char *dir, *state, *ctrl, *data, *pid, *log;
} tbed;

static void tbed_free(tbed *t) {
        free(t->dir), free(t->state), free(t->ctrl), free(t->data), free(t->pid), free(t->log);
}

/* A directory per case; sockets live in a tss-writable "run" directory. */
static tbed tbed_new(const char *name) {
        tbed t = {0};
        t.dir = xasprintf("%s/%02d-%s", root_dir, ++case_no, name);
        check(mkdir(t.dir, 0755) == 0);
        t.state = xasprintf("%s/state", t.dir);
        check(mkdir(t.state, 0700) == 0);
        _cleanup_free_ char *run = xasprintf("%s/run", t.dir);
        check(mkdir(run, 0755) == 0);
        vt_error *err = NULL;
        unsigned uid, gid;
        if (tpm_lookup_user(RUNAS, &uid, &gid, &err) == 0)
                check(chown(run, uid, gid) == 0);
        vt_error_free(err);
        check(tpm_state_dir_prepare(t.state, RUNAS, NULL) == 0);
        t.ctrl = xasprintf("%s/ctrl.sock", run);
        t.data = xasprintf("%s/data.sock", run);
        t.pid = xasprintf("%s/swtpm.pid", t.dir);
        t.log = xasprintf("%s/swtpm.log", t.dir);
        return t;
}

static void print_err(vt_error *err) {
        if (err)
                printf("# error: %s\n", err->msg);
}

/* SHA-256 over every regular file of a directory (name + bytes), sorted. */
static void hash_dir(const char *dir, unsigned char out[32]) {
        struct dirent **names = NULL;
        int n = scandir(dir, &names, NULL, alphasort);
        vt_buf all = {0};
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = xasprintf("%s/%s", dir, names[i]->d_name);
                struct stat st;
                if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                        _cleanup_free_ char *data = NULL;
                        size_t len = 0;
                        if (read_full_file(p, 1 << 24, &data, &len, NULL) == 0) {
                                vt_buf_append(&all, names[i]->d_name, strlen(names[i]->d_name) + 1);
                                vt_buf_append(&all, data, len);
                        }
                }
                free(names[i]);
        }
        free(names);
        unsigned int ol = 32;
        EVP_Digest(all.data ? all.data : "", all.len, out, &ol, EVP_sha256(), NULL);
        vt_buf_free(&all);
}

static int provision(const tbed *t, const uint8_t *key, size_t key_len, tpm_version v, vt_error **err) {
        tpm_setup_opts so = {.version = v, .state_dir = t->state, .key = key, .key_len = key_len, .runas = RUNAS,
                             .localca_dir = localca};
        return tpm_setup(&so, err);
}

static tpm_swtpm_opts opts_for(const tbed *t, const uint8_t *key, size_t key_len) {
        tpm_swtpm_opts o = TPM_SWTPM_OPTS_INIT;
        o.state_dir = t->state;
        o.ctrl_path = t->ctrl;
        o.server_path = t->data;
        o.pid_file = t->pid;
        o.log_file = t->log;
        o.key = key;
        o.key_len = key_len;
        o.runas = RUNAS;
        return o;
}

static bool pid_alive(pid_t pid) {
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
        _cleanup_free_ char *s = NULL;
        if (read_full_file(p, 4096, &s, NULL, NULL) < 0)
                return false;
        const char *rp = strrchr(s, ')');
        return rp && rp[1] == ' ' && rp[2] != 'Z';
}

/* One TPM command over the data socket; returns the response length. */
static ssize_t tpm_cmd(const char *sock, const uint8_t *cmd, size_t len, uint8_t *resp, size_t max) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || write(fd, cmd, len) != (ssize_t)len) {
                close(fd);
                return -1;
        }
        ssize_t got = 0;
        while ((size_t)got < max) {
                ssize_t n = read(fd, resp + got, max - (size_t)got);
                if (n <= 0)
                        break;
                got += n;
                if (got >= 10) {
                        uint32_t sz = (uint32_t)resp[2] << 24 | (uint32_t)resp[3] << 16 | (uint32_t)resp[4] << 8 | resp[5];
                        if ((size_t)got >= sz)
                                break;
                }
        }
        close(fd);
        return got;
}

static uint32_t rc_of(const uint8_t *r) {
        return (uint32_t)r[6] << 24 | (uint32_t)r[7] << 16 | (uint32_t)r[8] << 8 | r[9];
}

static const uint8_t startup_clear[] = {0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x44, 0, 0};
static const uint8_t getrandom8[] = {0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 8};

static int sh(const char *fmt, ...) _printf_(1, 2);
static int sh(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *c = xvasprintf(fmt, ap);
        va_end(ap);
        int st = system(c);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double ms_since(usec_t t0) {
        return (double)(now_monotonic() - t0) / 1000.0;
}

static void stop_quietly(const tbed *t, pid_t pid) {
        if (pid > 0)
                check(tpm_swtpm_stop(t->ctrl, pid, 5 * USEC_PER_SEC, NULL) >= 0);
}

/* -------------------------------------------------------------------------- */

static void test_provision_once(void) {
        tbed t = tbed_new("provision");
        vt_error *err = NULL;
        usec_t t0 = now_monotonic();
        int r = provision(&t, NULL, 0, TPM_VERSION_2, &err);
        printf("# provision (EK + certs, as %s): %.0f ms\n", RUNAS, ms_since(t0));
        print_err(err);
        check_int_eq(r, 0);
        _cleanup_free_ char *permall = xasprintf("%s/tpm2-00.permall", t.state);
        struct stat st;
        check(stat(permall, &st) == 0);
        check_int_eq(st.st_mode & 07777, 0600);
        check(st.st_size > 1000);
        unsigned uid;
        check(tpm_lookup_user(RUNAS, &uid, NULL, NULL) == 0);
        check_int_eq(st.st_uid, uid);
        check(stat(t.state, &st) == 0 && (st.st_mode & 07777) == 0700);
        tpm_version v;
        check_int_eq(tpm_state_detect(t.state, &v, NULL), 1);
        check_int_eq(v, TPM_VERSION_2);

        /* Second provisioning: refused, bytes and times unchanged. */
        unsigned char before[32], after[32];
        hash_dir(t.state, before);
        struct stat st1, st2;
        stat(permall, &st1);
        vt_error_free(err);
        err = NULL;
        r = provision(&t, NULL, 0, TPM_VERSION_2, &err);
        check_int_eq(r, -EEXIST);
        check(err && strstr(err->msg, "already holds TPM 2.0 state"));
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);
        stat(permall, &st2);
        check(st1.st_mtim.tv_sec == st2.st_mtim.tv_sec && st1.st_mtim.tv_nsec == st2.st_mtim.tv_nsec);
        /* Also with a different key or version: existing state is never re-created. */
        vt_error_free(err);
        err = NULL;
        uint8_t k[32] = {1};
        check_int_eq(provision(&t, k, 32, TPM_VERSION_1_2, &err), -EEXIST);
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);

        /* The local CA belongs to the swtpm user after the run. */
        _cleanup_free_ char *sk = xasprintf("%s/signkey.pem", localca);
        check(stat(sk, &st) == 0 && st.st_uid == uid);
        vt_error_free(err);
        tbed_free(&t);
}

static void test_localca_pitfall_handled(void) {
        /* A local CA holding root-owned files (an earlier run as root) makes
         * swtpm_setup --runas tss fail; tpm_setup gives them to tss first. */
        tbed t = tbed_new("localca");
        _cleanup_free_ char *ca = xasprintf("%s/ca", t.dir);
        check(mkdir(ca, 0750) == 0);
        _cleanup_free_ char *serial = xasprintf("%s/certserial", ca);
        check(write_file_atomic(serial, "7", 1, 0644, NULL) == 0); /* root-owned */
        tpm_setup_opts so = {.state_dir = t.state, .runas = RUNAS, .localca_dir = ca};
        vt_error *err = NULL;
        int r = tpm_setup(&so, &err);
        print_err(err);
        check_int_eq(r, 0);
        unsigned uid;
        tpm_lookup_user(RUNAS, &uid, NULL, NULL);
        struct stat st;
        check(stat(serial, &st) == 0 && st.st_uid == uid);
        vt_error_free(err);

        /* The failure is reported with swtpm_setup's own words: a state
         * directory tss cannot write. */
        tbed t2 = tbed_new("setupfail");
        check(chown(t2.state, 0, 0) == 0 && chmod(t2.state, 0700) == 0);
        err = NULL;
        tpm_setup_opts so2 = {.state_dir = t2.state, .runas = RUNAS, .localca_dir = ca};
        r = tpm_setup(&so2, &err);
        check(r < 0);
        check(err && strstr(err->msg, "swtpm_setup for"));
        check(err && strstr(err->msg, "exited with status"));
        print_err(err);
        vt_error_free(err);

        err = NULL;
        tpm_setup_opts so3 = {.state_dir = "/tmp/a,b"};
        check_int_eq(tpm_setup(&so3, &err), -EINVAL);
        vt_error_free(err);
        tbed_free(&t);
        tbed_free(&t2);
}

static void test_start_ctrl_data_stop_warm(void) {
        tbed t = tbed_new("lifecycle");
        vt_error *err = NULL;
        usec_t t0 = now_monotonic();
        check_int_eq(provision(&t, NULL, 0, TPM_VERSION_2, &err), 0);
        tpm_swtpm_opts o = opts_for(&t, NULL, 0);
        pid_t pid = 0;
        int r = tpm_swtpm_start(&o, &pid, &err);
        print_err(err);
        check_int_eq(r, 0);
        check(pid > 0 && pid_alive(pid));
        check_int_eq(tpm_ctrl_init(t.ctrl, PTM_INIT_FLAG_DELETE_VOLATILE, 0, NULL, &err), 0);
        uint8_t resp[64];
        check(tpm_cmd(t.data, startup_clear, sizeof(startup_clear), resp, sizeof(resp)) == 10);
        check_int_eq(rc_of(resp), 0);
        printf("# cold: provision + start + first answer: %.0f ms\n", ms_since(t0));

        /* The pid file names the process, which runs as tss in its own session. */
        _cleanup_free_ char *pidtxt = NULL;
        check(read_full_file(t.pid, 64, &pidtxt, NULL, NULL) == 0);
        check(pidtxt && atoi(pidtxt) == pid);
        check(getsid(pid) == pid);
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d", (int)pid);
        struct stat st;
        unsigned uid;
        tpm_lookup_user(RUNAS, &uid, NULL, NULL);
        check(stat(p, &st) == 0 && st.st_uid == uid);

        uint64_t caps = 0;
        check_int_eq(tpm_ctrl_get_capability(t.ctrl, 0, &caps, &err), 0);
        check((caps & (PTM_CAP_INIT | PTM_CAP_SHUTDOWN | PTM_CAP_STOP | PTM_CAP_SET_BUFFERSIZE)) ==
              (PTM_CAP_INIT | PTM_CAP_SHUTDOWN | PTM_CAP_STOP | PTM_CAP_SET_BUFFERSIZE));
        bool est = true;
        check_int_eq(tpm_ctrl_get_tpm_established(t.ctrl, 0, &est, &err), 0);
        check(!est);
        tpm_buffersize bs = {0};
        check_int_eq(tpm_ctrl_get_buffersize(t.ctrl, 0, &bs, &err), 0);
        check(bs.size >= bs.min && bs.size <= bs.max && bs.size >= 1024);
        uint32_t cfg = 0xff;
        check_int_eq(tpm_ctrl_get_config(t.ctrl, 0, &cfg, &err), 0);
        check_int_eq(cfg & PTM_CONFIG_FLAG_FILE_KEY, 0);
        _cleanup_free_ char *info = NULL;
        check_int_eq(tpm_ctrl_get_info(t.ctrl, SWTPM_INFO_TPMSPECIFICATION | SWTPM_INFO_TPMATTRIBUTES, 0, &info, &err), 0);
        check_contains(info, "\"TPMSpecification\"");
        check_contains(info, "\"family\":\"2.0\"");
        print_err(err);

        /* Real tools through the cmd TCTI: persist an NV index. */
        check_int_eq(sh("TPM2TOOLS_TCTI='cmd:socat - UNIX-CONNECT:%s' tpm2_nvdefine 0x1500016 -C o -s 8 -a "
                        "'ownerread|ownerwrite' >/dev/null 2>&1",
                        t.data),
                     0);
        check_int_eq(sh("printf vtpmtest | TPM2TOOLS_TCTI='cmd:socat - UNIX-CONNECT:%s' tpm2_nvwrite 0x1500016 -C o "
                        "-i - >/dev/null 2>&1",
                        t.data),
                     0);
        check(tpm_cmd(t.data, getrandom8, sizeof(getrandom8), resp, sizeof(resp)) == 20);
        check_int_eq(rc_of(resp), 0);

        /* Clean stop through CMD_SHUTDOWN: no signal needed, sockets gone. */
        r = tpm_swtpm_stop(t.ctrl, pid, 5 * USEC_PER_SEC, &err);
        check_int_eq(r, 0);
        check(!pid_alive(pid));
        check(access(t.ctrl, F_OK) < 0);
        _cleanup_free_ char *permall = xasprintf("%s/tpm2-00.permall", t.state);
        check(stat(permall, &st) == 0 && (st.st_mode & 07777) == 0600);

        /* Warm restart on the same state: the NV index is still there. */
        t0 = now_monotonic();
        r = tpm_swtpm_start(&o, &pid, &err);
        check_int_eq(r, 0);
        check_int_eq(tpm_ctrl_init(t.ctrl, 0, 0, NULL, &err), 0);
        check(tpm_cmd(t.data, startup_clear, sizeof(startup_clear), resp, sizeof(resp)) == 10);
        printf("# warm: start + INIT + first answer: %.0f ms\n", ms_since(t0));
        _cleanup_free_ char *out = xasprintf("%s/nv.out", t.dir);
        check_int_eq(sh("TPM2TOOLS_TCTI='cmd:socat - UNIX-CONNECT:%s' tpm2_nvread 0x1500016 -C o -s 7 -o %s "
                        ">/dev/null 2>&1",
                        t.data, out),
                     0);
        _cleanup_free_ char *nv = NULL;
        check(read_full_file(out, 64, &nv, NULL, NULL) == 0);
        check_str_eq(nv, "vtpmtes");
        stop_quietly(&t, pid);
        check(!pid_alive(pid));
        vt_error_free(err);
        tbed_free(&t);
}

static bool proc_has_bytes(pid_t pid, const char *what, const void *needle, size_t n) {
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d/%s", (int)pid, what);
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        if (read_full_file(p, 1 << 20, &data, &len, NULL) < 0)
                return true; /* unreadable counts as failure */
        return memmem(data, len, needle, n) != NULL;
}

static void test_encrypted_key_by_fd(void) {
        tbed t = tbed_new("encrypted");
        uint8_t key[32], other[32];
        RAND_bytes(key, 32);
        RAND_bytes(other, 32);
        vt_error *err = NULL;
        int r = provision(&t, key, 32, TPM_VERSION_2, &err);
        print_err(err);
        check_int_eq(r, 0);

        /* An fd that must not leak into swtpm. */
        _cleanup_free_ char *sentinel = xasprintf("%s/sentinel", t.dir);
        int leak = open(sentinel, O_RDWR | O_CREAT, 0600); /* no O_CLOEXEC on purpose */
        check(leak >= 0);

        tpm_swtpm_opts o = opts_for(&t, key, 32);
        pid_t pid = 0;
        r = tpm_swtpm_start(&o, &pid, &err);
        print_err(err);
        check_int_eq(r, 0);
        check_int_eq(tpm_ctrl_init(t.ctrl, 0, 0, NULL, &err), 0);
        uint32_t cfg = 0;
        check_int_eq(tpm_ctrl_get_config(t.ctrl, 0, &cfg, &err), 0);
        check(cfg & PTM_CONFIG_FLAG_FILE_KEY);
        uint8_t resp[64];
        check(tpm_cmd(t.data, startup_clear, sizeof(startup_clear), resp, sizeof(resp)) == 10);

        /* The key is neither in argv nor in the environment, raw or hex. */
        char hex[65];
        for (int i = 0; i < 32; i++)
                sprintf(hex + 2 * i, "%02x", key[i]);
        check(!proc_has_bytes(pid, "cmdline", key, 32));
        check(!proc_has_bytes(pid, "environ", key, 32));
        check(!proc_has_bytes(pid, "cmdline", hex, 64));
        check(!proc_has_bytes(pid, "environ", hex, 64));
        check(!proc_has_bytes(getpid(), "environ", hex, 64));
        check(proc_has_bytes(pid, "cmdline", "fd=5,mode=aes-256-cbc,format=binary", 35));
        /* Only swtpm's own fds: none points at the sentinel file. */
        char fdd[64];
        snprintf(fdd, sizeof(fdd), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(fdd);
        check(d != NULL);
        int nfds = 0;
        for (struct dirent *de; d && (de = readdir(d));) {
                if (de->d_name[0] == '.')
                        continue;
                char lp[600], target[512] = {0};
                snprintf(lp, sizeof(lp), "%s/%s", fdd, de->d_name);
                (void)!readlink(lp, target, sizeof(target) - 1);
                check(strstr(target, "sentinel") == NULL);
                nfds++;
        }
        if (d)
                closedir(d);
        check(nfds < 12);
        close(leak);
        stop_quietly(&t, pid);

        /* The state is encrypted: no readable EK certificate text in it. */
        _cleanup_free_ char *permall = xasprintf("%s/tpm2-00.permall", t.state);
        _cleanup_free_ char *blob = NULL;
        size_t bl = 0;
        check(read_full_file(permall, 1 << 20, &blob, &bl, NULL) == 0);
        check(memmem(blob, bl, "swtpm", 5) == NULL);

        /* Probe: right key loads; wrong key and no key do not; bytes unchanged. */
        unsigned char before[32], after[32];
        hash_dir(t.state, before);
        check_int_eq(tpm_probe_state(&o, &err), 0);
        print_err(err);
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);

        tpm_swtpm_opts wrong = opts_for(&t, other, 32);
        vt_error_free(err);
        err = NULL;
        check_int_eq(tpm_probe_state(&wrong, &err), -TPM_ESTATE);
        check(err && strstr(err->msg, "cannot be loaded with the given key"));
        check(err && strstr(err->msg, "HMAC"));
        print_err(err);
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);

        tpm_swtpm_opts nokey = opts_for(&t, NULL, 0);
        vt_error_free(err);
        err = NULL;
        check_int_eq(tpm_probe_state(&nokey, &err), -TPM_ESTATE);
        check(err && strstr(err->msg, "without a key"));
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);

        /* Starting swtpm with the wrong key "works" (state is read at INIT),
         * which is why callers probe first; INIT then fails, bytes unchanged. */
        vt_error_free(err);
        err = NULL;
        r = tpm_swtpm_start(&wrong, &pid, &err);
        check_int_eq(r, 0);
        uint32_t res = 0;
        check_int_eq(tpm_ctrl_init(t.ctrl, 0, 0, &res, &err), -EBADMSG);
        check(res == 0x101);
        check(err && strstr(err->msg, "CMD_INIT"));
        stop_quietly(&t, pid);
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);
        vt_error_free(err);
        tbed_free(&t);
}

static void test_probe_corrupt_and_busy(void) {
        tbed t = tbed_new("corrupt");
        vt_error *err = NULL;
        check_int_eq(provision(&t, NULL, 0, TPM_VERSION_2, &err), 0);
        tpm_swtpm_opts o = opts_for(&t, NULL, 0);
        check_int_eq(tpm_probe_state(&o, &err), 0);
        print_err(err);

        /* Another swtpm on the directory: the probe must not call that "unreadable". */
        pid_t pid = 0;
        check_int_eq(tpm_swtpm_start(&o, &pid, &err), 0);
        check_int_eq(tpm_ctrl_init(t.ctrl, 0, 0, NULL, &err), 0);
        vt_error *e2 = NULL;
        int r = tpm_probe_state(&o, &e2);
        printf("# probe while in use: %d %s\n", r, e2 ? e2->msg : "");
        check(r != -TPM_ESTATE);
        vt_error_free(e2);
        stop_quietly(&t, pid);

        /* A torn write: the permanent state cut in half. */
        _cleanup_free_ char *permall = xasprintf("%s/tpm2-00.permall", t.state);
        struct stat st;
        check(stat(permall, &st) == 0);
        check(truncate(permall, st.st_size / 2) == 0);
        unsigned char before[32], after[32];
        hash_dir(t.state, before);
        e2 = NULL;
        check_int_eq(tpm_probe_state(&o, &e2), -TPM_ESTATE);
        print_err(e2);
        hash_dir(t.state, after);
        check(memcmp(before, after, 32) == 0);
        vt_error_free(e2);

        /* No state at all is not "unreadable". */
        tbed t2 = tbed_new("nostate");
        tpm_swtpm_opts o2 = opts_for(&t2, NULL, 0);
        e2 = NULL;
        check_int_eq(tpm_probe_state(&o2, &e2), -ENOENT);
        vt_error_free(e2);
        vt_error_free(err);
        tbed_free(&t);
        tbed_free(&t2);
}

static void test_start_failures(void) {
        tbed t = tbed_new("failures");
        vt_error *err = NULL;
        /* swtpm as tss cannot create its control socket in a root-only directory:
         * it exits early and its own words are in the error. */
        tpm_swtpm_opts o = opts_for(&t, NULL, 0);
        _cleanup_free_ char *rootonly = xasprintf("%s/rootonly", t.dir);
        check(mkdir(rootonly, 0700) == 0);
        _cleanup_free_ char *ctrl = xasprintf("%s/ctrl.sock", rootonly);
        o.ctrl_path = ctrl;
        o.server_path = NULL;
        pid_t pid = 0;
        int r = tpm_swtpm_start(&o, &pid, &err);
        check_int_eq(r, -EIO);
        check(err && strstr(err->msg, "before its control channel answered"));
        print_err(err);
        vt_error_free(err);
        err = NULL;

        /* A bad binary: the launcher reports exec's error. */
        o = opts_for(&t, NULL, 0);
        o.swtpm_path = "/nonexistent/swtpm";
        r = tpm_swtpm_start(&o, &pid, &err);
        check_int_eq(r, -ENOENT);
        check(err && strstr(err->msg, "executing swtpm"));
        vt_error_free(err);
        err = NULL;

        /* Keys of the wrong size and paths swtpm's options cannot carry. */
        uint8_t k[20] = {0};
        o = opts_for(&t, k, sizeof(k));
        check_int_eq(tpm_swtpm_start(&o, &pid, &err), -EINVAL);
        vt_error_free(err);
        err = NULL;
        o = opts_for(&t, NULL, 0);
        o.ctrl_path = "/tmp/x,mode=0777";
        check_int_eq(tpm_swtpm_start(&o, &pid, &err), -EINVAL);
        vt_error_free(err);
        tbed_free(&t);
}

/* Run fn in a separate process ("another agent"); its exit code is returned. */
static int in_process(int (*fn)(const tbed *, int), const tbed *t, int arg) {
        pid_t c = fork();
        if (c == 0)
                _exit(fn(t, arg));
        int st = 0;
        waitpid(c, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static int agent_start_then_die(const tbed *t, int unused) {
        tpm_swtpm_opts o = opts_for(t, NULL, 0);
        pid_t pid;
        if (tpm_swtpm_start(&o, &pid, NULL) < 0)
                return 1;
        if (tpm_ctrl_init(t->ctrl, 0, 0, NULL, NULL) < 0)
                return 2;
        return 0; /* "crashes" without stopping swtpm */
}

static int agent_adopt(const tbed *t, int want_busy) {
        pid_t pid = 0;
        bool busy = !want_busy;
        vt_error *err = NULL;
        int r = tpm_swtpm_adopt(t->pid, t->ctrl, NULL, 300 * USEC_PER_MSEC, &pid, &busy, &err);
        if (err)
                printf("# adopt: %s\n", err->msg);
        vt_error_free(err);
        if (r < 0)
                return 10;
        return busy == (bool)want_busy ? 0 : 11;
}

static void test_adopt_after_agent_restart(void) {
        tbed t = tbed_new("adopt");
        vt_error *err = NULL;
        check_int_eq(provision(&t, NULL, 0, TPM_VERSION_2, &err), 0);
        check_int_eq(in_process(agent_start_then_die, &t, 0), 0);
        _cleanup_free_ char *pidtxt = NULL;
        check(read_full_file(t.pid, 64, &pidtxt, NULL, NULL) == 0);
        pid_t pid = pidtxt ? atoi(pidtxt) : 0;
        check(pid > 0 && pid_alive(pid));

        uint8_t resp[64];
        check(tpm_cmd(t.data, startup_clear, sizeof(startup_clear), resp, sizeof(resp)) == 10);
        check_int_eq(rc_of(resp), 0);

        /* A new agent adopts it; the channel is free. */
        check_int_eq(in_process(agent_adopt, &t, 0), 0);

        /* QEMU-like client holding the control channel: still adopted, "busy",
         * and the guest's TPM keeps answering, undisturbed. */
        int q = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t.ctrl);
        check(connect(q, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        usleep(50 * 1000);
        check_int_eq(in_process(agent_adopt, &t, 1), 0);
        check(tpm_cmd(t.data, getrandom8, sizeof(getrandom8), resp, sizeof(resp)) == 20);
        check_int_eq(rc_of(resp), 0);
        check(pid_alive(pid));

        /* Adoption refuses a pid that is not this swtpm. */
        _cleanup_free_ char *fake = xasprintf("%s/fake.pid", t.dir);
        _cleanup_free_ char *me = xasprintf("%d\n", (int)getpid());
        check(write_file_atomic(fake, me, strlen(me), 0644, NULL) == 0);
        pid_t got = 0;
        check_int_eq(tpm_swtpm_adopt(fake, t.ctrl, NULL, 0, &got, NULL, &err), -ESRCH);
        vt_error_free(err);
        err = NULL;
        check_int_eq(tpm_swtpm_adopt(t.pid, "/run/other.sock", NULL, 0, &got, NULL, &err), -ESRCH);
        check(err && strstr(err->msg, "does not serve"));
        vt_error_free(err);
        err = NULL;

        /* Stop while the client still holds the channel: CMD_SHUTDOWN is never
         * read, so the signal fallback ends it (1), and the state still loads. */
        int r = tpm_swtpm_stop(t.ctrl, pid, 1 * USEC_PER_SEC, &err);
        check_int_eq(r, 1);
        check(!pid_alive(pid));
        close(q);
        tpm_swtpm_opts o = opts_for(&t, NULL, 0);
        check_int_eq(tpm_probe_state(&o, &err), 0);

        /* The pid file of a dead swtpm: not adopted. */
        check_int_eq(tpm_swtpm_adopt(t.pid, t.ctrl, NULL, 0, &got, NULL, &err), -ESRCH);
        vt_error_free(err);
        tbed_free(&t);
}

/* Stop through the control socket as swtpm sees it (its root, here the
 * host's): a control socket swapped for a symlink to another swtpm's must
 * not shut that other one down; the right swtpm is stopped by signal. */
static void test_stop_in_root_refuses_symlink(void) {
        tbed a = tbed_new("inroot-a"), b = tbed_new("inroot-b");
        vt_error *err = NULL;
        tpm_swtpm_opts oa = opts_for(&a, NULL, 0), ob = opts_for(&b, NULL, 0);
        pid_t pa = 0, pb = 0;
        check_int_eq(tpm_swtpm_start(&oa, &pa, &err), 0);
        check_int_eq(tpm_swtpm_start(&ob, &pb, &err), 0);
        print_err(err);
        check(unlink(b.ctrl) == 0 && symlink(a.ctrl, b.ctrl) == 0);
        check_int_eq(tpm_swtpm_stop_in_root(b.ctrl, pb, 2 * USEC_PER_SEC, &err), 1); /* by signal */
        check(!pid_alive(pb));
        check(pid_alive(pa));
        check_int_eq(tpm_ctrl_get_capability(a.ctrl, 0, NULL, &err), 0);
        /* The genuine socket: a clean CMD_SHUTDOWN, no signal. */
        check_int_eq(tpm_swtpm_stop_in_root(a.ctrl, pa, 5 * USEC_PER_SEC, &err), 0);
        check(!pid_alive(pa));
        print_err(err);
        vt_error_free(err);
        tbed_free(&a);
        tbed_free(&b);
}

static void test_tpm12(void) {
        tbed t = tbed_new("tpm12");
        uint8_t key[32];
        RAND_bytes(key, 32);
        vt_error *err = NULL;
        int r = provision(&t, key, 32, TPM_VERSION_1_2, &err);
        print_err(err);
        check_int_eq(r, 0);
        tpm_version v;
        check_int_eq(tpm_state_detect(t.state, &v, NULL), 1);
        check_int_eq(v, TPM_VERSION_1_2);
        tpm_swtpm_opts o = opts_for(&t, key, 32);
        o.version = TPM_VERSION_1_2;
        vt_error_free(err);
        err = NULL;
        check_int_eq(tpm_probe_state(&o, &err), 0);
        print_err(err);
        pid_t pid = 0;
        check_int_eq(tpm_swtpm_start(&o, &pid, &err), 0);
        check_int_eq(tpm_ctrl_init(t.ctrl, 0, 0, NULL, &err), 0);
        _cleanup_free_ char *info = NULL;
        check_int_eq(tpm_ctrl_get_info(t.ctrl, SWTPM_INFO_TPMSPECIFICATION, 0, &info, &err), 0);
        check_contains(info, "\"family\":\"1.2\"");
        /* TPM 1.2 TPM_Startup(ST_CLEAR): swtpm_setup already ran it, so the
         * TPM answers TPM_INVALID_POSTINIT (0x26) or success; either is an answer. */
        static const uint8_t startup12[] = {0x00, 0xc1, 0, 0, 0, 0x0c, 0, 0, 0, 0x99, 0, 1};
        uint8_t resp[64];
        check(tpm_cmd(t.data, startup12, sizeof(startup12), resp, sizeof(resp)) == 10);
        check(resp[0] == 0x00 && resp[1] == 0xc4);
        stop_quietly(&t, pid);
        uint8_t other[32] = {0};
        tpm_swtpm_opts w = opts_for(&t, other, 32);
        w.version = TPM_VERSION_1_2;
        vt_error_free(err);
        err = NULL;
        check_int_eq(tpm_probe_state(&w, &err), -TPM_ESTATE);
        vt_error_free(err);
        tbed_free(&t);
}

/* A "launcher": a process with its own mount namespace and a tmpfs that only
 * it can see. swtpm started with mntns_fd lives there. */
static void test_mount_namespace(void) {
        tbed t = tbed_new("mntns");
        _cleanup_free_ char *mp = xasprintf("%s/nsonly", t.dir);
        check(mkdir(mp, 0755) == 0);
        int ready[2];
        check(pipe(ready) == 0);
        pid_t launcher = fork();
        if (launcher == 0) {
                if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount("tmpfs", mp, "tmpfs", 0, "mode=0755") < 0)
                        _exit(1);
                char buf[512];
                snprintf(buf, sizeof(buf), "%s/state", mp);
                if (mkdir(buf, 0700) < 0)
                        _exit(3);
                (void)!write(ready[1], "r", 1);
                pause();
                _exit(0);
        }
        close(ready[1]);
        char c;
        check(read(ready[0], &c, 1) == 1);
        close(ready[0]);
        char nsp[64];
        snprintf(nsp, sizeof(nsp), "/proc/%d/ns/mnt", (int)launcher);
        int nsfd = open(nsp, O_RDONLY | O_CLOEXEC);
        check(nsfd >= 0);

        _cleanup_free_ char *state = xasprintf("%s/state", mp);
        _cleanup_free_ char *ctrl = xasprintf("%s/ctrl.sock", mp);
        _cleanup_free_ char *log = xasprintf("%s/swtpm.log", mp);
        tpm_swtpm_opts o = TPM_SWTPM_OPTS_INIT;
        o.state_dir = state;
        o.ctrl_path = ctrl;
        o.log_file = log;
        o.mntns_fd = nsfd;
        pid_t pid = 0;
        vt_error *err = NULL;
        int r = tpm_swtpm_start(&o, &pid, &err);
        print_err(err);
        check_int_eq(r, 0);
        /* Not on the host: the socket exists only inside the namespace. */
        check(access(ctrl, F_OK) < 0);
        _cleanup_free_ char *via = xasprintf("/proc/%d/root%s", (int)pid, ctrl);
        check_int_eq(tpm_ctrl_init(via, 0, 0, NULL, &err), 0);
        _cleanup_free_ char *permall = xasprintf("/proc/%d/root%s/tpm2-00.permall", (int)launcher, state);
        usleep(100 * 1000);
        check_int_eq(tpm_swtpm_stop(via, pid, USEC_PER_SEC, &err), 0);
        check(access(permall, F_OK) == 0);
        _cleanup_free_ char *hostpermall = xasprintf("%s/tpm2-00.permall", state);
        check(access(hostpermall, F_OK) < 0);
        print_err(err);
        close(nsfd);
        kill(launcher, SIGKILL);
        waitpid(launcher, NULL, 0);
        vt_error_free(err);
        tbed_free(&t);
}

/* No swtpm of ours survives the suite. */
static void test_no_swtpm_left(void) {
        DIR *d = opendir("/proc");
        int found = 0;
        for (struct dirent *de; d && (de = readdir(d));) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                _cleanup_free_ char *p = xasprintf("/proc/%s/cmdline", de->d_name);
                _cleanup_free_ char *cmd = NULL;
                size_t len = 0;
                if (read_full_file(p, 1 << 16, &cmd, &len, NULL) < 0)
                        continue;
                if (memmem(cmd, len, root_dir, strlen(root_dir)) && memmem(cmd, len, "socket", 6) &&
                    pid_alive(atoi(de->d_name))) {
                        printf("# left running: pid %s\n", de->d_name);
                        found++;
                }
        }
        if (d)
                closedir(d);
        check_int_eq(found, 0);
}

int main(void) {
        if (geteuid() != 0 || !mkdtemp(root_dir)) {
                printf("1..0 # SKIP needs root\n");
                return 0;
        }
        check(chmod(root_dir, 0755) == 0);
        /* Orphaned swtpm (from the "crashed agent") are reparented to us and reaped. */
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        localca = xasprintf("%s/localca", root_dir);
        int r = tap_run((tap_case[]){
                TAP_CASE(test_provision_once),
                TAP_CASE(test_localca_pitfall_handled),
                TAP_CASE(test_start_ctrl_data_stop_warm),
                TAP_CASE(test_encrypted_key_by_fd),
                TAP_CASE(test_probe_corrupt_and_busy),
                TAP_CASE(test_start_failures),
                TAP_CASE(test_adopt_after_agent_restart),
                TAP_CASE(test_stop_in_root_refuses_symlink),
                TAP_CASE(test_tpm12),
                TAP_CASE(test_mount_namespace),
                TAP_CASE(test_no_swtpm_left),
                {0},
        });
        if (!getenv("KEEP_TEST_DIRS"))
                (void)sh("rm -rf %s", root_dir);
        free(localca);
        return r;
}
