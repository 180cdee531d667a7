/* SPDX-License-Identifier: Apache-2.0 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hashmap.h"

const double vt_latency_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
const size_t vt_latency_buckets_n = sizeof(vt_latency_buckets) / sizeof(vt_latency_buckets[0]);

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

typedef struct series {
        double value;    /* counter/gauge; histogram: sum */
        uint64_t count;  /* histogram */
        uint64_t *bucket_counts;
} series;

typedef struct family {
        enum kind kind;
        char *help;
        double *buckets;
        size_t n_buckets;
        vt_hashmap *series; /* labels -> series */
} family;

typedef struct collector {
        vt_metrics_collect_fn fn;
        void *userdata;
} collector;

struct vt_metrics {
        pthread_mutex_t lock;
        vt_hashmap *families; /* name -> family */
        collector *collectors;
        size_t n_collectors, alloc_collectors;
};

static void series_free(void *p) {
        series *s = p;
        free(s->bucket_counts);
        free(s);
}

static void family_free(void *p) {
        family *f = p;
        free(f->help);
        free(f->buckets);
        vt_hashmap_free(f->series);
        free(f);
}

vt_metrics *vt_metrics_new(void) {
        vt_metrics *m = xnew(vt_metrics, 1);
        pthread_mutex_init(&m->lock, NULL);
        m->families = vt_hashmap_new(family_free);
        return m;
}

void vt_metrics_free(vt_metrics *m) {
        if (!m)
                return;
        vt_hashmap_free(m->families);
        free(m->collectors);
        pthread_mutex_destroy(&m->lock);
        free(m);
}

static series *get_series(vt_metrics *m, const char *name, const char *help, enum kind kind, const char *labels,
                          const double *buckets, size_t nb) {
        family *f = vt_hashmap_get(m->families, name);
        if (!f) {
                f = xnew(family, 1);
                f->kind = kind;
                f->help = xstrdup(help ? help : name);
                if (kind == KIND_HISTOGRAM) {
                        f->buckets = xmemdup(buckets, nb * sizeof(double));
                        f->n_buckets = nb;
                }
                f->series = vt_hashmap_new(series_free);
                vt_hashmap_put(m->families, name, f);
        }
        if (f->kind != kind)
                return NULL; /* one name, one type: a programming error, ignored rather than corrupting output */
        const char *key = labels ? labels : "";
        series *s = vt_hashmap_get(f->series, key);
        if (!s) {
                s = xnew(series, 1);
                if (kind == KIND_HISTOGRAM)
                        s->bucket_counts = xnew(uint64_t, f->n_buckets);
                vt_hashmap_put(f->series, key, s);
        }
        return s;
}

void vt_counter_add(vt_metrics *m, const char *name, const char *help, const char *labels, double v) {
        pthread_mutex_lock(&m->lock);
        series *s = get_series(m, name, help, KIND_COUNTER, labels, NULL, 0);
        if (s && v > 0)
                s->value += v;
        pthread_mutex_unlock(&m->lock);
}

void vt_counter_set(vt_metrics *m, const char *name, const char *help, const char *labels, double v) {
        pthread_mutex_lock(&m->lock);
        series *s = get_series(m, name, help, KIND_COUNTER, labels, NULL, 0);
        if (s && v >= s->value)
                s->value = v; /* counters never go down */
        pthread_mutex_unlock(&m->lock);
}

void vt_gauge_set(vt_metrics *m, const char *name, const char *help, const char *labels, double v) {
        pthread_mutex_lock(&m->lock);
        series *s = get_series(m, name, help, KIND_GAUGE, labels, NULL, 0);
        if (s)
                s->value = v;
        pthread_mutex_unlock(&m->lock);
}

void vt_histogram_observe(vt_metrics *m, const char *name, const char *help, const char *labels, double v,
                          const double *buckets, size_t nb) {
        pthread_mutex_lock(&m->lock);
        series *s = get_series(m, name, help, KIND_HISTOGRAM, labels, buckets, nb);
        if (s) {
                family *f = vt_hashmap_get(m->families, name);
                for (size_t i = 0; i < f->n_buckets; i++)
                        if (v <= f->buckets[i])
                                s->bucket_counts[i]++;
                s->count++;
                s->value += v;
        }
        pthread_mutex_unlock(&m->lock);
}

void vt_metrics_add_collector(vt_metrics *m, vt_metrics_collect_fn fn, void *userdata) {
        pthread_mutex_lock(&m->lock);
        m->collectors = xgrow(m->collectors, &m->alloc_collectors, m->n_collectors + 1, sizeof(collector));
        m->collectors[m->n_collectors++] = (collector){fn, userdata};
        pthread_mutex_unlock(&m->lock);
}

char *vt_metrics_escape(const char *v) {
        vt_buf b = {0};
        for (const char *p = v ? v : ""; *p; p++) {
                if (*p == '\\' || *p == '"')
                        vt_buf_printf(&b, "\\%c", *p);
                else if (*p == '\n')
                        vt_buf_appends(&b, "\\n");
                else
                        vt_buf_append(&b, p, 1);
        }
        return vt_buf_steal(&b);
}

static void fmt_value(vt_buf *b, double v) {
        if (isinf(v))
                vt_buf_appends(b, v > 0 ? "+Inf" : "-Inf");
        else if (v == (double)(long long)v && fabs(v) < 1e15)
                vt_buf_printf(b, "%lld", (long long)v);
        else
                vt_buf_printf(b, "%.9g", v);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char **sorted_keys(vt_hashmap *h, size_t *ret_n) {
        size_t n = vt_hashmap_size(h), i = 0;
        const char **keys = xnew(const char *, n + 1);
        const char *k;
        void *v;
        for (vt_hashmap_iter it = {0}; vt_hashmap_next(h, &it, &k, &v);)
                keys[i++] = k;
        qsort(keys, n, sizeof(char *), cmp_str);
        *ret_n = n;
        return keys;
}

static void series_name(vt_buf *b, const char *name, const char *suffix, const char *labels, const char *extra) {
        vt_buf_printf(b, "%s%s", name, suffix);
        bool l = labels && *labels, e = extra && *extra;
        if (l || e)
                vt_buf_printf(b, "{%s%s%s}", l ? labels : "", l && e ? "," : "", e ? extra : "");
        vt_buf_appends(b, " ");
}

char *vt_metrics_render(vt_metrics *m) {
        pthread_mutex_lock(&m->lock);
        size_t nc = m->n_collectors;
        collector *cs = nc ? xmemdup(m->collectors, nc * sizeof(collector)) : NULL;
        pthread_mutex_unlock(&m->lock);
        for (size_t i = 0; i < nc; i++)
                cs[i].fn(m, cs[i].userdata);
        free(cs);

        vt_buf b = {0};
        pthread_mutex_lock(&m->lock);
        size_t nf;
        const char **names = sorted_keys(m->families, &nf);
        static const char *const types[] = {"counter", "gauge", "histogram"};
        for (size_t i = 0; i < nf; i++) {
                family *f = vt_hashmap_get(m->families, names[i]);
                vt_buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", names[i], f->help, names[i], types[f->kind]);
                size_t ns;
                const char **labels = sorted_keys(f->series, &ns);
                for (size_t j = 0; j < ns; j++) {
                        series *s = vt_hashmap_get(f->series, labels[j]);
                        if (f->kind != KIND_HISTOGRAM) {
                                series_name(&b, names[i], "", labels[j], NULL);
                                fmt_value(&b, s->value);
                                vt_buf_appends(&b, "\n");
                                continue;
                        }
                        for (size_t k = 0; k < f->n_buckets; k++) {
                                vt_buf le = {0};
                                vt_buf_appends(&le, "le=\"");
                                fmt_value(&le, f->buckets[k]);
                                vt_buf_appends(&le, "\"");
                                series_name(&b, names[i], "_bucket", labels[j], le.data);
                                vt_buf_printf(&b, "%llu\n", (unsigned long long)s->bucket_counts[k]);
                                vt_buf_free(&le);
                        }
                        series_name(&b, names[i], "_bucket", labels[j], "le=\"+Inf\"");
                        vt_buf_printf(&b, "%llu\n", (unsigned long long)s->count);
                        series_name(&b, names[i], "_sum", labels[j], NULL);
                        fmt_value(&b, s->value);
                        vt_buf_appends(&b, "\n");
                        series_name(&b, names[i], "_count", labels[j], NULL);
                        vt_buf_printf(&b, "%llu\n", (unsigned long long)s->count);
                }
                free(labels);
        }
        free(names);
        pthread_mutex_unlock(&m->lock);
        return vt_buf_steal(&b);
}
