/* SPDX-License-Identifier: Apache-2.0 */
/* A small Prometheus registry: counters, gauges and histograms with label
 * sets, rendered in the text exposition format (version 0.0.4). Collectors
 * registered with vt_metrics_add_collector() run at each scrape to copy
 * numbers that live elsewhere (client and controller stats) into gauges and
 * counters, so hot paths only bump their own plain counters. Thread-safe. */
#pragma once

#include <stddef.h>

#include "base/macro.h"

typedef struct vt_metrics vt_metrics;

vt_metrics *vt_metrics_new(void);
void vt_metrics_free(vt_metrics *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(vt_metrics *, vt_metrics_free)

/* `labels` is the inside of the braces, already escaped, e.g.
 * "verb=\"GET\",code=\"200\"", or NULL for none. A name keeps the type and
 * help of its first use. */
void vt_counter_add(vt_metrics *m, const char *name, const char *help, const char *labels, double v);
/* Counters copied from elsewhere at scrape time: set the running total. */
void vt_counter_set(vt_metrics *m, const char *name, const char *help, const char *labels, double v);
void vt_gauge_set(vt_metrics *m, const char *name, const char *help, const char *labels, double v);
/* Buckets are upper bounds in ascending order; +Inf is implied. The bounds
 * given at a name's first observation are kept. */
void vt_histogram_observe(vt_metrics *m, const char *name, const char *help, const char *labels, double v,
                          const double *buckets, size_t n_buckets);

typedef void (*vt_metrics_collect_fn)(vt_metrics *m, void *userdata);
void vt_metrics_add_collector(vt_metrics *m, vt_metrics_collect_fn fn, void *userdata);

/* The exposition text (caller frees); runs the collectors first. */
char *vt_metrics_render(vt_metrics *m);

/* Escape a label value for use inside quotes (caller frees). */
char *vt_metrics_escape(const char *value);

/* Latency buckets in seconds suited to API calls and swtpm starts. */
extern const double vt_latency_buckets[];
extern const size_t vt_latency_buckets_n;
