/*
 * metrics.c - Prometheus text exposition (format 0.0.4).
 *
 * Registration takes the registry mutex (rare: at start-up); updates are
 * lock-free atomics.  Doubles are stored as their bit pattern in a 64-bit
 * atomic and updated with a compare-and-swap loop.  A histogram keeps one
 * non-cumulative count per bucket; rendering sums them into the cumulative
 * buckets Prometheus expects.  Series are kept in registration order and
 * rendered grouped by family (HELP/TYPE once per family).
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "metrics.h"

#define METRICS_MAX_BOUNDS    32
#define METRICS_MAX_CALLBACKS 32
#define METRICS_NAME_MAX      128
#define METRICS_LABELS_MAX    256

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const kind_names[] = {
    [METRIC_COUNTER] = "counter",
    [METRIC_GAUGE] = "gauge",
    [METRIC_HISTOGRAM] = "histogram",
};

struct metric {
	struct metric *next;     /* next series, registration order */
	struct metric *fam_next; /* next series of the same family */
	enum metric_kind kind;
	char *name;
	char *labels;           /* "" when none */
	char *help;             /* only meaningful on the family head */
	_Atomic uint64_t value; /* counter: count; gauge: double bits */
	/* histogram */
	size_t nbounds;
	double bounds[METRICS_MAX_BOUNDS];
	_Atomic uint64_t buckets[METRICS_MAX_BOUNDS + 1]; /* last = +Inf */
	_Atomic uint64_t sum;                             /* double bits */
	_Atomic uint64_t count;
};

struct scrape_cb {
	void (*fn)(void *arg);
	void *arg;
};

struct metrics {
	pthread_mutex_t lock;
	struct metric *head, *tail;
	struct scrape_cb cbs[METRICS_MAX_CALLBACKS];
	size_t ncbs;
};

const double metrics_latency_bounds[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0,
};
const size_t metrics_latency_nbounds =
    sizeof(metrics_latency_bounds) / sizeof(metrics_latency_bounds[0]);

static uint64_t
dbl_bits(double v)
{
	uint64_t b;
	memcpy(&b, &v, sizeof(b));
	return b;
}

static double
bits_dbl(uint64_t b)
{
	double v;
	memcpy(&v, &b, sizeof(v));
	return v;
}

static void
atomic_dbl_add(_Atomic uint64_t *p, double delta)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(
	    p, &old, dbl_bits(bits_dbl(old) + delta), memory_order_relaxed,
	    memory_order_relaxed))
		;
}

int
metrics_new(struct metrics **ret)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	*ret = m;
	return 0;
}

static void
metric_free(struct metric *x)
{
	free(x->name);
	free(x->labels);
	free(x->help);
	free(x);
}

void
metrics_free(struct metrics *m)
{
	struct metric *x, *next;

	if (m == NULL)
		return;
	for (x = m->head; x != NULL; x = next) {
		next = x->next;
		metric_free(x);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static bool
name_valid(const char *name)
{
	size_t i;

	if (name == NULL || name[0] == '\0' || strlen(name) > METRICS_NAME_MAX)
		return false;
	for (i = 0; name[i] != '\0'; i++) {
		char c = name[i];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             c == '_' || c == ':';
		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

/* Finds or creates the series name{labels}.  NULL on allocation failure,
 * invalid name or kind conflict (programmer errors, asserted). */
static struct metric *
metrics_register(struct metrics *m, enum metric_kind kind, const char *name,
                 const char *labels, const char *help, const double *bounds,
                 size_t nbounds)
{
	struct metric *x, *last_of_fam = NULL;

	if (m == NULL)
		return NULL;
	if (labels == NULL)
		labels = "";
	if (!name_valid(name) || strlen(labels) > METRICS_LABELS_MAX ||
	    nbounds > METRICS_MAX_BOUNDS) {
		assert(!"invalid metric registration");
		return NULL;
	}
	for (size_t i = 1; i < nbounds; i++) {
		if (!(bounds[i] > bounds[i - 1])) {
			assert(!"histogram bounds must ascend");
			return NULL;
		}
	}

	pthread_mutex_lock(&m->lock);
	for (x = m->head; x != NULL; x = x->next) {
		if (strcmp(x->name, name) != 0)
			continue;
		if (x->kind != kind) {
			pthread_mutex_unlock(&m->lock);
			assert(!"metric registered with two kinds");
			return NULL;
		}
		last_of_fam = x;
		if (strcmp(x->labels, labels) == 0) {
			pthread_mutex_unlock(&m->lock);
			return x;
		}
	}
	x = calloc(1, sizeof(*x));
	if (x == NULL)
		goto fail;
	x->kind = kind;
	x->name = strdup(name);
	x->labels = strdup(labels);
	x->help = strdup(help != NULL ? help : "");
	if (x->name == NULL || x->labels == NULL || x->help == NULL) {
		metric_free(x);
		goto fail;
	}
	if (kind == METRIC_HISTOGRAM) {
		x->nbounds = nbounds;
		if (nbounds > 0)
			memcpy(x->bounds, bounds, nbounds * sizeof(double));
	}
	if (kind == METRIC_GAUGE)
		atomic_store(&x->value, dbl_bits(0.0));
	atomic_store(&x->sum, dbl_bits(0.0));
	if (last_of_fam != NULL) {
		/* keep the family's series together in fam_next order */
		last_of_fam->fam_next = x;
	}
	if (m->tail != NULL)
		m->tail->next = x;
	else
		m->head = x;
	m->tail = x;
	pthread_mutex_unlock(&m->lock);
	return x;
fail:
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

struct metric *
metrics_counter(struct metrics *m, const char *name, const char *labels,
                const char *help)
{
	return metrics_register(m, METRIC_COUNTER, name, labels, help, NULL, 0);
}

struct metric *
metrics_gauge(struct metrics *m, const char *name, const char *labels,
              const char *help)
{
	return metrics_register(m, METRIC_GAUGE, name, labels, help, NULL, 0);
}

struct metric *
metrics_histogram(struct metrics *m, const char *name, const char *labels,
                  const char *help, const double *bounds, size_t nbounds)
{
	if (bounds == NULL && nbounds > 0)
		return NULL;
	return metrics_register(m, METRIC_HISTOGRAM, name, labels, help, bounds,
	                        nbounds);
}

void
metric_inc(struct metric *c)
{
	metric_add(c, 1);
}

void
metric_add(struct metric *c, uint64_t n)
{
	if (c == NULL)
		return;
	if (c->kind == METRIC_COUNTER)
		atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
	else if (c->kind == METRIC_GAUGE)
		atomic_dbl_add(&c->value, (double)n);
}

void
metric_set(struct metric *g, double v)
{
	if (g == NULL || g->kind != METRIC_GAUGE)
		return;
	atomic_store_explicit(&g->value, dbl_bits(v), memory_order_relaxed);
}

void
metric_gauge_add(struct metric *g, double delta)
{
	if (g == NULL || g->kind != METRIC_GAUGE)
		return;
	atomic_dbl_add(&g->value, delta);
}

void
metric_observe(struct metric *h, double v)
{
	size_t i;

	if (h == NULL || h->kind != METRIC_HISTOGRAM || isnan(v))
		return;
	for (i = 0; i < h->nbounds; i++)
		if (v <= h->bounds[i])
			break;
	atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
	atomic_dbl_add(&h->sum, v);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

double
metric_value(const struct metric *x)
{
	if (x == NULL)
		return 0.0;
	switch (x->kind) {
	case METRIC_COUNTER:
		return (double)atomic_load(&x->value);
	case METRIC_GAUGE:
		return bits_dbl(atomic_load(&x->value));
	case METRIC_HISTOGRAM:
		return (double)atomic_load(&x->count);
	}
	return 0.0;
}

int
metrics_on_scrape(struct metrics *m, void (*cb)(void *arg), void *arg)
{
	int rc = 0;

	if (m == NULL || cb == NULL)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (m->ncbs == METRICS_MAX_CALLBACKS) {
		rc = KASIR_ETOOBIG;
	} else {
		m->cbs[m->ncbs].fn = cb;
		m->cbs[m->ncbs].arg = arg;
		m->ncbs++;
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* A growable output buffer; err latches the first failure. */
struct outbuf {
	char *buf;
	size_t len, cap;
	int err;
};

static void __attribute__((format(printf, 2, 3)))
out_printf(struct outbuf *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->err != 0)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->err = -EINVAL;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t ncap = o->cap * 2 + (size_t)n + 1;
		char *nb = realloc(o->buf, ncap);
		if (nb == NULL) {
			o->err = -ENOMEM;
			return;
		}
		o->buf = nb;
		o->cap = ncap;
	}
}

/* Shortest text that reads back as v; Prometheus spellings for the
 * special values. */
static void
fmt_double(double v, char *buf, size_t len)
{
	if (isnan(v)) {
		snprintf(buf, len, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	for (int prec = 6; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

/* "name{labels}" or "name{labels,extra}" or "name" */
static void
out_series(struct outbuf *o, const char *name, const char *suffix,
           const char *labels, const char *extra)
{
	bool has_l = labels[0] != '\0', has_e = extra != NULL;

	out_printf(o, "%s%s", name, suffix);
	if (has_l || has_e)
		out_printf(o, "{%s%s%s}", has_l ? labels : "",
		           has_l && has_e ? "," : "", has_e ? extra : "");
}

static void
out_help(struct outbuf *o, const char *help)
{
	/* escape backslash and newline as the format requires */
	for (const char *p = help; *p != '\0'; p++) {
		if (*p == '\\')
			out_printf(o, "\\\\");
		else if (*p == '\n')
			out_printf(o, "\\n");
		else
			out_printf(o, "%c", *p);
	}
}

static void
render_series(struct outbuf *o, const struct metric *x)
{
	char num[64], le[80];

	switch (x->kind) {
	case METRIC_COUNTER:
		out_series(o, x->name, "", x->labels, NULL);
		out_printf(o, " %llu\n",
		           (unsigned long long)atomic_load(&x->value));
		break;
	case METRIC_GAUGE:
		fmt_double(bits_dbl(atomic_load(&x->value)), num, sizeof(num));
		out_series(o, x->name, "", x->labels, NULL);
		out_printf(o, " %s\n", num);
		break;
	case METRIC_HISTOGRAM: {
		uint64_t cum = 0;
		for (size_t i = 0; i <= x->nbounds; i++) {
			cum += atomic_load(&x->buckets[i]);
			if (i < x->nbounds)
				fmt_double(x->bounds[i], num, sizeof(num));
			else
				snprintf(num, sizeof(num), "+Inf");
			snprintf(le, sizeof(le), "le=\"%s\"", num);
			out_series(o, x->name, "_bucket", x->labels, le);
			out_printf(o, " %llu\n", (unsigned long long)cum);
		}
		fmt_double(bits_dbl(atomic_load(&x->sum)), num, sizeof(num));
		out_series(o, x->name, "_sum", x->labels, NULL);
		out_printf(o, " %s\n", num);
		out_series(o, x->name, "_count", x->labels, NULL);
		out_printf(o, " %llu\n",
		           (unsigned long long)atomic_load(&x->count));
		break;
	}
	}
}

int
metrics_render(struct metrics *m, char **ret, size_t *ret_len)
{
	struct scrape_cb cbs[METRICS_MAX_CALLBACKS];
	struct outbuf o = {0};
	size_t ncbs;

	if (m == NULL || ret == NULL)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	ncbs = m->ncbs;
	memcpy(cbs, m->cbs, ncbs * sizeof(cbs[0]));
	pthread_mutex_unlock(&m->lock);
	/* callbacks may register series: run them without the lock */
	for (size_t i = 0; i < ncbs; i++)
		cbs[i].fn(cbs[i].arg);

	o.cap = 4096;
	o.buf = malloc(o.cap);
	if (o.buf == NULL)
		return -ENOMEM;
	o.buf[0] = '\0';
	pthread_mutex_lock(&m->lock);
	for (struct metric *x = m->head; x != NULL; x = x->next) {
		bool first = true;
		/* a family is rendered at its first series */
		for (struct metric *y = m->head; y != x; y = y->next) {
			if (strcmp(y->name, x->name) == 0) {
				first = false;
				break;
			}
		}
		if (!first)
			continue;
		out_printf(&o, "# HELP %s ", x->name);
		out_help(&o, x->help);
		out_printf(&o, "\n# TYPE %s %s\n", x->name,
		           kind_names[x->kind]);
		for (struct metric *y = x; y != NULL; y = y->fam_next)
			render_series(&o, y);
	}
	pthread_mutex_unlock(&m->lock);
	if (o.err != 0) {
		free(o.buf);
		return o.err;
	}
	*ret = o.buf;
	if (ret_len != NULL)
		*ret_len = o.len;
	return 0;
}
