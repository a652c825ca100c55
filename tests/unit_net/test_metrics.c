/*
 * test_metrics.c - common/metrics.c: the exposition text, exactly.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"

static char *
render(struct metrics *m)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(metrics_render(m, &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(len, strlen(text));
	return text;
}

static void
test_counter_gauge_labels(void **state)
{
	struct metrics *m;
	struct metric *a, *b, *a2, *g;
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	a = metrics_counter(m, "kasir_http_requests_total", "outcome=\"2xx\"",
	                    "HTTP requests by outcome");
	g = metrics_gauge(m, "kasir_lag", NULL, "stream lag");
	b = metrics_counter(m, "kasir_http_requests_total", "outcome=\"5xx\"",
	                    "ignored second help");
	a2 = metrics_counter(m, "kasir_http_requests_total", "outcome=\"2xx\"",
	                     NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_equal(a, a2); /* same name+labels: same series */
	metric_inc(a);
	metric_add(a, 41);
	metric_inc(b);
	metric_set(g, 2.5);
	metric_gauge_add(g, -1.25);
	assert_true(metric_value(a) == 42.0);
	assert_true(metric_value(g) == 1.25);

	/* NULL metrics are no-ops */
	metric_inc(NULL);
	metric_set(NULL, 1);
	metric_observe(NULL, 1);
	assert_true(metric_value(NULL) == 0.0);

	text = render(m);
	/* grouped by family although registration interleaved */
	assert_string_equal(
	    text, "# HELP kasir_http_requests_total HTTP requests by outcome\n"
	          "# TYPE kasir_http_requests_total counter\n"
	          "kasir_http_requests_total{outcome=\"2xx\"} 42\n"
	          "kasir_http_requests_total{outcome=\"5xx\"} 1\n"
	          "# HELP kasir_lag stream lag\n"
	          "# TYPE kasir_lag gauge\n"
	          "kasir_lag 1.25\n");
	free(text);
	metrics_free(m);
}

static void
test_histogram(void **state)
{
	static const double bounds[] = {0.1, 1, 10};
	struct metrics *m;
	struct metric *h, *h2;
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	h = metrics_histogram(m, "kasir_latency_seconds", "path=\"/x\"",
	                      "latency", bounds, 3);
	h2 = metrics_histogram(m, "kasir_latency_seconds", NULL, "latency",
	                       bounds, 3);
	assert_non_null(h);
	assert_non_null(h2);
	metric_observe(h, 0.05);
	metric_observe(h, 0.1); /* le is inclusive */
	metric_observe(h, 0.5);
	metric_observe(h, 100);
	text = render(m);
	assert_string_equal(
	    text, "# HELP kasir_latency_seconds latency\n"
	          "# TYPE kasir_latency_seconds histogram\n"
	          "kasir_latency_seconds_bucket{path=\"/x\",le=\"0.1\"} 2\n"
	          "kasir_latency_seconds_bucket{path=\"/x\",le=\"1\"} 3\n"
	          "kasir_latency_seconds_bucket{path=\"/x\",le=\"10\"} 3\n"
	          "kasir_latency_seconds_bucket{path=\"/x\",le=\"+Inf\"} 4\n"
	          "kasir_latency_seconds_sum{path=\"/x\"} 100.65\n"
	          "kasir_latency_seconds_count{path=\"/x\"} 4\n"
	          "kasir_latency_seconds_bucket{le=\"0.1\"} 0\n"
	          "kasir_latency_seconds_bucket{le=\"1\"} 0\n"
	          "kasir_latency_seconds_bucket{le=\"10\"} 0\n"
	          "kasir_latency_seconds_bucket{le=\"+Inf\"} 0\n"
	          "kasir_latency_seconds_sum 0\n"
	          "kasir_latency_seconds_count 0\n");
	free(text);
	metrics_free(m);
}

static void
test_latency_bounds(void **state)
{
	(void)state;
	assert_true(metrics_latency_nbounds >= 10 &&
	            metrics_latency_nbounds <= 32);
	assert_true(metrics_latency_bounds[0] == 0.0005);
	assert_true(metrics_latency_bounds[metrics_latency_nbounds - 1] ==
	            10.0);
	for (size_t i = 1; i < metrics_latency_nbounds; i++)
		assert_true(metrics_latency_bounds[i] >
		            metrics_latency_bounds[i - 1]);
}

static int scrapes;

static void
on_scrape(void *arg)
{
	metric_set(arg, 7);
	scrapes++;
}

static void
test_scrape_callback(void **state)
{
	struct metrics *m;
	struct metric *g;
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	g = metrics_gauge(m, "kasir_backlog", "channel=\"email\"", "backlog");
	assert_int_equal(metrics_on_scrape(m, on_scrape, g), 0);
	text = render(m);
	assert_int_equal(scrapes, 1);
	assert_non_null(strstr(text, "kasir_backlog{channel=\"email\"} 7\n"));
	free(text);
	metrics_free(m);
}

#define THREADS 4
#define PER     100000

static void *
hammer(void *arg)
{
	for (int i = 0; i < PER; i++) {
		metric_inc(((struct metric **)arg)[0]);
		metric_gauge_add(((struct metric **)arg)[1], 0.5);
		metric_observe(((struct metric **)arg)[2], 1.0);
	}
	return NULL;
}

/* updates from several threads are not lost */
static void
test_concurrent(void **state)
{
	static const double b[] = {1};
	struct metrics *m;
	struct metric *x[3];
	pthread_t t[THREADS];
	char *text, want[128];

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	x[0] = metrics_counter(m, "c_total", NULL, "c");
	x[1] = metrics_gauge(m, "g", NULL, "g");
	x[2] = metrics_histogram(m, "h", NULL, "h", b, 1);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer, x), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	assert_true(metric_value(x[0]) == THREADS * PER);
	assert_true(metric_value(x[1]) == THREADS * PER * 0.5);
	text = render(m);
	snprintf(want, sizeof(want), "h_bucket{le=\"1\"} %d\n", THREADS * PER);
	assert_non_null(strstr(text, want));
	snprintf(want, sizeof(want), "h_sum %d\n", THREADS * PER);
	assert_non_null(strstr(text, want));
	free(text);
	metrics_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter_gauge_labels),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_latency_bounds),
	    cmocka_unit_test(test_scrape_callback),
	    cmocka_unit_test(test_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
