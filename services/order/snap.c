/*
 * snap.c - the Midtrans Snap client: POST {snap_url}/transactions.
 *
 * Bounded: connect and total timeouts from the config, a response cap,
 * at most midtrans.retries retries (on 5xx, timeouts and connection
 * errors only) with a short jittered backoff, always with the SAME
 * order_id so Midtrans can never charge twice: a retry whose first try
 * did reach Midtrans answers 406, which the caller treats as "look it up"
 * (reconciliation), never as a reason to make a new order_id.
 * Redirects are not followed.  The server key goes only into the Basic
 * auth header; it is never logged or stored in an error text.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "body_buf.h"
#include "log.h"
#include "order.h"
#include "util.h"

#define SNAP_RESPONSE_MAX  (64 * 1024)
#define SNAP_ITEM_NAME_MAX 50 /* Midtrans item_details.name limit */

int
snap_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
static void
utf8_cut(char *s, size_t max)
{
	size_t n = strlen(s);

	if (n <= max)
		return;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	s[n] = '\0';
}

static char *
build_body(const struct snap_request *rq)
{
	cJSON *root = cJSON_CreateObject(), *td, *cd, *items, *it, *exp;
	char name[COURSE_TITLE_MAX + 1], start[64];
	struct tm tm;
	time_t t;
	char *out = NULL;

	if (root == NULL)
		return NULL;
	td = cJSON_AddObjectToObject(root, "transaction_details");
	cd = cJSON_AddObjectToObject(root, "customer_details");
	items = cJSON_AddArrayToObject(root, "item_details");
	exp = cJSON_AddObjectToObject(root, "expiry");
	it = cJSON_CreateObject();
	if (td == NULL || cd == NULL || items == NULL || exp == NULL ||
	    it == NULL) {
		cJSON_Delete(it);
		goto out;
	}
	cJSON_AddItemToArray(items, it);
	cJSON_AddStringToObject(td, "order_id", rq->order_id);
	cJSON_AddNumberToObject(td, "gross_amount", (double)rq->amount);
	cJSON_AddStringToObject(cd, "first_name", rq->name);
	cJSON_AddStringToObject(cd, "email", rq->email);
	cJSON_AddStringToObject(cd, "phone", rq->phone);
	kasir_strlcpy(name, rq->course_title, sizeof(name));
	utf8_cut(name, SNAP_ITEM_NAME_MAX);
	cJSON_AddStringToObject(it, "id", rq->course_id);
	cJSON_AddNumberToObject(it, "price", (double)rq->amount);
	cJSON_AddNumberToObject(it, "quantity", 1);
	cJSON_AddStringToObject(it, "name", name);
	/* Midtrans wants Jakarta local time with its offset. */
	t = time(NULL) + 7 * 3600;
	gmtime_r(&t, &tm);
	strftime(start, sizeof(start), "%Y-%m-%d %H:%M:%S +0700", &tm);
	cJSON_AddStringToObject(exp, "start_time", start);
	cJSON_AddStringToObject(exp, "unit", "minute");
	cJSON_AddNumberToObject(exp, "duration", (double)rq->expiry_minutes);
	out = cJSON_PrintUnformatted(root);
out:
	cJSON_Delete(root);
	return out;
}

/* One HTTP attempt.  Returns the HTTP status, or 0 on a transport error
 * (timeout, refused, reset), with *ret_body (may be NULL) the response. */
static int
snap_post(const struct order_conf *c, const char *url, const char *body,
          struct body_buf *resp, char *err, size_t err_len)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	long status = 0;
	CURLcode cc;

	if (h == NULL) {
		snprintf(err, err_len, "curl init failed");
		return 0;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(h, CURLOPT_USERNAME, c->server_key.value);
	curl_easy_setopt(h, CURLOPT_PASSWORD, "");
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)c->snap_connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->snap_timeout_ms);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "kasir-order/" KASIR_VERSION);
	cc = curl_easy_perform(h);
	if (cc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	else
		snprintf(err, err_len, "%s", curl_easy_strerror(cc));
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return (int)status;
}

static void
first_error_message(const char *body, char *out, size_t len)
{
	cJSON *j = body ? cJSON_Parse(body) : NULL;
	const cJSON *em = cJSON_GetObjectItemCaseSensitive(j, "error_messages");
	const cJSON *m0 = cJSON_GetArrayItem(em, 0);

	if (cJSON_IsString(m0))
		snprintf(out, len, "%s", m0->valuestring);
	cJSON_Delete(j);
}

/* The retries' backoff: backoff_ms(attempt - 1, base, cap) */
#define SNAP_BACKOFF_BASE_MS 200
#define SNAP_BACKOFF_CAP_MS  1000

int64_t
snap_call_bound_ms(const struct order_conf *c)
{
	return (c->snap_retries + 1) * c->snap_timeout_ms +
	       c->snap_retries * SNAP_BACKOFF_CAP_MS;
}

int
snap_create(const struct order_conf *c, const struct snap_request *rq,
            struct snap_result *ret)
{
	struct snap_result r;
	char url[1024], terr[128] = "";
	char *body;
	int attempt;

	memset(&r, 0, sizeof(r));
	r.outcome = SNAP_UNAVAILABLE;
	snprintf(url, sizeof(url), "%s/transactions", c->snap_url);
	body = build_body(rq);
	if (body == NULL) {
		snprintf(r.error, sizeof(r.error), "out of memory");
		*ret = r;
		return 0;
	}
	for (attempt = 0; attempt <= c->snap_retries; attempt++) {
		struct body_buf resp;
		int status;

		body_buf_init(&resp, SNAP_RESPONSE_MAX, BODY_ABORT);
		if (attempt > 0) {
			sleep_ms(backoff_ms(attempt - 1, SNAP_BACKOFF_BASE_MS,
			                    SNAP_BACKOFF_CAP_MS));
		}
		r.attempts = attempt + 1;
		terr[0] = '\0';
		status = snap_post(c, url, body, &resp, terr, sizeof(terr));
		r.http_status = status;
		if (status == 201 || status == 200) {
			cJSON *j = resp.data ? cJSON_Parse(resp.data) : NULL;
			const cJSON *tok =
			    cJSON_GetObjectItemCaseSensitive(j, "token");
			const cJSON *ru =
			    cJSON_GetObjectItemCaseSensitive(j, "redirect_url");
			if (cJSON_IsString(tok) && cJSON_IsString(ru) &&
			    strlen(tok->valuestring) < sizeof(r.token) &&
			    strlen(ru->valuestring) < sizeof(r.redirect_url)) {
				kasir_strlcpy(r.token, tok->valuestring,
				              sizeof(r.token));
				kasir_strlcpy(r.redirect_url, ru->valuestring,
				              sizeof(r.redirect_url));
				r.outcome = SNAP_OK;
				r.error[0] = '\0';
			} else {
				r.outcome = SNAP_REJECTED;
				snprintf(r.error, sizeof(r.error),
				         "snap answered %d without token",
				         status);
			}
			cJSON_Delete(j);
			body_buf_free(&resp);
			break;
		}
		if (status == 406) {
			r.outcome = SNAP_USED;
			snprintf(r.error, sizeof(r.error),
			         "order_id already used at midtrans (406)");
			body_buf_free(&resp);
			break;
		}
		if (status >= 400 && status < 500) {
			char m[160] = "";
			first_error_message(resp.data, m, sizeof(m));
			r.outcome = SNAP_REJECTED;
			snprintf(r.error, sizeof(r.error),
			         "snap answered %d%s%s", status,
			         m[0] ? ": " : "", m);
			body_buf_free(&resp);
			break;
		}
		/* 5xx, 3xx, transport errors: temporary, retry */
		if (status == 0)
			snprintf(r.error, sizeof(r.error),
			         "snap unreachable: %s", terr);
		else
			snprintf(r.error, sizeof(r.error), "snap answered %d",
			         status);
		body_buf_free(&resp);
	}
	free(body);
	*ret = r;
	return 0;
}
