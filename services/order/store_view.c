/*
 * store_view.c - read-only SQL on schema "orders" for the API and the
 * admin socket: an order with its timeline, evidence, entitlements and
 * audit; generic rows as JSON; the access check.  The writes are store.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "db_json.h"
#include "err.h"
#include "order.h"

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

/*
 * Whole-table facts are read with nested loops switched off.  Their joins
 * compare every PAID order with the entitlements; with statistics from
 * before a burst of orders (autovacuum analyzes a minute or more later)
 * the planner expects a handful of rows on each side and picks a nested
 * loop that rescans every entitlement for every order: 5.2 s for 9,000
 * PAID orders, measured in bench/f-confirm, every 15 s.  A hash join does
 * the same work in one pass over each table, whatever the estimate.
 */
static const struct db_stmt st_facts_joins = {
    .name = "order_facts_joins",
    .sql = "SELECT set_config('enable_nestloop', 'off', true)",
    .nparams = 0,
};

int
store_facts_begin(struct kasir_db *db)
{
	int rc;

	if ((rc = db_begin(db)) < 0)
		return rc;
	if ((rc = db_exec(db, &st_facts_joins, NULL, NULL)) < 0)
		db_rollback(db);
	return rc;
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
           " " ENTITLEMENT_ACTIVE " AS active"
           " FROM orders.entitlements e WHERE order_id = $1 ORDER BY id",
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
           " FROM orders.entitlements e"
           " WHERE customer_email = lower($1) AND course_id = $2"
           " AND " ENTITLEMENT_ACTIVE
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
