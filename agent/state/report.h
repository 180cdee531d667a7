/* SPDX-License-Identifier: Apache-2.0 */
/* Report: the one status write of a reconcile (server-side apply of the
 * state controller's fields, only when they differ from what is there),
 * then the decision's events, in that order: the status is what keeps an
 * event from being sent twice. */
#pragma once

#include "base/error.h"
#include "context.h"
#include "decide.h"
#include "observe.h"

int state_report(const state_ctx *ctx, const state_observed *o, const state_decision *d, vt_error **err);
