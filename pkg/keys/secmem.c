/* SPDX-License-Identifier: Apache-2.0 */
#include "secmem.h"

#include <openssl/crypto.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "base/alloc.h"

int secmem_new(size_t len, secmem **ret, vt_error **err) {
        assert_return(ret, -EINVAL);
        if (len == 0 || len > SECMEM_MAX)
                return vt_error_set(err, EINVAL, "secure memory: bad size %zu", len);

        long page = sysconf(_SC_PAGESIZE);
        size_t ps = page > 0 ? (size_t)page : 4096;
        size_t map_len = (len + ps - 1) / ps * ps;

        /* A mapping of its own: mlock/madvise act on whole pages, so key
         * material must not share pages with ordinary heap objects. */
        void *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return vt_error_errno(err, errno, "secure memory: mmap of %zu bytes failed", map_len);

        /* The raw system call: sanitizer runtimes intercept mlock() and turn
         * it into a no-op, and the ASan build of the daemon is what the
         * end-to-end suites run. */
        if (syscall(SYS_mlock, p, map_len) < 0) {
                int e = errno;
                munmap(p, map_len);
                if (e == ENOMEM || e == EPERM) {
                        struct rlimit rl = {0};
                        (void)getrlimit(RLIMIT_MEMLOCK, &rl);
                        return vt_error_set(err, e,
                                            "secure memory: mlock of %zu bytes failed (%s); "
                                            "RLIMIT_MEMLOCK is %llu bytes: grant CAP_IPC_LOCK "
                                            "or raise the limit",
                                            map_len, strerror(e),
                                            (unsigned long long)rl.rlim_cur);
                }
                return vt_error_errno(err, e, "secure memory: mlock failed");
        }
        /* Keep keys out of core dumps, and out of children after fork():
         * a child (swtpm before exec) sees zeros. Both are best effort on
         * kernels that lack them; the lock above is the hard requirement. */
        (void)madvise(p, map_len, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
        (void)madvise(p, map_len, MADV_WIPEONFORK);
#endif

        secmem *m = xnew(secmem, 1);
        m->data = p;
        m->len = len;
        m->map_len = map_len;
        *ret = m;
        return 0;
}

int secmem_dup(const void *p, size_t len, secmem **ret, vt_error **err) {
        assert_return(p || len == 0, -EINVAL);
        secmem *m = NULL;
        int r = secmem_new(len, &m, err);
        if (r < 0)
                return r;
        memcpy(m->data, p, len);
        *ret = m;
        return 0;
}

void secmem_truncate(secmem *m, size_t len) {
        if (!m || len >= m->len)
                return;
        OPENSSL_cleanse(m->data + len, m->len - len);
        m->len = len;
}

void secmem_free(secmem *m) {
        if (!m)
                return;
        if (m->data) {
                OPENSSL_cleanse(m->data, m->map_len);
                (void)syscall(SYS_munlock, m->data, m->map_len);
                (void)munmap(m->data, m->map_len);
        }
        free(m);
}
