/* SPDX-License-Identifier: Apache-2.0 */
/* swtpm's command line: built from tpm_swtpm_opts, holding fd numbers only. */
#include "tpm/launch.h"

#include "base/alloc.h"
#include "tpm/exec.h"

void tpm_strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void push(char ***v, size_t *n, char *s) {
        *v = xrealloc(*v, (*n + 2) * sizeof(char *));
        (*v)[(*n)++] = s;
        (*v)[*n] = NULL;
}

char **tpm_swtpm_build_argv(const tpm_swtpm_opts *o, bool probe, vt_error **err) {
        int r;
        if ((r = tpm_check_option_path("TPM state", o->state_dir, err)) < 0)
                return NULL;
        if (!probe && (r = tpm_check_option_path("control socket", o->ctrl_path, err)) < 0)
                return NULL;
        if (!probe && o->server_path && (r = tpm_check_option_path("data socket", o->server_path, err)) < 0)
                return NULL;
        const char *cipher = NULL;
        if (o->key && !(cipher = tpm_key_cipher(o->key_len))) {
                vt_error_set(err, EINVAL, "TPM state key must be 16 or 32 bytes, not %zu", o->key_len);
                return NULL;
        }
        _cleanup_free_ char *owner = NULL;
        if (!probe && o->ctrl_owner) {
                unsigned uid, gid;
                if (tpm_lookup_user(o->ctrl_owner, &uid, &gid, err) < 0)
                        return NULL;
                owner = xasprintf(",uid=%u,gid=%u", uid, gid);
        }
        _cleanup_free_ char *mode = (!probe && o->ctrl_mode) ? xasprintf(",mode=0%o", o->ctrl_mode) : xstrdup("");

        char **v = NULL;
        size_t n = 0;
        push(&v, &n, xstrdup(o->swtpm_path ? o->swtpm_path : "swtpm"));
        push(&v, &n, xstrdup("socket"));
        if (o->version == TPM_VERSION_2)
                push(&v, &n, xstrdup("--tpm2"));
        push(&v, &n, xstrdup("--tpmstate"));
        push(&v, &n, xasprintf("dir=%s,mode=0600", o->state_dir));
        push(&v, &n, xstrdup("--ctrl"));
        if (probe)
                push(&v, &n, xasprintf("type=unixio,clientfd=%d", TPM_CHILD_FD_CTRL));
        else
                push(&v, &n, xasprintf("type=unixio,path=%s%s%s", o->ctrl_path, mode, owner ? owner : ""));
        if (!probe && o->server_path) {
                push(&v, &n, xstrdup("--server"));
                push(&v, &n, xasprintf("type=unixio,path=%s%s%s", o->server_path, mode, owner ? owner : ""));
        }
        push(&v, &n, xstrdup("--log"));
        push(&v, &n, xasprintf("fd=%d,level=%d", TPM_CHILD_FD_LOG, o->log_level > 0 ? o->log_level : 1));
        if (!probe && o->pid_file) {
                push(&v, &n, xstrdup("--pid"));
                push(&v, &n, xasprintf("fd=%d", TPM_CHILD_FD_PID));
        }
        if (o->key) {
                push(&v, &n, xstrdup("--key"));
                push(&v, &n, xasprintf("fd=%d,mode=%s,format=binary", TPM_CHILD_FD_KEY, cipher));
        }
        if (o->runas) {
                push(&v, &n, xstrdup("--runas"));
                push(&v, &n, xstrdup(o->runas));
        }
        if (o->sandbox) {
                /* swtpm's own filter on top of the sandbox: a syscall it never
                 * needs (exec, mount, ptrace, ...) kills it. */
                push(&v, &n, xstrdup("--seccomp"));
                push(&v, &n, xstrdup("action=kill"));
        }
        return v;
}

char **tpm_swtpm_argv(const tpm_swtpm_opts *o, vt_error **err) {
        if (!o) {
                vt_error_set(err, EINVAL, "no options");
                return NULL;
        }
        return tpm_swtpm_build_argv(o, false, err);
}

int tpm_swtpm_prepare(const tpm_swtpm_opts *o, bool probe, char ***ret_argv, int *ret_key_fd, vt_error **err) {
        char **argv = tpm_swtpm_build_argv(o, probe, err);
        if (!argv)
                return err && *err ? -(*err)->code : -EINVAL;
        int key_fd = -1;
        if (o->key) {
                int r = tpm_key_pipe(o->key, o->key_len, false, &key_fd, err);
                if (r < 0) {
                        tpm_strv_free(argv);
                        return r;
                }
        }
        *ret_argv = argv;
        *ret_key_fd = key_fd;
        return 0;
}
