/*
 * watchlist.c - the watch list (recon.watch), built from the "orders"
 * stream.
 *
 * watchlist_apply() is the apply callback of the orders stream consumer:
 * it runs inside the consumer's transaction together with the cursor
 * advance, so every order event changes the watch list exactly once.
 * watchlist_apply_batch() does the same for a whole batch (the consumer's
 * optimistic pass): in rounds of at most one message per order, each kind
 * of write one array statement per round, pipelined.  Both run the same
 * statements (one message is a round of one).
 *
 *   order.created   -> a watch row: PENDING, next check = first check
 *                      (schedule.c), no attempts yet
 *   order.evidence  -> transaction id / payment type learned; what the
 *                      evidence said, which the "says something new"
 *                      filter compares answers with only when kasir-order
 *                      applied it (not flagged, ignored or a no-op);
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

/*
 * The statements: each takes arrays, one element per message, so one
 * message (the careful pass) and a whole round of a batch (below) run the
 * same SQL.  Every statement names an order at most once (a round).
 */
static const struct db_stmt st_created = {
    .name = "recon_watch_created",
    .sql = "INSERT INTO recon.watch (order_id, created_at, expires_at,"
           " status, next_check_at, transaction_id, orders_seq)"
           " SELECT u.id, u.created, u.expires, u.status,"
           "  to_timestamp(u.next / 1000.0), u.txn, u.seq"
           " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[],"
           "  $4::text[], $5::bigint[], $6::text[], $7::bigint[])"
           "  AS u(id, created, expires, status, next, txn, seq)"
           " ON CONFLICT (order_id) DO NOTHING",
    .nparams = 7,
};

static const struct db_stmt st_final = {
    .name = "recon_watch_final",
    .sql = "INSERT INTO recon.watch (order_id, created_at, expires_at,"
           " status, final, final_at, next_check_at, transaction_id,"
           " orders_seq)"
           " SELECT u.id, u.created, u.expires, u.status, true, now(),"
           "  now(), u.txn, u.seq"
           " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[],"
           "  $4::text[], $5::text[], $6::bigint[])"
           "  AS u(id, created, expires, status, txn, seq)"
           " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
           "  final = true, final_at = coalesce(recon.watch.final_at, now()),"
           "  transaction_id = coalesce(recon.watch.transaction_id,"
           "   EXCLUDED.transaction_id),"
           "  orders_seq = EXCLUDED.orders_seq, updated_at = now()",
    .nparams = 6,
};

/* u.key: the key of what the evidence said, last_key only when u.applied
 * (kasir-order applied it); u.received: received_at when
 * it was a webhook notification (NULL otherwise).  heard keeps the keys
 * the order's notifications said (at most 16, for operators).  Only the
 * first notification an order ever hears is news: it moves news_at,
 * which the automatic mode's "webhooks flow" reads (st_ingest_seen).
 * A replay says nothing new, and neither does a genuine body with its
 * unsigned transaction_status rewritten: counting every new key let one
 * body count seven times, each status its signed status_code allows (an
 * attack on 000cd50, 2026-12-07: the mode kept off for 14 s instead of
 * 3, ended in 0.2 s).  SET sees the row as it was. */
#define WATCH_HEARD_NEW                                                        \
	"u.received IS NOT NULL AND u.key IS NOT NULL"                         \
	" AND NOT (u.key = ANY (w.heard)) AND cardinality(w.heard) < 16"
#define WATCH_NEWS                                                             \
	"u.received IS NOT NULL AND u.key IS NOT NULL"                         \
	" AND cardinality(w.heard) = 0"
static const struct db_stmt st_evidence = {
    .name = "recon_watch_evidence",
    .sql = "UPDATE recon.watch w SET"
           " transaction_id = coalesce(w.transaction_id, u.txn),"
           " payment_type = coalesce(u.ptype, w.payment_type),"
           " last_key = CASE WHEN u.applied THEN coalesce(u.key, w.last_key)"
           "  ELSE w.last_key END,"
           " last_notification_at = CASE WHEN u.received IS NULL"
           "  THEN w.last_notification_at"
           "  ELSE greatest(w.last_notification_at, u.received) END,"
           " heard = CASE WHEN " WATCH_HEARD_NEW " THEN w.heard || u.key"
           "  ELSE w.heard END,"
           " news_at = CASE WHEN " WATCH_NEWS
           "  THEN greatest(w.news_at, u.received) ELSE w.news_at END,"
           " orders_seq = u.seq, updated_at = now()"
           " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
           "  $5::timestamptz[], $6::bigint[], $7::bool[])"
           "  AS u(id, txn, ptype, key, received, seq, applied)"
           " WHERE w.order_id = u.id",
    .nparams = 7,
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

/* u.seq: the request's orders seq.  The failure count restarts: the retry
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
           " SELECT u.id, u.created, u.expires, u.status, now(), u.txn,"
           "  u.seq, u.seq, now()"
           " FROM unnest($1::text[], $2::bigint[], $3::timestamptz[],"
           "  $4::timestamptz[], $5::text[], $6::text[])"
           "  AS u(id, seq, created, expires, status, txn)"
           " ON CONFLICT (order_id) DO UPDATE SET"
           "  confirm_seq = EXCLUDED.confirm_seq,"
           "  confirm_since = coalesce(recon.watch.confirm_since, now()),"
           "  next_check_at = least(recon.watch.next_check_at, now()),"
           "  failures = 0, orders_seq = EXCLUDED.orders_seq,"
           "  updated_at = now()",
    .nparams = 6,
};

/*
 * One round of writes: at most one message per order, each kind of write
 * one array statement (rows in message order), run by round_flush() at
 * once (b == NULL: the careful pass, one message) or queued on the
 * connection's pipeline (watchlist_apply_batch: errors read at each
 * sync).  None of the statements reads a result back, so both ways do the
 * same writes.
 */
struct wl_exec {
	struct db_batch *b;
	struct db_cols created, confirm, final, evidence; /* db.h */
	/* the orders of the webhook notifications applied: recon.settings'
	 * one row is updated once per batch, not once per message (every
	 * update holds that row until COMMIT, and mode_evaluate() reads it) */
	struct db_array notified;
};

static void
cols_add(struct db_cols *c, const struct db_stmt *st, const char *const *v)
{
	c->stmt = st;
	db_cols_row(c, v);
}

/* Runs (or queues) c's statement with its rows, if it has any, and
 * empties c. */
static int
cols_flush(struct wl_exec *x, struct kasir_db *db, struct db_cols *c)
{
	const char *p[DB_COLS_MAX];
	int rc;

	if (c->rows == 0)
		return 0;
	rc = db_cols_params(c, p);
	if (rc == 0)
		rc = db_batch_exec(x->b, db, c->stmt, p);
	db_cols_free(c);
	return rc;
}

/* The round's statements.  A final message's evidence (below) comes
 * after its final row, as one message at a time; the other kinds name
 * other orders. */
static int
round_flush(struct wl_exec *x, struct kasir_db *db)
{
	int rc;

	if ((rc = cols_flush(x, db, &x->created)) < 0 ||
	    (rc = cols_flush(x, db, &x->confirm)) < 0 ||
	    (rc = cols_flush(x, db, &x->final)) < 0)
		return rc;
	return cols_flush(x, db, &x->evidence);
}

static void
wl_exec_free(struct wl_exec *x)
{
	db_cols_free(&x->created);
	db_cols_free(&x->confirm);
	db_cols_free(&x->final);
	db_cols_free(&x->evidence);
	db_array_free(&x->notified);
}

/* Moves recon.settings.last_ingest_at for the orders of the webhook
 * notifications applied (st_ingest_seen), if any. */
static int
ingest_seen(struct wl_exec *x, struct kasir_db *db)
{
	const char *p[1];

	if (x->notified.n == 0)
		return 0;
	if ((p[0] = db_array_text(&x->notified)) == NULL)
		return -ENOMEM;
	return db_batch_exec(x->b, db, &st_ingest_seen, p);
}

/* An unsigned identifier of a message (a transaction id, a payment type:
 * a notification's fields, carried by kasir-order), or NULL when
 * recon.watch could not hold it: no such value is one Midtrans sends,
 * it is never queried by, and it must not stop the stream. */
static const char *
ident_ok(const char *v)
{
	return v != NULL && strlen(v) < RECON_ID_MAX ? v : NULL;
}

static const char *
watch_ident(const struct kasir_msg *msg, const char *name)
{
	return ident_ok(msg_str(msg, name));
}

static void
add_confirm(const struct kasir_msg *msg, const char *seq, struct wl_exec *x)
{
	/* an order the watch list has not seen (the reconciler was added
	 * later) is watched from here on */
	const char *p[6] = {
	    msg_str(msg, "order_id"),   seq,
	    msg_str(msg, "created_at"), msg_str(msg, "expires_at"),
	    msg_str(msg, "status"),     watch_ident(msg, "transaction_id")};

	cols_add(&x->confirm, &st_confirm, p);
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

/* The messages the watch list applies (access.*, order.flagged... are
 * not its). */
static bool
is_watch_type(enum msg_type t)
{
	return t == MSG_ORDER_CREATED || t == MSG_ORDER_EVIDENCE ||
	       t == MSG_CONFIRM_REQUEST || is_final_type(t);
}

static int
add_created(struct recon *r, const struct kasir_msg *msg, const char *seq,
            struct wl_exec *x)
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

		cols_add(&x->created, &st_created, p);
	}
	return 0;
}

/* A field of what evidence said: the message's own (order.evidence, a
 * transition's event) or its "said" object's (confirm.request). */
static const char *
said_str(const struct kasir_msg *msg, const cJSON *said, const char *name)
{
	const cJSON *v;

	if (said == NULL)
		return msg_str(msg, name);
	v = cJSON_GetObjectItemCaseSensitive(said, name);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* What a piece of evidence said, as msg (said NULL) or its "said" object
 * carries it. */
static void
add_evidence(const struct kasir_msg *msg, const cJSON *said, const char *seq,
             struct wl_exec *x)
{
	const cJSON *ev = msg_obj(msg, "evidence");
	const cJSON *src = cJSON_GetObjectItemCaseSensitive(ev, "source");
	const char *ts = said_str(msg, said, "transaction_status");
	const char *received = said_str(msg, said, "received_at");
	bool ingest =
	    cJSON_IsString(src) && strcmp(src->valuestring, "ingest") == 0;
	/* what kasir-order applied (a transition's event, order.evidence
	 * with applied) is what it knows: the "says something new" filter
	 * compares answers with that only.  Evidence it flagged, ignored or
	 * holds must not make the Status API answer that would decide look
	 * old (an outside attack, 2026-12-08: a scheduled check's "deny" after
	 * a flagged reversal was never sent, the order kept its access). */
	bool applied = said == NULL && (msg->type != MSG_ORDER_EVIDENCE ||
	                                msg_bool(msg, "applied"));
	char key[RECON_FIELD_MAX + 16];
	int64_t ms;

	if (ingest && rfc3339_ms(received, &ms) < 0) {
		log_fields(LOG_WARNING,
		           LOG_F({"ORDER_ID", msg_str(msg, "order_id")},
		                 {"STREAM", "orders"}, {"SEQ", seq}),
		           "%s with unusable received_at, "
		           "not counted as a notification",
		           msg_type_name(msg->type));
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
		const char *p[7] = {
		    msg_str(msg, "order_id"),
		    ident_ok(said_str(msg, said, "transaction_id")),
		    ident_ok(said_str(msg, said, "payment_type")),
		    key[0] ? key : NULL,
		    ingest ? received : NULL,
		    seq,
		    applied ? "true" : "false"};

		cols_add(&x->evidence, &st_evidence, p);
	}
	if (ingest)
		db_array_add(&x->notified, msg_str(msg, "order_id"));
}

static void
add_final(const struct kasir_msg *msg, const char *seq, struct wl_exec *x)
{
	const char *p[6] = {
	    msg_str(msg, "order_id"),           msg_str(msg, "created_at"),
	    msg_str(msg, "expires_at"),         msg_str(msg, "status"),
	    watch_ident(msg, "transaction_id"), seq};

	cols_add(&x->final, &st_final, p);
	/* the transition's event says what its evidence said (there is no
	 * order.evidence for it); older ones do not */
	if (msg_str(msg, "received_at") != NULL)
		add_evidence(msg, NULL, seq, x);
}

/* Adds the writes of msg (a watch list message, is_watch_type()) to the
 * round in x. */
static int
add_one(struct recon *r, const struct kasir_msg *msg, struct wl_exec *x)
{
	char seq[24];

	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	if (msg->type == MSG_ORDER_CREATED)
		return add_created(r, msg, seq, x);
	if (msg->type == MSG_ORDER_EVIDENCE)
		add_evidence(msg, NULL, seq, x);
	else if (msg->type == MSG_CONFIRM_REQUEST) {
		/* the held notification's "said" (no order.evidence for it):
		 * after the watch row st_confirm makes (round_flush) */
		add_confirm(msg, seq, x);
		if (msg_obj(msg, "said") != NULL)
			add_evidence(msg, msg_obj(msg, "said"), seq, x);
	} else
		add_final(msg, seq, x);
	return 0;
}

/* What msg did, once its round's statements ran (or were queued): the
 * log line, and a confirmation counted for the after-COMMIT wake-up. */
static void
applied(struct recon *r, const struct kasir_msg *msg)
{
	const char *order_id = msg_str(msg, "order_id");
	char seq[24];

	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	if (msg->type == MSG_CONFIRM_REQUEST) {
		atomic_fetch_add(&r->confirm_waiting, 1);
		log_fields(LOG_INFO,
		           LOG_F({"ORDER_ID", order_id}, {"STREAM", "orders"},
		                 {"SEQ", seq}),
		           "confirmation asked: the notification said %s",
		           msg_str(msg, "transaction_status"));
	} else if (is_final_type(msg->type)) {
		log_fields(LOG_INFO,
		           LOG_F({"ORDER_ID", order_id}, {"STREAM", "orders"},
		                 {"SEQ", seq}),
		           "order %s is final (%s), leaves the schedule",
		           order_id, msg_str(msg, "status"));
	}
}

/* KASIR_EREJECT when msg's order id is not one recon.watch can hold. */
static int
check_order_id(const struct kasir_msg *msg)
{
	char seq[24];

	if (order_id_valid(msg_str(msg, "order_id"), 50))
		return 0;
	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	log_fields(LOG_ERR, LOG_F({"STREAM", "orders"}, {"SEQ", seq}),
	           "%s with an invalid order id, refused",
	           msg_type_name(msg->type));
	return KASIR_EREJECT;
}

/* rc, or KASIR_EREJECT when the database refused msg's statements for a
 * data exception (a time that does not parse...) or a value a CHECK or
 * NOT NULL refuses: this message can never be applied, and retrying it
 * would stop the stream for good. */
static int
refused(struct kasir_db *db, const struct kasir_msg *msg, int rc)
{
	char seq[24];

	if (rc != KASIR_ESQL || (strncmp(db_last_sqlstate(db), "22", 2) != 0 &&
	                         strcmp(db_last_sqlstate(db), "23502") != 0 &&
	                         strcmp(db_last_sqlstate(db), "23514") != 0))
		return rc;
	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	log_fields(LOG_ERR,
	           LOG_F({"ORDER_ID", msg_str(msg, "order_id")},
	                 {"STREAM", "orders"}, {"SEQ", seq}),
	           "%s refused by the database: %s", msg_type_name(msg->type),
	           db_last_error(db));
	return KASIR_EREJECT;
}

int
watchlist_apply(void *arg, struct kasir_db *db, const struct kasir_msg *msg)
{
	struct wl_exec x = {0}; /* b NULL: each statement at once */
	int rc;

	if (!is_watch_type(msg->type))
		return 0;
	if ((rc = check_order_id(msg)) < 0 || (rc = add_one(arg, msg, &x)) < 0)
		goto out;
	if ((rc = round_flush(&x, db)) == 0 && (rc = ingest_seen(&x, db)) == 0)
		applied(arg, msg);
	rc = refused(db, msg, rc);
out:
	wl_exec_free(&x);
	return rc;
}

/* One message of a batch, for plan_rounds(). */
struct wl_slot {
	const char *order_id;
	size_t i; /* its position in the batch */
};

static int
slot_cmp(const void *a, const void *b)
{
	const struct wl_slot *x = a, *y = b;
	int c = strcmp(x->order_id, y->order_id);

	if (c != 0)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * round[i]: the round of message i, how many messages of its order come
 * before it in the batch (-1: not the watch list's); *ret_rounds how many
 * rounds.  A round names each order at most once, so none of its array
 * statements touches a row twice (an UPDATE ... FROM would apply one of
 * two rows, an INSERT ... ON CONFLICT DO UPDATE refuses them), and the
 * rounds in turn keep each order's messages in stream order.  Orders do
 * not depend on each other (recon.settings is updated after the last
 * round).  KASIR_EREJECT for a message with an invalid order id.
 */
static int
plan_rounds(const struct kasir_msg *const *msgs, size_t n, int *round,
            int *ret_rounds)
{
	struct wl_slot *s = calloc(n > 0 ? n : 1, sizeof(*s));
	size_t m = 0;
	int rc = 0;

	*ret_rounds = 0;
	if (s == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n && rc == 0; i++) {
		round[i] = -1;
		if (is_watch_type(msgs[i]->type) &&
		    (rc = check_order_id(msgs[i])) == 0)
			s[m++] =
			    (struct wl_slot){msg_str(msgs[i], "order_id"), i};
	}
	qsort(s, m, sizeof(*s), slot_cmp);
	for (size_t j = 0; j < m && rc == 0; j++) {
		bool same =
		    j > 0 && strcmp(s[j].order_id, s[j - 1].order_id) == 0;
		int k = same ? round[s[j - 1].i] + 1 : 0;

		round[s[j].i] = k;
		if (k >= *ret_rounds)
			*ret_rounds = k + 1;
	}
	free(s);
	return rc;
}

/* Round k of the batch: its messages' writes, then what they did. */
static int
apply_round(struct recon *r, struct kasir_db *db,
            const struct kasir_msg *const *msgs, size_t n, const int *round,
            int k, struct wl_exec *x)
{
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++)
		if (round[i] == k)
			rc = add_one(r, msgs[i], x);
	if (rc == 0)
		rc = round_flush(x, db);
	for (size_t i = 0; i < n && rc == 0; i++)
		if (round[i] == k)
			applied(r, msgs[i]);
	return rc;
}

int
watchlist_apply_batch(void *arg, struct kasir_db *db,
                      const struct kasir_msg *const *msgs, size_t n)
{
	static const struct db_stmt *const stmts[] = {
	    &st_created, &st_evidence, &st_ingest_seen, &st_confirm, &st_final};
	struct db_batch b = {0};
	struct wl_exec x = {.b = &b};
	int *round = calloc(n > 0 ? n : 1, sizeof(*round));
	int rounds = 0, rc;

	if (round == NULL)
		return -ENOMEM;
	/* a refusal (KASIR_EREJECT) too sends the batch to the careful
	 * pass, which poisons exactly that message */
	if ((rc = plan_rounds(msgs, n, round, &rounds)) < 0 ||
	    (rc = db_pipe_begin(db, stmts, sizeof(stmts) / sizeof(*stmts))) < 0)
		goto out;
	for (int k = 0; k < rounds && rc == 0; k++)
		rc = apply_round(arg, db, msgs, n, round, k, &x);
	if (rc == 0)
		rc = ingest_seen(&x, db);
	if (rc == 0)
		rc = db_batch_sync(&b, db);
	db_pipe_end(db);
out:
	wl_exec_free(&x);
	free(round);
	return rc;
}
