/*
 * admin.c - operator commands on the admin socket (kasirctl) and the
 * metrics computed from the database at scrape time.
 *
 *   status            support   backlog by state/channel, oldest due job,
 *                               reminders paused?, stream cursor
 *   doctor.facts      support   dead / stuck / uncertain jobs, receipts
 *                               sent for an order that was not PAID (must
 *                               be none), PAID orders without a receipt
 *   jobs.list         support   {order_id}: jobs and their attempts
 *   evidence.order    support   {order_id}: the same and the audit rows
 *                               naming the order (kasirctl evidence)
 *   reminders.pause   engineer  persisted in notify.settings
 *   reminders.resume  engineer
 *   jobs.requeue      engineer  {dead:true, order_id?, channel?}; never
 *                               touches an uncertain job
 *   jobs.decide       engineer  {job_id, decision: resend|delivered}: an
 *                               uncertain send, one at a time
 *   receipt.resend    engineer  {order_id}: only for a PAID order
 *
 * Every changing command needs a reason and is written to notify.audit
 * (actor, role, reason, incident, before/after, result) in the same
 * transaction as its effect; refusals are audited too.  The handler runs
 * on the admin socket's single thread and owns n->admin_db.
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
#include "notifier.h"
#include "stream.h"
#include "util.h"

const char *const notify_job_states[7] = {
    "queued", "sending", "sent", "retry", "uncertain", "dead", "cancelled",
};

#define LIST_MAX 200 /* rows returned by a listing */

/* SQL reads best one clause per line: */
/* clang-format off */
static const struct db_stmt st_backlog = {
    .name = "notify_admin_backlog",
    .sql = "SELECT state, channel, count(*)::bigint AS jobs FROM notify.job"
           " GROUP BY state, channel ORDER BY state, channel",
};

static const struct db_stmt st_oldest = {
    .name = "notify_admin_oldest",
    .sql = "SELECT COALESCE(extract(epoch FROM now() - min(due_at)), 0)"
           "::float8 AS oldest_due_s FROM notify.job"
           " WHERE state IN ('queued', 'retry')"
           " AND due_at <= now()"
           " AND (kind <> 'reminder' OR NOT (SELECT reminders_paused"
           "      FROM notify.settings WHERE id = 1))",
};

/*
 * Jobs still waiting to go out, measured from when they first could have
 * gone (their first attempt, or their due time): a retry moves due_at
 * forward, so "oldest due" stays 0 while a provider refuses every attempt
 * (a quiet shop hears nothing).  failing: waiting jobs whose attempts
 * failed, from the first failure; last_error says why.
 */
static const struct db_stmt st_waiting = {
    .name = "notify_admin_waiting",
    .sql = "SELECT"
           " COALESCE(extract(epoch FROM now() - min(w.since)), 0)::float8"
           "  AS oldest_waiting_s,"
           " COALESCE(extract(epoch FROM now() - min(w.failed_since)), 0)"
           "  ::float8 AS oldest_failing_s,"
           " count(*) AS waiting_jobs,"
           " count(w.failed_since) AS failing_jobs,"
           " (array_agg(w.channel || ': ' || w.last_error ORDER BY"
           "   w.failed_since) FILTER (WHERE w.failed_since IS NOT NULL))[1]"
           "  AS first_error"
           " FROM (SELECT j.channel, j.last_error,"
           "  (SELECT min(a.at) FROM notify.attempt a WHERE a.job_id = j.id"
           "   AND a.result IN ('transient', 'uncertain')) AS failed_since,"
           "  LEAST(j.due_at, (SELECT min(a.at) FROM notify.attempt a"
           "   WHERE a.job_id = j.id)) AS since"
           "  FROM notify.job j"
           "  WHERE j.state IN ('queued', 'retry', 'uncertain', 'sending')"
           "  AND (j.kind <> 'reminder' OR NOT (SELECT reminders_paused"
           "       FROM notify.settings WHERE id = 1))) w"
           " WHERE w.since <= now()",
};

static const struct db_stmt st_settings = {
    .name = "notify_admin_settings",
    .sql = "SELECT reminders_paused, updated_at::text, updated_by"
           " FROM notify.settings WHERE id = 1",
};

static const struct db_stmt st_settings_lock = {
    .name = "notify_admin_settings_lock",
    .sql = "SELECT reminders_paused FROM notify.settings WHERE id = 1"
           " FOR UPDATE",
};

static const struct db_stmt st_settings_set = {
    .name = "notify_admin_settings_set",
    .sql = "UPDATE notify.settings SET reminders_paused = $1::bool,"
           " updated_at = now(), updated_by = $2 WHERE id = 1",
    .nparams = 2,
};

const struct db_stmt notifier_admin_audit_insert = {
    .name = "notify_admin_audit",
    .sql = "INSERT INTO notify.audit (actor, role, command, args, reason,"
           " incident, before, after, result, error)"
           " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7::jsonb, $8::jsonb, $9,"
           " $10)",
    .nparams = 10,
};

static const struct db_stmt st_dead = {
    .name = "notify_admin_dead",
    .sql = "SELECT id, order_id, kind, channel, attempts, last_error,"
           " updated_at::text FROM notify.job WHERE state = 'dead'"
           " ORDER BY id LIMIT 200",
};

static const struct db_stmt st_stuck = {
    .name = "notify_admin_stuck",
    .sql = "SELECT id, order_id, kind, channel, state, attempts,"
           " due_at::text, lease_until::text FROM notify.job"
           " WHERE (state = 'sending'"
           " AND lease_until < now() - interval '1 minute')"
           "  OR (state IN ('queued', 'retry')"
           "      AND due_at < now() - interval '10 minutes'"
           "      AND (kind <> 'reminder' OR NOT (SELECT reminders_paused"
           "           FROM notify.settings WHERE id = 1)))"
           " ORDER BY id LIMIT 200",
};

/* Sends that may have reached the customer: never sent again until an
 * operator decides (jobs.decide).  Listed by doctor with the command. */
static const struct db_stmt st_uncertain = {
    .name = "notify_admin_uncertain",
    .sql = "SELECT id AS job_id, order_id, kind, channel, attempts,"
           " uncertain, last_error, updated_at::text FROM notify.job"
           " WHERE state = 'uncertain' ORDER BY id LIMIT 200",
};

/* A receipt the notifier sent while its record of the order was not PAID:
 * the SOP's forbidden case.  Must always be empty. */
static const struct db_stmt st_receipt_unpaid = {
    .name = "notify_admin_receipt_unpaid",
    .sql = "SELECT j.id AS job_id, j.order_id, j.channel, a.order_status,"
           " a.at::text"
           " FROM notify.attempt a JOIN notify.job j ON j.id = a.job_id"
           " WHERE j.kind = 'receipt' AND a.result = 'sent'"
           " AND a.order_status IS DISTINCT FROM 'PAID'"
           " ORDER BY a.id LIMIT 200",
};

static const struct db_stmt st_paid_no_receipt = {
    .name = "notify_admin_paid_no_receipt",
    .sql = "SELECT o.order_id, o.updated_at::text FROM notify.orders o"
           " WHERE o.status = 'PAID' AND NOT o.revoked"
           " AND o.updated_at < now() - interval '10 minutes'"
           " AND NOT EXISTS (SELECT 1 FROM notify.job j WHERE j.order_id ="
           "  o.order_id AND j.kind = 'receipt' AND j.state = 'sent')"
           " ORDER BY o.order_id LIMIT 200",
};

static const struct db_stmt st_jobs_of_order = {
    .name = "notify_admin_jobs_of_order",
    .sql = "SELECT id, kind, channel, variant, recipient, state, attempts,"
           " max_attempts, due_at::text, last_error, provider_id, uncertain,"
           " origin, created_at::text, sent_at::text,"
           " (SELECT"
           " COALESCE(json_agg(json_build_object('attempt', a.attempt_no,"
           "   'result', a.result, 'order_status', a.order_status,"
           "   'provider_id', a.provider_id, 'error', a.error,"
           "   'latency_ms', a.latency_ms, 'at', a.at) ORDER BY a.id), '[]')"
           "  FROM notify.attempt a WHERE a.job_id = j.id) AS attempts_log"
           " FROM notify.job j WHERE order_id = $1 ORDER BY id LIMIT 200",
    .nparams = 1,
};

/* Operator commands that named the order (for kasirctl evidence). */
static const struct db_stmt st_audit_list = {
    .name = "notify_admin_audit_list",
    .sql = ADMIN_AUDIT_LIST_SQL("notify"),
    .nparams = ADMIN_AUDIT_LIST_NPARAMS,
};

static const struct db_stmt st_audit_of_order = {
    .name = "notify_admin_audit_of_order",
    .sql = "SELECT id, to_char(at AT TIME ZONE 'UTC',"
           " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at, actor, role,"
           " command, args, reason, incident, before, after, result, error"
           " FROM notify.audit WHERE args->>'order_id' = $1"
           " ORDER BY id LIMIT 500",
    .nparams = 1,
};

static const struct db_stmt st_order_of = {
    .name = "notify_admin_order_of",
    .sql = "SELECT order_id, status, revoked, access_granted,"
           " access_valid_until, last_seq, last_type, updated_at::text"
           " FROM notify.orders WHERE order_id = $1",
    .nparams = 1,
};

static const struct db_stmt st_order_lock = {
    .name = "notify_admin_order_lock",
    .sql = "SELECT status, revoked, snapshot::text FROM notify.orders"
           " WHERE order_id = $1 FOR UPDATE",
    .nparams = 1,
};

static const struct db_stmt st_requeue = {
    .name = "notify_admin_requeue",
    .sql = "UPDATE notify.job SET state = 'queued', due_at = now(),"
           " attempts = 0, requeues = requeues + 1, lease_until = NULL,"
           " updated_at = now()"
           " WHERE state = ANY ($1::text[])"
           " AND ($2::text IS NULL OR order_id = $2)"
           " AND ($3::text IS NULL OR channel = $3)"
           " RETURNING id",
    .nparams = 3,
};

static const struct db_stmt st_job_lock = {
    .name = "notify_admin_job_lock",
    .sql = "SELECT state, order_id, kind, channel, attempts, uncertain,"
           " last_error FROM notify.job WHERE id = $1::bigint FOR UPDATE",
    .nparams = 1,
};

/* The operator's decision on an uncertain send: 'resend' queues it once
 * more (room for one more attempt), 'delivered' closes it as sent. */
static const struct db_stmt st_decide_resend = {
    .name = "notify_admin_decide_resend",
    .sql = "UPDATE notify.job SET state = 'queued', due_at = now(),"
           " requeues = requeues + 1,"
           " max_attempts = GREATEST(max_attempts, attempts + 1),"
           " last_error = $2, updated_at = now()"
           " WHERE id = $1::bigint AND state = 'uncertain'",
    .nparams = 2,
};

static const struct db_stmt st_decide_delivered = {
    .name = "notify_admin_decide_delivered",
    .sql = "UPDATE notify.job SET state = 'sent', sent_at = now(),"
           " last_error = $2, updated_at = now()"
           " WHERE id = $1::bigint AND state = 'uncertain'",
    .nparams = 2,
};

/* Receipt resend: one new job per channel of the order's last receipt,
 * with the next variant number. */
static const struct db_stmt st_resend = {
    .name = "notify_admin_resend",
    .sql = "INSERT INTO notify.job (order_id, kind, channel, variant,"
           " recipient, max_attempts, payload, origin)"
           " SELECT DISTINCT ON (channel) order_id, 'receipt', channel,"
           "  (SELECT max(variant) + 1 FROM notify.job x WHERE x.order_id ="
           "   j.order_id AND x.kind = 'receipt' AND x.channel = j.channel),"
           "  recipient, $2::int, payload, $3"
           " FROM notify.job j WHERE order_id = $1 AND kind = 'receipt'"
           " ORDER BY channel, variant DESC"
           " RETURNING id, channel, variant",
    .nparams = 3,
};
/* clang-format on */

static void
set_err(char *code, size_t code_len, char *msg, size_t msg_len, const char *c,
        const char *m)
{
	snprintf(code, code_len, "%s", c);
	snprintf(msg, msg_len, "%s", m);
}

/* Writes the audit row inside the open transaction (admin_audit.h). */
static int
audit(struct kasir_db *db, const struct admin_request *req, const cJSON *before,
      const cJSON *after, const char *result, const char *error)
{
	return admin_audit(db, &notifier_admin_audit_insert, req, NULL, before,
	                   after, result, error);
}

static cJSON *
status_json(struct notifier *n, struct kasir_db *db)
{
	cJSON *o = cJSON_CreateObject(), *backlog, *oldest, *settings, *waiting;

	backlog = db_query_json(db, &st_backlog, NULL);
	oldest = db_query_json(db, &st_oldest, NULL);
	settings = db_query_json(db, &st_settings, NULL);
	waiting = db_query_json(db, &st_waiting, NULL);
	if (o == NULL || backlog == NULL || oldest == NULL ||
	    settings == NULL || waiting == NULL) {
		cJSON_Delete(waiting);
		cJSON_Delete(o);
		cJSON_Delete(backlog);
		cJSON_Delete(oldest);
		cJSON_Delete(settings);
		return NULL;
	}
	cJSON_AddStringToObject(o, "service", NOTIFIER_NAME);
	cJSON_AddStringToObject(o, "version", KASIR_VERSION);
	cJSON_AddItemToObject(o, "backlog", backlog);
	cJSON_AddNumberToObject(
	    o, "oldest_due_s",
	    cJSON_GetObjectItem(cJSON_GetArrayItem(oldest, 0), "oldest_due_s")
	        ->valuedouble);
	cJSON_Delete(oldest);
	cJSON_AddItemToObject(o, "waiting",
	                      cJSON_DetachItemFromArray(waiting, 0));
	cJSON_Delete(waiting);
	cJSON_AddBoolToObject(
	    o, "reminders_paused",
	    cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(settings, 0),
	                                     "reminders_paused")));
	cJSON_AddItemToObject(o, "settings", settings);
	if (n->consumer) {
		int64_t cur = stream_consumer_cursor(n->consumer);
		int64_t head = stream_consumer_head(n->consumer);

		cJSON_AddNumberToObject(o, "orders_cursor", (double)cur);
		cJSON_AddNumberToObject(o, "orders_head", (double)head);
		cJSON_AddNumberToObject(o, "orders_lag",
		                        (double)(head > cur ? head - cur : 0));
	}
	return o;
}

static int
cmd_pause(struct notifier *n, struct kasir_db *db,
          const struct admin_request *req, bool pause, cJSON **ret)
{
	PGresult *res = NULL;
	cJSON *before = NULL, *after = NULL, *out;
	bool was;
	int r;

	if ((r = db_begin(db)) < 0)
		return r;
	if ((r = db_exec(db, &st_settings_lock, NULL, &res)) < 0)
		goto fail;
	was = PQntuples(res) == 1 && db_get(res, 0, 0)[0] == 't';
	PQclear(res);
	{
		const char *p[2] = {pause ? "true" : "false", req->peer.user};

		if ((r = db_exec(db, &st_settings_set, p, NULL)) < 0)
			goto fail;
	}
	before = cJSON_CreateObject();
	after = cJSON_CreateObject();
	cJSON_AddBoolToObject(before, "reminders_paused", was);
	cJSON_AddBoolToObject(after, "reminders_paused", pause);
	if ((r = audit(db, req, before, after, "ok", NULL)) < 0)
		goto fail;
	if ((r = db_commit(db)) < 0)
		goto out;
	metric_set(n->m.paused, pause ? 1 : 0);
	log_notice("admin: reminders %s by %s: %s",
	           pause ? "paused" : "resumed", req->peer.user, req->reason);
	if (!pause)
		workers_wake(n);
	out = cJSON_CreateObject();
	cJSON_AddBoolToObject(out, "reminders_paused", pause);
	cJSON_AddBoolToObject(out, "was_paused", was);
	*ret = out;
	r = 0;
	goto out;
fail:
	db_rollback(db);
out:
	cJSON_Delete(before);
	cJSON_Delete(after);
	return r;
}

static const char *
arg_str(const struct admin_request *req, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(req->args, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int
cmd_requeue(void *arg, const struct admin_request *req, cJSON **ret, char *code,
            size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;
	struct kasir_db *db = n->admin_db;
	const cJSON *dead = cJSON_GetObjectItemCaseSensitive(req->args, "dead");
	const char *order_id = arg_str(req, "order_id");
	const char *channel = arg_str(req, "channel");
	enum notify_channel_id ch;
	PGresult *res = NULL;
	cJSON *ids = NULL, *after = NULL, *out;
	int r;

	if ((channel && notify_channel_parse(channel, &ch) < 0) ||
	    (order_id && !order_id_valid(order_id, 50)) ||
	    (dead && !cJSON_IsBool(dead))) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {dead: bool, order_id?: string, "
		        "channel?: email|whatsapp}");
		return -EINVAL;
	}
	if ((r = db_begin(db)) < 0)
		return r;
	{
		/* dead (default) or the jobs waiting for a retry; never
		 * uncertain ones: each needs its own decision (jobs.decide) */
		const char *p[3] = {dead && cJSON_IsFalse(dead) ? "{retry}"
		                                                : "{dead}",
		                    order_id, channel};

		if ((r = db_exec(db, &st_requeue, p, &res)) < 0)
			goto fail;
	}
	ids = cJSON_CreateArray();
	for (int i = 0; i < PQntuples(res) && i < LIST_MAX; i++)
		cJSON_AddItemToArray(
		    ids, cJSON_CreateNumber((double)db_get_i64(res, i, 0)));
	after = cJSON_CreateObject();
	cJSON_AddNumberToObject(after, "requeued", PQntuples(res));
	cJSON_AddItemReferenceToObject(after, "job_ids", ids);
	if ((r = audit(db, req, NULL, after, "ok", NULL)) < 0)
		goto fail;
	if ((r = db_commit(db)) < 0)
		goto out;
	log_notice("admin: %d job(s) requeued by %s: %s", PQntuples(res),
	           req->peer.user, req->reason);
	workers_wake(n);
	out = cJSON_CreateObject();
	cJSON_AddNumberToObject(out, "requeued", PQntuples(res));
	cJSON_AddItemToObject(out, "job_ids", ids);
	ids = NULL;
	*ret = out;
	r = 0;
	goto out;
fail:
	db_rollback(db);
out:
	PQclear(res);
	cJSON_Delete(after); /* holds only a reference to ids */
	cJSON_Delete(ids);
	return r;
}

static int
cmd_resend(void *arg, const struct admin_request *req, cJSON **ret, char *code,
           size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;
	struct kasir_db *db = n->admin_db;
	const char *order_id = arg_str(req, "order_id");
	PGresult *res = NULL, *ins = NULL;
	cJSON *before = NULL, *after = NULL, *out;
	char maxa[16], origin[96];
	const char *why = NULL;
	int r;

	if (order_id == NULL || !order_id_valid(order_id, 50)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {order_id: string}");
		return -EINVAL;
	}
	if ((r = db_begin(db)) < 0)
		return r;
	{
		const char *p[1] = {order_id};

		if ((r = db_exec(db, &st_order_lock, p, &res)) < 0)
			goto fail;
	}
	before = cJSON_CreateObject();
	if (PQntuples(res) == 0) {
		why = ADMIN_E_ORDER_NOT_FOUND;
		cJSON_AddNullToObject(before, "status");
	} else {
		cJSON_AddStringToObject(before, "status", db_get(res, 0, 0));
		cJSON_AddBoolToObject(before, "revoked",
		                      db_get(res, 0, 1)[0] == 't');
		if (strcmp(db_get(res, 0, 0), "PAID") != 0)
			why = "order_not_paid";
		else if (db_get(res, 0, 1)[0] == 't')
			why = "access_revoked";
	}
	if (why != NULL) {
		/* refused: record it (the lock read changed nothing) */
		if ((r = audit(db, req, before, NULL, "refused", why)) < 0)
			goto fail;
		if ((r = db_commit(db)) < 0)
			goto out;
		set_err(code, code_len, msg, msg_len, why,
		        strcmp(why, ADMIN_E_ORDER_NOT_FOUND) == 0
		            ? "the notifier has no record of this order"
		            : "a receipt is only sent for a PAID order");
		log_notice("admin: receipt resend for %s by %s refused: %s",
		           order_id, req->peer.user, why);
		r = strcmp(why, ADMIN_E_ORDER_NOT_FOUND) == 0 ? KASIR_ENOTFOUND
		                                              : KASIR_ECONFLICT;
		goto out;
	}
	snprintf(maxa, sizeof(maxa), "%zu", n->conf->retry.n + 1);
	snprintf(origin, sizeof(origin), "resend:%.60s", req->peer.user);
	{
		const char *p[3] = {order_id, maxa, origin};

		if ((r = db_exec(db, &st_resend, p, &ins)) < 0)
			goto fail;
	}
	if (PQntuples(ins) == 0) {
		/* no original receipt (no recipient for any channel) */
		db_rollback(db);
		set_err(code, code_len, msg, msg_len, "no_receipt",
		        "this order has no receipt job to resend");
		r = KASIR_ECONFLICT;
		goto out;
	}
	after = cJSON_CreateObject();
	cJSON_AddItemToObject(after, "jobs", db_rows_json(ins));
	if ((r = audit(db, req, before, after, "ok", NULL)) < 0)
		goto fail;
	if ((r = db_commit(db)) < 0)
		goto out;
	log_order(LOG_NOTICE, order_id, "admin: receipt resend by %s: %s",
	          req->peer.user, req->reason);
	workers_wake(n);
	out = cJSON_CreateObject();
	cJSON_AddStringToObject(out, "order_id", order_id);
	cJSON_AddItemToObject(out, "jobs", db_rows_json(ins));
	*ret = out;
	r = 0;
	goto out;
fail:
	db_rollback(db);
out:
	PQclear(res);
	PQclear(ins);
	cJSON_Delete(before);
	cJSON_Delete(after);
	return r;
}

/*
 * jobs.decide {job_id, decision: "resend"|"delivered"}: the operator's
 * decision on one uncertain send (engineer, reason; audited with the job
 * before and after in the same transaction).  resend: queued once more;
 * the worker's guard still applies (a receipt only for a PAID order).
 * delivered: the customer or the provider's log confirms it arrived.
 */
static int
cmd_decide(void *arg, const struct admin_request *req, cJSON **ret, char *code,
           size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;
	struct kasir_db *db = n->admin_db;
	const cJSON *jid =
	    cJSON_GetObjectItemCaseSensitive(req->args, "job_id");
	const char *decision = arg_str(req, "decision");
	const struct db_stmt *st;
	PGresult *res = NULL;
	cJSON *before = NULL, *after = NULL, *out;
	char idbuf[24], why[160];
	int r;

	if (!cJSON_IsNumber(jid) || jid->valuedouble < 1 ||
	    jid->valuedouble > 9007199254740991.0 ||
	    jid->valuedouble != (double)(int64_t)jid->valuedouble ||
	    decision == NULL ||
	    (strcmp(decision, "resend") != 0 &&
	     strcmp(decision, "delivered") != 0)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {job_id: number, decision: resend|delivered}");
		return -EINVAL;
	}
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, (int64_t)jid->valuedouble);
	st = strcmp(decision, "resend") == 0 ? &st_decide_resend
	                                     : &st_decide_delivered;
	if ((r = db_begin(db)) < 0)
		return r;
	{
		const char *p[1] = {idbuf};

		if ((r = db_exec(db, &st_job_lock, p, &res)) < 0)
			goto fail;
	}
	if (PQntuples(res) == 0 ||
	    strcmp(db_get(res, 0, 0), "uncertain") != 0) {
		const char *c =
		    PQntuples(res) == 0 ? "job_not_found" : "not_uncertain";

		before = PQntuples(res) ? db_rows_json(res) : NULL;
		if ((r = audit(db, req, before, NULL, "refused", c)) < 0)
			goto fail;
		if ((r = db_commit(db)) < 0)
			goto out;
		set_err(code, code_len, msg, msg_len, c,
		        PQntuples(res) == 0
		            ? "no such notification job"
		            : "only a job in state uncertain waits for a "
		              "decision");
		r = PQntuples(res) == 0 ? KASIR_ENOTFOUND : KASIR_ECONFLICT;
		goto out;
	}
	before = db_rows_json(res);
	snprintf(why, sizeof(why), "operator %.60s decided: %s", req->peer.user,
	         decision);
	{
		const char *p[2] = {idbuf, why};

		if ((r = db_exec(db, st, p, NULL)) < 0)
			goto fail;
	}
	after = cJSON_CreateObject();
	cJSON_AddStringToObject(after, "decision", decision);
	cJSON_AddStringToObject(after, "state",
	                        strcmp(decision, "resend") == 0 ? "queued"
	                                                        : "sent");
	if ((r = audit(db, req, before, after, "ok", NULL)) < 0)
		goto fail;
	if ((r = db_commit(db)) < 0)
		goto out;
	log_order(LOG_NOTICE, db_get(res, 0, 1),
	          "admin: uncertain %s job %s decided %s by %s: %s",
	          db_get(res, 0, 2), idbuf, decision, req->peer.user,
	          req->reason);
	if (strcmp(decision, "resend") == 0)
		workers_wake(n);
	out = cJSON_CreateObject();
	cJSON_AddNumberToObject(out, "job_id", jid->valuedouble);
	cJSON_AddStringToObject(out, "order_id", db_get(res, 0, 1));
	cJSON_AddStringToObject(out, "decision", decision);
	cJSON_AddStringToObject(
	    out, "state", strcmp(decision, "resend") == 0 ? "queued" : "sent");
	*ret = out;
	r = 0;
	goto out;
fail:
	db_rollback(db);
out:
	PQclear(res);
	cJSON_Delete(before);
	cJSON_Delete(after);
	return r;
}

static cJSON *
doctor_json(struct kasir_db *db)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *dead = db_query_json(db, &st_dead, NULL);
	cJSON *stuck = db_query_json(db, &st_stuck, NULL);
	cJSON *unpaid = db_query_json(db, &st_receipt_unpaid, NULL);
	cJSON *missing = db_query_json(db, &st_paid_no_receipt, NULL);
	cJSON *backlog = db_query_json(db, &st_backlog, NULL);
	cJSON *waiting = db_query_json(db, &st_waiting, NULL);
	cJSON *uncertain = db_query_json(db, &st_uncertain, NULL);

	if (!o || !dead || !stuck || !unpaid || !missing || !backlog ||
	    !waiting || !uncertain) {
		cJSON_Delete(waiting);
		cJSON_Delete(uncertain);
		cJSON_Delete(o);
		cJSON_Delete(dead);
		cJSON_Delete(stuck);
		cJSON_Delete(unpaid);
		cJSON_Delete(missing);
		cJSON_Delete(backlog);
		return NULL;
	}
	cJSON_AddNumberToObject(o, "dead_jobs", cJSON_GetArraySize(dead));
	cJSON_AddItemToObject(o, "dead", dead);
	cJSON_AddNumberToObject(o, "stuck_jobs", cJSON_GetArraySize(stuck));
	cJSON_AddItemToObject(o, "stuck", stuck);
	cJSON_AddNumberToObject(o, "receipts_sent_unpaid",
	                        cJSON_GetArraySize(unpaid));
	cJSON_AddItemToObject(o, "receipts_unpaid", unpaid);
	cJSON_AddNumberToObject(o, "paid_without_receipt",
	                        cJSON_GetArraySize(missing));
	cJSON_AddItemToObject(o, "paid_no_receipt", missing);
	cJSON_AddNumberToObject(o, "uncertain_jobs",
	                        cJSON_GetArraySize(uncertain));
	cJSON_AddItemToObject(o, "uncertain", uncertain);
	cJSON_AddItemToObject(o, "backlog", backlog);
	cJSON_AddItemToObject(o, "waiting",
	                      cJSON_DetachItemFromArray(waiting, 0));
	cJSON_Delete(waiting);
	return o;
}

static int
h_status(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;

	(void)req;
	return admin_result(status_json(n, n->admin_db), ret, code, code_len,
	                    msg, msg_len);
}

static int
h_doctor(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;

	(void)req;
	return admin_result(doctor_json(n->admin_db), ret, code, code_len, msg,
	                    msg_len);
}

/* jobs.list and evidence.order (which adds the audit rows naming the
 * order). */
static int
jobs_of_order(struct notifier *n, const struct admin_request *req,
              bool evidence, cJSON **ret, char *code, size_t code_len,
              char *msg, size_t msg_len)
{
	struct kasir_db *db = n->admin_db;
	const char *order_id = arg_str(req, "order_id");
	const char *p[1] = {order_id};
	cJSON *jobs, *ord, *audit = NULL, *out = NULL;

	if (order_id == NULL || !order_id_valid(order_id, 50)) {
		set_err(code, code_len, msg, msg_len, ADMIN_E_INVALID_ARGS,
		        "want {order_id: string}");
		return -EINVAL;
	}
	jobs = db_query_json(db, &st_jobs_of_order, p);
	ord = db_query_json(db, &st_order_of, p);
	if (evidence)
		audit = db_query_json(db, &st_audit_of_order, p);
	if (jobs && ord && (!evidence || audit)) {
		out = cJSON_CreateObject();
		cJSON_AddStringToObject(out, "order_id", order_id);
		cJSON_AddItemToObject(out, "order",
		                      cJSON_GetArraySize(ord)
		                          ? cJSON_DetachItemFromArray(ord, 0)
		                          : cJSON_CreateNull());
		cJSON_AddItemToObject(out, "jobs", jobs);
		jobs = NULL;
		if (audit != NULL)
			cJSON_AddItemToObject(out, "audit", audit);
		audit = NULL;
	}
	cJSON_Delete(jobs);
	cJSON_Delete(ord);
	cJSON_Delete(audit);
	return admin_result(out, ret, code, code_len, msg, msg_len);
}

static int
h_jobs_list(void *arg, const struct admin_request *req, cJSON **ret, char *code,
            size_t code_len, char *msg, size_t msg_len)
{
	return jobs_of_order(arg, req, false, ret, code, code_len, msg,
	                     msg_len);
}

static int
h_evidence(void *arg, const struct admin_request *req, cJSON **ret, char *code,
           size_t code_len, char *msg, size_t msg_len)
{
	return jobs_of_order(arg, req, true, ret, code, code_len, msg, msg_len);
}

static int
h_audit_list(void *arg, const struct admin_request *req, cJSON **ret,
             char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;

	return admin_audit_list(n->admin_db, &st_audit_list, req, ret, code,
	                        code_len, msg, msg_len);
}

static int
h_pause(void *arg, const struct admin_request *req, cJSON **ret, char *code,
        size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;

	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return cmd_pause(n, n->admin_db, req, true, ret);
}

static int
h_resume(void *arg, const struct admin_request *req, cJSON **ret, char *code,
         size_t code_len, char *msg, size_t msg_len)
{
	struct notifier *n = arg;

	(void)code;
	(void)code_len;
	(void)msg;
	(void)msg_len;
	return cmd_pause(n, n->admin_db, req, false, ret);
}

/* The command table: common/admin_socket.c checks the role and
 * dispatches; any other name is refused there. */
/* clang-format off */
const struct admin_command notifier_admin_commands[] = {
    {.name = "status", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_status},
    {.name = "doctor.facts", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_doctor},
    {.name = "jobs.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_jobs_list, .personal = true},
    {.name = "evidence.order", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_evidence, .personal = true},
    {.name = "audit.list", .min_role = ADMIN_ROLE_SUPPORT, .handler = h_audit_list},
    {.name = "reminders.pause", .min_role = ADMIN_ROLE_ENGINEER, .handler = h_pause, .audited = true, .needs_reason = true},
    {.name = "reminders.resume", .min_role = ADMIN_ROLE_ENGINEER, .handler = h_resume, .audited = true, .needs_reason = true},
    {.name = "jobs.requeue", .min_role = ADMIN_ROLE_ENGINEER, .handler = cmd_requeue, .audited = true, .needs_reason = true},
    {.name = "jobs.decide", .min_role = ADMIN_ROLE_ENGINEER, .handler = cmd_decide, .audited = true, .needs_reason = true},
    {.name = "receipt.resend", .min_role = ADMIN_ROLE_ENGINEER, .handler = cmd_resend, .audited = true, .needs_reason = true},
    {.name = NULL}};
/* clang-format on */

/* Scrape callback: job gauges per state and channel, oldest due age,
 * paused flag and stream lag.  Runs on the scraping thread with its own
 * connection.  A scrape that finds another one still in the database
 * (PostgreSQL frozen: its query waits) leaves the database gauges as they
 * were and answers at once, so that the loop gauges still reach the
 * alerts (kasir_loop_silent) instead of a scrape timeout read as a dead
 * daemon. */
void
notifier_scrape(void *arg)
{
	struct notifier *n = arg;
	PGresult *res = NULL;
	bool db_gauges = pthread_mutex_trylock(&n->scrape_lock) == 0;

	if (!db_gauges || db_ensure(n->scrape_db) < 0)
		goto out;
	if (db_exec(n->scrape_db, &st_backlog, NULL, &res) == 0) {
		for (int s = 0; s < 7; s++)
			for (int c = 0; c < CHANNEL_COUNT; c++)
				metric_set(n->m.jobs[s][c], 0);
		for (int i = 0; i < PQntuples(res); i++) {
			enum notify_channel_id ch;

			if (notify_channel_parse(db_get(res, i, 1), &ch) < 0)
				continue;
			for (int s = 0; s < 7; s++)
				if (strcmp(db_get(res, i, 0),
				           notify_job_states[s]) == 0)
					metric_set(
					    n->m.jobs[s][ch],
					    (double)db_get_i64(res, i, 2));
		}
		PQclear(res);
	}
	if (db_exec(n->scrape_db, &st_oldest, NULL, &res) == 0) {
		if (PQntuples(res) == 1)
			metric_set(n->m.oldest_queued,
			           strtod(db_get(res, 0, 0), NULL));
		PQclear(res);
	}
	if (db_exec(n->scrape_db, &st_waiting, NULL, &res) == 0) {
		if (PQntuples(res) == 1) {
			metric_set(n->m.oldest_waiting,
			           strtod(db_get(res, 0, 0), NULL));
			metric_set(n->m.oldest_failing,
			           strtod(db_get(res, 0, 1), NULL));
		}
		PQclear(res);
	}
	if (db_exec(n->scrape_db, &st_settings, NULL, &res) == 0) {
		if (PQntuples(res) == 1)
			metric_set(n->m.paused,
			           db_get(res, 0, 0)[0] == 't' ? 1 : 0);
		PQclear(res);
	}
out:
	if (n->consumer) {
		int64_t cur = stream_consumer_cursor(n->consumer);
		int64_t head = stream_consumer_head(n->consumer);

		metric_set(n->m.stream_lag,
		           (double)(head > cur ? head - cur : 0));
	}
	if (db_gauges)
		pthread_mutex_unlock(&n->scrape_lock);
}
