/*
 * evidence_batch.c - applies a whole batch of evidence messages at once:
 * the stream consumer's optimistic pass (stream.h, apply_batch).
 *
 * The same decisions and the same rows as evidence.c, message after
 * message, but with a handful of round trips per batch instead of five
 * per message:
 *   1. one statement locks the order of every message (FOR UPDATE, in
 *      order_id order, so the two consumers never deadlock) and tells
 *      which evidence is already recorded; one more takes the evidence ids;
 *   2. every decision is taken in memory with state.c, each message seeing
 *      the order as the messages before it in the batch left it;
 *   3. the writes (evidence, transition, order row, entitlement) are sent
 *      pipelined, in message order, BATCH_CHUNK messages per sync: the
 *      server runs them exactly in the order evidence.c would;
 *   4. the order events are appended (deferred by the consumer, written
 *      with two statements at COMMIT) in message order.
 * Anything unexpected returns an error: the consumer rolls the whole batch
 * back and applies it again message by message with evidence.c, which is
 * therefore the reference behaviour.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "err.h"
#include "evidence.h"
#include "log.h"
#include "order.h"
#include "stream.h"
#include "util.h"

#define BATCH_CHUNK 32 /* messages per pipeline sync (bounded buffers) */

/* One row per message whose order exists: u.i is the message's 1-based
 * position; the last column says whether (source, ref) is recorded. */
static const struct db_stmt st_lock_batch = {
    .name = "order_lock_batch",
    .sql = "SELECT u.i, " STORE_ROW_COLS(
        "o", "u.checked_at") ","
                             " EXISTS (SELECT 1 FROM orders.evidence ev"
                             "  WHERE ev.source = u.source AND ev.ref = u.ref)"
                             " AS recorded"
                             " FROM unnest($1::text[], $2::timestamptz[], "
                             "$3::text[],"
                             "  $4::bigint[]) WITH ORDINALITY AS u(order_id, "
                             "checked_at,"
                             "  source, ref, i)"
                             " JOIN orders.orders o ON o.order_id = u.order_id"
                             " ORDER BY o.order_id, u.i FOR UPDATE OF o",
    .nparams = 4,
};
#define LOCK_ROW_COL 1 /* first STORE_ROW_COLS column */

static const struct db_stmt st_ids = {
    .name = "order_evidence_ids",
    .sql = "SELECT nextval('orders.evidence_id_seq')"
           " FROM generate_series(1, $1::int)",
    .nparams = 1,
};

enum item_kind {
	ITEM_UNKNOWN, /* no such order: unknown_notifications */
	ITEM_DUP,     /* (source, ref) already recorded: nothing */
	ITEM_APPLY,   /* decided: evidence + what the decision writes */
};

struct item {
	const struct kasir_msg *msg;
	struct evidence_msg e;
	enum item_kind kind;
	int row;                 /* lock result row; -1: unknown order */
	struct order_row before; /* the order as this message found it */
	struct order_decision d;
	enum order_status after;
	bool update;
	char *raw;
	struct evidence_params ep;
	cJSON *snap;    /* from the update, owned */
	PGresult *gres; /* from the grant, owned */
};

struct batch {
	struct item *items;
	size_t n;
	struct order_row *orders; /* current state of each order */
	bool *paid_here;          /* orders[i] became PAID in this batch */
	const char **paid_at;     /* ... as of this checked_at (NULL: now) */
	size_t norders;
};

static void
batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->items[i].raw);
		cJSON_Delete(b->items[i].snap);
		PQclear(b->items[i].gres);
	}
	free(b->items);
	free(b->orders);
	free(b->paid_here);
	free(b->paid_at);
}

/* Locks the orders, marks unknown orders and recorded evidence, and
 * takes the evidence ids. */
static int
batch_lock(struct kasir_db *db, struct batch *b)
{
	struct db_array a[4] = {{0}};
	const char *params[4];
	char refs[24], count[24];
	PGresult *res = NULL, *ids = NULL;
	int rc = -ENOMEM, dup_col;

	for (size_t i = 0; i < b->n; i++) {
		const struct evidence_msg *e = &b->items[i].e;
		snprintf(refs, sizeof(refs), "%" PRId64, e->ref);
		db_array_add(&a[0], e->order_id);
		db_array_add(&a[1], e->checked_at);
		db_array_add(&a[2], e->source);
		db_array_add(&a[3], refs);
		b->items[i].row = -1;
	}
	for (int k = 0; k < 4; k++)
		if ((params[k] = db_array_text(&a[k])) == NULL)
			goto out;
	if ((rc = db_exec(db, &st_lock_batch, params, &res)) < 0)
		goto out;
	for (int r = 0; r < PQntuples(res); r++) {
		int64_t i = db_get_i64(res, r, 0);
		if (i < 1 || (size_t)i > b->n || b->items[i - 1].row >= 0) {
			rc = KASIR_ESQL; /* cannot happen: refuse to guess */
			goto out;
		}
		b->items[i - 1].row = r;
	}
	snprintf(count, sizeof(count), "%zu", b->n);
	params[0] = count;
	if ((rc = db_exec(db, &st_ids, params, &ids)) < 0)
		goto out;
	if ((size_t)PQntuples(ids) != b->n) {
		rc = KASIR_ESQL;
		goto out;
	}
	/* the EXISTS column by its name: no column count kept by hand */
	dup_col = PQfnumber(res, "recorded");
	if (dup_col < 0) {
		rc = KASIR_ESQL;
		goto out;
	}
	for (size_t i = 0; i < b->n; i++) {
		struct item *it = &b->items[i];
		kasir_strlcpy(it->ep.id, db_get(ids, (int)i, 0),
		              sizeof(it->ep.id));
		if (it->row < 0)
			it->kind = ITEM_UNKNOWN;
		else if (db_get(res, it->row, dup_col)[0] == 't')
			it->kind = ITEM_DUP;
		else
			it->kind = ITEM_APPLY;
	}
	rc = 0;
	/* each order's state as locked; each message's past_expiry (judged
	 * at its own checked_at) parked in its .before for batch_decide() */
	for (size_t i = 0; i < b->n && rc == 0; i++) {
		struct item *it = &b->items[i];
		struct order_row *o = NULL, fresh;

		if (it->kind != ITEM_APPLY)
			continue;
		/* the same evidence twice in one batch: the second is a
		 * duplicate, as the unique (source, ref) would say */
		for (size_t j = 0; j < i; j++)
			if (b->items[j].kind == ITEM_APPLY &&
			    b->items[j].e.ref == it->e.ref &&
			    strcmp(b->items[j].e.source, it->e.source) == 0)
				it->kind = ITEM_DUP;
		if (it->kind != ITEM_APPLY)
			continue;
		if ((rc = store_row_from(res, it->row, LOCK_ROW_COL, &fresh)) <
		    0)
			break;
		for (size_t k = 0; k < b->norders && o == NULL; k++)
			if (strcmp(b->orders[k].order_id, fresh.order_id) == 0)
				o = &b->orders[k];
		if (o == NULL) {
			o = &b->orders[b->norders++];
			*o = fresh;
		}
		/* past_expiry and checked_before_paid are judged per
		 * message (its checked_at) */
		o->past_expiry = fresh.past_expiry;
		o->checked_before_paid = fresh.checked_before_paid;
		it->before = *o;
	}
out:
	PQclear(res);
	PQclear(ids);
	for (int k = 0; k < 4; k++)
		db_array_free(&a[k]);
	return rc;
}

/* Finds the current state of order_id (it exists for ITEM_APPLY). */
static struct order_row *
batch_order(struct batch *b, const char *order_id)
{
	for (size_t k = 0; k < b->norders; k++)
		if (strcmp(b->orders[k].order_id, order_id) == 0)
			return &b->orders[k];
	return NULL;
}

/* Decides every message in order, each on the order as left by the ones
 * before it; batch_lock() recorded the state each message finds only for
 * the first message of an order, so it is taken again here. */
static void
batch_decide(const struct order_service *s, struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		struct item *it = &b->items[i];
		struct order_row *o;
		struct order_update u;
		bool past_expiry, before_paid;

		if (it->kind != ITEM_APPLY)
			continue;
		o = batch_order(b, it->e.order_id);
		past_expiry = it->before.past_expiry;
		before_paid = it->before.checked_before_paid;
		it->before = *o;
		it->before.past_expiry = past_expiry;
		it->e.in.past_expiry =
		    past_expiry &&
		    (it->e.checked_at == NULL || it->e.check_past_expiry);
		/* paid earlier in this transaction: paid_at is the paying
		 * answer's checked_at (store.c; both are the reconciler's
		 * time_rfc3339 text, so they compare as strings), or the
		 * transaction's start for a notification, later than any
		 * check already made (as evidence.c sees it) */
		if (b->paid_here[o - b->orders] && it->e.checked_at != NULL)
			before_paid = b->paid_at[o - b->orders] == NULL ||
			              strcmp(it->e.checked_at,
			                     b->paid_at[o - b->orders]) < 0;
		it->before.checked_before_paid = before_paid;
		it->e.in.checked_before_paid = before_paid;
		evidence_decide(s, &it->e, o, &it->d);
		it->after = it->d.transition ? it->d.to : o->status;

		/* the order as the UPDATE leaves it (store.c st_update) */
		evidence_update(&it->e, &it->d, &u);
		it->update = store_update_needed(&u);
		if (it->after == ORDER_PAID && it->d.transition) {
			b->paid_here[o - b->orders] = true;
			b->paid_at[o - b->orders] = it->e.checked_at;
		}
		o->status = it->after;
		o->flagged |= (u.flags & OFLAG_FLAGGED) != 0;
		o->partial_refund |= (u.flags & OFLAG_PARTIAL_REFUND) != 0;
		o->disputed |= (u.flags & OFLAG_DISPUTED) != 0;
		o->reversed |= (u.flags & OFLAG_REVERSED) != 0;
		if (u.awaiting_clear)
			o->awaiting[0] = '\0';
		else if (u.awaiting != NULL)
			kasir_strlcpy(o->awaiting, u.awaiting,
			              sizeof(o->awaiting));
		if (u.learn_txn && u.transaction_id != NULL &&
		    (u.txn_from_transition || !o->has_transaction_id)) {
			o->has_transaction_id = true;
			kasir_strlcpy(o->transaction_id, u.transaction_id,
			              sizeof(o->transaction_id));
		}
	}
}

/* Sends the statements of one message, in evidence.c's order. */
static int
item_send(struct kasir_db *db, struct item *it)
{
	int rc;

	it->raw = evidence_raw_text(it->msg, &it->e);
	if (it->raw == NULL)
		return -ENOMEM;
	if (it->kind == ITEM_UNKNOWN) {
		const char *p[8] = {it->e.source,
		                    it->ep.ref,
		                    it->ep.seq,
		                    it->e.order_id,
		                    it->e.in.transaction_status,
		                    it->e.in.gross_amount,
		                    it->e.received_at,
		                    it->raw};
		snprintf(it->ep.ref, sizeof(it->ep.ref), "%" PRId64, it->e.ref);
		snprintf(it->ep.seq, sizeof(it->ep.seq), "%" PRId64,
		         it->msg->seq);
		return db_pipe_send(db, &ev_st_unknown, p);
	}
	evidence_params(it->msg, &it->e, it->before.status, it->after, &it->d,
	                it->raw, &it->ep);
	if ((rc = db_pipe_send(db, &ev_st_evidence_id, it->ep.p)) < 0)
		return rc;
	if (it->d.transition) {
		const char *tp[7] = {it->e.order_id,
		                     order_status_name(it->before.status),
		                     order_status_name(it->d.to),
		                     it->e.source,
		                     it->ep.ref,
		                     it->ep.id,
		                     it->d.reason};
		if ((rc = db_pipe_send(db, &ev_st_transition, tp)) < 0)
			return rc;
	}
	if (it->update) {
		struct order_update u;
		const char *up[STORE_UPDATE_NPARAMS];
		evidence_update(&it->e, &it->d, &u);
		store_update_params(&u, up);
		if ((rc = db_pipe_send(db, &store_st_update, up)) < 0)
			return rc;
	}
	if (it->d.grant_access) {
		const char *gp[5] = {it->e.order_id, it->e.source, it->ep.id,
		                     NULL, it->d.reason};
		if ((rc = db_pipe_send(db, &store_st_grant, gp)) < 0)
			return rc;
	}
	if (it->d.revoke_access) {
		const char *rp[4] = {it->e.order_id, it->e.source, it->ep.id,
		                     it->d.reason};
		if ((rc = db_pipe_send(db, &store_st_revoke, rp)) < 0)
			return rc;
	}
	return 0;
}

/* Reads the results of item_send(), in the same order. */
static int
item_read(struct kasir_db *db, struct item *it)
{
	PGresult *res = NULL;
	int rc;

	if (it->kind == ITEM_UNKNOWN)
		return db_pipe_result(db, NULL);
	if ((rc = db_pipe_result(db, &res)) < 0)
		return rc;
	rc = PQntuples(res) == 1 ? 0 : KASIR_ECONFLICT; /* recorded? */
	PQclear(res);
	if (rc < 0)
		return rc;
	if (it->d.transition && (rc = db_pipe_result(db, NULL)) < 0)
		return rc;
	if (it->update) {
		if ((rc = db_pipe_result(db, &res)) < 0)
			return rc;
		rc = store_snapshot_from(res, &it->snap);
		PQclear(res);
		if (rc < 0)
			return rc;
	}
	if (it->d.grant_access && (rc = db_pipe_result(db, &it->gres)) < 0)
		return rc;
	if (it->d.revoke_access && (rc = db_pipe_result(db, NULL)) < 0)
		return rc;
	return 0;
}

static int
batch_write(struct kasir_db *db, struct batch *b)
{
	static const struct db_stmt *const stmts[] = {
	    &ev_st_unknown,   &ev_st_evidence_id, &ev_st_transition,
	    &store_st_update, &store_st_grant,    &store_st_revoke,
	};
	int rc;

	rc = db_pipe_begin(db, stmts, sizeof(stmts) / sizeof(stmts[0]));
	if (rc < 0)
		return rc;
	for (size_t start = 0; start < b->n && rc == 0; start += BATCH_CHUNK) {
		size_t end =
		    start + BATCH_CHUNK < b->n ? start + BATCH_CHUNK : b->n;
		for (size_t i = start; i < end && rc == 0; i++)
			if (b->items[i].kind != ITEM_DUP)
				rc = item_send(db, &b->items[i]);
		if (rc == 0)
			rc = db_pipe_sync(db);
		for (size_t i = start; i < end && rc == 0; i++)
			if (b->items[i].kind != ITEM_DUP)
				rc = item_read(db, &b->items[i]);
	}
	db_pipe_end(db);
	return rc;
}

int
order_apply_evidence_batch(void *arg, struct kasir_db *db,
                           const struct kasir_msg *const *msgs, size_t n)
{
	struct order_service *s = arg;
	struct batch b = {0};
	int rc;

	if (n == 0)
		return 0;
	b.items = calloc(n, sizeof(*b.items));
	b.orders = calloc(n, sizeof(*b.orders));
	b.paid_here = calloc(n, sizeof(*b.paid_here));
	b.paid_at = calloc(n, sizeof(*b.paid_at));
	if (b.items == NULL || b.orders == NULL || b.paid_here == NULL ||
	    b.paid_at == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	b.n = n;
	for (size_t i = 0; i < n; i++) {
		b.items[i].msg = msgs[i];
		/* a refused message is poisoned by the careful pass */
		if ((rc = evidence_parse(msgs[i], &b.items[i].e)) < 0)
			goto out;
	}
	if ((rc = batch_lock(db, &b)) < 0)
		goto out;
	batch_decide(s, &b);
	if ((rc = batch_write(db, &b)) < 0)
		goto out;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct item *it = &b.items[i];
		if (it->kind == ITEM_UNKNOWN) {
			evidence_account_unknown(s, &it->e);
		} else if (it->kind == ITEM_DUP) {
			log_order(LOG_INFO, it->e.order_id,
			          "%s evidence %" PRId64
			          " already recorded, ignoring",
			          it->e.source, it->e.ref);
		} else {
			rc = evidence_emit_all(s, db, &it->e, &it->before,
			                       &it->d, it->after, it->snap,
			                       it->gres);
			if (rc == 0)
				evidence_account(s, it->msg, &it->e,
				                 it->before.status, it->after,
				                 &it->d);
		}
	}
out:
	batch_free(&b);
	return rc;
}
