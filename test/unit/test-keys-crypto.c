/* SPDX-License-Identifier: Apache-2.0 */
/* pkg/keys: secure memory, DEK generation, RFC 5649 key wrap. */
#include <openssl/crypto.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "base/alloc.h"
#include "keys/dek.h"
#include "keys/secmem.h"
#include "keys/wrap.h"
#include "tap.h"

static size_t hex2bin(const char *hex, uint8_t *out) {
        size_t n = 0;
        for (const char *p = hex; p[0] && p[1];) {
                if (*p == ' ') {
                        p++;
                        continue;
                }
                unsigned v;
                sscanf(p, "%2x", &v);
                out[n++] = (uint8_t)v;
                p += 2;
        }
        return n;
}

static long vmlck_kb(void) {
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long kb = -1;
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
                        break;
        if (f)
                fclose(f);
        return kb;
}

/* The VmFlags line of the smaps entry that contains addr. */
static char *vmflags_of(const void *addr) {
        FILE *f = fopen("/proc/self/smaps", "re");
        char line[512];
        bool in = false;
        char *flags = NULL;
        while (f && fgets(line, sizeof(line), f)) {
                unsigned long lo, hi;
                if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
                        in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
                else if (in && strncmp(line, "VmFlags:", 8) == 0) {
                        flags = xstrdup(line);
                        break;
                }
        }
        if (f)
                fclose(f);
        return flags;
}

static void test_secmem_locked_and_wiped(void) {
        long before = vmlck_kb();
        secmem *m = NULL;
        check_int_eq(secmem_new(100, &m, NULL), 0);
        check(m && m->len == 100 && m->map_len >= 100);
        check(vmlck_kb() >= before + 4);
        for (size_t i = 0; i < m->len; i++)
                check(m->data[i] == 0);
        _cleanup_free_ char *flags = vmflags_of(m->data);
        check_contains(flags, " lo"); /* locked */
        check_contains(flags, " dd"); /* not in core dumps */
        check_contains(flags, " wf"); /* wiped in fork children */
        memset(m->data, 0xA5, m->len);
        secmem_truncate(m, 10);
        check_int_eq(m->len, 10);
        check(m->data[10] == 0 && m->data[9] == 0xA5);
        secmem_free(m);
        check(vmlck_kb() <= before);
        secmem_free(NULL);
}

static void test_secmem_bad_sizes(void) {
        _cleanup_error_ vt_error *err = NULL;
        secmem *m = NULL;
        check_int_eq(secmem_new(0, &m, &err), -EINVAL);
        check(!m);
        check_int_eq(secmem_new(SECMEM_MAX + 1, &m, NULL), -EINVAL);
        _cleanup_(secmem_freep) secmem *d = NULL;
        check_int_eq(secmem_dup("abc", 3, &d, NULL), 0);
        check(d && memcmp(d->data, "abc", 3) == 0);
}

static void test_secmem_fork_child_sees_zeros(void) {
        _cleanup_(secmem_freep) secmem *m = NULL;
        check_int_eq(secmem_dup("secret!!", 8, &m, NULL), 0);
        pid_t pid = fork();
        if (pid == 0)
                _exit(m->data[0] == 0 && m->data[7] == 0 ? 0 : 1);
        int st = 0;
        waitpid(pid, &st, 0);
        check(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        check(memcmp(m->data, "secret!!", 8) == 0);
}

/* Without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0, allocation fails loudly. */
static void test_secmem_mlock_limit(void) {
        pid_t pid = fork();
        if (pid == 0) {
                cap_t caps = cap_get_proc();
                cap_value_t v = CAP_IPC_LOCK;
                cap_set_flag(caps, CAP_EFFECTIVE, 1, &v, CAP_CLEAR);
                cap_set_flag(caps, CAP_PERMITTED, 1, &v, CAP_CLEAR);
                if (cap_set_proc(caps) < 0)
                        _exit(2);
                struct rlimit rl = {0, 0};
                if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
                        _exit(3);
                vt_error *err = NULL;
                secmem *m = NULL;
                int r = secmem_new(32, &m, &err);
                bool ok = (r == -ENOMEM || r == -EPERM) && !m && err && strstr(err->msg, "RLIMIT_MEMLOCK") &&
                          strstr(err->msg, "CAP_IPC_LOCK");
                if (err)
                        printf("# %s\n", err->msg);
                fflush(stdout);
                _exit(ok ? 0 : 1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        check(WIFEXITED(st));
        check_int_eq(WEXITSTATUS(st), 0);
}

static void test_dek_random(void) {
        _cleanup_(secmem_freep) secmem *a = NULL, *b = NULL;
        check_int_eq(dek_generate(&a, NULL), 0);
        check_int_eq(dek_generate(&b, NULL), 0);
        check_int_eq(a->len, DEK_SIZE);
        check(memcmp(a->data, b->data, DEK_SIZE) != 0);
        uint8_t zero[DEK_SIZE] = {0};
        check(memcmp(a->data, zero, DEK_SIZE) != 0);
        _cleanup_free_ char *flags = vmflags_of(a->data);
        check_contains(flags, " lo");
}

/* RFC 5649 section 6: both vectors use the 192-bit KEK. */
static void test_kwp_rfc5649_vectors(void) {
        uint8_t kek[24], key[32], want[64];
        check_int_eq(hex2bin("5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8", kek), 24);

        size_t kl = hex2bin("c37b7e6492584340 bed1220780894115 5068f738", key);
        size_t wl = hex2bin("138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a", want);
        _cleanup_free_ uint8_t *w = NULL;
        size_t n = 0;
        check_int_eq(kwp_wrap(kek, 24, key, kl, &w, &n, NULL), 0);
        check_int_eq(n, wl);
        check(w && memcmp(w, want, wl) == 0);
        _cleanup_(secmem_freep) secmem *u = NULL;
        check_int_eq(kwp_unwrap(kek, 24, want, wl, &u, NULL), 0);
        check(u && u->len == kl && memcmp(u->data, key, kl) == 0);

        kl = hex2bin("466f7250617369", key);
        wl = hex2bin("afbeb0f07dfbf541 9200f2ccb50bb24f", want);
        _cleanup_free_ uint8_t *w2 = NULL;
        check_int_eq(kwp_wrap(kek, 24, key, kl, &w2, &n, NULL), 0);
        check_int_eq(n, 16);
        check(w2 && memcmp(w2, want, 16) == 0);
        _cleanup_(secmem_freep) secmem *u2 = NULL;
        check_int_eq(kwp_unwrap(kek, 24, want, wl, &u2, NULL), 0);
        check(u2 && u2->len == 7 && memcmp(u2->data, "ForPasi", 7) == 0);
}

static void test_wrap_roundtrip_and_wrong_kek(void) {
        _cleanup_(secmem_freep) secmem *kek = NULL, *kek2 = NULL, *dek = NULL, *out = NULL, *bad = NULL;
        check_int_eq(dek_generate(&kek, NULL), 0);
        check_int_eq(dek_generate(&kek2, NULL), 0);
        check_int_eq(dek_generate(&dek, NULL), 0);
        _cleanup_free_ uint8_t *w = NULL;
        size_t n = 0;
        check_int_eq(keys_wrap_local(kek, dek, &w, &n, NULL), 0);
        check_int_eq(n, 40);
        check_int_eq(keys_unwrap_local(kek, w, n, &out, NULL), 0);
        check(out && out->len == DEK_SIZE && memcmp(out->data, dek->data, DEK_SIZE) == 0);

        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(keys_unwrap_local(kek2, w, n, &bad, &err), -EBADMSG);
        check(!bad);
        check_contains(err ? err->msg : NULL, "wrong KEK");

        /* Every single-bit flip of the blob is detected. */
        int detected = 0;
        for (size_t bit = 0; bit < n * 8; bit++) {
                w[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                secmem *x = NULL;
                if (keys_unwrap_local(kek, w, n, &x, NULL) == -EBADMSG)
                        detected++;
                secmem_free(x);
                w[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        check_int_eq(detected, (int)(n * 8));

        /* Malformed lengths, wrong KEK sizes. */
        check_int_eq(keys_unwrap_local(kek, w, 39, &bad, NULL), -EINVAL);
        check_int_eq(keys_unwrap_local(kek, w, 8, &bad, NULL), -EINVAL);
        check_int_eq(kwp_unwrap(kek->data, 20, w, n, &bad, NULL), -EINVAL);
        _cleanup_(secmem_freep) secmem *short_kek = NULL;
        check_int_eq(secmem_new(16, &short_kek, NULL), 0);
        _cleanup_free_ uint8_t *w3 = NULL;
        check_int_eq(keys_wrap_local(short_kek, dek, &w3, &n, NULL), -EINVAL);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_secmem_locked_and_wiped),
                TAP_CASE(test_secmem_bad_sizes),
                TAP_CASE(test_secmem_fork_child_sees_zeros),
                TAP_CASE(test_secmem_mlock_limit),
                TAP_CASE(test_dek_random),
                TAP_CASE(test_kwp_rfc5649_vectors),
                TAP_CASE(test_wrap_roundtrip_and_wrong_kek),
                {0},
        });
}
