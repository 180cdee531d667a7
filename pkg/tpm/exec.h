/* SPDX-License-Identifier: Apache-2.0 */
/* Running the swtpm tools as child processes: captured output, a deadline,
 * exactly the file descriptors we mean to pass and no others, and keys handed
 * over through a pipe (never argv, environment or a file). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "base/timeutil.h"
#include "tpm/sandbox.h"

/* Captured output is truncated (tail kept) beyond this many bytes per stream. */
#define TPM_RUN_OUTPUT_MAX (256 * 1024)

typedef struct tpm_run_result {
        int status;   /* waitpid() status */
        char *out;    /* stdout, NUL-terminated, never NULL after success */
        char *err;    /* stderr, NUL-terminated, never NULL after success */
} tpm_run_result;

void tpm_run_result_done(tpm_run_result *r);

/* Run argv (argv[0] looked up in PATH) with stdin on /dev/null, stdout and
 * stderr captured, in its own process group. The fds in keep_fds (n_keep of
 * them) stay open in the child under the same numbers; every other fd is
 * closed. After `timeout` the whole process group is killed and -ETIMEDOUT
 * returned. A program that ran is success (0) whatever its exit status: look
 * at ret->status. */
int tpm_run(const char *const *argv, const int *keep_fds, size_t n_keep, usec_t timeout,
            tpm_run_result *ret, vt_error **err);
/* The same inside a sandbox (tpm/sandbox.h; NULL: tpm_run), with an
 * environment of PATH and HOME=/ only. */
int tpm_run_in(const tpm_sandbox *sb, const char *const *argv, const int *keep_fds, size_t n_keep, usec_t timeout,
               tpm_run_result *ret, vt_error **err);

/* Describe a wait status for messages: "exited with status 1", "killed by signal 9". */
char *tpm_describe_status(int status);

/* The last `max` bytes of text, starting at a line boundary where possible,
 * for error messages that quote a tool's log. Returns a new string. */
char *tpm_text_tail(const char *text, size_t len, size_t max);

/* A pipe whose read end (O_CLOEXEC, returned) yields exactly the key: raw
 * bytes, or lowercase hex when `hex` (what swtpm_setup's --keyfile-fd reads).
 * The key is at most 64 bytes, so it fits the pipe buffer and the write never
 * blocks; the write end is closed before returning. One pipe per consumer:
 * the reader drains it. */
int tpm_key_pipe(const uint8_t *key, size_t key_len, bool hex, int *ret_fd, vt_error **err);

/* "aes-128-cbc" for 16-byte keys, "aes-256-cbc" for 32-byte keys, NULL otherwise. */
const char *tpm_key_cipher(size_t key_len);
