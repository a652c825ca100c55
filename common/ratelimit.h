/*
 * ratelimit.h - token buckets.
 *
 * struct tbucket: one bucket (e.g. per notification channel, the
 * reconciler's global requests-per-second cap).  struct ratelimit_table:
 * per-key buckets (per source IP) in a bounded table; when full the least
 * recently used key is evicted, so memory stays bounded under a flood of
 * distinct addresses.  Thread-safe.
 */
#ifndef KASIR_RATELIMIT_H
#define KASIR_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

struct tbucket {
	double rate;  /* tokens per second */
	double burst; /* capacity */
	double tokens;
	int64_t last_ms;
	pthread_mutex_t lock;
};

void tbucket_init(struct tbucket *b, double rate, double burst);
/* true and one token taken, or false and *ret_wait_ms (may be NULL) says
 * when the next token will be there. */
bool tbucket_take(struct tbucket *b, int64_t *ret_wait_ms);

struct ratelimit_table;
int ratelimit_table_new(double rate, double burst, unsigned max_keys,
			struct ratelimit_table **ret);
void ratelimit_table_free(struct ratelimit_table *t);
bool ratelimit_take(struct ratelimit_table *t, const char *key,
		    int64_t *ret_wait_ms);

#endif
