/* SPDX-License-Identifier: Apache-2.0 */
/* tpm_probe_state() and tpm_copy_state(): private swtpm processes on a state
 * directory, driven over a socketpair (`--ctrl type=unixio,clientfd=N`). */
#include "tpm/swtpm.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <tpm_ioctl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "keys/secmem.h"
#include "tpm/ctrl.h"
#include "tpm/exec.h"
#include "tpm/io.h"
#include "tpm/launch.h"

static int io_send(int fd, const void *p, size_t n, usec_t deadline) {
        return tpm_io_xfer(fd, (void *)p, n, true, deadline);
}

static int io_recv(int fd, void *p, size_t n, usec_t deadline) {
        return tpm_io_xfer(fd, p, n, false, deadline);
}

static uint32_t get_be32(const uint8_t *p) {
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

/* A private swtpm on o->state_dir, controlled over a socketpair. */
typedef struct private_tpm {
        tpm_child c;
        int fd;
        const char *dir;
} private_tpm;

static int private_open(const tpm_swtpm_opts *o, private_tpm *ret, vt_error **err) {
        char **argv = NULL;
        _cleanup_close_ int key_fd = -1;
        int r = tpm_swtpm_prepare(o, true, &argv, &key_fd, err);
        if (r < 0)
                return r;
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
                tpm_strv_free(argv);
                return vt_error_errno(err, errno, "cannot create socketpair");
        }
        _cleanup_close_ int ours = sp[0], theirs = sp[1];
        tpm_launch l = {.argv = argv, .mntns_fd = o->mntns_fd, .key_fd = key_fd, .ctrl_fd = theirs,
                    .sandbox = o->sandbox};
        tpm_child c;
        r = tpm_launch_spawn(&l, &c, err);
        tpm_strv_free(argv);
        if (r < 0)
                return vt_error_prefix(err, r, "swtpm on %s: ", o->state_dir);
        *ret = (private_tpm){.c = c, .fd = TAKE_FD(ours), .dir = o->state_dir};
        return 0;
}

/* CMD_SHUTDOWN (writes what the TPM holds), then wait for the process. */
static char *private_close(private_tpm *t) {
        if (t->fd >= 0) {
                uint8_t resp[4];
                (void)tpm_ctrl_call_fd(t->fd, t->dir, CMD_SHUTDOWN, NULL, 0, resp, 4, 4, 5 * USEC_PER_SEC, NULL);
                close(TAKE_FD(t->fd));
        }
        if (t->c.pid > 0 && !tpm_child_exited(&t->c, 5000, NULL))
                tpm_child_kill(&t->c);
        char *tail = tpm_child_log_tail(&t->c);
        tpm_child_done(&t->c);
        return tail;
}

static int private_init(private_tpm *t, usec_t timeout, vt_error **err) {
        uint32_t req = 0; /* keep any volatile state file */
        uint8_t resp[4];
        int r = tpm_ctrl_call_fd(t->fd, t->dir, CMD_INIT, &req, 4, resp, 4, 4, timeout, err);
        if (r < 0)
                return r;
        uint32_t res = get_be32(resp);
        if (res != 0)
                return vt_error_set(err, TPM_ESTATE, "TPM state in %s cannot be loaded (CMD_INIT: TPM result 0x%x)",
                                    t->dir, res);
        return 0;
}

/* Load the state in a private swtpm (CMD_INIT) and stop it again. */
int tpm_probe_state(const tpm_swtpm_opts *o, vt_error **err) {
        assert_return(o && o->state_dir, -EINVAL);
        int r = tpm_state_detect(o->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, ENOENT, "no TPM state in %s to probe", o->state_dir);
        private_tpm t;
        r = private_open(o, &t, err);
        if (r < 0)
                return vt_error_prefix(err, r, "probing TPM state: ");

        usec_t timeout = o->timeout ? o->timeout : 10 * USEC_PER_SEC;
        _cleanup_error_ vt_error *cerr = NULL;
        uint32_t req = 0; /* flags 0: do not delete the volatile state file */
        uint8_t resp[4];
        r = tpm_ctrl_call_fd(t.fd, t.dir, CMD_INIT, &req, 4, resp, 4, 4, timeout, &cerr);
        uint32_t res = r >= 0 ? get_be32(resp) : 0;
        _cleanup_free_ char *tail = private_close(&t);

        if (r < 0)
                return vt_error_set(err, cerr ? cerr->code : EIO, "probing TPM state in %s: %s; log: %s", o->state_dir,
                                    cerr ? cerr->msg : "no answer", tail);
        if (res != 0) {
                /* Another swtpm holding the directory is not a broken state. */
                if (strstr(tail, "lockfile"))
                        return vt_error_set(err, EBUSY, "TPM state in %s is in use by another swtpm: %s",
                                            o->state_dir, tail);
                return vt_error_set(err, TPM_ESTATE,
                                    "TPM state in %s cannot be loaded%s (CMD_INIT: TPM result 0x%x): %s", o->state_dir,
                                    o->key ? " with the given key" : " without a key", res, tail);
        }
        return 0;
}

#define STATEBLOB_MAX (1024 * 1024)

/* CMD_GET_STATEBLOB or CMD_SET_STATEBLOB (with `data`): the command, its
 * four big-endian words (flags, blob type, then the offset or the length),
 * the data, and the TPM result that starts the answer. */
static int blob_call(private_tpm *t, uint32_t cmd, uint32_t flags, uint32_t type, const uint8_t *data,
                     size_t len, usec_t deadline, vt_error **err) {
        const char *name = tpm_ctrl_cmd_name(cmd);
        uint8_t msg[16];
        put_be32(msg, cmd);
        put_be32(msg + 4, flags);
        put_be32(msg + 8, type);
        put_be32(msg + 12, (uint32_t)len); /* GET: the offset, 0 */
        int r = io_send(t->fd, msg, sizeof(msg), deadline);
        if (r >= 0 && data)
                r = io_send(t->fd, data, len, deadline);
        uint8_t resp[4];
        if (r >= 0)
                r = io_recv(t->fd, resp, 4, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "%s to swtpm on %s", name, t->dir);
        uint32_t res = get_be32(resp);
        if (res != 0)
                return vt_error_set(err, EIO, "%s (type %u) on %s: TPM result 0x%x", name, type, t->dir, res);
        return 0;
}

/* The plaintext state holds the TPM's seeds: it goes into locked memory. */
static int private_get_blob(private_tpm *t, uint32_t type, usec_t timeout, secmem **ret, vt_error **err) {
        usec_t deadline = now_monotonic() + timeout;
        int r = blob_call(t, CMD_GET_STATEBLOB, PTM_STATE_FLAG_DECRYPTED, type, NULL, 0, deadline, err);
        if (r < 0)
                return r;
        uint8_t hdr[12];
        r = io_recv(t->fd, hdr, 12, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "CMD_GET_STATEBLOB from swtpm on %s", t->dir);
        uint32_t flags = get_be32(hdr), tot = get_be32(hdr + 4), len = get_be32(hdr + 8);
        if (flags & PTM_STATE_FLAG_ENCRYPTED)
                return vt_error_set(err, EPROTO, "swtpm on %s returned the state still encrypted", t->dir);
        if (len != tot || len == 0 || len > STATEBLOB_MAX)
                return vt_error_set(err, EPROTO, "CMD_GET_STATEBLOB on %s: unexpected length %u of %u", t->dir,
                                    len, tot);
        _cleanup_secmem_ secmem *data = NULL;
        r = secmem_new(len, &data, err);
        if (r < 0)
                return r;
        r = io_recv(t->fd, data->data, len, deadline);
        if (r < 0)
                return vt_error_errno(err, -r, "CMD_GET_STATEBLOB data from swtpm on %s", t->dir);
        *ret = TAKE_PTR(data);
        return 0;
}

/* flags 0: the data is plaintext, swtpm encrypts it with its own key. */
static int private_set_blob(private_tpm *t, uint32_t type, const uint8_t *data, size_t len, usec_t timeout,
                            vt_error **err) {
        return blob_call(t, CMD_SET_STATEBLOB, 0, type, data, len, now_monotonic() + timeout, err);
}

int tpm_copy_state(const tpm_swtpm_opts *from, const tpm_swtpm_opts *to, vt_error **err) {
        assert_return(from && to && from->state_dir && to->state_dir, -EINVAL);
        tpm_version v = TPM_VERSION_2;
        int r = tpm_state_detect(from->state_dir, &v, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, ENOENT, "no TPM state in %s to copy", from->state_dir);
        /* Only the permanent state is carried over. A volatile or savestate
         * file exists only after a suspend or migration of the running TPM;
         * copying it would mean resuming a TPM outside QEMU: refuse instead. */
        const char *extra[] = {"tpm2-00.volatilestate", "tpm2-00.savestate", "tpm-00.volatilestate",
                               "tpm-00.savestate"};
        for (size_t i = 0; i < ELEMENTSOF(extra); i++) {
                _cleanup_free_ char *p = xasprintf("%s/%s", from->state_dir, extra[i]);
                if (access(p, F_OK) == 0)
                        return vt_error_set(err, EBUSY,
                                            "%s holds %s (a suspended TPM); its state is not re-encrypted",
                                            from->state_dir, extra[i]);
        }
        r = tpm_state_detect(to->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r > 0)
                return vt_error_set(err, EEXIST, "%s already holds TPM state", to->state_dir);
        usec_t timeout = from->timeout ? from->timeout : 10 * USEC_PER_SEC;

        /* 1. The plaintext permanent state, from a swtpm with the old key.
         *    INIT loads (and decrypts) it; no TPM command runs, so nothing is
         *    written to the source directory. */
        private_tpm src = {.fd = -1};
        r = private_open(from, &src, err);
        if (r < 0)
                return r;
        _cleanup_secmem_ secmem *blob = NULL;
        r = private_init(&src, timeout, err);
        if (r >= 0)
                r = private_get_blob(&src, PTM_BLOB_TYPE_PERMANENT, timeout, &blob, err);
        _cleanup_free_ char *src_tail = private_close(&src);
        if (r < 0)
                return vt_error_prefix(err, r, "reading the state (swtpm log: %s): ", src_tail);

        /* 2. Into a swtpm with the new key on the empty target: SET before
         *    INIT, INIT writes it there (encrypted with the new key), and
         *    SHUTDOWN ends it. */
        private_tpm dst = {.fd = -1};
        r = private_open(to, &dst, err);
        if (r >= 0) {
                r = private_set_blob(&dst, PTM_BLOB_TYPE_PERMANENT, blob->data, blob->len, timeout, err);
                if (r >= 0)
                        r = private_init(&dst, timeout, err);
                _cleanup_free_ char *dst_tail = private_close(&dst);
                if (r < 0)
                        (void)vt_error_prefix(err, r, "writing the state (swtpm log: %s): ", dst_tail);
        }
        if (r < 0)
                return r;
        r = tpm_state_detect(to->state_dir, NULL, err);
        if (r < 0)
                return r;
        if (r == 0)
                return vt_error_set(err, EIO, "swtpm wrote no state into %s", to->state_dir);
        return 0;
}
