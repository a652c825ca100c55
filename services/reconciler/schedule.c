/*
 * schedule.c - when each pending order is asked about next.
 *
 * Pure functions of the configuration and what the watch list knows about
 * one order: no clock, no database (tests/unit_reconciler/).  The rules
 * (issue 5):
 *   - first check first_check after creation;
 *   - then the backoff list (10m, 30m, 1h, 3h: the last entry repeats)
 *     until the order is final;
 *   - always one answered check right after expires_at + grace, whatever
 *     the backoff says, so no order stays PENDING past expiry + grace
 *     without a check;
 *   - a failed check (5xx, timeout) is retried with its own shorter
 *     exponential backoff, again never beyond the expiry check.
 *   - an order whose refund the Refund API accepted (kasirctl refund) is
 *     asked again, final or not, at doubling intervals until an answer
 *     shows the refund (evidence.c), for at most a week.
 * Reconciliation mode does not change these times: the claim query adds
 * "last checked more than mode_interval ago" (evidence.c).
 */
#include "reconciler.h"

static int64_t
expiry_check_at(const struct sched_conf *c, const struct sched_order *o)
{
	return o->expires_ms + c->expiry_grace_ms;
}

static int64_t
min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

bool
sched_is_expiry_check(const struct sched_order *o, int64_t checked_ms)
{
	return checked_ms >= o->expires_ms;
}

int64_t
sched_first_check(const struct sched_conf *c, const struct sched_order *o)
{
	int64_t t = o->created_ms + c->first_check_ms;

	if (!o->expiry_checked)
		t = min64(t, expiry_check_at(c, o));
	return t;
}

int64_t
sched_after_answer(const struct sched_conf *c, const struct sched_order *o,
                   int64_t now_ms)
{
	const struct recon_durations *b = c->backoff;
	int64_t step, t, exp;
	size_t i;

	if (b == NULL || b->n == 0) {
		step = c->first_check_ms;
	} else {
		i = o->attempts < 1 ? 0 : (size_t)(o->attempts - 1);
		if (i >= b->n)
			i = b->n - 1;
		step = b->ms[i];
	}
	t = now_ms + step;
	if (!o->expiry_checked) {
		exp = expiry_check_at(c, o);
		/* the expiry check is still owed: never later than that; if
		 * its moment has passed (this answer came just before
		 * expiry), ask again right at it */
		t = min64(t, exp > now_ms ? exp : now_ms + c->expiry_grace_ms);
	}
	return t;
}

int64_t
sched_after_failure(const struct sched_conf *c, const struct sched_order *o,
                    int64_t now_ms)
{
	int64_t d = c->retry_ms, exp;
	int f = o->failures < 1 ? 1 : o->failures;

	for (int i = 1; i < f && d < c->retry_max_ms; i++)
		d *= 2;
	if (d > c->retry_max_ms)
		d = c->retry_max_ms;
	if (!o->expiry_checked) {
		exp = expiry_check_at(c, o);
		if (exp > now_ms)
			return min64(now_ms + d, exp);
	}
	return now_ms + d;
}

int64_t
sched_after_refund_answer(const struct sched_conf *c, int64_t since_ms,
                          int64_t now_ms)
{
	const struct recon_durations *b = c->backoff;
	int64_t cap =
	    b != NULL && b->n > 0 ? b->ms[b->n - 1] : c->first_check_ms;
	int64_t step = now_ms - since_ms;

	if (step > cap)
		step = cap;
	if (step < c->retry_ms)
		step = c->retry_ms;
	return now_ms + step;
}
