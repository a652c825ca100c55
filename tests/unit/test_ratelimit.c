/*
 * test_ratelimit.c - token buckets and the bounded per-key table.
 * Refill is tested with short sleeps and generous margins.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <cmocka.h>

#include "ratelimit.h"
#include "util.h"

static void
test_bucket_burst_then_refusal(void **state)
{
	(void)state;
	struct tbucket b;
	int64_t wait = -1;

	tbucket_init(&b, 20, 3); /* a token every 50 ms */
	assert_true(tbucket_take(&b, NULL));
	assert_true(tbucket_take(&b, NULL));
	assert_true(tbucket_take(&b, &wait));
	assert_false(tbucket_take(&b, &wait));
	assert_in_range(wait, 1, 50);
	assert_false(tbucket_take(&b, NULL));

	sleep_ms(130); /* >= 2 tokens, never more than burst */
	assert_true(tbucket_take(&b, NULL));
	assert_true(tbucket_take(&b, NULL));

	sleep_ms(1000); /* capped at burst = 3 */
	assert_true(tbucket_take(&b, NULL));
	assert_true(tbucket_take(&b, NULL));
	assert_true(tbucket_take(&b, NULL));
	assert_false(tbucket_take(&b, NULL));
}

static void
test_table_per_key(void **state)
{
	(void)state;
	struct ratelimit_table *t = NULL;
	int64_t wait = 0;

	assert_int_equal(ratelimit_table_new(20, 2, 100, &t), 0);
	assert_true(ratelimit_take(t, "10.0.0.1", NULL));
	assert_true(ratelimit_take(t, "10.0.0.1", NULL));
	assert_false(ratelimit_take(t, "10.0.0.1", &wait));
	assert_in_range(wait, 1, 50);
	/* another key has its own bucket */
	assert_true(ratelimit_take(t, "10.0.0.2", NULL));
	sleep_ms(80);
	assert_true(ratelimit_take(t, "10.0.0.1", NULL));
	ratelimit_table_free(t);
	ratelimit_table_free(NULL);

	assert_int_equal(ratelimit_table_new(0, 1, 10, &t), -EINVAL);
	assert_int_equal(ratelimit_table_new(1, 0.5, 10, &t), -EINVAL);
	assert_int_equal(ratelimit_table_new(1, 1, 0, &t), -EINVAL);
}

/* max_keys bounds the table; the least recently used key goes first. */
static void
test_table_lru_eviction(void **state)
{
	(void)state;
	struct ratelimit_table *t = NULL;

	/* burst 1 and a negligible refill: an exhausted key stays
	 * refused unless it was evicted (then it starts full again). */
	assert_int_equal(ratelimit_table_new(0.001, 1, 3, &t), 0);
	assert_true(ratelimit_take(t, "a", NULL));
	assert_true(ratelimit_take(t, "b", NULL));
	assert_true(ratelimit_take(t, "c", NULL));
	assert_false(ratelimit_take(t, "a", NULL)); /* a is now most recent */
	assert_true(ratelimit_take(t, "d", NULL));  /* evicts b (LRU) */
	assert_false(ratelimit_take(t, "a", NULL)); /* a kept */
	assert_false(ratelimit_take(t, "c", NULL)); /* c kept */
	assert_false(ratelimit_take(t, "d", NULL)); /* d kept */
	assert_true(ratelimit_take(t, "b", NULL));  /* b was evicted */
	ratelimit_table_free(t);

	/* a flood of distinct keys: bounded, and the table keeps working */
	assert_int_equal(ratelimit_table_new(0.001, 1, 1000, &t), 0);
	char key[32];
	for (int i = 0; i < 200000; i++) {
		snprintf(key, sizeof(key), "2001:db8::%x", i);
		assert_true(ratelimit_take(t, key, NULL));
	}
	/* the last 1000 are still there and exhausted, older ones are not */
	assert_false(ratelimit_take(t, "2001:db8::30d3f", NULL)); /* 199999 */
	assert_false(ratelimit_take(t, "2001:db8::30b48", NULL)); /* 199496 */
	assert_true(ratelimit_take(t, "2001:db8::0", NULL));
	ratelimit_table_free(t);
}

static void
test_table_speed(void **state)
{
	(void)state;
	/* O(1): 1M lookups in a 100k-key table take well under a second
	 * (a linear scan would take minutes). */
	struct ratelimit_table *t = NULL;
	char key[32];
	int64_t t0 = now_mono_ms();

	assert_int_equal(ratelimit_table_new(1000, 1000, 100000, &t), 0);
	for (int i = 0; i < 1000000; i++) {
		snprintf(key, sizeof(key), "k%d", i % 100000);
		(void)ratelimit_take(t, key, NULL);
	}
	ratelimit_table_free(t);
	int64_t dt = now_mono_ms() - t0;
	printf("1M takes over 100k keys: %lld ms\n", (long long)dt);
	assert_in_range(dt, 0, 10000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_burst_then_refusal),
	    cmocka_unit_test(test_table_per_key),
	    cmocka_unit_test(test_table_lru_eviction),
	    cmocka_unit_test(test_table_speed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
