/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz the parser of the state volume's generation marker (vtpm-current is
 * on a tenant's volume): whatever it accepts is a valid generation name,
 * one path component the agent could have made, which parses back to
 * itself; whatever it refuses leaves no name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state_generation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *buf = malloc(size ? size : 1);
        memcpy(buf, data, size);
        char *name = NULL;
        if (state_generation_parse(buf, size, &name) == 0) {
                if (!name || !state_generation_name_valid(name) || strchr(name, '/') || strcmp(name, "..") == 0)
                        abort();
                char *back = NULL;
                if (state_generation_parse(name, strlen(name), &back) != 0 || strcmp(back, name) != 0)
                        abort();
                free(back);
        } else if (name) {
                abort();
        }
        free(name);
        free(buf);
        return 0;
}
