/* SPDX-License-Identifier: Apache-2.0 */
#include "mount/mountinfo.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fileio.h"

/* Larger than any real mountinfo (a node with thousands of pods has a few
 * hundred KiB); bounds what a hostile namespace can make us allocate. */
#define MOUNTINFO_MAX_SIZE (16U * 1024U * 1024U)

typedef struct span {
        const char *p;
        size_t len;
} span;

/* Split on single spaces, keeping empty tokens: the kernel separates fields by
 * exactly one space, and a mount source can be the empty string, which shows
 * up as two spaces in a row. */
static bool next_token(const char **cur, const char *end, span *ret) {
        if (*cur > end)
                return false;
        const char *s = *cur;
        const char *e = memchr(s, ' ', (size_t)(end - s));
        if (!e)
                e = end;
        ret->p = s;
        ret->len = (size_t)(e - s);
        *cur = e + 1; /* one past end when e == end: the next call returns false */
        return true;
}

static bool span_eq(span s, const char *lit) {
        size_t n = strlen(lit);
        return s.len == n && memcmp(s.p, lit, n) == 0;
}

static int parse_uint(span s, unsigned max, unsigned *ret) {
        if (s.len == 0 || s.len > 10)
                return -EBADMSG;
        uint64_t v = 0;
        for (size_t i = 0; i < s.len; i++) {
                if (s.p[i] < '0' || s.p[i] > '9')
                        return -EBADMSG;
                v = v * 10 + (uint64_t)(s.p[i] - '0');
        }
        if (v > max)
                return -EBADMSG;
        *ret = (unsigned)v;
        return 0;
}

static bool is_octal(char c) {
        return c >= '0' && c <= '7';
}

/* Undo the kernel's mangle(): "\ooo" is one byte. A backslash not followed by
 * three octal digits is kept as is (the kernel never prints one, but being
 * lenient here is harmless). A decoded NUL is refused: no path contains one,
 * and it would silently truncate the string. */
static int decode_field(span s, char **ret) {
        char *out = xmalloc(s.len + 1);
        size_t o = 0;
        for (size_t i = 0; i < s.len; i++) {
                if (s.p[i] == '\\' && i + 3 < s.len && is_octal(s.p[i + 1]) && is_octal(s.p[i + 2]) &&
                    is_octal(s.p[i + 3])) {
                        unsigned v = (unsigned)(s.p[i + 1] - '0') * 64 + (unsigned)(s.p[i + 2] - '0') * 8 +
                                     (unsigned)(s.p[i + 3] - '0');
                        if (v == 0 || v > 0xff) {
                                free(out);
                                return -EBADMSG;
                        }
                        out[o++] = (char)v;
                        i += 3;
                } else
                        out[o++] = s.p[i];
        }
        out[o] = '\0';
        *ret = out;
        return 0;
}

void mountinfo_entry_done(mountinfo_entry *e) {
        if (!e)
                return;
        free(e->root);
        free(e->mount_point);
        free(e->mount_options);
        for (size_t i = 0; i < e->n_optional; i++)
                free(e->optional[i]);
        free(e->optional);
        free(e->fstype);
        free(e->source);
        free(e->super_options);
        *e = (mountinfo_entry){0};
}

void mountinfo_entry_free(mountinfo_entry *e) {
        mountinfo_entry_done(e);
        free(e);
}

mountinfo_entry *mountinfo_entry_copy(const mountinfo_entry *e) {
        mountinfo_entry *c = xnew(mountinfo_entry, 1);
        *c = *e;
        c->root = xstrdup(e->root);
        c->mount_point = xstrdup(e->mount_point);
        c->mount_options = xstrdup(e->mount_options);
        c->optional = xnew(char *, e->n_optional + 1);
        for (size_t i = 0; i < e->n_optional; i++)
                c->optional[i] = xstrdup(e->optional[i]);
        c->fstype = xstrdup(e->fstype);
        c->source = xstrdup(e->source);
        c->super_options = xstrdup(e->super_options);
        return c;
}

void mountinfo_table_free(mountinfo_table *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n; i++)
                mountinfo_entry_done(&t->entries[i]);
        free(t->entries);
        free(t);
}

int mountinfo_parse_line(const char *line, size_t len, mountinfo_entry *ret, vt_error **err) {
        assert_return(line && ret, -EINVAL);
        if (memchr(line, '\0', len))
                return vt_error_set(err, EBADMSG, "mountinfo line contains a NUL byte");

        const char *cur = line, *end = line + len;
        span tok[6];
        for (size_t i = 0; i < ELEMENTSOF(tok); i++)
                if (!next_token(&cur, end, &tok[i]))
                        return vt_error_set(err, EBADMSG, "mountinfo line has %zu of at least 10 fields", i);

        mountinfo_entry e = {0};
        unsigned id, parent, major, minor;
        if (parse_uint(tok[0], INT_MAX, &id) < 0 || parse_uint(tok[1], INT_MAX, &parent) < 0)
                return vt_error_set(err, EBADMSG, "mountinfo line has a bad mount ID");
        const char *colon = memchr(tok[2].p, ':', tok[2].len);
        if (!colon ||
            parse_uint((span){tok[2].p, (size_t)(colon - tok[2].p)}, UINT_MAX, &major) < 0 ||
            parse_uint((span){colon + 1, tok[2].len - (size_t)(colon - tok[2].p) - 1}, UINT_MAX, &minor) < 0)
                return vt_error_set(err, EBADMSG, "mountinfo line has a bad major:minor");
        e.mount_id = (int)id;
        e.parent_id = (int)parent;
        e.major = major;
        e.minor = minor;

        int r = -EBADMSG;
        if (tok[3].len == 0 || tok[4].len == 0)
                goto bad;
        if (decode_field(tok[3], &e.root) < 0 || decode_field(tok[4], &e.mount_point) < 0)
                goto bad;
        e.mount_options = xstrndup(tok[5].p, tok[5].len);

        /* Optional fields, zero or more, up to the "-" separator. */
        size_t allocated = 0;
        span t;
        for (;;) {
                if (!next_token(&cur, end, &t)) {
                        mountinfo_entry_done(&e);
                        return vt_error_set(err, EBADMSG, "mountinfo line lacks the \"-\" separator");
                }
                if (span_eq(t, "-"))
                        break;
                if (t.len == 0)
                        goto bad;
                e.optional = xgrow(e.optional, &allocated, e.n_optional + 2, sizeof(char *));
                e.optional[e.n_optional++] = xstrndup(t.p, t.len);
                e.optional[e.n_optional] = NULL;
        }

        span fstype, source, super;
        if (!next_token(&cur, end, &fstype) || !next_token(&cur, end, &source) ||
            !next_token(&cur, end, &super)) {
                mountinfo_entry_done(&e);
                return vt_error_set(err, EBADMSG, "mountinfo line lacks fields after \"-\"");
        }
        if (fstype.len == 0)
                goto bad;
        if (decode_field(fstype, &e.fstype) < 0 || decode_field(source, &e.source) < 0)
                goto bad;
        /* Super options are the rest of the line: later kernels may append
         * fields, and this parser does not need them. */
        e.super_options = xstrndup(super.p, super.len);

        *ret = e;
        return 0;
bad:
        mountinfo_entry_done(&e);
        return vt_error_set(err, -r, "malformed mountinfo line");
}

int mountinfo_parse(const char *data, size_t size, mountinfo_table **ret, vt_error **err) {
        assert_return(data || size == 0, -EINVAL);
        assert_return(ret, -EINVAL);
        mountinfo_table *t = xnew(mountinfo_table, 1);
        size_t allocated = 0, lineno = 0;
        const char *p = data, *end = data + size;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
                lineno++;
                if (len > 0) {
                        t->entries = xgrow(t->entries, &allocated, t->n + 1, sizeof(mountinfo_entry));
                        int r = mountinfo_parse_line(p, len, &t->entries[t->n], err);
                        if (r < 0) {
                                mountinfo_table_free(t);
                                if (err && *err)
                                        vt_error_prefix(err, r, "line %zu: ", lineno);
                                return r;
                        }
                        t->n++;
                }
                p += len + (nl ? 1 : 0);
        }
        *ret = t;
        return 0;
}

int mountinfo_read(pid_t pid, mountinfo_table **ret, vt_error **err) {
        assert_return(pid >= 0 && ret, -EINVAL);
        _cleanup_free_ char *path = pid == 0 ? xstrdup("/proc/self/mountinfo")
                                             : xasprintf("/proc/%d/mountinfo", (int)pid);
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r = read_full_file(path, MOUNTINFO_MAX_SIZE, &data, &size, err);
        if (r < 0)
                return r;
        r = mountinfo_parse(data, size, ret, err);
        if (r < 0)
                return vt_error_prefix(err, r, "%s: ", path);
        return 0;
}

int mount_path_normalize(const char *path, char **ret, vt_error **err) {
        assert_return(path && ret, -EINVAL);
        if (path[0] != '/')
                return vt_error_set(err, EINVAL, "path \"%s\" is not absolute", path);
        size_t n = strlen(path);
        char *out = xmalloc(n + 2);
        size_t o = 0;
        const char *p = path;
        while (*p) {
                while (*p == '/')
                        p++;
                if (!*p)
                        break;
                const char *s = p;
                while (*p && *p != '/')
                        p++;
                size_t len = (size_t)(p - s);
                if (len == 1 && s[0] == '.')
                        continue;
                if (len == 2 && s[0] == '.' && s[1] == '.') {
                        free(out);
                        return vt_error_set(err, EINVAL, "path \"%s\" contains \"..\"", path);
                }
                out[o++] = '/';
                memcpy(out + o, s, len);
                o += len;
        }
        if (o == 0)
                out[o++] = '/';
        out[o] = '\0';
        *ret = out;
        return 0;
}

/* Top of the stack among entries at the same mount point as t->entries[i]:
 * an entry whose mount ID is the parent of another entry at the same place is
 * covered by it. */
static bool is_covered(const mountinfo_table *t, size_t i) {
        for (size_t j = 0; j < t->n; j++)
                if (j != i && t->entries[j].parent_id == t->entries[i].mount_id &&
                    strcmp(t->entries[j].mount_point, t->entries[i].mount_point) == 0)
                        return true;
        return false;
}

static const mountinfo_entry *find_exact(const mountinfo_table *t, const char *norm) {
        const mountinfo_entry *best = NULL, *last = NULL;
        for (size_t i = 0; i < t->n; i++) {
                if (strcmp(t->entries[i].mount_point, norm) != 0)
                        continue;
                last = &t->entries[i];
                if (!is_covered(t, i))
                        best = &t->entries[i];
        }
        /* A cycle of parent links (only in crafted input) leaves no top: take
         * the last, as file order suggests. */
        return best ? best : last;
}

const mountinfo_entry *mountinfo_find_mount_point(const mountinfo_table *t, const char *path) {
        if (!t || !path)
                return NULL;
        _cleanup_free_ char *norm = NULL;
        if (mount_path_normalize(path, &norm, NULL) < 0)
                return NULL;
        return find_exact(t, norm);
}

const mountinfo_entry *mountinfo_find_covering(const mountinfo_table *t, const char *path) {
        if (!t || !path)
                return NULL;
        _cleanup_free_ char *norm = NULL;
        if (mount_path_normalize(path, &norm, NULL) < 0)
                return NULL;
        /* Walk from the full path up to "/": the first prefix that is a mount
         * point is the mount holding the path. */
        size_t len = strlen(norm);
        for (;;) {
                const mountinfo_entry *e = find_exact(t, norm);
                if (e)
                        return e;
                if (len <= 1)
                        return NULL;
                char *slash = strrchr(norm, '/');
                if (slash == norm)
                        slash[1] = '\0';
                else
                        *slash = '\0';
                len = strlen(norm);
        }
}

const mountinfo_entry *mountinfo_find_id(const mountinfo_table *t, int mount_id) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                if (t->entries[i].mount_id == mount_id)
                        return &t->entries[i];
        return NULL;
}

bool mountinfo_entry_same_source(const mountinfo_entry *a, const mountinfo_entry *b) {
        return a && b && a->major == b->major && a->minor == b->minor && a->root && b->root &&
               strcmp(a->root, b->root) == 0;
}

static int peer_id(const char *opt, const char *prefix) {
        size_t n = strlen(prefix);
        if (strncmp(opt, prefix, n) != 0)
                return 0;
        unsigned v;
        if (parse_uint((span){opt + n, strlen(opt + n)}, INT_MAX, &v) < 0)
                return 0;
        return (int)v;
}

void mountinfo_entry_peer_groups(const mountinfo_entry *e, int *ret_shared, int *ret_master) {
        int shared = 0, master = 0;
        for (size_t i = 0; e && i < e->n_optional; i++) {
                int s = peer_id(e->optional[i], "shared:");
                int m = peer_id(e->optional[i], "master:");
                if (s)
                        shared = s;
                if (m)
                        master = m;
        }
        if (ret_shared)
                *ret_shared = shared;
        if (ret_master)
                *ret_master = master;
}
