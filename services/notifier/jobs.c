/*
 * jobs.c - from order events to notification jobs.
 *
 * jobs_apply() is the apply callback of the orders stream consumer: it
 * runs inside the consumer's transaction, together with the cursor
 * advance, so an event creates its jobs exactly once whatever is killed.
 * Jobs are idempotent per (order_id, kind, channel, variant) through the
 * table's unique constraint as a second line of defence.
 *
 *   order.created   -> record; instructions + reminders (due at offsets)
 *   order.paid      -> record; cancel instructions/reminders; receipt
 *   order.expired   -> record; cancel; expiry notice
 *   order.failed / order.cancelled -> record; cancel
 *   order.refunded  -> record; cancel; refund notice
 *   order.refunded, partial -> record; refund notice (variant 1), nothing
 *                      cancelled (the order stays PAID); none without
 *                      refund_amount (the text would name the whole amount)
 *   access.granted  -> record access details (rendered into the receipt)
 *   access.revoked  -> record revocation (the receipt guard refuses)
 *   order.flagged   -> record
 * A receipt job is created only here, only from order.paid.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "err.h"
#include "log.h"
#include "message.h"
#include "notifier.h"

static const struct db_stmt st_order_upsert = {
    .name = "notify_order_upsert",
    .sql = "INSERT INTO notify.orders (order_id, status, snapshot, last_seq,"
           " last_type, paid_at, revoked, access_granted, access_valid_until)"
           " VALUES ($1, $2, $3::jsonb, $4::bigint, $5, $6,"
           "  $5 = 'access.revoked', $5 = 'access.granted', $7)"
           " ON CONFLICT (order_id) DO UPDATE SET"
           "  status = EXCLUDED.status, snapshot = EXCLUDED.snapshot,"
           "  last_seq = EXCLUDED.last_seq, last_type = EXCLUDED.last_type,"
           "  paid_at = COALESCE(EXCLUDED.paid_at, notify.orders.paid_at),"
           "  revoked = CASE EXCLUDED.last_type"
           "   WHEN 'access.revoked' THEN true WHEN 'access.granted' THEN false"
           "   ELSE notify.orders.revoked END,"
           "  access_granted = notify.orders.access_granted OR"
           "   EXCLUDED.access_granted,"
           "  access_valid_until = CASE EXCLUDED.last_type"
           "   WHEN 'access.granted' THEN EXCLUDED.access_valid_until"
           "   ELSE notify.orders.access_valid_until END,"
           "  updated_at = now()",
    .nparams = 7,
};

static const struct db_stmt st_job_insert = {
    .name = "notify_job_insert",
    .sql = "INSERT INTO notify.job (order_id, kind, channel, variant,"
           " recipient, max_attempts, payload, origin)"
           " VALUES ($1, $2, $3, $4::int, $5, $6::int, $7::jsonb, $8)"
           " ON CONFLICT (order_id, kind, channel, variant) DO NOTHING",
    .nparams = 8,
};

/* A reminder is created only when its due time falls strictly between the
 * order's creation and its expiry. */
static const struct db_stmt st_reminder_insert = {
    .name = "notify_reminder_insert",
    .sql = "INSERT INTO notify.job (order_id, kind, channel, variant,"
           " recipient, max_attempts, payload, origin, due_at)"
           " SELECT $1, 'reminder', $2, $3::int, $4, $5::int, $6::jsonb, $7,"
           "  x.due"
           " FROM (SELECT CASE WHEN $9::bool"
           "   THEN $10::timestamptz - $8::bigint * interval '1 millisecond'"
           "   ELSE $11::timestamptz + $8::bigint * interval '1 millisecond'"
           "  END AS due) x"
           " WHERE x.due > $11::timestamptz AND x.due < $10::timestamptz"
           " ON CONFLICT (order_id, kind, channel, variant) DO NOTHING",
    .nparams = 11,
};

static const struct db_stmt st_cancel_pending = {
    .name = "notify_cancel_pending",
    .sql = "UPDATE notify.job SET state = 'cancelled', last_error = $2,"
           " updated_at = now()"
           " WHERE order_id = $1 AND kind IN ('instructions', 'reminder')"
           " AND state IN ('queued', 'retry', 'uncertain')",
    .nparams = 2,
};

/*
 * The batch path's statements: one of each per batch, whatever its size
 * (jobs_apply_batch below).  Each takes arrays, one element per row.
 */

/* Cancels the pending instructions and reminders of each order named,
 * with its reason (one row per order). */
static const struct db_stmt st_cancel_batch = {
    .name = "notify_cancel_batch",
    .sql = "UPDATE notify.job j SET state = 'cancelled',"
           " last_error = ($2::text[])[array_position($1::text[], j.order_id)],"
           " updated_at = now()"
           " WHERE j.order_id = ANY ($1::text[])"
           " AND j.kind IN ('instructions', 'reminder')"
           " AND j.state IN ('queued', 'retry', 'uncertain')",
    .nparams = 2,
};

/* One row per order: its events of the batch folded (fold_order()).  The
 * update and the insert spell st_order_upsert's two branches for the
 * fold; revoked is NULL when no access event came (the record keeps its
 * flag), valid_until counts only with granted, first_valid_until is the
 * first event's (what the insert of st_order_upsert stores).  Only the
 * consumer writes notify.orders, under its cursor's lock, so the insert
 * meets no concurrent one (if it did: a unique violation, and the batch
 * goes message by message). */
static const struct db_stmt st_orders_batch = {
    .name = "notify_orders_batch",
    .sql = "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[],"
           "  $3::jsonb[], $4::bigint[], $5::text[], $6::text[], $7::bool[],"
           "  $8::bool[], $9::text[], $10::text[]) AS u(order_id, status,"
           "  snapshot, last_seq, last_type, paid_at, revoked, granted,"
           "  valid_until, first_valid_until)),"
           " upd AS (UPDATE notify.orders o SET status = u.status,"
           "  snapshot = u.snapshot, last_seq = u.last_seq,"
           "  last_type = u.last_type,"
           "  paid_at = COALESCE(u.paid_at, o.paid_at),"
           "  revoked = COALESCE(u.revoked, o.revoked),"
           "  access_granted = o.access_granted OR u.granted,"
           "  access_valid_until = CASE WHEN u.granted THEN u.valid_until"
           "   ELSE o.access_valid_until END,"
           "  updated_at = now()"
           "  FROM u WHERE o.order_id = u.order_id RETURNING o.order_id)"
           " INSERT INTO notify.orders (order_id, status, snapshot, last_seq,"
           " last_type, paid_at, revoked, access_granted, access_valid_until)"
           " SELECT u.order_id, u.status, u.snapshot, u.last_seq, u.last_type,"
           "  u.paid_at, COALESCE(u.revoked, false), u.granted,"
           "  CASE WHEN u.granted THEN u.valid_until"
           "  ELSE u.first_valid_until END"
           " FROM u WHERE NOT EXISTS (SELECT 1 FROM upd"
           "  WHERE upd.order_id = u.order_id)",
    .nparams = 10,
};

/* Every job row of the batch, in event order (so the ids come in the order
 * st_job_insert and st_reminder_insert give them): payload is the ev-th of
 * $15 (each event's payload once, not one per job); a reminder (off not NULL)
 * is due and created as st_reminder_insert does; state and last_error are
 * 'cancelled' and the reason when a later event of the batch cancels it
 * (job_row_add()). Two rows of one key: the first wins (ON CONFLICT DO
 * NOTHING, rows in ORDER BY order), as two single inserts. */
static const struct db_stmt st_jobs_batch = {
    .name = "notify_jobs_batch",
    .sql = "INSERT INTO notify.job (order_id, kind, channel, variant,"
           " recipient, max_attempts, payload, origin, state, last_error,"
           " due_at)"
           " SELECT u.order_id, u.kind, u.channel, u.variant, u.recipient,"
           "  u.max_attempts, ($15::jsonb[])[u.ev], u.origin, u.state,"
           "  u.last_error, COALESCE(x.due, now())"
           " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[],"
           "  $5::text[], $6::int[], $7::int[], $8::text[], $9::text[],"
           "  $10::text[], $11::bigint[], $12::bool[], $13::timestamptz[],"
           "  $14::timestamptz[]) WITH ORDINALITY AS u(order_id, kind,"
           "  channel, variant, recipient, max_attempts, ev, origin, state,"
           "  last_error, off, before, expires, created, i)"
           " CROSS JOIN LATERAL (SELECT CASE WHEN u.off IS NULL THEN NULL"
           "  WHEN u.before"
           "  THEN u.expires - u.off * interval '1 millisecond'"
           "  ELSE u.created + u.off * interval '1 millisecond'"
           "  END AS due) x"
           " WHERE u.off IS NULL OR (x.due > u.created AND x.due < u.expires)"
           " ORDER BY u.i"
           " ON CONFLICT (order_id, kind, channel, variant) DO NOTHING",
    .nparams = 15,
};

static const char *
recipient(const struct kasir_msg *msg, enum notify_channel_id ch, char *buf,
          size_t len)
{
	const cJSON *cust = msg_obj(msg, "customer"), *v;

	if (cust == NULL)
		return NULL;
	if (ch == CHANNEL_EMAIL) {
		v = cJSON_GetObjectItemCaseSensitive(cust, "email");
		if (!cJSON_IsString(v) || !mime_address_valid(v->valuestring))
			return NULL;
		return v->valuestring;
	}
	v = cJSON_GetObjectItemCaseSensitive(cust, "phone");
	if (!cJSON_IsString(v) || phone_normalize(v->valuestring, buf, len) < 0)
		return NULL;
	return buf;
}

/* ---- what an event does: decided once, for both ways of writing it ---- */

/* True for the events the notifier records. */
static bool
notifies(const struct kasir_msg *msg)
{
	switch (msg->type) {
	case MSG_ORDER_CREATED:
	case MSG_ORDER_PAYMENT_LINK:
	case MSG_ORDER_PAID:
	case MSG_ORDER_FAILED:
	case MSG_ORDER_EXPIRED:
	case MSG_ORDER_CANCELLED:
	case MSG_ORDER_REFUNDED:
	case MSG_ORDER_FLAGGED:
	case MSG_ACCESS_GRANTED:
	case MSG_ACCESS_REVOKED:
		return true;
	default:
		/* order.evidence and anything newer: nothing to notify */
		return false;
	}
}

/* The event's order id, or NULL (logged) when it can never be applied. */
static const char *
event_order_id(const struct kasir_msg *msg)
{
	const char *order_id = msg_str(msg, "order_id");

	if (order_id == NULL || strlen(order_id) > 50) {
		log_warning("orders seq %lld: order_id missing or too long, "
		            "refusing",
		            (long long)msg->seq);
		return NULL;
	}
	return order_id;
}

/* The reason the event cancels its order's pending instructions and
 * reminders with, or NULL.  A partial refund leaves the order PAID:
 * nothing of a PAID order is cancelled (the cancel never touches a
 * receipt; instructions and reminders went with order.paid). */
static const char *
cancel_reason(const struct kasir_msg *msg)
{
	switch (msg->type) {
	case MSG_ORDER_PAID:
		return "order paid";
	case MSG_ORDER_EXPIRED:
		return "order expired";
	case MSG_ORDER_REFUNDED:
		return msg_bool(msg, "partial") ? NULL : "order refunded";
	case MSG_ORDER_FAILED:
		return "order failed";
	case MSG_ORDER_CANCELLED:
		return "order cancelled";
	default:
		return NULL;
	}
}

/* One job an event asks for.  A reminder (off not NULL) is due at
 * created + off, or expires - off when before is "true", and exists only
 * when that falls strictly between created and expires. */
struct job_row {
	enum notify_kind kind;
	const char *order_id, *channel, *variant, *to, *maxa, *payload, *origin;
	const char *off, *before, *expires, *created;
};

/* Writes one job row (the careful path: now; the batch: into arrays). */
typedef int (*job_sink_fn)(void *arg, const struct job_row *j);

/* The variant of a partial refund's notice: a later full refund's notice
 * (variant 0) is a job of its own and is still sent. */
#define VARIANT_PARTIAL_REFUND "1"

/* Gives sink the reminder rows of one channel (j: the channel's row). */
static int
reminder_rows(struct notifier *n, const struct kasir_msg *msg,
              struct job_row *j, job_sink_fn sink, void *arg)
{
	int r;

	for (int which = 0; which < 2; which++) {
		const struct duration_list *l =
		    which ? &n->conf->remind_before_expiry
		          : &n->conf->remind_after_created;

		for (size_t i = 0; i < l->n; i++) {
			char variant[16], off[24];

			snprintf(variant, sizeof(variant), "%zu",
			         which * 100 + i);
			snprintf(off, sizeof(off), "%lld", (long long)l->ms[i]);
			j->variant = variant;
			j->off = off;
			j->before = which ? "true" : "false";
			j->expires = msg_str(msg, "expires_at");
			j->created = msg_str(msg, "created_at");
			if ((r = sink(arg, j)) < 0)
				return r;
		}
	}
	return 0;
}

/* Gives sink the jobs of kind for every enabled channel with a
 * recipient. */
static int
create_jobs(struct notifier *n, const struct kasir_msg *msg,
            enum notify_kind kind, const char *payload, const char *origin,
            job_sink_fn sink, void *arg)
{
	char maxa[16], phone[20];
	int r;

	snprintf(maxa, sizeof(maxa), "%zu", n->conf->retry.n + 1);
	for (int c = 0; c < CHANNEL_COUNT; c++) {
		struct job_row j = {.kind = kind,
		                    .order_id = msg_str(msg, "order_id"),
		                    .channel = notify_channel_name(c),
		                    .variant = "0",
		                    .maxa = maxa,
		                    .payload = payload,
		                    .origin = origin};

		if (!n->chan_enabled[c])
			continue;
		j.to = recipient(msg, (enum notify_channel_id)c, phone,
		                 sizeof(phone));
		if (j.to == NULL) {
			log_order(LOG_NOTICE, j.order_id,
			          "no usable %s recipient, no %s message",
			          notify_channel_name(c),
			          notify_kind_name(kind));
			continue;
		}
		if (kind == KIND_REFUND && msg_bool(msg, "partial"))
			j.variant = VARIANT_PARTIAL_REFUND;
		if (kind == KIND_REMINDER)
			r = reminder_rows(n, msg, &j, sink, arg);
		else
			r = sink(arg, &j);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool
streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Gives sink every job the event creates. */
static int
event_jobs(struct notifier *n, const struct kasir_msg *msg, const char *payload,
           const char *origin, job_sink_fn sink, void *arg)
{
	int r;

	switch (msg->type) {
	case MSG_ORDER_PAYMENT_LINK:
		/* Instructions and reminders need the Snap link, which
		 * order.created does not have yet.  A link for an order that
		 * is no longer pending asks for no payment. */
		if (!streq(msg_str(msg, "status"), "PENDING"))
			return 0;
		r = create_jobs(n, msg, KIND_INSTRUCTIONS, payload, origin,
		                sink, arg);
		if (r < 0)
			return r;
		return create_jobs(n, msg, KIND_REMINDER, payload, origin, sink,
		                   arg);
	case MSG_ORDER_PAID:
		return create_jobs(n, msg, KIND_RECEIPT, payload, origin, sink,
		                   arg);
	case MSG_ORDER_EXPIRED:
		return create_jobs(n, msg, KIND_EXPIRY, payload, origin, sink,
		                   arg);
	case MSG_ORDER_REFUNDED:
		if (msg_bool(msg, "partial") &&
		    !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(
		        msg->data, "refund_amount"))) {
			/* the refund text names {amount}: without the refunded
			 * amount it would name the whole order's */
			log_order(LOG_WARNING, msg_str(msg, "order_id"),
			          "partial refund without refund_amount: no "
			          "refund notice sent");
			return 0;
		}
		return create_jobs(n, msg, KIND_REFUND, payload, origin, sink,
		                   arg);
	default:
		return 0;
	}
}

/* ---- the careful path: one message, its statements one by one ---- */

static int
record_order(struct kasir_db *db, const struct kasir_msg *msg,
             const char *payload)
{
	char seq[24];
	const char *p[7];

	snprintf(seq, sizeof(seq), "%lld", (long long)msg->seq);
	p[0] = msg_str(msg, "order_id");
	p[1] = msg_str(msg, "status");
	p[2] = payload;
	p[3] = seq;
	p[4] = msg_type_name(msg->type);
	p[5] = msg_str(msg, "paid_at");
	p[6] = msg_str(msg, "valid_until");
	return db_exec(db, &st_order_upsert, p, NULL);
}

/* job_sink_fn of the careful path (arg: the connection). */
static int
job_exec(void *arg, const struct job_row *j)
{
	struct kasir_db *db = arg;

	if (j->off != NULL) {
		const char *p[11] = {j->order_id, j->channel, j->variant,
		                     j->to,       j->maxa,    j->payload,
		                     j->origin,   j->off,     j->before,
		                     j->expires,  j->created};

		return db_exec(db, &st_reminder_insert, p, NULL);
	} else {
		const char *p[8] = {j->order_id, notify_kind_name(j->kind),
		                    j->channel,  j->variant,
		                    j->to,       j->maxa,
		                    j->payload,  j->origin};

		return db_exec(db, &st_job_insert, p, NULL);
	}
}

int
jobs_apply(void *arg, struct kasir_db *db, const struct kasir_msg *msg)
{
	struct notifier *n = arg;
	const char *order_id, *why;
	char origin[48], *payload = NULL;
	int r = 0;

	if (!notifies(msg))
		return 0;
	if ((order_id = event_order_id(msg)) == NULL)
		return KASIR_EREJECT;
	payload = cJSON_PrintUnformatted(msg->data);
	if (payload == NULL)
		return -ENOMEM;
	snprintf(origin, sizeof(origin), "orders:%lld", (long long)msg->seq);

	/*
	 * Lock order: job rows first, then the order's record -- the same
	 * order a worker's claim takes them in (claim the job, then read the
	 * order FOR SHARE), so the two never deadlock.
	 */
	if ((why = cancel_reason(msg)) != NULL) {
		const char *p[2] = {order_id, why};

		r = db_exec(db, &st_cancel_pending, p, NULL);
	}
	if (r == 0)
		r = record_order(db, msg, payload);
	if (r == 0)
		r = event_jobs(n, msg, payload, origin, job_exec, db);
	if (r == KASIR_ESQL && (strncmp(db_last_sqlstate(db), "22", 2) == 0 ||
	                        strncmp(db_last_sqlstate(db), "23", 2) == 0)) {
		/* a data or constraint error: this event can never apply
		 * (e.g. an oversized field); poison it, log once.  Other SQL
		 * errors (deadlock, serialization) are retried. */
		log_order(LOG_ERR, order_id, "orders seq %lld (%s) refused: %s",
		          (long long)msg->seq, msg_type_name(msg->type),
		          db_last_error(db));
		r = KASIR_EREJECT;
	}
	free(payload);
	return r;
}

/*
 * ---- the batch path: the consumer's optimistic pass ----
 *
 * A batch's events give the same rows as jobs_apply() one by one, with
 * three statements whatever the batch's size: the cancels, the orders'
 * records, the jobs (in that order: job rows before records, as above).
 * Only the events of one order meet each other, so they are grouped per
 * order (sorted by order id, then position) and:
 *  - the record is the order's events folded in C (fold_order()): what
 *    st_order_upsert leaves after each of them in turn;
 *  - the jobs that existed before the batch are cancelled with the first
 *    cancelling event's reason (the later ones find nothing pending);
 *  - a job the batch creates is cancelled when a later event of its order
 *    cancels (the first such event's reason): it is inserted so, instead
 *    of inserted and then updated.
 * Every value jobs_apply() would send is sent here too, except those the
 * fold overwrites: an earlier event's status (required by the message
 * type), paid_at and valid_until (text; the message was checked UTF-8)
 * and payload (cJSON's printing, which never holds the one escape jsonb
 * refuses, \u0000): none of them can fail on its own.  Any failure, a
 * refusal included, sends the batch to the careful pass (jobs_apply()),
 * which poisons exactly the event that fails.
 */

/* One event of the batch that the notifier records. */
struct bev {
	const struct kasir_msg *msg;
	const char *order_id;
	char *payload;
	size_t pos;        /* in the batch */
	const char *later; /* the first later cancel of its order, or NULL */
	int ev;            /* 1-based index of payload in the job statement */
};

/* The batch's three array statements (struct db_cols, db.h). */
enum { B_CANCEL, B_ORDERS, B_JOBS, B_COUNT };
static const struct db_stmt *const batch_stmts[B_COUNT] = {
    [B_CANCEL] = &st_cancel_batch,
    [B_ORDERS] = &st_orders_batch,
    [B_JOBS] = &st_jobs_batch,
};
/* The job statement's last parameter is not a column: the payloads */
#define JOBS_PAYLOADS 14

struct batch {
	struct notifier *n;
	struct bev *ev;
	size_t nev;
	struct db_cols c[B_COUNT];
	int npayloads;   /* elements of c[B_JOBS].a[JOBS_PAYLOADS] */
	struct bev *cur; /* the event whose jobs are being added */
};

static int
bev_cmp(const void *a, const void *b)
{
	const struct bev *const *x = a, *const *y = b;
	int c = strcmp((*x)->order_id, (*y)->order_id);

	if (c != 0)
		return c;
	return (*x)->pos < (*y)->pos ? -1 : (*x)->pos > (*y)->pos;
}

/*
 * Adds the record row and the cancel row of one order, from its events
 * e[0..k) in batch order: st_order_upsert applied k times is the last
 * event's status, snapshot, seq and type; the last paid_at given; the
 * revoked flag of the last access event (none: unchanged); access granted
 * if any event granted it, valid until the last grant's; a new record
 * stores the first event's valid_until unless a grant follows.  Also sets
 * each event's later cancel.
 */
static void
fold_order(struct batch *b, struct bev *const *e, size_t k)
{
	const struct bev *last = e[k - 1];
	const char *paid_at = NULL, *revoked = NULL, *until = NULL;
	const char *first_cancel = NULL, *later = NULL;
	bool granted = false;
	char seq[24];

	for (size_t i = k; i-- > 0;) {
		const char *why = cancel_reason(e[i]->msg);

		e[i]->later = later;
		if (why != NULL)
			later = first_cancel = why;
	}
	for (size_t i = 0; i < k; i++) {
		const struct kasir_msg *m = e[i]->msg;

		if (msg_str(m, "paid_at") != NULL)
			paid_at = msg_str(m, "paid_at");
		if (m->type == MSG_ACCESS_REVOKED)
			revoked = "true";
		if (m->type == MSG_ACCESS_GRANTED) {
			revoked = "false";
			granted = true;
			until = msg_str(m, "valid_until");
		}
	}
	snprintf(seq, sizeof(seq), "%lld", (long long)last->msg->seq);
	{
		const char *v[10] = {last->order_id,
		                     msg_str(last->msg, "status"),
		                     last->payload,
		                     seq,
		                     msg_type_name(last->msg->type),
		                     paid_at,
		                     revoked,
		                     granted ? "true" : "false",
		                     until,
		                     msg_str(e[0]->msg, "valid_until")};

		db_cols_row(&b->c[B_ORDERS], v);
	}
	if (first_cancel != NULL) {
		const char *v[2] = {last->order_id, first_cancel};

		db_cols_row(&b->c[B_CANCEL], v);
	}
}

/* Groups the events per order and folds each order. */
static int
fold_orders(struct batch *b)
{
	struct bev **s = calloc(b->nev, sizeof(*s));
	size_t i, k;

	if (s == NULL)
		return -ENOMEM;
	for (i = 0; i < b->nev; i++)
		s[i] = &b->ev[i];
	qsort(s, b->nev, sizeof(*s), bev_cmp);
	for (i = 0; i < b->nev; i = k) {
		for (k = i + 1;
		     k < b->nev && strcmp(s[k]->order_id, s[i]->order_id) == 0;
		     k++)
			;
		fold_order(b, s + i, k - i);
	}
	free(s);
	return 0;
}

/* job_sink_fn of the batch path (arg: the batch; b->cur the event). */
static int
job_row_add(void *arg, const struct job_row *j)
{
	struct batch *b = arg;
	struct bev *e = b->cur;
	bool cancelled = e->later != NULL && (j->kind == KIND_INSTRUCTIONS ||
	                                      j->kind == KIND_REMINDER);
	char ev[16];

	if (e->ev == 0) {
		db_array_add(&b->c[B_JOBS].a[JOBS_PAYLOADS], e->payload);
		e->ev = ++b->npayloads;
	}
	snprintf(ev, sizeof(ev), "%d", e->ev);
	{
		const char *v[JOBS_PAYLOADS] = {j->order_id,
		                                notify_kind_name(j->kind),
		                                j->channel,
		                                j->variant,
		                                j->to,
		                                j->maxa,
		                                ev,
		                                j->origin,
		                                cancelled ? "cancelled"
		                                          : "queued",
		                                cancelled ? e->later : NULL,
		                                j->off,
		                                j->before,
		                                j->expires,
		                                j->created};

		db_cols_row(&b->c[B_JOBS], v);
	}
	return 0;
}

/* Reads the batch's events; KASIR_EREJECT for one that can never apply. */
static int
batch_read(struct batch *b, const struct kasir_msg *const *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct bev *e = &b->ev[b->nev];

		if (!notifies(msgs[i]))
			continue;
		if ((e->order_id = event_order_id(msgs[i])) == NULL)
			return KASIR_EREJECT;
		if ((e->payload = cJSON_PrintUnformatted(msgs[i]->data)) ==
		    NULL)
			return -ENOMEM;
		e->msg = msgs[i];
		e->pos = i;
		b->nev++;
	}
	return 0;
}

/* Fills the three statements' columns. */
static int
batch_build(struct batch *b)
{
	int rc;

	for (int s = 0; s < B_COUNT; s++)
		b->c[s].stmt = batch_stmts[s]; /* ncols 0: every parameter */
	b->c[B_JOBS].ncols = JOBS_PAYLOADS;
	if ((rc = fold_orders(b)) < 0)
		return rc;
	for (size_t i = 0; i < b->nev; i++) {
		char origin[48];

		b->cur = &b->ev[i];
		snprintf(origin, sizeof(origin), "orders:%lld",
		         (long long)b->ev[i].msg->seq);
		rc = event_jobs(b->n, b->ev[i].msg, b->ev[i].payload, origin,
		                job_row_add, b);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Sends the statements that have rows in one pipeline. */
static int
batch_write(struct batch *b, struct kasir_db *db)
{
	int rc, s;

	rc = db_pipe_begin(db, batch_stmts, B_COUNT);
	for (s = 0; s < B_COUNT && rc == 0; s++)
		if (b->c[s].rows > 0)
			rc = db_cols_send(db, &b->c[s]);
	if (rc == 0)
		rc = db_pipe_sync(db);
	for (s = 0; s < B_COUNT && rc == 0; s++)
		if (b->c[s].rows > 0)
			rc = db_pipe_result(db, NULL);
	db_pipe_end(db);
	return rc;
}

int
jobs_apply_batch(void *arg, struct kasir_db *db,
                 const struct kasir_msg *const *msgs, size_t n)
{
	struct batch b = {.n = arg};
	int rc;

	b.ev = calloc(n > 0 ? n : 1, sizeof(*b.ev));
	if (b.ev == NULL)
		return -ENOMEM;
	rc = batch_read(&b, msgs, n);
	if (rc == 0 && b.nev > 0)
		rc = batch_build(&b);
	if (rc == 0 && b.nev > 0)
		rc = batch_write(&b, db);
	for (size_t i = 0; i < b.nev; i++)
		free(b.ev[i].payload);
	for (int s = 0; s < B_COUNT; s++)
		db_cols_free(&b.c[s]);
	free(b.ev);
	return rc;
}
