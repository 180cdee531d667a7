/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/ctrl.h"

#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <tpm_ioctl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "tpm/io.h"

const char *tpm_ctrl_cmd_name(uint32_t cmd) {
        static const char *const names[] = {
                [CMD_GET_CAPABILITY] = "CMD_GET_CAPABILITY",
                [CMD_INIT] = "CMD_INIT",
                [CMD_SHUTDOWN] = "CMD_SHUTDOWN",
                [CMD_GET_TPMESTABLISHED] = "CMD_GET_TPMESTABLISHED",
                [CMD_SET_LOCALITY] = "CMD_SET_LOCALITY",
                [CMD_HASH_START] = "CMD_HASH_START",
                [CMD_HASH_DATA] = "CMD_HASH_DATA",
                [CMD_HASH_END] = "CMD_HASH_END",
                [CMD_CANCEL_TPM_CMD] = "CMD_CANCEL_TPM_CMD",
                [CMD_STORE_VOLATILE] = "CMD_STORE_VOLATILE",
                [CMD_RESET_TPMESTABLISHED] = "CMD_RESET_TPMESTABLISHED",
                [CMD_GET_STATEBLOB] = "CMD_GET_STATEBLOB",
                [CMD_SET_STATEBLOB] = "CMD_SET_STATEBLOB",
                [CMD_STOP] = "CMD_STOP",
                [CMD_GET_CONFIG] = "CMD_GET_CONFIG",
                [CMD_SET_DATAFD] = "CMD_SET_DATAFD",
                [CMD_SET_BUFFERSIZE] = "CMD_SET_BUFFERSIZE",
                [CMD_GET_INFO] = "CMD_GET_INFO",
        };
        if (cmd < ELEMENTSOF(names) && names[cmd])
                return names[cmd];
        return "CMD_UNKNOWN";
}

static int ctrl_connect(const char *path, usec_t deadline, int *ret_fd, vt_error **err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return vt_error_set(err, ENAMETOOLONG, "control socket path %s is too long", path);
        strcpy(sa.sun_path, path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return vt_error_errno(err, errno, "cannot create socket");
        for (;;) {
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        break;
                if (errno == EINTR)
                        continue;
                if (errno == EINPROGRESS) {
                        int r = tpm_io_wait(fd, POLLOUT, deadline);
                        if (r < 0)
                                return vt_error_set(err, -r, "connecting to swtpm control socket %s timed out",
                                                    path);
                        int soerr = 0;
                        socklen_t sl = sizeof(soerr);
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                                soerr = errno;
                        if (soerr)
                                return vt_error_errno(err, soerr, "cannot connect to swtpm control socket %s",
                                                      path);
                        break;
                }
                if (errno == EAGAIN) { /* backlog full: retry until the deadline */
                        if (now_monotonic() >= deadline)
                                return vt_error_set(err, ETIMEDOUT, "swtpm control socket %s is busy", path);
                        sleep_usec(5 * USEC_PER_MSEC);
                        continue;
                }
                return vt_error_errno(err, errno, "cannot connect to swtpm control socket %s", path);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int tpm_ctrl_call(const char *ctrl_path, uint32_t cmd, const void *req, size_t req_len, void *resp,
                  size_t resp_min, size_t resp_max, usec_t timeout, vt_error **err) {
        assert_return(ctrl_path, -EINVAL);
        usec_t deadline = now_monotonic() + (timeout ? timeout : TPM_CTRL_TIMEOUT);
        _cleanup_close_ int fd = -1;
        int r = ctrl_connect(ctrl_path, deadline, &fd, err);
        if (r < 0)
                return vt_error_prefix(err, r, "%s: ", tpm_ctrl_cmd_name(cmd));
        usec_t now = now_monotonic();
        return tpm_ctrl_call_fd(fd, ctrl_path, cmd, req, req_len, resp, resp_min, resp_max,
                                deadline > now ? deadline - now : 1, err);
}

int tpm_ctrl_call_fd(int fd, const char *ctrl_path, uint32_t cmd, const void *req, size_t req_len, void *resp,
                     size_t resp_min, size_t resp_max, usec_t timeout, vt_error **err) {
        assert_return(fd >= 0 && ctrl_path && resp && resp_min >= 4 && resp_max >= resp_min, -EINVAL);
        assert_return(req_len == 0 || req, -EINVAL);
        const char *name = tpm_ctrl_cmd_name(cmd);
        usec_t deadline = now_monotonic() + (timeout ? timeout : TPM_CTRL_TIMEOUT);
        int r;
        /* The fd may be blocking (a socketpair end): poll before each I/O and
         * use MSG_DONTWAIT so the deadline always holds. */
        uint8_t msg[64];
        assert_return(req_len <= sizeof(msg) - 4, -EINVAL);
        uint32_t be = htobe32(cmd);
        memcpy(msg, &be, 4);
        if (req_len)
                memcpy(msg + 4, req, req_len);
        size_t off = 0, len = 4 + req_len;
        while (off < len) {
                ssize_t n = send(fd, msg + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                r = tpm_io_wait(fd, POLLOUT, deadline);
                                if (r < 0)
                                        return vt_error_set(err, -r, "%s to %s: send timed out", name,
                                                            ctrl_path);
                                continue;
                        }
                        return vt_error_errno(err, errno, "%s to %s: send failed", name, ctrl_path);
                }
                off += (size_t)n;
        }

        uint8_t *out = resp;
        size_t got = 0;
        while (got < resp_max) {
                /* swtpm sends only the result code when a command failed. */
                if (got >= 4 && (out[0] | out[1] | out[2] | out[3]) != 0)
                        break;
                ssize_t n = recv(fd, out + got, resp_max - got, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                r = tpm_io_wait(fd, POLLIN, deadline);
                                if (r == -ETIMEDOUT)
                                        return vt_error_set(err, ETIMEDOUT,
                                                            "%s to %s: no answer within %llu ms (another client, "
                                                            "such as QEMU, may hold the control channel)",
                                                            name, ctrl_path,
                                                            (unsigned long long)((timeout ? timeout : TPM_CTRL_TIMEOUT) /
                                                                                 USEC_PER_MSEC));
                                if (r < 0)
                                        return vt_error_errno(err, -r, "%s to %s: poll failed", name, ctrl_path);
                                continue;
                        }
                        return vt_error_errno(err, errno, "%s to %s: receive failed", name, ctrl_path);
                }
                if (n == 0)
                        break;
                got += (size_t)n;
                if (got >= resp_min && (cmd != CMD_GET_INFO))
                        break;
                if (cmd == CMD_GET_INFO && got >= 12) {
                        uint32_t l;
                        memcpy(&l, out + 8, 4);
                        if (got >= 12 + (size_t)be32toh(l))
                                break;
                }
        }
        if (got < 4)
                return vt_error_set(err, EPROTO, "%s to %s: short reply (%zu bytes)", name, ctrl_path, got);
        uint32_t res;
        memcpy(&res, out, 4);
        res = be32toh(res);
        if (res == 0 && got < resp_min)
                return vt_error_set(err, EPROTO, "%s to %s: short reply (%zu of %zu bytes)", name, ctrl_path,
                                    got, resp_min);
        return (int)got;
}

static uint32_t get_be32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, 4);
        return be32toh(v);
}

/* For commands whose reply starts with a TPM result: non-zero is an error. */
static int check_result(const char *ctrl_path, uint32_t cmd, const uint8_t *resp, int errnum, vt_error **err) {
        uint32_t res = get_be32(resp);
        if (res != 0)
                return vt_error_set(err, errnum, "%s to %s: swtpm returned TPM result 0x%x", tpm_ctrl_cmd_name(cmd),
                                    ctrl_path, res);
        return 0;
}

int tpm_ctrl_get_capability(const char *ctrl_path, usec_t timeout, uint64_t *ret_caps, vt_error **err) {
        uint8_t resp[8];
        /* 0.7.1 sends the ptm_cap as one big-endian u64; newer releases send a
         * u32 result then u32 caps: the same bytes while caps fit in 32 bits. */
        int r = tpm_ctrl_call(ctrl_path, CMD_GET_CAPABILITY, NULL, 0, resp, 8, 8, timeout, err);
        if (r < 0)
                return r;
        r = check_result(ctrl_path, CMD_GET_CAPABILITY, resp, EIO, err);
        if (r < 0)
                return r;
        uint64_t v;
        memcpy(&v, resp, 8);
        if (ret_caps)
                *ret_caps = be64toh(v);
        return 0;
}

int tpm_ctrl_init(const char *ctrl_path, uint32_t flags, usec_t timeout, uint32_t *ret_tpm_result,
                  vt_error **err) {
        uint32_t req = htobe32(flags);
        uint8_t resp[4];
        int r = tpm_ctrl_call(ctrl_path, CMD_INIT, &req, 4, resp, 4, 4, timeout, err);
        if (r < 0)
                return r;
        if (ret_tpm_result)
                *ret_tpm_result = get_be32(resp);
        return check_result(ctrl_path, CMD_INIT, resp, EBADMSG, err);
}

static int simple(const char *ctrl_path, uint32_t cmd, usec_t timeout, vt_error **err) {
        uint8_t resp[4];
        int r = tpm_ctrl_call(ctrl_path, cmd, NULL, 0, resp, 4, 4, timeout, err);
        if (r < 0)
                return r;
        return check_result(ctrl_path, cmd, resp, EIO, err);
}

int tpm_ctrl_shutdown(const char *ctrl_path, usec_t timeout, vt_error **err) {
        return simple(ctrl_path, CMD_SHUTDOWN, timeout, err);
}

int tpm_ctrl_stop(const char *ctrl_path, usec_t timeout, vt_error **err) {
        return simple(ctrl_path, CMD_STOP, timeout, err);
}

int tpm_ctrl_get_tpm_established(const char *ctrl_path, usec_t timeout, bool *ret_established,
                                 vt_error **err) {
        uint8_t resp[8];
        int r = tpm_ctrl_call(ctrl_path, CMD_GET_TPMESTABLISHED, NULL, 0, resp, 5, 8, timeout, err);
        if (r < 0)
                return r;
        r = check_result(ctrl_path, CMD_GET_TPMESTABLISHED, resp, EIO, err);
        if (r < 0)
                return r;
        if (ret_established)
                *ret_established = resp[4] != 0;
        return 0;
}

int tpm_ctrl_get_buffersize(const char *ctrl_path, usec_t timeout, tpm_buffersize *ret, vt_error **err) {
        uint32_t req = 0;
        uint8_t resp[16];
        int r = tpm_ctrl_call(ctrl_path, CMD_SET_BUFFERSIZE, &req, 4, resp, 16, 16, timeout, err);
        if (r < 0)
                return r;
        r = check_result(ctrl_path, CMD_SET_BUFFERSIZE, resp, EIO, err);
        if (r < 0)
                return r;
        if (ret)
                *ret = (tpm_buffersize){get_be32(resp + 4), get_be32(resp + 8), get_be32(resp + 12)};
        return 0;
}

int tpm_ctrl_get_config(const char *ctrl_path, usec_t timeout, uint32_t *ret_flags, vt_error **err) {
        uint8_t resp[8];
        int r = tpm_ctrl_call(ctrl_path, CMD_GET_CONFIG, NULL, 0, resp, 8, 8, timeout, err);
        if (r < 0)
                return r;
        r = check_result(ctrl_path, CMD_GET_CONFIG, resp, EIO, err);
        if (r < 0)
                return r;
        if (ret_flags)
                *ret_flags = get_be32(resp + 4);
        return 0;
}

int tpm_ctrl_get_info(const char *ctrl_path, uint64_t flags, usec_t timeout, char **ret_json, vt_error **err) {
        assert_return(ret_json, -EINVAL);
        struct {
                uint64_t flags;
                uint32_t offset, pad;
        } req = {htobe64(flags), 0, 0};
        size_t max = 12 + PTM_GETINFO_SIZE;
        _cleanup_free_ uint8_t *resp = xmalloc(max);
        int r = tpm_ctrl_call(ctrl_path, CMD_GET_INFO, &req, sizeof(req), resp, 12, max, timeout, err);
        if (r < 0)
                return r;
        r = check_result(ctrl_path, CMD_GET_INFO, resp, EIO, err);
        if (r < 0)
                return r;
        uint32_t len = get_be32(resp + 8);
        if ((size_t)len > (size_t)r - 12)
                return vt_error_set(err, EPROTO, "CMD_GET_INFO to %s: reply announces %u bytes, carries %zu",
                                    ctrl_path, len, (size_t)r - 12);
        *ret_json = xstrndup((const char *)resp + 12, len);
        return 0;
}
