/*
 * admin.c - kasir-ingest's admin socket commands (used by kasirctl).
 *
 *   status                      counters, queue depth, last notification
 *   doctor.facts                signature failures: counter, quarantine
 *                               (last hour, latest source)
 *   events.list {order_id}      stored payment events of an order, plus
 *                               refused (quarantined) bodies naming it
 *   evidence.order {order_id}   the same with raw bodies, for kasirctl
 *                               evidence (evidence_admin.c)
 *   quarantine.list {limit, with_body}  the latest quarantined bodies
 *   export.events {from, to}    engineer: payment events received in
 *                               [from, to) for finance and audit; audited
 *                               in ingest.audit (refusals too)
 *
 * Nothing here changes payment data; only ingest.audit is written.  Runs on the
 * admin socket's single worker thread with its own connection.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "admin_audit.h"
#include "admin_socket.h"
#include "db_json.h"
#include "err.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "util.h"

#define EVENTS_LIST_MAX     1000
#define QUARANTINE_LIST_MAX 1000
#define QUARANTINE_LIST_DEF 50

/* clang-format off */
static const struct db_stmt stmt_events_by_order = {
    .name = "ingest_admin_events",
    .sql = "SELECT id, " TS("received_at") ","
           " transaction_status, status_code, gross_amount, payment_type,"
           " fraud_status, transaction_id, currency, signature_key_id,"
           " host(source_addr)"
           " FROM ingest.payment_event WHERE order_id = $1"
           " ORDER BY id LIMIT 1000",
    .nparams = 1,
};

static const struct db_stmt stmt_quarantine_by_order = {
    .name = "ingest_admin_quarantine_order",
    .sql = "SELECT id, " TS("received_at") ","
           " reason, host(source_addr), length(raw)"
           " FROM ingest.quarantine WHERE order_id = $1"
           " ORDER BY id LIMIT 1000",
    .nparams = 1,
};

static const struct db_stmt stmt_quarantine_latest = {
    .name = "ingest_admin_quarantine_latest",
    .sql = "SELECT id, " TS("received_at") ","
           " reason, host(source_addr), length(raw), order_id,"
           " convert_from(raw, 'UTF8')"
           " FROM ingest.quarantine"
           " ORDER BY id DESC LIMIT $1",
    .nparams = 1,
};

/* Signature failures kept in the quarantine (SOP 6.3 step 2): how many in
 * the last hour and in all, and the latest one's time, source and claimed
 * order. */
static const struct db_stmt stmt_signature_facts = {
    .name = "ingest_admin_signature_facts",
    .sql = "SELECT count(*) FILTER (WHERE received_at > now() -"
           "  interval '1 hour'),"
           " count(*),"
           " (SELECT " TS("received_at") " FROM ingest.quarantine"
           "  WHERE reason = 'invalid_signature' ORDER BY id DESC LIMIT 1),"
           " (SELECT host(source_addr) FROM ingest.quarantine"
           "  WHERE reason = 'invalid_signature' ORDER BY id DESC LIMIT 1),"
           " (SELECT order_id FROM ingest.quarantine"
           "  WHERE reason = 'invalid_signature' ORDER BY id DESC LIMIT 1)"
           " FROM ingest.quarantine WHERE reason = 'invalid_signature'",
    .nparams = 0,
};

static const struct db_stmt stmt_export_events = {
    .name = "ingest_admin_export_events",
    .sql = "SELECT id, " TS("received_at") ","
           " order_id, transaction_status, status_code, gross_amount,"
           " currency, payment_type, fraud_status, transaction_id,"
           " host(source_addr)"
           " FROM ingest.payment_event"
           " WHERE received_at >= $1::timestamptz"
           " AND received_at < $2::timestamptz"
           " ORDER BY id LIMIT 100001",
    .nparams = 2,
};
/* clang-format on */

const struct db_stmt ingest_admin_audit_insert = {
    .name = "ingest_admin_audit",
    .sql = "INSERT INTO ingest.audit (actor, role, cmd, args, reason,"
           " incident, before, after, result, error) VALUES ($1, $2, $3,"
           " $4::jsonb, $5, $6, $7::jsonb, $8::jsonb, $9, $10)",
    .nparams = 10,
};

static const struct db_stmt stmt_audit_list = {
    .name = "ingest_admin_audit_list",
    .sql = ADMIN_AUDIT_LIST_SQL("ingest"),
    .nparams = ADMIN_AUDIT_LIST_NPARAMS,
};

#define EXPORT_EVENTS_MAX 100000

static void
set_err(char *code, size_t code_len, char *msg, size_t msg_len, const char *c,
        const char *m)
{
	kasir_strlcpy(code, c, code_len);
	kasir_strlcpy(msg, m, msg_len);
}

/* Adds a string column, or null when SQL NULL. */
static bool
add_col(cJSON *o, const char *name, const PGresult *res, int row, int col)
{
	const char *v = db_get(res, row, col);

	return v != NULL ? cJSON_AddStringToObject(o, name, v) != NULL
	                 : cJSON_AddNullToObject(o, name) != NULL;
}

static int
cmd_status(struct ingest_admin_ctx *c, cJSON **ret)
{
	static const char *const names[OUT_COUNT] = {
	    [OUT_2XX] = "2xx", [OUT_400] = "400", [OUT_403] = "403",
	    [OUT_404] = "404", [OUT_405] = "405", [OUT_413] = "413",
	    [OUT_415] = "415", [OUT_429] = "429", [OUT_5XX] = "5xx",
	};
	cJSON *o = cJSON_CreateObject(), *req;
	double last = metric_value(c->im->last_notification);
	char ts[40];

	if (o == NULL)
		return -ENOMEM;
	/* kasirctl status shows every daemon's version (ingest's was "-") */
	if (!cJSON_AddStringToObject(o, "service", "kasir-ingest") ||
	    !cJSON_AddStringToObject(o, "version", KASIR_VERSION))
		goto nomem;
	req = cJSON_AddObjectToObject(o, "requests");
	if (req == NULL)
		goto nomem;
	for (int i = 0; i < OUT_COUNT; i++)
		if (!cJSON_AddNumberToObject(req, names[i],
		                             metric_value(c->im->requests[i])))
			goto nomem;
	if (!cJSON_AddNumberToObject(o, "stored",
	                             metric_value(c->im->stored)) ||
	    !cJSON_AddNumberToObject(o, "signature_failures",
	                             metric_value(c->im->signature_failures)) ||
	    !cJSON_AddNumberToObject(o, "quarantine_stored",
	                             metric_value(c->im->quarantine_stored)) ||
	    !cJSON_AddNumberToObject(o, "quarantine_dropped",
	                             metric_value(c->im->quarantine_dropped)) ||
	    !cJSON_AddNumberToObject(o, "commit_failures",
	                             metric_value(c->im->commit_failures)) ||
	    !cJSON_AddNumberToObject(o, "queue_depth",
	                             (double)ingest_store_depth(c->store)) ||
	    !cJSON_AddNumberToObject(
	        o, "stream_head", (double)stream_producer_head(c->producer)) ||
	    !cJSON_AddNumberToObject(o, "uptime_s",
	                             (double)(now_mono_ms() - c->started_ms) /
	                                 1000.0))
		goto nomem;
	if (last > 0) {
		time_rfc3339((int64_t)(last * 1000.0), ts, sizeof(ts));
		if (!cJSON_AddStringToObject(o, "last_notification_at", ts))
			goto nomem;
	} else if (!cJSON_AddNullToObject(o, "last_notification_at")) {
		goto nomem;
	}
	*ret = o;
	return 0;
nomem:
	cJSON_Delete(o);
	return -ENOMEM;
}

/*
 * doctor.facts: what kasirctl doctor checks here.  Signature failures come
 * from two places: the counter since start (every refusal) and the
 * quarantine (bounded by its per-minute budget, but it survives restarts
 * and names the source).
 */
static int
cmd_doctor_facts(struct ingest_admin_ctx *c, cJSON **ret, char *code,
                 size_t code_len, char *msg, size_t msg_len)
{
	PGresult *res = NULL;
	cJSON *o = NULL, *sig;
	int r;

	if ((r = db_ensure(c->db)) < 0 ||
	    (r = db_exec(c->db, &stmt_signature_facts, NULL, &res)) < 0) {
		set_err(code, code_len, msg, msg_len,
		        ADMIN_E_DATABASE_UNAVAILABLE, kasir_strerror(r));
		goto out;
	}
	r = -ENOMEM;
	if ((o = cJSON_CreateObject()) == NULL ||
	    (sig = cJSON_AddObjectToObject(o, "signature_failures")) == NULL ||
	    !cJSON_AddNumberToObject(sig, "since_start",
	                             metric_value(c->im->signature_failures)) ||
	    !cJSON_AddNumberToObject(sig, "quarantined_last_hour",
	                             (double)db_get_i64(res, 0, 0)) ||
	    !cJSON_AddNumberToObject(sig, "quarantined",
	                             (double)db_get_i64(res, 0, 1)) ||
	    !cJSON_AddNumberToObject(sig, "quarantine_dropped",
	                             metric_value(c->im->quarantine_dropped)) ||
	    !add_col(sig, "last_at", res, 0, 2) ||
	    !add_col(sig, "last_source", res, 0, 3) ||
	    !add_col(sig, "last_order_id", res, 0, 4))
		goto out;
	*ret = o;
	o = NULL;
	r = 0;
out:
	PQclear(res);
	cJSON_Delete(o);
	return r;
}

static int
cmd_events_list(struct ingest_admin_ctx *c, const cJSON *args, cJSON **ret,
                char *code, size_t code_len, char *msg, size_t msg_len)
{
	const cJSON *oid = cJSON_GetObjectItemCaseSensitive(args, "order_id");
	PGresult *ev = NULL, *qu = NULL;
	cJSON *o = NULL, *events, *quar;
	const char *params[1];
	int r;

	if (!cJSON_IsString(oid) ||
	    !order_id_valid(oid->valuestring, NOTIF_ORDER_ID_MAX)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "args.order_id: 1..50 characters of [A-Za-z0-9._~-]");
		return -EINVAL;
	}
	params[0] = oid->valuestring;
	if ((r = db_ensure(c->db)) < 0 ||
	    (r = db_exec(c->db, &stmt_events_by_order, params, &ev)) < 0 ||
	    (r = db_exec(c->db, &stmt_quarantine_by_order, params, &qu)) < 0) {
		set_err(code, code_len, msg, msg_len,
		        ADMIN_E_DATABASE_UNAVAILABLE, kasir_strerror(r));
		goto out;
	}
	r = -ENOMEM;
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(o, "order_id", oid->valuestring) ||
	    (events = cJSON_AddArrayToObject(o, "events")) == NULL ||
	    (quar = cJSON_AddArrayToObject(o, "quarantined")) == NULL)
		goto out;
	for (int i = 0; i < PQntuples(ev); i++) {
		cJSON *e = cJSON_CreateObject();

		if (e == NULL)
			goto out;
		cJSON_AddItemToArray(events, e);
		if (!cJSON_AddNumberToObject(e, "id",
		                             (double)db_get_i64(ev, i, 0)) ||
		    !add_col(e, "received_at", ev, i, 1) ||
		    !add_col(e, "transaction_status", ev, i, 2) ||
		    !add_col(e, "status_code", ev, i, 3) ||
		    !add_col(e, "gross_amount", ev, i, 4) ||
		    !add_col(e, "payment_type", ev, i, 5) ||
		    !add_col(e, "fraud_status", ev, i, 6) ||
		    !add_col(e, "transaction_id", ev, i, 7) ||
		    !add_col(e, "currency", ev, i, 8) ||
		    !add_col(e, "signature_key_id", ev, i, 9) ||
		    !add_col(e, "source", ev, i, 10) ||
		    !cJSON_AddStringToObject(e, "signature", "valid"))
			goto out;
	}
	for (int i = 0; i < PQntuples(qu); i++) {
		cJSON *e = cJSON_CreateObject();

		if (e == NULL)
			goto out;
		cJSON_AddItemToArray(quar, e);
		if (!cJSON_AddNumberToObject(e, "id",
		                             (double)db_get_i64(qu, i, 0)) ||
		    !add_col(e, "received_at", qu, i, 1) ||
		    !add_col(e, "reason", qu, i, 2) ||
		    !add_col(e, "source", qu, i, 3) ||
		    !cJSON_AddNumberToObject(e, "body_bytes",
		                             (double)db_get_i64(qu, i, 4)) ||
		    !cJSON_AddStringToObject(e, "signature", "invalid"))
			goto out;
	}
	*ret = o;
	o = NULL;
	r = 0;
out:
	cJSON_Delete(o);
	PQclear(ev);
	PQclear(qu);
	return r;
}

static int
cmd_quarantine_list(struct ingest_admin_ctx *c, const cJSON *args, cJSON **ret,
                    char *code, size_t code_len, char *msg, size_t msg_len)
{
	const cJSON *lim = cJSON_GetObjectItemCaseSensitive(args, "limit");
	bool with_body =
	    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "with_body"));
	int64_t limit = QUARANTINE_LIST_DEF;
	PGresult *res = NULL;
	cJSON *o = NULL, *items;
	const char *params[1];
	char lbuf[24];
	int r;

	if (lim != NULL) {
		if (!cJSON_IsNumber(lim) || lim->valuedouble < 1 ||
		    lim->valuedouble > QUARANTINE_LIST_MAX) {
			set_err(code, code_len, msg, msg_len,
			        ADMIN_E_INVALID_ARGS, "args.limit: 1..1000");
			return -EINVAL;
		}
		limit = (int64_t)lim->valuedouble;
	}
	snprintf(lbuf, sizeof(lbuf), "%lld", (long long)limit);
	params[0] = lbuf;
	if ((r = db_ensure(c->db)) < 0 ||
	    (r = db_exec(c->db, &stmt_quarantine_latest, params, &res)) < 0) {
		set_err(code, code_len, msg, msg_len,
		        ADMIN_E_DATABASE_UNAVAILABLE, kasir_strerror(r));
		return r;
	}
	r = -ENOMEM;
	if ((o = cJSON_CreateObject()) == NULL ||
	    (items = cJSON_AddArrayToObject(o, "quarantined")) == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		cJSON *e = cJSON_CreateObject();

		if (e == NULL)
			goto out;
		cJSON_AddItemToArray(items, e);
		if (!cJSON_AddNumberToObject(e, "id",
		                             (double)db_get_i64(res, i, 0)) ||
		    !add_col(e, "received_at", res, i, 1) ||
		    !add_col(e, "reason", res, i, 2) ||
		    !add_col(e, "source", res, i, 3) ||
		    !cJSON_AddNumberToObject(e, "body_bytes",
		                             (double)db_get_i64(res, i, 4)) ||
		    !add_col(e, "order_id", res, i, 5) ||
		    (with_body && !add_col(e, "body", res, i, 6)))
			goto out;
	}
	*ret = o;
	o = NULL;
	r = 0;
out:
	cJSON_Delete(o);
	PQclear(res);
	return r;
}

/* Records one command in ingest.audit inside the open transaction. */
static int
audit(struct kasir_db *db, const struct admin_request *req, const char *result,
      const char *error)
{
	return admin_audit(db, &ingest_admin_audit_insert, req, NULL, NULL,
	                   NULL, result, error);
}

/* Audits a refusal in its own transaction and fills the error reply. */
static int
refuse(struct ingest_admin_ctx *c, const struct admin_request *req, int err,
       char *code, size_t code_len, char *msg, size_t msg_len, const char *ec,
       const char *em)
{
	admin_audit_refusal(c->db, &ingest_admin_audit_insert, req, NULL, ec);
	set_err(code, code_len, msg, msg_len, ec, em);
	return err;
}

static int
cmd_export_events(struct ingest_admin_ctx *c, const struct admin_request *req,
                  cJSON **ret, char *code, size_t code_len, char *msg,
                  size_t msg_len)
{
	const cJSON *jf = cJSON_GetObjectItemCaseSensitive(req->args, "from");
	const cJSON *jt = cJSON_GetObjectItemCaseSensitive(req->args, "to");
	const char *p[2];
	PGresult *res = NULL;
	cJSON *o = NULL, *rows;
	int rc, n;

	if (!cJSON_IsString(jf) || !cJSON_IsString(jt))
		return refuse(c, req, -EINVAL, code, code_len, msg, msg_len,
		              ADMIN_E_INVALID_ARGS,
		              "args.from and args.to required");
	p[0] = jf->valuestring;
	p[1] = jt->valuestring;
	if ((rc = db_begin(c->db)) < 0)
		return rc;
	rc = db_exec(c->db, &stmt_export_events, p, &res);
	if (rc == KASIR_ESQL) {
		db_rollback(c->db);
		return refuse(c, req, -EINVAL, code, code_len, msg, msg_len,
		              ADMIN_E_INVALID_ARGS,
		              "from/to must be timestamps");
	}
	if (rc < 0)
		goto fail;
	n = PQntuples(res);
	if (n > EXPORT_EVENTS_MAX) {
		PQclear(res);
		db_rollback(c->db);
		return refuse(c, req, KASIR_ETOOBIG, code, code_len, msg,
		              msg_len, "too_many_rows",
		              "more than 100000 events: narrow from/to");
	}
	if ((o = cJSON_CreateObject()) == NULL ||
	    (rows = cJSON_AddArrayToObject(o, "events")) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		static const char *const cols[] = {
		    "event_id",           "received_at",  "order_id",
		    "transaction_status", "status_code",  "gross_amount",
		    "currency",           "payment_type", "fraud_status",
		    "transaction_id",     "source_addr"};
		cJSON *r = cJSON_CreateObject();

		if (r == NULL || !cJSON_AddItemToArray(rows, r)) {
			cJSON_Delete(r);
			rc = -ENOMEM;
			goto fail;
		}
		for (int k = 0; k < (int)ARRAY_SIZE(cols); k++)
			if (!add_col(r, cols[k], res, i, k)) {
				rc = -ENOMEM;
				goto fail;
			}
	}
	if ((rc = audit(c->db, req, "ok", NULL)) < 0 ||
	    (rc = db_commit(c->db)) < 0)
		goto fail;
	PQclear(res);
	*ret = o;
	return 0;
fail:
	PQclear(res);
	cJSON_Delete(o);
	db_rollback(c->db);
	return rc;
}

static int
h_status(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	(void)req;
	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return cmd_status(arg, ret);
}

static int
h_doctor(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	(void)req;
	return cmd_doctor_facts(arg, ret, code, code_len, msg, msg_len);
}

static int
h_events_list(void *arg, const struct admin_request *req, cJSON **ret,
              char *code, size_t code_len, char *msg, size_t msg_len)
{
	return cmd_events_list(arg, req->args, ret, code, code_len, msg,
	                       msg_len);
}

static int
h_evidence(void *arg, const struct admin_request *req, cJSON **ret, char *code,
           size_t code_len, char *msg, size_t msg_len)
{
	return ingest_admin_evidence(arg, req->args, ret, code, code_len, msg,
	                             msg_len);
}

static int
h_quarantine_list(void *arg, const struct admin_request *req, cJSON **ret,
                  char *code, size_t code_len, char *msg, size_t msg_len)
{
	return cmd_quarantine_list(arg, req->args, ret, code, code_len, msg,
	                           msg_len);
}

static int
h_export(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	return cmd_export_events(arg, req, ret, code, code_len, msg, msg_len);
}

static int
h_audit_list(void *arg, const struct admin_request *req, cJSON **ret,
             char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct ingest_admin_ctx *c = arg;

	return admin_audit_list(c->db, &stmt_audit_list, req, ret, code,
	                        code_len, msg, msg_len);
}

/* The command table: common/admin_socket.c checks the role and
 * dispatches; any other name is refused there. */
/* clang-format off */
const struct admin_command ingest_admin_commands[] = {
    {.name = "status", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_status},
    {.name = "doctor.facts", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_doctor},
    {.name = "events.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_events_list},
    {.name = "evidence.order", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_evidence},
    {.name = "quarantine.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_quarantine_list},
    {.name = "audit.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_audit_list},
    {.name = "export.events", .min_role = ADMIN_ROLE_ENGINEER, .handler = h_export, .audited = true},
    {.name = NULL}};
/* clang-format on */
