/* SPDX-License-Identifier: Apache-2.0 */
/* The process_* metrics every Prometheus client library exports (CPU,
 * memory, file descriptors, start time), read from /proc/self at scrape time,
 * and vtpm_agent_build_info{version}: so the agent's own dashboards and
 * alerts look like any other exporter's. */
#pragma once

#include "metrics/metrics.h"

void process_metrics_collect(vt_metrics *m, const char *version);
