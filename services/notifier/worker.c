/*
 * worker.c - delivering jobs: claim, guard, render, send, record.
 *
 * N threads, each with its own database connection.  One job's life:
 *
 *  1. claim (one transaction): the oldest due job in queued/retry is set
 *     to 'sending' with lease_until = now() + lease and attempts + 1 (FOR
 *     UPDATE SKIP LOCKED: workers never share a job).  In the same
 *     transaction the notifier's record of the order is read FOR SHARE and
 *     guard_allows() decides.  COMMIT, before any provider is called.
 *  2. render the texts, wait for the channel's rate-limit token, send.
 *  3. record (one transaction): an attempt row and the job's new state:
 *     sent | retry (backoff) | uncertain | dead.
 *
 * Uncertain is terminal until an operator decides: neither SMTP nor the
 * WhatsApp Cloud API has a key that makes a second delivery impossible, so
 * a send that may have reached the customer is never sent again by itself.
 * That covers a send whose outcome is unknown (the connection dropped
 * after the request went out) and a job left in 'sending' whose lease
 * expired (its worker died between 1 and 3): the reaper below moves it to
 * 'uncertain' with an attempt row saying so, and never sends it.  The
 * operator's audited decision (admin "jobs.decide", kasirctl notify decide
 * JOB_ID resend|delivered) queues it exactly once more or closes it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/rand.h>

#include "channel.h"
#include "daemon.h"
#include "db.h"
#include "err.h"
#include "liveness.h"
#include "log.h"
#include "metrics.h"
#include "notifier.h"
#include "util.h"

/* A receipt waits this long for access.granted (normally applied in the
 * same batch as order.paid) so it can carry the access details. */
#define RECEIPT_ACCESS_WAIT_MS  30000
#define RECEIPT_ACCESS_RETRY_MS 1000

/*
 * Claim: the oldest due job in queued/retry (partial index job_due).
 * Reminders are skipped while paused.  A job whose lease expired is never
 * claimed: st_reap_expired below makes it uncertain.
 */
#define CLAIM_SQL(where)                                                       \
	"UPDATE notify.job j SET state = 'sending',"                           \
	" lease_until = now() + $1::bigint * interval '1 millisecond',"        \
	" attempts = j.attempts + 1, updated_at = now()"                       \
	" FROM (SELECT id FROM notify.job"                                     \
	"  WHERE " where " AND channel = ANY ($2::text[])"                     \
	"   AND (kind <> 'reminder' OR NOT (SELECT reminders_paused"           \
	"        FROM notify.settings WHERE id = 1))"                          \
	"  ORDER BY due_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) c"              \
	" WHERE j.id = c.id"                                                   \
	" RETURNING j.id, j.order_id, j.kind, j.channel, j.recipient,"         \
	" j.attempts, j.max_attempts, j.payload::text,"                        \
	" (extract(epoch FROM now() - j.created_at) * 1000)::bigint,"          \
	" j.lease_until::text"

/* A job whose worker died while sending (its lease expired): it may have
 * been delivered.  Moved to 'uncertain' with an attempt row saying so, in
 * one statement, one job at a time; never sent again by a worker. */
/* clang-format off */
static const struct db_stmt st_reap_expired = {
    .name = "notify_reap_expired",
    .sql = "WITH c AS (SELECT id FROM notify.job WHERE state = 'sending'"
           "  AND lease_until < now() AND channel = ANY ($1::text[])"
           "  ORDER BY lease_until, id LIMIT 1 FOR UPDATE SKIP LOCKED),"
           " j AS (UPDATE notify.job j SET state = 'uncertain',"
           "  lease_until = NULL, uncertain = j.uncertain + 1,"
           "  last_error = $2, updated_at = now() FROM c WHERE j.id = c.id"
           "  RETURNING j.id, j.order_id, j.channel, j.attempts),"
           " a AS (INSERT INTO notify.attempt (job_id, attempt_no, result,"
           "  order_status, error) SELECT j.id, j.attempts, 'uncertain',"
           "  (SELECT o.status FROM notify.orders o"
           "   WHERE o.order_id = j.order_id), $2 FROM j)"
           " SELECT id, order_id, channel FROM j",
    .nparams = 2,
};
/* clang-format on */

/* clang-format off */
static const struct db_stmt st_claim_due = {
    .name = "notify_claim_due",
    .sql = CLAIM_SQL("state IN ('queued', 'retry') AND due_at <= now()"),
    .nparams = 2,
};
/* clang-format on */

/* A claim whose COMMIT's outcome was unknown (claim_unsettled): if it was
 * made, the job waits in 'sending' under a lease nobody will use, and the
 * reaper would call it "possibly delivered".  Nothing was sent: it goes
 * back to 'retry', due now, its attempt given back.  Only that claim
 * matches: its lease, to the microsecond (another worker's claim of the
 * job, made after this one failed, has its own); no row: it was never
 * made, or the job moved on. */
static const struct db_stmt st_claim_release = {
    .name = "notify_claim_release",
    .sql = "UPDATE notify.job SET state = 'retry', due_at = now(),"
           " lease_until = NULL, attempts = attempts - 1, updated_at = now()"
           " WHERE id = $1::bigint AND state = 'sending'"
           " AND lease_until = $2::timestamptz"
           " RETURNING order_id",
    .nparams = 2,
};

static const struct db_stmt st_order_read = {
    .name = "notify_order_read",
    .sql = "SELECT status, revoked, access_granted, access_valid_until"
           " FROM notify.orders WHERE order_id = $1 FOR SHARE",
    .nparams = 1,
};

static const struct db_stmt st_attempt_insert = {
    .name = "notify_attempt_insert",
    .sql = "INSERT INTO notify.attempt (job_id, attempt_no, result,"
           " order_status, provider_id, error, latency_ms)"
           " VALUES ($1::bigint, $2::int, $3, $4, $5, $6, $7::int)",
    .nparams = 7,
};

static const struct db_stmt st_job_cancel = {
    .name = "notify_job_cancel",
    .sql = "UPDATE notify.job SET state = 'cancelled', lease_until = NULL,"
           " last_error = $2, updated_at = now() WHERE id = $1",
    .nparams = 2,
};

/* Back to the queue without counting an attempt (receipt waiting for
 * access.granted). */
static const struct db_stmt st_job_postpone = {
    .name = "notify_job_postpone",
    .sql = "UPDATE notify.job SET state = 'queued', lease_until = NULL,"
           " attempts = attempts - 1,"
           " due_at = now() + $2::bigint * interval '1 millisecond',"
           " updated_at = now() WHERE id = $1",
    .nparams = 2,
};

/* clang-format off */
static const struct db_stmt st_job_finish = {
    .name = "notify_job_finish",
    .sql = "UPDATE notify.job SET state = $3, lease_until = NULL,"
           " due_at = CASE WHEN $4::bigint IS NULL THEN due_at"
           "  ELSE now() + $4::bigint * interval '1 millisecond' END,"
           " last_error = COALESCE($5, last_error),"
           " provider_id = COALESCE($6, provider_id),"
           " sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,"
           " uncertain = uncertain + $7::int, updated_at = now()"
           " WHERE id = $1::bigint AND state = 'sending'"
           " AND attempts = $2::int",
    .nparams = 7,
};
/* clang-format on */

struct claimed {
	int64_t id;
	char lease_until[48]; /* as the claim wrote it: names this claim */
	char order_id[64];
	enum notify_kind kind;
	enum notify_channel_id channel;
	char recipient[256];
	int attempts;
	int max_attempts;
	cJSON *payload; /* owned */
	char order_status[32];
	bool access_granted;
	char valid_until[64];
	int64_t claimed_ms; /* monotonic: when the lease began */
};

static double
random_unit(void)
{
	uint32_t x;

	if (RAND_bytes((unsigned char *)&x, sizeof(x)) != 1)
		return 0.5;
	return (double)x / 4294967296.0;
}

static const char *
jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

#define REAP_WHY                                                               \
	"lease expired while sending: possibly delivered; not sent again "     \
	"until an operator decides (kasirctl notify decide JOB_ID "            \
	"resend|delivered)"

/* Moves one job whose worker died while sending to 'uncertain'.  1 when a
 * job was moved, 0 when none, negative on database errors. */
static int
reap_expired(struct notifier *n, struct kasir_db *db, const char *channels)
{
	const char *p[2] = {channels, REAP_WHY};
	enum notify_channel_id ch;
	PGresult *res = NULL;
	int r;

	if ((r = db_exec(db, &st_reap_expired, p, &res)) < 0)
		return r;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return 0;
	}
	if (notify_channel_parse(db_get(res, 0, 2), &ch) == 0)
		metric_inc(n->m.uncertain[ch]);
	log_order(LOG_WARNING, db_get(res, 0, 1),
	          "job %s: its worker died while sending (lease expired): "
	          "recorded uncertain, waiting for an operator's decision",
	          db_get(res, 0, 0));
	PQclear(res);
	return 1;
}

/* The claim of a worker whose COMMIT's outcome is unknown (id 0: none). */
struct claim_unsettled {
	int64_t id;
	char lease_until[48];
};

/* Settles u once the database answers: a claim that was made is given
 * back (st_claim_release).  0 settled, negative: try again later. */
static int
claim_settle(struct kasir_db *db, struct claim_unsettled *u)
{
	char id[24];
	const char *p[2] = {id, u->lease_until};
	PGresult *res = NULL;
	int r;

	snprintf(id, sizeof(id), "%" PRId64, u->id);
	if ((r = db_exec(db, &st_claim_release, p, &res)) < 0)
		return r;
	if (PQntuples(res) == 1)
		log_order(LOG_NOTICE, db_get(res, 0, 0),
		          "job %" PRId64 ": its claim was committed though "
		          "its answer was lost; nothing was sent, due again",
		          u->id);
	PQclear(res);
	u->id = 0;
	return 0;
}

/*
 * Claims one job and runs the guard.  Returns 1 with *job filled when a
 * job must be sent, 0 when there was nothing to send (no due job, or the
 * job claimed was cancelled/postponed), negative on database errors.  A
 * claim whose COMMIT's outcome is unknown is left in *u: it is settled
 * (claim_settle) before the next claim, and nothing is sent meanwhile.
 * (Left alone, a claim that was in fact made stayed 'sending' until the
 * reaper recorded it "possibly delivered": a receipt never sent, found
 * by an outside fault attack, 2026-12-08.)  A postponed or cancelled job
 * needs no settling: either outcome is a state it may be in.
 */
static int
claim(struct notifier *n, struct kasir_db *db, const char *channels,
      struct claimed *job, struct claim_unsettled *u)
{
	PGresult *res = NULL, *ores = NULL;
	char lease[24], idbuf[24], attbuf[16];
	const char *status = NULL, *why = NULL;
	bool revoked = false, guard = false;
	int64_t age_ms;
	int r;

	memset(job, 0, sizeof(*job));
	job->claimed_ms = now_mono_ms(); /* the lease begins no earlier */
	snprintf(lease, sizeof(lease), "%" PRId64, n->conf->lease_ms);
	if ((r = db_begin(db)) < 0)
		return r;
	{
		const char *p[2] = {lease, channels};

		if ((r = db_exec(db, &st_claim_due, p, &res)) < 0)
			goto fail;
	}
	if (PQntuples(res) == 0) {
		PQclear(res);
		db_rollback(db);
		return 0;
	}
	job->id = db_get_i64(res, 0, 0);
	kasir_strlcpy(job->order_id, db_get(res, 0, 1), sizeof(job->order_id));
	if (notify_kind_parse(db_get(res, 0, 2), &job->kind) < 0 ||
	    notify_channel_parse(db_get(res, 0, 3), &job->channel) < 0) {
		r = -EINVAL; /* the table's CHECK makes this impossible */
		goto fail;
	}
	kasir_strlcpy(job->recipient, db_get(res, 0, 4),
	              sizeof(job->recipient));
	job->attempts = (int)db_get_i64(res, 0, 5);
	job->max_attempts = (int)db_get_i64(res, 0, 6);
	job->payload = cJSON_Parse(db_get(res, 0, 7));
	age_ms = db_get_i64(res, 0, 8);
	kasir_strlcpy(job->lease_until, db_get(res, 0, 9),
	              sizeof(job->lease_until));
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, job->id);

	{
		const char *p[1] = {job->order_id};

		if ((r = db_exec(db, &st_order_read, p, &ores)) < 0)
			goto fail;
	}
	if (PQntuples(ores) == 1) {
		status = db_get(ores, 0, 0);
		revoked = strcmp(db_get(ores, 0, 1), "t") == 0;
		job->access_granted = strcmp(db_get(ores, 0, 2), "t") == 0;
		if (db_get(ores, 0, 3))
			kasir_strlcpy(job->valid_until, db_get(ores, 0, 3),
			              sizeof(job->valid_until));
		kasir_strlcpy(job->order_status, status,
		              sizeof(job->order_status));
	}

	if (job->payload == NULL || !cJSON_IsObject(job->payload)) {
		why = "job payload is not a JSON object";
	} else if (!guard_allows(job->kind, status, revoked, &why, &guard)) {
		/* why set */
	} else if (job->kind == KIND_RECEIPT && !job->access_granted &&
	           age_ms < RECEIPT_ACCESS_WAIT_MS) {
		char delay[24];
		const char *p[2] = {idbuf, delay};

		snprintf(delay, sizeof(delay), "%d", RECEIPT_ACCESS_RETRY_MS);
		if ((r = db_exec(db, &st_job_postpone, p, NULL)) < 0)
			goto fail;
		if ((r = db_commit(db)) < 0)
			goto fail_committed;
		r = 0;
		goto out;
	}

	if (why != NULL) {
		const char *pc[2] = {idbuf, why};
		const char *pa[7] = {
		    idbuf,  attbuf, guard ? "blocked" : "cancelled",
		    status, NULL,   why,
		    NULL};

		snprintf(attbuf, sizeof(attbuf), "%d", job->attempts);
		if ((r = db_exec(db, &st_job_cancel, pc, NULL)) < 0 ||
		    (r = db_exec(db, &st_attempt_insert, pa, NULL)) < 0)
			goto fail;
		if ((r = db_commit(db)) < 0)
			goto fail_committed;
		if (guard) {
			metric_inc(n->m.guard_blocked);
			log_order(LOG_WARNING, job->order_id,
			          "receipt job %" PRId64 " cancelled: %s "
			          "(order status %s)",
			          job->id, why, status ? status : "unknown");
		} else {
			metric_inc(n->m.cancelled);
			log_order(LOG_INFO, job->order_id,
			          "%s job %" PRId64 " cancelled: %s",
			          notify_kind_name(job->kind), job->id, why);
		}
		r = 0;
		goto out;
	}
	if ((r = db_commit(db)) < 0) {
		if (r == KASIR_EDBUNKNOWN) {
			u->id = job->id;
			kasir_strlcpy(u->lease_until, job->lease_until,
			              sizeof(u->lease_until));
		}
		goto fail_committed;
	}
	PQclear(res);
	PQclear(ores);
	return 1;

fail:
	/* log before the rollback clears the statement's error */
	log_warning("claiming a job failed: %s%s%s", kasir_strerror(r),
	            r == KASIR_ESQL ? ": " : "",
	            r == KASIR_ESQL ? db_last_error(db) : "");
	db_rollback(db);
	goto out;
fail_committed:
	log_warning("committing a claimed job failed: %s", kasir_strerror(r));
out:
	PQclear(res);
	PQclear(ores);
	cJSON_Delete(job->payload);
	job->payload = NULL;
	return r;
}

/* A job rendered for its channel: email subject and body, or the
 * WhatsApp template's parameters. */
struct rendered {
	char *subject;                                /* email */
	char *text;                                   /* email */
	char params[WA_PARAMS_MAX][NOTIFY_VALUE_MAX]; /* whatsapp */
	const char *param_ptr[WA_PARAMS_MAX];
};

/* Formats the placeholders from the job's event data and the order's
 * record, then renders what the job's channel sends: subject and text
 * for email, the template parameters for WhatsApp (never free text). */
static int
render(struct notifier *n, const struct claimed *job, struct rendered *out)
{
	const struct notify_template *t = &n->conf->tpl[job->kind];
	const struct wa_template *wt = &n->conf->wa_tpl[job->kind];
	const cJSON *cust, *amount, *refund;
	char amt[40], exp[64], valid[64];
	struct template_vars v = {0};
	int r;

	cust = cJSON_GetObjectItemCaseSensitive(job->payload, "customer");
	v.customer_name = cJSON_IsObject(cust) ? jstr(cust, "name") : NULL;
	v.course_title = jstr(job->payload, "course_title");
	v.order_id = job->order_id;
	v.redirect_url = jstr(job->payload, "redirect_url");
	amount = cJSON_GetObjectItemCaseSensitive(job->payload, "amount");
	refund =
	    cJSON_GetObjectItemCaseSensitive(job->payload, "refund_amount");
	if (job->kind == KIND_REFUND && cJSON_IsNumber(refund))
		amount = refund;
	if (cJSON_IsNumber(amount) &&
	    rupiah_format((int64_t)amount->valuedouble, amt, sizeof(amt)) == 0)
		v.amount = amt;
	if (time_format_wib(jstr(job->payload, "expires_at"), exp,
	                    sizeof(exp)) == 0)
		v.expires_at = exp;
	if (job->valid_until[0] &&
	    time_format_wib(job->valid_until, valid, sizeof(valid)) == 0)
		v.valid_until = valid;
	else if (job->access_granted)
		v.valid_until = "seumur hidup";

	if (job->channel == CHANNEL_WHATSAPP) {
		for (size_t i = 0; i < wt->params.n; i++) {
			template_param(&v, wt->params.var[i], out->params[i],
			               sizeof(out->params[i]));
			out->param_ptr[i] = out->params[i];
		}
		return 0;
	}
	if ((r = template_render(t->subject, &v, &out->subject)) < 0 ||
	    (r = template_render(t->email, &v, &out->text)) < 0)
		goto fail;
	/* a subject is one line */
	for (char *p = out->subject; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	return 0;
fail:
	free(out->subject);
	free(out->text);
	out->subject = out->text = NULL;
	return r;
}

/* Waits for the channel's rate-limit token; false when stopping. */
static bool
take_token(struct notifier *n, enum notify_channel_id ch)
{
	int64_t wait_ms;

	while (!atomic_load(&n->stopping)) {
		struct timespec ts;

		if (tbucket_take(&n->bucket[ch], &wait_ms))
			return true;
		if (wait_ms < 1)
			wait_ms = 1;
		if (wait_ms > 1000)
			wait_ms = 1000;
		deadline_after_ms(CLOCK_MONOTONIC, wait_ms, &ts);
		pthread_mutex_lock(&n->wake_lock);
		if (!atomic_load(&n->stopping))
			pthread_cond_timedwait(&n->wake, &n->wake_lock, &ts);
		pthread_mutex_unlock(&n->wake_lock);
	}
	return false;
}

static const char *const result_names[] = {
    [SEND_OK] = "sent",
    [SEND_TRANSIENT] = "transient",
    [SEND_PERMANENT] = "permanent",
    [SEND_UNCERTAIN] = "uncertain",
};

/* The attempt's record is retried for at most the lease, less this (the
 * reaper must not find the job first), every RECORD_RETRY_MS doubling. */
#define RECORD_MARGIN_MS    2000
#define RECORD_RETRY_MS     200
#define RECORD_RETRY_MAX_MS 2000

static const struct db_stmt st_attempt_recorded = {
    .name = "notify_attempt_recorded",
    .sql = "SELECT 1 FROM notify.attempt WHERE job_id = $1::bigint"
           " AND attempt_no = $2::int AND result = $3",
    .nparams = 3,
};

/* Settles whether the attempt pa names is recorded after a COMMIT whose
 * outcome was not known (*unknown): 1 yes, 0 no (*unknown cleared both
 * times), <0 still not known (the database is still away). */
static int
attempt_settle(struct kasir_db *db, const char *const *pa, bool *unknown)
{
	PGresult *res = NULL;
	const char *p[3] = {pa[0], pa[1], pa[2]};
	int r;

	if ((r = db_exec(db, &st_attempt_recorded, p, &res)) < 0)
		return r;
	r = PQntuples(res) > 0;
	PQclear(res);
	*unknown = false;
	return r;
}

/* One try at recording (pa: the attempt, pj: the job's next state): 0,
 * KASIR_EDB when nothing was committed or that is not known yet (try
 * again), or another error.  A COMMIT whose outcome is unknown is settled
 * by reading the attempt back, at once or, while the database is away,
 * at the start of the next try (*unknown): an attempt row is evidence,
 * and a second 'sent' row would say the receipt went out twice (a chaos
 * run, 2026-12-07: PostgreSQL stopped right after the COMMIT). */
static int
record_tx(struct kasir_db *db, const struct claimed *job, const char *const *pa,
          const char *const *pj, bool *unknown)
{
	PGresult *ures = NULL;
	int r;

	if (*unknown && (r = attempt_settle(db, pa, unknown)) != 0)
		return r == 1 ? 0 : KASIR_EDB;
	if ((r = db_begin(db)) < 0)
		return r;
	if ((r = db_exec(db, &st_attempt_insert, pa, NULL)) < 0 ||
	    (r = db_exec(db, &st_job_finish, pj, &ures)) < 0) {
		db_rollback(db);
		return r;
	}
	if (PQcmdTuples(ures)[0] == '0')
		log_order(LOG_WARNING, job->order_id,
		          "job %" PRId64 " was reclaimed while being "
		          "sent (lease too short?)",
		          job->id);
	PQclear(ures);
	if ((r = db_commit(db)) == KASIR_EDBUNKNOWN) {
		*unknown = true;
		/* not made, or not known yet: ask again */
		r = attempt_settle(db, pa, unknown) == 1 ? 0 : KASIR_EDB;
	}
	return r;
}

/* Records the attempt and the job's next state.  A failure here (the
 * database away for longer than the lease) leaves the job in 'sending';
 * the lease makes it come back as uncertain. */
static void
record(struct notifier *n, struct kasir_db *db, const struct claimed *job,
       enum send_result res, const char *provider_id, const char *error,
       int64_t latency_ms)
{
	char idbuf[24], att[16], lat[24], delay[24], unc[4];
	const char *state;
	const char *delay_p = NULL;
	int64_t d;
	int r;

	snprintf(idbuf, sizeof(idbuf), "%" PRId64, job->id);
	snprintf(att, sizeof(att), "%d", job->attempts);
	snprintf(lat, sizeof(lat), "%" PRId64, latency_ms);
	snprintf(unc, sizeof(unc), "%d", res == SEND_UNCERTAIN ? 1 : 0);
	switch (res) {
	case SEND_OK:
		state = "sent";
		break;
	case SEND_PERMANENT:
		state = "dead";
		break;
	case SEND_UNCERTAIN:
		/* terminal until an operator decides (see the top) */
		state = "uncertain";
		break;
	default:
		d = job->attempts >= job->max_attempts
		        ? -1
		        : notify_retry_delay(&n->conf->retry, job->attempts,
		                             (int)n->conf->jitter_pct,
		                             random_unit());
		if (d < 0) {
			state = "dead";
		} else {
			state = "retry";
			snprintf(delay, sizeof(delay), "%" PRId64, d);
			delay_p = delay;
		}
		break;
	}
	{
		const char *pa[7] = {
		    idbuf,
		    att,
		    result_names[res],
		    job->order_status[0] ? job->order_status : NULL,
		    provider_id && *provider_id ? provider_id : NULL,
		    res == SEND_OK ? NULL : error,
		    lat};
		const char *pj[7] = {idbuf,
		                     att,
		                     state,
		                     delay_p,
		                     res == SEND_OK ? NULL : error,
		                     provider_id && *provider_id ? provider_id
		                                                 : NULL,
		                     unc};
		/* The send is done: what the provider said must be recorded
		 * while the lease still holds, or the job comes back as
		 * uncertain and an operator is asked about a receipt that
		 * was delivered.  A connection lost meanwhile (a restart, a
		 * killed backend) is retried until the lease's end less a
		 * margin, on a new connection. */
		int64_t until =
		    job->claimed_ms + n->conf->lease_ms - RECORD_MARGIN_MS;
		int64_t pause = RECORD_RETRY_MS;
		bool unknown = false;

		while ((r = record_tx(db, job, pa, pj, &unknown)) ==
		           KASIR_EDB &&
		       now_mono_ms() + pause < until &&
		       !atomic_load(&n->stopping)) {
			sleep_ms(pause);
			pause = pause * 2 > RECORD_RETRY_MAX_MS
			            ? RECORD_RETRY_MAX_MS
			            : pause * 2;
		}
		if (r < 0)
			goto fail;
	}
	if (strcmp(state, "dead") == 0)
		log_order(LOG_ERR, job->order_id,
		          "%s %s job %" PRId64 " dead after %d attempt(s): %s",
		          notify_channel_name(job->channel),
		          notify_kind_name(job->kind), job->id, job->attempts,
		          error);
	else if (res == SEND_UNCERTAIN)
		log_order(LOG_WARNING, job->order_id,
		          "%s %s job %" PRId64
		          " attempt %d uncertain (may have "
		          "been delivered): not sent again until an operator "
		          "decides (kasirctl notify decide %" PRId64
		          " resend|delivered): %s",
		          notify_channel_name(job->channel),
		          notify_kind_name(job->kind), job->id, job->attempts,
		          job->id, error);
	else if (res != SEND_OK)
		log_order(LOG_NOTICE, job->order_id,
		          "%s %s job %" PRId64 " attempt %d failed (%s), "
		          "next in %s ms: %s",
		          notify_channel_name(job->channel),
		          notify_kind_name(job->kind), job->id, job->attempts,
		          result_names[res], delay_p ? delay_p : "-", error);
	else
		log_order(LOG_INFO, job->order_id, "%s %s job %" PRId64 " sent",
		          notify_channel_name(job->channel),
		          notify_kind_name(job->kind), job->id);
	return;
fail:
	log_order(LOG_WARNING, job->order_id,
	          "recording job %" PRId64 " failed (%s); its lease will "
	          "bring it back as uncertain",
	          job->id, kasir_strerror(r));
}

/* Returns a claimed job that was not sent to the queue, without counting
 * the attempt.  If this fails the lease brings it back. */
static void
release(struct kasir_db *db, const struct claimed *job)
{
	char idbuf[24];
	const char *p[2] = {idbuf, "0"};

	snprintf(idbuf, sizeof(idbuf), "%" PRId64, job->id);
	if (db_exec(db, &st_job_postpone, p, NULL) < 0)
		log_order(LOG_NOTICE, job->order_id,
		          "job %" PRId64 " not released; its lease will "
		          "bring it back",
		          job->id);
}

static void
deliver(struct notifier *n, struct kasir_db *db, struct claimed *job)
{
	const struct channel_ops *ops = n->ops[job->channel];
	char provider_id[NOTIFY_PROVIDER_ID_MAX] = "", code[32] = "other";
	char error[NOTIFY_ERROR_MAX] = "";
	struct rendered *rj;
	enum send_result res;
	int64_t t0, lat;
	int r;

	rj = calloc(1, sizeof(*rj));
	r = rj ? render(n, job, rj) : -ENOMEM;
	if (r < 0) {
		snprintf(error, sizeof(error), "rendering failed: %s",
		         kasir_strerror(r));
		record(n, db, job, SEND_PERMANENT, NULL, error, 0);
		free(rj);
		return;
	}
	if (!take_token(n, job->channel)) {
		/* stopping before the provider was called: put it back */
		release(db, job);
		goto out;
	}
	{
		struct send_job sj = {
		    .id = job->id,
		    .attempt = job->attempts,
		    .order_id = job->order_id,
		    .recipient = job->recipient,
		    .subject = rj->subject,
		    .text = rj->text,
		    .wa_template = &n->conf->wa_tpl[job->kind],
		    .wa_params = rj->param_ptr,
		};

		t0 = now_mono_ms();
		res = ops->send(n->chan_state[job->channel], &sj, provider_id,
		                sizeof(provider_id), code, sizeof(code), error,
		                sizeof(error));
		lat = now_mono_ms() - t0;
	}
	metric_observe(n->m.latency[job->channel], (double)lat / 1000.0);
	if (res == SEND_OK) {
		metric_inc(n->m.sent[job->channel]);
	} else {
		char labels[96];

		snprintf(labels, sizeof(labels), "channel=\"%s\",code=\"%s\"",
		         notify_channel_name(job->channel), code);
		metric_inc(metrics_counter(
		    n->metrics, "kasir_notifier_provider_errors_total", labels,
		    "provider errors by channel and code"));
		if (res == SEND_UNCERTAIN)
			metric_inc(n->m.uncertain[job->channel]);
	}
	record(n, db, job, res, provider_id, error, lat);
out:
	free(rj->subject);
	free(rj->text);
	free(rj);
}

struct worker_arg {
	struct notifier *n;
	unsigned idx;
};

static void
idle_wait(struct notifier *n, int64_t ms)
{
	struct timespec ts;

	deadline_after_ms(CLOCK_MONOTONIC, ms, &ts);
	pthread_mutex_lock(&n->wake_lock);
	if (!atomic_load(&n->stopping))
		pthread_cond_timedwait(&n->wake, &n->wake_lock, &ts);
	pthread_mutex_unlock(&n->wake_lock);
}

/* numbers the workers' liveness names, process-wide */
static atomic_uint worker_seq;

static void *
worker_main(void *arg)
{
	struct notifier *n = arg;
	struct db_conf dc = daemon_db_conf(n->d);
	char loop[LIVE_NAME_MAX];
	struct kasir_db *db = NULL;
	char channels[64] = "{";
	struct claim_unsettled unsettled = {0};
	bool first = true;

	for (int c = 0; c < CHANNEL_COUNT; c++) {
		if (!n->chan_enabled[c])
			continue;
		if (!first)
			strcat(channels, ",");
		strcat(channels, notify_channel_name(c));
		first = false;
	}
	strcat(channels, "}");

	dc.application_name = "kasir-notifier-worker";
	if (db_open(&dc, &db) < 0) {
		log_err("worker: cannot create a database handle");
		return NULL;
	}
	/* a pass: claim (or the idle poll), then at most one send bounded by
	 * the slower provider's timeout */
	snprintf(loop, sizeof(loop), "notifier.worker.%u",
	         atomic_fetch_add(&worker_seq, 1));
	db_set_loop(db, loop, true,
	            n->conf->poll_ms +
	                (n->conf->smtp_timeout_ms > n->conf->wa_timeout_ms
	                     ? n->conf->smtp_timeout_ms
	                     : n->conf->wa_timeout_ms));
	while (!atomic_load(&n->stopping)) {
		struct claimed job;
		int r;

		if (db_ensure(db) < 0) {
			idle_wait(n, 1000);
			continue;
		}
		if (unsettled.id != 0 && claim_settle(db, &unsettled) < 0) {
			idle_wait(n, 1000);
			continue;
		}
		if (reap_expired(n, db, channels) == 1)
			continue;
		r = claim(n, db, channels, &job, &unsettled);
		if (r == 1) {
			deliver(n, db, &job);
			cJSON_Delete(job.payload);
			continue;
		}
		if (r == 0 && job.id != 0)
			continue; /* cancelled one: look for more at once */
		idle_wait(n, n->conf->poll_ms);
	}
	db_close(db);
	return NULL;
}

int
workers_start(struct notifier *n)
{
	for (int c = 0; c < CHANNEL_COUNT; c++) {
		double rate = c == CHANNEL_EMAIL
		                  ? (double)n->conf->email_rate
		                  : (double)n->conf->whatsapp_rate;
		double burst = c == CHANNEL_EMAIL
		                   ? (double)n->conf->email_burst
		                   : (double)n->conf->whatsapp_burst;

		tbucket_init(&n->bucket[c], rate, burst);
	}
	for (int64_t i = 0; i < n->conf->workers; i++) {
		int r = pthread_create(&n->workers[i], NULL, worker_main, n);

		if (r != 0) {
			log_err("cannot start worker %lld: %s", (long long)i,
			        strerror(r));
			return -r;
		}
		n->nworkers++;
	}
	return 0;
}

void
workers_wake(struct notifier *n)
{
	pthread_mutex_lock(&n->wake_lock);
	pthread_cond_broadcast(&n->wake);
	pthread_mutex_unlock(&n->wake_lock);
}

void
workers_stop(struct notifier *n)
{
	atomic_store(&n->stopping, true);
	workers_wake(n);
	for (size_t i = 0; i < n->nworkers; i++)
		pthread_join(n->workers[i], NULL);
	n->nworkers = 0;
}
