/* SPDX-License-Identifier: Apache-2.0 */
#include "quantity.h"

#include <ctype.h>
#include <string.h>

#include "alloc.h"

static const struct {
        const char *suffix;
        int64_t factor;
} suffixes[] = {
        {"Ki", 1LL << 10}, {"Mi", 1LL << 20}, {"Gi", 1LL << 30}, {"Ti", 1LL << 40}, {"Pi", 1LL << 50},
        {"Ei", 1LL << 60}, {"k", 1000LL},     {"M", 1000000LL},  {"G", 1000000000LL}, {"T", 1000000000000LL},
        {"P", 1000000000000000LL}, {"E", 1000000000000000000LL}, {"", 1},
};

int quantity_parse(const char *s, int64_t *ret_bytes, vt_error **err) {
        assert_return(s && ret_bytes, -EINVAL);
        const char *p = s;
        int64_t whole = 0, frac = 0, frac_div = 1;
        if (!isdigit((unsigned char)*p))
                return vt_error_set(err, EINVAL, "\"%s\" is not a quantity (expected e.g. 10Mi or 1Gi)", s);
        for (; isdigit((unsigned char)*p); p++) {
                if (whole > (INT64_MAX - 9) / 10)
                        return vt_error_set(err, ERANGE, "quantity \"%s\" is too large", s);
                whole = whole * 10 + (*p - '0');
        }
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p))
                        return vt_error_set(err, EINVAL, "\"%s\" is not a quantity (expected e.g. 10Mi or 1Gi)", s);
                for (; isdigit((unsigned char)*p); p++)
                        if (frac_div < 1000000000LL) {
                                frac = frac * 10 + (*p - '0');
                                frac_div *= 10;
                        }
        }
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                if (strcmp(p, suffixes[i].suffix) != 0)
                        continue;
                int64_t f = suffixes[i].factor;
                if (whole > INT64_MAX / f)
                        return vt_error_set(err, ERANGE, "quantity \"%s\" is too large", s);
                /* Round the fractional part up, as the API server does for bytes. */
                __int128 fb = ((__int128)frac * f + frac_div - 1) / frac_div;
                __int128 total = (__int128)whole * f + fb;
                if (total > INT64_MAX)
                        return vt_error_set(err, ERANGE, "quantity \"%s\" is too large", s);
                *ret_bytes = (int64_t)total;
                return 0;
        }
        return vt_error_set(err, EINVAL, "\"%s\" has an unknown unit \"%s\" (use Ki, Mi, Gi, Ti or k, M, G, T)", s, p);
}

char *quantity_format(int64_t bytes) {
        static const char *const units[] = {"Ei", "Pi", "Ti", "Gi", "Mi", "Ki"};
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                int64_t f = 1LL << (10 * (6 - i));
                if (bytes > 0 && bytes % f == 0)
                        return xasprintf("%lld%s", (long long)(bytes / f), units[i]);
        }
        return xasprintf("%lld", (long long)bytes);
}
