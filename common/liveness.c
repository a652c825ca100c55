/*
 * liveness.c - see liveness.h.  A fixed table, appended under a mutex and
 * read lock-free: entries never move and their times are atomics.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "liveness.h"
#include "util.h"

struct live_loop {
	char name[LIVE_NAME_MAX];
	enum live_kind kind;
	int64_t bound_ms;
	int64_t registered_ms;    /* monotonic */
	int64_t last_ok_ms;       /* monotonic; 0 never (atomic) */
	int64_t failing_since_ms; /* first failure since the last ok; 0 none */
	int64_t last_fail_ms;
	int64_t waiting_since_ms; /* a blocking call started; 0 none */
	int64_t stalled_since_ms; /* its work refused since; 0 none */
};

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct live_loop live_loops[LIVE_LOOPS_MAX];
static size_t live_n; /* published with a release store */

struct live_loop *
live_register(const char *name, enum live_kind kind, int64_t poll_ms)
{
	struct live_loop *l = NULL;
	size_t n;

	if (name == NULL)
		return NULL;
	pthread_mutex_lock(&live_lock);
	n = __atomic_load_n(&live_n, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < n; i++)
		if (strcmp(live_loops[i].name, name) == 0) {
			l = &live_loops[i];
			goto out;
		}
	if (n == LIVE_LOOPS_MAX)
		goto out;
	l = &live_loops[n];
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->kind = kind;
	l->bound_ms =
	    kind == LIVE_PERIODIC
	        ? 2 * (poll_ms > 0 ? poll_ms : 1000) + LIVE_RECONNECT_MS
	        : LIVE_ON_DEMAND_MS;
	l->registered_ms = now_mono_ms();
	__atomic_store_n(&live_n, n + 1, __ATOMIC_RELEASE);
out:
	pthread_mutex_unlock(&live_lock);
	return l;
}

void
live_ok(struct live_loop *l)
{
	if (l == NULL)
		return;
	__atomic_store_n(&l->last_ok_ms, now_mono_ms(), __ATOMIC_RELAXED);
	__atomic_store_n(&l->failing_since_ms, 0, __ATOMIC_RELAXED);
}

void
live_fail(struct live_loop *l)
{
	int64_t now = now_mono_ms(), zero = 0;

	if (l == NULL)
		return;
	__atomic_store_n(&l->last_fail_ms, now, __ATOMIC_RELAXED);
	__atomic_compare_exchange_n(&l->failing_since_ms, &zero, now, false,
	                            __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void
live_wait_begin(struct live_loop *l)
{
	int64_t zero = 0;

	if (l == NULL)
		return;
	/* another handle of the loop already waiting keeps its start */
	__atomic_compare_exchange_n(&l->waiting_since_ms, &zero, now_mono_ms(),
	                            false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void
live_wait_end(struct live_loop *l)
{
	if (l != NULL)
		__atomic_store_n(&l->waiting_since_ms, 0, __ATOMIC_RELAXED);
}

void
live_stalled(struct live_loop *l, bool stalled)
{
	int64_t zero = 0;

	if (l == NULL)
		return;
	if (!stalled)
		__atomic_store_n(&l->stalled_since_ms, 0, __ATOMIC_RELAXED);
	else
		__atomic_compare_exchange_n(&l->stalled_since_ms, &zero,
		                            now_mono_ms(), false,
		                            __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

bool
live_waiting_silent(int64_t since, int64_t now, int64_t bound_ms)
{
	return since > 0 && now - since > bound_ms;
}

static void
judge(const struct live_loop *l, int64_t now, struct live_status *st)
{
	int64_t ok = __atomic_load_n(&l->last_ok_ms, __ATOMIC_RELAXED);
	int64_t since = __atomic_load_n(&l->failing_since_ms, __ATOMIC_RELAXED);
	int64_t last = __atomic_load_n(&l->last_fail_ms, __ATOMIC_RELAXED);
	int64_t waiting =
	    __atomic_load_n(&l->waiting_since_ms, __ATOMIC_RELAXED);
	int64_t stalled =
	    __atomic_load_n(&l->stalled_since_ms, __ATOMIC_RELAXED);

	kasir_strlcpy(st->name, l->name, sizeof(st->name));
	st->kind = l->kind;
	st->bound_ms = l->bound_ms;
	st->ok_age_ms = ok > 0 ? now - ok : -1;
	if (l->kind == LIVE_PERIODIC)
		/* a loop that never passed is judged from its start */
		st->silent =
		    now - (ok > 0 ? ok : l->registered_ms) > l->bound_ms;
	else
		st->silent =
		    live_on_demand_silent(since, last, now, l->bound_ms);
	st->wait_age_ms = waiting > 0 ? now - waiting : -1;
	if (live_waiting_silent(waiting, now, l->bound_ms))
		st->silent = true;
	/* the same rule: stalled for longer than the bound */
	st->stall_age_ms = stalled > 0 ? now - stalled : -1;
	if (live_waiting_silent(stalled, now, l->bound_ms))
		st->silent = true;
}

bool
live_on_demand_silent(int64_t since, int64_t last, int64_t now,
                      int64_t bound_ms)
{
	/* the spell of failures itself must be longer than the bound: it
	 * was measured to now, so that 8 s of failures and then no call
	 * read as silent from 15 s to 23 s, while the database had been
	 * back for long (an outside attack, 2026-12-07: every kasir-ingest
	 * behind a load balancer went not-ready together) */
	return since > 0 && last - since > bound_ms && now - last <= bound_ms;
}

size_t
live_snapshot(struct live_status *out, size_t max)
{
	size_t n = __atomic_load_n(&live_n, __ATOMIC_ACQUIRE);
	int64_t now = now_mono_ms();

	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++)
		judge(&live_loops[i], now, &out[i]);
	return n;
}

int
live_check(char *why, size_t why_len)
{
	struct live_status st[LIVE_LOOPS_MAX];
	size_t n = live_snapshot(st, LIVE_LOOPS_MAX);

	for (size_t i = 0; i < n; i++) {
		if (!st[i].silent)
			continue;
		if (st[i].wait_age_ms > st[i].bound_ms)
			snprintf(why, why_len,
			         "loop %s silent: a database command has been "
			         "waited for %lld s (bound %lld s)",
			         st[i].name,
			         (long long)(st[i].wait_age_ms / 1000),
			         (long long)(st[i].bound_ms / 1000));
		else if (st[i].stall_age_ms > st[i].bound_ms)
			snprintf(
			    why, why_len,
			    "loop %s silent: its work has failed for %lld s "
			    "(bound %lld s; a lock held, a statement "
			    "timing out?)",
			    st[i].name, (long long)(st[i].stall_age_ms / 1000),
			    (long long)(st[i].bound_ms / 1000));
		else if (st[i].ok_age_ms < 0)
			snprintf(why, why_len,
			         "loop %s silent: no successful pass yet "
			         "(bound %lld s)",
			         st[i].name,
			         (long long)(st[i].bound_ms / 1000));
		else
			snprintf(why, why_len,
			         "loop %s silent for %lld s (bound %lld s)",
			         st[i].name,
			         (long long)(st[i].ok_age_ms / 1000),
			         (long long)(st[i].bound_ms / 1000));
		return -EAGAIN;
	}
	return 0;
}

int
live_to_json(cJSON *obj)
{
	struct live_status st[LIVE_LOOPS_MAX];
	size_t n = live_snapshot(st, LIVE_LOOPS_MAX);
	cJSON *arr = cJSON_AddArrayToObject(obj, "loops");

	if (arr == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		cJSON *o = cJSON_CreateObject();

		if (o == NULL || !cJSON_AddItemToArray(arr, o) ||
		    cJSON_AddStringToObject(o, "loop", st[i].name) == NULL ||
		    cJSON_AddStringToObject(o, "kind",
		                            st[i].kind == LIVE_PERIODIC
		                                ? "periodic"
		                                : "on_demand") == NULL ||
		    cJSON_AddBoolToObject(o, "silent", st[i].silent) == NULL ||
		    cJSON_AddNumberToObject(o, "ok_age_s",
		                            st[i].ok_age_ms < 0
		                                ? -1.0
		                                : st[i].ok_age_ms / 1000.0) ==
		        NULL ||
		    cJSON_AddNumberToObject(o, "bound_s",
		                            st[i].bound_ms / 1000.0) == NULL)
			return -ENOMEM;
	}
	return 0;
}
