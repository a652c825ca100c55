/*
 * report.h - what one kasir-loadgen run counts and how it is printed.
 */
#ifndef KASIR_LOADGEN_REPORT_H
#define KASIR_LOADGEN_REPORT_H

#include <stddef.h>
#include <stdint.h>

struct report {
	uint64_t *lat_ns;     /* latency of each answered request */
	size_t n, cap;        /* answered requests, capacity of lat_ns */
	uint64_t status[6];   /* [1]..[5]: 1xx..5xx answers */
	uint64_t err_connect; /* a connection could not be opened */
	uint64_t err_io;      /* closed or reset with a request in flight */
	uint64_t err_proto;   /* an answer that is not HTTP/1.x */
	uint64_t err_timeout; /* no answer within --timeout */
	uint64_t sent;        /* requests written */
	uint64_t unsent;      /* open loop: due, never sent before the end */
	uint64_t reused;      /* requests that reused a body of the file */
	int64_t t0_unix_ns;   /* wall clock of t0 (request i is due at
	                         t0 + i/R): callers match answers to it */
	/* Where the slow answers were: per REPORT_WINDOW_MS of latency
	 * origin (from t0), answers, answers over REPORT_SLOW_MS and the
	 * largest latency.  A tail made of a few stalls (every request in
	 * them waits) shows as a few windows; queueing spreads over many. */
	struct report_window *win;
	size_t nwin;
};

#define REPORT_WINDOW_MS 100
#define REPORT_SLOW_MS   20

struct report_window {
	uint32_t n, slow;
	uint64_t max_ns;
};

/* Records one answer with its status, its latency and its latency
 * origin (ns from t0); 0 or -ENOMEM. */
int report_answer(struct report *r, int status, uint64_t lat_ns,
                  uint64_t origin_ns);

/* Prints the JSON object of the run to stdout (one line).  mode is
 * "open" or "closed"; rate is the target of the open loop (0: closed);
 * elapsed_ns from the first intended send to the last answer. */
void report_print(struct report *r, const char *mode, double rate,
                  unsigned connections, double duration_s, uint64_t scheduled,
                  uint64_t elapsed_ns);

void report_free(struct report *r);

#endif
