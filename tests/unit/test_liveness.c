/*
 * test_liveness.c - the liveness rules (common/liveness.c): on demand,
 * silent only while every command has failed for longer than the bound
 * and it is still being asked; any loop, silent while a command has been
 * waited for longer than its bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* A command waited for longer than the bound makes any loop silent,
 * whatever its last success (a COMMIT waiting for a standby that is down:
 * the loop's other commands kept succeeding until it). */
static void
test_waiting(void **state)
{
	struct live_status st[LIVE_LOOPS_MAX];
	struct live_loop *l;
	size_t n;

	(void)state;
	assert_false(live_waiting_silent(0, 100000, B));
	assert_false(live_waiting_silent(1000, 1000 + B, B));
	assert_true(live_waiting_silent(1000, 1001 + B, B));

	/* the marks reach the snapshot, and the end clears them; two
	 * handles of one loop keep the first start */
	l = live_register("test.waiting", LIVE_ON_DEMAND, 0);
	assert_non_null(l);
	live_ok(l);
	live_wait_begin(l);
	live_wait_begin(l);
	n = live_snapshot(st, LIVE_LOOPS_MAX);
	assert_int_equal(n, 1);
	assert_true(st[0].wait_age_ms >= 0);
	assert_false(st[0].silent); /* just started */
	live_wait_end(l);
	live_snapshot(st, LIVE_LOOPS_MAX);
	assert_int_equal(st[0].wait_age_ms, -1);
	assert_false(st[0].silent);
	live_wait_begin(NULL); /* a handle without a loop */
	live_wait_end(NULL);
}

/* The stalled mark: kept from the first failure, cleared by a batch that
 * goes through, in the snapshot as stall_age_ms. */
static void
test_stalled(void **state)
{
	struct live_status st[LIVE_LOOPS_MAX];
	struct live_loop *l;
	size_t n, k;

	(void)state;
	l = live_register("test.stalled", LIVE_PERIODIC, 1000);
	assert_non_null(l);
	live_ok(l);
	live_stalled(l, true);
	live_stalled(l, true);
	n = live_snapshot(st, LIVE_LOOPS_MAX);
	for (k = 0; k < n && strcmp(st[k].name, "test.stalled") != 0; k++)
		;
	assert_true(k < n);
	assert_true(st[k].stall_age_ms >= 0);
	assert_false(st[k].silent); /* just started */
	live_stalled(l, false);
	live_snapshot(st, LIVE_LOOPS_MAX);
	assert_int_equal(st[k].stall_age_ms, -1);
	live_stalled(NULL, true);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_on_demand),
	    cmocka_unit_test(test_waiting),
	    cmocka_unit_test(test_stalled),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
