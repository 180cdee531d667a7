/* SPDX-License-Identifier: Apache-2.0 */
#include "keys/rotation.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/timeutil.h"
#include "keys/dek.h"
#include "keys/provider.h"
#include "tpm/swtpm.h"

#ifdef VTPM_TEST_HOOKS
void keyrot_fault(const char *point) {
        /* TEST ONLY (see rotation.h): simulates a crash at `point`. */
        const char *want = getenv("VTPM_AGENT_FAULT");
        if (want && point && strcmp(want, point) == 0)
                _exit(99);
}
#endif

/* An expected failure (no header yet) that the caller goes on from. */
static void forget_error(vt_error **err) {
        if (err) {
                vt_error_free(*err);
                *err = NULL;
        }
}

keyrot_action keyrot_decide(bool header_has_next, bool staging_exists, bool staging_complete) {
        if (header_has_next)
                /* The marker is written only after every staged file is synced
                 * and verified: with it, the new state is whole. */
                return staging_exists && staging_complete ? KEYROT_ROLL_FORWARD : KEYROT_ROLL_BACK;
        /* "next" is promoted before staging is removed: leftovers only. */
        return staging_exists ? KEYROT_CLEAN_STAGING : KEYROT_NOTHING;
}

const char *keyrot_action_name(keyrot_action a) {
        switch (a) {
        case KEYROT_NOTHING:
                return "nothing";
        case KEYROT_CLEAN_STAGING:
                return "removed a leftover staging directory";
        case KEYROT_ROLL_FORWARD:
                return "finished an interrupted re-encryption (new key, new state)";
        case KEYROT_ROLL_BACK:
                return "undid an interrupted re-encryption (old key, old state)";
        }
        return "?";
}

/* Regular files of the staging directory that are state (not the marker,
 * not swtpm's lock file). */
static bool staged_state_file(int sfd, const struct dirent *de) {
        struct stat st;
        return de->d_name[0] != '.' && strcmp(de->d_name, KEYROT_COMPLETE) != 0 &&
               fstatat(sfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* The staging directory, opened beneath the state directory without
 * following anything: a tenant's symlink there is -ELOOP, never followed. */
static int open_staging(int dfd, vt_error **err) {
        int fd = openat_beneath(dfd, KEYROT_STAGING, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return vt_error_errno(err, -fd, "cannot open %s", KEYROT_STAGING);
        return fd;
}

typedef enum staged_which {
        STAGED_ALL,   /* every entry but "." and ".." */
        STAGED_STATE, /* staged_state_file() only */
} staged_which;

/* fn(sfd, name, userdata, err) for each entry of the staging directory sfd,
 * stopping at the first that fails. */
static int staging_foreach(int sfd, staged_which which, int (*fn)(int, const char *, void *, vt_error **),
                           void *userdata, vt_error **err) {
        int dup = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
        DIR *d = dup < 0 ? NULL : fdopendir(dup);
        if (!d) {
                int e = errno;
                if (dup >= 0)
                        close(dup);
                return vt_error_errno(err, e, "cannot read %s", KEYROT_STAGING);
        }
        int r = 0;
        for (struct dirent *de; r >= 0 && (de = readdir(d));) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                    (which == STAGED_STATE && !staged_state_file(sfd, de)))
                        continue;
                r = fn(sfd, de->d_name, userdata, err);
        }
        closedir(d);
        return r;
}

static int unlink_entry(int sfd, const char *name, void *userdata, vt_error **err) {
        if (unlinkat(sfd, name, 0) == 0 || errno == ENOENT)
                return 0;
        if (errno == EISDIR && unlinkat(sfd, name, AT_REMOVEDIR) == 0)
                return 0;
        return vt_error_errno(err, errno, "cannot remove an entry of %s", KEYROT_STAGING);
}

static int move_entry(int sfd, const char *name, void *userdata, vt_error **err) {
        if (renameat(sfd, name, *(const int *)userdata, name) < 0)
                return vt_error_errno(err, errno, "cannot move a staged file into place");
        return 0;
}

static int sync_entry(int sfd, const char *name, void *userdata, vt_error **err) {
        return fsync_beneath(sfd, name, err);
}

static int remove_staging(int dfd, vt_error **err) {
        struct stat st;
        if (fstatat(dfd, KEYROT_STAGING, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return vt_error_errno(err, errno, "cannot check %s", KEYROT_STAGING);
        }
        if (!S_ISDIR(st.st_mode)) {
                /* Not ours (a symlink or file a tenant put there): the name
                 * goes, never what it points to. */
                if (unlinkat(dfd, KEYROT_STAGING, 0) < 0 && errno != ENOENT)
                        return vt_error_errno(err, errno, "cannot remove %s", KEYROT_STAGING);
                return fsync_beneath(dfd, ".", err);
        }
        _cleanup_close_ int sfd = open_staging(dfd, err);
        if (sfd < 0)
                return sfd;
        int r = staging_foreach(sfd, STAGED_ALL, unlink_entry, NULL, err);
        if (r < 0)
                return r;
        if (unlinkat(dfd, KEYROT_STAGING, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return vt_error_errno(err, errno, "cannot remove %s", KEYROT_STAGING);
        return fsync_beneath(dfd, ".", err);
}

/* Staged regular files over the live ones (each rename atomic), then sync. */
static int move_staged(int dfd, vt_error **err) {
        _cleanup_close_ int sfd = open_staging(dfd, err);
        if (sfd < 0)
                return sfd;
        int r = staging_foreach(sfd, STAGED_STATE, move_entry, &dfd, err);
        if (r < 0)
                return r;
        return fsync_beneath(dfd, ".", err);
}

/* Every staged file and the directory itself on stable storage. */
static int sync_staging(int sfd, vt_error **err) {
        int r = staging_foreach(sfd, STAGED_STATE, sync_entry, NULL, err);
        if (r < 0)
                return r;
        return fsync_beneath(sfd, ".", err);
}

/* "next" becomes the current key. */
static int promote(int dfd, const key_header *h, vt_error **err) {
        _cleanup_(key_header_done) key_header n = {0};
        key_header_copy_entry(h->next, &n);
        return key_header_writeat(dfd, &n, KEYROT_FAULT_HOOK, "dek-promote-tmp", err);
}

static int roll_forward(int dfd, const key_header *h, vt_error **err) {
        int r = move_staged(dfd, err);
        if (r < 0)
                return r;
        KEYROT_FAULT("dek-renamed");
        r = promote(dfd, h, err);
        if (r < 0)
                return r;
        return remove_staging(dfd, err);
}

/* Staging goes first, then "next": a crash in between rolls back again. */
static int roll_back(int dfd, const key_header *h, vt_error **err) {
        int r = remove_staging(dfd, err);
        if (r < 0)
                return r;
        if (!key_header_has_current(h)) {
                /* Encryption of unencrypted state undone: no header at all. */
                if (unlinkat(dfd, KEY_HEADER_FILE, 0) < 0 && errno != ENOENT)
                        return vt_error_errno(err, errno, "cannot remove %s", KEY_HEADER_FILE);
                return fsync_beneath(dfd, ".", err);
        }
        _cleanup_(key_header_done) key_header c = {0};
        key_header_copy_entry(h, &c);
        return key_header_writeat(dfd, &c, NULL, NULL, err);
}

static int open_state_dir(const char *state_dir, vt_error **err) {
        int fd = dir_open_nofollow(state_dir, err);
        if (fd < 0)
                (void)vt_error_prefix(err, fd, "TPM state directory: ");
        return fd;
}

int keyrot_recover_at(int dfd, vt_error **err) {
        /* A header write that never got renamed: the old header stands. */
        (void)unlinkat(dfd, KEY_HEADER_FILE ".tmp", 0);
        _cleanup_(key_header_done) key_header h = {0};
        int r = key_header_readat(dfd, &h, err);
        bool have = r == 0;
        if (r == -ENOENT)
                forget_error(err);
        else if (r < 0)
                return r;
        struct stat st;
        bool exists = fstatat(dfd, KEYROT_STAGING, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        bool complete = false;
        if (exists) {
                _cleanup_close_ int sfd = open_staging(dfd, err);
                if (sfd < 0)
                        return sfd;
                complete = fstatat(sfd, KEYROT_COMPLETE, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
        }
        keyrot_action a = keyrot_decide(have && h.next, exists, complete);
        switch (a) {
        case KEYROT_NOTHING:
                /* Not a directory (a tenant's symlink or file): only its name goes. */
                if (!exists && fstatat(dfd, KEYROT_STAGING, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    (r = remove_staging(dfd, err)) < 0)
                        break;
                return a;
        case KEYROT_CLEAN_STAGING:
                r = remove_staging(dfd, err);
                break;
        case KEYROT_ROLL_FORWARD:
                r = roll_forward(dfd, &h, err);
                break;
        case KEYROT_ROLL_BACK:
                r = roll_back(dfd, &h, err);
                break;
        }
        if (r < 0) {
                (void)vt_error_prefix(err, r, "recovering an interrupted key rotation: ");
                return r;
        }
        return a;
}

int keyrot_recover(const char *state_dir, vt_error **err) {
        assert_return(state_dir, -EINVAL);
        _cleanup_close_ int dfd = open_state_dir(state_dir, err);
        if (dfd < 0)
                return dfd;
        return keyrot_recover_at(dfd, err);
}

/* Re-wrap one entry under kek_id; checks that the new wrapping unwraps to
 * the same DEK before anyone relies on it. */
static int rewrap_entry(keymgr *km, const key_subject *subject, const char *kek_id, key_header *entry, vt_error **err) {
        _cleanup_secmem_ secmem *dek = NULL;
        int r = keymgr_unwrap(km, subject, entry, &dek, err);
        if (r < 0)
                return r;
        _cleanup_(key_header_done) key_header n = {0};
        key_header_copy_entry(entry, &n);
        r = keymgr_wrap(km, subject, kek_id, NULL, dek, &n, err);
        if (r < 0)
                return r;
        _cleanup_secmem_ secmem *check = NULL;
        r = keymgr_unwrap(km, subject, &n, &check, err);
        if (r < 0) {
                (void)vt_error_prefix(err, r, "the re-wrapped key does not unwrap: ");
                return r;
        }
        if (check->len != dek->len || CRYPTO_memcmp(check->data, dek->data, dek->len) != 0)
                return vt_error_set(err, EBADMSG, "the re-wrapped key unwraps to a different key");
        key_header *next = entry->next;
        entry->next = NULL;
        key_header_done(entry);
        *entry = n;
        entry->next = next;
        n = (key_header){0};
        return 0;
}

int keyrot_rotate_kek_at(keymgr *km, const key_subject *subject, int dfd, const char *request, char **ret_kek_id,
                         vt_error **err) {
        assert_return(km && subject && request, -EINVAL);
        if (!keys_rotation_id_valid(request))
                return vt_error_set(err, EINVAL,
                                    "KEK rotation request \"%.64s\" is not a valid id (1..63 of A-Z a-z 0-9 . _ -)",
                                    request);
        _cleanup_(key_header_done) key_header h = {0};
        int r = key_header_readat(dfd, &h, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *kek_id = NULL;
        r = keymgr_kek_version(km, subject, request, &kek_id, err);
        if (r < 0)
                return r;
        bool cur_done = !key_header_has_current(&h) || strcmp(h.kek_id, kek_id) == 0;
        bool next_done = !h.next || strcmp(h.next->kek_id, kek_id) == 0;
        if (cur_done && next_done) {
                /* Only an id we derived, never one read from the volume. */
                if (ret_kek_id)
                        *ret_kek_id = TAKE_PTR(kek_id);
                return 0;
        }
        if (!cur_done && (r = rewrap_entry(km, subject, kek_id, &h, err)) < 0)
                return r;
        if (!next_done && (r = rewrap_entry(km, subject, kek_id, h.next, err)) < 0)
                return r;
        r = key_header_writeat(dfd, &h, KEYROT_FAULT_HOOK, "kek-header-tmp", err);
        if (r < 0)
                return r;
        if (ret_kek_id)
                *ret_kek_id = TAKE_PTR(kek_id);
        return 1;
}

int keyrot_rotate_kek(keymgr *km, const key_subject *subject, const char *state_dir, const char *request,
                      char **ret_kek_id, vt_error **err) {
        assert_return(state_dir, -EINVAL);
        _cleanup_close_ int dfd = open_state_dir(state_dir, err);
        if (dfd < 0)
                return dfd;
        return keyrot_rotate_kek_at(km, subject, dfd, request, ret_kek_id, err);
}

/* The staging directory is still the one we made (a tenant may have swapped
 * in something else while swtpm wrote to it by path). */
static int same_staging(int dfd, int sfd, vt_error **err) {
        struct stat a, b;
        if (fstat(sfd, &a) < 0 || fstatat(dfd, KEYROT_STAGING, &b, AT_SYMLINK_NOFOLLOW) < 0 ||
            a.st_dev != b.st_dev || a.st_ino != b.st_ino)
                return vt_error_set(err, EXDEV, "%s was replaced during the re-encryption", KEYROT_STAGING);
        return 0;
}

/* Whether to re-encrypt: 1 to go on (*h read when the state is encrypted),
 * 0 when this request made the current DEK already. */
static int reencrypt_check(int dfd, const char *state_dir, const char *request, key_header *h, vt_error **err) {
        struct stat st;
        if (fstatat(dfd, KEYROT_STAGING, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return vt_error_set(err, EBUSY, "%s exists: recover first", KEYROT_STAGING);
        int r = key_header_readat(dfd, h, err);
        if (r == -ENOENT && !request) {
                forget_error(err);
                r = tpm_state_detect_at(dfd, NULL, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        return vt_error_set(err, ENOENT, "no TPM state in %s to encrypt", state_dir);
                return 1;
        }
        if (r < 0)
                return r;
        if (!request)
                return vt_error_set(err, EEXIST, "the state in %s is encrypted already", state_dir);
        if (h->next)
                return vt_error_set(err, EBUSY, "the key header has a pending key: recover first");
        if (h->dek_request && strcmp(h->dek_request, request) == 0)
                return 0; /* this request made the current DEK */
        return 1;
}

/* 1. The new DEK, wrapped, on the volume as "next" before anything uses
 *    it: under the current entry's KEK (the provider checks it is the
 *    scope's), or the scope's current KEK. */
static int write_next_key(keymgr *km, const key_subject *subject, int dfd, const char *request, key_header *h,
                          secmem **ret_dek, vt_error **err) {
        _cleanup_secmem_ secmem *dek = NULL;
        int r = dek_generate(&dek, err);
        if (r < 0)
                return r;
        key_header *next = xnew(key_header, 1);
        h->next = next;
        r = keymgr_wrap(km, subject, key_header_has_current(h) ? h->kek_id : NULL, NULL, dek, next, err);
        if (r < 0)
                return r;
        char now[40];
        format_rfc3339(now_realtime(), now);
        next->dek_generation = key_header_has_current(h) ? h->dek_generation + 1 : 1;
        next->created_at = xstrdup(now);
        next->dek_request = request ? xstrdup(request) : NULL;
        r = key_header_writeat(dfd, h, NULL, NULL, err);
        if (r < 0)
                return r;
        *ret_dek = TAKE_PTR(dek);
        return 0;
}

/* 2. swtpm copies the state into staging under the new key. 3. It loads
 *    with the new key, it is on disk, and the marker says so. */
static int stage_state(int dfd, const char *state_dir, const keyrot_tpm *t, const secmem *old, const secmem *dek,
                       vt_error **err) {
        _cleanup_free_ char *staging = xasprintf("%s/%s", state_dir, KEYROT_STAGING);
        tpm_swtpm_opts from = TPM_SWTPM_OPTS_INIT, to = TPM_SWTPM_OPTS_INIT;
        from.version = to.version = t->version;
        from.runas = to.runas = t->sandbox ? NULL : t->runas;
        from.sandbox = to.sandbox = t->sandbox;
        from.state_dir = state_dir;
        from.key = old ? old->data : NULL;
        from.key_len = old ? old->len : 0;
        to.state_dir = staging;
        to.key = dek->data;
        to.key_len = dek->len;
        if (mkdirat(dfd, KEYROT_STAGING, 0700) < 0)
                return vt_error_errno(err, errno, "cannot create %s", KEYROT_STAGING);
        _cleanup_close_ int sfd = open_staging(dfd, err);
        if (sfd < 0)
                return sfd;
        int r = t->sandbox ? tpm_state_dir_prepare_ids_at(sfd, t->sandbox->uid, t->sandbox->gid, err)
                           : tpm_state_dir_prepare_at(sfd, t->runas, err);
        if (r >= 0)
                r = tpm_copy_state(&from, &to, err);
        if (r >= 0)
                KEYROT_FAULT("dek-staged");
        if (r >= 0)
                r = tpm_probe_state(&to, err);
        if (r >= 0)
                r = same_staging(dfd, sfd, err);
        if (r >= 0)
                r = sync_staging(sfd, err);
        if (r >= 0)
                r = write_file_beneath(sfd, KEYROT_COMPLETE, "complete\n", 9, 0600, NULL, NULL, err);
        return r;
}

int keyrot_reencrypt(keymgr *km, const key_subject *subject, const char *state_dir, const char *request,
                     const keyrot_tpm *t, secmem **ret_dek, vt_error **err) {
        assert_return(km && subject && state_dir && t && ret_dek, -EINVAL);
        if (request && !keys_rotation_id_valid(request))
                return vt_error_set(err, EINVAL,
                                    "DEK rotation request \"%.64s\" is not a valid id (1..63 of A-Z a-z 0-9 . _ -)",
                                    request);
        _cleanup_close_ int dfd = open_state_dir(state_dir, err);
        if (dfd < 0)
                return dfd;
        _cleanup_(key_header_done) key_header h = {0};
        int r = reencrypt_check(dfd, state_dir, request, &h, err);
        if (r <= 0)
                return r;
        _cleanup_secmem_ secmem *old = NULL;
        if (key_header_has_current(&h) && (r = keymgr_unwrap(km, subject, &h, &old, err)) < 0)
                return r;
        _cleanup_secmem_ secmem *dek = NULL;
        r = write_next_key(km, subject, dfd, request, &h, &dek, err);
        if (r < 0)
                return r;
        KEYROT_FAULT("dek-next-written");
        r = stage_state(dfd, state_dir, t, old, dek, err);
        if (r < 0) {
                _cleanup_error_ vt_error *rerr = NULL;
                if (roll_back(dfd, &h, &rerr) < 0)
                        (void)vt_error_prefix(err, r, "(and undoing it failed: %s) ", rerr->msg);
                return r;
        }
        KEYROT_FAULT("dek-complete");
        /* 4. Past the marker, only forward: a failure here is finished by
         *    keyrot_recover() at the next attempt. */
        r = roll_forward(dfd, &h, err);
        if (r < 0)
                return r;
        *ret_dek = TAKE_PTR(dek);
        return 1;
}
