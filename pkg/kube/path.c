/* SPDX-License-Identifier: Apache-2.0 */
/* Request paths: built from a kube_resource, and read back into the
 * resource they name (for the request counters). */
#include "kube/client.h"

#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"

char *kube_escape(const char *s) {
        vt_buf b = {0};
        static const char hex[] = "0123456789ABCDEF";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '_' || *p == '.' || *p == '~')
                        vt_buf_append(&b, p, 1);
                else {
                        char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
                        vt_buf_append(&b, e, 3);
                }
        }
        return vt_buf_steal(&b);
}

char *kube_path(const kube_resource *r, const char *namespace, const char *name, const char *subresource) {
        vt_buf b = {0};
        if (!r->group || !*r->group)
                vt_buf_printf(&b, "/api/%s", r->version);
        else
                vt_buf_printf(&b, "/apis/%s/%s", r->group, r->version);
        if (r->namespaced && namespace) {
                _cleanup_free_ char *e = kube_escape(namespace);
                vt_buf_printf(&b, "/namespaces/%s", e);
        }
        vt_buf_printf(&b, "/%s", r->plural);
        if (name) {
                _cleanup_free_ char *e = kube_escape(name);
                vt_buf_printf(&b, "/%s", e);
                if (subresource)
                        vt_buf_printf(&b, "/%s", subresource);
        }
        return vt_buf_steal(&b);
}

/* A plural as the API server names resources: a DNS label. */
static bool is_plural(const char *s, size_t len) {
        if (len == 0 || len > 63)
                return false;
        for (size_t i = 0; i < len; i++) {
                char ch = s[i];
                bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
                if (!alnum && !(ch == '-' && i > 0 && i + 1 < len))
                        return false;
        }
        return true;
}

/* The segment after `n` more slashes of p (p at a segment's start); its
 * length in *ret_len. NULL when there are not that many. */
static const char *segment(const char *p, unsigned n, size_t *ret_len) {
        for (; n > 0; n--) {
                p = strchr(p, '/');
                if (!p)
                        return NULL;
                p++;
        }
        *ret_len = strcspn(p, "/");
        return p;
}

bool kube_path_resource(const char *path, char *buf, size_t size) {
        if (!path || !buf || size == 0)
                return false;
        _cleanup_free_ char *p = xstrndup(path, strcspn(path, "?#"));
        /* past /api/<version>/ or /apis/<group>/<version>/ */
        size_t len;
        const char *s;
        if (strncmp(p, "/api/", 5) == 0)
                s = segment(p + 5, 1, &len);
        else if (strncmp(p, "/apis/", 6) == 0)
                s = segment(p + 6, 2, &len);
        else
                return false;
        if (!s || len == 0)
                return false;
        /* namespaces/<ns>/<plural>/...; namespaces or namespaces/<ns> alone
         * is the namespace itself. */
        if (len == 10 && strncmp(s, "namespaces", 10) == 0) {
                size_t l2;
                const char *r = segment(s, 2, &l2);
                if (r && l2 > 0) {
                        s = r;
                        len = l2;
                }
        }
        if (!is_plural(s, len) || len >= size)
                return false;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return true;
}
