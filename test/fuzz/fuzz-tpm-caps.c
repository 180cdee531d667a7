/* SPDX-License-Identifier: Apache-2.0 */
/* swtpm's --print-capabilities output is parsed from a program we exec; treat
 * it as untrusted bytes. */
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "tpm/caps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        vt_error *err = NULL;
        tpm_features f = {0};
        const char *want = size > 0 && (data[0] & 1) ? "swtpm" : NULL;
        if (tpm_features_parse((const char *)data, size, want, &f, &err) == 0) {
                (void)tpm_features_has(&f, "tpm-2.0");
                tpm_features g = {0};
                tpm_caps c;
                tpm_caps_from_features(&f, &g, &c);
                tpm_caps_done(&c);
        }
        vt_error_free(err);
        return 0;
}
