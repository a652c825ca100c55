/*
 * admin.c - operator commands on the admin socket (kasirctl) and the
 * metrics computed from the database at scrape time.
 *
 *   status             support   mode, pending orders by age bucket,
 *                                oldest pending age, auth broken?, last
 *                                check, orders stream cursor
 *   checks.list        support   {order_id}: the watch row, every
 *                                stored answer and the refunds (kasirctl
 *                                order show)
 *   doctor.facts       support   pending past expiry + grace without an
 *                                expiry check (must be none), auth
 *                                broken, webhook silence
 *   reconcile.order    engineer  {order_id}: check now (even if final)
 *   reconcile.pending  engineer  every pending order now
 *   mode.set           engineer  {mode: "reconcile" | "normal"}
 *   evidence.order     support   {order_id}: every stored answer with its
 *                                raw body, and the refunds (evidence_admin.c)
 *   refund.order       engineer  {order_id, amount?}: Midtrans's Refund
 *                                API with a stored refund key (refund.c)
 *
 * Every changing command needs a reason and is written to recon.audit
 * (actor, role, reason, incident, before/after, result) in the same
 * transaction as its effect; refusals are audited too.  The handler runs
 * on the admin socket's single thread and owns r->admin_db.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "admin_audit.h"
#include "admin_socket.h"
#include "db.h"
#include "db_json.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "reconciler.h"
#include "stream.h"
#include "util.h"

const char *const recon_age_buckets[5] = {"lt_10m", "10m_1h", "1h_6h", "6h_24h",
                                          "ge_24h"};

/* One row: pending orders per age bucket, the oldest one's age, pending
 * orders past expiry + grace never checked after expiry. */
static const struct db_stmt st_pending = {
    .name = "recon_admin_pending",
    .sql = "SELECT"
           " count(*) FILTER (WHERE age < interval '10 minutes')::bigint"
           "  AS lt_10m,"
           " count(*) FILTER (WHERE age >= interval '10 minutes'"
           "  AND age < interval '1 hour')::bigint AS \"10m_1h\","
           " count(*) FILTER (WHERE age >= interval '1 hour'"
           "  AND age < interval '6 hours')::bigint AS \"1h_6h\","
           " count(*) FILTER (WHERE age >= interval '6 hours'"
           "  AND age < interval '24 hours')::bigint AS \"6h_24h\","
           " count(*) FILTER (WHERE age >= interval '24 hours')::bigint"
           "  AS ge_24h,"
           " coalesce(extract(epoch FROM max(age)), 0)::float8"
           "  AS oldest_pending_s,"
           " count(*) FILTER (WHERE NOT expiry_checked AND now() >"
           "  expires_at + $1::bigint * interval '1 millisecond')::bigint"
           "  AS past_expiry_unchecked,"
           " count(*)::bigint AS pending"
           " FROM (SELECT now() - created_at AS age, expiry_checked, expires_at"
           "  FROM recon.watch WHERE NOT final) p",
    .nparams = 1,
};

static const struct db_stmt st_settings = {
    .name = "recon_admin_settings",
    .sql = "SELECT mode, mode_since::text, mode_auto, mode_by,"
           " last_ingest_at::text,"
           " extract(epoch FROM now() - last_ingest_at)::float8"
           "  AS seconds_since_notification,"
           " silence_ref::text FROM recon.settings WHERE id = 1",
};

static const struct db_stmt st_last_check = {
    .name = "recon_admin_last_check",
    .sql = "SELECT (SELECT checked_at::text FROM recon.status_check"
           "  ORDER BY id DESC LIMIT 1) AS last_check_at,"
           " (SELECT count(*) FROM recon.status_check"
           "  WHERE checked_at > now() - interval '1 hour')::bigint"
           "  AS checks_last_hour",
};

static const struct db_stmt st_watch_of = {
    .name = "recon_admin_watch_of",
    .sql = "SELECT order_id, status, final, created_at::text,"
           " expires_at::text, transaction_id, payment_type,"
           " last_notification_at::text, last_key, next_check_at::text,"
           " attempts, failures, expiry_checked, last_check_at::text,"
           " last_verdict, lease_until::text, forced"
           " FROM recon.watch WHERE order_id = $1",
    .nparams = 1,
};

static const struct db_stmt st_checks_of = {
    .name = "recon_admin_checks_of",
    .sql = "SELECT id, attempt, asked, by_transaction_id, http_status,"
           " verdict, transaction_status, status_code, status_message,"
           " fraud_status, gross_amount, payment_type, transaction_id,"
           " past_expiry, published, reason, mode, latency_ms, error,"
           " body_truncated, requested_at::text, checked_at::text"
           " FROM recon.status_check WHERE order_id = $1 ORDER BY id DESC"
           " LIMIT 200",
    .nparams = 1,
};

static const struct db_stmt st_unchecked = {
    .name = "recon_admin_unchecked",
    .sql = "SELECT order_id, expires_at::text, next_check_at::text,"
           " attempts, failures, last_verdict FROM recon.watch"
           " WHERE NOT final AND NOT expiry_checked AND now() > expires_at +"
           " $1::bigint * interval '1 millisecond'"
           " ORDER BY expires_at LIMIT 200",
    .nparams = 1,
};

/* Orders created since the last webhook notification (and the silence
 * reference), as the automatic mode counts them. */
static const struct db_stmt st_silence = {
    .name = "recon_admin_silence",
    .sql = "SELECT count(*)::bigint AS orders_since_notification,"
           " coalesce(extract(epoch FROM now() - min(w.created_at)), 0)::float8"
           "  AS silent_for_s"
           " FROM recon.watch w, recon.settings s WHERE s.id = 1"
           " AND w.created_at > greatest(s.last_ingest_at, s.silence_ref,"
           "  now() - $1::bigint * interval '1 millisecond')",
    .nparams = 1,
};

static const struct db_stmt st_force_one = {
    .name = "recon_admin_force_one",
    .sql = "UPDATE recon.watch SET forced = true, updated_at = now()"
           " WHERE order_id = $1"
           " RETURNING status, final, attempts, last_verdict",
    .nparams = 1,
};

static const struct db_stmt st_force_pending = {
    .name = "recon_admin_force_pending",
    .sql = "UPDATE recon.watch SET next_check_at = now(), updated_at = now()"
           " WHERE NOT final RETURNING order_id",
};

static const struct db_stmt st_audit_list = {
    .name = "recon_admin_audit_list",
    .sql = ADMIN_AUDIT_LIST_SQL("recon"),
    .nparams = ADMIN_AUDIT_LIST_NPARAMS,
};

const struct db_stmt recon_admin_audit_insert = {
    .name = "recon_admin_audit",
    .sql = "INSERT INTO recon.audit (actor, role, command, args, reason,"
           " incident, before, after, result, error)"
           " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7::jsonb, $8::jsonb, $9,"
           " $10)",
    .nparams = 10,
};

static void
set_err(char *code, size_t code_len, char *msg, size_t msg_len, const char *c,
        const char *m)
{
	snprintf(code, code_len, "%s", c);
	snprintf(msg, msg_len, "%s", m);
}

static const char *
arg_str(const struct admin_request *req, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(req->args, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Writes the audit row in the open transaction (admin_audit.h). */
static int
audit(struct kasir_db *db, const struct admin_request *req, const cJSON *before,
      const cJSON *after, const char *result, const char *error)
{
	return admin_audit(db, &recon_admin_audit_insert, req, NULL, before,
	                   after, result, error);
}

static cJSON *
first_row(cJSON *rows)
{
	cJSON *o = NULL;

	if (rows != NULL && cJSON_GetArraySize(rows) > 0)
		o = cJSON_DetachItemFromArray(rows, 0);
	cJSON_Delete(rows);
	return o;
}

static cJSON *
status_json(struct recon *r, struct kasir_db *db)
{
	char grace[24];
	const char *p[1] = {grace};
	cJSON *o, *pending, *settings, *last;
	int64_t lc = atomic_load(&r->last_check_ms);

	snprintf(grace, sizeof(grace), "%" PRId64, r->conf->expiry_grace_ms);
	pending = first_row(db_query_json(db, &st_pending, p));
	settings = first_row(db_query_json(db, &st_settings, NULL));
	last = first_row(db_query_json(db, &st_last_check, NULL));
	o = cJSON_CreateObject();
	if (o == NULL || pending == NULL || settings == NULL || last == NULL) {
		cJSON_Delete(o);
		cJSON_Delete(pending);
		cJSON_Delete(settings);
		cJSON_Delete(last);
		return NULL;
	}
	cJSON_AddStringToObject(o, "service", RECON_NAME);
	cJSON_AddStringToObject(o, "version", KASIR_VERSION);
	cJSON_AddStringToObject(
	    o, "mode", recon_mode_name((enum recon_mode)atomic_load(&r->mode)));
	cJSON_AddItemToObject(o, "settings", settings);
	cJSON_AddItemToObject(o, "pending", pending);
	cJSON_AddBoolToObject(o, "auth_broken", atomic_load(&r->auth_broken));
	cJSON_AddItemToObject(o, "checks", last);
	if (lc > 0) {
		char at[40];

		time_rfc3339(lc, at, sizeof(at));
		cJSON_AddStringToObject(o, "last_answer_at", at);
	}
	if (r->consumer) {
		int64_t cur = stream_consumer_cursor(r->consumer);
		int64_t head = stream_consumer_head(r->consumer);

		cJSON_AddNumberToObject(o, "orders_cursor", (double)cur);
		cJSON_AddNumberToObject(o, "orders_head", (double)head);
		cJSON_AddNumberToObject(o, "orders_lag",
		                        (double)(head > cur ? head - cur : 0));
	}
	if (r->producer)
		cJSON_AddNumberToObject(
		    o, "recon_head", (double)stream_producer_head(r->producer));
	return o;
}

static cJSON *
doctor_json(struct recon *r, struct kasir_db *db)
{
	char grace[24], window[24];
	const char *pg[1] = {grace}, *pw[1] = {window};
	cJSON *o, *unchecked, *silence, *settings;

	snprintf(grace, sizeof(grace), "%" PRId64, r->conf->expiry_grace_ms);
	snprintf(window, sizeof(window), "%" PRId64,
	         r->conf->activity_window_ms);
	unchecked = db_query_json(db, &st_unchecked, pg);
	silence = first_row(db_query_json(db, &st_silence, pw));
	settings = first_row(db_query_json(db, &st_settings, NULL));
	o = cJSON_CreateObject();
	if (!o || !unchecked || !silence || !settings) {
		cJSON_Delete(o);
		cJSON_Delete(unchecked);
		cJSON_Delete(silence);
		cJSON_Delete(settings);
		return NULL;
	}
	cJSON_AddNumberToObject(o, "pending_past_expiry_unchecked",
	                        cJSON_GetArraySize(unchecked));
	cJSON_AddItemToObject(o, "past_expiry_unchecked", unchecked);
	cJSON_AddBoolToObject(o, "auth_broken", atomic_load(&r->auth_broken));
	{
		const cJSON *s = cJSON_GetObjectItem(silence, "silent_for_s");
		double silent = cJSON_IsNumber(s) ? s->valuedouble : 0;

		cJSON_AddBoolToObject(o, "webhook_silence",
		                      silent * 1000.0 >=
		                          (double)r->conf->auto_silence_ms);
	}
	cJSON_AddItemToObject(o, "silence", silence);
	cJSON_AddStringToObject(
	    o, "mode", recon_mode_name((enum recon_mode)atomic_load(&r->mode)));
	cJSON_AddItemToObject(o, "settings", settings);
	return o;
}

static int
cmd_reconcile_order(void *arg, const struct admin_request *req, cJSON **ret,
                    char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;
	struct kasir_db *db = r->admin_db;
	const char *order_id = arg_str(req, "order_id");
	const char *p[1] = {order_id};
	PGresult *res = NULL;
	cJSON *before = NULL, *after = NULL, *out;
	int rc;

	if (order_id == NULL || !order_id_valid(order_id, 50)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {order_id: string}");
		return -EINVAL;
	}
	if ((rc = db_begin(db)) < 0)
		return rc;
	if ((rc = db_exec(db, &st_force_one, p, &res)) < 0)
		goto fail;
	if (PQntuples(res) != 1) {
		db_rollback(db);
		if (audit(db, req, NULL, NULL, "refused",
		          ADMIN_E_ORDER_NOT_FOUND) < 0)
			log_warning("admin: auditing a refusal failed");
		set_err(code, code_len, msg, msg_len, ADMIN_E_ORDER_NOT_FOUND,
		        "the reconciler has not seen this order");
		rc = KASIR_ENOTFOUND;
		goto out;
	}
	before = db_rows_json(res);
	after = cJSON_CreateObject();
	cJSON_AddBoolToObject(after, "check_queued", true);
	if ((rc = audit(db, req, cJSON_GetArrayItem(before, 0), after, "ok",
	                NULL)) < 0)
		goto fail;
	if ((rc = db_commit(db)) < 0)
		goto out;
	log_order(LOG_NOTICE, order_id, "admin: check now requested by %s: %s",
	          req->peer.user, req->reason);
	scheduler_wake(r);
	out = cJSON_CreateObject();
	cJSON_AddStringToObject(out, "order_id", order_id);
	cJSON_AddBoolToObject(out, "queued", true);
	cJSON_AddBoolToObject(out, "final", db_get(res, 0, 1)[0] == 't');
	cJSON_AddStringToObject(out, "status", db_get(res, 0, 0));
	*ret = out;
	rc = 0;
	goto out;
fail:
	db_rollback(db);
out:
	PQclear(res);
	cJSON_Delete(before);
	cJSON_Delete(after);
	return rc;
}

static int
cmd_reconcile_pending(void *arg, const struct admin_request *req, cJSON **ret,
                      char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;
	struct kasir_db *db = r->admin_db;
	PGresult *res = NULL;
	cJSON *after = NULL, *out;
	int rc, n;

	(void)code; /* nothing here is refused: the reason was checked */
	(void)code_len;
	(void)msg;
	(void)msg_len;
	if ((rc = db_begin(db)) < 0)
		return rc;
	if ((rc = db_exec(db, &st_force_pending, NULL, &res)) < 0)
		goto fail;
	n = PQntuples(res);
	after = cJSON_CreateObject();
	cJSON_AddNumberToObject(after, "queued", n);
	if ((rc = audit(db, req, NULL, after, "ok", NULL)) < 0)
		goto fail;
	if ((rc = db_commit(db)) < 0)
		goto out;
	log_notice("admin: %d pending order(s) queued for a check by %s: %s", n,
	           req->peer.user, req->reason);
	scheduler_wake(r);
	out = cJSON_CreateObject();
	cJSON_AddNumberToObject(out, "queued", n);
	*ret = out;
	rc = 0;
	goto out;
fail:
	db_rollback(db);
out:
	PQclear(res);
	cJSON_Delete(after);
	return rc;
}

static int
cmd_mode_set(void *arg, const struct admin_request *req, cJSON **ret,
             char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;
	struct kasir_db *db = r->admin_db;
	const char *mode = arg_str(req, "mode");
	enum recon_mode want, before;
	cJSON *b = NULL, *a = NULL, *out;
	char by[96];
	int rc;

	if (mode == NULL ||
	    (strcmp(mode, "reconcile") != 0 && strcmp(mode, "normal") != 0)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {mode: \"reconcile\" | \"normal\"}");
		return -EINVAL;
	}
	want = strcmp(mode, "reconcile") == 0 ? MODE_RECONCILE : MODE_NORMAL;
	snprintf(by, sizeof(by), "operator:%.64s", req->peer.user);
	if ((rc = db_begin(db)) < 0)
		return rc;
	if ((rc = mode_set_locked(r, db, want, by, &before)) < 0)
		goto fail;
	b = cJSON_CreateObject();
	a = cJSON_CreateObject();
	cJSON_AddStringToObject(b, "mode", recon_mode_name(before));
	cJSON_AddStringToObject(a, "mode", recon_mode_name(want));
	if ((rc = audit(db, req, b, a, "ok", NULL)) < 0)
		goto fail;
	if ((rc = db_commit(db)) < 0)
		goto out;
	mode_committed(r, before, want, by, req->reason);
	scheduler_wake(r);
	out = cJSON_CreateObject();
	cJSON_AddStringToObject(out, "mode", recon_mode_name(want));
	cJSON_AddStringToObject(out, "was", recon_mode_name(before));
	*ret = out;
	rc = 0;
	goto out;
fail:
	db_rollback(db);
out:
	cJSON_Delete(b);
	cJSON_Delete(a);
	return rc;
}

/* args.order_id, or an invalid_args refusal (NULL). */
static const char *
order_arg(const struct admin_request *req, char *code, size_t code_len,
          char *msg, size_t msg_len)
{
	const char *order_id = arg_str(req, "order_id");

	if (order_id == NULL || !order_id_valid(order_id, 50)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {order_id: string}");
		return NULL;
	}
	return order_id;
}

static int
h_status(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;

	(void)req;
	return admin_result(status_json(r, r->admin_db), ret, code, code_len,
	                    msg, msg_len);
}

static int
h_doctor(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;

	(void)req;
	return admin_result(doctor_json(r, r->admin_db), ret, code, code_len,
	                    msg, msg_len);
}

static int
h_checks_list(void *arg, const struct admin_request *req, cJSON **ret,
              char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;
	struct kasir_db *db = r->admin_db;
	const char *order_id = order_arg(req, code, code_len, msg, msg_len);
	const char *p[1] = {order_id};
	cJSON *checks, *watch, *out = NULL;

	if (order_id == NULL)
		return -EINVAL;
	checks = db_query_json(db, &st_checks_of, p);
	watch = db_query_json(db, &st_watch_of, p);
	if (checks && watch) {
		out = cJSON_CreateObject();
		cJSON_AddStringToObject(out, "order_id", order_id);
		cJSON_AddItemToObject(out, "watch",
		                      cJSON_GetArraySize(watch)
		                          ? cJSON_DetachItemFromArray(watch, 0)
		                          : cJSON_CreateNull());
		cJSON_AddItemToObject(out, "checks", checks);
		checks = NULL;
		/* refunds started from kasir (refund.c); absent when the
		 * query failed: kasirctl shows what it got */
		cJSON *refunds = recon_refunds_json(db, order_id);

		if (refunds != NULL)
			cJSON_AddItemToObject(out, "refunds", refunds);
	}
	cJSON_Delete(checks);
	cJSON_Delete(watch);
	return admin_result(out, ret, code, code_len, msg, msg_len);
}

static int
h_evidence(void *arg, const struct admin_request *req, cJSON **ret, char *code,
           size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;
	const char *order_id = order_arg(req, code, code_len, msg, msg_len);

	if (order_id == NULL)
		return -EINVAL;
	return admin_result(recon_admin_evidence(r->admin_db, order_id), ret,
	                    code, code_len, msg, msg_len);
}

static int
h_audit_list(void *arg, const struct admin_request *req, cJSON **ret,
             char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;

	return admin_audit_list(r->admin_db, &st_audit_list, req, ret, code,
	                        code_len, msg, msg_len);
}

/* The command table: common/admin_socket.c checks the role and
 * dispatches; any other name is refused there. */
/* clang-format off */
const struct admin_command recon_admin_commands[] = {
    {.name = "status", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_status},
    {.name = "doctor.facts", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_doctor},
    {.name = "checks.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_checks_list},
    {.name = "evidence.order", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_evidence},
    {.name = "audit.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_audit_list},
    {.name = "reconcile.order", .min_role = ADMIN_ROLE_ENGINEER, .handler = cmd_reconcile_order, .audited = true, .needs_reason = true},
    {.name = "reconcile.pending", .min_role = ADMIN_ROLE_ENGINEER, .handler = cmd_reconcile_pending, .audited = true, .needs_reason = true},
    {.name = "mode.set", .min_role = ADMIN_ROLE_ENGINEER, .handler = cmd_mode_set, .audited = true, .needs_reason = true},
    {.name = "refund.order", .min_role = ADMIN_ROLE_ENGINEER, .handler = recon_admin_refund, .audited = true, .needs_reason = true},
    {.name = NULL}};
/* clang-format on */

int
recon_admin_audit(struct kasir_db *db, const struct admin_request *req,
                  const cJSON *before, const cJSON *after, const char *result,
                  const char *error)
{
	return audit(db, req, before, after, result, error);
}

/* Scrape callback: pending orders by age bucket, oldest pending age,
 * unchecked past expiry, stream lag.  Runs on the scraping thread with
 * its own connection.  A scrape that finds another one still in the
 * database answers at once with the database gauges as they were (see
 * notifier_scrape). */
void
recon_scrape(void *arg)
{
	struct recon *r = arg;
	PGresult *res = NULL;
	char grace[24];
	const char *p[1] = {grace};
	bool db_gauges = pthread_mutex_trylock(&r->scrape_lock) == 0;

	snprintf(grace, sizeof(grace), "%" PRId64, r->conf->expiry_grace_ms);
	if (!db_gauges || db_ensure(r->scrape_db) < 0)
		goto out;
	if (db_exec(r->scrape_db, &st_pending, p, &res) == 0) {
		if (PQntuples(res) == 1) {
			for (int b = 0; b < 5; b++)
				metric_set(r->m.pending[b],
				           (double)db_get_i64(res, 0, b));
			metric_set(r->m.oldest_pending,
			           strtod(db_get(res, 0, 5), NULL));
			metric_set(r->m.past_expiry_unchecked,
			           (double)db_get_i64(res, 0, 6));
		}
		PQclear(res);
	}
out:
	if (r->consumer) {
		int64_t cur = stream_consumer_cursor(r->consumer);
		int64_t head = stream_consumer_head(r->consumer);

		metric_set(r->m.stream_lag,
		           (double)(head > cur ? head - cur : 0));
	}
	metric_set(r->m.mode, (double)atomic_load(&r->mode));
	metric_set(r->m.auth_broken, atomic_load(&r->auth_broken) ? 1 : 0);
	if (db_gauges)
		pthread_mutex_unlock(&r->scrape_lock);
}
