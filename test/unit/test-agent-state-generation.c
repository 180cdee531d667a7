/* SPDX-License-Identifier: Apache-2.0 */
/* TPM state generations on a volume (agent/state_generation.h): the root
 * until a migration; a target's generation seeded from the current one and
 * never the current one itself; the switch; pruning keeps the current one
 * and the root's files; a tenant's marker or symlink is refused, never
 * followed, never a fall-back to older state. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/rmtree.h"
#include "state_generation.h"
#include "tap.h"

static char top[] = "/tmp/test-stategen-XXXXXX";
static int vol = -1;

static void put(const char *rel, const char *text) {
        _cleanup_free_ char *p = xasprintf("%s/%s", top, rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        check(fd >= 0);
        if (fd >= 0) {
                check(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
                close(fd);
        }
}

static char *get(const char *rel) {
        char *data = NULL;
        size_t n = 0;
        int dfd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r = read_file_beneath(dfd, rel, 1 << 20, &data, &n, NULL);
        close(dfd);
        return r < 0 ? NULL : data;
}

static bool exists(const char *rel) {
        _cleanup_free_ char *p = xasprintf("%s/%s", top, rel);
        struct stat st;
        return lstat(p, &st) == 0;
}

static void fresh_volume(void) {
        if (vol >= 0)
                close(vol);
        (void)rm_rf(top, NULL);
        check(mkdir(top, 0700) == 0);
        vol = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        check(vol >= 0);
        put("tpm2-00.permall", "root-permall");
        put("vtpm-key.json", "root-header");
        put("tpm2-00.volatilestate", "root-volatile");
}

static void test_parse(void) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        check_int_eq(state_generation_parse("m-0f1e-22\n", 10, &a), 0);
        check_str_eq(a, "m-0f1e-22");
        check_int_eq(state_generation_parse("m-abc", 5, &b), 0);
        check_str_eq(b, "m-abc");
        static const char *const bad[] = {"", "\n", "m-", "x-abc", "m-../x", "m-a/b", "m-ABC", "/etc", "m-a\n\n",
                                          "m-a b", ".."};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *n = NULL;
                check_int_eq(state_generation_parse(bad[i], strlen(bad[i]), &n), -EBADMSG);
                check(!n);
        }
        char nul[] = {'m', '-', 'a', '\0', 'b'};
        char *n = NULL;
        check_int_eq(state_generation_parse(nul, sizeof(nul), &n), -EBADMSG);
        _cleanup_free_ char *longest = xasprintf("m-%064d", 0), *too_long = xasprintf("m-%065d", 0);
        check(state_generation_name_valid(longest));
        check(!state_generation_name_valid(too_long));
        _cleanup_free_ char *mig = state_generation_for_migration("5c3e7d1a-0b9e-4c1e-9d2a-1f0e8b7c6a50");
        check_str_eq(mig, "m-5c3e7d1a-0b9e-4c1e-9d2a-1f0e8b7c6a50");
        check(!state_generation_for_migration("../../etc"));
        check(!state_generation_for_migration(NULL));
}

static void test_root_until_a_migration(void) {
        fresh_volume();
        char *cur = (char *)1;
        check_int_eq(state_generation_current(vol, &cur, NULL), 0);
        check(cur == NULL);
        int fd = state_generation_open(vol, NULL, NULL);
        check(fd >= 0);
        if (fd >= 0)
                close(fd);
}

static void test_prepare_seeds_switch_prune(void) {
        fresh_volume();
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(state_generation_prepare(vol, "m-one", &err), 0);
        _cleanup_free_ char *p = get("m-one/tpm2-00.permall"), *h = get("m-one/vtpm-key.json");
        check_str_eq(p, "root-permall");
        check_str_eq(h, "root-header");
        check(!exists("m-one/tpm2-00.volatilestate")); /* the stream's, not the copy's */
        check(!exists(STATE_GENERATION_MARKER));      /* still the root's state */
        struct stat st;
        _cleanup_free_ char *dir = xasprintf("%s/m-one", top);
        check(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);

        /* The target's swtpm writes its own generation only. */
        put("m-one/tpm2-00.permall", "migrated-permall");
        check_int_eq(state_generation_switch(vol, "m-one", NULL), 0);
        _cleanup_free_ char *cur = NULL, *marker = get(STATE_GENERATION_MARKER);
        check_str_eq(marker, "m-one\n");
        check_int_eq(state_generation_current(vol, &cur, NULL), 0);
        check_str_eq(cur, "m-one");

        /* The current generation is never prepared over. */
        _cleanup_error_ vt_error *busy = NULL;
        check_int_eq(state_generation_prepare(vol, "m-one", &busy), -EBUSY);
        _cleanup_free_ char *still = get("m-one/tpm2-00.permall");
        check_str_eq(still, "migrated-permall");

        /* The next migration seeds from the current generation. */
        check_int_eq(state_generation_prepare(vol, "m-two", NULL), 0);
        _cleanup_free_ char *p2 = get("m-two/tpm2-00.permall");
        check_str_eq(p2, "migrated-permall");
        /* A failed one: m-two stays beside the current; pruning removes it only. */
        check_int_eq(state_generation_prune(vol, NULL), 1);
        check(!exists("m-two"));
        check(exists("m-one/tpm2-00.permall"));
        check(exists("tpm2-00.permall")); /* the root's files are never pruned */
}

static void test_leftover_replaced(void) {
        fresh_volume();
        _cleanup_free_ char *x = xasprintf("%s/m-x", top);
        check(mkdir(x, 0755) == 0);
        put("m-x/tpm2-00.permall", "tenant-planted");
        put("m-x/extra", "junk");
        check_int_eq(state_generation_prepare(vol, "m-x", NULL), 0);
        _cleanup_free_ char *p = get("m-x/tpm2-00.permall");
        check_str_eq(p, "root-permall");
        check(!exists("m-x/extra"));
}

/* What a tenant can plant on its volume is refused, never followed. */
static void test_hostile_volume(void) {
        fresh_volume();
        _cleanup_free_ char *outside = xasprintf("%s-outside", top);
        (void)rm_rf(outside, NULL);
        check(mkdir(outside, 0700) == 0);
        _cleanup_free_ char *victim = xasprintf("%s/tpm2-00.permall", outside);
        int fd = open(victim, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        check(fd >= 0 && write(fd, "victim", 6) == 6);
        if (fd >= 0)
                close(fd);

        /* A marker naming a path: not the agent's. */
        put(STATE_GENERATION_MARKER, "../../etc\n");
        char *cur = NULL;
        _cleanup_error_ vt_error *e1 = NULL;
        check_int_eq(state_generation_current(vol, &cur, &e1), -EBADMSG);
        check(e1 && strstr(e1->msg, "not the agent's"));
        check(!cur);
        /* ... and no prepare, prune or switch goes on over it. */
        check(state_generation_prepare(vol, "m-a", NULL) < 0);
        check(state_generation_prune(vol, NULL) < 0);

        /* A marker naming a generation that is a symlink out of the volume. */
        _cleanup_free_ char *link = xasprintf("%s/m-evil", top);
        check(symlink(outside, link) == 0);
        put(STATE_GENERATION_MARKER, "m-evil\n");
        _cleanup_error_ vt_error *e2 = NULL;
        check_int_eq(state_generation_current(vol, &cur, &e2), -ENOENT);
        check(e2 && strstr(e2->msg, "m-evil"));
        /* A marker naming a generation that is missing: no fall-back to the root. */
        put(STATE_GENERATION_MARKER, "m-gone\n");
        check_int_eq(state_generation_current(vol, &cur, NULL), -ENOENT);
        check(state_generation_switch(vol, "m-evil", NULL) < 0);

        /* A symlinked leftover of the target's name: removed, its target untouched. */
        _cleanup_free_ char *marker = xasprintf("%s/%s", top, STATE_GENERATION_MARKER);
        check(unlink(marker) == 0);
        check_int_eq(state_generation_prepare(vol, "m-evil", NULL), 0);
        struct stat st;
        check(lstat(link, &st) == 0 && S_ISDIR(st.st_mode));
        _cleanup_free_ char *v = NULL;
        size_t n = 0;
        int od = open(outside, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        check(read_file_beneath(od, "tpm2-00.permall", 64, &v, &n, NULL) == 0);
        check_str_eq(v, "victim");
        close(od);
        /* Pruning never follows a symlink either. */
        _cleanup_free_ char *link2 = xasprintf("%s/m-evil2", top);
        check(symlink(outside, link2) == 0);
        check(state_generation_prune(vol, NULL) >= 1);
        check(access(victim, F_OK) == 0);
        (void)rm_rf(outside, NULL);
}

int main(void) {
        if (!mkdtemp(top))
                return 1;
        int r = tap_run((tap_case[]){TAP_CASE(test_parse), TAP_CASE(test_root_until_a_migration),
                                     TAP_CASE(test_prepare_seeds_switch_prune), TAP_CASE(test_leftover_replaced),
                                     TAP_CASE(test_hostile_volume), {0}});
        if (vol >= 0)
                close(vol);
        (void)rm_rf(top, NULL);
        return r;
}
