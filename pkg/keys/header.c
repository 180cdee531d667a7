/* SPDX-License-Identifier: Apache-2.0 */
#include "header.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"


void key_header_done(key_header *h) {
        if (!h)
                return;
        free(h->provider);
        free(h->kek_id);
        free(h->algorithm);
        free(h->wrapped_key);
        free(h->created_at);
        free(h->wrapped_at);
        free(h->dek_request);
        if (h->next) {
                key_header_done(h->next);
                free(h->next);
        }
        *h = (key_header){0};
}

static char *dup_or_null(const char *s) {
        return s ? xstrdup(s) : NULL;
}

void key_header_copy_entry(const key_header *src, key_header *ret) {
        *ret = (key_header){0};
        ret->provider = dup_or_null(src->provider);
        ret->kek_id = dup_or_null(src->kek_id);
        ret->algorithm = dup_or_null(src->algorithm);
        if (src->wrapped_key) {
                ret->wrapped_key = xmalloc(src->wrapped_key_len ? src->wrapped_key_len : 1);
                memcpy(ret->wrapped_key, src->wrapped_key, src->wrapped_key_len);
                ret->wrapped_key_len = src->wrapped_key_len;
        }
        ret->dek_generation = src->dek_generation;
        ret->created_at = dup_or_null(src->created_at);
        ret->wrapped_at = dup_or_null(src->wrapped_at);
        ret->dek_request = dup_or_null(src->dek_request);
}

size_t key_header_wrapped_len(const char *algorithm) {
        if (!algorithm)
                return 0;
        if (strcmp(algorithm, KEYS_ALG_AES256_KWP) == 0)
                return KWP_WRAPPED_SIZE(32);
        if (strcmp(algorithm, KEYS_ALG_KMIP_CBC) == 0)
                return 16 + 64; /* IV + (32 + 16 check) padded to 64 */
        return 0;
}

bool key_id_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > KEY_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x21 || s[i] > 0x7e)
                        return false;
        return true;
}

/* RFC 3339 shape: digits, '-', ':', 'T', '.', 'Z', '+'; 20..40 chars. */
static bool timestamp_valid(const char *s) {
        size_t n = strlen(s);
        if (n < 20 || n > 40 || s[4] != '-' || s[10] != 'T')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!strchr("0123456789-:T.Z+", s[i]))
                        return false;
        return true;
}

static int validate_entry(const key_header *h, vt_error **err) {
        if (!h->provider || (strcmp(h->provider, KEYS_PROVIDER_SECRET) != 0 &&
                             strcmp(h->provider, KEYS_PROVIDER_KMIP) != 0))
                return vt_error_set(err, EBADMSG, "key header: provider must be \"secret\" or \"kmip\"");
        if (!h->kek_id || !key_id_valid(h->kek_id))
                return vt_error_set(err, EBADMSG,
                                    "key header: kekId must be 1..%d printable characters", KEY_ID_MAX);
        size_t want = key_header_wrapped_len(h->algorithm);
        if (want == 0)
                return vt_error_set(err, EBADMSG, "key header: unknown algorithm");
        if (!h->wrapped_key || h->wrapped_key_len != want)
                return vt_error_set(err, EBADMSG, "key header: wrappedKey is %zu bytes, %s needs %zu",
                                    h->wrapped_key ? h->wrapped_key_len : 0, h->algorithm, want);
        if (h->dek_generation < 1 || h->dek_generation > (uint64_t)1 << 53)
                return vt_error_set(err, EBADMSG, "key header: dekGeneration out of range");
        if (h->created_at && !timestamp_valid(h->created_at))
                return vt_error_set(err, EBADMSG, "key header: createdAt is not an RFC 3339 time");
        if (h->wrapped_at && !timestamp_valid(h->wrapped_at))
                return vt_error_set(err, EBADMSG, "key header: wrappedAt is not an RFC 3339 time");
        if (h->dek_request && !key_id_valid(h->dek_request))
                return vt_error_set(err, EBADMSG, "key header: dekRequest must be 1..%d printable characters",
                                    KEY_ID_MAX);
        return 0;
}

int key_header_validate(const key_header *h, vt_error **err) {
        assert_return(h, -EINVAL);
        int r;
        if (key_header_has_current(h) || !h->next) {
                r = validate_entry(h, err);
                if (r < 0)
                        return r;
        } else if (h->kek_id || h->algorithm || h->wrapped_key || h->dek_request)
                return vt_error_set(err, EBADMSG, "key header: a header without a current key has only \"next\"");
        if (h->next) {
                if (h->next->next)
                        return vt_error_set(err, EBADMSG, "key header: \"next\" cannot have a \"next\"");
                r = validate_entry(h->next, err);
                if (r < 0)
                        return vt_error_prefix(err, r, "next: ");
                if (key_header_has_current(h) && h->next->dek_generation <= h->dek_generation)
                        return vt_error_set(err, EBADMSG, "key header: next.dekGeneration must be above dekGeneration");
        }
        return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *keys_base64_encode(const uint8_t *p, size_t n) {
        char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;
        size_t i = 0;
        for (; i + 3 <= n; i += 3) {
                uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
                *o++ = b64[v >> 18];
                *o++ = b64[(v >> 12) & 63];
                *o++ = b64[(v >> 6) & 63];
                *o++ = b64[v & 63];
        }
        if (n - i == 1) {
                uint32_t v = (uint32_t)p[i] << 16;
                *o++ = b64[v >> 18];
                *o++ = b64[(v >> 12) & 63];
                *o++ = '=';
                *o++ = '=';
        } else if (n - i == 2) {
                uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
                *o++ = b64[v >> 18];
                *o++ = b64[(v >> 12) & 63];
                *o++ = b64[(v >> 6) & 63];
                *o++ = '=';
        }
        *o = '\0';
        return out;
}

static int b64_val(char c) {
        const char *p = c ? strchr(b64, c) : NULL;
        return p ? (int)(p - b64) : -1;
}

int keys_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len) {
        assert_return(s && ret && ret_len, -EINVAL);
        if (len == 0 || len % 4 != 0)
                return -EBADMSG;
        size_t pad = s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
        size_t n = len / 4 * 3 - pad;
        _cleanup_free_ uint8_t *out = xmalloc(n + 3);
        size_t o = 0;
        for (size_t i = 0; i < len; i += 4) {
                bool last = i + 4 == len;
                int v[4];
                for (int j = 0; j < 4; j++) {
                        if (last && s[i + j] == '=' && (size_t)j >= 4 - pad) {
                                v[j] = 0;
                                continue;
                        }
                        v[j] = b64_val(s[i + j]);
                        if (v[j] < 0)
                                return -EBADMSG;
                }
                uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
                /* Canonical form only: the bits dropped by padding must be zero. */
                if (last && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))))
                        return -EBADMSG;
                out[o++] = (uint8_t)(w >> 16);
                out[o++] = (uint8_t)(w >> 8);
                out[o++] = (uint8_t)w;
        }
        *ret_len = n;
        *ret = TAKE_PTR(out);
        return 0;
}

static const char *const known_fields[] = {
        "version", "provider", "kekId", "algorithm", "wrappedKey", "dekGeneration", "createdAt", "wrappedAt",
        "dekRequest", "next",
};

static int get_string(json_t *root, const char *name, bool required, char **ret, vt_error **err) {
        json_t *v = json_object_get(root, name);
        if (!v) {
                if (required)
                        return vt_error_set(err, EBADMSG, "key header: missing field \"%s\"", name);
                *ret = NULL;
                return 0;
        }
        if (!json_is_string(v))
                return vt_error_set(err, EBADMSG, "key header: field \"%s\" must be a string", name);
        /* Embedded NULs would make the C string disagree with the JSON one. */
        if (strlen(json_string_value(v)) != json_string_length(v))
                return vt_error_set(err, EBADMSG, "key header: field \"%s\" contains NUL", name);
        *ret = xstrdup(json_string_value(v));
        return 0;
}

/* One key entry: the top level (top = true: "version" and "next" allowed,
 * all fields optional when there is a "next") or the "next" object. */
static int parse_entry(json_t *root, bool top, key_header *h, vt_error **err) {
        const char *k;
        json_t *v;
        json_object_foreach(root, k, v) {
                bool known = false;
                for (size_t i = 0; i < ELEMENTSOF(known_fields); i++)
                        if (strcmp(k, known_fields[i]) == 0)
                                known = true;
                if (!top && (strcmp(k, "version") == 0 || strcmp(k, "next") == 0))
                        known = false;
                if (!known)
                        return vt_error_set(err, EBADMSG, "key header: unknown field");
        }
        json_t *nx = top ? json_object_get(root, "next") : NULL;
        if (nx) {
                if (!json_is_object(nx))
                        return vt_error_set(err, EBADMSG, "key header: field \"next\" must be an object");
                h->next = xnew(key_header, 1);
                int r = parse_entry(nx, false, h->next, err);
                if (r < 0)
                        return r;
        }
        /* Without a current key (state being encrypted for the first time)
         * the header is only "version" and "next". */
        bool current = !nx || json_object_get(root, "provider");
        if (!current) {
                const char *cur_fields[] = {"kekId", "algorithm", "wrappedKey", "dekGeneration", "createdAt",
                                            "wrappedAt", "dekRequest"};
                for (size_t i = 0; i < ELEMENTSOF(cur_fields); i++)
                        if (json_object_get(root, cur_fields[i]))
                                return vt_error_set(err, EBADMSG,
                                                    "key header: \"%s\" without \"provider\" (a header without a "
                                                    "current key has only \"next\")",
                                                    cur_fields[i]);
                return 0;
        }

        _cleanup_free_ char *wrapped_b64 = NULL;
        int r;
        if ((r = get_string(root, "provider", true, &h->provider, err)) < 0 ||
            (r = get_string(root, "kekId", true, &h->kek_id, err)) < 0 ||
            (r = get_string(root, "algorithm", true, &h->algorithm, err)) < 0 ||
            (r = get_string(root, "wrappedKey", true, &wrapped_b64, err)) < 0 ||
            (r = get_string(root, "createdAt", false, &h->created_at, err)) < 0 ||
            (r = get_string(root, "wrappedAt", false, &h->wrapped_at, err)) < 0 ||
            (r = get_string(root, "dekRequest", false, &h->dek_request, err)) < 0)
                return r;

        json_t *gen = json_object_get(root, "dekGeneration");
        if (!gen)
                return vt_error_set(err, EBADMSG, "key header: missing field \"dekGeneration\"");
        if (!json_is_integer(gen) || json_integer_value(gen) < 1)
                return vt_error_set(err, EBADMSG, "key header: dekGeneration must be a positive integer");
        h->dek_generation = (uint64_t)json_integer_value(gen);

        if (keys_base64_decode(wrapped_b64, strlen(wrapped_b64), &h->wrapped_key, &h->wrapped_key_len) < 0)
                return vt_error_set(err, EBADMSG, "key header: wrappedKey is not valid base64");
        return 0;
}

int key_header_parse(const char *data, size_t size, key_header *ret, vt_error **err) {
        assert_return(data && ret, -EINVAL);
        if (size > KEY_HEADER_MAX_SIZE)
                return vt_error_set(err, EBADMSG, "key header: larger than %d bytes", KEY_HEADER_MAX_SIZE);
        json_error_t je;
        _cleanup_(json_decrefp) json_t *root = json_loadb(data, size, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                /* Not je.text: it quotes the file ("... near 'xyz'"), which
                 * may be anything a tenant (or a planted link) put there. */
                return vt_error_set(err, EBADMSG, "key header: not valid JSON (line %d)", je.line);
        if (!json_is_object(root))
                return vt_error_set(err, EBADMSG, "key header: not a JSON object");

        json_t *ver = json_object_get(root, "version");
        if (!ver)
                return vt_error_set(err, EBADMSG, "key header: missing field \"version\"");
        if (!json_is_integer(ver))
                return vt_error_set(err, EBADMSG, "key header: field \"version\" must be an integer");
        if (json_integer_value(ver) != KEY_HEADER_VERSION)
                return vt_error_set(err, EPROTONOSUPPORT,
                                    "key header: version is not supported (this agent reads version %d)",
                                    KEY_HEADER_VERSION);

        _cleanup_(key_header_done) key_header h = {0};
        int r = parse_entry(root, true, &h, err);
        if (r < 0)
                return r;
        r = key_header_validate(&h, err);
        if (r < 0)
                return r;
        *ret = h;
        h = (key_header){0};
        return 0;
}

static void format_entry(const key_header *h, json_t *o) {
        _cleanup_free_ char *b = keys_base64_encode(h->wrapped_key, h->wrapped_key_len);
        json_object_set_new(o, "provider", json_string(h->provider));
        json_object_set_new(o, "kekId", json_string(h->kek_id));
        json_object_set_new(o, "algorithm", json_string(h->algorithm));
        json_object_set_new(o, "wrappedKey", json_string(b));
        json_object_set_new(o, "dekGeneration", json_integer((json_int_t)h->dek_generation));
        if (h->created_at)
                json_object_set_new(o, "createdAt", json_string(h->created_at));
        if (h->wrapped_at)
                json_object_set_new(o, "wrappedAt", json_string(h->wrapped_at));
        if (h->dek_request)
                json_object_set_new(o, "dekRequest", json_string(h->dek_request));
}

int key_header_format(const key_header *h, char **ret, vt_error **err) {
        assert_return(h && ret, -EINVAL);
        int r = key_header_validate(h, err);
        if (r < 0)
                return r;
        _cleanup_(json_decrefp) json_t *o = json_object();
        json_object_set_new(o, "version", json_integer(KEY_HEADER_VERSION));
        if (key_header_has_current(h))
                format_entry(h, o);
        if (h->next) {
                json_t *n = json_object();
                format_entry(h->next, n);
                json_object_set_new(o, "next", n);
        }
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!s)
                return vt_error_set(err, ENOMEM, "key header: cannot serialise");
        *ret = xasprintf("%s\n", s);
        free(s);
        return 0;
}

int key_header_readat(int dfd, key_header *ret, vt_error **err) {
        assert_return(ret, -EINVAL);
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r = read_file_beneath(dfd, KEY_HEADER_FILE, KEY_HEADER_MAX_SIZE, &data, &size, err);
        if (r == -EFBIG) {
                vt_error_free(err ? *err : NULL);
                if (err)
                        *err = NULL;
                return vt_error_set(err, EBADMSG, "key header: larger than %d bytes", KEY_HEADER_MAX_SIZE);
        }
        if (r < 0)
                return r;
        return key_header_parse(data, size, ret, err);
}

int key_header_writeat(int dfd, const key_header *h, void (*before_rename)(const char *point), const char *point,
                       vt_error **err) {
        assert_return(h, -EINVAL);
        _cleanup_free_ char *s = NULL;
        int r = key_header_format(h, &s, err);
        if (r < 0)
                return r;
        return write_file_beneath(dfd, KEY_HEADER_FILE, s, strlen(s), 0600, before_rename, point, err);
}

/* The directory of `path` (opened no-follow); the file must be KEY_HEADER_FILE. */
static int header_dir(const char *path, vt_error **err) {
        const char *slash = strrchr(path, '/');
        if (strcmp(slash ? slash + 1 : path, KEY_HEADER_FILE) != 0)
                return vt_error_set(err, EINVAL, "%s: a key header is called %s", path, KEY_HEADER_FILE);
        _cleanup_free_ char *dir = slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup(".");
        return dir_open_nofollow(*dir ? dir : "/", err);
}

int key_header_read(const char *path, key_header *ret, vt_error **err) {
        assert_return(path && ret, -EINVAL);
        _cleanup_close_ int dfd = header_dir(path, err);
        if (dfd < 0)
                return dfd;
        int r = key_header_readat(dfd, ret, err);
        if (r < 0)
                (void)vt_error_prefix(err, r, "%s: ", path);
        return r;
}

int key_header_write(const char *path, const key_header *h, vt_error **err) {
        return key_header_write_hooked(path, h, NULL, NULL, err);
}

int key_header_write_hooked(const char *path, const key_header *h, void (*before_rename)(const char *point),
                            const char *point, vt_error **err) {
        assert_return(path && h, -EINVAL);
        _cleanup_close_ int dfd = header_dir(path, err);
        if (dfd < 0)
                return dfd;
        return key_header_writeat(dfd, h, before_rename, point, err);
}
