/* SPDX-License-Identifier: Apache-2.0 */
#include "state_generation.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/rmtree.h"
#include "keys/header.h"

#define NAME_MAX_ID 64
/* A TPM 2.0 permall is a few KiB, tens with NV indices; anything this large is not one. */
#define SEED_FILE_MAX (4u << 20)

/* What a new generation starts from: the permanent state (either version)
 * and the wrapped key. Volatile state is the migration stream's. */
static const char *const seed_files[] = {"tpm2-00.permall", "tpm-00.permall", KEY_HEADER_FILE};

bool state_generation_name_valid(const char *name) {
        size_t plen = strlen(STATE_GENERATION_PREFIX);
        if (!name || strncmp(name, STATE_GENERATION_PREFIX, plen) != 0)
                return false;
        size_t n = strlen(name + plen);
        if (n == 0 || n > NAME_MAX_ID)
                return false;
        for (const char *p = name + plen; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || *p == '-'))
                        return false;
        return true;
}

int state_generation_parse(const char *data, size_t len, char **ret_name) {
        assert_return(data && ret_name, -EINVAL);
        if (len > 0 && data[len - 1] == '\n')
                len--;
        if (len == 0 || len > strlen(STATE_GENERATION_PREFIX) + NAME_MAX_ID || memchr(data, '\0', len))
                return -EBADMSG;
        _cleanup_free_ char *name = xstrndup(data, len);
        if (!state_generation_name_valid(name))
                return -EBADMSG;
        *ret_name = TAKE_PTR(name);
        return 0;
}

char *state_generation_for_migration(const char *migration_uid) {
        if (!migration_uid)
                return NULL;
        char *name = xasprintf(STATE_GENERATION_PREFIX "%s", migration_uid);
        if (!state_generation_name_valid(name)) {
                free(name);
                return NULL;
        }
        return name;
}

int state_generation_open(int vol_dfd, const char *name, vt_error **err) {
        int fd = openat_beneath(vol_dfd, name && *name ? name : ".", O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return vt_error_errno(err, -fd, "cannot open the TPM state generation %s on the volume",
                                      name && *name ? name : "(root)");
        return fd;
}

int state_generation_current(int vol_dfd, char **ret_name, vt_error **err) {
        assert_return(ret_name, -EINVAL);
        _cleanup_free_ char *data = NULL, *name = NULL;
        size_t len = 0;
        _cleanup_error_ vt_error *rerr = NULL;
        int r = read_file_beneath(vol_dfd, STATE_GENERATION_MARKER, 256, &data, &len, &rerr);
        if (r == -ENOENT) {
                *ret_name = NULL;
                return 0;
        }
        if (r < 0) {
                if (err && !*err)
                        *err = TAKE_PTR(rerr);
                return vt_error_prefix(err, r, "the state volume's %s: ", STATE_GENERATION_MARKER);
        }
        if (state_generation_parse(data, len, &name) < 0)
                return vt_error_set(err, EBADMSG,
                                    "the state volume's %s is not the agent's (it names no TPM state generation); the "
                                    "state is left as it is",
                                    STATE_GENERATION_MARKER);
        _cleanup_close_ int fd = openat_beneath(vol_dfd, name, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return vt_error_set(err, ENOENT,
                                    "the state volume's %s names the TPM state generation %s, which is not a directory "
                                    "on the volume (%s); the state is left as it is",
                                    STATE_GENERATION_MARKER, name, strerror(-fd));
        *ret_name = TAKE_PTR(name);
        return 0;
}

static int copy_beneath(int from, int to, const char *file, vt_error **err) {
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        _cleanup_error_ vt_error *rerr = NULL;
        int r = read_file_beneath(from, file, SEED_FILE_MAX, &data, &len, &rerr);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                if (err && !*err)
                        *err = TAKE_PTR(rerr);
                return r;
        }
        return write_file_beneath(to, file, data, len, 0600, NULL, NULL, err);
}

int state_generation_prepare(int vol_dfd, const char *name, vt_error **err) {
        assert_return(state_generation_name_valid(name), -EINVAL);
        _cleanup_free_ char *cur = NULL;
        int r = state_generation_current(vol_dfd, &cur, err);
        if (r < 0)
                return r;
        if (cur && strcmp(cur, name) == 0)
                return vt_error_set(err, EBUSY, "the TPM state generation %s is the current one", name);
        r = rm_rf_beneath(vol_dfd, name, err);
        if (r < 0)
                return vt_error_prefix(err, r, "a leftover TPM state generation %s: ", name);
        if (mkdirat(vol_dfd, name, 0700) < 0)
                return vt_error_errno(err, errno, "cannot make the TPM state generation %s", name);
        _cleanup_close_ int from = state_generation_open(vol_dfd, cur, err);
        if (from < 0)
                return from;
        _cleanup_close_ int to = state_generation_open(vol_dfd, name, err);
        if (to < 0)
                return to;
        for (size_t i = 0; i < ELEMENTSOF(seed_files); i++) {
                r = copy_beneath(from, to, seed_files[i], err);
                if (r < 0)
                        return vt_error_prefix(err, r, "seeding the TPM state generation %s: ", name);
        }
        return fsync_beneath(vol_dfd, ".", err);
}

int state_generation_switch(int vol_dfd, const char *name, vt_error **err) {
        assert_return(state_generation_name_valid(name), -EINVAL);
        _cleanup_close_ int fd = openat_beneath(vol_dfd, name, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return vt_error_errno(err, -fd, "the TPM state generation %s", name);
        _cleanup_free_ char *text = xasprintf("%s\n", name);
        return write_file_beneath(vol_dfd, STATE_GENERATION_MARKER, text, strlen(text), 0600, NULL, NULL, err);
}

int state_generation_prune(int vol_dfd, vt_error **err) {
        _cleanup_free_ char *cur = NULL;
        int r = state_generation_current(vol_dfd, &cur, err);
        if (r < 0)
                return r;
        int dfd = openat_beneath(vol_dfd, ".", O_RDONLY | O_DIRECTORY, 0);
        if (dfd < 0)
                return vt_error_errno(err, -dfd, "cannot read the state volume");
        DIR *d = fdopendir(dfd);
        if (!d) {
                int e = errno;
                close(dfd);
                return vt_error_errno(err, e, "cannot read the state volume");
        }
        int removed = 0, first = 0;
        for (struct dirent *de; (de = readdir(d));) {
                if (!state_generation_name_valid(de->d_name) || (cur && strcmp(cur, de->d_name) == 0))
                        continue;
                int q = rm_rf_beneath(vol_dfd, de->d_name, first < 0 ? NULL : err);
                if (q < 0 && first == 0)
                        first = q;
                else if (q >= 0)
                        removed++;
        }
        closedir(d);
        return first < 0 ? first : removed;
}
