/* SPDX-License-Identifier: Apache-2.0 */
/* What the "secret" KEK provider reads, parsed without I/O (so it can be
 * fuzzed): the kekId in a key header (tenant data) and the KEK Secret as the
 * API server returns it (a KEK value of any length may be in it).
 *
 * kekId: "<agent-ns>/vtpm-kek-<vm-ns>#<version>", version a rotation id
 * (keys_rotation_id_valid; the first KEK is "1"). The Secret
 * <agent-ns>/vtpm-kek-<vm-ns> holds data["kek-<version>"]: the standard
 * base64 of exactly 32 bytes (44 characters, one '='). */
#pragma once

#include <jansson.h>

#include "base/error.h"
#include "keys/secmem.h"

/* 44: 32 bytes in standard base64 with padding. */
#define KEK_SECRET_B64_LEN 44

/* The kekId of scope's KEK `version` (newly allocated). */
char *kek_id_make(const char *agent_ns, const char *scope, const char *version);

/* Is kek_id one of scope's KEKs? 0 and the version (pointing into kek_id)
 * if it is exactly kek_id_make(agent_ns, scope, <valid version>), -EPERM if
 * not. No message: the caller says one generic thing. */
int kek_id_for_scope(const char *agent_ns, const char *scope, const char *kek_id, const char **ret_version);

/* data["kek-<version>"] of `secret` decoded into locked memory (32 bytes).
 * The length is checked before anything is decoded. -ENOKEY when there is no
 * such key, -EBADMSG when it is not a 256-bit key in canonical base64.
 * Messages name the field, never its value. */
int kek_secret_key(const json_t *secret, const char *version, secmem **ret, vt_error **err);
