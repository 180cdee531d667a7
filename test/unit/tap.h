/* SPDX-License-Identifier: Apache-2.0 */
/* A tiny TAP producer for the C unit tests, run by `prove` like the shell
 * suites, so CI reads one summary ("All tests successful. Files=N, Tests=M").
 *
 *     static void test_foo(void) { check(1 + 1 == 2); check_str_eq(a, "b"); }
 *     int main(void) { return tap_run((tap_case[]){ TAP_CASE(test_foo), {0} }); }
 */
#pragma once

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct tap_case {
        const char *name;
        void (*fn)(void);
} tap_case;
#define TAP_CASE(f) {#f, f}

static int tap_count, tap_failed, tap_case_failed;

static inline bool tap_check(bool ok, const char *expr, const char *file, int line) {
        if (!ok) {
                /* On stderr, so prove shows why even when it is not verbose (CI logs). */
                fflush(stdout);
                fprintf(stderr, "#   FAILED: %s (%s:%d)\n", expr, file, line);
                tap_case_failed = 1;
        }
        return ok;
}

#define check(e) tap_check(!!(e), #e, __FILE__, __LINE__)
#define check_int_eq(a, b)                                                                         \
        do {                                                                                       \
                long long _a = (long long)(a), _b = (long long)(b);                                \
                if (!tap_check(_a == _b, #a " == " #b, __FILE__, __LINE__))                        \
                        fprintf(stderr, "#     got %lld, want %lld\n", _a, _b);                             \
        } while (0)
#define check_str_eq(a, b)                                                                         \
        do {                                                                                       \
                const char *_a = (a), *_b = (b);                                                   \
                if (!tap_check(_a && _b && strcmp(_a, _b) == 0, #a " == " #b, __FILE__, __LINE__)) \
                        fprintf(stderr, "#     got \"%s\", want \"%s\"\n", _a ? _a : "(null)",              \
                               _b ? _b : "(null)");                                                \
        } while (0)
#define check_contains(hay, needle)                                                                \
        do {                                                                                       \
                const char *_h = (hay), *_n = (needle);                                            \
                if (!tap_check(_h && strstr(_h, _n), #hay " contains " #needle, __FILE__,          \
                               __LINE__))                                                          \
                        fprintf(stderr, "#     \"%s\" does not contain \"%s\"\n", _h ? _h : "(null)", _n);  \
        } while (0)

static inline int tap_run(const tap_case *cases) {
        int n = 0;
        while (cases[n].name)
                n++;
        printf("1..%d\n", n);
        for (int i = 0; i < n; i++) {
                tap_case_failed = 0;
                cases[i].fn();
                tap_count++;
                if (tap_case_failed)
                        tap_failed++;
                printf("%s %d - %s\n", tap_case_failed ? "not ok" : "ok", i + 1, cases[i].name);
                fflush(stdout);
        }
        return tap_failed ? 1 : 0;
}
