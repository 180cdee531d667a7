/* SPDX-License-Identifier: Apache-2.0 */
/* agent/broker/broker_token_cache.c: an authenticated TokenReview verdict is reused
 * for the same token until its time is up, never for another token, and a
 * refusal is not remembered (the next request asks the API server again). */
#include <jansson.h>
#include <stdio.h>

#include "base/timeutil.h"
#include "broker/broker_token_cache.h"
#include "tap.h"

static json_t *review(bool ok) {
        return json_pack("{s:b, s:{s:s}}", "authenticated", ok, "user", "username",
                         "system:serviceaccount:vtpm-system:vtpm-agent");
}

static void test_reuse(void) {
        broker_token_cache *c = broker_token_cache_new(BROKER_TOKEN_CACHE_TTL);
        json_t *st = review(true);
        broker_token_cache_put(c, "token-a", st);
        json_t *got = broker_token_cache_get(c, "token-a");
        check(got == st);
        json_decref(got);
        check(!broker_token_cache_get(c, "token-b"));
        check(!broker_token_cache_get(c, "token-a "));
        json_decref(st);
        broker_token_cache_free(c);
}

static void test_refusals_not_kept(void) {
        broker_token_cache *c = broker_token_cache_new(BROKER_TOKEN_CACHE_TTL);
        json_t *st = review(false);
        broker_token_cache_put(c, "token-a", st);
        check(!broker_token_cache_get(c, "token-a"));
        json_decref(st);
        broker_token_cache_free(c);
}

static void test_expiry(void) {
        broker_token_cache *c = broker_token_cache_new(200 * USEC_PER_MSEC);
        json_t *st = review(true);
        broker_token_cache_put(c, "token-a", st);
        json_t *got = broker_token_cache_get(c, "token-a");
        check(got);
        json_decref(got);
        sleep_usec(300 * USEC_PER_MSEC);
        check(!broker_token_cache_get(c, "token-a"));
        json_decref(st);
        broker_token_cache_free(c);
}

/* Many tokens (a client trying random ones gets no verdict cached; these are
 * all authenticated): the cache stays bounded and keeps working. */
static void test_bounded(void) {
        broker_token_cache *c = broker_token_cache_new(BROKER_TOKEN_CACHE_TTL);
        json_t *st = review(true);
        char t[32];
        for (int i = 0; i < 5000; i++) {
                snprintf(t, sizeof(t), "token-%d", i);
                broker_token_cache_put(c, t, st);
        }
        json_t *got = broker_token_cache_get(c, "token-4999");
        check(got == st);
        json_decref(got);
        check(st->refcount <= 1 + 1024); /* at most 1024 entries hold it */
        json_decref(st);
        broker_token_cache_free(c);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_reuse),
                TAP_CASE(test_refusals_not_kept),
                TAP_CASE(test_expiry),
                TAP_CASE(test_bounded),
                {0},
        });
}
