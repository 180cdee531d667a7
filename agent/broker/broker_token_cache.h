/* SPDX-License-Identifier: Apache-2.0 */
/* The key broker's memory of TokenReview verdicts: a node agent asks once per
 * VM start and rotation step, so most requests would otherwise cost one
 * TokenReview each. Only authenticated verdicts are kept, for at most `ttl`
 * (the design says a minute), keyed by the SHA-256 of the token, never the
 * token. The agent pod the token is bound to is still fetched per request,
 * so a token still dies with its pod at once. At most 1024 entries.
 * Thread-safe. */
#pragma once

#include <jansson.h>

#include "base/timeutil.h"

#define BROKER_TOKEN_CACHE_TTL (60 * USEC_PER_SEC)

typedef struct broker_token_cache broker_token_cache;

broker_token_cache *broker_token_cache_new(usec_t ttl);
void broker_token_cache_free(broker_token_cache *c);
/* A new reference to the review status cached for token, or NULL. */
json_t *broker_token_cache_get(broker_token_cache *c, const char *token);
/* Remember status (a TokenReview's .status) if it says authenticated. */
void broker_token_cache_put(broker_token_cache *c, const char *token, json_t *status);
