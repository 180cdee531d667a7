/* SPDX-License-Identifier: Apache-2.0 */
/* Convert the first document of a YAML text (kubeconfig, manifests) into a
 * jansson tree. Plain scalars true/false/null and integers become JSON
 * booleans, null and numbers; everything else is a string. Aliases are
 * refused (a kubeconfig never needs them, and they allow exponential
 * expansion from a small input). Errors carry line:column. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "error.h"

int yaml_to_json(const char *data, size_t len, const char *name, json_t **ret, vt_error **err);
