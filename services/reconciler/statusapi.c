/*
 * statusapi.c - the Midtrans Status API client and the meaning of its
 * answers.
 *
 *   GET {core}/v2/{order_id | transaction_id}/status
 *   Accept: application/json
 *   Authorization: Basic base64(server_key + ":")
 *
 * A rolling client on one curl multi handle: checks are added one at a
 * time (statusapi_add) and each comes back from statusapi_step() as soon
 * as it is finished, whatever the others are doing, so one slow answer
 * never holds back the fast ones.  At most `concurrency` transfers in
 * flight, a token bucket for the global requests-per-second cap, connect
 * and total timeouts per request, transient answers (5xx, timeouts)
 * retried with exponential backoff up to `retries` times, bodies kept up
 * to RECON_BODY_MAX bytes.  Every attempt's answer is returned so
 * evidence.c can store each one.
 *
 * Not thread-safe: one thread (the scheduler) owns the client; only
 * statusapi_wakeup() may be called from another thread.
 * The server key lives only in the prepared Authorization header and is
 * never logged (CURLOPT_VERBOSE is never set).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>

#include "curl_headers.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "reconciler.h"
#include "util.h"

static const char *const verdict_names[VERDICT_COUNT] = {
    [VERDICT_STATUS] = "status",         [VERDICT_NOT_FOUND] = "not_found",
    [VERDICT_EXPIRED] = "expired",       [VERDICT_AUTH] = "auth",
    [VERDICT_HTTP_5XX] = "http_5xx",     [VERDICT_TIMEOUT] = "timeout",
    [VERDICT_UNEXPECTED] = "unexpected",
};

const char *
recon_verdict_name(enum recon_verdict v)
{
	if ((int)v < 0 || v >= VERDICT_COUNT)
		return "unexpected";
	return verdict_names[v];
}

bool
recon_verdict_is_answer(enum recon_verdict v)
{
	return v == VERDICT_STATUS || v == VERDICT_NOT_FOUND ||
	       v == VERDICT_EXPIRED;
}

bool
recon_verdict_is_transient(enum recon_verdict v)
{
	return v == VERDICT_HTTP_5XX || v == VERDICT_TIMEOUT;
}

/* ---- interpretation (pure) ------------------------------------------- */

/* Copies the string member k of o into dst ("" when absent, not a string
 * or too long to be a real value). */
static void
copy_field(const cJSON *o, const char *k, char *dst, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	dst[0] = '\0';
	if (cJSON_IsString(v) && v->valuestring != NULL &&
	    strlen(v->valuestring) < len)
		memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
}

static bool
is_code(const char *status_code, const char *want)
{
	return strcmp(status_code, want) == 0;
}

enum recon_verdict
statusapi_interpret(long http_status, const char *body, size_t body_len,
                    const char *order_id, const char *txn_id,
                    struct status_fields *ret_fields)
{
	struct status_fields f;
	enum recon_verdict v = VERDICT_UNEXPECTED;
	cJSON *j = NULL;
	const char *end = NULL;

	memset(&f, 0, sizeof(f));
	if (http_status == 0) {
		v = VERDICT_TIMEOUT;
		goto out;
	}
	/* A body that is not valid UTF-8 is not a Midtrans body, and its
	 * fields could not be stored: unexpected, never evidence (the
	 * status check keeps a note instead of the body: evidence.c). */
	if (body != NULL && body_len > 0 && utf8_valid(body, body_len))
		j = cJSON_ParseWithLengthOpts(body, body_len, &end, false);
	if (j != NULL) {
		/* trailing garbage after the object: not a Midtrans body */
		while (end != NULL && end < body + body_len &&
		       (*end == ' ' || *end == '\n' || *end == '\r' ||
		        *end == '\t'))
			end++;
		/* ... or a key twice at any depth: cJSON would read the
		 * first, PostgreSQL's jsonb (the stored body an operator
		 * reads) the last: not a Midtrans body either */
		if (!cJSON_IsObject(j) ||
		    (end != NULL && end < body + body_len) ||
		    json_check_unique_keys(j, NULL) != 0) {
			cJSON_Delete(j);
			j = NULL;
		}
	}
	if (j != NULL) {
		copy_field(j, "transaction_status", f.transaction_status,
		           sizeof(f.transaction_status));
		copy_field(j, "status_code", f.status_code,
		           sizeof(f.status_code));
		copy_field(j, "status_message", f.status_message,
		           sizeof(f.status_message));
		copy_field(j, "gross_amount", f.gross_amount,
		           sizeof(f.gross_amount));
		copy_field(j, "currency", f.currency, sizeof(f.currency));
		copy_field(j, "payment_type", f.payment_type,
		           sizeof(f.payment_type));
		copy_field(j, "fraud_status", f.fraud_status,
		           sizeof(f.fraud_status));
		copy_field(j, "transaction_id", f.transaction_id,
		           sizeof(f.transaction_id));
		copy_field(j, "order_id", f.order_id, sizeof(f.order_id));
		copy_field(j, "settlement_time", f.settlement_time,
		           sizeof(f.settlement_time));
		copy_field(j, "refund_amount", f.refund_amount,
		           sizeof(f.refund_amount));
		copy_field(j, "transaction_time", f.transaction_time,
		           sizeof(f.transaction_time));
	}

	if (http_status == 401 || is_code(f.status_code, "401")) {
		v = VERDICT_AUTH;
		goto out;
	}
	if (http_status >= 500 && http_status <= 599) {
		v = VERDICT_HTTP_5XX;
		goto out;
	}
	if (j == NULL)
		goto out; /* no Midtrans body: nothing can be concluded */
	if (http_status == 200 && f.status_code[0] == '5' &&
	    strlen(f.status_code) == 3) {
		v = VERDICT_HTTP_5XX;
		goto out;
	}
	/* "not found" and "expired" name no order: asked by a transaction
	 * id (a notification's, unsigned) they say nothing about this one,
	 * and a junk id must not expire a paid order */
	if ((http_status == 200 || http_status == 404) &&
	    is_code(f.status_code, "404")) {
		if (txn_id == NULL)
			v = VERDICT_NOT_FOUND;
		goto out;
	}
	if ((http_status == 200 || http_status == 407) &&
	    is_code(f.status_code, "407")) {
		if (txn_id == NULL)
			v = VERDICT_EXPIRED;
		goto out;
	}
	if (http_status == 200 &&
	    (is_code(f.status_code, "200") || is_code(f.status_code, "201") ||
	     is_code(f.status_code, "202")) &&
	    f.transaction_status[0] != '\0') {
		/* the answer must be about the order we asked about, also
		 * when asked by a transaction id: that id came from a
		 * notification's unsigned field, and another order's
		 * settled transaction would otherwise pay this order */
		if (strcmp(f.order_id, order_id) == 0 &&
		    (txn_id == NULL || strcmp(f.transaction_id, txn_id) == 0))
			v = VERDICT_STATUS;
		goto out;
	}
out:
	cJSON_Delete(j);
	if (ret_fields != NULL)
		*ret_fields = f;
	return v;
}

/* Midtrans's "YYYY-MM-DD HH:MM:SS" in Asia/Jakarta (UTC+7, no daylight
 * saving, no offset in the string) as epoch milliseconds. */
static int
wib_time_ms(const char *s, int64_t *ret)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
	if (end == NULL || *end != '\0')
		return -EINVAL;
	*ret = ((int64_t)timegm(&tm) - 7 * 3600) * 1000;
	return 0;
}

bool
statusapi_predates(const struct status_fields *f, int64_t created_ms)
{
	int64_t t;

	if (created_ms <= 0 || f->transaction_time[0] == '\0' ||
	    wib_time_ms(f->transaction_time, &t) < 0)
		return false;
	/* the string has whole seconds: the transaction began within the
	 * second after t */
	return t + 1000 + STATUSAPI_CLOCK_SLACK_MS < created_ms;
}

/* ---- the client ------------------------------------------------------ */

struct statusapi {
	const struct recon_conf *conf;
	const struct statusapi_metrics *m;
	CURLM *multi;
	struct curl_slist *headers; /* Accept + Authorization (secret) */
	struct tbucket bucket;

	/* the calls the client holds: queued, in flight or awaiting a retry
	 * (owned by the caller, lent until statusapi_step gives them back) */
	struct statusapi_call *held[RECON_BATCH_MAX];
	size_t nheld;
	size_t running;      /* of them, transfers in flight */
	int64_t concurrency; /* this client's share of midtrans.concurrency */
	bool halted;         /* a 401 or statusapi_halt: no new request */
};

static void
answer_free(struct statusapi_answer *a)
{
	body_buf_free(&a->body);
}

void
statusapi_call_reset(struct statusapi_call *c)
{
	for (int i = 0; i < c->nanswers; i++)
		answer_free(&c->answers[i]);
	c->nanswers = 0;
	c->skipped = false;
	c->cur = NULL;
	c->easy = NULL;
	c->next_ms = 0;
}

char *
recon_auth_header(const struct recon_conf *conf)
{
	size_t klen = conf->server_key.len + 1;
	char *plain = malloc(klen + 1),
	     *hdr = malloc(4 * ((klen + 2) / 3) + 32);

	if (plain == NULL || hdr == NULL) {
		free(plain);
		free(hdr);
		return NULL;
	}
	memcpy(plain, conf->server_key.value, conf->server_key.len);
	plain[klen - 1] = ':';
	memcpy(hdr, "Authorization: Basic ", 21);
	EVP_EncodeBlock((unsigned char *)hdr + 21, (const unsigned char *)plain,
	                (int)klen);
	OPENSSL_cleanse(plain, klen + 1);
	free(plain);
	return hdr;
}

int
statusapi_new(const struct recon_conf *conf, const struct statusapi_metrics *m,
              int share, struct statusapi **ret)
{
	struct statusapi *a;
	char *hdr = NULL;
	double burst, rps;
	int r = -ENOMEM;

	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->conf = conf;
	a->m = m;
	if (share < 1)
		share = 1;
	a->concurrency = conf->concurrency / share;
	if (a->concurrency < 1)
		a->concurrency = 1;
	rps = (double)conf->rps / share;
	if (rps < 1.0)
		rps = 1.0;
	/* a burst of at most a tenth of a second's tokens and one window of
	 * requests: the window refills at once after a pause, the cap holds
	 * over any second */
	burst = rps / 10.0;
	if (burst > (double)a->concurrency)
		burst = (double)a->concurrency;
	tbucket_init(&a->bucket, rps, burst < 1.0 ? 1.0 : burst);
	if ((hdr = recon_auth_header(conf)) == NULL ||
	    !curl_headers_add(&a->headers, "Accept: application/json") ||
	    !curl_headers_add(&a->headers, hdr))
		goto fail;
	a->multi = curl_multi_init();
	if (a->multi == NULL)
		goto fail;
	curl_multi_setopt(a->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
	                  (long)a->concurrency);
	r = 0;
	*ret = a;
	a = NULL;
fail:
	if (hdr != NULL)
		OPENSSL_cleanse(hdr, strlen(hdr));
	free(hdr);
	if (a != NULL)
		statusapi_free(a);
	return r;
}

void
statusapi_free(struct statusapi *a)
{
	if (a == NULL)
		return;
	if (a->multi)
		curl_multi_cleanup(a->multi);
	curl_headers_free(a->headers); /* the key's header wiped */
	free(a);
}

/* Starts the next attempt of c.  0 or -ENOMEM. */
static int
start(struct statusapi *a, struct statusapi_call *c)
{
	char url[512], *esc;
	CURL *e;

	e = curl_easy_init();
	if (e == NULL)
		return -ENOMEM;
	esc = curl_easy_escape(e, c->ident, 0);
	if (esc == NULL) {
		curl_easy_cleanup(e);
		return -ENOMEM;
	}
	snprintf(url, sizeof(url), "%s/v2/%s/status", a->conf->core_url, esc);
	curl_free(esc);
	c->cur = &c->answers[c->nanswers++];
	memset(c->cur, 0, sizeof(*c->cur));
	/* a longer answer is kept cut, and says so (body_truncated) */
	body_buf_init(&c->cur->body, RECON_BODY_MAX, BODY_TRUNCATE);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->headers);
	curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)a->conf->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)a->conf->timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_buf_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &c->cur->body);
	curl_easy_setopt(e, CURLOPT_PRIVATE, c);
	curl_easy_setopt(e, CURLOPT_USERAGENT,
	                 "kasir-reconciler/" KASIR_VERSION);
	if (curl_multi_add_handle(a->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		c->nanswers--;
		c->cur = NULL;
		return -ENOMEM;
	}
	c->easy = e;
	c->started_ms = now_mono_ms();
	c->cur->at_ms = now_real_ms();
	metric_inc(a->m->requests);
	return 0;
}

/* A transfer of c ended with result res: fills its answer. */
static void
finish(struct statusapi *a, struct statusapi_call *c, CURLcode res)
{
	struct statusapi_answer *ans = c->cur;
	long code = 0;

	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
	if (res != CURLE_OK) {
		/* a failed transfer is no answer, whatever arrived */
		snprintf(ans->error, sizeof(ans->error), "%s",
		         curl_easy_strerror(res));
		code = 0;
	}
	ans->http_status = code;
	ans->latency_ms = now_mono_ms() - c->started_ms;
	ans->verdict = statusapi_interpret(
	    code, ans->body.data, ans->body.len, c->order_id,
	    c->by_txn ? c->ident : NULL, &ans->f);
	if (ans->verdict == VERDICT_STATUS &&
	    statusapi_predates(&ans->f, c->created_ms)) {
		ans->verdict = VERDICT_UNEXPECTED;
		log_fields(LOG_WARNING,
		           LOG_F({"ORDER_ID", c->order_id},
		                 {"TRANSACTION_ID", ans->f.transaction_id}),
		           "status api answer is about a transaction made at "
		           "%s WIB, before the order was created: not this "
		           "order's payment (its order id was used before, by "
		           "someone else): not evidence",
		           ans->f.transaction_time);
	} else if (ans->verdict == VERDICT_UNEXPECTED &&
	           ans->f.order_id[0] != '\0' &&
	           strcmp(ans->f.order_id, c->order_id) != 0)
		log_fields(LOG_WARNING,
		           LOG_F({"ORDER_ID", c->order_id},
		                 {"TRANSACTION_ID", c->by_txn ? c->ident : ""}),
		           "status api answer names order %s, not %s: not "
		           "evidence for this order (a transaction id from a "
		           "notification, unsigned: possible forgery)",
		           ans->f.order_id, c->order_id);
	metric_observe(a->m->latency, (double)ans->latency_ms / 1000.0);
	if (!recon_verdict_is_answer(ans->verdict))
		metric_inc(a->m->errors);
	curl_multi_remove_handle(a->multi, c->easy);
	curl_easy_cleanup(c->easy);
	c->easy = NULL;
	c->cur = NULL;
}

/* Backoff before attempt number `tries` + 1 (tries >= 1). */
static int64_t
retry_delay(const struct recon_conf *conf, int tries)
{
	int64_t d = conf->retry_backoff_ms;

	for (int i = 1; i < tries && d < 60000; i++)
		d *= 2;
	return d;
}

/* Takes c out of the held set and hands it to the caller's done list. */
static void
give_back(struct statusapi *a, size_t i, struct statusapi_call **done,
          size_t *nd)
{
	done[(*nd)++] = a->held[i];
	a->held[i] = a->held[--a->nheld];
}

/* Collects the transfers curl finished: a transient answer is retried
 * after its backoff (unless halted), anything else is final and goes to
 * done. */
static void
collect(struct statusapi *a, struct statusapi_call **done, size_t *nd)
{
	const int max_tries = (int)a->conf->retries + 1;
	int still = 0, msgs;
	CURLMsg *m;

	curl_multi_perform(a->multi, &still);
	while ((m = curl_multi_info_read(a->multi, &msgs)) != NULL) {
		struct statusapi_call *c = NULL;
		enum recon_verdict v;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE,
		                  (char **)&c);
		finish(a, c, m->data.result);
		a->running--;
		v = c->answers[c->nanswers - 1].verdict;
		if (v == VERDICT_AUTH)
			a->halted = true; /* no new request until resumed */
		if (recon_verdict_is_transient(v) && c->nanswers < max_tries &&
		    !a->halted) {
			c->next_ms =
			    now_mono_ms() + retry_delay(a->conf, c->nanswers);
			continue;
		}
		c->next_ms = -1; /* finished */
		for (size_t i = 0; i < a->nheld; i++)
			if (a->held[i] == c) {
				give_back(a, i, done, nd);
				break;
			}
	}
}

/* Starts every held call that may start now: a free request slot, its
 * retry time reached, a token of the rps cap.  Halted: the calls not in
 * flight come back skipped instead.  Returns how long until the next one
 * may start (ms, at most cap). */
static int64_t
start_due(struct statusapi *a, struct statusapi_call **done, size_t *nd,
          int64_t cap)
{
	int64_t now = now_mono_ms(), wait = cap, tw;

	for (size_t i = 0; i < a->nheld;) {
		struct statusapi_call *c = a->held[i];

		if (c->easy != NULL) {
			i++;
			continue;
		}
		if (a->halted) {
			c->skipped = true;
			c->next_ms = -1;
			give_back(a, i, done, nd);
			continue; /* slot i now holds another call */
		}
		i++;
		if (a->running >= (size_t)a->concurrency)
			continue;
		if (c->next_ms > now) {
			if (c->next_ms - now < wait)
				wait = c->next_ms - now;
			continue;
		}
		if (!tbucket_take(&a->bucket, &tw)) {
			if (tw < wait)
				wait = tw < 1 ? 1 : tw;
			break;
		}
		if (start(a, c) < 0) {
			/* out of memory: tried again at the next step */
			wait = 10;
			break;
		}
		a->running++;
	}
	return wait;
}

int
statusapi_add(struct statusapi *a, struct statusapi_call *c)
{
	if (a->nheld >= RECON_BATCH_MAX)
		return KASIR_ETOOBIG;
	statusapi_call_reset(c);
	a->held[a->nheld++] = c;
	return 0;
}

size_t
statusapi_held(const struct statusapi *a)
{
	return a->nheld;
}

size_t
statusapi_running(const struct statusapi *a)
{
	return a->running;
}

void
statusapi_halt(struct statusapi *a)
{
	a->halted = true;
}

void
statusapi_resume(struct statusapi *a)
{
	a->halted = false;
}

void
statusapi_wakeup(struct statusapi *a)
{
	curl_multi_wakeup(a->multi);
}

int
statusapi_step(struct statusapi *a, int64_t wait_ms,
               struct statusapi_call **done, size_t *ret_n)
{
	size_t nd = 0;
	int64_t wait;

	collect(a, done, &nd);
	wait = start_due(a, done, &nd, wait_ms);
	if (nd == 0) {
		/* nothing to hand back yet: sleep until a transfer moves, a
		 * retry or token is due, wait_ms passes or a wakeup */
		curl_multi_poll(a->multi, NULL, 0,
		                (int)(wait < 0      ? 0
		                      : wait > 1000 ? 1000
		                                    : wait),
		                NULL);
		collect(a, done, &nd);
		(void)start_due(a, done, &nd, 0);
	}
	*ret_n = nd;
	return 0;
}
