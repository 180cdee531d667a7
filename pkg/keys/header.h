/* SPDX-License-Identifier: Apache-2.0 */
/* The key header: a small JSON file beside the TPM state on the PVC
 * (KEY_HEADER_FILE) that holds the VM's DEK wrapped by a KEK, and says who can
 * unwrap it, so state and key travel together through snapshots and moves:
 *
 *   {
 *     "version": 1,
 *     "provider": "kmip",                  "secret" | "kmip"
 *     "kekId": "42",                       Secret name/key version, or KMIP unique identifier
 *     "algorithm": "AES-256-KWP",          or "KMIP-AES-256-CBC-PKCS5" (see below)
 *     "wrappedKey": "<base64>",            40 bytes (KWP) / 80 bytes (KMIP CBC) for a 256-bit DEK
 *     "dekGeneration": 1,                  +1 each time the DEK is replaced (state re-encrypted)
 *     "createdAt": "2026-11-23T09:00:00Z", when this DEK was generated (optional)
 *     "wrappedAt": "2026-11-23T09:00:00Z", when it was last (re-)wrapped, e.g. KEK rotation (optional)
 *     "dekRequest": "2026-q4",             the DEK rotation request that made this DEK (optional)
 *     "next": { same fields, no "version"/"next" }  a DEK being introduced (optional, see below)
 *   }
 *
 * "next" exists only while the state is being re-encrypted (DEK rotation, or
 * the one-time encryption of state written before encryption was on): the
 * new DEK is on the volume, wrapped, before any file is encrypted with it,
 * so whatever a crash leaves can be finished or undone. For state that was
 * unencrypted the current fields are absent and only "next" is there.
 *
 * The file comes from a volume the tenant can write, so parsing is strict:
 * unknown version, unknown or missing fields, wrong types, bad base64 and
 * wrong lengths are errors (-EBADMSG, or -EPROTONOSUPPORT for a newer
 * version), and error messages say what is wrong, never what the file says. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "keys/wrap.h"

#define KEY_HEADER_FILE "vtpm-key.json"
#define KEY_HEADER_VERSION 1
#define KEY_HEADER_MAX_SIZE 4096
#define KEY_ID_MAX 256

/* Server-side wrapping by a KMIP server's Encrypt: wrappedKey is IV(16) ||
 * AES-256-CBC-PKCS5(KEK, IV, DEK || check(16)), where check is the first 16
 * bytes of SHA-256("vtpm-agent dek check v1" || DEK). CBC has no integrity of
 * its own; the check makes a wrong KEK or altered blob fail with -EBADMSG. */
#define KEYS_ALG_KMIP_CBC "KMIP-AES-256-CBC-PKCS5"

#define KEYS_PROVIDER_SECRET "secret"
#define KEYS_PROVIDER_KMIP "kmip"

typedef struct key_header {
        char *provider;
        char *kek_id;
        char *algorithm;
        uint8_t *wrapped_key;
        size_t wrapped_key_len;
        uint64_t dek_generation; /* >= 1 */
        char *created_at;        /* NULL when absent */
        char *wrapped_at;        /* NULL when absent */
        char *dek_request;       /* NULL when absent */
        struct key_header *next; /* NULL when absent; never has a next itself */
} key_header;

/* Whether h has a current wrapped key (false only for unencrypted state that
 * is being encrypted: then next is set). */
static inline bool key_header_has_current(const key_header *h) {
        return h->provider != NULL;
}

/* Deep copy of one key entry (wrapping fields, generation, times, request;
 * not next). */
void key_header_copy_entry(const key_header *src, key_header *ret);

/* Free the fields (not h itself) and zero it. */
void key_header_done(key_header *h);

/* Expected wrapped length for a 256-bit DEK under `algorithm`, or 0 if the
 * algorithm is unknown. */
size_t key_header_wrapped_len(const char *algorithm);
/* A KEK id or request id: 1..KEY_ID_MAX printable ASCII characters (ids end
 * up in statuses, events and error messages). */
bool key_id_valid(const char *s);

/* Check a header's fields (also done by parse and format). */
int key_header_validate(const key_header *h, vt_error **err);

int key_header_parse(const char *data, size_t size, key_header *ret, vt_error **err);
/* Serialise (validated) as pretty JSON with a trailing newline. */
int key_header_format(const key_header *h, char **ret, vt_error **err);

/* The header in the state directory `dfd` (opened with O_NOFOLLOW; see
 * base/fileat.h): read without following symlinks, only a regular file of at
 * most KEY_HEADER_MAX_SIZE bytes (-ELOOP for a symlink, -EBADMSG otherwise);
 * -ENOENT when there is none (unencrypted or new state). Errors never quote
 * the file. Write is atomic: "<file>.tmp" created fresh, synced, then
 * before_rename(point) if given (crash-injection tests), renamed, and the
 * directory synced; a leftover temp file is harmless and replaced next time. */
int key_header_readat(int dfd, key_header *ret, vt_error **err);
int key_header_writeat(int dfd, const key_header *h, void (*before_rename)(const char *point), const char *point,
                       vt_error **err);
/* The same by path (".../" KEY_HEADER_FILE; the directory is opened
 * no-follow), mode 0600. */
int key_header_read(const char *path, key_header *ret, vt_error **err);
int key_header_write(const char *path, const key_header *h, vt_error **err);
int key_header_write_hooked(const char *path, const key_header *h, void (*before_rename)(const char *point),
                            const char *point, vt_error **err);

/* Strict RFC 4648 base64 (standard alphabet, '=' padding required, no
 * whitespace). decode returns -EBADMSG on anything else. */
char *keys_base64_encode(const uint8_t *p, size_t n);
int keys_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len);
