/* SPDX-License-Identifier: Apache-2.0 */
#include "dek.h"

#include <openssl/rand.h>

int dek_generate(secmem **ret, vt_error **err) {
        assert_return(ret, -EINVAL);
        _cleanup_secmem_ secmem *k = NULL;
        int r = secmem_new(DEK_SIZE, &k, err);
        if (r < 0)
                return r;
        /* The private DRBG: separate from the public one that nonces and IVs
         * come from, so their outputs never reveal its state. */
        if (RAND_priv_bytes(k->data, (int)k->len) != 1)
                return vt_error_set(err, EIO, "OpenSSL's random generator failed to produce a key");
        *ret = TAKE_PTR(k);
        return 0;
}
