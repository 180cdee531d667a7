/* SPDX-License-Identifier: Apache-2.0 */
/* parse_rfc3339: the API server's metav1.Time and MicroTime come back as
 * the instant they name; anything else is refused, not guessed. */
#include <errno.h>

#include "base/macro.h"
#include "base/timeutil.h"
#include "tap.h"

static void test_round_trip(void) {
        usec_t t = 0;
        char buf[40];
        check_int_eq(parse_rfc3339("2026-01-01T00:00:00Z", &t), 0);
        check(t == (usec_t)1767225600 * USEC_PER_SEC);
        format_rfc3339(t + 59 * USEC_PER_SEC, buf);
        check_int_eq(parse_rfc3339(buf, &t), 0);
        check(t == (usec_t)1767225659 * USEC_PER_SEC);
        check_int_eq(parse_rfc3339("2026-12-07T07:05:09.123456Z", &t), 0);
        check(t % USEC_PER_SEC == 123456);
        check_int_eq(parse_rfc3339("2026-12-07T07:05:09.5Z", &t), 0);
        check(t % USEC_PER_SEC == 500000);
}

static void test_refused(void) {
        static const char *const bad[] = {
                NULL, "", "2026-12-07", "2026-12-07T07:05:09", "2026-12-07T07:05:09+01:00", "2026-12-07 07:05:09Z",
                "2026-13-07T07:05:09Z", "2026-12-07T24:05:09Z", "-026-12-07T07:05:09Z", "2026-12-07T07:05:09Zx",
                "2026-1 -07T07:05:09Z", "1969-12-31T23:59:59Z",
        };
        usec_t t = 42;
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                check_int_eq(parse_rfc3339(bad[i], &t), -EINVAL);
                check(t == 42); /* untouched on failure */
        }
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_round_trip),
                TAP_CASE(test_refused),
                {0},
        });
}
