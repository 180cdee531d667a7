/* SPDX-License-Identifier: Apache-2.0 */
/* Client for swtpm's control channel (`--ctrl type=unixio,path=...`), the
 * protocol of swtpm's tpm_ioctl.h: a big-endian 32-bit command code plus the
 * request part of the ioctl struct; the reply is the response part, starting
 * with the TPM result code (0 = success).
 *
 * Each call opens its own connection and closes it again. swtpm serves ONE
 * control client at a time: while QEMU holds the channel (for the whole life
 * of a VM) other clients queue in the listen backlog and get no answer, so
 * every call has a deadline and reports -ETIMEDOUT ("busy"), never hangs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/timeutil.h"

/* Default deadline of one control-channel exchange. */
#define TPM_CTRL_TIMEOUT (5 * USEC_PER_SEC)

/* PTM_CAP_* bits (tpm_ioctl.h). */
int tpm_ctrl_get_capability(const char *ctrl_path, usec_t timeout, uint64_t *ret_caps, vt_error **err);

/* CMD_INIT: the TPM loads its state here (not at process start). flags:
 * PTM_INIT_FLAG_DELETE_VOLATILE or 0. A TPM result other than 0 is -EBADMSG
 * ("state could not be loaded": wrong key, corrupt state), with the result
 * code in the message and, when ret_tpm_result is set, there too. */
int tpm_ctrl_init(const char *ctrl_path, uint32_t flags, usec_t timeout, uint32_t *ret_tpm_result,
                  vt_error **err);

/* CMD_SHUTDOWN: state flushed, then swtpm exits. */
int tpm_ctrl_shutdown(const char *ctrl_path, usec_t timeout, vt_error **err);

/* CMD_STOP: TPM stopped (no state written unless it was modified), process
 * keeps running and can be INIT-ed again. */
int tpm_ctrl_stop(const char *ctrl_path, usec_t timeout, vt_error **err);

int tpm_ctrl_get_tpm_established(const char *ctrl_path, usec_t timeout, bool *ret_established,
                                 vt_error **err);

typedef struct tpm_buffersize {
        uint32_t size, min, max;
} tpm_buffersize;
/* CMD_SET_BUFFERSIZE with 0 (query only, changes nothing). */
int tpm_ctrl_get_buffersize(const char *ctrl_path, usec_t timeout, tpm_buffersize *ret, vt_error **err);

/* CMD_GET_CONFIG: PTM_CONFIG_FLAG_FILE_KEY is set when the state is encrypted. */
int tpm_ctrl_get_config(const char *ctrl_path, usec_t timeout, uint32_t *ret_flags, vt_error **err);

/* CMD_GET_INFO with SWTPM_INFO_* flags: libtpms's JSON (spec, attributes). */
int tpm_ctrl_get_info(const char *ctrl_path, uint64_t flags, usec_t timeout, char **ret_json, vt_error **err);

/* One raw exchange, for the calls above and for tests: sends cmd + req,
 * reads up to resp_max bytes of reply (stops early once a non-zero result
 * arrived or the peer closed). Returns the number of reply bytes (>= 4). */
int tpm_ctrl_call(const char *ctrl_path, uint32_t cmd, const void *req, size_t req_len, void *resp,
                  size_t resp_min, size_t resp_max, usec_t timeout, vt_error **err);

/* The same over an already connected control channel (swtpm's
 * `--ctrl type=unixio,clientfd=N`); ctrl_path only names it in messages. */
int tpm_ctrl_call_fd(int fd, const char *ctrl_path, uint32_t cmd, const void *req, size_t req_len, void *resp,
                     size_t resp_min, size_t resp_max, usec_t timeout, vt_error **err);

/* "CMD_INIT" etc., for messages. */
const char *tpm_ctrl_cmd_name(uint32_t cmd);
