/*
 * store.c - the writes on schema "orders" and the order events (orders
 * stream), inside the caller's transaction.  Every statement is
 * parameterized; the evidence path's take arrays, so one message and a
 * whole round of a batch run the same SQL (evidence.h).  store.c calls
 * nothing above it.  Read-only views: store_view.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "db_json.h"
#include "err.h"
#include "evidence.h"
#include "order.h"
#include "stream.h"
#include "util.h"

/* RFC 3339 UTC text of a timestamptz column. */
static const struct db_stmt st_lock = {
    .name = "order_lock",
    .sql = "SELECT " STORE_ROW_COLS(
        "orders",
        "$2::timestamptz") " FROM orders.orders WHERE order_id = $1 FOR UPDATE",
    .nparams = 2,
};

static bool
col_bool(const PGresult *res, int row, int col)
{
	const char *v = db_get(res, row, col);
	return v != NULL && v[0] == 't';
}

int
store_row_from(const PGresult *res, int row, int col, struct order_row *ret)
{
	struct order_row o;

	memset(&o, 0, sizeof(o));
	kasir_strlcpy(o.order_id, db_get(res, row, col), sizeof(o.order_id));
	if (order_status_parse(db_get(res, row, col + 1), &o.status) < 0)
		return KASIR_ESQL;
	o.amount = db_get_i64(res, row, col + 2);
	o.past_expiry = col_bool(res, row, col + 3);
	o.access_days = db_get_i64(res, row, col + 4);
	kasir_strlcpy(o.customer_email, db_get(res, row, col + 5),
	              sizeof(o.customer_email));
	kasir_strlcpy(o.course_id, db_get(res, row, col + 6),
	              sizeof(o.course_id));
	o.flagged = col_bool(res, row, col + 7);
	o.partial_refund = col_bool(res, row, col + 8);
	o.disputed = col_bool(res, row, col + 9);
	o.reversed = col_bool(res, row, col + 10);
	o.has_transaction_id = db_get(res, row, col + 11) != NULL;
	if (o.has_transaction_id)
		kasir_strlcpy(o.transaction_id, db_get(res, row, col + 11),
		              sizeof(o.transaction_id));
	o.checked_before_paid = col_bool(res, row, col + 12);
	if (db_get(res, row, col + 13) != NULL)
		kasir_strlcpy(o.awaiting, db_get(res, row, col + 13),
		              sizeof(o.awaiting));
	o.id_taken = col_bool(res, row, col + 14);
	*ret = o;
	return 0;
}

int
store_lock_order(struct kasir_db *db, const char *order_id,
                 const char *checked_at, struct order_row *ret)
{
	const char *params[2] = {order_id, checked_at};
	PGresult *res = NULL;
	int rc;

	rc = db_exec(db, &st_lock, params, &res);
	if (rc < 0)
		return rc;
	if (PQntuples(res) != 1)
		rc = KASIR_ENOTFOUND;
	else
		rc = store_row_from(res, 0, 0, ret);
	PQclear(res);
	return rc;
}

/* The ORDER_SNAPSHOT columns, in the order snapshot_json() reads them. */
/* clang-format off */
#define SNAPSHOT_COLS                                                          \
	"order_id, status, course_id, course_title, amount,"                   \
	" currency, customer_name, customer_email, customer_phone,"            \
	" " TS("created_at") ","                                               \
	" " TS("expires_at") ","                                               \
	" redirect_url, transaction_id"

static const struct db_stmt st_snapshot = {
    .name = "order_snapshot",
    .sql = "SELECT " SNAPSHOT_COLS
           " FROM orders.orders WHERE order_id = $1",
    .nparams = 1,
};
/* clang-format on */

/* An ORDER_SNAPSHOT from row `row` of a result of SNAPSHOT_COLS. */
static int
snapshot_from(const PGresult *res, int row, cJSON **ret)
{
	cJSON *o, *cust;

	if (row >= PQntuples(res))
		return KASIR_ENOTFOUND;
	o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "order_id", db_get(res, row, 0));
	cJSON_AddStringToObject(o, "status", db_get(res, row, 1));
	cJSON_AddStringToObject(o, "course_id", db_get(res, row, 2));
	cJSON_AddStringToObject(o, "course_title", db_get(res, row, 3));
	cJSON_AddNumberToObject(o, "amount", (double)db_get_i64(res, row, 4));
	cJSON_AddStringToObject(o, "currency", db_get(res, row, 5));
	cust = cJSON_AddObjectToObject(o, "customer");
	if (cust == NULL)
		goto nomem;
	cJSON_AddStringToObject(cust, "name", db_get(res, row, 6));
	cJSON_AddStringToObject(cust, "email", db_get(res, row, 7));
	cJSON_AddStringToObject(cust, "phone", db_get(res, row, 8));
	cJSON_AddStringToObject(o, "created_at", db_get(res, row, 9));
	cJSON_AddStringToObject(o, "expires_at", db_get(res, row, 10));
	if (db_get(res, row, 11) != NULL)
		cJSON_AddStringToObject(o, "redirect_url",
		                        db_get(res, row, 11));
	if (db_get(res, row, 12) != NULL)
		cJSON_AddStringToObject(o, "transaction_id",
		                        db_get(res, row, 12));
	if (cJSON_GetObjectItemCaseSensitive(o, "expires_at") == NULL)
		goto nomem; /* the last add failed */
	*ret = o;
	return 0;
nomem:
	cJSON_Delete(o);
	return -ENOMEM;
}

int
store_order_snapshot(struct kasir_db *db, const char *order_id,
                     struct cJSON **ret)
{
	const char *params[1] = {order_id};
	PGresult *res = NULL;
	int rc;

	rc = db_exec(db, &st_snapshot, params, &res);
	if (rc < 0)
		return rc;
	rc = snapshot_from(res, 0, ret);
	PQclear(res);
	return rc;
}

/* ---- order events ---- */

int
store_emit(struct stream_producer *p, struct kasir_db *db, int type,
           const char *order_id, const struct cJSON *cur, struct cJSON *extra)
{
	cJSON *snap = NULL, *item;
	int rc = 0;

	if (cur != NULL)
		snap = cJSON_Duplicate(cur, true);
	else
		rc = store_order_snapshot(db, order_id, &snap);
	if (rc == 0 && snap == NULL)
		rc = -ENOMEM;
	if (rc < 0)
		goto out;
	while (extra != NULL && (item = extra->child) != NULL) {
		cJSON_DetachItemViaPointer(extra, item);
		cJSON_DeleteItemFromObjectCaseSensitive(snap, item->string);
		cJSON_AddItemToObject(snap, item->string, item);
	}
	rc = stream_append(p, db, (enum msg_type)type, snap, NULL);
out:
	cJSON_Delete(snap);
	cJSON_Delete(extra);
	return rc;
}

/* access.granted for an entitlement store_st_grant returned. */
static int
emit_granted(struct stream_producer *p, struct kasir_db *db,
             const char *order_id, const char *email, const char *until,
             const cJSON *snap)
{
	cJSON *extra = cJSON_CreateObject();

	if (extra == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(extra, "customer_email", email);
	if (until != NULL && until[0] != '\0')
		cJSON_AddStringToObject(extra, "valid_until", until);
	return store_emit(p, db, MSG_ACCESS_GRANTED, order_id, snap, extra);
}

static int
emit_revoked(struct stream_producer *p, struct kasir_db *db,
             const struct order_row *o, const char *reason, const cJSON *snap)
{
	cJSON *extra = cJSON_CreateObject();

	if (extra == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(extra, "customer_email", o->customer_email);
	cJSON_AddStringToObject(extra, "reason", reason);
	return store_emit(p, db, MSG_ACCESS_REVOKED, o->order_id, snap, extra);
}

/* ---- the statements of the evidence path: each takes arrays (one
 * element per row), so one message and a whole round run the same SQL ---- */

/* One row per message whose order exists: u.i is the message's 1-based
 * position; "recorded" says whether (source, ref) is recorded.  The probe
 * is a LATERAL with LIMIT 1, one index lookup per message: as an EXISTS,
 * the consumer's generic plan (db.h generic_plans) hashed the whole
 * evidence table at every execution. */
static const struct db_stmt st_lock_evidence = {
    .name = "order_lock_evidence",
    .sql = "SELECT u.i, " STORE_ROW_COLS(
        "o", "u.checked_at") ","
                             " rec.found IS NOT NULL AS recorded"
                             " FROM unnest($1::text[], $2::timestamptz[], "
                             "$3::text[],"
                             "  $4::bigint[]) WITH ORDINALITY AS u(order_id, "
                             "checked_at,"
                             "  source, ref, i)"
                             " JOIN orders.orders o ON o.order_id = u.order_id"
                             " LEFT JOIN LATERAL (SELECT 1 AS found"
                             "  FROM orders.evidence ev WHERE ev.source ="
                             "  u.source AND ev.ref = u.ref LIMIT 1) rec"
                             "  ON true"
                             " ORDER BY o.order_id, u.i FOR UPDATE OF o",
    .nparams = 4,
};

static const struct db_stmt st_evidence_ids = {
    .name = "order_evidence_ids",
    .sql = "SELECT nextval('orders.evidence_id_seq')"
           " FROM generate_series(1, $1::int)",
    .nparams = 1,
};

static const struct db_stmt st_keep_unknown = {
    .name = "order_unknown_insert",
    .sql = "INSERT INTO orders.unknown_notifications (source, ref,"
           " stream_seq, order_id, transaction_status, gross_amount,"
           " received_at, raw) SELECT * FROM unnest($1::text[],"
           " $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],"
           " $7::timestamptz[], $8::jsonb[])"
           " ON CONFLICT (source, ref) DO NOTHING",
    .nparams = 8,
};

static const struct db_stmt st_record = {
    .name = "order_evidence_insert",
    .sql = "INSERT INTO orders.evidence (id, order_id, source, ref,"
           " stream_seq, kind, transaction_status, fraud_status,"
           " gross_amount, currency, payment_type, transaction_id,"
           " received_at, status_before, status_after, result, reason, raw)"
           " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[],"
           " $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[],"
           " $9::text[], $10::text[], $11::text[], $12::text[],"
           " $13::timestamptz[], $14::text[], $15::text[], $16::text[],"
           " $17::text[], $18::jsonb[])"
           " ON CONFLICT (source, ref) DO NOTHING RETURNING id",
    .nparams = 18,
};

static const struct db_stmt st_transition = {
    .name = "order_transition_insert",
    .sql = "INSERT INTO orders.transitions (order_id, from_status,"
           " to_status, evidence_source, evidence_ref, evidence_id, reason)"
           " SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
           " $4::text[], $5::bigint[], $6::bigint[], $7::text[])",
    .nparams = 7,
};

/* Everything evidence changes on an order row: status (the transition
 * row is already written: the statement trigger of migration 0011 checks
 * it; updated_at moves with it here, nowhere else), the transaction
 * learned, the flags, the confirmation awaited; returns the snapshot as of
 * after. */
/* clang-format off */
static const struct db_stmt st_update = {
    .name = "order_update",
    .sql = "UPDATE orders.orders o SET"
           " status = coalesce(u.new_status, o.status),"
           " paid_at = CASE WHEN u.new_status = 'PAID'"
           "  THEN coalesce(u.proven_at, now()) ELSE o.paid_at END,"
           " transaction_id = CASE WHEN NOT u.learn THEN o.transaction_id"
           "  WHEN u.decides THEN coalesce(u.txn, o.transaction_id)"
           "  ELSE coalesce(o.transaction_id, u.txn) END,"
           " payment_type = CASE WHEN u.learn"
           "  THEN coalesce(u.ptype, o.payment_type)"
           "  ELSE o.payment_type END,"
           " flagged = o.flagged OR u.set_flagged,"
           " flag_reason = CASE WHEN u.set_flagged THEN u.why"
           "  ELSE o.flag_reason END,"
           " partial_refund = o.partial_refund OR u.set_partial,"
           " disputed = o.disputed OR u.set_disputed,"
           " reversed = o.reversed OR u.set_reversed,"
           " awaiting_since = CASE WHEN u.await_end THEN NULL"
           "  WHEN u.await IS NOT NULL"
           "  THEN coalesce(o.awaiting_since, now())"
           "  ELSE o.awaiting_since END,"
           " awaiting_status = CASE WHEN u.await_end THEN NULL"
           "  ELSE coalesce(u.await, o.awaiting_status) END,"
           " contradicted_at = CASE WHEN u.contra"
           "  THEN coalesce(o.contradicted_at, now())"
           "  ELSE o.contradicted_at END,"
           " updated_at = CASE WHEN u.new_status <> o.status"
           "  OR u.set_flagged OR u.set_partial"
           "  OR u.set_disputed OR u.set_reversed OR u.await_end"
           "  OR u.await IS NOT NULL THEN now() ELSE o.updated_at END"
           " FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[],"
           "  $5::text[], $6::bool[], $7::bool[], $8::text[], $9::bool[],"
           "  $10::bool[], $11::bool[], $12::text[], $13::bool[],"
           "  $14::bool[], $15::timestamptz[]) AS u(oid, new_status, learn,"
           "  txn, ptype, decides, set_flagged, why, set_partial,"
           "  set_disputed, set_reversed, await, await_end, contra,"
           "  proven_at)"
           " WHERE o.order_id = u.oid"
           " RETURNING o.order_id, o.status, o.course_id, o.course_title,"
           " o.amount, o.currency, o.customer_name, o.customer_email,"
           " o.customer_phone, " TS("o.created_at") ","
           " " TS("o.expires_at") ", o.redirect_url, o.transaction_id",
    .nparams = 15,
};

/* Grants the entitlement of each PAID order named (order, source,
 * evidence id, audit id, reason); RETURNING order_id, email, valid_until
 * for access.granted.  An order not PAID returns no row. */
static const struct db_stmt st_grant = {
    .name = "order_grant",
    .sql = "WITH ev AS (INSERT INTO orders.entitlement_events (order_id,"
           "  customer_email, course_id, action, valid_until, source,"
           "  evidence_id, audit_id, reason)"
           " SELECT o.order_id, lower(o.customer_email), o.course_id,"
           "  'grant', CASE WHEN o.access_days IS NULL THEN NULL"
           "  ELSE now() + o.access_days * interval '1 day' END,"
           "  u.source, u.evidence_id, u.audit_id, u.reason"
           " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],"
           "  $5::text[]) AS u(oid, source, evidence_id, audit_id, reason)"
           " JOIN orders.orders o ON o.order_id = u.oid"
           " WHERE o.status = 'PAID'"
           " RETURNING id, order_id, customer_email, course_id, valid_until)"
           " INSERT INTO orders.entitlements (order_id, customer_email,"
           " course_id, valid_until, grant_event_id)"
           " SELECT order_id, customer_email, course_id, valid_until, id"
           " FROM ev RETURNING order_id, customer_email,"
           " " TS("valid_until"),
    .nparams = 5,
};

/* Revokes the active entitlement of each order named (order, source,
 * evidence id, reason). */
static const struct db_stmt st_revoke = {
    .name = "order_revoke",
    .sql = "WITH ev AS (INSERT INTO orders.entitlement_events (order_id,"
           "  customer_email, course_id, action, source, evidence_id, reason)"
           " SELECT o.order_id, lower(o.customer_email), o.course_id,"
           "  'revoke', u.source, u.evidence_id, u.reason"
           " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])"
           "  AS u(oid, source, evidence_id, reason)"
           " JOIN orders.orders o ON o.order_id = u.oid"
           " RETURNING id, order_id)"
           " UPDATE orders.entitlements e SET revoked_at = now(),"
           " revoke_event_id = ev.id FROM ev"
           " WHERE e.order_id = ev.order_id AND e.revoked_at IS NULL",
    .nparams = 4,
};
/* clang-format on */

static const char *
tf(bool b)
{
	return b ? "true" : "false";
}

/* ---- grants and revocations by an operator (admin.c) ---- */

int
store_grant(struct stream_producer *p, struct kasir_db *db,
            const struct order_row *o, const char *source, const char *audit_id,
            const char *reason)
{
	const char *v[5] = {o->order_id, source, NULL, audit_id, reason};
	struct db_cols c = {.stmt = &st_grant};
	PGresult *res = NULL;
	int rc;

	db_cols_row(&c, v);
	rc = db_cols_exec(db, &c, &res);
	db_cols_free(&c);
	if (rc < 0)
		return rc;
	if (PQntuples(res) != 1) /* not PAID: the caller checked it */
		rc = KASIR_ECONFLICT;
	else
		rc = emit_granted(p, db, o->order_id, db_get(res, 0, 1),
		                  db_get(res, 0, 2), NULL);
	PQclear(res);
	return rc;
}

int
store_revoke(struct stream_producer *p, struct kasir_db *db,
             const struct order_row *o, const char *source, const char *reason)
{
	const char *v[4] = {o->order_id, source, NULL, reason};
	struct db_cols c = {.stmt = &st_revoke};
	int rc;

	db_cols_row(&c, v);
	rc = db_cols_exec(db, &c, NULL);
	db_cols_free(&c);
	if (rc < 0)
		return rc;
	return emit_revoked(p, db, o, reason, NULL);
}

/* ---- the evidence path (evidence.h) ---- */

int
store_evidence_ids(struct kasir_db *db, struct evidence_rec *recs, size_t n)
{
	char count[24];
	const char *params[1] = {count};
	PGresult *res = NULL;
	int rc;

	snprintf(count, sizeof(count), "%zu", n);
	if ((rc = db_exec(db, &st_evidence_ids, params, &res)) < 0)
		return rc;
	if ((size_t)PQntuples(res) != n) {
		PQclear(res);
		return KASIR_ESQL;
	}
	for (size_t i = 0; i < n; i++)
		kasir_strlcpy(recs[i].id, db_get(res, (int)i, 0),
		              sizeof(recs[i].id));
	PQclear(res);
	return 0;
}

int
store_evidence_lock(struct kasir_db *db, struct evidence_rec *const *recs,
                    size_t n)
{
	struct db_cols c = {.stmt = &st_lock_evidence};
	PGresult *res = NULL;
	int rc, recorded, first;

	for (size_t i = 0; i < n; i++) {
		const struct evidence_rec *r = recs[i];
		const char *v[4] = {r->e.order_id, r->e.checked_at, r->e.source,
		                    r->ref};
		db_cols_row(&c, v);
		recs[i]->fate = EV_FATE_UNKNOWN; /* until its row is seen */
	}
	rc = db_cols_exec(db, &c, &res);
	db_cols_free(&c);
	if (rc < 0)
		return rc;
	/* columns by name: no column count kept by hand (STORE_ROW_COLS
	 * starts with order_id) */
	recorded = PQfnumber(res, "recorded");
	first = PQfnumber(res, "order_id");
	if (recorded < 0 || first < 0)
		rc = KASIR_ESQL;
	for (int row = 0; row < PQntuples(res) && rc == 0; row++) {
		int64_t i = db_get_i64(res, row, 0);
		struct evidence_rec *r;

		if (i < 1 || (size_t)i > n ||
		    recs[i - 1]->fate != EV_FATE_UNKNOWN) {
			rc = KASIR_ESQL; /* cannot happen: refuse to guess */
			break;
		}
		r = recs[i - 1];
		rc = store_row_from(res, row, first, &r->before);
		r->fate = db_get(res, row, recorded)[0] == 't' ? EV_FATE_DUP
		                                               : EV_FATE_APPLY;
	}
	PQclear(res);
	return rc;
}

/* The statements of store_effects_apply(), in the order they run (an
 * evidence row before the transition naming it, the transition before the
 * status change, the status change before the grant). */
enum {
	S_KEEP_UNKNOWN,
	S_RECORD,
	S_TRANSITION,
	S_UPDATE,
	S_GRANT,
	S_REVOKE,
	S_COUNT
};
static const struct db_stmt *const effect_stmts[S_COUNT] = {
    [S_KEEP_UNKNOWN] = &st_keep_unknown,
    [S_RECORD] = &st_record,
    [S_TRANSITION] = &st_transition,
    [S_UPDATE] = &st_update,
    [S_GRANT] = &st_grant,
    [S_REVOKE] = &st_revoke,
};

/* Adds the SQL row of effect f to its statement's columns. */
static void
effect_row(struct db_cols *c, const struct effect *f)
{
	const struct evidence_rec *r = f->rec;
	const struct evidence_msg *e = &r->e;

	switch (f->kind) {
	case EFFECT_KEEP_UNKNOWN: {
		const char *v[8] = {e->source,
		                    r->ref,
		                    r->seq,
		                    e->order_id,
		                    e->in.transaction_status,
		                    e->in.gross_amount,
		                    e->received_at,
		                    r->raw};
		db_cols_row(&c[S_KEEP_UNKNOWN], v);
		return;
	}
	case EFFECT_RECORD: {
		const char *v[18] = {r->id,
		                     e->order_id,
		                     e->source,
		                     r->ref,
		                     r->seq,
		                     e->kind,
		                     e->in.transaction_status,
		                     e->in.fraud_status,
		                     e->in.gross_amount,
		                     e->in.currency,
		                     e->payment_type,
		                     e->transaction_id,
		                     e->received_at,
		                     order_status_name(r->before.status),
		                     order_status_name(r->after),
		                     evidence_result_name(r->d.result),
		                     r->d.reason,
		                     r->raw};
		db_cols_row(&c[S_RECORD], v);
		return;
	}
	case EFFECT_TRANSITION: {
		const char *v[7] = {e->order_id,
		                    order_status_name(r->before.status),
		                    order_status_name(r->d.to),
		                    e->source,
		                    r->ref,
		                    r->id,
		                    r->d.reason};
		db_cols_row(&c[S_TRANSITION], v);
		return;
	}
	case EFFECT_UPDATE: {
		const struct order_update *u = &f->u;
		const char *v[15] = {
		    u->order_id,
		    u->status,
		    tf(u->learn_txn),
		    u->transaction_id,
		    u->payment_type,
		    tf(u->txn_from_transition),
		    tf((u->flags & OFLAG_FLAGGED) != 0),
		    u->flag_reason,
		    tf((u->flags & OFLAG_PARTIAL_REFUND) != 0),
		    tf((u->flags & OFLAG_DISPUTED) != 0),
		    tf((u->flags & OFLAG_REVERSED) != 0),
		    u->awaiting,
		    tf(u->awaiting_clear),
		    tf(u->contradicted),
		    u->paid_at,
		};
		db_cols_row(&c[S_UPDATE], v);
		return;
	}
	case EFFECT_GRANT: {
		const char *v[5] = {e->order_id, e->source, r->id, NULL,
		                    r->d.reason};
		db_cols_row(&c[S_GRANT], v);
		return;
	}
	case EFFECT_REVOKE: {
		const char *v[4] = {e->order_id, e->source, r->id, r->d.reason};
		db_cols_row(&c[S_REVOKE], v);
		return;
	}
	case EFFECT_EVENT:
		return;
	}
}

/* The effects one statement was sent for, in the order of its rows until
 * a result row comes out of that order; then sorted by order id. */
struct sent {
	const struct effect **v;
	size_t n;
	bool sorted;
};

static int
sent_cmp(const void *a, const void *b)
{
	const struct effect *const *x = a, *const *y = b;

	return strcmp((*x)->rec->e.order_id, (*y)->rec->e.order_id);
}

/* bsearch(): an order id against an effect */
static int
sent_key_cmp(const void *key, const void *b)
{
	const struct effect *const *y = b;

	return strcmp(key, (*y)->rec->e.order_id);
}

/* The effect of the result row naming order_id: the row's own position
 * first (the rows of a nested loop over unnest come in its order), else a
 * binary search (a round names each order at most once; a hash join
 * returns the rows in the table's order, and a linear search per row made
 * a round of 255 cost 32,000 strcmp()s). */
static const struct effect *
sent_for(struct sent *sent, int row, const char *order_id)
{
	const struct effect **hit;

	if (order_id == NULL)
		return NULL;
	if (!sent->sorted && (size_t)row < sent->n &&
	    strcmp(sent->v[row]->rec->e.order_id, order_id) == 0)
		return sent->v[row];
	if (!sent->sorted) {
		qsort(sent->v, sent->n, sizeof(*sent->v), sent_cmp);
		sent->sorted = true;
	}
	hit =
	    bsearch(order_id, sent->v, sent->n, sizeof(*sent->v), sent_key_cmp);
	return hit != NULL ? *hit : NULL;
}

/* Reads the result of statement s, sent for the effects in sent. */
static int
effect_result(struct kasir_db *db, int s, struct sent *sent)
{
	PGresult *res = NULL;
	const struct effect *f;
	int rc;

	if ((rc = db_pipe_result(db, &res)) < 0)
		return rc;
	switch (s) {
	case S_RECORD: /* every row recorded, none there before */
		if ((size_t)PQntuples(res) != sent->n)
			rc = KASIR_ECONFLICT;
		break;
	case S_UPDATE:
		if ((size_t)PQntuples(res) != sent->n)
			rc = KASIR_ECONFLICT;
		for (int row = 0; row < PQntuples(res) && rc == 0; row++) {
			f = sent_for(sent, row, db_get(res, row, 0));
			if (f == NULL || f->rec->snap != NULL)
				rc = KASIR_ESQL;
			else
				rc = snapshot_from(res, row, &f->rec->snap);
		}
		break;
	case S_GRANT: /* a decision granted only with PAID */
		if ((size_t)PQntuples(res) != sent->n)
			rc = KASIR_ECONFLICT;
		for (int row = 0; row < PQntuples(res) && rc == 0; row++) {
			const char *until = db_get(res, row, 2);
			f = sent_for(sent, row, db_get(res, row, 0));
			if (f == NULL) {
				rc = KASIR_ESQL;
				break;
			}
			kasir_strlcpy(f->rec->grant_email, db_get(res, row, 1),
			              sizeof(f->rec->grant_email));
			kasir_strlcpy(f->rec->grant_until,
			              until != NULL ? until : "",
			              sizeof(f->rec->grant_until));
		}
		break;
	default:
		break;
	}
	PQclear(res);
	return rc;
}

/* The order events of the effects, in list order. */
static int
effects_emit(struct stream_producer *p, struct kasir_db *db,
             const struct effect_list *l)
{
	int rc = 0;

	for (size_t i = 0; i < l->n && rc == 0; i++) {
		const struct effect *f = &l->v[i];
		const struct evidence_rec *r = f->rec;
		cJSON *data;

		switch (f->kind) {
		case EFFECT_GRANT:
			rc = emit_granted(p, db, r->e.order_id, r->grant_email,
			                  r->grant_until, r->snap);
			break;
		case EFFECT_REVOKE:
			rc = emit_revoked(p, db, &r->before, r->d.reason,
			                  r->snap);
			break;
		case EFFECT_EVENT:
			if (f->snapshot) {
				/* store_emit consumes the fields */
				data = cJSON_Duplicate(f->data, true);
				if (data == NULL)
					return -ENOMEM;
				rc = store_emit(p, db, f->type, r->e.order_id,
				                r->snap, data);
			} else {
				rc =
				    stream_append(p, db, (enum msg_type)f->type,
				                  f->data, NULL);
			}
			break;
		default:
			break;
		}
	}
	return rc;
}

int
store_effects_apply(struct stream_producer *p, struct kasir_db *db,
                    const struct effect_list *l)
{
	static const int stmt_of[] = {
	    [EFFECT_KEEP_UNKNOWN] = S_KEEP_UNKNOWN,
	    [EFFECT_RECORD] = S_RECORD,
	    [EFFECT_TRANSITION] = S_TRANSITION,
	    [EFFECT_UPDATE] = S_UPDATE,
	    [EFFECT_GRANT] = S_GRANT,
	    [EFFECT_REVOKE] = S_REVOKE,
	    [EFFECT_EVENT] = -1,
	};
	struct db_cols c[S_COUNT];
	struct sent sent[S_COUNT] = {{0}};
	const struct effect **slots;
	int rc = 0, s;

	/* one slot per SQL effect, grouped by statement */
	slots = calloc(l->n > 0 ? l->n : 1, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++)
		if ((s = stmt_of[l->v[i].kind]) >= 0)
			sent[s].n++;
	for (s = 0, rc = 0; s < S_COUNT; s++) {
		sent[s].v = slots + rc;
		rc += (int)sent[s].n;
		sent[s].n = 0;
		c[s] = (struct db_cols){.stmt = effect_stmts[s]};
	}
	for (size_t i = 0; i < l->n; i++) {
		if ((s = stmt_of[l->v[i].kind]) < 0)
			continue;
		effect_row(c, &l->v[i]);
		sent[s].v[sent[s].n++] = &l->v[i];
	}
	rc = db_pipe_begin(db, effect_stmts, S_COUNT);
	for (s = 0; s < S_COUNT && rc == 0; s++)
		if (sent[s].n > 0)
			rc = db_cols_send(db, &c[s]);
	if (rc == 0)
		rc = db_pipe_sync(db);
	for (s = 0; s < S_COUNT && rc == 0; s++)
		if (sent[s].n > 0)
			rc = effect_result(db, s, &sent[s]);
	db_pipe_end(db);
	for (s = 0; s < S_COUNT; s++)
		db_cols_free(&c[s]);
	free(slots);
	if (rc < 0)
		return rc;
	return effects_emit(p, db, l);
}

void
effects_free(struct effect_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		cJSON_Delete(l->v[i].data);
	free(l->v);
	*l = (struct effect_list){0};
}
