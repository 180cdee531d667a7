/* SPDX-License-Identifier: Apache-2.0 */
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static int error_setv(vt_error **err, int errnum, const char *suffix, const char *fmt, va_list ap) {
        if (errnum < 0)
                errnum = -errnum;
        if (errnum == 0)
                errnum = EIO;
        if (err && !*err) {
                _cleanup_free_ char *m = xvasprintf(fmt, ap);
                vt_error *e = xnew(vt_error, 1);
                e->code = errnum;
                e->msg = suffix ? xasprintf("%s: %s", m, suffix) : TAKE_PTR(m);
                *err = e;
        }
        return -errnum;
}

int vt_error_set(vt_error **err, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_setv(err, errnum, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int vt_error_errno(vt_error **err, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_setv(err, errnum, strerror(errnum < 0 ? -errnum : errnum), fmt, ap);
        va_end(ap);
        return r;
}

int vt_error_prefix(vt_error **err, int r, const char *fmt, ...) {
        if (!err || !*err)
                return r;
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *p = xvasprintf(fmt, ap);
        va_end(ap);
        char *m = xasprintf("%s%s", p, (*err)->msg);
        free((*err)->msg);
        (*err)->msg = m;
        return r;
}

void vt_error_set_reason(vt_error **err, const char *reason) {
        if (!err || !*err || !reason)
                return;
        free((*err)->reason);
        (*err)->reason = xstrdup(reason);
}

const char *vt_error_reason(const vt_error *e) {
        return e && e->reason ? e->reason : "";
}

void vt_error_free(vt_error *e) {
        if (!e)
                return;
        free(e->reason);
        free(e->msg);
        free(e);
}
