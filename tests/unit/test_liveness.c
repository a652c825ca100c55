/*
 * test_liveness.c - the on-demand liveness rule (common/liveness.c):
 * silent only while every command has failed for longer than the bound
 * and it is still being asked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "liveness.h"

#define B LIVE_ON_DEMAND_MS

static void
test_on_demand(void **state)
{
	(void)state;
	/* not failing */
	assert_false(live_on_demand_silent(0, 0, 100000, B));
	/* failing for 16 s and still asked: silent */
	assert_true(live_on_demand_silent(1000, 1000 + 16000, 17500, B));
	/* failing for 14 s so far: not yet */
	assert_false(live_on_demand_silent(1000, 1000 + 14000, 15500, B));
	/* 8 s of failures, then no call at all (the database came back
	 * and nobody asked): never silent, not at 15.2 s, not at 22.7 s
	 * (the outside attack's readings) */
	for (int64_t now = 9000; now <= 40000; now += 100)
		assert_false(live_on_demand_silent(1000, 9000, now, B));
	/* a long spell stops counting once nobody has asked for the bound */
	assert_true(live_on_demand_silent(1000, 30000, 30000 + B, B));
	assert_false(live_on_demand_silent(1000, 30000, 30001 + B, B));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_on_demand),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
