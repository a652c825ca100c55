/*
 * evidence.c - the scheduler lanes: claim due orders, ask the Status API,
 * keep every answer, publish what is new.
 *
 * Each lane (schedule.lanes threads) is a rolling pipeline on its own
 * connection and its own Status API client (statusapi.c), so requests stay
 * in flight continuously and no answer waits for another:
 *
 *  - claim (its own transaction, or inside a recording transaction): up to
 *    the lane's free window slots of watch rows that are due
 *    (next_check_at passed; in reconciliation mode also "not checked for
 *    mode.interval"; or forced by an operator; or a confirmation asked)
 *    and not leased, FOR UPDATE SKIP LOCKED (the lanes share the rows
 *    out), leased until now + schedule.lease.  COMMIT before any request:
 *    a process killed mid-run leaves only leases, and the rows are checked
 *    again once they expire.  A repeated check is harmless: kasir-order
 *    applies evidence idempotently and the "says something new" filter
 *    below reads the stored state.
 *  - the client runs the requests (bounded concurrency, rps cap, retries)
 *    and gives each check back as soon as it is finished;
 *  - record (one transaction for what finished together): every answer
 *    into recon.status_check; if the final answer says something new, a
 *    status.check message naming the check id is appended to the "recon"
 *    stream in the SAME transaction; the watch row gets its next check
 *    time (schedule.c) and loses its lease.  COMMIT, kick the producer.
 *  - lane 0 also runs mode_evaluate() (automatic reconciliation mode)
 *    once per schedule.poll.
 *
 * "Something new": a status answer whose transaction_status (and fraud
 * status for captures) differs from the last answer or evidence known for
 * the order, or a 404 / 407 answer given after the order's expiry (the
 * evidence that lets kasir-order mark it EXPIRED), once.  Answers to an
 * order that became final meanwhile are stored but not sent, unless an
 * operator forced the check.
 *
 * Confirmations: a confirm.request (watchlist.c) makes the order due at
 * once, final or not.  Its check asks by order id (by transaction id only
 * for the by_transaction_id channels), and its first real answer (status,
 * 404, 407) is sent whatever it says, with confirm = true: kasir-order
 * holds the notification until then.  A failed check keeps the request
 * and is retried with the failure backoff (schedule.retry, doubling).  A
 * request that arrives while a check of the same order is in flight (an
 * operator's, a scheduled one) is asked right after that check is
 * recorded (st_update; tests/reconciler/test_confirm_in_flight.py).
 *
 * A 401 (wrong server key) pauses every check for schedule.auth_pause,
 * then one order at a time is tried until the key works again; logged
 * once, counted, and shown by kasir_reconciler_auth_broken.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "midtrans_amount.h"
#include "reconciler.h"
#include "stream.h"
#include "util.h"

/*
 * The claim.  Which rows are due is said once, in the locking query's
 * WHERE; the candidates it looks at come from five index scans (forced,
 * confirmation asked, next check passed, in reconciliation mode the
 * oldest last check, and a refund followed: migration 0008), each at most
 * twice the limit, so a claim reads a few index entries whatever the
 * number of final rows the table keeps.  (One
 * WHERE with ORs was a sequential scan of the whole table: 3.5 ms a claim
 * with 5,000 rows and their dead versions, the reconciler's largest cost
 * at 500 payments/s.)  A candidate another lane holds is skipped.
 * Candidates are taken in the order they became due: next_check_at, or in
 * reconciliation mode the last check + mode interval when earlier (by
 * next_check_at alone, more than $4 orders always due, e.g. a drill's
 * refused checkouts rechecked "not started yet", starved paid orders whose
 * next check was far off: reconciliation mode never reached them).
 */
#define CLAIM_SQL                                                              \
	"UPDATE recon.watch w SET"                                             \
	" lease_until = now() + $1::bigint * interval '1 millisecond'"         \
	" FROM (SELECT order_id FROM recon.watch"                              \
	"  WHERE order_id = ANY (ARRAY("                                       \
	"   (SELECT order_id FROM recon.watch WHERE forced"                    \
	"     AND (lease_until IS NULL OR lease_until < now())"                \
	"    ORDER BY confirm_seq IS NULL, next_check_at"                      \
	"    LIMIT 2 * $4::int)"                                               \
	"   UNION ALL"                                                         \
	"   (SELECT order_id FROM recon.watch"                                 \
	"    WHERE confirm_seq IS NOT NULL AND next_check_at <= now()"         \
	"     AND (lease_until IS NULL OR lease_until < now())"                \
	"    ORDER BY next_check_at LIMIT 2 * $4::int)"                        \
	"   UNION ALL"                                                         \
	"   (SELECT order_id FROM recon.watch"                                 \
	"    WHERE NOT final AND next_check_at <= now()"                       \
	"     AND (lease_until IS NULL OR lease_until < now())"                \
	"    ORDER BY next_check_at LIMIT 2 * $4::int)"                        \
	"   UNION ALL"                                                         \
	"   (SELECT order_id FROM recon.watch"                                 \
	"    WHERE $2::bool AND NOT final AND coalesce(last_check_at,"         \
	"     created_at) <= now() - $3::bigint * interval '1 millisecond'"    \
	"     AND (lease_until IS NULL OR lease_until < now())"                \
	"    ORDER BY coalesce(last_check_at, created_at)"                     \
	"    LIMIT 2 * $4::int)"                                               \
	"   UNION ALL"                                                         \
	"   (SELECT order_id FROM recon.watch"                                 \
	"    WHERE refund_since IS NOT NULL AND next_check_at <= now()"        \
	"     AND (lease_until IS NULL OR lease_until < now())"                \
	"    ORDER BY next_check_at LIMIT 2 * $4::int)))"                      \
	"   AND (lease_until IS NULL OR lease_until < now())"                  \
	"   AND (forced OR ((confirm_seq IS NOT NULL OR NOT final"             \
	"    OR refund_since IS NOT NULL) AND next_check_at <= now())"         \
	"    OR (NOT final AND $2::bool AND coalesce(last_check_at,"           \
	"     created_at) <= now() - $3::bigint * interval '1 millisecond'))"  \
	"  ORDER BY forced DESC, confirm_seq IS NULL,"                         \
	"   least(next_check_at, CASE WHEN $2::bool AND NOT final THEN"        \
	"    coalesce(last_check_at, created_at) + $3::bigint"                 \
	"    * interval '1 millisecond' END)"                                  \
	"  LIMIT $4::int FOR UPDATE SKIP LOCKED) c"                            \
	" WHERE w.order_id = c.order_id"                                       \
	" RETURNING w.order_id, w.transaction_id, w.payment_type,"             \
	"  w.confirm_seq, (extract(epoch FROM w.created_at) * 1000)::bigint"

static const struct db_stmt st_claim = {
    .name = "recon_claim",
    .sql = CLAIM_SQL,
    .nparams = 4,
};

/* The watch rows of a group of checks ($1: their orders), locked, in the
 * group's order; an order without a row has none. */
static const struct db_stmt st_lock = {
    .name = "recon_watch_lock",
    .sql = "SELECT w.order_id, w.final, w.last_key, w.attempts, w.failures,"
           " w.expiry_checked, (extract(epoch FROM w.created_at) * 1000)"
           "::bigint, (extract(epoch FROM w.expires_at) * 1000)::bigint,"
           " w.forced, (extract(epoch FROM w.refund_since) * 1000)::bigint,"
           " w.refund_expected"
           " FROM unnest($1::text[]) WITH ORDINALITY AS u(id, i)"
           " JOIN recon.watch w ON w.order_id = u.id"
           " ORDER BY u.i FOR UPDATE OF w",
    .nparams = 1,
};

/*
 * Everything a group of checks writes, in one statement: every answer
 * into recon.status_check ($1..$24, one element per answer, in order:
 * RETURNING their ids) and each order's watch row rescheduled ($25..$33,
 * one element per check: u.done the confirmation this check answered,
 * NULL: none, or it failed; u.claimed the one it was claimed for, NULL:
 * none; u.refunded the refund followed is shown or no longer followed).
 * A confirmation asked while the check was in flight (it was
 * claimed without it, or for an earlier one) stays and is due at once:
 * the next scheduled check may be hours away, and kasir-order holds the
 * notification until it is answered.  Each order is named once.
 */
#define WRITE_ANSWER_COLS 24
#define WRITE_WATCH_COLS  10
static const struct db_stmt st_write = {
    .name = "recon_check_write",
    .sql = "WITH ins AS (INSERT INTO recon.status_check (order_id, asked,"
           " by_transaction_id, attempt, http_status, verdict,"
           " transaction_status, status_code, status_message, fraud_status,"
           " gross_amount, currency, payment_type, transaction_id, body,"
           " body_truncated, error, latency_ms, past_expiry, published, reason,"
           " mode, requested_at, confirm)"
           " SELECT a.order_id, a.asked, a.by_txn, a.attempt, a.http,"
           "  a.verdict, a.ts, a.sc, a.sm, a.fs, a.ga, a.cur, a.pt, a.txn,"
           "  a.body, a.trunc, a.err, a.lat, a.past, a.pub, a.reason, a.mode,"
           "  to_timestamp(a.req / 1000.0), a.confirm"
           " FROM unnest($1::text[], $2::text[], $3::bool[], $4::int[],"
           "  $5::int[], $6::text[], $7::text[], $8::text[], $9::text[],"
           "  $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],"
           "  $15::text[], $16::bool[], $17::text[], $18::int[], $19::bool[],"
           "  $20::bool[], $21::text[], $22::text[], $23::bigint[],"
           "  $24::bool[]) WITH ORDINALITY AS a(order_id, asked, by_txn,"
           "  attempt, http, verdict, ts, sc, sm, fs, ga, cur, pt, txn, body,"
           "  trunc, err, lat, past, pub, reason, mode, req, confirm, i)"
           " ORDER BY a.i RETURNING id, order_id, attempt),"
           " upd AS (UPDATE recon.watch w SET attempts = u.att,"
           " failures = u.fail, expiry_checked = u.exp,"
           " last_key = coalesce(u.key, w.last_key),"
           " next_check_at = CASE WHEN w.confirm_seq IS NOT NULL AND"
           "  w.confirm_seq IS DISTINCT FROM u.claimed THEN now()"
           "  ELSE to_timestamp(u.next / 1000.0) END,"
           " last_check_at = now(), last_verdict = u.verdict,"
           " lease_until = NULL, forced = false, updated_at = now(),"
           " confirm_since = CASE WHEN w.confirm_seq = u.done THEN NULL"
           "  ELSE w.confirm_since END,"
           " confirm_seq = CASE WHEN w.confirm_seq = u.done THEN NULL"
           "  ELSE w.confirm_seq END,"
           " refund_since = CASE WHEN u.refunded THEN NULL"
           "  ELSE w.refund_since END"
           " FROM unnest($25::text[], $26::int[], $27::int[], $28::bool[],"
           "  $29::text[], $30::bigint[], $31::text[], $32::bigint[],"
           "  $33::bigint[], $34::bool[]) AS u(id, att, fail, exp, key, next,"
           "  verdict, done, claimed, refunded)"
           " WHERE w.order_id = u.id)"
           " SELECT id, order_id, attempt FROM ins",
    .nparams = WRITE_ANSWER_COLS + WRITE_WATCH_COLS,
};

/* A claim on its own only sets leases: losing it in a crash of
 * PostgreSQL makes the rows due again, so its COMMIT need not wait for the
 * WAL flush (the next synchronous COMMIT flushes it anyway).  It is one
 * statement in autocommit, one round trip: the set_config() in RETURNING
 * runs for every row taken, before the implicit COMMIT reads the setting
 * (a claim that took no row wrote nothing and flushes nothing). */
static const struct db_stmt st_claim_alone = {
    .name = "recon_claim_alone",
    .sql = CLAIM_SQL ", set_config('synchronous_commit', 'off', true)",
    .nparams = 4,
};

/* After a pass that could not be recorded: its leases, so the orders are
 * asked again at the next pass instead of after schedule.lease. */
static const struct db_stmt st_release_all = {
    .name = "recon_watch_release_all",
    .sql = "UPDATE recon.watch SET lease_until = NULL"
           " WHERE order_id = ANY($1::text[])",
    .nparams = 1,
};

static const struct db_stmt st_release = {
    .name = "recon_watch_release",
    .sql = "UPDATE recon.watch SET lease_until = NULL WHERE order_id = $1",
    .nparams = 1,
};

/* What the record step knows about one claimed order. */
struct watch_state {
	bool final, forced, expiry_checked;
	int64_t refund_since_ms; /* 0: no refund followed (migration 0008) */
	int64_t refund_expected; /* rupiah Midtrans should show refunded */
	char last_key[RECON_FIELD_MAX * 2];
	struct sched_order o;
};

/* The "says something new" key of an answer; "" when it says nothing
 * that can be compared (errors).  An answer made past the order's expiry
 * is keyed apart ("...:past"): kasir-order decides on it differently (a
 * deny past expiry ends the order FAILED, before it the customer may
 * still pay), so the first one is news even when the answers before
 * expiry said the same (an outside check, 2026-12-08: a denied card's
 * order stayed PENDING for good). */
static void
answer_key(const struct statusapi_answer *a, bool past_expiry, char *buf,
           size_t len)
{
	const char *past = past_expiry ? ":past" : "";

	buf[0] = '\0';
	switch (a->verdict) {
	case VERDICT_STATUS:
		if (strcmp(a->f.transaction_status, "capture") == 0 &&
		    a->f.fraud_status[0] != '\0')
			snprintf(buf, len, "status:capture/%s%s",
			         a->f.fraud_status, past);
		else
			snprintf(buf, len, "status:%s%s",
			         a->f.transaction_status, past);
		break;
	case VERDICT_NOT_FOUND:
		snprintf(buf, len, "not_found%s", past);
		break;
	case VERDICT_EXPIRED:
		snprintf(buf, len, "expired%s", past);
		break;
	default:
		break;
	}
}

/* Decides whether the final answer is sent to kasir-order; *ret_reason
 * (static) says why or why not. */
static bool
says_something_new(const struct watch_state *w,
                   const struct statusapi_answer *a, bool past_expiry,
                   bool confirm, const char *key, const char **ret_reason)
{
	if (!recon_verdict_is_answer(a->verdict)) {
		*ret_reason = "no answer: rescheduled";
		return false;
	}
	if (confirm) {
		*ret_reason = "confirmation asked by kasir-order";
		return true;
	}
	if (w->final && !w->forced && w->refund_since_ms == 0) {
		*ret_reason = "order already final";
		return false;
	}
	if (a->verdict != VERDICT_STATUS && !past_expiry) {
		*ret_reason = a->verdict == VERDICT_NOT_FOUND
		                  ? "not started yet, before expiry"
		                  : "expired answer before the order's expiry";
		return false;
	}
	/* an operator asked (kasirctl reconcile, a refund): the answer
	 * decides, even when it repeats what a notification said (one
	 * kasir-order flagged: a reversal without settlement_time) */
	if (w->forced) {
		*ret_reason = "forced by an operator";
		return true;
	}
	if (strcmp(key, w->last_key) == 0) {
		*ret_reason = "same as the last answer or evidence";
		return false;
	}
	*ret_reason = "new";
	return true;
}

static void
add_opt(cJSON *o, const char *k, const char *v)
{
	if (v != NULL && v[0] != '\0')
		cJSON_AddStringToObject(o, k, v);
}

static int
publish(struct recon *r, struct kasir_db *db, int64_t check_id,
        const struct statusapi_call *c, const struct statusapi_answer *a,
        bool past_expiry)
{
	cJSON *d = cJSON_CreateObject();
	char at[40];
	int rc;

	if (d == NULL)
		return -ENOMEM;
	time_rfc3339(a->at_ms, at, sizeof(at));
	cJSON_AddNumberToObject(d, "check_id", (double)check_id);
	cJSON_AddStringToObject(d, "order_id", c->order_id);
	cJSON_AddNumberToObject(d, "http_status", (double)a->http_status);
	cJSON_AddStringToObject(d, "verdict", recon_verdict_name(a->verdict));
	add_opt(d, "transaction_status", a->f.transaction_status);
	add_opt(d, "status_code", a->f.status_code);
	add_opt(d, "gross_amount", a->f.gross_amount);
	add_opt(d, "currency", a->f.currency);
	add_opt(d, "payment_type", a->f.payment_type);
	add_opt(d, "fraud_status", a->f.fraud_status);
	add_opt(d, "transaction_id", a->f.transaction_id);
	add_opt(d, "settlement_time", a->f.settlement_time);
	add_opt(d, "refund_amount", a->f.refund_amount);
	cJSON_AddStringToObject(d, "checked_at", at);
	cJSON_AddBoolToObject(d, "past_expiry", past_expiry);
	if (c->confirm_seq > 0)
		cJSON_AddBoolToObject(d, "confirm", true);
	rc = stream_append(r->producer, db, MSG_STATUS_CHECK, d, NULL);
	cJSON_Delete(d);
	return rc;
}

/* The watch row of row k of st_lock's result. */
static void
watch_from(const PGresult *res, int k, struct watch_state *w)
{
	memset(w, 0, sizeof(*w));
	w->final = db_get(res, k, 1)[0] == 't';
	kasir_strlcpy(w->last_key, db_get(res, k, 2) ? db_get(res, k, 2) : "",
	              sizeof(w->last_key));
	w->o.attempts = (int)db_get_i64(res, k, 3);
	w->o.failures = (int)db_get_i64(res, k, 4);
	w->o.expiry_checked = db_get(res, k, 5)[0] == 't';
	w->o.created_ms = db_get_i64(res, k, 6);
	w->o.expires_ms = db_get_i64(res, k, 7);
	w->forced = db_get(res, k, 8)[0] == 't';
	w->refund_since_ms = db_get_i64(res, k, 9);
	w->refund_expected = db_get_i64(res, k, 10);
}

/*
 * What recording one finished check writes, decided from its locked watch
 * row before any write: record_chunk() writes exactly this, for a group
 * (record_group) and for one check the careful way (record).
 */
struct check_plan {
	struct watch_state w;
	bool past_expiry[RECON_TRIES_MAX];
	const char *reason[RECON_TRIES_MAX]; /* static strings */
	bool published; /* the last answer is sent to kasir-order */
	bool answered;
	bool refund_ended; /* the refund followed is shown, or given up */
	char key[RECON_FIELD_MAX * 2]; /* the last answer's */
	char next[24], att[16], fail[16], cseq[24];
	int64_t id; /* the last answer's check id, once inserted */
};

/*
 * Whether answer a shows the refund an operator started (kasirctl refund,
 * refund.c) once the whole rupiah expected are refunded: "refund" (the
 * whole payment), or "partial_refund" with a refund_amount of at least
 * expected; or a chargeback, which takes the whole payment back another
 * way (kasir-order decides on it).  Anything else, "settlement" above
 * all (Midtrans has not applied the refund yet), is asked about again.
 */
static bool
refund_shown(const struct statusapi_answer *a, int64_t expected)
{
	const char *ts = a->f.transaction_status;
	int64_t v;

	if (a->verdict != VERDICT_STATUS)
		return false;
	if (strcmp(ts, "refund") == 0 || strcmp(ts, "chargeback") == 0)
		return true;
	return strcmp(ts, "partial_refund") == 0 &&
	       midtrans_amount_parse(a->f.refund_amount, &v) == 0 &&
	       v >= expected;
}

/* Whether the refund followed on w ends with answer a at now, and the
 * next check's time when it does not (*next_ms, only then). */
static bool
refund_follow_ends(struct recon *r, const struct statusapi_call *c,
                   const struct watch_state *w,
                   const struct statusapi_answer *a, int64_t now,
                   int64_t *next_ms)
{
	if (refund_shown(a, w->refund_expected))
		return true;
	if (now - w->refund_since_ms > RECON_REFUND_FOLLOW_MS) {
		log_order(LOG_ERR, c->order_id,
		          "refund accepted a week ago is still not shown by "
		          "the Status API (%s %s): no longer asked; compare "
		          "with the Midtrans dashboard",
		          recon_verdict_name(a->verdict),
		          a->f.transaction_status);
		return true;
	}
	*next_ms =
	    sched_after_refund_answer(&r->sched, w->refund_since_ms, now);
	return false;
}

/* Decides the plan of c (c->nanswers > 0) from pl->w, at now. */
static void
plan_check(struct recon *r, const struct statusapi_call *c,
           struct check_plan *pl, int64_t now)
{
	struct watch_state *w = &pl->w;
	const struct statusapi_answer *last = &c->answers[c->nanswers - 1];
	int64_t next_ms;

	pl->published = false;
	for (int i = 0; i < c->nanswers; i++) {
		const struct statusapi_answer *a = &c->answers[i];

		pl->past_expiry[i] = a->at_ms >= w->o.expires_ms;
		pl->reason[i] = "retried";
		if (i == c->nanswers - 1) {
			answer_key(a, pl->past_expiry[i], pl->key,
			           sizeof(pl->key));
			pl->published = says_something_new(
			    w, a, pl->past_expiry[i], c->confirm_seq > 0,
			    pl->key, &pl->reason[i]);
		}
	}
	pl->answered = recon_verdict_is_answer(last->verdict);
	pl->refund_ended = false;
	if (pl->answered) {
		int64_t refund_next;

		w->o.attempts++;
		w->o.failures = 0;
		if (sched_is_expiry_check(&w->o, last->at_ms))
			w->o.expiry_checked = true;
		next_ms = sched_after_answer(&r->sched, &w->o, now);
		if (w->refund_since_ms > 0) {
			pl->refund_ended = refund_follow_ends(
			    r, c, w, last, now, &refund_next);
			/* a final order is asked only for its refund (the
			 * claim's other scans skip final rows) */
			if (!pl->refund_ended &&
			    (w->final || refund_next < next_ms))
				next_ms = refund_next;
		}
	} else {
		w->o.failures++;
		next_ms = sched_after_failure(&r->sched, &w->o, now);
	}
	snprintf(pl->next, sizeof(pl->next), "%" PRId64, next_ms);
	snprintf(pl->att, sizeof(pl->att), "%d", w->o.attempts);
	snprintf(pl->fail, sizeof(pl->fail), "%d", w->o.failures);
	snprintf(pl->cseq, sizeof(pl->cseq), "%" PRId64, c->confirm_seq);
}

/* The text parameters of answer i of c (st_insert) point into b. */
struct insert_bufs {
	char attempt[16], http[16], lat[24], req[24];
};

static void
insert_params(struct recon *r, const struct statusapi_call *c, int i,
              const struct check_plan *pl, struct insert_bufs *b,
              const char *p[24])
{
	const struct statusapi_answer *a = &c->answers[i];
	bool published = pl->published && i == c->nanswers - 1;

	snprintf(b->attempt, sizeof(b->attempt), "%d", i + 1);
	snprintf(b->http, sizeof(b->http), "%ld", a->http_status);
	snprintf(b->lat, sizeof(b->lat), "%" PRId64, a->latency_ms);
	snprintf(b->req, sizeof(b->req), "%" PRId64, a->at_ms);
#define OPT(x) ((x)[0] ? (x) : NULL)
	p[0] = c->order_id;
	p[1] = c->ident;
	p[2] = c->by_txn ? "true" : "false";
	p[3] = b->attempt;
	p[4] = b->http;
	p[5] = recon_verdict_name(a->verdict);
	p[6] = OPT(a->f.transaction_status);
	p[7] = OPT(a->f.status_code);
	p[8] = OPT(a->f.status_message);
	p[9] = OPT(a->f.fraud_status);
	p[10] = OPT(a->f.gross_amount);
	p[11] = OPT(a->f.currency);
	p[12] = OPT(a->f.payment_type);
	p[13] = OPT(a->f.transaction_id);
	p[14] = a->body.data;
	p[15] = a->body.overflow ? "true" : "false";
	p[16] = OPT(a->error);
	p[17] = b->lat;
	p[18] = pl->past_expiry[i] ? "true" : "false";
	p[19] = published ? "true" : "false";
	p[20] = pl->reason[i];
	p[21] = recon_mode_name((enum recon_mode)atomic_load(&r->mode));
	p[22] = b->req;
	p[23] = c->confirm_seq > 0 ? "true" : "false";
#undef OPT
	if (a->body.data != NULL && !utf8_valid(a->body.data, a->body.len))
		p[14] = "(body is not valid UTF-8: not stored)";
	/* a text parameter ends at a NUL: the rest would be lost unsaid */
	else if (a->body.data != NULL &&
	         memchr(a->body.data, '\0', a->body.len) != NULL)
		p[14] = "(body holds a NUL byte: not stored)";
}

/* The parameters of c's watch row update (st_update). */
static void
update_params(const struct statusapi_call *c, const struct check_plan *pl,
              const char *p[WRITE_WATCH_COLS])
{
	const struct statusapi_answer *last = &c->answers[c->nanswers - 1];

	/* an answered confirmation is done; a failed one stays and is
	 * retried with the failure backoff */
	p[0] = c->order_id;
	p[1] = pl->att;
	p[2] = pl->fail;
	p[3] = pl->w.o.expiry_checked ? "true" : "false";
	p[4] = pl->answered && pl->key[0] ? pl->key : NULL;
	p[5] = pl->next;
	p[6] = recon_verdict_name(last->verdict);
	p[7] = pl->answered && c->confirm_seq > 0 ? pl->cseq : NULL;
	p[8] = c->confirm_seq > 0 ? pl->cseq : NULL;
	p[9] = pl->refund_ended ? "true" : "false";
}

/* Counts and logs a check whose rows were written (before COMMIT:
 * record_all() says when the whole pass had to be dropped). */
static void
check_recorded(struct recon *r, const struct statusapi_call *c,
               const struct check_plan *pl)
{
	const struct statusapi_answer *last = &c->answers[c->nanswers - 1];
	char ids[24];

	for (int i = 0; i < c->nanswers; i++)
		metric_inc(r->m.checks[c->answers[i].verdict]);
	if (pl->published)
		metric_inc(r->m.published);
	snprintf(ids, sizeof(ids), "%" PRId64, pl->id);
	log_fields(pl->published ? LOG_NOTICE : LOG_INFO,
	           LOG_F({"ORDER_ID", c->order_id}, {"CHECK_ID", ids}),
	           "status api: %s%s%s (http %ld, %d attempt(s)), %s",
	           recon_verdict_name(last->verdict),
	           last->f.transaction_status[0] ? " " : "",
	           last->f.transaction_status, last->http_status, c->nanswers,
	           pl->published ? "sent to kasir-order"
	                         : pl->reason[c->nanswers - 1]);
}

/* Locks the watch rows of calls[0..n) (st_lock) into plans[i].w;
 * KASIR_ENOTFOUND when an order has none. */
static int
lock_watches(struct kasir_db *db, struct statusapi_call **calls, size_t n,
             struct check_plan *plans)
{
	struct db_array ids = {0};
	PGresult *res = NULL;
	const char *p[1];
	int rc, k = 0;

	for (size_t i = 0; i < n; i++)
		db_array_add(&ids, calls[i]->order_id);
	if ((p[0] = db_array_text(&ids)) == NULL)
		rc = -ENOMEM;
	else
		rc = db_exec(db, &st_lock, p, &res);
	db_array_free(&ids);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (k >= PQntuples(res) ||
		    strcmp(db_get(res, k, 0), calls[i]->order_id) != 0)
			rc = KASIR_ENOTFOUND;
		else
			watch_from(res, k++, &plans[i].w);
	}
	PQclear(res);
	return rc;
}

/* Whether two of calls[0..n) are the same order.  st_write names each
 * order once; a lease makes that the rule, and the careful way records
 * such a group one check at a time. */
static bool
group_has_twins(struct statusapi_call **calls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(calls[i]->order_id, calls[j]->order_id) == 0)
				return true;
	return false;
}

/* st_write's parameters (db.h), filled check by check: answers counts
 * the answers added. */
struct write_cols {
	struct db_cols c;
	size_t answers;
};

/* Decides the plans of calls[0..n) from their locked rows and fills the
 * parameters of their writes: st_write's, and the orders of the checks
 * never sent (auth pause, stopping), which are just given back. */
static void
group_fill(struct recon *r, struct statusapi_call **calls, size_t n,
           struct check_plan *plans, int64_t now, struct write_cols *w,
           struct db_array *release)
{
	const char *p[WRITE_ANSWER_COLS];

	for (size_t i = 0; i < n; i++) {
		struct statusapi_call *c = calls[i];

		if (c->nanswers == 0) {
			db_array_add(release, c->order_id);
			continue;
		}
		plan_check(r, c, &plans[i], now);
		for (int k = 0; k < c->nanswers; k++) {
			struct insert_bufs b;

			insert_params(r, c, k, &plans[i], &b, p);
			db_cols_add(&w->c, 0, p, WRITE_ANSWER_COLS);
			w->answers++;
		}
		update_params(c, &plans[i], p);
		db_cols_add(&w->c, WRITE_ANSWER_COLS, p, WRITE_WATCH_COLS);
	}
}

/* Each check's last answer id into its plan, from st_write's rows (id,
 * order_id, attempt), whatever order they come in. */
static int
group_ids(const PGresult *res, struct statusapi_call **calls, size_t n,
          struct check_plan *plans, size_t answers)
{
	size_t want = 0, found = 0;

	if ((size_t)PQntuples(res) != answers)
		return KASIR_ESQL;
	for (size_t i = 0; i < n; i++)
		want += calls[i]->nanswers > 0;
	for (int k = 0; k < PQntuples(res); k++)
		for (size_t i = 0; i < n; i++)
			if (calls[i]->nanswers == db_get_i64(res, k, 2) &&
			    strcmp(calls[i]->order_id, db_get(res, k, 1)) ==
			        0) {
				plans[i].id = db_get_i64(res, k, 0);
				found++;
				break;
			}
	return found == want ? 0 : KASIR_ESQL;
}

/* Runs st_write with w (if any check has answers). */
static int
group_write(struct kasir_db *db, struct statusapi_call **calls, size_t n,
            struct check_plan *plans, struct write_cols *w)
{
	PGresult *res = NULL;
	int rc;

	if (w->answers == 0)
		return 0;
	if ((rc = db_cols_exec(db, &w->c, &res)) == 0)
		rc = group_ids(res, calls, n, plans, w->answers);
	PQclear(res);
	return rc;
}

/* Gives back the leases of the orders in a (st_release_all), if any. */
static int
release_orders(struct kasir_db *db, struct db_array *a)
{
	const char *p[1];

	if (a->n == 0)
		return 0;
	if ((p[0] = db_array_text(a)) == NULL)
		return -ENOMEM;
	return db_exec(db, &st_release_all, p, NULL);
}

/* The status.check messages of what is published (appends: deferred by
 * record_fast, at once in record_all's transaction), counters and log
 * lines; *ret_kick is set when something was published. */
static int
group_publish(struct recon *r, struct kasir_db *db,
              struct statusapi_call **calls, size_t n,
              const struct check_plan *plans, bool *ret_kick)
{
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		struct statusapi_call *c = calls[i];

		if (c->nanswers == 0)
			continue;
		if (plans[i].published &&
		    (rc = publish(r, db, plans[i].id, c,
		                  &c->answers[c->nanswers - 1],
		                  plans[i].past_expiry[c->nanswers - 1])) < 0)
			break;
		check_recorded(r, c, &plans[i]);
		*ret_kick = *ret_kick || plans[i].published;
	}
	return rc;
}

/*
 * Stores the answers of n checks and reschedules their orders in the
 * caller's transaction with array statements: every watch row locked in
 * one statement (st_lock), every plan decided from them (plan_check),
 * every answer inserted and every row rescheduled in a second (st_write),
 * then the status.check messages of what is published.  Two statements
 * for the group instead of two plus one per answer per check: at 500
 * payments/s those were most of the lanes' statements.  On failure the
 * caller rolls back: record_fast()'s caller records the checks the
 * careful way, one check (a group of one) under a savepoint each.
 */
static int
record_chunk(struct recon *r, struct kasir_db *db,
             struct statusapi_call **calls, size_t n, bool *ret_kick)
{
	struct check_plan *plans = calloc(n > 0 ? n : 1, sizeof(*plans));
	struct write_cols w = {.c = {.stmt = &st_write}};
	struct db_array release = {0};
	int rc;

	if (plans == NULL)
		return -ENOMEM;
	rc = group_has_twins(calls, n) ? KASIR_ECONFLICT
	                               : lock_watches(db, calls, n, plans);
	if (rc == 0) {
		group_fill(r, calls, n, plans, now_real_ms(), &w, &release);
		rc = group_write(db, calls, n, plans, &w);
	}
	if (rc == 0)
		rc = release_orders(db, &release);
	if (rc == 0)
		rc = group_publish(r, db, calls, n, plans, ret_kick);
	db_cols_free(&w.c);
	db_array_free(&release);
	free(plans);
	return rc;
}

/* One check, the careful way (record_all: a savepoint around each).
 * *ret_published tells the caller to kick the producer. */
static int
record(struct recon *r, struct kasir_db *db, struct statusapi_call *c,
       bool *ret_published)
{
	*ret_published = false;
	return record_chunk(r, db, &c, 1, ret_published);
}

/* At most this many checks per chunk: bounded arrays. */
#define RECORD_CHUNK 32

static int
record_group(struct recon *r, struct kasir_db *db,
             struct statusapi_call **calls, size_t n, bool *ret_kick)
{
	int rc = 0;

	*ret_kick = false;
	for (size_t off = 0; off < n && rc == 0; off += RECORD_CHUNK)
		rc = record_chunk(
		    r, db, calls + off,
		    n - off < RECORD_CHUNK ? n - off : RECORD_CHUNK, ret_kick);
	return rc;
}

/* Best effort, outside any transaction: gives back the leases of a pass
 * that could not be recorded.  If the database is still unreachable the
 * leases stay and expire (schedule.lease). */
static void
release_all(struct kasir_db *db, struct statusapi_call *const *calls, size_t n)
{
	struct db_array a = {0};
	const char *p[1];

	for (size_t i = 0; i < n; i++)
		db_array_add(&a, calls[i]->order_id);
	if ((p[0] = db_array_text(&a)) != NULL && db_ensure(db) == 0 &&
	    db_exec(db, &st_release_all, p, NULL) == 0)
		log_info("the %zu order(s) of the pass are asked again at the "
		         "next pass",
		         n);
	db_array_free(&a);
}

/* Claims due rows into calls with st (st_claim inside a transaction,
 * st_claim_alone in autocommit); *ret_n how many. */
static int
claim(struct recon *r, struct kasir_db *db, const struct db_stmt *st,
      struct statusapi_call **calls, size_t max, size_t *ret_n)
{
	char lease[24], interval[24], limit[24];
	PGresult *res = NULL;
	size_t n = 0;
	int rc;

	snprintf(lease, sizeof(lease), "%" PRId64, r->conf->lease_ms);
	snprintf(interval, sizeof(interval), "%" PRId64,
	         r->conf->mode_interval_ms);
	snprintf(limit, sizeof(limit), "%zu", max);
	{
		const char *p[4] = {
		    lease,
		    atomic_load(&r->mode) == MODE_RECONCILE ? "true" : "false",
		    interval, limit};

		if ((rc = db_exec(db, st, p, &res)) < 0)
			return rc;
	}
	for (int i = 0; i < PQntuples(res) && n < max; i++) {
		struct statusapi_call *c = calls[n];
		const char *txn = db_get(res, i, 1);
		const char *ptype = db_get(res, i, 2);

		statusapi_call_reset(c);
		kasir_strlcpy(c->order_id, db_get(res, i, 0),
		              sizeof(c->order_id));
		c->by_txn = txn != NULL && txn[0] != '\0' &&
		            strlen(txn) < sizeof(c->ident) &&
		            recon_types_has(&r->conf->by_txn_types, ptype);
		kasir_strlcpy(c->ident, c->by_txn ? txn : c->order_id,
		              sizeof(c->ident));
		c->confirm_seq =
		    db_get(res, i, 3) != NULL ? db_get_i64(res, i, 3) : 0;
		c->created_ms = db_get_i64(res, i, 4);
		n++;
	}
	PQclear(res);
	*ret_n = n;
	return 0;
}

/*
 * The fast way to record what finished together: one transaction with no
 * savepoint per check and the recon stream appends deferred (queued in
 * memory, written with two statements right before COMMIT), the checks'
 * statements grouped (record_group: two array statements a chunk), plus
 * the refill claim when want > 0: about six round trips for the group,
 * whatever its size.
 * Returns 0 when the transaction is over (committed, or its
 * COMMIT failed: then the leases are given back as record_all does);
 * a negative code when a statement failed before COMMIT: everything was
 * rolled back and the caller records the checks the careful way.  (The
 * checks' counters and log lines of a failed try are not undone.)
 */
static int
record_fast(struct recon *r, struct kasir_db *db, struct statusapi_call **calls,
            size_t n, struct statusapi_call **slots, size_t want,
            size_t *ret_claimed, bool *ret_kick)
{
	bool kick = false, deferred;
	size_t claimed = 0;
	int rc;

	if ((rc = db_begin(db)) < 0)
		return rc;
	deferred = stream_defer_begin(r->producer, db) == 0;
	rc = record_group(r, db, calls, n, &kick);
	if (rc == 0 && want > 0)
		rc = claim(r, db, &st_claim, slots, want, &claimed);
	if (rc == 0 && deferred)
		rc = stream_defer_flush(r->producer, db);
	if (rc < 0) {
		db_rollback(db);
		if (deferred)
			stream_defer_end(r->producer, db);
		return rc;
	}
	rc = db_commit(db);
	if (deferred)
		stream_defer_end(r->producer, db);
	if (rc < 0) {
		log_warning("committing %zu status check(s) failed (%s); the "
		            "orders are asked again",
		            n, kasir_strerror(rc));
		release_all(db, calls, n); /* harmless if it did commit */
		return 0;
	}
	*ret_kick = kick;
	*ret_claimed = claimed;
	return 0;
}

/*
 * Records the n finished checks in ONE transaction (a savepoint around
 * each: one failing order is rolled back alone, its lease given back, and
 * asked again), so what finished together costs one COMMIT.  When want > 0
 * the same transaction then claims up to want due rows into slots (claim
 * under its own savepoint; *ret_claimed how many, 0 unless committed): the
 * pipeline refills its window without a COMMIT of its own.  *ret_kick:
 * something was published.  If the transaction fails as a whole, the
 * leases are given back (release_all) when the database answers, else
 * they expire after schedule.lease.
 */
static void
record_all(struct recon *r, struct kasir_db *db, struct statusapi_call **calls,
           size_t n, struct statusapi_call **slots, size_t want,
           size_t *ret_claimed, bool *ret_kick)
{
	bool kick = false;
	size_t claimed = 0;
	int rc;

	*ret_kick = false;
	*ret_claimed = 0;
	if ((rc = db_begin(db)) < 0) {
		log_warning("recording %zu status check(s) failed (%s); the "
		            "orders are asked again",
		            n, kasir_strerror(rc));
		release_all(db, calls, n);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		bool pub = false;

		if ((rc = db_savepoint(db, "recon_record")) < 0)
			break;
		rc = record(r, db, calls[i], &pub);
		if (rc < 0) {
			const char *p[1] = {calls[i]->order_id};

			log_fields(LOG_WARNING,
			           LOG_F({"ORDER_ID", calls[i]->order_id}),
			           "recording a status check failed (%s); the "
			           "order is asked again",
			           kasir_strerror(rc));
			if ((rc = db_rollback_to(db, "recon_record")) < 0 ||
			    (rc = db_exec(db, &st_release, p, NULL)) < 0)
				break;
			continue;
		}
		if ((rc = db_release(db, "recon_record")) < 0)
			break;
		kick = kick || pub;
	}
	if (rc == 0 && want > 0 &&
	    (rc = db_savepoint(db, "recon_claim")) == 0) {
		if (claim(r, db, &st_claim, slots, want, &claimed) < 0) {
			claimed = 0;
			rc = db_rollback_to(db, "recon_claim");
		} else {
			rc = db_release(db, "recon_claim");
		}
	}
	if (rc < 0) {
		db_rollback(db);
		log_warning("recording a pass of %zu status check(s) failed "
		            "(%s); the orders are asked again",
		            n, kasir_strerror(rc));
		release_all(db, calls, n);
		return;
	}
	if ((rc = db_commit(db)) < 0) {
		log_warning("committing a pass of %zu status check(s) failed "
		            "(%s); the orders are asked again",
		            n, kasir_strerror(rc));
		release_all(db, calls, n); /* harmless if it did commit */
		return;
	}
	*ret_kick = kick;
	*ret_claimed = claimed;
}

/* Auth state after a batch: broken on any 401, healed by any answer that
 * got past authentication. */
static void
auth_update(struct recon *r, struct statusapi_call *const *calls, size_t n)
{
	bool saw_401 = false, saw_ok = false;

	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < calls[i]->nanswers; k++) {
			enum recon_verdict v = calls[i]->answers[k].verdict;

			if (v == VERDICT_AUTH) {
				saw_401 = true;
				metric_inc(r->m.auth_failures);
			} else if (v != VERDICT_TIMEOUT) {
				saw_ok = true;
			}
		}
	if (saw_401) {
		atomic_store(&r->auth_paused_until,
		             now_real_ms() + r->conf->auth_pause_ms);
		if (!atomic_exchange(&r->auth_broken, true))
			log_err(
			    "status api refuses the server key (HTTP 401): "
			    "checks paused for %llds, then retried one at a "
			    "time; fix midtrans.server_key_file",
			    (long long)(r->conf->auth_pause_ms / 1000));
		metric_set(r->m.auth_broken, 1);
	} else if (saw_ok && atomic_load(&r->auth_broken)) {
		atomic_store(&r->auth_broken, false);
		atomic_store(&r->auth_paused_until, 0);
		metric_set(r->m.auth_broken, 0);
		log_notice("status api accepts the server key again, checks "
		           "resume");
	}
}

static void
wait_for_work(struct recon_lane *l, int64_t ms)
{
	struct recon *r = l->r;
	struct timespec ts;

	pthread_mutex_lock(&r->wake_lock);
	if (!l->woken && !atomic_load(&r->stopping)) {
		deadline_after_ms(CLOCK_MONOTONIC, ms, &ts);
		pthread_cond_timedwait(&r->wake, &r->wake_lock, &ts);
	}
	pthread_mutex_unlock(&r->wake_lock);
}

/* Every lane looks for work at once: the idle ones on the condition, the
 * busy ones in their client's wait (SKIP LOCKED shares the rows out). */
void
scheduler_wake(struct recon *r)
{
	pthread_mutex_lock(&r->wake_lock);
	for (int i = 0; i < r->nlanes; i++)
		r->lanes[i].woken = true;
	pthread_cond_broadcast(&r->wake);
	pthread_mutex_unlock(&r->wake_lock);
	for (int i = 0; i < r->nlanes; i++)
		if (r->lanes[i].api != NULL)
			statusapi_wakeup(r->lanes[i].api);
}

void
scheduler_wake_for(struct recon *r, unsigned n)
{
	bool chosen[RECON_LANES_MAX] = {false};
	int64_t need = n;

	pthread_mutex_lock(&r->wake_lock);
	while (need > 0) {
		int best = -1;
		size_t best_free = 0;

		for (int i = 0; i < r->nlanes; i++) {
			size_t f = atomic_load(&r->lanes[i].free_slots);

			if (!chosen[i] && (best < 0 || f > best_free)) {
				best = i;
				best_free = f;
			}
		}
		if (best < 0)
			break; /* every lane is woken */
		chosen[best] = true;
		r->lanes[best].woken = true;
		need -= best_free > 0 ? (int64_t)best_free : 1;
	}
	pthread_cond_broadcast(&r->wake);
	pthread_mutex_unlock(&r->wake_lock);
	for (int i = 0; i < r->nlanes; i++)
		if (chosen[i] && r->lanes[i].api != NULL)
			statusapi_wakeup(r->lanes[i].api);
}

/* Takes the lane's wake flag: a confirmation was requested since the last
 * look. */
static bool
take_wake(struct recon_lane *l)
{
	bool w;

	pthread_mutex_lock(&l->r->wake_lock);
	w = l->woken;
	l->woken = false;
	pthread_mutex_unlock(&l->r->wake_lock);
	return w;
}

/* The pipeline's state between iterations (scheduler thread only). */
struct pipeline {
	struct statusapi_call *calls; /* window slots */
	struct statusapi_call **free; /* slots not lent to the client */
	size_t nfree;
	struct statusapi_call **done;  /* given back by a step */
	struct statusapi_call **claim; /* slots of one claim */
	size_t window;
	int64_t next_claim_ms; /* monotonic: claim again then at the latest */
	int64_t next_mode_ms;  /* monotonic: mode_evaluate again then */
	bool claim_full;       /* the last claim got all it asked for */
	bool claim_wanted;     /* claim with the next record, or alone */
};

/* A claim wanted while requests are in flight waits this long for answers
 * to record, so that it shares their COMMIT. */
#define PIPELINE_CLAIM_DEFER_MS 2

/* Lends the n slots a claim filled (p->claim[0..n)) to the client. */
static void
pipeline_lend(struct recon_lane *l, struct pipeline *p, size_t max, size_t n)
{
	struct recon *r = l->r;

	p->claim_full = n > 0 && n == max;
	p->claim_wanted = false;
	p->next_claim_ms = now_mono_ms() + r->conf->poll_ms;
	for (size_t i = 0; i < n; i++) {
		/* cannot fail: the window is at most RECON_BATCH_MAX */
		(void)statusapi_add(l->api, p->claim[i]);
		p->nfree--;
	}
	atomic_store(&l->free_slots, p->nfree);
}

/* How many rows the next claim asks for (into p->claim), 0 for none. */
static size_t
pipeline_claim_slots(struct recon_lane *l, struct pipeline *p)
{
	struct recon *r = l->r;
	/* while the key is refused: one order at a time */
	size_t max = atomic_load(&r->auth_broken) ? 1 : p->nfree;

	if (atomic_load(&r->auth_broken) && statusapi_held(l->api) > 0)
		return 0;
	if (max > p->nfree)
		max = p->nfree;
	for (size_t i = 0; i < max; i++)
		p->claim[i] = p->free[p->nfree - 1 - i];
	return max;
}

/* A claim in a transaction of its own (st_claim_alone). */
static int
claim_alone(struct recon *r, struct kasir_db *db, struct statusapi_call **slots,
            size_t max, size_t *ret_n)
{
	int rc;

	*ret_n = 0;
	if ((rc = db_ensure(db)) < 0)
		return rc;
	return claim(r, db, &st_claim_alone, slots, max, ret_n);
}

/* A claim on its own, when nothing is to be recorded. */
static void
pipeline_claim(struct recon_lane *l, struct pipeline *p)
{
	struct recon *r = l->r;
	struct kasir_db *db = l->db;
	size_t max = pipeline_claim_slots(l, p), n = 0;

	if (max == 0) {
		/* nothing may be claimed now (a probe of a refused key is
		 * in flight): wait for answers, not in a 2 ms loop */
		p->claim_wanted = false;
		p->claim_full = false;
		return;
	}
	statusapi_resume(l->api);
	if (claim_alone(r, db, p->claim, max, &n) < 0)
		n = 0;
	pipeline_lend(l, p, max, n);
}

/* Records the calls a step gave back (one transaction, which also claims
 * when a claim is wanted), then returns their slots. */
static void
pipeline_record(struct recon_lane *l, struct pipeline *p, size_t nd)
{
	struct recon *r = l->r;
	struct kasir_db *db = l->db;
	size_t max = 0, n = 0;
	bool kick = false;

	bool paused;

	auth_update(r, p->done, nd);
	/* not after a 401 just now: auth_update paused the checks */
	paused = now_real_ms() < atomic_load(&r->auth_paused_until);
	if (p->claim_wanted && !paused)
		max = pipeline_claim_slots(l, p);
	if (max > 0)
		statusapi_resume(l->api);
	if (record_fast(r, db, p->done, nd, p->claim, max, &n, &kick) < 0)
		record_all(r, db, p->done, nd, p->claim, max, &n, &kick);
	if (max > 0)
		pipeline_lend(l, p, max, n);
	else if (paused)
		p->claim_wanted = false;
	/* else a full window: the claim stays wanted for the slots freed
	 * below (a wake is never lost) */
	for (size_t i = 0; i < nd; i++) {
		struct statusapi_call *c = p->done[i];

		if (c->nanswers > 0)
			atomic_store(&r->last_check_ms,
			             c->answers[c->nanswers - 1].at_ms);
		statusapi_call_reset(c);
		p->free[p->nfree++] = c;
	}
	atomic_store(&l->free_slots, p->nfree);
	if (kick)
		stream_producer_kick(r->producer);
}

static int
pipeline_init(struct pipeline *p, size_t window)
{
	memset(p, 0, sizeof(*p));
	p->window = window;
	p->calls = calloc(window, sizeof(*p->calls));
	p->free = calloc(window, sizeof(*p->free));
	p->done = calloc(window, sizeof(*p->done));
	p->claim = calloc(window, sizeof(*p->claim));
	if (p->calls == NULL || p->free == NULL || p->done == NULL ||
	    p->claim == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < window; i++)
		p->free[i] = &p->calls[window - 1 - i];
	p->nfree = window;
	return 0;
}

static void
pipeline_fini(struct pipeline *p)
{
	if (p->calls != NULL)
		for (size_t i = 0; i < p->window; i++)
			statusapi_call_reset(&p->calls[i]);
	free(p->calls);
	free(p->free);
	free(p->done);
	free(p->claim);
}

/*
 * The scheduler thread: a rolling pipeline.  Up to schedule.batch claimed
 * orders are held at once (the window), at most midtrans.concurrency of
 * them in flight; each check is recorded as soon as its answer arrives
 * (what finished together is recorded in one transaction) and its slot is
 * refilled by the next claim, so requests stay in flight continuously and
 * a slow answer holds back nobody.  A claim runs when slots are free and
 * a confirmation was requested (scheduler_wake), the last claim was full,
 * or schedule.poll passed.  Stopping: no new request; those in flight are
 * answered and recorded, the rest given back.
 */
static void *
scheduler_main(void *arg)
{
	struct recon_lane *l = arg;
	struct recon *r = l->r;
	struct kasir_db *db = l->db;
	struct pipeline p;
	bool db_down = false;

	if (pipeline_init(&p, l->window) < 0) {
		log_err("scheduler lane %d: out of memory, it runs no checks",
		        l->index);
		pipeline_fini(&p);
		return NULL;
	}
	atomic_store(&l->free_slots, p.nfree);
	while (!atomic_load(&r->stopping) || statusapi_held(l->api) > 0) {
		bool stopping = atomic_load(&r->stopping), paused;
		int64_t now = now_mono_ms(), pu, wait;
		size_t nd = 0;

		if (stopping)
			statusapi_halt(l->api);
		if (db_ensure(db) < 0) {
			if (!db_down)
				log_warning("scheduler lane %d: database "
				            "unreachable, checks wait",
				            l->index);
			db_down = true;
		} else {
			if (db_down)
				log_info("scheduler lane %d: database "
				         "reachable again",
				         l->index);
			db_down = false;
			/* the mode is one decision: lane 0 makes it */
			if (l->index == 0 && now >= p.next_mode_ms) {
				mode_evaluate(r, db);
				p.next_mode_ms = now + r->conf->poll_ms;
			}
		}
		pu = atomic_load(&r->auth_paused_until);
		paused = pu > 0 && now_real_ms() < pu;
		if (take_wake(l) || p.claim_full || now >= p.next_claim_ms)
			p.claim_wanted = true;
		if (paused || stopping || db_down)
			p.claim_wanted = false;
		if (statusapi_held(l->api) == 0) {
			if (p.claim_wanted) /* nfree == window here */
				pipeline_claim(l, &p);
			if (statusapi_held(l->api) == 0) {
				/* idle: until the next claim or a wake */
				wait = p.next_claim_ms - now_mono_ms();
				if (paused && pu - now_real_ms() < wait)
					wait = pu - now_real_ms();
				if (!stopping)
					wait_for_work(l, wait < 1 ? 1 : wait);
				continue;
			}
		}
		/* a wanted claim waits for free slots (a full window) or at
		 * most PIPELINE_CLAIM_DEFER_MS for answers to share a COMMIT */
		if (p.claim_wanted && p.nfree > 0)
			wait = PIPELINE_CLAIM_DEFER_MS;
		else if (p.nfree == 0 || paused || stopping)
			wait = r->conf->poll_ms;
		else
			wait = p.next_claim_ms - now_mono_ms();
		statusapi_step(l->api, wait < 1 ? 1 : wait, p.done, &nd);
		if (nd > 0)
			pipeline_record(l, &p, nd);
		else if (p.claim_wanted && p.nfree > 0)
			pipeline_claim(l, &p);
	}
	pipeline_fini(&p);
	return NULL;
}

int
scheduler_start(struct recon *r)
{
	int rc;

	for (int i = 0; i < r->nlanes; i++) {
		struct recon_lane *l = &r->lanes[i];

		rc = pthread_create(&l->thread, NULL, scheduler_main, l);
		if (rc != 0) {
			scheduler_stop(r);
			return -rc;
		}
		l->started = true;
	}
	return 0;
}

void
scheduler_stop(struct recon *r)
{
	atomic_store(&r->stopping, true);
	scheduler_wake(r);
	for (int i = 0; i < r->nlanes; i++) {
		struct recon_lane *l = &r->lanes[i];

		if (!l->started)
			continue;
		pthread_join(l->thread, NULL);
		l->started = false;
	}
}
