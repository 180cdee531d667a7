/* SPDX-License-Identifier: Apache-2.0 */
/* A vt_buf that held a secret leaves no copy behind when it grows, when
 * bytes are consumed, or when it is reset. Freed memory is read back through
 * /proc/self/mem (which ASan does not instrument; its quarantine keeps freed
 * chunks from being reused meanwhile). */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "tap.h"

static const char secret[] = "KEK-SECRET-0123456789abcdef-KEK-SECRET-0123456789abcdef";
/* The allocator may reuse the first bytes of a freed chunk (ASan keeps its
 * free-list link there): look for the secret's tail. */
#define TAIL (secret + 24)

/* Whether the n bytes at p (maybe freed) still hold the secret. */
static bool still_there(const void *p, size_t n) {
        char copy[512];
        int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t got = pread(fd, copy, MIN(n, sizeof(copy)), (off_t)(uintptr_t)p);
        close(fd);
        return got > 0 && memmem(copy, (size_t)got, TAIL, strlen(TAIL)) != NULL;
}

static void test_grow_wipes_old_copy(void) {
        vt_buf b = {.sensitive = true};
        vt_buf_append(&b, secret, sizeof(secret) - 1);
        const char *old = b.data;
        size_t old_cap = b.cap;
        char filler[4096];
        memset(filler, 'x', sizeof(filler));
        vt_buf_append(&b, filler, sizeof(filler)); /* grows: a new allocation */
        check(b.data != old);
        check(memcmp(b.data, secret, sizeof(secret) - 1) == 0);
        bool left = still_there(old, old_cap);
        printf("# after growing, the old allocation %s the secret\n", left ? "STILL HOLDS" : "no longer holds");
        check(!left);
        vt_buf_wipe(&b);
}

static void test_consume_and_reset_wipe(void) {
        vt_buf b = {.sensitive = true};
        vt_buf_append(&b, "header:", 7);
        vt_buf_append(&b, secret, sizeof(secret) - 1);
        vt_buf_consume(&b, 7); /* the tail moves forward: its old place is wiped */
        check(memcmp(b.data, secret, sizeof(secret) - 1) == 0);
        check(!memmem(b.data + b.len, b.cap - b.len, secret + 7, sizeof(secret) - 8));
        vt_buf_reset(&b);
        check(!memmem(b.data, b.cap, secret, 8));
        vt_buf_wipe(&b);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_grow_wipes_old_copy),
                TAP_CASE(test_consume_and_reset_wipe),
                {0},
        });
}
