/*
 * metrics.h - Prometheus text exposition (format 0.0.4).
 *
 * A registry holds series: counters, gauges and histograms, each a metric
 * name plus an optional fixed label string ('outcome="2xx"').  Series are
 * registered once (registering the same name+labels again returns the same
 * object) and updated lock-free with atomics from any thread.  Scrape-time
 * callbacks refresh gauges computed from the database just before
 * rendering.  Everything belongs to the registry and lives until
 * metrics_free().
 */
#ifndef KASIR_METRICS_H
#define KASIR_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics;
struct metric; /* one series of any kind */

int metrics_new(struct metrics **ret);
void metrics_free(struct metrics *m);

/* NULL only on allocation failure or a kind conflict (a programmer error,
 * asserted in debug builds).  labels may be NULL. */
struct metric *metrics_counter(struct metrics *m, const char *name,
			       const char *labels, const char *help);
struct metric *metrics_gauge(struct metrics *m, const char *name,
			     const char *labels, const char *help);
/* bounds: ascending upper bounds (the +Inf bucket is implicit), <= 32. */
struct metric *metrics_histogram(struct metrics *m, const char *name,
				 const char *labels, const char *help,
				 const double *bounds, size_t nbounds);

/* All accept NULL (a metric that failed to register is a no-op). */
void metric_inc(struct metric *c);
void metric_add(struct metric *c, uint64_t n);
void metric_set(struct metric *g, double v);
void metric_gauge_add(struct metric *g, double delta);
void metric_observe(struct metric *h, double v);
/* Current value of a counter or gauge (tests, kasirctl status). */
double metric_value(const struct metric *x);

/* Latency buckets in seconds: 0.5 ms .. 10 s. */
extern const double metrics_latency_bounds[];
extern const size_t metrics_latency_nbounds;

/* cb runs (on the scraping thread) before every render. */
int metrics_on_scrape(struct metrics *m, void (*cb)(void *arg), void *arg);

/* Renders the exposition text.  On success *ret (caller frees) and
 * *ret_len are set. */
int metrics_render(struct metrics *m, char **ret, size_t *ret_len);

#endif
