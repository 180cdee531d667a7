/* SPDX-License-Identifier: Apache-2.0 */
/* KubeVirt's own TPM state on a tenant's volume (tpm/kubevirt_state.h):
 * found only in libvirt's layout and only as plain files; two firmware
 * uuids are refused, not guessed; the plaintext is replaced only while it is
 * what was taken over, and keeps its owner. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/rmtree.h"
#include "tap.h"
#include "tpm/kubevirt_state.h"

#define U1 "c7902913-643b-4d31-97e9-d45ad329e5da"
#define U2 "450ab384-06c6-426a-8820-6d74288d2833"

static char *volume(void) {
        char *t = xstrdup("/tmp/test-kubevirt-state.XXXXXX");
        check(mkdtemp(t) != NULL);
        return t;
}

static void put(const char *root, const char *uuid, const char *content) {
        _cleanup_free_ char *d1 = xasprintf("%s/swtpm", root), *d2 = xasprintf("%s/%s", d1, uuid),
                            *d3 = xasprintf("%s/tpm2", d2), *f = xasprintf("%s/tpm2-00.permall", d3);
        mkdir(d1, 0755);
        mkdir(d2, 0755);
        mkdir(d3, 0755);
        FILE *fp = fopen(f, "w");
        check(fp != NULL);
        fputs(content, fp);
        fclose(fp);
}

static char *slurp(const char *root, const char *uuid) {
        _cleanup_free_ char *f = xasprintf("%s/swtpm/%s/tpm2/tpm2-00.permall", root, uuid);
        char buf[256] = "";
        FILE *fp = fopen(f, "r");
        if (!fp)
                return NULL;
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = 0;
        return xstrdup(buf);
}

static void test_find(void) {
        _cleanup_free_ char *root = volume();
        int dfd = dir_open_nofollow(root, NULL);
        kubevirt_state kv = {0};
        check_int_eq(kubevirt_state_find(dfd, &kv, NULL), 0); /* no swtpm/ */
        _cleanup_free_ char *empty_parent = xasprintf("%s/swtpm/%s", root, U2),
                            *empty = xasprintf("%s/tpm2", empty_parent);
        put(root, U1, "plain");
        check(mkdir(empty_parent, 0755) == 0 && mkdir(empty, 0755) == 0);
        _cleanup_free_ char *noise = xasprintf("%s/swtpm/not-a-uuid", root);
        mkdir(noise, 0755);
        check_int_eq(kubevirt_state_find(dfd, &kv, NULL), 1); /* U2 has no state, not-a-uuid is not libvirt's */
        check_str_eq(kv.uuid, U1);
        check_int_eq((int)kv.size, 5);
        check(memcmp(kv.data, "plain", 5) == 0);
        kubevirt_state_done(&kv);

        put(root, U2, "other");
        vt_error *err = NULL;
        check_int_eq(kubevirt_state_find(dfd, &kv, &err), -EEXIST);
        check_contains(err ? err->msg : "", "2 firmware uuids");
        vt_error_free(err);
        close(dfd);
        rm_rf(root, NULL);
}

static void test_symlink_refused(void) {
        _cleanup_free_ char *root = volume();
        _cleanup_free_ char *d = xasprintf("%s/swtpm/%s/tpm2", root, U1), *f = xasprintf("%s/tpm2-00.permall", d);
        put(root, U1, "x");
        unlink(f);
        check(symlink("/etc/shadow", f) == 0);
        int dfd = dir_open_nofollow(root, NULL);
        kubevirt_state kv = {0};
        check(kubevirt_state_find(dfd, &kv, NULL) < 0); /* never read through a tenant's link */
        close(dfd);
        rm_rf(root, NULL);
}

static void test_replace(void) {
        _cleanup_free_ char *root = volume();
        put(root, U1, "plain");
        _cleanup_free_ char *f = xasprintf("%s/swtpm/%s/tpm2/tpm2-00.permall", root, U1);
        check(chown(f, 107, 107) == 0);
        int dfd = dir_open_nofollow(root, NULL);
        kubevirt_state kv = {0};
        check_int_eq(kubevirt_state_find(dfd, &kv, NULL), 1);
        /* KubeVirt wrote a new state since: left alone. */
        put(root, U1, "newer");
        check_int_eq(kubevirt_state_replace(dfd, U1, kv.sha256, "CIPHER", 6, NULL), 0);
        _cleanup_free_ char *s1 = slurp(root, U1);
        check_str_eq(s1, "newer");
        /* Unchanged: replaced, owner kept. */
        put(root, U1, "plain");
        check(chown(f, 107, 107) == 0);
        check_int_eq(kubevirt_state_replace(dfd, U1, kv.sha256, "CIPHER", 6, NULL), 1);
        _cleanup_free_ char *s2 = slurp(root, U1);
        check_str_eq(s2, "CIPHER");
        struct stat st;
        check(stat(f, &st) == 0 && st.st_uid == 107 && st.st_gid == 107 && (st.st_mode & 0777) == 0600);
        kubevirt_state_done(&kv);
        close(dfd);
        rm_rf(root, NULL);
}

/* The agent's own VMs: a note where KubeVirt's swtpm would look, never over
 * a state KubeVirt has, owned like KubeVirt's swtpm/ directory. */
static void test_guard(void) {
        _cleanup_free_ char *root = volume();
        int dfd = dir_open_nofollow(root, NULL);
        check_int_eq(kubevirt_state_guard(dfd, U1, "note", 4, NULL), 0); /* KubeVirt made no swtpm/ here */
        _cleanup_free_ char *sw = xasprintf("%s/swtpm", root);
        check(mkdir(sw, 02775) == 0 && chown(sw, 0, 107) == 0);
        check_int_eq(kubevirt_state_guard(dfd, U1, "note", 4, NULL), 1);
        _cleanup_free_ char *s1 = slurp(root, U1);
        check_str_eq(s1, "note");
        _cleanup_free_ char *d = xasprintf("%s/swtpm/%s/tpm2", root, U1);
        struct stat st;
        check(stat(d, &st) == 0 && st.st_gid == 107 && (st.st_mode & 0070) == 0070);
        check_int_eq(kubevirt_state_guard(dfd, U1, "again", 5, NULL), 0); /* there already */
        put(root, U2, "kubevirt's");
        check_int_eq(kubevirt_state_guard(dfd, U2, "note", 4, NULL), 0); /* never over KubeVirt's state */
        _cleanup_free_ char *s2 = slurp(root, U2);
        check_str_eq(s2, "kubevirt's");
        check_int_eq(kubevirt_state_guard(dfd, "../../etc", "note", 4, NULL), -EINVAL);
        close(dfd);
        rm_rf(root, NULL);
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_find), TAP_CASE(test_symlink_refused), TAP_CASE(test_replace),
                                    TAP_CASE(test_guard), {0}});
}
