/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/kubevirt_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"

#define PERMALL "tpm2-00.permall"

void kubevirt_state_done(kubevirt_state *s) {
        if (s) {
                free(s->data);
                *s = (kubevirt_state){0};
        }
}

/* libvirt names the directory by the domain's uuid: 36 characters of hex
 * digits and dashes. Anything else is not KubeVirt's (or is a tenant's). */
bool kubevirt_state_uuid_valid(const char *s) {
        if (strlen(s) != 36)
                return false;
        for (size_t i = 0; i < 36; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                char c = s[i];
                if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
                        return false;
        }
        return true;
}

static void digest(const void *data, size_t size, uint8_t out[32]) {
        unsigned len = 32;
        EVP_Digest(data, size, out, &len, EVP_sha256(), NULL);
}

static char *permall_path(const char *uuid) {
        return xasprintf("%s/tpm2/%s", uuid, PERMALL);
}

int kubevirt_state_find(int dfd, kubevirt_state *ret, vt_error **err) {
        assert_return(dfd >= 0 && ret, -EINVAL);
        _cleanup_close_ int sfd = openat_beneath(dfd, KUBEVIRT_STATE_DIR, O_RDONLY | O_DIRECTORY, 0);
        if (sfd == -ENOENT)
                return 0;
        if (sfd < 0)
                return vt_error_errno(err, -sfd, "the volume's %s/ directory", KUBEVIRT_STATE_DIR);
        int lfd = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
        if (lfd < 0)
                return vt_error_errno(err, errno, "the volume's %s/ directory", KUBEVIRT_STATE_DIR);
        DIR *d = fdopendir(lfd);
        if (!d) {
                int e = errno;
                close(lfd);
                return vt_error_errno(err, e, "the volume's %s/ directory", KUBEVIRT_STATE_DIR);
        }
        kubevirt_state found = {0};
        int n = 0, r = 0;
        _cleanup_free_ char *names = xstrdup("");
        for (struct dirent *de; (de = readdir(d));) {
                if (!kubevirt_state_uuid_valid(de->d_name))
                        continue;
                _cleanup_free_ char *rel = permall_path(de->d_name);
                char *data = NULL;
                size_t size = 0;
                _cleanup_error_ vt_error *rerr = NULL;
                r = read_file_beneath(sfd, rel, KUBEVIRT_STATE_MAX, &data, &size, &rerr);
                if (r == -ENOENT) {
                        r = 0;
                        continue; /* a directory libvirt made, no state in it yet */
                }
                if (r < 0) {
                        vt_error_set(err, -r, "KubeVirt's TPM state %s/%s: %s", KUBEVIRT_STATE_DIR, rel,
                                     rerr ? rerr->msg : strerror(-r));
                        free(data);
                        break;
                }
                char *more = xasprintf("%s%s%s", names, n ? ", " : "", de->d_name);
                free(names);
                names = more;
                if (n++ == 0) {
                        memcpy(found.uuid, de->d_name, 37);
                        found.data = data;
                        found.size = size;
                } else
                        free(data);
        }
        closedir(d);
        if (r < 0) {
                kubevirt_state_done(&found);
                return r;
        }
        if (n > 1) {
                kubevirt_state_done(&found);
                return vt_error_set(err, EEXIST,
                                    "KubeVirt's swtpm directory on the volume holds the TPM states of %d firmware "
                                    "uuids (%s): which one the VM uses is not for the agent to guess",
                                    n, names);
        }
        if (n == 0)
                return 0;
        digest(found.data, found.size, found.sha256);
        *ret = found;
        return 1;
}

int kubevirt_state_replace(int dfd, const char *uuid, const uint8_t was_sha256[32], const void *data, size_t size,
                           vt_error **err) {
        assert_return(dfd >= 0 && uuid && kubevirt_state_uuid_valid(uuid) && was_sha256 && data, -EINVAL);
        _cleanup_free_ char *dir = xasprintf("%s/%s/tpm2", KUBEVIRT_STATE_DIR, uuid);
        _cleanup_close_ int tfd = openat_beneath(dfd, dir, O_RDONLY | O_DIRECTORY, 0);
        if (tfd == -ENOENT)
                return 0;
        if (tfd < 0)
                return vt_error_errno(err, -tfd, "KubeVirt's TPM state directory %s", dir);
        _cleanup_free_ char *now = NULL;
        size_t now_size = 0;
        int r = read_file_beneath(tfd, PERMALL, KUBEVIRT_STATE_MAX, &now, &now_size, err);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        uint8_t d[32];
        digest(now, now_size, d);
        if (memcmp(d, was_sha256, 32) != 0)
                return 0;
        /* Its owner as it was (libvirt's swtpm user), so a KubeVirt swtpm
         * started on it fails on the ciphertext, not on a permission. */
        struct stat st;
        if (fstatat(tfd, PERMALL, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return vt_error_errno(err, errno, "KubeVirt's TPM state %s/%s", dir, PERMALL);
        r = write_file_beneath(tfd, PERMALL, data, size, 0600, NULL, NULL, err);
        if (r < 0)
                return r;
        if (fchownat(tfd, PERMALL, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                return vt_error_errno(err, errno, "KubeVirt's TPM state %s/%s: chown", dir, PERMALL);
        return 1;
}

/* mkdir name beneath dfd (an existing directory is fine), owned as `like`. */
static int mkdir_like(int dfd, const char *name, const struct stat *like, vt_error **err) {
        if (mkdirat(dfd, name, 02770) < 0 && errno != EEXIST)
                return vt_error_errno(err, errno, "KubeVirt's TPM state directory %s", name);
        _cleanup_close_ int fd = openat_beneath(dfd, name, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return vt_error_errno(err, -fd, "KubeVirt's TPM state directory %s", name);
        if (fchown(fd, like->st_uid, like->st_gid) < 0 || fchmod(fd, 02770) < 0)
                return vt_error_errno(err, errno, "KubeVirt's TPM state directory %s", name);
        return 0;
}

int kubevirt_state_guard(int dfd, const char *uuid, const void *data, size_t size, vt_error **err) {
        assert_return(dfd >= 0 && uuid && kubevirt_state_uuid_valid(uuid) && data, -EINVAL);
        _cleanup_close_ int sfd = openat_beneath(dfd, KUBEVIRT_STATE_DIR, O_RDONLY | O_DIRECTORY, 0);
        if (sfd == -ENOENT)
                return 0;
        if (sfd < 0)
                return vt_error_errno(err, -sfd, "the volume's %s/ directory", KUBEVIRT_STATE_DIR);
        struct stat like;
        if (fstat(sfd, &like) < 0)
                return vt_error_errno(err, errno, "the volume's %s/ directory", KUBEVIRT_STATE_DIR);
        _cleanup_free_ char *rel = permall_path(uuid), *tpm2 = xasprintf("%s/tpm2", uuid);
        _cleanup_close_ int existing = openat_beneath(sfd, rel, O_PATH, 0);
        if (existing >= 0 || existing != -ENOENT)
                return existing >= 0 ? 0 : vt_error_errno(err, -existing, "KubeVirt's TPM state %s", rel);
        int r = mkdir_like(sfd, uuid, &like, err);
        if (r >= 0)
                r = mkdir_like(sfd, tpm2, &like, err);
        if (r < 0)
                return r;
        _cleanup_close_ int tfd = openat_beneath(sfd, tpm2, O_RDONLY | O_DIRECTORY, 0);
        if (tfd < 0)
                return vt_error_errno(err, -tfd, "KubeVirt's TPM state directory %s", tpm2);
        r = write_file_beneath(tfd, PERMALL, data, size, 0660, NULL, NULL, err);
        if (r < 0)
                return r;
        if (fchownat(tfd, PERMALL, like.st_uid, like.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                return vt_error_errno(err, errno, "KubeVirt's TPM state %s: chown", rel);
        return 1;
}
