/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one JSON object per line on stderr ({"ts","level","msg",...}), or
 * plain text for humans (--log-format=text). Only the daemon and CLIs log;
 * library code returns vt_error and lets the caller decide. Never pass keys,
 * tokens or passphrases to these functions. */
#pragma once

#include <stdbool.h>

#include "macro.h"

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_setup(enum log_level min, bool json);
int log_level_from_string(const char *s); /* -EINVAL on unknown */
bool log_enabled(enum log_level level);

/* Free-form message. */
void log_msg(enum log_level level, const char *fmt, ...) _printf_(2, 3);
/* Message plus string fields: key, value pairs terminated by NULL. */
void log_kv(enum log_level level, const char *msg, ...) __attribute__((sentinel));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
