/*
 * liveness.h - every loop that owns a database connection says it is
 * alive (ARCHITECTURE.md "Liveness"; docs/failure-model.md).
 *
 * A loop registers once under a name ("reconciler.scheduler",
 * "order.consume.ingest") with its kind and poll interval; its database
 * handle then reports every command's outcome (db_set_loop() in db.h), so
 * no loop has to remember to.  The rule for "silent":
 *
 *   periodic   (schedulers, workers, consumers, publishers, the main
 *              loop: they touch the database on every pass, busy or
 *              idle) - no successful command for longer than its bound,
 *              2 x poll + LIVE_RECONNECT_MS (the reconnect backoff cap plus
 *              the connect timeout);
 *   on demand  (API pools, admin handlers, replay answers, scrapes: they
 *              run when asked) - every command has failed for longer than
 *              LIVE_ON_DEMAND_MS while it was still being asked (its last
 *              failure is recent).  One that is not asked is not judged.
 *   either     - a command it is still waiting for has been waited for
 *              longer than its bound: a COMMIT waiting for a synchronous
 *              standby that is down, a frozen session (no
 *              statement_timeout covers them, and the server is alive).
 *              The handle marks the wait around every call that blocks
 *              on the server (DB_WAITED, db_impl.h).  Handles that share a
 *              loop (a pool) share one mark: the last to finish clears
 *              it.
 *   stalled    - a loop that says so (live_stalled) has failed its work
 *              for longer than its bound, whatever else succeeds: a
 *              stream consumer whose batch keeps failing (a row locked
 *              by an operator's session: statement_timeout every time)
 *              while its cursor reads succeed.
 *
 * A silent loop makes /readyz fail naming it, shows as
 * kasir_loop_silent{loop="..."} 1, and kasirctl doctor names it (SOP 6.5).
 * Everything here is process-wide and thread-safe.
 */
#ifndef KASIR_LIVENESS_H
#define KASIR_LIVENESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIVE_NAME_MAX  48
#define LIVE_LOOPS_MAX 64
#define LIVE_RECONNECT_MS                                                      \
	20000 /* backoff cap 5 s + connect 5 s + statement 10 s */
#define LIVE_ON_DEMAND_MS 15000

/* The on-demand rule, on monotonic milliseconds: failing since `since`
 * (0: not failing), last failure at `last`, judged at `now`. */
bool live_on_demand_silent(int64_t since, int64_t last, int64_t now,
                           int64_t bound_ms);
/* The waiting rule: waiting since `since` (0: not waiting), judged at
 * `now`. */
bool live_waiting_silent(int64_t since, int64_t now, int64_t bound_ms);

enum live_kind { LIVE_PERIODIC, LIVE_ON_DEMAND };

struct live_loop;

/* Registers (or finds, by name) a loop.  poll_ms: its pass interval
 * (periodic only).  NULL when the table is full (the loop then goes
 * unwatched; a programmer error at 64 loops). */
struct live_loop *live_register(const char *name, enum live_kind kind,
                                int64_t poll_ms);
/* A database command of the loop succeeded / failed for lack of a
 * connection.  Accept NULL. */
void live_ok(struct live_loop *l);
void live_fail(struct live_loop *l);
/* A call that blocks on the server starts / returned.  Accept NULL. */
void live_wait_begin(struct live_loop *l);
void live_wait_end(struct live_loop *l);
/* The loop's work failed (stalled true; the first failure's time is kept)
 * / went through (false).  Accept NULL. */
void live_stalled(struct live_loop *l, bool stalled);

struct live_status {
	char name[LIVE_NAME_MAX];
	enum live_kind kind;
	int64_t bound_ms;
	int64_t ok_age_ms;    /* since the last success; -1 never */
	int64_t wait_age_ms;  /* the command waited for; -1 none */
	int64_t stall_age_ms; /* the work failed since; -1 none */
	bool silent;
};
/* Fills up to max entries (registration order); returns the count. */
size_t live_snapshot(struct live_status *out, size_t max);
/* Adds "loops": [{"loop", "kind", "silent", "ok_age_s", "bound_s"}...]
 * to obj (every daemon's admin "status" carries it: kasirctl doctor names
 * a silent loop from there).  0 or -ENOMEM. */
struct cJSON;
int live_to_json(struct cJSON *obj);
/* 0 when no loop is silent; otherwise -EAGAIN and why names the first
 * silent loop ("loop X silent for N s (bound M s)"). */
int live_check(char *why, size_t why_len);

#endif
