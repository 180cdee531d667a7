/* SPDX-License-Identifier: Apache-2.0 */
/* The state volume's files belong to the tenant (any pod of theirs can write
 * the PVC): attacks through them on the agent, which is root on the node.
 *
 *  - a symlinked ".vtpm-rekey" plus a header with "next" must not make the
 *    recovery's roll-back delete files in a directory outside the volume;
 *  - a symlinked roll-forward must not move host files onto the volume;
 *  - the key header is never read through a symlink (a host file's content
 *    would end up in the VM's status), nor a FIFO, nor a huge file;
 *  - parser errors never quote what the file says;
 *  - the state directory itself is not followed when it is a symlink;
 *  - making state files 0600 never changes the mode of a host file that a
 *    racing tenant swaps in as a symlink. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/timeutil.h"
#include "keys/rotation.h"
#include "keys/header.h"
#include "tap.h"
#include "tpm/state.h"

#define W40 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="
#define W40B "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="
#define ENTRY(gen, w) \
        "\"provider\":\"secret\",\"kekId\":\"ns/vtpm-kek-vms#1\",\"algorithm\":\"AES-256-KWP\",\"wrappedKey\":\"" w \
        "\",\"dekGeneration\":" #gen

static const char with_next[] = "{\"version\":1," ENTRY(2, W40) ",\"next\":{" ENTRY(3, W40B) "}}";
static const char only_next[] = "{\"version\":1,\"next\":{" ENTRY(1, W40B) "}}";

static char *tmpdir(const char *what) {
        _cleanup_free_ char *t = xasprintf("/tmp/test-keys-statefiles-%s.XXXXXX", what);
        check(mkdtemp(t) != NULL);
        return TAKE_PTR(t);
}

static void put(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
        check_int_eq(write_file_atomic(p, text, strlen(text), 0644, NULL), 0);
}

static void rm_rf(const char *dir) {
        _cleanup_free_ char *cmd = xasprintf("rm -rf -- '%s'", dir);
        (void)!system(cmd);
}

static bool exists(const char *dir, const char *name) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
        struct stat st;
        return lstat(p, &st) == 0;
}

static int count_entries(const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return -1;
        int n = 0;
        for (struct dirent *de; (de = readdir(d));)
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

static void link_to(const char *target, const char *dir, const char *name) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
        check_int_eq(symlink(target, p), 0);
}

/* Hole 3, the roll-back: "next" without a complete staging directory makes
 * the recovery remove the staging directory's files. */
static void test_rekey_symlink_rollback(void) {
        _cleanup_free_ char *d = tmpdir("state"), *victim = tmpdir("host-dir");
        put(victim, "precious-1", "host data\n");
        put(victim, "precious-2", "host data\n");
        put(d, KEY_HEADER_FILE, with_next);
        put(d, "tpm2-00.permall", "OLD");
        link_to(victim, d, KEYROT_STAGING);
        _cleanup_error_ vt_error *err = NULL;
        int r = keyrot_recover(d, &err);
        printf("# keyrot_recover: %d (%s)%s\n", r, r >= 0 ? keyrot_action_name((keyrot_action)r) : "error",
               err ? "" : "");
        if (err)
                printf("#   error: %s\n", err->msg);
        int left = count_entries(victim);
        printf("# files left in the host directory %s: %d of 2\n", victim, left);
        check_int_eq(left, 2);
        check(exists(victim, "precious-1") && exists(victim, "precious-2"));
        /* The volume's own state is never lost either. */
        check(exists(d, "tpm2-00.permall"));
        rm_rf(d);
        rm_rf(victim);
}

/* The roll-forward: a staging "directory" that is a symlink to a host
 * directory holding a COMPLETE file would move host files onto the volume. */
static void test_rekey_symlink_rollforward(void) {
        _cleanup_free_ char *d = tmpdir("state"), *victim = tmpdir("host-dir");
        put(victim, "secret-host-file", "host data\n");
        put(victim, KEYROT_COMPLETE, "complete\n");
        put(d, KEY_HEADER_FILE, with_next);
        put(d, "tpm2-00.permall", "OLD");
        link_to(victim, d, KEYROT_STAGING);
        _cleanup_error_ vt_error *err = NULL;
        int r = keyrot_recover(d, &err);
        printf("# keyrot_recover: %d%s%s\n", r, err ? ": " : "", err ? err->msg : "");
        check(exists(victim, "secret-host-file"));
        check(!exists(d, "secret-host-file"));
        rm_rf(d);
        rm_rf(victim);
}

/* The header is read without following symlinks: a host file's content must
 * not come back in an error (which ends up in the TPMState's status). */
static void test_header_symlink_not_followed(void) {
        _cleanup_free_ char *d = tmpdir("state"), *host = tmpdir("host-file");
        put(host, "shadow", "HOSTSECRET:$6$abcdefgh$ijklmnop:19000:0:99999:7:::\n");
        _cleanup_free_ char *target = xasprintf("%s/shadow", host);
        link_to(target, d, KEY_HEADER_FILE);
        _cleanup_error_ vt_error *err = NULL;
        int r = keyrot_recover(d, &err);
        printf("# keyrot_recover with %s -> %s: %d: %s\n", KEY_HEADER_FILE, target, r, err ? err->msg : "(no error)");
        check(r < 0);
        check(!err || !strstr(err->msg, "HOSTSECRET"));
        /* Through the path API too. */
        _cleanup_free_ char *hp = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        _cleanup_(key_header_done) key_header h = {0};
        _cleanup_error_ vt_error *err2 = NULL;
        r = key_header_read(hp, &h, &err2);
        printf("# key_header_read: %d: %s\n", r, err2 ? err2->msg : "(no error)");
        check(r < 0 && r != -ENOENT);
        check(!err2 || !strstr(err2->msg, "HOSTSECRET"));
        rm_rf(d);
        rm_rf(host);
}

/* A FIFO as the header would hang the agent's worker forever. */
static void test_header_fifo(void) {
        _cleanup_free_ char *d = tmpdir("state");
        _cleanup_free_ char *hp = xasprintf("%s/%s", d, KEY_HEADER_FILE);
        check_int_eq(mkfifo(hp, 0600), 0);
        _cleanup_(key_header_done) key_header h = {0};
        _cleanup_error_ vt_error *err = NULL;
        pid_t pid = fork();
        if (pid == 0) {
                alarm(5);
                int r = key_header_read(hp, &h, NULL);
                _exit(r < 0 && r != -ENOENT ? 0 : 1);
        }
        int status = 0;
        check(waitpid(pid, &status, 0) == pid);
        printf("# key_header_read on a FIFO: %s\n",
               WIFSIGNALED(status) ? "hung (killed by the alarm)" : WEXITSTATUS(status) == 0 ? "refused" : "read it");
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        rm_rf(d);
}

/* Parser errors say what is wrong, never what the file says. */
static void test_header_errors_quote_nothing(void) {
        static const char *const bad[] = {
                "LEAKME-token and more",
                "{\"version\":1,\"LEAKME\":1}",
                "{\"version\":1,\"provider\":\"secret\",\"kekId\":\"a/vtpm-kek-b#1\",\"algorithm\":\"LEAKME\","
                "\"wrappedKey\":\"" W40 "\",\"dekGeneration\":1}",
                "[\"LEAKME\"",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(key_header_done) key_header h = {0};
                _cleanup_error_ vt_error *err = NULL;
                int r = key_header_parse(bad[i], strlen(bad[i]), &h, &err);
                printf("# parse #%zu: %d: %s\n", i, r, err ? err->msg : "(no error)");
                check(r < 0);
                check(err && !strstr(err->msg, "LEAKME"));
        }
}

/* The state directory itself as a symlink (to a host directory with a
 * header and "next") is not followed. */
static void test_state_dir_symlink(void) {
        _cleanup_free_ char *parent = tmpdir("parent"), *victim = tmpdir("host-dir");
        put(victim, KEY_HEADER_FILE, only_next);
        put(victim, "precious", "host data\n");
        link_to(victim, parent, "state");
        _cleanup_free_ char *d = xasprintf("%s/state", parent);
        _cleanup_error_ vt_error *err = NULL;
        int r = keyrot_recover(d, &err);
        printf("# keyrot_recover on a symlinked state directory: %d: %s\n", r, err ? err->msg : "(no error)");
        check(r < 0);
        check(exists(victim, KEY_HEADER_FILE));
        rm_rf(parent);
        rm_rf(victim);
}

/* Flips a name between a regular file and a symlink to `target`. */
typedef struct flipper {
        const char *dir, *target;
        atomic_bool stop;
} flipper;

static void *flip(void *arg) {
        flipper *f = arg;
        _cleanup_free_ char *p = xasprintf("%s/tpm2-00.permall", f->dir);
        _cleanup_free_ char *tmp_link = xasprintf("%s/.l", f->dir), *tmp_file = xasprintf("%s/.f", f->dir);
        while (!atomic_load(&f->stop)) {
                (void)unlink(tmp_link);
                (void)!symlink(f->target, tmp_link);
                (void)rename(tmp_link, p);
                int fd = open(tmp_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (fd >= 0)
                        close(fd);
                (void)rename(tmp_file, p);
        }
        return NULL;
}

static void test_prepare_race_no_chmod_outside(void) {
        _cleanup_free_ char *d = tmpdir("state"), *host = tmpdir("host-file");
        put(host, "config", "host data\n");
        _cleanup_free_ char *target = xasprintf("%s/config", host);
        check_int_eq(chmod(target, 0644), 0);
        flipper f = {.dir = d, .target = target};
        pthread_t t;
        check_int_eq(pthread_create(&t, NULL, flip, &f), 0);
        usec_t end = now_monotonic() + 3 * USEC_PER_SEC;
        int rounds = 0;
        struct stat st;
        while (now_monotonic() < end) {
                (void)tpm_state_dir_prepare(d, NULL, NULL);
                rounds++;
                if (stat(target, &st) == 0 && (st.st_mode & 0777) != 0644)
                        break;
        }
        atomic_store(&f.stop, true);
        pthread_join(t, NULL);
        check_int_eq(stat(target, &st), 0);
        printf("# after %d rounds of tpm_state_dir_prepare against a racing symlink: host file mode %04o\n", rounds,
               st.st_mode & 0777);
        check_int_eq(st.st_mode & 0777, 0644);
        rm_rf(d);
        rm_rf(host);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_rekey_symlink_rollback),
                TAP_CASE(test_rekey_symlink_rollforward),
                TAP_CASE(test_header_symlink_not_followed),
                TAP_CASE(test_header_fifo),
                TAP_CASE(test_header_errors_quote_nothing),
                TAP_CASE(test_state_dir_symlink),
                TAP_CASE(test_prepare_race_no_chmod_outside),
                {0},
        });
}
