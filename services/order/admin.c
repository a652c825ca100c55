/*
 * admin.c - kasir-order's admin socket commands (kasirctl).
 *
 *   status                       counts, stream cursors
 *   order.show {order_id}        everything kasir-order knows of one order
 *   orders.pending               pending orders (doctor, reconcile)
 *   orders.unknown_notifications evidence naming unknown orders
 *   doctor.facts                 inconsistencies for kasirctl doctor
 *   drill.revoke_access {order_id}  engineer + reason: kasirctl drill 6.2
 *                                takes the access of a PAID drill order
 *                                (its course is drill: true) away; any
 *                                other order is refused
 *   access.grant {order_id}      engineer + reason: re-issue a MISSING
 *                                entitlement of a PAID-with-evidence order
 *   export.orders {from,to}      engineer: orders for finance
 *   orders.find {email|phone|name, limit}
 *                                support: a customer's orders, newest
 *                                first (customers rarely know the id)
 *
 * There is deliberately no command that changes an order's status: PAID
 * comes only from Midtrans evidence (evidence.c).  Changing commands are
 * audited in orders.audit in the same transaction as the change;
 * refusals are audited too.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "admin_audit.h"
#include "admin_socket.h"
#include "db_json.h"
#include "err.h"
#include "log.h"
#include "order.h"
#include "stream.h"
#include "util.h"

static int
fail(char *code, size_t code_len, char *msg, size_t msg_len, int rc,
     const char *c, const char *m)
{
	snprintf(code, code_len, "%s", c);
	snprintf(msg, msg_len, "%s", m);
	return rc;
}

static const char *
arg_str(const struct admin_request *req, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(req->args, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- read-only ---- */

/* SQL reads best one clause per line: */
/* clang-format off */
static const struct db_stmt st_status = {
    .name = "admin_status",
    .sql = "SELECT"
           " (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM"
           "  (SELECT status, count(*) n FROM orders.orders GROUP BY status) s)"
           "  AS orders_by_status,"
           " (SELECT count(*) FROM orders.orders WHERE status = 'PENDING'"
           "  AND expires_at < now()) AS pending_past_expiry,"
           " (SELECT count(*) FROM orders.orders WHERE flagged) AS flagged,"
           " (SELECT count(*) FROM orders.unknown_notifications)"
           "  AS unknown_notifications,"
           " (SELECT count(*) FROM orders.orders WHERE status = 'PAID'"
           "  AND paid_at > now() - interval '1 hour') AS paid_last_hour,"
           " (SELECT " TS("max(received_at)") " FROM orders.evidence"
           "  WHERE source = 'ingest') AS last_notification,"
           " (SELECT coalesce(jsonb_object_agg(stream, seq), '{}')"
           "  FROM orders.stream_cursor) AS stream_cursors",
    .nparams = 0,
};

static const struct db_stmt st_pending = {
    .name = "admin_pending",
    .sql = "SELECT order_id, course_id, amount,"
           " " TS("created_at") " AS created_at,"
           " " TS("expires_at") " AS expires_at,"
           " extract(epoch FROM now() - created_at)::bigint AS age_s,"
           " expires_at < now() AS past_expiry, needs_reconcile,"
           " snap_error, transaction_id"
           " FROM orders.orders WHERE status = 'PENDING'"
           " ORDER BY created_at LIMIT 1000",
    .nparams = 0,
};

static const struct db_stmt st_unknown_list = {
    .name = "admin_unknown",
    .sql = "SELECT id, source, ref, order_id, transaction_status,"
           " gross_amount,"
           " " TS("received_at") " AS received_at,"
           " " TS("recorded_at") " AS recorded_at"
           " FROM orders.unknown_notifications"
           " ORDER BY id DESC LIMIT 1000",
    .nparams = 0,
};

static const struct db_stmt st_unknown_for = {
    .name = "admin_unknown_for",
    .sql = "SELECT id, source, ref, transaction_status, gross_amount,"
           " " TS("received_at") " AS received_at, raw"
           " FROM orders.unknown_notifications"
           " WHERE order_id = $1 ORDER BY id LIMIT 1000",
    .nparams = 1,
};

static const struct db_stmt st_paid_no_access = {
    .name = "admin_doctor_paid_no_access",
    .sql = "SELECT o.order_id, o.customer_email, o.course_id,"
           " " TS("o.paid_at") " AS paid_at"
           " FROM orders.orders o WHERE " ORDER_PAID_WITHOUT_ACCESS
           " ORDER BY o.paid_at LIMIT 1000",
    .nparams = 0,
};

static const struct db_stmt st_access_no_paid = {
    .name = "admin_doctor_access_no_paid",
    .sql = "SELECT e.order_id, e.customer_email, e.course_id, o.status"
           " FROM orders.entitlements e JOIN orders.orders o USING (order_id)"
           " WHERE e.revoked_at IS NULL AND o.status <> 'PAID'"
           " ORDER BY e.id LIMIT 1000",
    .nparams = 0,
};

static const struct db_stmt st_pending_expired = {
    .name = "admin_doctor_pending_expired",
    .sql = "SELECT order_id, " TS("expires_at") " AS expires_at,"
           " extract(epoch FROM now() - expires_at)::bigint AS overdue_s"
           " FROM orders.orders"
           " WHERE status = 'PENDING' AND expires_at < now()"
           " ORDER BY expires_at LIMIT 1000",
    .nparams = 0,
};

static const struct db_stmt st_flagged = {
    .name = "admin_doctor_flagged",
    .sql = "SELECT order_id, status, amount, flag_reason, partial_refund,"
           " disputed, reversed FROM orders.orders WHERE flagged OR disputed"
           " OR reversed ORDER BY updated_at DESC LIMIT 1000",
    .nparams = 0,
};

/* Notifications Midtrans's Status API contradicted (confirm.c). */
static const struct db_stmt st_contradicted = {
    .name = "admin_doctor_contradicted",
    .sql = "SELECT order_id, status, amount, flag_reason,"
           " " TS("contradicted_at") " AS contradicted_at"
           " FROM orders.orders WHERE contradicted_at IS NOT NULL"
           " ORDER BY contradicted_at DESC LIMIT 1000",
    .nparams = 0,
};

/* Held notifications still waiting for the Status API. */
static const struct db_stmt st_awaiting = {
    .name = "admin_doctor_awaiting",
    .sql = "SELECT order_id, status, awaiting_status,"
           " 'awaiting confirmation since ' || " TS("awaiting_since")
           " AS confirmation,"
           " " TS("awaiting_since") " AS awaiting_since,"
           " extract(epoch FROM now() - awaiting_since)::bigint AS waiting_s"
           " FROM orders.orders WHERE awaiting_since IS NOT NULL"
           " ORDER BY awaiting_since LIMIT 1000",
    .nparams = 0,
};

static const struct db_stmt st_snap_failures = {
    .name = "admin_doctor_snap_failures",
    .sql = "SELECT order_id, status, snap_error, snap_attempts,"
           " needs_reconcile, " TS("created_at") " AS created_at"
           " FROM orders.orders WHERE snap_error IS NOT NULL"
           " AND NOT drill" /* kasirctl drill 6.1's refused checkouts are
                               no customer who could not pay */
           " ORDER BY created_at DESC LIMIT 1000",
    .nparams = 0,
};

/* The latest Snap outcomes, success or not: kasirctl decides whether
 * every recent attempt failed (SOP 6.1). */
static const struct db_stmt st_snap_recent = {
    .name = "admin_doctor_snap_recent",
    .sql = "SELECT order_id, snap_token IS NOT NULL AS ok, snap_error,"
           " " TS("created_at") " AS created_at"
           " FROM orders.orders"
           " WHERE snap_token IS NOT NULL OR snap_error IS NOT NULL"
           " ORDER BY created_at DESC LIMIT 50",
    .nparams = 0,
};

/* Orders created and paid in the last hour (SOP 6.1: paid rate zero). */
static const struct db_stmt st_last_hour = {
    .name = "admin_doctor_last_hour",
    .sql = "SELECT"
           " (SELECT count(*) FROM orders.orders"
           "  WHERE created_at > now() - interval '1 hour') AS created,"
           " (SELECT count(*) FROM orders.orders WHERE status = 'PAID'"
           "  AND paid_at > now() - interval '1 hour') AS paid",
    .nparams = 0,
};
/* clang-format on */

static int
add(cJSON *o, const char *name, struct kasir_db *db, const struct db_stmt *st,
    const char *const *params)
{
	cJSON *rows;
	int rc = store_rows_json(db, st, params, &rows);

	if (rc < 0)
		return rc;
	cJSON_AddItemToObject(o, name, rows);
	return 0;
}

static int
cmd_status(struct order_service *s, struct kasir_db *db, cJSON **ret)
{
	cJSON *rows, *o;
	int rc = store_rows_json(db, &st_status, NULL, &rows);

	if (rc < 0)
		return rc;
	o = cJSON_DetachItemFromArray(rows, 0);
	cJSON_Delete(rows);
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "service", "kasir-order");
	cJSON_AddStringToObject(o, "version", KASIR_VERSION);
	cJSON_AddNumberToObject(o, "orders_stream_head",
	                        (double)stream_producer_head(s->producer));
	*ret = o;
	return 0;
}

static int
cmd_doctor(struct kasir_db *db, cJSON **ret)
{
	cJSON *o = cJSON_CreateObject();
	int rc;

	if (o == NULL)
		return -ENOMEM;
	if ((rc = store_facts_begin(db)) < 0) {
		cJSON_Delete(o);
		return rc;
	}
	if ((rc = add(o, "paid_without_access", db, &st_paid_no_access, NULL)) <
	        0 ||
	    (rc = add(o, "access_without_paid", db, &st_access_no_paid, NULL)) <
	        0 ||
	    (rc = add(o, "pending_past_expiry", db, &st_pending_expired,
	              NULL)) < 0 ||
	    (rc = add(o, "flagged", db, &st_flagged, NULL)) < 0 ||
	    (rc = add(o, "snap_failures", db, &st_snap_failures, NULL)) < 0 ||
	    (rc = add(o, "snap_recent", db, &st_snap_recent, NULL)) < 0 ||
	    (rc = add(o, "last_hour", db, &st_last_hour, NULL)) < 0 ||
	    (rc = add(o, "contradicted", db, &st_contradicted, NULL)) < 0 ||
	    (rc = add(o, "awaiting_confirmation", db, &st_awaiting, NULL)) <
	        0 ||
	    (rc = add(o, "unknown_notifications", db, &st_unknown_list, NULL)) <
	        0) {
		db_rollback(db);
		cJSON_Delete(o);
		return rc;
	}
	db_rollback(db); /* read only */
	*ret = o;
	return 0;
}

/* ---- audited ---- */

const struct db_stmt order_admin_audit_insert = {
    .name = "admin_audit_insert",
    .sql = "INSERT INTO orders.audit (actor, role, cmd, args, reason,"
           " incident, before, after, result, error, order_id) VALUES ($1,"
           " $2, $3, $4::jsonb, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11)"
           " RETURNING id",
    .nparams = 11,
};

static const struct db_stmt st_audit_list = {
    .name = "admin_audit_list",
    .sql = ADMIN_AUDIT_LIST_SQL("orders"),
    .nparams = ADMIN_AUDIT_LIST_NPARAMS,
};

/* Records a refusal in its own transaction; returns err. */
static int
refuse(struct kasir_db *db, const struct admin_request *req,
       const char *order_id, int err, char *code, size_t code_len, char *msg,
       size_t msg_len, const char *c, const char *m)
{
	char e[256];

	snprintf(e, sizeof(e), "%s: %s", c, m);
	admin_audit_refusal(db, &order_admin_audit_insert, req, order_id, e);
	return fail(code, code_len, msg, msg_len, err, c, m);
}

/*
 * The start every order-changing command shares (the admin socket has
 * already refused one without a reason): args.order_id valid, a
 * transaction begun and the order row locked into *o.  0: the transaction is
 * open and *ret_order_id set; otherwise the answer is set and nothing is open.
 */
static int
begin_on_order(struct kasir_db *db, const struct admin_request *req,
               const char **ret_order_id, struct order_row *o, char *code,
               size_t code_len, char *msg, size_t msg_len)
{
	const char *order_id = arg_str(req, "order_id");
	int rc;

	if (order_id == NULL || !order_id_valid(order_id, ORDER_ID_MAX))
		return fail(code, code_len, msg, msg_len, -EINVAL,
		            ADMIN_E_INVALID_ARGS, "args.order_id required");
	if ((rc = db_begin(db)) < 0)
		return rc;
	rc = store_lock_order(db, order_id, NULL, o);
	if (rc == KASIR_ENOTFOUND)
		return refuse(db, req, order_id, KASIR_ENOTFOUND, code,
		              code_len, msg, msg_len, ADMIN_E_ORDER_NOT_FOUND,
		              "no such order");
	if (rc < 0) {
		db_rollback(db);
		return rc;
	}
	*ret_order_id = order_id;
	return 0;
}

static const struct db_stmt st_paid_evidence = {
    .name = "admin_paid_evidence",
    .sql = "SELECT t.evidence_source, t.evidence_ref,"
           " (SELECT count(*) FROM orders.entitlements e WHERE e.order_id ="
           " $1 AND " ENTITLEMENT_ACTIVE "),"
           " (SELECT count(*) FROM orders.entitlements e WHERE e.order_id ="
           " $1 AND e.revoked_at IS NULL) FROM orders.transitions t"
           " WHERE t.order_id = $1 AND t.to_status = 'PAID'"
           " AND t.evidence_source IN ('ingest','recon')"
           " AND t.evidence_id IS NOT NULL",
    .nparams = 1,
};

static int
cmd_access_grant(struct order_service *s, struct kasir_db *db,
                 const struct admin_request *req, cJSON **ret, char *code,
                 size_t code_len, char *msg, size_t msg_len)
{
	const char *order_id = NULL;
	struct order_row o;
	PGresult *res = NULL;
	cJSON *before = NULL, *after = NULL;
	char audit_id[24];
	int rc;

	if ((rc = begin_on_order(db, req, &order_id, &o, code, code_len, msg,
	                         msg_len)) < 0)
		return rc;
	{
		const char *p[1] = {order_id};
		if ((rc = db_exec(db, &st_paid_evidence, p, &res)) < 0)
			goto dberr;
	}
	bool has_evidence = PQntuples(res) == 1;
	int64_t active = has_evidence ? db_get_i64(res, 0, 2) : 0;
	/* an entitlement not revoked that gives no access any more (its end
	 * moved behind kasir's back): revoked first, the new one replaces it */
	bool stale = has_evidence && db_get_i64(res, 0, 3) > active;
	PQclear(res);
	res = NULL;
	if ((before = cJSON_CreateObject()) == NULL ||
	    (after = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(before, "status",
	                            order_status_name(o.status)) == NULL ||
	    cJSON_AddBoolToObject(before, "paid_evidence", has_evidence) ==
	        NULL ||
	    cJSON_AddNumberToObject(before, "active_entitlements",
	                            (double)active) == NULL ||
	    cJSON_AddStringToObject(after, "status", "PAID") == NULL ||
	    cJSON_AddNumberToObject(after, "active_entitlements", 1) == NULL) {
		rc = -ENOMEM;
		goto dberr;
	}
	if (o.status != ORDER_PAID || !has_evidence || active > 0) {
		const char *c = active > 0 ? "already_active" : "not_paid";
		const char *m =
		    active > 0 ? "the order already has an active entitlement"
		               : "access is granted only for an order PAID "
		                 "with Midtrans evidence";
		char e[256];

		snprintf(e, sizeof(e), "%s: %s", c, m);
		db_rollback(db);
		if (db_begin(db) < 0 ||
		    admin_audit(db, &order_admin_audit_insert, req, order_id,
		                before, NULL, "refused", e) < 0 ||
		    db_commit(db) < 0) {
			db_rollback(db);
			log_err("recording refused %s by %s failed", req->cmd,
			        req->peer.user);
		}
		cJSON_Delete(before);
		cJSON_Delete(after);
		return fail(code, code_len, msg, msg_len, KASIR_ECONFLICT, c,
		            m);
	}
	if ((rc = admin_audit_id(db, &order_admin_audit_insert, req, order_id,
	                         before, after, "ok", NULL, audit_id,
	                         sizeof(audit_id))) < 0 ||
	    (stale &&
	     (rc = store_revoke(s->producer, db, &o, "operator",
	                        "entitlement ended before its term:"
	                        " replaced by an operator's grant")) < 0) ||
	    (rc = store_grant(s->producer, db, &o, "operator", audit_id,
	                      req->reason)) < 0)
		goto dberr;
	PQclear(res);
	res = NULL;
	cJSON_Delete(before);
	cJSON_Delete(after);
	before = after = NULL;
	if ((rc = db_commit(db)) < 0)
		return rc;
	stream_producer_kick(s->producer);
	log_fields(LOG_NOTICE, LOG_F({"ORDER_ID", order_id}),
	           "access re-granted by %s: %s", req->peer.user, req->reason);
	return store_order_view(db, order_id, true, ret);
dberr:
	PQclear(res);
	cJSON_Delete(before);
	cJSON_Delete(after);
	db_rollback(db);
	return rc;
}

static const struct db_stmt st_is_drill = {
    .name = "admin_is_drill",
    .sql = "SELECT drill FROM orders.orders WHERE order_id = $1",
    .nparams = 1,
};

/* The audit row of a drill revoke: one entitlement active before, none
 * after. */
static int
drill_audit(struct kasir_db *db, const struct admin_request *req,
            const char *order_id)
{
	cJSON *before = cJSON_CreateObject(), *after = cJSON_CreateObject();
	int rc = -ENOMEM;

	if (before != NULL && after != NULL &&
	    cJSON_AddNumberToObject(before, "active_entitlements", 1) != NULL &&
	    cJSON_AddNumberToObject(after, "active_entitlements", 0) != NULL)
		rc = admin_audit(db, &order_admin_audit_insert, req, order_id,
		                 before, after, "ok", NULL);
	cJSON_Delete(before);
	cJSON_Delete(after);
	return rc;
}

/* kasirctl drill 6.2 ("paid without access"): the entitlement of a PAID
 * drill order revoked, as a lost entitlement would look.  Only drill
 * orders; audited like access.grant. */
static int
cmd_drill_revoke(struct order_service *s, struct kasir_db *db,
                 const struct admin_request *req, cJSON **ret, char *code,
                 size_t code_len, char *msg, size_t msg_len)
{
	const char *order_id = NULL;
	struct order_row o;
	PGresult *res = NULL;
	bool drill;
	int rc;

	if ((rc = begin_on_order(db, req, &order_id, &o, code, code_len, msg,
	                         msg_len)) < 0)
		return rc;
	{
		const char *p[1] = {order_id};

		if ((rc = db_exec(db, &st_is_drill, p, &res)) < 0)
			goto dberr;
	}
	drill = strcmp(db_get(res, 0, 0), "t") == 0;
	PQclear(res);
	res = NULL;
	if (!drill)
		return refuse(db, req, order_id, KASIR_EREJECT, code, code_len,
		              msg, msg_len, "not_a_drill_order",
		              "only a drill order's access can be revoked by "
		              "a drill");
	if (o.status != ORDER_PAID)
		return refuse(db, req, order_id, KASIR_ECONFLICT, code,
		              code_len, msg, msg_len, "not_paid",
		              "the drill order is not PAID");
	if ((rc = drill_audit(db, req, order_id)) < 0 ||
	    (rc = store_revoke(s->producer, db, &o, "operator", req->reason)) <
	        0)
		goto dberr;
	if ((rc = db_commit(db)) < 0)
		return rc;
	stream_producer_kick(s->producer);
	log_fields(LOG_NOTICE, LOG_F({"ORDER_ID", order_id}),
	           "drill: access revoked by %s: %s", req->peer.user,
	           req->reason);
	return store_order_view(db, order_id, true, ret);
dberr:
	PQclear(res);
	db_rollback(db);
	return rc;
}

/*
 * A phone number as digits with the country code: "+62 812-3456",
 * "0812 3456" and "628123456" are one number.  The same expression runs
 * on the stored value and on the one asked for.
 */
#define PHONE_NORM(x)                                                          \
	"regexp_replace(regexp_replace(regexp_replace(" x ","                  \
	" '[^0-9+]', '', 'g'), '^\\+', ''), '^0', '62')"

#define FIND_LIMIT_DEFAULT 20
#define FIND_LIMIT_MAX     100

/* clang-format off */
static const struct db_stmt st_find = {
    .name = "admin_orders_find",
    .sql = "SELECT order_id, status, course_id, amount, customer_name,"
           " customer_email, customer_phone,"
           " " TS("created_at") " AS created_at,"
           " " TS("paid_at") " AS paid_at"
           " FROM orders.orders"
           " WHERE ($1::text IS NULL OR lower(customer_email) = lower($1))"
           " AND ($2::text IS NULL"
           "  OR " PHONE_NORM("customer_phone") " = " PHONE_NORM("$2") ")"
           " AND ($3::text IS NULL OR customer_name ILIKE $3)"
           " ORDER BY created_at DESC, order_id LIMIT $4::int",
    .nparams = 4,
};
/* clang-format on */

/* name -> an ILIKE pattern "%name%" with % _ and \ taken literally. */
static int
like_pattern(const char *s, char *out, size_t len)
{
	size_t o = 0;

	if (len < 3)
		return -ENOSPC;
	out[o++] = '%';
	for (; *s; s++) {
		if (o + 4 > len)
			return -ENOSPC;
		if (*s == '%' || *s == '_' || *s == '\\')
			out[o++] = '\\';
		out[o++] = *s;
	}
	out[o++] = '%';
	out[o] = '\0';
	return 0;
}

/* Bounded look-up of a customer's orders by email (case-insensitive),
 * phone (+62 / 0 / 62 prefixes alike) or part of the name; any given
 * criteria must all match.  Read-only, support role. */
static int
cmd_find(struct kasir_db *db, const struct admin_request *req, cJSON **ret,
         char *code, size_t code_len, char *msg, size_t msg_len)
{
	const char *email = arg_str(req, "email"),
	           *phone = arg_str(req, "phone");
	const char *name = arg_str(req, "name");
	const cJSON *lim = cJSON_GetObjectItemCaseSensitive(req->args, "limit");
	char pattern[2 * 100 + 3], limbuf[16];
	const char *p[4] = {email, phone, NULL, limbuf};
	int limit = FIND_LIMIT_DEFAULT, digits = 0, rc;
	cJSON *rows = NULL, *o;
	bool more;

	if (email == NULL && phone == NULL && name == NULL)
		return fail(code, code_len, msg, msg_len, -EINVAL,
		            ADMIN_E_INVALID_ARGS,
		            "give args.email, phone or name");
	if (lim != NULL) {
		if (!cJSON_IsNumber(lim) || lim->valuedouble < 1 ||
		    lim->valuedouble > FIND_LIMIT_MAX)
			return fail(code, code_len, msg, msg_len, -EINVAL,
			            ADMIN_E_INVALID_ARGS, "args.limit: 1..100");
		limit = (int)lim->valuedouble;
	}
	if (email != NULL && (strlen(email) < 3 || strlen(email) > 254 ||
	                      strchr(email, '@') == NULL))
		return fail(code, code_len, msg, msg_len, -EINVAL,
		            ADMIN_E_INVALID_ARGS, "args.email: an address");
	if (phone != NULL) {
		for (const char *s = phone; *s; s++) {
			if (*s >= '0' && *s <= '9')
				digits++;
			else if (strchr("+ -().", *s) == NULL)
				digits = -100;
		}
		if (digits < 8 || digits > 16 || strlen(phone) > 32)
			return fail(code, code_len, msg, msg_len, -EINVAL,
			            ADMIN_E_INVALID_ARGS,
			            "args.phone: 8..16 digits (+62..., 08...)");
	}
	if (name != NULL) {
		if (strlen(name) < 2 || strlen(name) > 100 ||
		    like_pattern(name, pattern, sizeof(pattern)) < 0)
			return fail(code, code_len, msg, msg_len, -EINVAL,
			            ADMIN_E_INVALID_ARGS,
			            "args.name: 2..100 bytes");
		p[2] = pattern;
	}
	/* one more than asked: says whether there are more */
	snprintf(limbuf, sizeof(limbuf), "%d", limit + 1);
	if ((rc = store_rows_json(db, &st_find, p, &rows)) < 0)
		return rc;
	o = cJSON_CreateObject();
	if (o == NULL) {
		cJSON_Delete(rows);
		return -ENOMEM;
	}
	more = cJSON_GetArraySize(rows) > limit;
	if (more)
		cJSON_DeleteItemFromArray(rows, limit);
	cJSON_AddItemToObject(o, "orders", rows);
	cJSON_AddNumberToObject(o, "limit", limit);
	cJSON_AddBoolToObject(o, "more", more);
	*ret = o;
	return 0;
}

/* clang-format off */
static const struct db_stmt st_export = {
    .name = "admin_export_orders",
    .sql = "SELECT order_id, status, course_id, amount, currency,"
           " customer_name, customer_email, customer_phone,"
           " " TS("created_at") " AS created_at,"
           " " TS("paid_at") " AS paid_at,"
           " transaction_id, payment_type, flagged, partial_refund,"
           " disputed, reversed"
           " FROM orders.orders"
           " WHERE created_at >= $1::timestamptz"
           " AND created_at < $2::timestamptz"
           " AND NOT drill" /* kasirctl drill's orders are not sales */
           " ORDER BY created_at LIMIT 100000",
    .nparams = 2,
};
/* clang-format on */

static int
cmd_export(struct kasir_db *db, const struct admin_request *req, cJSON **ret,
           char *code, size_t code_len, char *msg, size_t msg_len)
{
	const char *from = arg_str(req, "from"), *to = arg_str(req, "to");
	const char *p[2] = {from, to};
	cJSON *rows = NULL, *o;
	int rc;

	if (from == NULL || to == NULL)
		return fail(code, code_len, msg, msg_len, -EINVAL,
		            ADMIN_E_INVALID_ARGS,
		            "args.from and args.to required");
	if ((rc = db_begin(db)) < 0)
		return rc;
	rc = store_rows_json(db, &st_export, p, &rows);
	if (rc == KASIR_ESQL)
		return refuse(db, req, NULL, -EINVAL, code, code_len, msg,
		              msg_len, ADMIN_E_INVALID_ARGS,
		              "from/to must be timestamps");
	if (rc < 0 ||
	    (rc = admin_audit(db, &order_admin_audit_insert, req, NULL, NULL,
	                      NULL, "ok", NULL)) < 0 ||
	    (rc = db_commit(db)) < 0) {
		db_rollback(db);
		cJSON_Delete(rows);
		return rc;
	}
	o = cJSON_CreateObject();
	if (o == NULL) {
		cJSON_Delete(rows);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(o, "orders", rows);
	*ret = o;
	return 0;
}

/* ---- the command table ---- */

static int
h_status(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	(void)req;
	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return cmd_status(s, s->admin_db, ret);
}

static int
h_doctor(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	(void)req;
	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return cmd_doctor(s->admin_db, ret);
}

static int
h_order_show(void *arg, const struct admin_request *req, cJSON **ret,
             char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;
	struct kasir_db *db = s->admin_db;
	const char *id = arg_str(req, "order_id");
	const char *p[1] = {id};
	cJSON *res = NULL, *un = NULL;
	int rc;

	if (id == NULL || !order_id_valid(id, ORDER_ID_MAX))
		return fail(code, code_len, msg, msg_len, -EINVAL,
		            ADMIN_E_INVALID_ARGS, "args.order_id required");
	rc = store_order_view(db, id, true, &res);
	if (rc == 0) {
		if ((rc = add(res, "unknown_notifications", db, &st_unknown_for,
		              p)) < 0) {
			cJSON_Delete(res);
			return rc;
		}
		*ret = res;
		return 0;
	}
	if (rc != KASIR_ENOTFOUND)
		return rc;
	/* maybe only notifications for it exist */
	if ((rc = store_rows_json(db, &st_unknown_for, p, &un)) < 0)
		return rc;
	if (cJSON_GetArraySize(un) == 0) {
		cJSON_Delete(un);
		return fail(code, code_len, msg, msg_len, KASIR_ENOTFOUND,
		            ADMIN_E_ORDER_NOT_FOUND,
		            "kasir-order has no such order");
	}
	if ((res = cJSON_CreateObject()) == NULL) {
		cJSON_Delete(un);
		return -ENOMEM;
	}
	cJSON_AddStringToObject(res, "order_id", id);
	cJSON_AddNullToObject(res, "status");
	cJSON_AddItemToObject(res, "unknown_notifications", un);
	*ret = res;
	return 0;
}

/* {key: rows of st} */
static int
rows_under(struct kasir_db *db, const struct db_stmt *st, const char *key,
           cJSON **ret)
{
	cJSON *rows = NULL, *res;
	int rc = store_rows_json(db, st, NULL, &rows);

	if (rc < 0)
		return rc;
	if ((res = cJSON_CreateObject()) == NULL) {
		cJSON_Delete(rows);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(res, key, rows);
	*ret = res;
	return 0;
}

static int
h_pending(void *arg, const struct admin_request *req, cJSON **ret, char *code,
          size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	(void)req;
	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return rows_under(s->admin_db, &st_pending, "orders", ret);
}

static int
h_unknown(void *arg, const struct admin_request *req, cJSON **ret, char *code,
          size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	(void)req;
	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return rows_under(s->admin_db, &st_unknown_list, "notifications", ret);
}

static int
h_access_grant(void *arg, const struct admin_request *req, cJSON **ret,
               char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	return cmd_access_grant(s, s->admin_db, req, ret, code, code_len, msg,
	                        msg_len);
}

static int
h_drill_revoke(void *arg, const struct admin_request *req, cJSON **ret,
               char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	return cmd_drill_revoke(s, s->admin_db, req, ret, code, code_len, msg,
	                        msg_len);
}

static int
h_export(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	return cmd_export(s->admin_db, req, ret, code, code_len, msg, msg_len);
}

static int
h_find(void *arg, const struct admin_request *req, cJSON **ret, char *code,
       size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	return cmd_find(s->admin_db, req, ret, code, code_len, msg, msg_len);
}

static int
h_audit_list(void *arg, const struct admin_request *req, cJSON **ret,
             char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct order_service *s = arg;

	return admin_audit_list(s->admin_db, &st_audit_list, req, ret, code,
	                        code_len, msg, msg_len);
}

/* The command table: common/admin_socket.c checks the role and
 * dispatches; any other name is refused there. */
/* clang-format off */
const struct admin_command order_admin_commands[] = {
    {.name = "status", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_status},
    {.name = "order.show", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_order_show, .personal = true},
    {.name = "orders.pending", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_pending},
    {.name = "orders.unknown_notifications", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_unknown},
    {.name = "doctor.facts", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_doctor, .personal = true},
    {.name = "orders.find", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_find, .personal = true},
    {.name = "audit.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_audit_list},
    {.name = "access.grant", .min_role = ADMIN_ROLE_ENGINEER, .handler = h_access_grant, .audited = true, .needs_reason = true},
    {.name = "drill.revoke_access", .min_role = ADMIN_ROLE_ENGINEER, .handler = h_drill_revoke, .audited = true, .needs_reason = true},
    {.name = "export.orders", .min_role = ADMIN_ROLE_ENGINEER, .handler = h_export, .audited = true},
    {.name = NULL}};
/* clang-format on */
