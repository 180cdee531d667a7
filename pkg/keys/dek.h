/* SPDX-License-Identifier: Apache-2.0 */
/* The per-VM data encryption key: 256 random bits, the key swtpm encrypts
 * its state with. Lives only in secure memory. */
#pragma once

#include "keys/secmem.h"

#define DEK_SIZE 32

/* 32 bytes from OpenSSL's private CSPRNG (RAND_priv_bytes) into locked memory. */
int dek_generate(secmem **ret, vt_error **err);
