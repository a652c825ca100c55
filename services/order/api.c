/*
 * api.c - the HTTP API the website calls (bearer token):
 *
 *   GET  /v1/courses                      the catalog
 *   POST /v1/orders                       create an order, start Snap
 *   GET  /v1/orders/{order_id}            status, flags, timeline
 *   GET  /v1/access?customer_email=&course_id=
 *
 * Every request is authenticated first, whatever its path: 401 before 404.
 * String fields and query arguments with a control character (\u0000
 * included, which cJSON would cut the string at) are refused, naming the
 * field.  Errors are {"error":{"code","message"}} with stable codes:
 * unauthorized (401), not_found (404), method_not_allowed (405),
 * unsupported_media_type (415), invalid_json / invalid_field /
 * unknown_field / missing_field / invalid_idempotency_key /
 * invalid_parameter (400),
 * unknown_course (422), order_exists / idempotency_conflict /
 * request_in_progress / order_closed (409), order_not_found (404),
 * snap_unavailable (502), database_unavailable (503).
 *
 * One Snap call at a time per order (migration 0015): the create call
 * holds the order's Snap lease from the INSERT until it records Snap's
 * answer, and records it only if it still holds it.  A call repeated with
 * the same Idempotency-Key and body answers from the row (replay_create:
 * the page kasir holds, or why there is none) and calls Snap again only
 * when it can take the lease: the order PENDING, a minute or more before
 * its expiry, with no token and no 406.  While another call holds it:
 * request_in_progress.  A token is handed out only once it is stored, and
 * never for an order that can no longer be paid or whose id Midtrans had
 * (docs/state-machine.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "db_json.h"
#include "err.h"
#include "http.h"
#include "json.h"
#include "json_string.h"
#include "log.h"
#include "metrics.h"
#include "order.h"
#include "stream.h"
#include "util.h"

static int
db_error(struct http_response *resp, int rc)
{
	if (rc == KASIR_EDB || rc == KASIR_EDBUNKNOWN)
		return http_error(resp, 503, "database_unavailable",
		                  "database unavailable, retry later");
	return http_error(resp, 500, "internal", "internal error");
}

static bool
authorized(const struct order_service *s, const struct http_request *req)
{
	const char *h = http_header(req, "Authorization");
	const struct conf_secret *tok = &s->conf->api_token;

	if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	return ct_equal(h, strlen(h), tok->value, tok->len);
}

/* ---- validation ---- */

static bool
no_controls(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	}
	return true;
}

static bool
name_valid(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= ORDER_NAME_MAX && utf8_valid(s, n) &&
	       no_controls(s);
}

/* Sane, not RFC 5322: one '@', local 1..64, a dotted domain, no spaces. */
static bool
email_valid(const char *s)
{
	const char *at = strchr(s, '@'), *dot;
	size_t n = strlen(s);

	if (n < 3 || n > ORDER_EMAIL_MAX || at == NULL || at == s ||
	    at - s > 64 || strchr(at + 1, '@') != NULL)
		return false;
	for (const char *p = s; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch <= 0x20 || ch >= 0x7f || ch == '<' || ch == '>' ||
		    ch == ',' || ch == ';' || ch == '"' || ch == '\\')
			return false;
	}
	dot = strrchr(at + 1, '.');
	return dot != NULL && dot > at + 1 && dot[1] != '\0';
}

static bool
phone_valid(const char *s)
{
	size_t digits = 0;

	if (*s == '+')
		s++;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		digits++;
	}
	return digits >= ORDER_PHONE_MIN && digits <= ORDER_PHONE_MAX;
}

static bool
idem_key_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > ORDER_IDEM_KEY_MAX)
		return false;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	}
	return true;
}

/* "KSR-<yyyymmdd>-<12 hex>" */
static int
new_order_id(char *buf, size_t len)
{
	uint8_t rnd[6];
	char hex[13];
	struct tm tm;
	time_t t = time(NULL) + 7 * 3600; /* Jakarta date */

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	hex_encode(rnd, sizeof(rnd), hex);
	gmtime_r(&t, &tm);
	snprintf(buf, len, "KSR-%04d%02d%02d-%s", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, hex);
	return 0;
}

static void
sha256_hex(const char *data, size_t len, char out[65])
{
	uint8_t md[32];
	unsigned mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	hex_encode(md, 32, out);
}

/* Checks that object o has only the allowed keys.  Returns the first
 * unknown key or NULL. */
static const char *
unknown_key(const cJSON *o, const char *const *allowed)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, o)
	{
		bool ok = false;
		for (const char *const *a = allowed; *a != NULL; a++) {
			if (strcmp(it->string, *a) == 0)
				ok = true;
		}
		if (!ok)
			return it->string;
	}
	return NULL;
}

static const char *
get_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- POST /v1/orders ---- */

struct create_in {
	const struct course *course;
	const char *name, *email, *phone;
	char order_id[ORDER_ID_MAX + 1];
	bool client_order_id;
	const char *idem_key;
	char hash[65];
};

/* A payment page is opened only with at least this much of the order's
 * time left, and its window at Midtrans ends by the order's expiry: the
 * whole minutes left (SNAP_WINDOW_MS, rounded down by start_payment). */
#define SNAP_MIN_WINDOW "interval '1 minute'"
#define SNAP_WINDOW_MS  "(extract(epoch FROM expires_at - now()) * 1000)::bigint"

/* The order's Snap lease, as its holder knows it: which call holds it
 * (st_snap_result records only for that one), and how long the order has
 * left (the payment page's window). */
struct snap_lease {
	char id[40];
	int64_t window_ms;
};

/* After a 406 no payment page can be had for the order id. */
#define SNAP_ID_TAKEN_MESSAGE                                                  \
	"payment already registered at midtrans under this order id and "      \
	"kasir holds no payment page for it; create a new order (a new "       \
	"Idempotency-Key): this one expires unpaid"

/* The columns of a repeated call's answer, in this order. */
enum idem_col {
	IDEM_ORDER_ID,
	IDEM_HASH,
	IDEM_STATUS,
	IDEM_TOKEN,
	IDEM_URL,
	IDEM_EXPIRES_AT,
	IDEM_ID_TAKEN, /* Snap said 406 */
	IDEM_LATE,     /* less than SNAP_MIN_WINDOW before expires_at */
};

/* clang-format off */
static const struct db_stmt st_idem = {
    .name = "api_idem_lookup",
    .sql = "SELECT order_id, request_hash, status, snap_token, redirect_url,"
           " " TS("expires_at") ", needs_reconcile,"
           " expires_at <= now() + " SNAP_MIN_WINDOW
           " FROM orders.orders WHERE idempotency_key = $1",
    .nparams = 1,
};

/* Takes the order's Snap lease for a repeated call: only when nothing
 * else could answer it (see the top of this file). */
static const struct db_stmt st_snap_claim = {
    .name = "api_snap_claim",
    .sql = "UPDATE orders.orders"
           " SET snap_lease_until = now() + $2::bigint * interval '1 millisecond',"
           " snap_lease_id = gen_random_uuid()"
           " WHERE order_id = $1 AND status = 'PENDING'"
           " AND expires_at > now() + " SNAP_MIN_WINDOW
           " AND snap_token IS NULL AND NOT needs_reconcile"
           " AND (snap_lease_until IS NULL OR snap_lease_until < now())"
           " RETURNING snap_lease_id, " SNAP_WINDOW_MS,
    .nparams = 2,
};

static const struct db_stmt st_insert = {
    .name = "api_order_insert",
    .sql = "INSERT INTO orders.orders (order_id, course_id, course_title,"
           " amount, customer_name, customer_email, customer_phone,"
           " access_days, expires_at, idempotency_key, request_hash, drill,"
           " snap_lease_until, snap_lease_id)"
           " VALUES ($1, $2, $3, $4::bigint, $5, $6, $7, $8::integer,"
           " now() + $9::bigint * interval '1 millisecond', $10, $11,"
           " $12::boolean, now() + $13::bigint * interval '1 millisecond',"
           " gen_random_uuid())"
           " RETURNING " TS("expires_at") ", snap_lease_id, " SNAP_WINDOW_MS,
    .nparams = 13,
};

/* Records Snap's answer and gives the lease back, only while the caller
 * still holds it ($7): a caller that lost it records nothing (no row).  A
 * 406 marks the order (needs_reconcile: a payment under its id is someone
 * else's) only while kasir holds no token for it: with one, the id was
 * taken by kasir's own call. */
static const struct db_stmt st_snap_result = {
    .name = "api_snap_result",
    .sql = "UPDATE orders.orders SET snap_token = coalesce($2, snap_token),"
           " redirect_url = coalesce($3, redirect_url), snap_error = $4,"
           " snap_attempts = snap_attempts + $5::integer,"
           " needs_reconcile = needs_reconcile"
           "  OR ($6::boolean AND snap_token IS NULL),"
           " snap_lease_until = NULL, snap_lease_id = NULL"
           " WHERE order_id = $1 AND snap_lease_id = $7::uuid"
           " RETURNING status",
    .nparams = 7,
};
/* clang-format on */

static int
answer_created(struct http_response *resp, int status, const char *order_id,
               const char *token, const char *url, const char *ostatus,
               const char *expires_at)
{
	cJSON *o = cJSON_CreateObject();
	int rc;

	if (o == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "order_id", order_id);
	cJSON_AddStringToObject(o, "snap_token", token);
	cJSON_AddStringToObject(o, "redirect_url", url);
	cJSON_AddStringToObject(o, "status", ostatus);
	cJSON_AddStringToObject(o, "expires_at", expires_at);
	rc = http_json(resp, status, o);
	cJSON_Delete(o);
	return rc;
}

static int
parse_create(const struct order_service *s, const struct http_request *req,
             struct http_response *resp, cJSON **ret_json, struct create_in *in)
{
	static const char *const top[] = {"course_id", "customer", "order_id",
	                                  NULL};
	static const char *const cust_keys[] = {"name", "email", "phone", NULL};
	const char *ct = http_header(req, "Content-Type");
	const char *end = NULL, *bad, *cid, *oid;
	const cJSON *cust;
	cJSON *j;
	char msg[160], field[96];

	memset(in, 0, sizeof(*in));
	if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
	    (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
		http_error(resp, 415, "unsupported_media_type",
		           "Content-Type must be application/json");
		return -EINVAL;
	}
	in->idem_key = http_header(req, "Idempotency-Key");
	if (in->idem_key != NULL && !idem_key_valid(in->idem_key)) {
		http_error(resp, 400, "invalid_idempotency_key",
		           "Idempotency-Key must be 1..255 printable ASCII");
		return -EINVAL;
	}
	j = cJSON_ParseWithOpts(req->body, &end, true);
	if (j == NULL || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		http_error(resp, 400, "invalid_json",
		           "body must be one JSON object");
		return -EINVAL;
	}
	*ret_json = j;
	/* on the text: cJSON has already cut "a\u0000b" to "a" */
	if (json_find_control(req->body, req->body_len, field, sizeof(field)) !=
	    0) {
		snprintf(msg, sizeof(msg),
		         "control character in \"%.64s\" (\\u0000 to \\u001f, "
		         "\\u007f to \\u009f are refused)",
		         field[0] ? field : "(top level)");
		http_error(resp, 400, "invalid_field", msg);
		return -EINVAL;
	}
	if (json_check_unique_keys(j, &bad) != 0) {
		snprintf(msg, sizeof(msg), "duplicate field \"%.64s\"",
		         bad != NULL ? bad : "");
		http_error(resp, 400, "duplicate_key", msg);
		return -EINVAL;
	}
	if ((bad = unknown_key(j, top)) != NULL) {
		snprintf(msg, sizeof(msg), "unknown field \"%.64s\"", bad);
		http_error(resp, 400, "unknown_field", msg);
		return -EINVAL;
	}
	cust = cJSON_GetObjectItemCaseSensitive(j, "customer");
	cid = get_str(j, "course_id");
	if (cid == NULL || !cJSON_IsObject(cust)) {
		http_error(resp, 400, "missing_field",
		           "course_id (string) and customer (object) are "
		           "required");
		return -EINVAL;
	}
	if ((bad = unknown_key(cust, cust_keys)) != NULL) {
		snprintf(msg, sizeof(msg), "unknown field \"customer.%.64s\"",
		         bad);
		http_error(resp, 400, "unknown_field", msg);
		return -EINVAL;
	}
	in->name = get_str(cust, "name");
	in->email = get_str(cust, "email");
	in->phone = get_str(cust, "phone");
	if (in->name == NULL || in->email == NULL || in->phone == NULL) {
		http_error(resp, 400, "missing_field",
		           "customer.name, customer.email and customer.phone "
		           "(strings) are required");
		return -EINVAL;
	}
	if (!name_valid(in->name)) {
		http_error(resp, 400, "invalid_field",
		           "customer.name must be 1..100 bytes of UTF-8 text");
		return -EINVAL;
	}
	if (!email_valid(in->email)) {
		http_error(resp, 400, "invalid_field",
		           "customer.email is not a valid address");
		return -EINVAL;
	}
	if (!phone_valid(in->phone)) {
		http_error(resp, 400, "invalid_field",
		           "customer.phone must be 8..16 digits, optional +");
		return -EINVAL;
	}
	if (cJSON_GetObjectItemCaseSensitive(j, "order_id") != NULL) {
		oid = get_str(j, "order_id");
		if (oid == NULL || !order_id_valid(oid, ORDER_ID_MAX)) {
			http_error(resp, 400, "invalid_field",
			           "order_id must be 1..50 of "
			           "[A-Za-z0-9._~-], not . or ..");
			return -EINVAL;
		}
		kasir_strlcpy(in->order_id, oid, sizeof(in->order_id));
		in->client_order_id = true;
	} else if (new_order_id(in->order_id, sizeof(in->order_id)) < 0) {
		http_error(resp, 500, "internal", "no randomness");
		return -EIO;
	}
	in->course = catalog_find(s->conf, cid);
	if (in->course == NULL) {
		http_error(resp, 422, "unknown_course", "no such course");
		return -EINVAL;
	}
	sha256_hex(req->body, req->body_len, in->hash);
	return 0;
}

/* Calls Snap for a stored order and records the outcome; answers. */
static int
start_payment(struct order_service *s, const struct create_in *in,
              const char *order_id, const char *expires_at,
              const struct snap_lease *lease, struct http_response *resp)
{
	struct snap_request rq = {
	    .order_id = order_id,
	    .amount = in->course->price,
	    .course_id = in->course->id,
	    .course_title = in->course->title,
	    .name = in->name,
	    .email = in->email,
	    .phone = in->phone,
	    /* the page closes by the order's expiry, not a full expiry
	     * after a retry */
	    .expiry_minutes =
	        lease->window_ms >= 60000 ? lease->window_ms / 60000 : 1,
	};
	struct snap_result r;
	struct kasir_db *db;
	char attempts[16];
	int64_t t0 = now_mono_ms();
	PGresult *res = NULL;
	int rc;

	snap_create(s->conf, &rq, &r);
	metric_observe(s->m.snap_latency, (double)(now_mono_ms() - t0) / 1e3);
	snprintf(attempts, sizeof(attempts), "%d", r.attempts);
	const char *params[7] = {
	    order_id,
	    r.outcome == SNAP_OK ? r.token : NULL,
	    r.outcome == SNAP_OK ? r.redirect_url : NULL,
	    r.outcome == SNAP_OK ? NULL : r.error,
	    attempts,
	    r.outcome == SNAP_USED ? "true" : "false",
	    lease->id,
	};
	/* The Snap answer and, when there is a payment link, the
	 * order.payment_link event (the notifier's payment instructions) are
	 * committed together. */
	db = db_pool_get(&s->pool);
	rc = db_ensure(db);
	if (rc == 0)
		rc = db_begin(db);
	if (rc == 0)
		rc = db_exec(db, &st_snap_result, params, &res);
	if (rc == 0 && PQntuples(res) != 1)
		rc = KASIR_ECONFLICT; /* the lease was taken over */
	if (rc == 0 && r.outcome == SNAP_OK)
		rc = store_emit(s->producer, db, MSG_ORDER_PAYMENT_LINK,
		                order_id, NULL, NULL);
	if (rc == 0)
		rc = db_commit(db);
	else
		db_rollback(db);
	PQclear(res);
	db_pool_put(&s->pool, db);
	if (rc == 0 && r.outcome == SNAP_OK)
		stream_producer_kick(s->producer);
	if (rc == KASIR_ECONFLICT) {
		/* This call overran its lease and another one took it:
		 * that one's answer is the order's; this one's is dropped
		 * (a token from it is never handed out). */
		log_order(
		    LOG_WARNING, order_id,
		    "snap lease lost to another call after %d attempt(s); "
		    "its outcome (%s) is not recorded",
		    r.attempts, r.outcome == SNAP_OK ? "a token" : r.error);
		return http_error(resp, 409, "request_in_progress",
		                  "another request took over starting this "
		                  "order's payment; retry with the same "
		                  "Idempotency-Key");
	}
	if (rc < 0) {
		log_order(LOG_ERR, order_id,
		          "storing the snap outcome (%s) failed: %s",
		          r.outcome == SNAP_OK ? "a token" : r.error,
		          kasir_strerror(rc));
		/* A token kasir has not stored is never handed out: a
		 * repeated call would not find it, and a payment through
		 * it could not be told from someone else's. */
		if (r.outcome == SNAP_OK)
			return http_error(resp, 503, "database_unavailable",
			                  "the payment page could not be "
			                  "recorded; retry with the same "
			                  "Idempotency-Key");
	}
	if (r.outcome != SNAP_OK) {
		metric_inc(s->m.snap_errors);
		log_order(LOG_WARNING, order_id,
		          "snap failed after %d attempt(s): %s", r.attempts,
		          r.error);
		return http_error(resp, 502, "snap_unavailable",
		                  r.outcome == SNAP_USED
		                      ? SNAP_ID_TAKEN_MESSAGE
		                      : "payment gateway unavailable, retry "
		                        "with the same Idempotency-Key");
	}
	metric_inc(s->m.snap_ok);
	return answer_created(resp, 201, order_id, r.token, r.redirect_url,
	                      "PENDING", expires_at);
}

/* The order's Snap lease outlasts the longest Snap call by this much: the
 * outcome's write after it. */
#define SNAP_LEASE_SLACK_MS 15000

static int64_t
snap_lease_ms(const struct order_service *s)
{
	return snap_call_bound_ms(s->conf) + SNAP_LEASE_SLACK_MS;
}

/*
 * A create call repeated with the same Idempotency-Key: answers from its
 * order's row (*res, st_idem): the token kasir holds, or why no Snap call
 * is made; or takes the order's Snap lease for lease_ms (snap_lease_ms()
 * as text).  Returns 1 when the lease is taken (the caller calls Snap),
 * else 0 (answered) or a negative code.  *res may be replaced by a fresh
 * read.
 */
static int
replay_create(const struct create_in *in, struct kasir_db *db,
              const char *lease_ms, PGresult **res, struct snap_lease *ret,
              struct http_response *resp)
{
	char msg[160];
	int rc;

	for (int look = 0;; look++) {
		const PGresult *row = *res;
		const char *oid = db_get(row, 0, IDEM_ORDER_ID);
		const char *status = db_get(row, 0, IDEM_STATUS);
		const char *token = db_get(row, 0, IDEM_TOKEN);
		const char *hash = db_get(row, 0, IDEM_HASH);
		bool pending = strcmp(status, "PENDING") == 0;
		bool late = db_get(row, 0, IDEM_LATE)[0] == 't';
		PGresult *claimed = NULL;

		if (hash == NULL || strcmp(hash, in->hash) != 0)
			return http_error(resp, 409, "idempotency_conflict",
			                  "Idempotency-Key reused with a "
			                  "different request");
		/* a paid (or refunded) order: what the call gave, and its
		 * status now */
		if (token != NULL && (strcmp(status, "PAID") == 0 ||
		                      strcmp(status, "REFUNDED") == 0))
			return answer_created(resp, 201, oid, token,
			                      db_get(row, 0, IDEM_URL), status,
			                      db_get(row, 0, IDEM_EXPIRES_AT));
		/* every other order that can no longer be paid: no page for
		 * it, not even the stored one */
		if (!pending || late) {
			snprintf(msg, sizeof(msg),
			         "order %s is %s: no payment can start for it; "
			         "create a new order with a new "
			         "Idempotency-Key",
			         oid,
			         pending ? "at or near its expiry" : status);
			return http_error(resp, 409, "order_closed", msg);
		}
		/* the id is Midtrans's: a payment under it is flagged, so
		 * its page is never handed out, even one kasir stored */
		if (db_get(row, 0, IDEM_ID_TAKEN)[0] == 't')
			return http_error(resp, 502, "snap_unavailable",
			                  SNAP_ID_TAKEN_MESSAGE);
		if (token != NULL)
			return answer_created(resp, 201, oid, token,
			                      db_get(row, 0, IDEM_URL), status,
			                      db_get(row, 0, IDEM_EXPIRES_AT));
		if (look > 0)
			return http_error(
			    resp, 409, "request_in_progress",
			    "another request with this "
			    "Idempotency-Key is starting the "
			    "payment; retry with the same key in a "
			    "few seconds");
		{
			const char *p[2] = {oid, lease_ms};
			if ((rc = db_exec(db, &st_snap_claim, p, &claimed)) < 0)
				return db_error(resp, rc);
		}
		rc = PQntuples(claimed);
		if (rc == 1) {
			kasir_strlcpy(ret->id, db_get(claimed, 0, 0),
			              sizeof(ret->id));
			ret->window_ms = db_get_i64(claimed, 0, 1);
		}
		PQclear(claimed);
		if (rc == 1)
			return 1;
		/* someone else holds it, or the row changed: read it again */
		{
			const char *p[1] = {in->idem_key};
			PGresult *again = NULL;

			if ((rc = db_exec(db, &st_idem, p, &again)) < 0)
				return db_error(resp, rc);
			if (PQntuples(again) != 1) {
				PQclear(again);
				return http_error(resp, 500, "internal",
				                  "internal error");
			}
			PQclear(*res);
			*res = again;
		}
	}
}

static int
create_order(struct order_service *s, const struct http_request *req,
             struct http_response *resp)
{
	struct create_in in;
	cJSON *j = NULL;
	struct kasir_db *db = NULL;
	PGresult *res = NULL;
	char expires_at[40], price[24], days[24], expiry[24], lease_ms[24];
	char order_id[ORDER_ID_MAX + 1];
	struct snap_lease lease;
	int rc, tries = 0;

	if (parse_create(s, req, resp, &j, &in) < 0) {
		cJSON_Delete(j);
		return 0;
	}
	snprintf(price, sizeof(price), "%" PRId64, in.course->price);
	snprintf(days, sizeof(days), "%" PRId64, in.course->access_days);
	snprintf(expiry, sizeof(expiry), "%" PRId64, s->conf->order_expiry_ms);
	snprintf(lease_ms, sizeof(lease_ms), "%" PRId64, snap_lease_ms(s));
	db = db_pool_get(&s->pool);
again:
	if ((rc = db_ensure(db)) < 0 || (rc = db_begin(db)) < 0)
		goto dberr;
	if (in.idem_key != NULL) {
		const char *p[1] = {in.idem_key};
		if ((rc = db_exec(db, &st_idem, p, &res)) < 0)
			goto rollback;
		if (PQntuples(res) == 1) {
			/* same key seen before */
			db_rollback(db);
			rc = replay_create(&in, db, lease_ms, &res, &lease,
			                   resp);
			if (rc == 1) {
				/* Snap failed earlier: again, same id */
				kasir_strlcpy(order_id,
				              db_get(res, 0, IDEM_ORDER_ID),
				              sizeof(order_id));
				kasir_strlcpy(expires_at,
				              db_get(res, 0, IDEM_EXPIRES_AT),
				              sizeof(expires_at));
				PQclear(res);
				res = NULL;
				db_pool_put(&s->pool, db);
				db = NULL;
				rc = start_payment(s, &in, order_id, expires_at,
				                   &lease, resp);
			}
			goto out;
		}
		PQclear(res);
		res = NULL;
	}
	{
		const char *p[13] = {
		    in.order_id,      in.course->id,
		    in.course->title, price,
		    in.name,          in.email,
		    in.phone,         in.course->access_days ? days : NULL,
		    expiry,           in.idem_key,
		    in.hash,          in.course->drill ? "true" : "false",
		    lease_ms};
		rc = db_exec(db, &st_insert, p, &res);
	}
	if (rc == KASIR_ESQL && strcmp(db_last_sqlstate(db), "23505") == 0) {
		db_rollback(db);
		if (in.idem_key != NULL && tries++ == 0) /* lost a race */
			goto again;
		if (!in.client_order_id && tries++ < 3 &&
		    new_order_id(in.order_id, sizeof(in.order_id)) == 0)
			goto again;
		rc = http_error(resp, 409, "order_exists",
		                "an order with this order_id exists");
		goto out;
	}
	if (rc < 0)
		goto rollback;
	kasir_strlcpy(expires_at, db_get(res, 0, 0), sizeof(expires_at));
	kasir_strlcpy(lease.id, db_get(res, 0, 1), sizeof(lease.id));
	lease.window_ms = db_get_i64(res, 0, 2);
	PQclear(res);
	res = NULL;
	if ((rc = store_emit(s->producer, db, MSG_ORDER_CREATED, in.order_id,
	                     NULL, NULL)) < 0)
		goto rollback;
	if ((rc = db_commit(db)) < 0)
		goto dberr;
	stream_producer_kick(s->producer);
	metric_inc(s->m.created);
	log_order(LOG_INFO, in.order_id,
	          "order created for course %s, %" PRId64 " IDR", in.course->id,
	          in.course->price);
	db_pool_put(&s->pool, db);
	db = NULL;
	rc = start_payment(s, &in, in.order_id, expires_at, &lease, resp);
	goto out;
rollback:
	db_rollback(db);
dberr:
	log_warning("creating an order failed: %s%s%s", kasir_strerror(rc),
	            rc == KASIR_ESQL ? ": " : "",
	            rc == KASIR_ESQL ? db_last_error(db) : "");
	rc = db_error(resp, rc);
out:
	PQclear(res);
	if (db != NULL)
		db_pool_put(&s->pool, db);
	cJSON_Delete(j);
	return rc < 0 ? rc : 0;
}

/* ---- GET handlers ---- */

static int
get_order(struct order_service *s, const char *id, struct http_response *resp)
{
	struct kasir_db *db;
	cJSON *view = NULL;
	int rc;

	if (!order_id_valid(id, ORDER_ID_MAX))
		return http_error(resp, 404, "order_not_found",
		                  "no such order");
	db = db_pool_get(&s->pool);
	rc = db_ensure(db);
	if (rc == 0)
		rc = store_order_view(db, id, false, &view);
	db_pool_put(&s->pool, db);
	if (rc == KASIR_ENOTFOUND)
		return http_error(resp, 404, "order_not_found",
		                  "no such order");
	if (rc < 0)
		return db_error(resp, rc);
	rc = http_json(resp, 200, view);
	cJSON_Delete(view);
	return rc;
}

static int
get_access(struct order_service *s, const struct http_request *req,
           struct http_response *resp)
{
	const char *email = http_query(req, "customer_email");
	const char *course = http_query(req, "course_id");
	struct kasir_db *db;
	cJSON *o = NULL;
	char bad[72], msg[128];
	int rc;

	if (http_query_has_control(req, bad, sizeof(bad))) {
		snprintf(msg, sizeof(msg), "control character in \"%s\"", bad);
		return http_error(resp, 400, "invalid_parameter", msg);
	}
	if (email == NULL || course == NULL)
		return http_error(resp, 400, "missing_parameter",
		                  "customer_email and course_id are required");
	if (!email_valid(email))
		return http_error(resp, 400, "invalid_parameter",
		                  "customer_email is not a valid address");
	if (catalog_find(s->conf, course) == NULL)
		return http_error(resp, 422, "unknown_course",
		                  "no such course");
	db = db_pool_get(&s->pool);
	rc = db_ensure(db);
	if (rc == 0)
		rc = store_access(db, email, course, &o);
	db_pool_put(&s->pool, db);
	if (rc < 0)
		return db_error(resp, rc);
	rc = http_json(resp, 200, o);
	cJSON_Delete(o);
	return rc;
}

static int
method_not_allowed(struct http_response *resp, const char *allow)
{
	http_add_header(resp, "Allow", "%s", allow);
	return http_error(resp, 405, "method_not_allowed",
	                  "method not allowed");
}

int
api_handle(void *arg, const struct http_request *req,
           struct http_response *resp)
{
	struct order_service *s = arg;
	const char *path = req->path;
	bool get =
	    strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	enum { R_COURSES, R_ORDERS, R_ORDER, R_ACCESS } route;
	const char *allow;

	/* Before routing: without the token nobody learns which paths exist
	 * (401 for every request, known path or not). */
	if (!authorized(s, req)) {
		http_add_header(resp, "WWW-Authenticate", "Bearer");
		return http_error(resp, 401, "unauthorized",
		                  "missing or wrong bearer token");
	}
	if (strcmp(path, "/v1/courses") == 0) {
		route = R_COURSES;
		allow = "GET, HEAD";
	} else if (strcmp(path, "/v1/orders") == 0) {
		route = R_ORDERS;
		allow = "POST";
	} else if (strncmp(path, "/v1/orders/", 11) == 0 && path[11] != '\0' &&
	           strchr(path + 11, '/') == NULL) {
		route = R_ORDER;
		allow = "GET, HEAD";
	} else if (strcmp(path, "/v1/access") == 0) {
		route = R_ACCESS;
		allow = "GET, HEAD";
	} else {
		return http_error(resp, 404, "not_found", "no such route");
	}
	switch (route) {
	case R_COURSES: {
		cJSON *c;
		int rc;
		if (!get)
			return method_not_allowed(resp, allow);
		c = catalog_json(s->conf);
		if (c == NULL)
			return -ENOMEM;
		rc = http_json(resp, 200, c);
		cJSON_Delete(c);
		return rc;
	}
	case R_ORDERS:
		if (strcmp(req->method, "POST") != 0)
			return method_not_allowed(resp, allow);
		return create_order(s, req, resp);
	case R_ORDER:
		if (!get)
			return method_not_allowed(resp, allow);
		return get_order(s, path + 11, resp);
	case R_ACCESS:
		if (!get)
			return method_not_allowed(resp, allow);
		return get_access(s, req, resp);
	}
	return http_error(resp, 404, "not_found", "no such route");
}
