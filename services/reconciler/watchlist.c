/*
 * watchlist.c - the watch list (recon.watch), built from the "orders"
 * stream.
 *
 * watchlist_apply() is the apply callback of the orders stream consumer:
 * it runs inside the consumer's transaction together with the cursor
 * advance, so every order event changes the watch list exactly once.
 * watchlist_apply_batch() does the same for a whole batch with its
 * statements pipelined (the consumer's optimistic pass).
 *
 *   order.created   -> a watch row: PENDING, next check = first check
 *                      (schedule.c), no attempts yet
 *   order.evidence  -> transaction id / payment type learned; what the
 *                      evidence said (the "says something new" filter);
 *                      for webhook notifications (source "ingest") the
 *                      time they arrived: per order and globally (the
 *                      automatic reconciliation mode, mode.c).  Evidence
 *                      that made a transition says this on the
 *                      transition's event instead (below)
 *   confirm.request -> kasir-order holds a notification until the Status
 *                      API confirms it: ask now (even a final order),
 *                      the answer is published whatever it says
 *   order.paid, order.failed, order.expired, order.cancelled,
 *   order.refunded  -> final: the row leaves the schedule; and what the
 *                      evidence of the transition said, as order.evidence
 *   anything else   -> nothing to do
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
#include "message.h"
#include "reconciler.h"
#include "util.h"

/* Real-time ms of an RFC 3339 time ("2026-11-23T09:33:19.123Z",
 * "...+07:00").  -EINVAL when it does not parse. */
static int
rfc3339_ms(const char *s, int64_t *ret)
{
	struct tm tm;
	int y, mo, d, h, mi, sec, n = 0, off = 0;
	int64_t ms = 0, t;
	const char *p;

	if (s == NULL ||
	    sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec,
	           &n) != 6 ||
	    n == 0)
		return -EINVAL;
	p = s + n;
	if (*p == '.') {
		int digits = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*p - '0');
		for (; digits < 3; digits++)
			ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int oh = (p[1] - '0') * 10 + (p[2] - '0');
		int om = (p[4] - '0') * 10 + (p[5] - '0');

		off = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
		p += 6;
	} else {
		return -EINVAL;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60)
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = (int64_t)timegm(&tm);
	*ret = (t - off) * 1000 + ms;
	return 0;
}

static const struct db_stmt st_created = {
    .name = "recon_watch_created",
    .sql = "INSERT INTO recon.watch (order_id, created_at, expires_at,"
           " status, next_check_at, transaction_id, orders_seq)"
           " VALUES ($1, $2::timestamptz, $3::timestamptz, $4,"
           "  to_timestamp($5::bigint / 1000.0), $6, $7::bigint)"
           " ON CONFLICT (order_id) DO NOTHING",
    .nparams = 7,
};

static const struct db_stmt st_final = {
    .name = "recon_watch_final",
    .sql = "INSERT INTO recon.watch (order_id, created_at, expires_at,"
           " status, final, final_at, next_check_at, transaction_id,"
           " orders_seq)"
           " VALUES ($1, $2::timestamptz, $3::timestamptz, $4, true, now(),"
           "  now(), $5, $6::bigint)"
           " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
           "  final = true, final_at = coalesce(recon.watch.final_at, now()),"
           "  transaction_id = coalesce(recon.watch.transaction_id,"
           "   EXCLUDED.transaction_id),"
           "  orders_seq = EXCLUDED.orders_seq, updated_at = now()",
    .nparams = 6,
};

/* $4: the key of what the evidence said; $5: received_at when it was a
 * webhook notification (NULL otherwise).  heard keeps the keys the
 * order's notifications said (at most 16, for operators).  Only the
 * first notification an order ever hears is news: it moves news_at,
 * which the automatic mode's "webhooks flow" reads (st_ingest_seen).
 * A replay says nothing new, and neither does a genuine body with its
 * unsigned transaction_status rewritten: counting every new key let one
 * body count seven times, each status its signed status_code allows (an
 * attack on 000cd50, 2026-12-07: the mode kept off for 14 s instead of
 * 3, ended in 0.2 s).  SET sees the row as it was. */
#define WATCH_HEARD_NEW                                                        \
	"$5::timestamptz IS NOT NULL AND $4::text IS NOT NULL"                 \
	" AND NOT ($4::text = ANY (heard)) AND cardinality(heard) < 16"
#define WATCH_NEWS                                                             \
	"$5::timestamptz IS NOT NULL AND $4::text IS NOT NULL"                 \
	" AND cardinality(heard) = 0"
static const struct db_stmt st_evidence = {
    .name = "recon_watch_evidence",
    .sql = "UPDATE recon.watch SET"
           " transaction_id = coalesce(transaction_id, $2),"
           " payment_type = coalesce($3, payment_type),"
           " last_key = coalesce($4, last_key),"
           " last_notification_at = CASE WHEN $5::timestamptz IS NULL"
           "  THEN last_notification_at"
           "  ELSE greatest(last_notification_at, $5::timestamptz) END,"
           " heard = CASE WHEN " WATCH_HEARD_NEW " THEN heard || $4::text"
           "  ELSE heard END,"
           " news_at = CASE WHEN " WATCH_NEWS
           "  THEN greatest(news_at, $5::timestamptz) ELSE news_at END,"
           " orders_seq = $6::bigint, updated_at = now()"
           " WHERE order_id = $1",
    .nparams = 6,
};

/* $1: the orders whose webhook notifications a batch applied.  One
 * primary key lookup per order: "order_id = ANY ($1)" let a plan made
 * while recon.watch was empty scan the whole table at every batch (4.7
 * ms a call at 300 payments/s, pg_stat_statements). */
static const struct db_stmt st_ingest_seen = {
    .name = "recon_settings_ingest_seen",
    .sql = "UPDATE recon.settings SET last_ingest_at ="
           " greatest(last_ingest_at, (SELECT max((SELECT w.news_at"
           "  FROM recon.watch w WHERE w.order_id = u.id))"
           "  FROM unnest($1::text[]) AS u(id))), updated_at = now()"
           " WHERE id = 1",
    .nparams = 1,
};

/* $2: the request's orders seq.  The failure count restarts: the retry
 * backoff of a confirmation starts short.  The transaction id a watch
 * row learned first stays: a held claim is unsigned, and letting the
 * latest one choose what is asked let a forged claim displace the
 * genuine id (an outside attack, 2026-12-07: a paid order left
 * waiting). */
static const struct db_stmt st_confirm = {
    .name = "recon_watch_confirm",
    .sql = "INSERT INTO recon.watch (order_id, created_at, expires_at,"
           " status, next_check_at, transaction_id, orders_seq, confirm_seq,"
           " confirm_since)"
           " VALUES ($1, $3::timestamptz, $4::timestamptz, $5, now(), $6,"
           "  $2::bigint, $2::bigint, now())"
           " ON CONFLICT (order_id) DO UPDATE SET"
           "  confirm_seq = EXCLUDED.confirm_seq,"
           "  confirm_since = coalesce(recon.watch.confirm_since, now()),"
           "  next_check_at = least(recon.watch.next_check_at, now()),"
           "  failures = 0, orders_seq = EXCLUDED.orders_seq,"
           "  updated_at = now()",
    .nparams = 6,
};

/*
 * How an apply function runs its statements: at once (x == NULL: the
 * careful pass, one message at a time) or queued on the connection's
 * pipeline (watchlist_apply_batch: results read at each sync).  Every
 * statement's parameters are known before it is sent, and none of the
 * apply functions reads a result, so both ways do the same writes in the
 * same order.
 */
struct wl_exec {
	struct db_batch b;
	/* the orders of the batch's webhook notifications: recon.settings'
	 * one row is updated once per batch, not once per message (every
	 * update holds that row until COMMIT, and mode_evaluate() reads it) */
	struct db_array notified;
};

static int
wl_exec(struct wl_exec *x, struct kasir_db *db, const struct db_stmt *st,
        const char *const *p)
{
	return db_batch_exec(x != NULL ? &x->b : NULL, db, st, p);
}

/* Moves recon.settings.last_ingest_at for the orders named (the orders of
 * webhook notifications just applied: st_ingest_seen). */
static int
ingest_seen(struct wl_exec *x, struct kasir_db *db, struct db_array *orders)
{
	const char *p[1] = {db_array_text(orders)};

	return p[0] != NULL ? wl_exec(x, db, &st_ingest_seen, p) : -ENOMEM;
}

/* An unsigned identifier of a message (a transaction id, a payment type:
 * a notification's fields, carried by kasir-order), or NULL when
 * recon.watch could not hold it: no such value is one Midtrans sends,
 * it is never queried by, and it must not stop the stream. */
static const char *
watch_ident(const struct kasir_msg *msg, const char *name)
{
	const char *v = msg_str(msg, name);

	return v != NULL && strlen(v) < RECON_ID_MAX ? v : NULL;
}

static int
apply_confirm(struct recon *r, struct kasir_db *db, const struct kasir_msg *msg,
              const char *seq, struct wl_exec *x)
{
	const char *p[6] = {
	    msg_str(msg, "order_id"),   seq,
	    msg_str(msg, "created_at"), msg_str(msg, "expires_at"),
	    msg_str(msg, "status"),     watch_ident(msg, "transaction_id")};
	int rc;

	/* an order the watch list has not seen (the reconciler was added
	 * later) is watched from here on */
	if ((rc = wl_exec(x, db, &st_confirm, p)) < 0)
		return rc;
	atomic_fetch_add(&r->confirm_waiting, 1);
	log_fields(
	    LOG_INFO,
	    LOG_F({"ORDER_ID", p[0]}, {"STREAM", "orders"}, {"SEQ", seq}),
	    "confirmation asked: the notification said %s",
	    msg_str(msg, "transaction_status"));
	return 0;
}

void
watchlist_committed(void *arg)
{
	struct recon *r = arg;

	unsigned n = atomic_exchange(&r->confirm_waiting, 0);

	if (n > 0)
		scheduler_wake_for(r, n);
}

static bool
is_final_type(enum msg_type t)
{
	return t == MSG_ORDER_PAID || t == MSG_ORDER_FAILED ||
	       t == MSG_ORDER_EXPIRED || t == MSG_ORDER_CANCELLED ||
	       t == MSG_ORDER_REFUNDED;
}

static int
apply_created(struct recon *r, struct kasir_db *db, const struct kasir_msg *msg,
              const char *seq, struct wl_exec *x)
{
	const char *order_id = msg_str(msg, "order_id");
	const char *created = msg_str(msg, "created_at");
	const char *expires = msg_str(msg, "expires_at");
	struct sched_order o = {0};
	char next[24];

	if (rfc3339_ms(created, &o.created_ms) < 0 ||
	    rfc3339_ms(expires, &o.expires_ms) < 0) {
		log_fields(LOG_ERR,
		           LOG_F({"ORDER_ID", order_id}, {"STREAM", "orders"},
		                 {"SEQ", seq}),
		           "order.created with unusable times, refused");
		return KASIR_EREJECT;
	}
	snprintf(next, sizeof(next), "%" PRId64,
	         sched_first_check(&r->sched, &o));
	{
		const char *p[7] = {order_id, created,
		                    expires,  msg_str(msg, "status"),
		                    next,     msg_str(msg, "transaction_id"),
		                    seq};

		return wl_exec(x, db, &st_created, p);
	}
}

static int
apply_evidence(struct kasir_db *db, const struct kasir_msg *msg,
               const char *seq, struct wl_exec *x)
{
	const cJSON *ev = msg_obj(msg, "evidence");
	const cJSON *src = cJSON_GetObjectItemCaseSensitive(ev, "source");
	const char *ts = msg_str(msg, "transaction_status");
	const char *received = msg_str(msg, "received_at");
	const char *txn = watch_ident(msg, "transaction_id");
	const char *ptype = watch_ident(msg, "payment_type");
	bool ingest =
	    cJSON_IsString(src) && strcmp(src->valuestring, "ingest") == 0;
	char key[RECON_FIELD_MAX + 16];
	int64_t ms;
	int rc;

	if (ingest && rfc3339_ms(received, &ms) < 0) {
		log_fields(LOG_WARNING,
		           LOG_F({"ORDER_ID", msg_str(msg, "order_id")},
		                 {"STREAM", "orders"}, {"SEQ", seq}),
		           "order.evidence with unusable received_at, "
		           "not counted as a notification");
		ingest = false;
	}
	/* the key of what it said, as evidence.c writes it for answers;
	 * recon evidence carries the verdict name for 404/407, which the
	 * scheduler recorded itself when it published the check */
	key[0] = '\0';
	if (ts != NULL && strlen(ts) < RECON_FIELD_MAX &&
	    strcmp(ts, "expired") != 0 && strcmp(ts, "not_found") != 0)
		snprintf(key, sizeof(key), "status:%s", ts);
	{
		const char *p[6] = {
		    msg_str(msg, "order_id"), txn, ptype, key[0] ? key : NULL,
		    ingest ? received : NULL, seq};

		if ((rc = wl_exec(x, db, &st_evidence, p)) < 0)
			return rc;
	}
	if (ingest && x != NULL) {
		db_array_add(&x->notified, msg_str(msg, "order_id"));
	} else if (ingest) {
		struct db_array one = {0};

		db_array_add(&one, msg_str(msg, "order_id"));
		rc = ingest_seen(NULL, db, &one);
		db_array_free(&one);
		return rc;
	}
	return 0;
}

static int
apply_final(struct kasir_db *db, const struct kasir_msg *msg, const char *seq,
            struct wl_exec *x)
{
	const char *p[6] = {
	    msg_str(msg, "order_id"),           msg_str(msg, "created_at"),
	    msg_str(msg, "expires_at"),         msg_str(msg, "status"),
	    watch_ident(msg, "transaction_id"), seq};
	int rc;

	rc = wl_exec(x, db, &st_final, p);
	if (rc == 0)
		log_fields(LOG_INFO,
		           LOG_F({"ORDER_ID", p[0]}, {"STREAM", "orders"},
		                 {"SEQ", seq}),
		           "order %s is final (%s), leaves the schedule", p[0],
		           p[3]);
	return rc;
}

static int
apply_one(struct recon *r, struct kasir_db *db, const struct kasir_msg *msg,
          struct wl_exec *x)
{
	char seq[24];
	int rc;

	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	if ((msg->type == MSG_ORDER_CREATED ||
	     msg->type == MSG_ORDER_EVIDENCE ||
	     msg->type == MSG_CONFIRM_REQUEST || is_final_type(msg->type)) &&
	    !order_id_valid(msg_str(msg, "order_id"), 50)) {
		log_fields(LOG_ERR, LOG_F({"STREAM", "orders"}, {"SEQ", seq}),
		           "%s with an invalid order id, refused",
		           msg_type_name(msg->type));
		return KASIR_EREJECT;
	}
	if (msg->type == MSG_ORDER_CREATED)
		rc = apply_created(r, db, msg, seq, x);
	else if (msg->type == MSG_ORDER_EVIDENCE)
		rc = apply_evidence(db, msg, seq, x);
	else if (msg->type == MSG_CONFIRM_REQUEST)
		rc = apply_confirm(r, db, msg, seq, x);
	else if (is_final_type(msg->type)) {
		rc = apply_final(db, msg, seq, x);
		/* the transition's event says what its evidence said (there
		 * is no order.evidence for it); older ones do not */
		if (rc == 0 && msg_str(msg, "received_at") != NULL)
			rc = apply_evidence(db, msg, seq, x);
	} else
		return 0; /* access.*, order.flagged: not the watch list's */
	if (rc == KASIR_ESQL && (strncmp(db_last_sqlstate(db), "22", 2) == 0 ||
	                         strcmp(db_last_sqlstate(db), "23502") == 0 ||
	                         strcmp(db_last_sqlstate(db), "23514") == 0)) {
		/* data exception (a time that does not parse...), a value
		 * a CHECK or NOT NULL refuses: this message can never be
		 * applied, and retrying it would stop the stream for good */
		log_fields(LOG_ERR,
		           LOG_F({"ORDER_ID", msg_str(msg, "order_id")},
		                 {"STREAM", "orders"}, {"SEQ", seq}),
		           "%s refused by the database: %s",
		           msg_type_name(msg->type), db_last_error(db));
		return KASIR_EREJECT;
	}
	return rc;
}

int
watchlist_apply(void *arg, struct kasir_db *db, const struct kasir_msg *msg)
{
	return apply_one(arg, db, msg, NULL);
}

int
watchlist_apply_batch(void *arg, struct kasir_db *db,
                      const struct kasir_msg *const *msgs, size_t n)
{
	static const struct db_stmt *const stmts[] = {
	    &st_created, &st_evidence, &st_ingest_seen, &st_confirm, &st_final};
	struct wl_exec x = {0};
	int rc;

	if ((rc = db_pipe_begin(db, stmts, sizeof(stmts) / sizeof(*stmts))) < 0)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		/* a refusal (KASIR_EREJECT) too sends the batch to the
		 * careful pass, which poisons exactly that message */
		rc = apply_one(arg, db, msgs[i], &x);
	}
	if (rc == 0 && x.notified.n > 0)
		rc = ingest_seen(&x, db, &x.notified);
	if (rc == 0)
		rc = db_batch_sync(&x.b, db);
	db_pipe_end(db);
	db_array_free(&x.notified);
	return rc;
}
