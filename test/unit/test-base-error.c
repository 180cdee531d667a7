/* SPDX-License-Identifier: Apache-2.0 */
/* The one error convention (pkg/base/error.h): the code a function returns
 * never depends on whether its caller asked for a message. */
#include <errno.h>
#include <stdlib.h>

#include "base/error.h"
#include "tap.h"

/* A callee in the convention, and a caller that adds its context. */
static int callee(vt_error **err) {
        return vt_error_set(err, ENOENT, "no such thing");
}
static int caller(vt_error **err) {
        int r = callee(err);
        if (r < 0)
                return vt_error_prefix(err, r, "reading the thing: ");
        return 0;
}

static void test_prefix_keeps_the_code_without_err(void) {
        /* Used to be -EIO: a caller that wants only the code saw another one. */
        check_int_eq(caller(NULL), -ENOENT);
}

static void test_prefix_with_err(void) {
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(caller(&err), -ENOENT);
        check(err && err->code == ENOENT);
        check_str_eq(err->msg, "reading the thing: no such thing");
}

static void test_set_keeps_the_first_error(void) {
        _cleanup_error_ vt_error *err = NULL;
        check_int_eq(vt_error_set(&err, EACCES, "first"), -EACCES);
        check_int_eq(vt_error_set(&err, EIO, "second"), -EIO);
        check_str_eq(err->msg, "first");
        check_int_eq(vt_error_set(NULL, EPERM, "nobody asked"), -EPERM);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_prefix_keeps_the_code_without_err),
                TAP_CASE(test_prefix_with_err),
                TAP_CASE(test_set_keeps_the_first_error),
                {0},
        });
}
