/*
 * report.c - latency percentiles and the JSON line of a run.
 *
 * Every latency is kept (8 bytes per request: 24 MB for three million),
 * so the percentiles are exact nearest-rank values, not histogram bins.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "report.h"

int
report_answer(struct report *r, int status, uint64_t lat_ns)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 65536;
		uint64_t *p = realloc(r->lat_ns, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		r->lat_ns = p;
		r->cap = cap;
	}
	r->lat_ns[r->n++] = lat_ns;
	r->status[status / 100 <= 5 ? status / 100 : 0]++;
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile p (0..100) of the sorted latencies, in ms. */
static double
pct_ms(const struct report *r, double p)
{
	size_t k;

	if (r->n == 0)
		return 0;
	k = (size_t)(p / 100.0 * (double)r->n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > r->n)
		k = r->n;
	return (double)r->lat_ns[k - 1] / 1e6;
}

void
report_print(struct report *r, const char *mode, double rate,
             unsigned connections, double duration_s, uint64_t scheduled,
             uint64_t elapsed_ns)
{
	double sum = 0, secs = (double)elapsed_ns / 1e9;
	uint64_t non2xx = r->status[0] + r->status[1] + r->status[3] +
	                  r->status[4] + r->status[5];

	qsort(r->lat_ns, r->n, sizeof(*r->lat_ns), cmp_u64);
	for (size_t i = 0; i < r->n; i++)
		sum += (double)r->lat_ns[i];
	printf(
	    "{\"mode\":\"%s\",\"latency_from\":\"%s\",\"connections\":%u,"
	    "\"target_rate\":%.1f,\"duration_s\":%.3f,\"scheduled\":%llu,"
	    "\"sent\":%llu,\"unsent\":%llu,\"answered\":%zu,"
	    "\"status\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,"
	    "\"4xx\":%llu,\"5xx\":%llu},\"non_2xx\":%llu,"
	    "\"errors\":{\"connect\":%llu,\"io\":%llu,\"protocol\":%llu,"
	    "\"timeout\":%llu},\"bodies_reused\":%llu,"
	    "\"elapsed_s\":%.3f,\"rate\":%.1f,\"t0_unix_ms\":%.3f,"
	    "\"latency_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,"
	    "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}}\n",
	    mode, rate > 0 ? "intended" : "sent", connections, rate, duration_s,
	    (unsigned long long)scheduled, (unsigned long long)r->sent,
	    (unsigned long long)r->unsent, r->n,
	    (unsigned long long)r->status[1], (unsigned long long)r->status[2],
	    (unsigned long long)r->status[3], (unsigned long long)r->status[4],
	    (unsigned long long)r->status[5], (unsigned long long)non2xx,
	    (unsigned long long)r->err_connect, (unsigned long long)r->err_io,
	    (unsigned long long)r->err_proto,
	    (unsigned long long)r->err_timeout, (unsigned long long)r->reused,
	    secs, secs > 0 ? (double)r->n / secs : 0,
	    (double)r->t0_unix_ns / 1e6, r->n ? sum / (double)r->n / 1e6 : 0,
	    pct_ms(r, 50), pct_ms(r, 90), pct_ms(r, 99), pct_ms(r, 99.9),
	    r->n ? (double)r->lat_ns[r->n - 1] / 1e6 : 0);
	fflush(stdout);
}

void
report_free(struct report *r)
{
	if (r == NULL)
		return;
	free(r->lat_ns);
	r->lat_ns = NULL;
	r->n = r->cap = 0;
}
