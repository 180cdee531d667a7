/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/setup.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "tpm/exec.h"

/* Debian's platform certificate options, reused when present. */
#define SYSTEM_LOCALCA_OPTIONS "/etc/swtpm-localca.options"

static int chown_tree_entries(int dfd, const char *dir, unsigned uid, unsigned gid, vt_error **err) {
        int dup = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
        if (dup < 0)
                return vt_error_errno(err, errno, "cannot read %s", dir);
        DIR *d = fdopendir(dup);
        if (!d) {
                close(dup);
                return vt_error_errno(err, errno, "cannot read %s", dir);
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                struct stat st;
                if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (st.st_uid == uid && st.st_gid == gid)
                        continue;
                if (fchownat(dfd, de->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = vt_error_errno(err, errno, "cannot give %s/%s to uid %u", dir, de->d_name, uid);
                        break;
                }
        }
        closedir(d);
        return r;
}

static int write_localca_config(const char *dir, vt_error **err) {
        _cleanup_free_ char *ca_conf = xasprintf("%s/swtpm-localca.conf", dir);
        _cleanup_free_ char *setup_conf = xasprintf("%s/swtpm_setup.conf", dir);
        _cleanup_free_ char *opts = xasprintf("%s/swtpm-localca.options", dir);
        _cleanup_free_ char *ca = xasprintf("statedir = %s\n"
                                            "signingkey = %s/signkey.pem\n"
                                            "issuercert = %s/issuercert.pem\n"
                                            "certserial = %s/certserial\n",
                                            dir, dir, dir, dir);
        int r = write_file_atomic(ca_conf, ca, strlen(ca), 0644, err);
        if (r < 0)
                return r;
        if (access(opts, F_OK) < 0) {
                _cleanup_free_ char *sys = NULL;
                size_t n = 0;
                if (read_full_file(SYSTEM_LOCALCA_OPTIONS, 64 * 1024, &sys, &n, NULL) < 0) {
                        sys = xstrdup("--platform-manufacturer vtpm-agent\n--platform-version 2.1\n"
                                      "--platform-model QEMU\n");
                        n = strlen(sys);
                }
                r = write_file_atomic(opts, sys, n, 0644, err);
                if (r < 0)
                        return r;
        }
        _cleanup_free_ char *setup = xasprintf("create_certs_tool = swtpm_localca\n"
                                               "create_certs_tool_config = %s\n"
                                               "create_certs_tool_options = %s\n"
                                               "active_pcr_banks = sha256\n",
                                               ca_conf, opts);
        return write_file_atomic(setup_conf, setup, strlen(setup), 0644, err);
}

int tpm_localca_prepare(const char *dir, const char *user, bool write_config, vt_error **err) {
        assert_return(dir, -EINVAL);
        int r = tpm_check_option_path("local CA", dir, err);
        if (r < 0)
                return r;
        if (mkdir(dir, 0750) < 0 && errno != EEXIST)
                return vt_error_errno(err, errno, "cannot create local CA directory %s", dir);
        if (write_config) {
                r = write_localca_config(dir, err);
                if (r < 0)
                        return r;
        }
        if (!user)
                return 0;
        unsigned uid, gid;
        r = tpm_lookup_user(user, &uid, &gid, err);
        if (r < 0)
                return r;
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return vt_error_errno(err, errno, "cannot open local CA directory %s", dir);
        struct stat st;
        if (fstat(dfd, &st) < 0)
                return vt_error_errno(err, errno, "cannot stat %s", dir);
        /* Keep the group of the directory (Debian ships it tss:root 0750). */
        if (st.st_uid != uid && fchown(dfd, uid, (gid_t)-1) < 0)
                return vt_error_errno(err, errno, "cannot give local CA directory %s to %s", dir, user);
        return chown_tree_entries(dfd, dir, uid, gid, err);
}

/* Existing state is never provisioned over: -EEXIST when there is some. */
static int refuse_existing_state(const tpm_setup_opts *o, vt_error **err) {
        int r = tpm_check_option_path("TPM state", o->state_dir, err);
        if (r < 0)
                return r;
        tpm_version existing;
        r = tpm_state_detect(o->state_dir, &existing, err);
        if (r < 0)
                return r;
        if (r > 0)
                return vt_error_set(err, EEXIST, "%s already holds TPM %s state (%s); not provisioning", o->state_dir,
                                    tpm_version_name(existing), tpm_state_permall(existing));
        return 0;
}

/* swtpm_setup's arguments, without the key's; conf is the local CA's
 * swtpm_setup.conf or NULL. Returns how many were written. */
static size_t setup_argv(const tpm_setup_opts *o, const char *conf, const char **argv) {
        size_t n = 0;
        argv[n++] = o->swtpm_setup_path ? o->swtpm_setup_path : "swtpm_setup";
        if (o->version == TPM_VERSION_2)
                argv[n++] = "--tpm2";
        argv[n++] = "--tpmstate";
        argv[n++] = o->state_dir;
        if (o->no_certs)
                argv[n++] = "--createek";
        else {
                argv[n++] = "--create-ek-cert";
                argv[n++] = "--create-platform-cert";
        }
        argv[n++] = "--lock-nvram";
        argv[n++] = "--not-overwrite";
        if (conf) {
                argv[n++] = "--config";
                argv[n++] = conf;
        }
        if (o->runas) {
                argv[n++] = "--runas";
                argv[n++] = o->runas;
        }
        if (o->swtpm_path) {
                argv[n++] = "--tpm";
                argv[n++] = o->swtpm_path;
        }
        return n;
}

/* Run swtpm_setup; a failure's message carries the tail of its output. */
static int run_swtpm_setup(const tpm_setup_opts *o, const char *const *argv, int key_fd, vt_error **err) {
        tpm_run_result res = {0};
        int r = tpm_run_in(o->sandbox, argv, key_fd >= 0 ? &key_fd : NULL, key_fd >= 0 ? 1 : 0,
                           o->timeout ? o->timeout : 60 * USEC_PER_SEC, &res, err);
        if (r < 0)
                return vt_error_prefix(err, r, "provisioning TPM state in %s: ", o->state_dir);
        if (!WIFEXITED(res.status) || WEXITSTATUS(res.status) != 0) {
                _cleanup_free_ char *st = tpm_describe_status(res.status);
                vt_buf both = {0};
                vt_buf_appends(&both, res.out);
                vt_buf_appends(&both, res.err);
                _cleanup_free_ char *tail = tpm_text_tail(both.data, both.len, 2000);
                vt_buf_free(&both);
                tpm_run_result_done(&res);
                bool ca_hint = !o->no_certs && strstr(tail, "swtpm_localca");
                return vt_error_set(err, EIO, "swtpm_setup for %s %s%s: %s", o->state_dir, st,
                                    ca_hint ? " (check that the local CA directory belongs to the swtpm user)" : "",
                                    tail);
        }
        tpm_run_result_done(&res);
        return 0;
}

int tpm_setup(const tpm_setup_opts *o, vt_error **err) {
        assert_return(o && o->state_dir, -EINVAL);
        int r = refuse_existing_state(o, err);
        if (r < 0)
                return r;
        const char *cipher = NULL;
        if (o->key) {
                cipher = tpm_key_cipher(o->key_len);
                if (!cipher)
                        return vt_error_set(err, EINVAL, "TPM state key must be 16 or 32 bytes, not %zu", o->key_len);
        }

        const char *localca = o->localca_dir ? o->localca_dir : TPM_LOCALCA_DIR_DEFAULT;
        if (!o->no_certs && (o->runas || o->localca_dir)) {
                r = tpm_localca_prepare(localca, o->runas, o->localca_dir != NULL, err);
                if (r < 0)
                        return vt_error_prefix(err, r, "preparing local CA for %s: ", o->runas ? o->runas : "swtpm_setup");
        }

        const char *argv[32];
        _cleanup_free_ char *conf = o->localca_dir && !o->no_certs ? xasprintf("%s/swtpm_setup.conf", o->localca_dir)
                                                                   : NULL;
        size_t n = setup_argv(o, conf, argv);
        _cleanup_close_ int key_fd = -1;
        _cleanup_free_ char *key_fd_s = NULL;
        if (o->key) {
                /* swtpm_setup 0.7.1 forwards this fd to swtpm as `--key fd=N,mode=CIPHER`
                 * (format defaults to hex), so the pipe carries hex digits. */
                r = tpm_key_pipe(o->key, o->key_len, true, &key_fd, err);
                if (r < 0)
                        return r;
                key_fd_s = xasprintf("%d", key_fd);
                argv[n++] = "--keyfile-fd";
                argv[n++] = key_fd_s;
                argv[n++] = "--cipher";
                argv[n++] = cipher;
        }
        argv[n] = NULL;
        r = run_swtpm_setup(o, argv, key_fd, err);
        if (r < 0)
                return r;

        r = tpm_state_detect(o->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, EIO, "swtpm_setup for %s succeeded but left no %s", o->state_dir,
                                    tpm_state_permall(o->version));
        /* swtpm_setup's swtpm writes 0640; the state is the VM's secret: 0600. */
        return tpm_state_dir_prepare(o->state_dir, o->runas, err);
}
