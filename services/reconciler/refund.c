/*
 * refund.c - refunds started from kasir (kasirctl refund): the admin
 * command refund.order and the one call to Midtrans's Refund API.
 *
 *   POST {core}/v2/{order_id}/refund
 *   Content-Type: application/json, Basic auth as the Status API
 *   {"refund_key": "...", "amount": N, "reason": "..."}
 *
 * Order of things, so that no retry ever refunds twice:
 *   1. refusals, each audited: not the engineer role, no reason, an order
 *      the reconciler has not seen, an order that is not PAID, no Status
 *      API answer proving the payment, an amount above what is left
 *      (gross amount minus what kasir's accepted refunds took), another
 *      refund of this order still unclear with a different amount;
 *   2. the request row (recon.refund) with a new refund_key, COMMITTED;
 *      an open request of the same amount is reused instead: same key;
 *   3. the call; its answer stored (recon.refund_attempt) with the audit
 *      row in one transaction; accepted -> a forced Status API check of
 *      the order, whose answer kasir-order applies like any other, and
 *      more checks at doubling intervals until one shows the refund
 *      (evidence.c, refund_shown: Midtrans may apply it later, and its
 *      notification may be lost).
 * The order's status is never set here: REFUNDED (and the revocation of
 * access, the customer's refund message) follow Midtrans's notification
 * and Status API answer through the usual evidence path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "admin_socket.h"
#include "curl_headers.h"
#include "db.h"
#include "db_json.h"
#include "err.h"
#include "log.h"
#include "reconciler.h"
#include "util.h"

#define REFUND_AMOUNT_MAX 10000000000000LL /* IDR; the fake's MAX_AMOUNT */
#define REFUND_KEY_LEN    48

/* clang-format off */
/* Serializes refunds of one order (held until COMMIT/ROLLBACK). */
static const struct db_stmt st_lock = {
    .name = "recon_refund_lock",
    .sql = "SELECT pg_advisory_xact_lock(hashtext('refund:' || $1))",
    .nparams = 1,
};

static const struct db_stmt st_watch = {
    .name = "recon_refund_watch",
    .sql = "SELECT status FROM recon.watch WHERE order_id = $1",
    .nparams = 1,
};

/* The gross amount from the latest Status API answer that shows the
 * payment (settled, captured and accepted, or partly refunded). */
static const struct db_stmt st_paid_proof = {
    .name = "recon_refund_paid_proof",
    .sql = "SELECT gross_amount FROM recon.status_check"
           " WHERE order_id = $1 AND verdict = 'status'"
           " AND (transaction_status IN ('settlement', 'partial_refund')"
           "  OR (transaction_status = 'capture'"
           "      AND coalesce(fraud_status, 'accept') = 'accept'))"
           " ORDER BY id DESC LIMIT 1",
    .nparams = 1,
};

static const struct db_stmt st_refunded = {
    .name = "recon_refund_refunded",
    .sql = "SELECT coalesce(sum(r.amount), 0)::bigint FROM recon.refund r"
           " WHERE r.order_id = $1 AND EXISTS (SELECT 1 FROM"
           "  recon.refund_attempt a WHERE a.refund_id = r.id"
           "  AND a.outcome = 'accepted')",
    .nparams = 1,
};

static const struct db_stmt st_open = {
    .name = "recon_refund_open",
    .sql = "SELECT id, refund_key, amount FROM recon.refund r"
           " WHERE r.order_id = $1 AND NOT EXISTS (SELECT 1 FROM"
           "  recon.refund_attempt a WHERE a.refund_id = r.id"
           "  AND a.outcome IN ('accepted', 'refused'))"
           " ORDER BY id DESC LIMIT 1",
    .nparams = 1,
};

static const struct db_stmt st_insert = {
    .name = "recon_refund_insert",
    .sql = "INSERT INTO recon.refund (order_id, refund_key, amount,"
           " gross_amount, reason, actor, incident)"
           " VALUES ($1, $2, $3::bigint, $4::bigint, $5, $6, $7)"
           " RETURNING id",
    .nparams = 7,
};

static const struct db_stmt st_attempt = {
    .name = "recon_refund_attempt",
    .sql = "INSERT INTO recon.refund_attempt (refund_id, outcome,"
           " http_status, status_code, status_message, body, error,"
           " latency_ms) VALUES ($1::bigint, $2, $3::int, $4, $5, $6, $7,"
           " $8::int)",
    .nparams = 8,
};

/* An accepted refund: checked at once, then followed until an answer
 * shows $2 rupiah refunded (evidence.c, migration 0008). */
static const struct db_stmt st_force = {
    .name = "recon_refund_force",
    .sql = "UPDATE recon.watch SET forced = true, refund_since = now(),"
           " refund_expected = $2::bigint, next_check_at = now(),"
           " updated_at = now() WHERE order_id = $1",
    .nparams = 2,
};

/* The refunds of one order with their answers, bounded for the 16 MiB
 * admin reply: the latest REFUNDS_LIST_MAX requests, the latest
 * ATTEMPTS_LIST_MAX answers of each, bodies cut at 16 KiB
 * ("body_truncated"; the whole body stays in recon.refund_attempt). */
#define REFUNDS_LIST_MAX  "50"
#define ATTEMPTS_LIST_MAX "10"
static const struct db_stmt st_list = {
    .name = "recon_refund_list",
    .sql = "SELECT * FROM (SELECT r.id, r.refund_key, r.amount,"
           " r.gross_amount, r.reason, r.actor, r.incident,"
           " to_char(r.created_at AT TIME ZONE 'UTC',"
           "  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at,"
           " coalesce((SELECT jsonb_agg(jsonb_build_object("
           "   'at', to_char(a.at AT TIME ZONE 'UTC',"
           "    'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
           "   'outcome', a.outcome, 'http_status', a.http_status,"
           "   'status_code', a.status_code,"
           "   'status_message', a.status_message,"
           "   'body', left(a.body, 16384),"
           "   'body_truncated', length(a.body) > 16384,"
           "   'error', a.error) ORDER BY a.id)"
           "  FROM (SELECT * FROM recon.refund_attempt x"
           "   WHERE x.refund_id = r.id ORDER BY x.id DESC"
           "   LIMIT " ATTEMPTS_LIST_MAX ") a),"
           "  '[]'::jsonb) AS attempts"
           " FROM recon.refund r WHERE r.order_id = $1 ORDER BY r.id DESC"
           " LIMIT " REFUNDS_LIST_MAX ") l ORDER BY id",
    .nparams = 1,
};
/* clang-format on */

cJSON *
recon_refunds_json(struct kasir_db *db, const char *order_id)
{
	const char *p[1] = {order_id};

	return db_query_json(db, &st_list, p);
}

/* "150000.00" -> 150000.  -EINVAL for anything else (IDR has no cents). */
static int
parse_idr(const char *s, int64_t *ret)
{
	char *end;
	long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || v <= 0 || v > REFUND_AMOUNT_MAX ||
	    (*end != '\0' && strcmp(end, ".00") != 0))
		return -EINVAL;
	*ret = v;
	return 0;
}

/* ---- the HTTP call ------------------------------------------------------- */

struct refund_answer {
	long http_status;     /* 0: none */
	struct body_buf body; /* the first RECON_BODY_MAX bytes */
	char error[RECON_ERROR_MAX];
	int64_t latency_ms;
	const char *outcome; /* accepted | refused | uncertain */
	char status_code[16];
	char status_message[512];
};

/* What the answer means: accepted only on HTTP 2xx with status_code
 * "200"; refused on a 4xx status_code (Midtrans decided: nothing was
 * refunded); anything else is uncertain (5xx, timeout, an unreadable
 * body): the same key must be retried. */
static void
interpret(struct refund_answer *a)
{
	cJSON *j = NULL;
	const cJSON *sc, *sm;

	a->outcome = "uncertain";
	if (a->http_status == 0 || a->body.data == NULL)
		return;
	if ((j = cJSON_ParseWithLength(a->body.data, a->body.len)) == NULL)
		return;
	sc = cJSON_GetObjectItemCaseSensitive(j, "status_code");
	sm = cJSON_GetObjectItemCaseSensitive(j, "status_message");
	if (cJSON_IsString(sc))
		kasir_strlcpy(a->status_code, sc->valuestring,
		              sizeof(a->status_code));
	if (cJSON_IsString(sm))
		kasir_strlcpy(a->status_message, sm->valuestring,
		              sizeof(a->status_message));
	if (a->http_status >= 200 && a->http_status < 300 &&
	    strcmp(a->status_code, "200") == 0)
		a->outcome = "accepted";
	else if (a->status_code[0] == '4' && strlen(a->status_code) == 3 &&
	         a->http_status < 500)
		a->outcome = "refused";
	cJSON_Delete(j);
}

static int
refund_call(const struct recon_conf *conf, const char *order_id,
            const char *key, int64_t amount, const char *reason,
            struct refund_answer *a)
{
	char url[1024], *esc, *hdr, *body;
	struct curl_slist *h = NULL;
	bool ok;
	cJSON *j;
	CURL *e;
	CURLcode cc;
	int64_t t0 = now_mono_ms();

	if ((e = curl_easy_init()) == NULL)
		return -ENOMEM;
	esc = curl_easy_escape(e, order_id, 0);
	snprintf(url, sizeof(url), "%s/v2/%s/refund", conf->core_url,
	         esc ? esc : order_id);
	curl_free(esc);
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "refund_key", key);
	cJSON_AddNumberToObject(j, "amount", (double)amount);
	cJSON_AddStringToObject(j, "reason", reason);
	body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	hdr = recon_auth_header(conf);
	if (body == NULL || hdr == NULL) {
		free(body);
		free(hdr);
		curl_easy_cleanup(e);
		return -ENOMEM;
	}
	ok = curl_headers_add(&h, "Accept: application/json") &&
	     curl_headers_add(&h, "Content-Type: application/json") &&
	     curl_headers_add(&h, hdr);
	explicit_bzero(hdr, strlen(hdr));
	free(hdr);
	if (!ok) {
		curl_headers_free(h);
		free(body);
		curl_easy_cleanup(e);
		return -ENOMEM;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)conf->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)conf->timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_buf_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &a->body);
	cc = curl_easy_perform(e);
	a->latency_ms = now_mono_ms() - t0;
	if (cc == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &a->http_status);
	else
		kasir_strlcpy(a->error, curl_easy_strerror(cc),
		              sizeof(a->error));
	curl_headers_free(h); /* the header with the key: wiped */
	curl_easy_cleanup(e);
	free(body);
	interpret(a);
	return 0;
}

/* ---- the admin command --------------------------------------------------- */

/* Where a refusal is written: the admin reply's code and message. */
struct refusal {
	char *code;
	size_t code_len;
	char *msg;
	size_t msg_len;
};

/* Ends the open transaction, audits the refusal (alone) and fills the
 * reply.  Returns KASIR_EREJECT. */
static int refuse(struct kasir_db *db, const struct admin_request *req,
                  const char *order_id, const struct refusal *out,
                  const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static int
refuse(struct kasir_db *db, const struct admin_request *req,
       const char *order_id, const struct refusal *out, const char *code,
       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out->msg, out->msg_len, fmt, ap);
	va_end(ap);
	kasir_strlcpy(out->code, code, out->code_len);
	db_rollback(db);
	if (recon_admin_audit(db, req, NULL, NULL, "refused", out->msg) < 0)
		log_warning("admin: auditing a refused refund failed: %s",
		            db_last_error(db));
	log_order(LOG_NOTICE, order_id, "admin: refund by %s refused: %s: %s",
	          req->peer.user, code, out->msg);
	return KASIR_EREJECT;
}

int
recon_admin_refund(void *arg, const struct admin_request *req, cJSON **ret,
                   char *code, size_t code_len, char *msg, size_t msg_len)
{
	struct recon *r = arg;
	struct kasir_db *db = r->admin_db;
	const cJSON *jamount =
	    cJSON_GetObjectItemCaseSensitive(req->args, "amount");
	const cJSON *joid =
	    cJSON_GetObjectItemCaseSensitive(req->args, "order_id");
	const char *order_id, *p[1];
	struct refund_answer a = {0};
	PGresult *res = NULL;
	int64_t gross = 0, refunded = 0, left, amount = 0, refund_id = 0,
	        open_amount = 0;
	char key[REFUND_KEY_LEN + 1] = "", s_amount[24], s_gross[24], s_id[24];
	bool retry = false;
	cJSON *after = NULL, *out = NULL;
	const struct refusal no = {code, code_len, msg, msg_len};
	int rc;

	body_buf_init(&a.body, RECON_BODY_MAX, BODY_TRUNCATE);
	if (!cJSON_IsString(joid) || !order_id_valid(joid->valuestring, 50) ||
	    (jamount != NULL && !cJSON_IsNull(jamount) &&
	     (!cJSON_IsNumber(jamount) || jamount->valuedouble < 1 ||
	      jamount->valuedouble > (double)REFUND_AMOUNT_MAX ||
	      jamount->valuedouble != (double)(int64_t)jamount->valuedouble))) {
		kasir_strlcpy(code, ADMIN_E_INVALID_ARGS, code_len);
		kasir_strlcpy(msg,
		              "want {order_id: string, amount: whole rupiah "
		              "> 0 (absent: what is left)}",
		              msg_len);
		return -EINVAL;
	}
	order_id = joid->valuestring;
	p[0] = order_id;
	if (cJSON_IsNumber(jamount))
		amount = (int64_t)jamount->valuedouble;

	/* 1. refusals, under one transaction (a concurrent refund of the same
	 * order waits on the advisory lock) */
	if ((rc = db_begin(db)) < 0)
		goto db_failed;
	if ((rc = db_exec(db, &st_lock, p, NULL)) < 0)
		goto db_failed_tx;
	if ((rc = db_exec(db, &st_watch, p, &res)) < 0)
		goto db_failed_tx;
	if (PQntuples(res) != 1) {
		rc = refuse(db, req, order_id, &no, ADMIN_E_ORDER_NOT_FOUND,
		            "the reconciler has never seen order %s", order_id);
		goto refused;
	}
	if (strcmp(db_get(res, 0, 0), "PAID") != 0) {
		rc = refuse(db, req, order_id, &no, "not_paid",
		            "order %s is %s: only a PAID order can be refunded",
		            order_id, db_get(res, 0, 0));
		goto refused;
	}
	PQclear(res);
	res = NULL;
	if ((rc = db_exec(db, &st_paid_proof, p, &res)) < 0)
		goto db_failed_tx;
	if (PQntuples(res) != 1 || parse_idr(db_get(res, 0, 0), &gross) < 0) {
		rc = refuse(db, req, order_id, &no, "no_payment_proof",
		            "no Status API answer shows order %s paid: run "
		            "kasirctl reconcile %s first",
		            order_id, order_id);
		goto refused;
	}
	PQclear(res);
	res = NULL;
	if ((rc = db_exec(db, &st_refunded, p, &res)) < 0)
		goto db_failed_tx;
	refunded = db_get_i64(res, 0, 0);
	PQclear(res);
	res = NULL;
	left = gross - refunded;
	if (amount == 0)
		amount = left;
	if (amount <= 0 || amount > left) {
		rc = refuse(db, req, order_id, &no, "amount_above_remaining",
		            "refund of %" PRId64 " asked, %" PRId64
		            " left (paid %" PRId64 ", refunded through kasir "
		            "%" PRId64 ")",
		            amount, left, gross, refunded);
		goto refused;
	}
	if ((rc = db_exec(db, &st_open, p, &res)) < 0)
		goto db_failed_tx;
	if (PQntuples(res) == 1) {
		open_amount = db_get_i64(res, 0, 2);
		if (open_amount != amount) {
			rc = refuse(
			    db, req, order_id, &no, "refund_unclear",
			    "refund %s of %" PRId64 " for this order has no "
			    "clear answer from Midtrans yet: run the same "
			    "command with --amount %" PRId64
			    " to retry it with the same refund key",
			    db_get(res, 0, 1), open_amount, open_amount);
			goto refused;
		}
		refund_id = db_get_i64(res, 0, 0);
		kasir_strlcpy(key, db_get(res, 0, 1), sizeof(key));
		retry = true;
	}
	PQclear(res);
	res = NULL;

	/* 2. the request row, committed before the call */
	if (!retry) {
		char uuid[40];
		const char *ip[7];

		if ((rc = uuid_v4(uuid, sizeof(uuid))) < 0)
			goto db_failed_tx;
		snprintf(key, sizeof(key), "kasir-%s", uuid);
		snprintf(s_amount, sizeof(s_amount), "%" PRId64, amount);
		snprintf(s_gross, sizeof(s_gross), "%" PRId64, gross);
		ip[0] = order_id;
		ip[1] = key;
		ip[2] = s_amount;
		ip[3] = s_gross;
		ip[4] = req->reason;
		ip[5] = req->peer.user;
		ip[6] = req->incident;
		if ((rc = db_exec(db, &st_insert, ip, &res)) < 0)
			goto db_failed_tx;
		refund_id = db_get_i64(res, 0, 0);
		PQclear(res);
		res = NULL;
	}
	if ((rc = db_commit(db)) < 0)
		goto db_failed;
	log_order(LOG_NOTICE, order_id,
	          "admin: refund of %" PRId64 " by %s%s, refund key %s: %s",
	          amount, req->peer.user, retry ? " (retry)" : "", key,
	          req->reason);

	/* 3. the call, its answer and the audit in one transaction */
	if ((rc = refund_call(r->conf, order_id, key, amount, req->reason,
	                      &a)) < 0)
		goto out;
	after = cJSON_CreateObject();
	cJSON_AddStringToObject(after, "order_id", order_id);
	cJSON_AddStringToObject(after, "refund_key", key);
	cJSON_AddNumberToObject(after, "amount", (double)amount);
	cJSON_AddNumberToObject(after, "gross_amount", (double)gross);
	cJSON_AddNumberToObject(after, "refunded_before", (double)refunded);
	cJSON_AddBoolToObject(after, "retry", retry);
	cJSON_AddStringToObject(after, "outcome", a.outcome);
	cJSON_AddNumberToObject(after, "http_status", (double)a.http_status);
	cJSON_AddStringToObject(after, "status_code", a.status_code);
	cJSON_AddStringToObject(after, "status_message", a.status_message);
	if (a.error[0])
		cJSON_AddStringToObject(after, "error", a.error);
	{
		char hs[16], lat[24], expected[24];
		const char *ap[8], *fp[2] = {order_id, expected};

		snprintf(s_id, sizeof(s_id), "%" PRId64, refund_id);
		snprintf(hs, sizeof(hs), "%ld", a.http_status);
		snprintf(lat, sizeof(lat), "%" PRId64, a.latency_ms);
		ap[0] = s_id;
		ap[1] = a.outcome;
		ap[2] = hs;
		ap[3] = a.status_code[0] ? a.status_code : NULL;
		ap[4] = a.status_message[0] ? a.status_message : NULL;
		ap[5] =
		    a.body.data != NULL && utf8_valid(a.body.data, a.body.len)
		        ? a.body.data
		        : NULL;
		ap[6] = a.error[0] ? a.error : NULL;
		ap[7] = lat;
		/* what Midtrans should show once it applies this refund:
		 * every refund it accepted through kasir, this one included */
		snprintf(expected, sizeof(expected), "%" PRId64,
		         refunded + amount);
		if ((rc = db_begin(db)) < 0 ||
		    (rc = db_exec(db, &st_attempt, ap, NULL)) < 0 ||
		    (strcmp(a.outcome, "accepted") == 0 &&
		     (rc = db_exec(db, &st_force, fp, NULL)) < 0) ||
		    (rc = recon_admin_audit(
		         db, req, NULL, after,
		         strcmp(a.outcome, "accepted") == 0  ? "ok"
		         : strcmp(a.outcome, "refused") == 0 ? "refused"
		                                             : "error",
		         strcmp(a.outcome, "accepted") == 0 ? NULL
		         : a.status_message[0]              ? a.status_message
		                                            : a.error)) < 0 ||
		    (rc = db_commit(db)) < 0) {
			db_rollback(db);
			log_order(
			    LOG_ERR, order_id,
			    "admin: refund %s answered %s but storing the "
			    "answer failed: %s",
			    key, a.outcome, db_last_error(db));
			snprintf(
			    msg, msg_len,
			    "Midtrans answered %s (%s %s) but the reconciler "
			    "could not store it; refund key %s: run the same "
			    "command again (the key makes it safe)",
			    a.outcome, a.status_code, a.status_message, key);
			kasir_strlcpy(code, ADMIN_E_DATABASE_UNAVAILABLE,
			              code_len);
			goto out;
		}
	}
	log_order(strcmp(a.outcome, "accepted") == 0 ? LOG_NOTICE : LOG_WARNING,
	          order_id,
	          "admin: Refund API answered %s: HTTP %ld, status_code %s, "
	          "%s%s%s",
	          a.outcome, a.http_status,
	          a.status_code[0] ? a.status_code : "-", a.status_message,
	          a.error[0] ? ", " : "", a.error);
	if (strcmp(a.outcome, "accepted") == 0) {
		scheduler_wake(r);
		out = after;
		after = NULL;
		*ret = out;
		rc = 0;
	} else if (strcmp(a.outcome, "refused") == 0) {
		kasir_strlcpy(code, "midtrans_refused", code_len);
		snprintf(msg, msg_len,
		         "Midtrans refused the refund of %" PRId64
		         " for %s: status_code %s: %s (nothing was refunded)",
		         amount, order_id, a.status_code, a.status_message);
		rc = KASIR_EREJECT;
	} else {
		kasir_strlcpy(code, "midtrans_unclear", code_len);
		snprintf(
		    msg, msg_len,
		    "no clear answer from Midtrans for the refund of "
		    "%" PRId64 " (HTTP %ld%s%s%s%s): the refund may or may not "
		    "have happened; run the same command again: it reuses "
		    "refund key %s, so Midtrans refunds at most once",
		    amount, a.http_status, a.status_code[0] ? ", " : "",
		    a.status_message, a.error[0] ? ", " : "", a.error, key);
		rc = KASIR_EPEER;
	}
	goto out;

refused:
	goto out;
db_failed_tx:
	db_rollback(db);
db_failed:
	kasir_strlcpy(code, ADMIN_E_DATABASE_UNAVAILABLE, code_len);
	snprintf(msg, msg_len, "the reconciler's database: %s",
	         db_last_error(db));
out:
	PQclear(res);
	body_buf_free(&a.body);
	cJSON_Delete(after);
	return rc;
}
