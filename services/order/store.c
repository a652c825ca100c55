/*
 * store.c - SQL on schema "orders".  Every statement is parameterized; the
 * ones that change state run inside the caller's transaction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "db_json.h"
#include "err.h"
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

/* One statement for everything evidence changes on the order row: status
 * (the transition row is already written: the trigger checks it), the
 * transaction learned, the flags; returns the snapshot as of after. */
const struct db_stmt store_st_update = {
    .name = "order_update",
    .sql = "UPDATE orders.orders SET"
           " status = coalesce($2, status),"
           " paid_at = CASE WHEN $2 = 'PAID'"
           "  THEN coalesce($15::timestamptz, now()) ELSE paid_at END,"
           " transaction_id = CASE WHEN NOT $3 THEN transaction_id"
           "  WHEN $6 THEN coalesce($4, transaction_id)"
           "  ELSE coalesce(transaction_id, $4) END,"
           " payment_type = CASE WHEN $3 THEN coalesce($5, payment_type)"
           "  ELSE payment_type END,"
           " flagged = flagged OR $7,"
           " flag_reason = CASE WHEN $7 THEN $8 ELSE flag_reason END,"
           " partial_refund = partial_refund OR $9,"
           " disputed = disputed OR $10,"
           " reversed = reversed OR $11,"
           " awaiting_since = CASE WHEN $13::bool THEN NULL"
           "  WHEN $12::text IS NOT NULL"
           "  THEN coalesce(awaiting_since, now()) ELSE awaiting_since END,"
           " awaiting_status = CASE WHEN $13::bool THEN NULL"
           "  ELSE coalesce($12::text, awaiting_status) END,"
           " contradicted_at = CASE WHEN $14::bool"
           "  THEN coalesce(contradicted_at, now()) ELSE contradicted_at END,"
           " updated_at = CASE WHEN $7 OR $9 OR $10 OR $11 OR $13::bool"
           "  OR $12::text IS NOT NULL THEN now() ELSE updated_at END"
           " WHERE order_id = $1"
           " RETURNING " SNAPSHOT_COLS,
    .nparams = STORE_UPDATE_NPARAMS,
};
/* clang-format on */

int
store_snapshot_from(const PGresult *res, cJSON **ret)
{
	cJSON *o, *cust;

	if (PQntuples(res) != 1)
		return KASIR_ENOTFOUND;
	o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "order_id", db_get(res, 0, 0));
	cJSON_AddStringToObject(o, "status", db_get(res, 0, 1));
	cJSON_AddStringToObject(o, "course_id", db_get(res, 0, 2));
	cJSON_AddStringToObject(o, "course_title", db_get(res, 0, 3));
	cJSON_AddNumberToObject(o, "amount", (double)db_get_i64(res, 0, 4));
	cJSON_AddStringToObject(o, "currency", db_get(res, 0, 5));
	cust = cJSON_AddObjectToObject(o, "customer");
	if (cust == NULL)
		goto nomem;
	cJSON_AddStringToObject(cust, "name", db_get(res, 0, 6));
	cJSON_AddStringToObject(cust, "email", db_get(res, 0, 7));
	cJSON_AddStringToObject(cust, "phone", db_get(res, 0, 8));
	cJSON_AddStringToObject(o, "created_at", db_get(res, 0, 9));
	cJSON_AddStringToObject(o, "expires_at", db_get(res, 0, 10));
	if (db_get(res, 0, 11) != NULL)
		cJSON_AddStringToObject(o, "redirect_url", db_get(res, 0, 11));
	if (db_get(res, 0, 12) != NULL)
		cJSON_AddStringToObject(o, "transaction_id",
		                        db_get(res, 0, 12));
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
	rc = store_snapshot_from(res, ret);
	PQclear(res);
	return rc;
}

static const char *
tf(bool b)
{
	return b ? "true" : "false";
}

bool
store_update_needed(const struct order_update *u)
{
	return u->status != NULL || u->learn_txn || u->flags != 0 ||
	       u->awaiting != NULL || u->awaiting_clear;
}

void
store_update_params(const struct order_update *u,
                    const char *params[STORE_UPDATE_NPARAMS])
{
	params[0] = u->order_id;
	params[1] = u->status;
	params[2] = tf(u->learn_txn);
	params[3] = u->transaction_id;
	params[4] = u->payment_type;
	params[5] = tf(u->txn_from_transition);
	params[6] = tf((u->flags & OFLAG_FLAGGED) != 0);
	params[7] = u->flag_reason;
	params[8] = tf((u->flags & OFLAG_PARTIAL_REFUND) != 0);
	params[9] = tf((u->flags & OFLAG_DISPUTED) != 0);
	params[10] = tf((u->flags & OFLAG_REVERSED) != 0);
	params[11] = u->awaiting;
	params[12] = tf(u->awaiting_clear);
	params[13] = tf(u->contradicted);
	params[14] = u->paid_at;
}

int
store_update(struct kasir_db *db, const struct order_update *u,
             struct cJSON **ret_snap)
{
	const char *params[STORE_UPDATE_NPARAMS];
	PGresult *res = NULL;
	int rc;

	store_update_params(u, params);
	rc = db_exec(db, &store_st_update, params, &res);
	if (rc < 0)
		return rc;
	rc = store_snapshot_from(res, ret_snap);
	PQclear(res);
	return rc;
}

/* The rows of stmt as JSON (common/db_json.c maps the column types);
 * statements bound themselves with LIMIT (ORDER_EXPORT_MAX at most). */
int
store_rows_json(struct kasir_db *db, const struct db_stmt *stmt,
                const char *const *params, struct cJSON **ret)
{
	PGresult *res = NULL;
	cJSON *arr;
	int rc;

	if ((rc = db_exec(db, stmt, params, &res)) < 0)
		return rc;
	arr = db_rows_json(res);
	PQclear(res);
	if (arr == NULL)
		return -ENOMEM;
	*ret = arr;
	return 0;
}

/* SQL reads best one clause per line: */
/* clang-format off */
static const struct db_stmt st_view_order = {
    .name = "order_view_order",
    .sql = "SELECT order_id, status, course_id, course_title, amount,"
           " currency, customer_name, customer_email, customer_phone,"
           " coalesce(access_days::text || 'd', 'lifetime') AS access,"
           " " TS("created_at") " AS created_at,"
           " " TS("updated_at") " AS updated_at,"
           " " TS("expires_at") " AS expires_at,"
           " " TS("paid_at") " AS paid_at,"
           " snap_token, redirect_url, snap_error, snap_attempts,"
           " needs_reconcile, transaction_id, payment_type, flagged,"
           " flag_reason, partial_refund, disputed, reversed,"
           " CASE WHEN awaiting_since IS NOT NULL THEN"
           "  'awaiting confirmation since ' || " TS("awaiting_since")
           " END AS confirmation,"
           " " TS("awaiting_since") " AS awaiting_since, awaiting_status,"
           " " TS("contradicted_at") " AS contradicted_at"
           " FROM orders.orders WHERE order_id = $1",
    .nparams = 1,
};

static const struct db_stmt st_view_timeline = {
    .name = "order_view_timeline",
    .sql = "SELECT t.id, t.from_status AS \"from\", t.to_status AS \"to\","
           " t.reason, " TS("t.at") " AS at,"
           " t.evidence_source AS source, t.evidence_ref AS ref,"
           " e.transaction_status, e.fraud_status,"
           " " TS("e.received_at") " AS received_at"
           " FROM orders.transitions t"
           " LEFT JOIN orders.evidence e ON e.id = t.evidence_id"
           " WHERE t.order_id = $1 ORDER BY t.id",
    .nparams = 1,
};

static const struct db_stmt st_view_evidence = {
    .name = "order_view_evidence",
    .sql = "SELECT id, source, ref, stream_seq, kind, transaction_status,"
           " fraud_status, gross_amount, currency, payment_type,"
           " transaction_id,"
           " " TS("received_at") " AS received_at,"
           " " TS("recorded_at") " AS recorded_at,"
           " status_before, status_after, result, reason,"
           " CASE WHEN $2 THEN raw END AS raw"
           " FROM orders.evidence WHERE order_id = $1 ORDER BY id",
    .nparams = 2,
};

static const struct db_stmt st_view_entitlements = {
    .name = "order_view_entitlements",
    .sql = "SELECT id, action, customer_email, course_id,"
           " " TS("valid_until") " AS valid_until,"
           " source, evidence_id, audit_id, reason, " TS("at") " AS at"
           " FROM orders.entitlement_events WHERE order_id = $1"
           " ORDER BY id",
    .nparams = 1,
};

static const struct db_stmt st_view_access = {
    .name = "order_view_access",
    .sql = "SELECT id, customer_email, course_id,"
           " " TS("granted_at") " AS granted_at,"
           " " TS("valid_until") " AS valid_until,"
           " " TS("revoked_at") " AS revoked_at,"
           " (revoked_at IS NULL AND"
           "  (valid_until IS NULL OR valid_until > now())) AS active"
           " FROM orders.entitlements WHERE order_id = $1 ORDER BY id",
    .nparams = 1,
};

static const struct db_stmt st_view_audit = {
    .name = "order_view_audit",
    .sql = "SELECT id, " TS("at") " AS at, actor, role, cmd, reason,"
           " incident, before, after, result, error"
           " FROM orders.audit WHERE order_id = $1 ORDER BY id",
    .nparams = 1,
};
/* clang-format on */

static int
add_rows(cJSON *to, const char *name, struct kasir_db *db,
         const struct db_stmt *st, const char *const *params)
{
	cJSON *arr;
	int rc = store_rows_json(db, st, params, &arr);

	if (rc < 0)
		return rc;
	cJSON_AddItemToObject(to, name, arr);
	return 0;
}

int
store_order_view(struct kasir_db *db, const char *order_id, bool full,
                 struct cJSON **ret)
{
	const char *p1[1] = {order_id};
	const char *p2[2] = {order_id, full ? "true" : "false"};
	cJSON *rows = NULL, *view = NULL, *o;
	int rc;

	rc = store_rows_json(db, &st_view_order, p1, &rows);
	if (rc < 0)
		return rc;
	if (cJSON_GetArraySize(rows) != 1) {
		cJSON_Delete(rows);
		return KASIR_ENOTFOUND;
	}
	o = cJSON_DetachItemFromArray(rows, 0);
	cJSON_Delete(rows);
	view = o;
	if (!full) /* the website never sees the Snap token again here */
		cJSON_DeleteItemFromObject(view, "snap_token");
	if ((rc = add_rows(view, "timeline", db, &st_view_timeline, p1)) < 0 ||
	    (rc = add_rows(view, "evidence", db, &st_view_evidence, p2)) < 0 ||
	    (rc = add_rows(view, "entitlement_history", db,
	                   &st_view_entitlements, p1)) < 0 ||
	    (rc = add_rows(view, "entitlements", db, &st_view_access, p1)) < 0)
		goto fail;
	if (full && (rc = add_rows(view, "audit", db, &st_view_audit, p1)) < 0)
		goto fail;
	*ret = view;
	return 0;
fail:
	cJSON_Delete(view);
	return rc;
}

/* clang-format off */
static const struct db_stmt st_access = {
    .name = "order_access",
    .sql = "SELECT order_id, " TS("valid_until")
           " FROM orders.entitlements"
           " WHERE customer_email = lower($1) AND course_id = $2"
           " AND revoked_at IS NULL"
           " AND (valid_until IS NULL OR valid_until > now())"
           " ORDER BY valid_until DESC NULLS FIRST LIMIT 1",
    .nparams = 2,
};
/* clang-format on */

int
store_access(struct kasir_db *db, const char *email, const char *course_id,
             struct cJSON **ret)
{
	const char *params[2] = {email, course_id};
	PGresult *res = NULL;
	cJSON *o;
	int rc;

	rc = db_exec(db, &st_access, params, &res);
	if (rc < 0)
		return rc;
	o = cJSON_CreateObject();
	if (o == NULL) {
		PQclear(res);
		return -ENOMEM;
	}
	if (PQntuples(res) == 1) {
		cJSON_AddBoolToObject(o, "active", true);
		if (db_get(res, 0, 1) != NULL)
			cJSON_AddStringToObject(o, "valid_until",
			                        db_get(res, 0, 1));
		else
			cJSON_AddNullToObject(o, "valid_until");
		cJSON_AddStringToObject(o, "order_id", db_get(res, 0, 0));
	} else {
		cJSON_AddBoolToObject(o, "active", false);
		cJSON_AddNullToObject(o, "valid_until");
		cJSON_AddNullToObject(o, "order_id");
	}
	PQclear(res);
	*ret = o;
	return 0;
}

const struct db_stmt store_st_grant = {
    .name = "order_grant",
    .sql = "WITH ev AS (INSERT INTO orders.entitlement_events (order_id,"
           " customer_email, course_id, action, valid_until, source,"
           " evidence_id, audit_id, reason)"
           " SELECT order_id, lower(customer_email), course_id, 'grant',"
           " CASE WHEN access_days IS NULL THEN NULL"
           " ELSE now() + access_days * interval '1 day' END,"
           " $2, $3::bigint, $4::bigint, $5 FROM orders.orders"
           " WHERE order_id = $1 AND status = 'PAID'"
           " RETURNING id, order_id, customer_email, course_id, valid_until)"
           " INSERT INTO orders.entitlements (order_id, customer_email,"
           " course_id, valid_until, grant_event_id)"
           " SELECT order_id, customer_email, course_id, valid_until, id"
           " FROM ev RETURNING customer_email, " TS("valid_until"),
    .nparams = 5,
};

int
store_grant(struct kasir_db *db, const struct order_row *o, const char *source,
            const char *evidence_id, const char *audit_id, const char *reason,
            PGresult **ret_res)
{
	const char *params[5] = {o->order_id, source, evidence_id, audit_id,
	                         reason};

	return db_exec(db, &store_st_grant, params, ret_res);
}

const struct db_stmt store_st_revoke = {
    .name = "order_revoke",
    .sql = "WITH ev AS (INSERT INTO orders.entitlement_events (order_id,"
           " customer_email, course_id, action, source, evidence_id, reason)"
           " SELECT order_id, lower(customer_email), course_id, 'revoke',"
           " $2, $3::bigint, $4 FROM orders.orders WHERE order_id = $1"
           " RETURNING id)"
           " UPDATE orders.entitlements SET revoked_at = now(),"
           " revoke_event_id = (SELECT id FROM ev)"
           " WHERE order_id = $1 AND revoked_at IS NULL",
    .nparams = 4,
};

int
store_revoke(struct kasir_db *db, const struct order_row *o, const char *source,
             const char *evidence_id, const char *reason)
{
	const char *params[4] = {o->order_id, source, evidence_id, reason};

	return db_exec(db, &store_st_revoke, params, NULL);
}
