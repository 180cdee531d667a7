/* SPDX-License-Identifier: Apache-2.0 */
#include "key_rotation.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/timeutil.h"
#include "keys/dek.h"
#include "keys/provider.h"
#include "tpm/swtpm.h"

void keyrot_fault(const char *point) {
        /* TEST ONLY (see key_rotation.h): simulates a crash at `point`. */
        const char *want = getenv("VTPM_AGENT_FAULT");
        if (want && point && strcmp(want, point) == 0)
                _exit(99);
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

static int fsync_path(const char *path, bool dir, vt_error **err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (dir ? O_DIRECTORY : 0));
        if (fd < 0 || fsync(fd) < 0)
                return vt_error_errno(err, errno, "cannot sync %s", path);
        return 0;
}

/* Regular files of the staging directory that are state (not the marker,
 * not swtpm's lock file). */
static bool staged_state_file(const struct dirent *de) {
        return de->d_name[0] != '.' && strcmp(de->d_name, KEYROT_COMPLETE) != 0;
}

static int remove_staging(const char *state_dir, vt_error **err) {
        _cleanup_free_ char *staging = xasprintf("%s/%s", state_dir, KEYROT_STAGING);
        DIR *d = opendir(staging);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                return vt_error_errno(err, errno, "cannot open %s", staging);
        }
        for (struct dirent *de; (de = readdir(d));) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
                        int r = vt_error_errno(err, errno, "cannot remove %s/%s", staging, de->d_name);
                        closedir(d);
                        return r;
                }
        }
        closedir(d);
        if (rmdir(staging) < 0 && errno != ENOENT)
                return vt_error_errno(err, errno, "cannot remove %s", staging);
        return fsync_path(state_dir, true, err);
}

/* Staged files over the live ones (each rename atomic), then sync. */
static int move_staged(const char *state_dir, vt_error **err) {
        _cleanup_free_ char *staging = xasprintf("%s/%s", state_dir, KEYROT_STAGING);
        DIR *d = opendir(staging);
        if (!d)
                return vt_error_errno(err, errno, "cannot open %s", staging);
        int r = 0;
        for (struct dirent *de; (de = readdir(d));) {
                if (!staged_state_file(de))
                        continue;
                _cleanup_free_ char *to = xasprintf("%s/%s", state_dir, de->d_name);
                if (renameat(dirfd(d), de->d_name, AT_FDCWD, to) < 0) {
                        r = vt_error_errno(err, errno, "cannot move %s/%s into place", staging, de->d_name);
                        break;
                }
        }
        closedir(d);
        if (r < 0)
                return r;
        return fsync_path(state_dir, true, err);
}

/* Every staged file and the directory itself on stable storage. */
static int sync_staging(const char *staging, vt_error **err) {
        DIR *d = opendir(staging);
        if (!d)
                return vt_error_errno(err, errno, "cannot open %s", staging);
        int r = 0;
        for (struct dirent *de; r >= 0 && (de = readdir(d));) {
                if (!staged_state_file(de))
                        continue;
                _cleanup_free_ char *p = xasprintf("%s/%s", staging, de->d_name);
                r = fsync_path(p, false, err);
        }
        closedir(d);
        if (r < 0)
                return r;
        return fsync_path(staging, true, err);
}

static char *header_path(const char *state_dir) {
        return xasprintf("%s/%s", state_dir, KEY_HEADER_FILE);
}

/* "next" becomes the current key. */
static int promote(const char *state_dir, const key_header *h, vt_error **err) {
        _cleanup_(key_header_done) key_header n = {0};
        key_header_copy_entry(h->next, &n);
        _cleanup_free_ char *path = header_path(state_dir);
        return key_header_write_hooked(path, &n, keyrot_fault, "dek-promote-tmp", err);
}

static int roll_forward(const char *state_dir, const key_header *h, vt_error **err) {
        int r = move_staged(state_dir, err);
        if (r < 0)
                return r;
        keyrot_fault("dek-renamed");
        r = promote(state_dir, h, err);
        if (r < 0)
                return r;
        return remove_staging(state_dir, err);
}

/* Staging goes first, then "next": a crash in between rolls back again. */
static int roll_back(const char *state_dir, const key_header *h, vt_error **err) {
        int r = remove_staging(state_dir, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = header_path(state_dir);
        if (!key_header_has_current(h)) {
                /* Encryption of unencrypted state undone: no header at all. */
                if (unlink(path) < 0 && errno != ENOENT)
                        return vt_error_errno(err, errno, "cannot remove %s", path);
                return fsync_path(state_dir, true, err);
        }
        _cleanup_(key_header_done) key_header c = {0};
        key_header_copy_entry(h, &c);
        return key_header_write_hooked(path, &c, NULL, NULL, err);
}

int keyrot_recover(const char *state_dir, vt_error **err) {
        assert_return(state_dir, -EINVAL);
        _cleanup_free_ char *path = header_path(state_dir);
        _cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
        (void)unlink(tmp); /* a header write that never got renamed: the old header stands */
        _cleanup_(key_header_done) key_header h = {0};
        int r = key_header_read(path, &h, err);
        bool have = r == 0;
        if (r == -ENOENT) {
                vt_error_free(err ? *err : NULL);
                if (err)
                        *err = NULL;
        } else if (r < 0)
                return r;
        _cleanup_free_ char *staging = xasprintf("%s/%s", state_dir, KEYROT_STAGING);
        _cleanup_free_ char *marker = xasprintf("%s/%s", staging, KEYROT_COMPLETE);
        struct stat st;
        bool exists = lstat(staging, &st) == 0 && S_ISDIR(st.st_mode);
        bool complete = exists && lstat(marker, &st) == 0 && S_ISREG(st.st_mode);
        keyrot_action a = keyrot_decide(have && h.next, exists, complete);
        switch (a) {
        case KEYROT_NOTHING:
                return a;
        case KEYROT_CLEAN_STAGING:
                r = remove_staging(state_dir, err);
                break;
        case KEYROT_ROLL_FORWARD:
                r = roll_forward(state_dir, &h, err);
                break;
        case KEYROT_ROLL_BACK:
                r = roll_back(state_dir, &h, err);
                break;
        }
        if (r < 0)
                return vt_error_prefix(err, "recovering an interrupted key rotation in %s: ", state_dir);
        return a;
}

/* Re-wrap one entry under kek_id; checks that the new wrapping unwraps to
 * the same DEK before anyone relies on it. */
static int rewrap_entry(keymgr *km, const char *scope, const char *kek_id, key_header *entry, vt_error **err) {
        _cleanup_secmem_ secmem *dek = NULL;
        int r = keymgr_unwrap(km, entry, &dek, err);
        if (r < 0)
                return r;
        _cleanup_(key_header_done) key_header n = {0};
        key_header_copy_entry(entry, &n);
        r = keymgr_wrap(km, scope, kek_id, NULL, dek, &n, err);
        if (r < 0)
                return r;
        _cleanup_secmem_ secmem *check = NULL;
        r = keymgr_unwrap(km, &n, &check, err);
        if (r < 0)
                return vt_error_prefix(err, "the re-wrapped key does not unwrap: ");
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

int keyrot_rotate_kek(keymgr *km, const char *scope, const char *state_dir, const char *request,
                      char **ret_kek_id, vt_error **err) {
        assert_return(km && scope && state_dir && request, -EINVAL);
        if (!keys_rotation_id_valid(request))
                return vt_error_set(err, EINVAL,
                                    "KEK rotation request \"%.64s\" is not a valid id (1..63 of A-Z a-z 0-9 . _ -)",
                                    request);
        _cleanup_free_ char *path = header_path(state_dir);
        _cleanup_(key_header_done) key_header h = {0};
        int r = key_header_read(path, &h, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *kek_id = NULL;
        r = keymgr_kek_version(km, scope, request, &kek_id, err);
        if (r < 0)
                return r;
        bool cur_done = !key_header_has_current(&h) || strcmp(h.kek_id, kek_id) == 0;
        bool next_done = !h.next || strcmp(h.next->kek_id, kek_id) == 0;
        if (cur_done && next_done) {
                if (ret_kek_id)
                        *ret_kek_id = xstrdup(key_header_has_current(&h) ? h.kek_id : kek_id);
                return 0;
        }
        if (!cur_done && (r = rewrap_entry(km, scope, kek_id, &h, err)) < 0)
                return r;
        if (!next_done && (r = rewrap_entry(km, scope, kek_id, h.next, err)) < 0)
                return r;
        r = key_header_write_hooked(path, &h, keyrot_fault, "kek-header-tmp", err);
        if (r < 0)
                return r;
        if (ret_kek_id)
                *ret_kek_id = TAKE_PTR(kek_id);
        return 1;
}

int keyrot_reencrypt(keymgr *km, const char *scope, const char *state_dir, const char *request,
                     const keyrot_tpm *t, secmem **ret_dek, vt_error **err) {
        assert_return(km && scope && state_dir && t && ret_dek, -EINVAL);
        if (request && !keys_rotation_id_valid(request))
                return vt_error_set(err, EINVAL,
                                    "DEK rotation request \"%.64s\" is not a valid id (1..63 of A-Z a-z 0-9 . _ -)",
                                    request);
        _cleanup_free_ char *path = header_path(state_dir);
        _cleanup_free_ char *staging = xasprintf("%s/%s", state_dir, KEYROT_STAGING);
        if (access(staging, F_OK) == 0)
                return vt_error_set(err, EBUSY, "%s exists: recover first", staging);
        _cleanup_(key_header_done) key_header h = {0};
        int r = key_header_read(path, &h, err);
        if (r == -ENOENT && !request) {
                vt_error_free(err ? *err : NULL);
                if (err)
                        *err = NULL;
                r = tpm_state_detect(state_dir, NULL, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        return vt_error_set(err, ENOENT, "no TPM state in %s to encrypt", state_dir);
        } else if (r < 0)
                return r;
        else if (!request)
                return vt_error_set(err, EEXIST, "the state in %s is encrypted already", state_dir);
        else if (h.next)
                return vt_error_set(err, EBUSY, "%s has a pending key: recover first", path);
        else if (h.dek_request && strcmp(h.dek_request, request) == 0)
                return 0; /* this request made the current DEK */

        _cleanup_secmem_ secmem *old = NULL;
        if (key_header_has_current(&h) && (r = keymgr_unwrap(km, &h, &old, err)) < 0)
                return r;

        /* 1. The new DEK, wrapped, on the volume before anything uses it. */
        _cleanup_secmem_ secmem *dek = NULL;
        r = dek_generate(&dek, err);
        if (r < 0)
                return r;
        key_header *next = xnew(key_header, 1);
        h.next = next;
        r = keymgr_wrap(km, scope, key_header_has_current(&h) ? h.kek_id : NULL, NULL, dek, next, err);
        if (r < 0)
                return r;
        char now[40];
        format_rfc3339(now_realtime(), now);
        next->dek_generation = key_header_has_current(&h) ? h.dek_generation + 1 : 1;
        next->created_at = xstrdup(now);
        next->dek_request = request ? xstrdup(request) : NULL;
        r = key_header_write_hooked(path, &h, NULL, NULL, err);
        if (r < 0)
                return r;
        keyrot_fault("dek-next-written");

        /* 2. swtpm copies the state into staging under the new key. */
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
        if (mkdir(staging, 0700) < 0)
                r = vt_error_errno(err, errno, "cannot create %s", staging);
        if (r >= 0)
                r = t->sandbox ? tpm_state_dir_prepare_ids(staging, t->sandbox->uid, t->sandbox->gid, err)
                               : tpm_state_dir_prepare(staging, t->runas, err);
        if (r >= 0)
                r = tpm_copy_state(&from, &to, err);
        if (r >= 0)
                keyrot_fault("dek-staged");
        /* 3. It loads with the new key, it is on disk, and the marker says so. */
        if (r >= 0)
                r = tpm_probe_state(&to, err);
        if (r >= 0)
                r = sync_staging(staging, err);
        if (r >= 0) {
                _cleanup_free_ char *marker = xasprintf("%s/%s", staging, KEYROT_COMPLETE);
                r = write_file_atomic(marker, "complete\n", 9, 0600, err);
        }
        if (r < 0) {
                _cleanup_error_ vt_error *rerr = NULL;
                if (roll_back(state_dir, &h, &rerr) < 0)
                        (void)vt_error_prefix(err, "(and undoing it failed: %s) ", rerr->msg);
                return r;
        }
        keyrot_fault("dek-complete");
        /* 4. Past the marker, only forward: a failure here is finished by
         *    keyrot_recover() at the next attempt. */
        r = roll_forward(state_dir, &h, err);
        if (r < 0)
                return r;
        *ret_dek = TAKE_PTR(dek);
        return 1;
}
