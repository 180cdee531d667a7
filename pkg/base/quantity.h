/* SPDX-License-Identifier: Apache-2.0 */
/* Kubernetes resource quantities for storage sizes: "10Mi", "1Gi", "500M",
 * "1.5Gi", "1048576". Binary (Ki..Ei) and decimal (k..E) suffixes. */
#pragma once

#include <stdint.h>

#include "error.h"

/* Bytes, rounded up to a whole byte. -EINVAL on syntax, -ERANGE on overflow. */
int quantity_parse(const char *s, int64_t *ret_bytes, vt_error **err);
/* The shortest exact binary form: 10485760 -> "10Mi", 1000 -> "1000". Caller frees. */
char *quantity_format(int64_t bytes);
