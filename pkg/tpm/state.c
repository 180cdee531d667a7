/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"

const char *tpm_version_name(tpm_version v) {
        return v == TPM_VERSION_1_2 ? "1.2" : "2.0";
}

const char *tpm_state_permall(tpm_version v) {
        return v == TPM_VERSION_1_2 ? "tpm-00.permall" : "tpm2-00.permall";
}

int tpm_state_detect_at(int dfd, tpm_version *ret_version, vt_error **err) {
        static const tpm_version order[] = {TPM_VERSION_2, TPM_VERSION_1_2};
        for (size_t i = 0; i < ELEMENTSOF(order); i++) {
                struct stat st;
                if (fstatat(dfd, tpm_state_permall(order[i]), &st, AT_SYMLINK_NOFOLLOW) == 0) {
                        if (ret_version)
                                *ret_version = order[i];
                        return 1;
                }
                if (errno != ENOENT)
                        return vt_error_errno(err, errno, "cannot check %s", tpm_state_permall(order[i]));
        }
        return 0;
}

int tpm_state_detect(const char *state_dir, tpm_version *ret_version, vt_error **err) {
        assert_return(state_dir, -EINVAL);
        _cleanup_close_ int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return vt_error_errno(err, errno, "cannot open TPM state directory %s", state_dir);
        int r = tpm_state_detect_at(dfd, ret_version, err);
        if (r < 0)
                (void)vt_error_prefix(err, r, "%s: ", state_dir);
        return r;
}

int tpm_lookup_user(const char *user, unsigned *ret_uid, unsigned *ret_gid, vt_error **err) {
        assert_return(user, -EINVAL);
        struct passwd pw, *res = NULL;
        char buf[4096];
        int r = getpwnam_r(user, &pw, buf, sizeof(buf), &res);
        if (r != 0)
                return vt_error_errno(err, r, "cannot look up user %s", user);
        if (!res)
                return vt_error_set(err, ENOENT, "no such user: %s", user);
        if (ret_uid)
                *ret_uid = pw.pw_uid;
        if (ret_gid)
                *ret_gid = pw.pw_gid;
        return 0;
}

/* Owner and mode of one directory entry, if it is a regular file. The entry
 * is pinned with O_PATH | O_NOFOLLOW first and changed through that fd: a
 * name swapped for a symlink between a check and a chmod-by-name would make
 * the chmod follow it to a host file. */
static int prepare_entry(int dfd, const char *name, unsigned uid, unsigned gid) {
        _cleanup_close_ int fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return 0;
        if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return -errno;
        /* No fchmod on O_PATH fds (before fchmodat2): the magic link of this
         * very fd names the pinned file, whatever its name points to now. */
        char p[64];
        snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
        if (chmod(p, 0600) < 0)
                return -errno;
        return 0;
}

int tpm_state_dir_prepare_at(int dfd, const char *user, vt_error **err) {
        unsigned uid = (unsigned)-1, gid = (unsigned)-1;
        if (user) {
                int r = tpm_lookup_user(user, &uid, &gid, err);
                if (r < 0)
                        return r;
        }
        return tpm_state_dir_prepare_ids_at(dfd, (uid_t)uid, (gid_t)gid, err);
}

int tpm_state_dir_prepare_ids(const char *state_dir, uid_t uid, gid_t gid, vt_error **err) {
        assert_return(state_dir, -EINVAL);
        _cleanup_close_ int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return vt_error_errno(err, errno, "cannot open TPM state directory %s", state_dir);
        int r = tpm_state_dir_prepare_ids_at(dfd, uid, gid, err);
        if (r < 0)
                (void)vt_error_prefix(err, r, "%s: ", state_dir);
        return r;
}

int tpm_state_dir_prepare_ids_at(int dfd, uid_t uid, gid_t gid, vt_error **err) {
        if (fchown(dfd, uid, gid) < 0 || fchmod(dfd, 0700) < 0)
                return vt_error_errno(err, errno, "cannot set owner/mode of the TPM state directory");
        int dup = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
        if (dup < 0)
                return vt_error_errno(err, errno, "cannot read the TPM state directory");
        DIR *d = fdopendir(dup);
        if (!d) {
                close(dup);
                return vt_error_errno(err, errno, "cannot read the TPM state directory");
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                int k = prepare_entry(dfd, de->d_name, uid, gid);
                if (k < 0) {
                        r = vt_error_errno(err, -k, "cannot set owner/mode of %s", de->d_name);
                        break;
                }
        }
        closedir(d);
        return r;
}

int tpm_state_dir_prepare(const char *state_dir, const char *user, vt_error **err) {
        assert_return(state_dir, -EINVAL);
        _cleanup_close_ int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return vt_error_errno(err, errno, "cannot open TPM state directory %s", state_dir);
        int r = tpm_state_dir_prepare_at(dfd, user, err);
        if (r < 0)
                (void)vt_error_prefix(err, r, "%s: ", state_dir);
        return r;
}

int tpm_check_option_path(const char *what, const char *path, vt_error **err) {
        if (!path || !*path)
                return vt_error_set(err, EINVAL, "%s path is empty", what);
        if (path[0] != '/')
                return vt_error_set(err, EINVAL, "%s path %s is not absolute", what, path);
        if (strpbrk(path, ",\n"))
                return vt_error_set(err, EINVAL, "%s path %s contains a comma or newline, which swtpm's options cannot carry",
                                    what, path);
        return 0;
}
