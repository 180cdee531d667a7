/* SPDX-License-Identifier: Apache-2.0 */
/* A throwaway self-signed P-256 certificate for 127.0.0.1 (openssl CLI),
 * for unit tests that run a TLS server on loopback. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

static inline int testcert_make(const char *key_file, const char *cert_file, const char *cn) {
        char cmd[2048];
        int n = snprintf(cmd, sizeof(cmd),
                         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=%s "
                         "-addext subjectAltName=IP:127.0.0.1 -keyout '%s' -out '%s' 2>/dev/null",
                         cn, key_file, cert_file);
        if (n < 0 || (size_t)n >= sizeof(cmd))
                return -1;
        return system(cmd) == 0 ? 0 : -1;
}
