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

static int
record_order(struct kasir_db *db, const struct kasir_msg *msg,
             const char *payload, struct db_batch *x)
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
	return db_batch_exec(x, db, &st_order_upsert, p);
}

/* The variant of a partial refund's notice: a later full refund's notice
 * (variant 0) is a job of its own and is still sent. */
#define VARIANT_PARTIAL_REFUND "1"

/* Creates the jobs of kind for every enabled channel with a recipient. */
static int
create_jobs(struct notifier *n, struct kasir_db *db,
            const struct kasir_msg *msg, enum notify_kind kind,
            const char *payload, const char *origin, struct db_batch *x)
{
	const char *job_variant = "0";
	char maxa[16], phone[20];
	int r;

	snprintf(maxa, sizeof(maxa), "%zu", n->conf->retry.n + 1);
	if (kind == KIND_REFUND && msg_bool(msg, "partial"))
		job_variant = VARIANT_PARTIAL_REFUND;
	for (int c = 0; c < CHANNEL_COUNT; c++) {
		const char *to;

		if (!n->chan_enabled[c])
			continue;
		to = recipient(msg, (enum notify_channel_id)c, phone,
		               sizeof(phone));
		if (to == NULL) {
			log_order(LOG_NOTICE, msg_str(msg, "order_id"),
			          "no usable %s recipient, no %s message",
			          notify_channel_name(c),
			          notify_kind_name(kind));
			continue;
		}
		if (kind != KIND_REMINDER) {
			const char *p[8] = {msg_str(msg, "order_id"),
			                    notify_kind_name(kind),
			                    notify_channel_name(c),
			                    job_variant,
			                    to,
			                    maxa,
			                    payload,
			                    origin};

			if ((r = db_batch_exec(x, db, &st_job_insert, p)) < 0)
				return r;
			continue;
		}
		for (int which = 0; which < 2; which++) {
			const struct duration_list *l =
			    which ? &n->conf->remind_before_expiry
			          : &n->conf->remind_after_created;

			for (size_t i = 0; i < l->n; i++) {
				char variant[16], off[24];
				const char *p[11];

				snprintf(variant, sizeof(variant), "%zu",
				         which * 100 + i);
				snprintf(off, sizeof(off), "%lld",
				         (long long)l->ms[i]);
				p[0] = msg_str(msg, "order_id");
				p[1] = notify_channel_name(c);
				p[2] = variant;
				p[3] = to;
				p[4] = maxa;
				p[5] = payload;
				p[6] = origin;
				p[7] = off;
				p[8] = which ? "true" : "false";
				p[9] = msg_str(msg, "expires_at");
				p[10] = msg_str(msg, "created_at");
				r = db_batch_exec(x, db, &st_reminder_insert,
				                  p);
				if (r < 0)
					return r;
			}
		}
	}
	return 0;
}

static int
cancel_pending(struct kasir_db *db, const char *order_id, const char *why,
               struct db_batch *x)
{
	const char *p[2] = {order_id, why};

	return db_batch_exec(x, db, &st_cancel_pending, p);
}

static bool
streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static int
apply_one(void *arg, struct kasir_db *db, const struct kasir_msg *msg,
          struct db_batch *x)
{
	struct notifier *n = arg;
	const char *order_id;
	char origin[48], *payload = NULL;
	int r;

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
		break;
	default:
		/* order.evidence and anything newer: nothing to notify */
		return 0;
	}
	order_id = msg_str(msg, "order_id");
	if (order_id == NULL || strlen(order_id) > 50) {
		log_warning("orders seq %lld: order_id missing or too long, "
		            "refusing",
		            (long long)msg->seq);
		return KASIR_EREJECT;
	}
	payload = cJSON_PrintUnformatted(msg->data);
	if (payload == NULL)
		return -ENOMEM;
	snprintf(origin, sizeof(origin), "orders:%lld", (long long)msg->seq);

	/*
	 * Lock order: job rows first, then the order's record -- the same
	 * order a worker's claim takes them in (claim the job, then read the
	 * order FOR SHARE), so the two never deadlock.
	 */
	switch (msg->type) {
	case MSG_ORDER_PAID:
		r = cancel_pending(db, order_id, "order paid", x);
		break;
	case MSG_ORDER_EXPIRED:
		r = cancel_pending(db, order_id, "order expired", x);
		break;
	case MSG_ORDER_REFUNDED:
		/* a partial refund leaves the order PAID: nothing of a PAID
		 * order is cancelled (cancel_pending never touches a
		 * receipt; instructions and reminders went with order.paid) */
		if (!msg_bool(msg, "partial"))
			r = cancel_pending(db, order_id, "order refunded", x);
		else
			r = 0;
		break;
	case MSG_ORDER_FAILED:
		r = cancel_pending(db, order_id, "order failed", x);
		break;
	case MSG_ORDER_CANCELLED:
		r = cancel_pending(db, order_id, "order cancelled", x);
		break;
	default:
		r = 0;
		break;
	}
	if (r < 0 || (r = record_order(db, msg, payload, x)) < 0)
		goto out;
	switch (msg->type) {
	case MSG_ORDER_PAYMENT_LINK:
		/* Instructions and reminders need the Snap link, which
		 * order.created does not have yet.  A link for an order that
		 * is no longer pending asks for no payment. */
		if (!streq(msg_str(msg, "status"), "PENDING"))
			break;
		if ((r = create_jobs(n, db, msg, KIND_INSTRUCTIONS, payload,
		                     origin, x)) < 0)
			goto out;
		r = create_jobs(n, db, msg, KIND_REMINDER, payload, origin, x);
		break;
	case MSG_ORDER_PAID:
		r = create_jobs(n, db, msg, KIND_RECEIPT, payload, origin, x);
		break;
	case MSG_ORDER_EXPIRED:
		r = create_jobs(n, db, msg, KIND_EXPIRY, payload, origin, x);
		break;
	case MSG_ORDER_REFUNDED:
		if (msg_bool(msg, "partial") &&
		    !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(
		        msg->data, "refund_amount"))) {
			/* the refund text names {amount}: without the refunded
			 * amount it would name the whole order's */
			log_order(LOG_WARNING, order_id,
			          "partial refund without refund_amount: no "
			          "refund notice sent");
			r = 0;
			break;
		}
		r = create_jobs(n, db, msg, KIND_REFUND, payload, origin, x);
		break;
	default:
		r = 0;
		break;
	}
out:
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

int
jobs_apply(void *arg, struct kasir_db *db, const struct kasir_msg *msg)
{
	return apply_one(arg, db, msg, NULL);
}

int
jobs_apply_batch(void *arg, struct kasir_db *db,
                 const struct kasir_msg *const *msgs, size_t n)
{
	static const struct db_stmt *const stmts[] = {
	    &st_order_upsert, &st_job_insert, &st_reminder_insert,
	    &st_cancel_pending};
	struct db_batch x = {0};
	int rc;

	if ((rc = db_pipe_begin(db, stmts, sizeof(stmts) / sizeof(*stmts))) < 0)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		/* a refusal too sends the batch to the careful pass, which
		 * poisons exactly that message */
		rc = apply_one(arg, db, msgs[i], &x);
	}
	if (rc == 0)
		rc = db_batch_sync(&x, db);
	db_pipe_end(db);
	return rc;
}
