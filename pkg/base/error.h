/* SPDX-License-Identifier: Apache-2.0 */
/* The one error convention of the project.
 *
 * Functions return 0 (or a non-negative count) on success and a negative errno
 * on failure. Where the caller needs to know *why*, they also take a
 * `vt_error **err` and fill it with a human-readable message (crun's
 * libcrun_error_t). Library code never logs; the caller decides.
 *
 *     _cleanup_error_ vt_error *err = NULL;
 *     r = kube_config_load(path, &cfg, &err);
 *     if (r < 0)
 *             log_error("%s", err->msg);
 *
 * `err` may be NULL when the caller only wants the code. */
#pragma once

#include <stdarg.h>

#include "macro.h"

typedef struct vt_error {
        int code;  /* positive errno */
        char *msg;    /* never contains secrets: callers format only names, paths, ids */
        char *reason; /* optional machine-readable cause, e.g. the API's "Conflict" */
} vt_error;

/* Set *err (if err is non-NULL and *err is still unset) and return -errnum. */
int vt_error_set(vt_error **err, int errnum, const char *fmt, ...) _printf_(3, 4);
/* Like vt_error_set, with ": strerror(errnum)" appended. */
int vt_error_errno(vt_error **err, int errnum, const char *fmt, ...) _printf_(3, 4);
/* Prepend context ("loading kubeconfig: ") to the error a callee set, if
 * any, and return r, the callee's code: also when the caller passed no err,
 * so `return vt_error_prefix(err, r, ...)` never changes what is returned. */
int vt_error_prefix(vt_error **err, int r, const char *fmt, ...) _printf_(3, 4);
/* Attach a machine-readable reason to an existing error (no-op without one). */
void vt_error_set_reason(vt_error **err, const char *reason);
/* The reason, or "" when none: safe to strcmp(). */
const char *vt_error_reason(const vt_error *e);
void vt_error_free(vt_error *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(vt_error *, vt_error_free)
#define _cleanup_error_ _cleanup_(vt_error_freep)
