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

/* The window of origin_ns, grown as needed; NULL without memory. */
static struct report_window *
window_at(struct report *r, uint64_t origin_ns)
{
	size_t w = (size_t)(origin_ns / (REPORT_WINDOW_MS * 1000000ULL));

	if (w >= r->nwin) {
		size_t n = w + 64;
		struct report_window *p = realloc(r->win, n * sizeof(*p));
		if (p == NULL)
			return NULL;
		for (size_t i = r->nwin; i < n; i++)
			p[i] = (struct report_window){0};
		r->win = p;
		r->nwin = n;
	}
	return &r->win[w];
}

int
report_answer(struct report *r, int status, uint64_t lat_ns, uint64_t origin_ns)
{
	struct report_window *w = window_at(r, origin_ns);

	if (w == NULL)
		return -ENOMEM;
	w->n++;
	if (lat_ns > REPORT_SLOW_MS * 1000000ULL)
		w->slow++;
	if (lat_ns > w->max_ns)
		w->max_ns = lat_ns;
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

/* "windows": how many REPORT_WINDOW_MS windows had answers, how many of
 * them an answer over REPORT_SLOW_MS, how many slow answers in all, and
 * the five windows with the largest latency: [start s, answers, slow,
 * max ms]. */
static void
print_windows(const struct report *r)
{
	size_t top[5], ntop = 0, used = 0, with_slow = 0;
	uint64_t slow = 0;

	for (size_t i = 0; i < r->nwin; i++) {
		const struct report_window *w = &r->win[i];
		size_t k;

		if (w->n == 0)
			continue;
		used++;
		slow += w->slow;
		if (w->slow > 0)
			with_slow++;
		/* insertion into the five largest by max_ns */
		k = ntop < 5 ? ntop++ : 5;
		while (k > 0 && r->win[top[k - 1]].max_ns < w->max_ns) {
			if (k < 5)
				top[k] = top[k - 1];
			k--;
		}
		if (k < 5)
			top[k] = i;
	}
	printf(
	    ",\"windows\":{\"ms\":%d,\"slow_over_ms\":%d,\"with_answers\":%zu,"
	    "\"with_slow\":%zu,\"slow\":%llu,\"worst\":[",
	    REPORT_WINDOW_MS, REPORT_SLOW_MS, used, with_slow,
	    (unsigned long long)slow);
	for (size_t k = 0; k < ntop; k++) {
		const struct report_window *w = &r->win[top[k]];
		printf("%s[%.1f,%u,%u,%.3f]", k ? "," : "",
		       (double)top[k] * REPORT_WINDOW_MS / 1000.0, w->n,
		       w->slow, (double)w->max_ns / 1e6);
	}
	printf("]}");
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
	    "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
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
	print_windows(r);
	printf("}\n");
	fflush(stdout);
}

void
report_free(struct report *r)
{
	if (r == NULL)
		return;
	free(r->lat_ns);
	r->lat_ns = NULL;
	free(r->win);
	r->win = NULL;
	r->nwin = 0;
	r->n = r->cap = 0;
}
