/*
 * whatsapp.c - the WhatsApp channel, WhatsApp Cloud API template messages:
 *
 *   POST {base}/{version}/{phone_number_id}/messages
 *   Authorization: Bearer <token>
 *   {"messaging_product":"whatsapp","recipient_type":"individual",
 *    "to":"628...","type":"template",
 *    "template":{"name":"kasir_bukti_pembayaran","language":{"code":"id"},
 *                "components":[{"type":"body","parameters":[
 *                    {"type":"text","text":"Siti"}, ...]}]},
 *    "biz_opaque_callback_data":"job-<id>"}
 *
 * Every message kasir sends starts a conversation (kasir reads no
 * customer messages), and the Cloud API refuses business-initiated free
 * text outside the 24-hour customer-service window (error 131047): so
 * only approved templates are sent, never "type":"text".
 *
 * 2xx -> sent (provider id = messages[0].id, the wamid).  An answer with a
 * Cloud API error code is classified by the code (wa_errors[]: template
 * not registered, wrong parameter count, outside the window -> permanent
 * with the reason an operator needs; throttling -> transient); otherwise
 * 429 and 5xx -> transient, other 4xx -> permanent; connection refused ->
 * transient; timeout or broken connection after the request went out ->
 * uncertain.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "body_buf.h"
#include "curl_headers.h"
#include "channel.h"

#define WA_RESPONSE_MAX (16 * 1024)

struct wa_state {
	const struct notifier_conf *conf; /* borrowed */
	char url[WA_URL_MAX];
};

static int
wa_init(const struct notifier_conf *conf, void **ret_state)
{
	struct wa_state *s = calloc(1, sizeof(*s));
	const char *base;
	size_t bl;
	int n;

	if (s == NULL)
		return -ENOMEM;
	s->conf = conf;
	base = conf->wa_base;
	bl = strlen(base);
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	n = snprintf(s->url, sizeof(s->url), "%.*s/%s/%s/messages", (int)bl,
	             base, conf->wa_version, conf->wa_phone_number_id);
	if (n < 0 || (size_t)n >= sizeof(s->url)) {
		free(s);
		return -ENAMETOOLONG;
	}
	*ret_state = s;
	return 0;
}

static void
wa_fini(void *state)
{
	free(state);
}

/* The wamid from {"messages":[{"id":"wamid..."}]}, if any. */
static void
extract_wamid(const char *body, char *out, size_t len)
{
	cJSON *root = cJSON_Parse(body), *msgs, *first, *id;

	if (root == NULL)
		return;
	msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
	first = cJSON_IsArray(msgs) ? cJSON_GetArrayItem(msgs, 0) : NULL;
	id = first ? cJSON_GetObjectItemCaseSensitive(first, "id") : NULL;
	if (cJSON_IsString(id) && strlen(id->valuestring) < len)
		snprintf(out, len, "%s", id->valuestring);
	cJSON_Delete(root);
}

/*
 * Cloud API error codes that decide the outcome whatever the HTTP status,
 * with what the operator must do.  Codes not listed fall back to the
 * HTTP status.
 */
static const struct wa_error {
	long code;
	enum send_result res;
	const char *reason;
} wa_errors[] = {
    {131047, SEND_PERMANENT,
     "free text outside the 24-hour customer-service window (kasir must "
     "send an approved template)"},
    {132000, SEND_PERMANENT,
     "the template's parameter count differs from the text registered "
     "with Meta: make whatsapp.templates.<kind>.parameters match it "
     "(docs/whatsapp.md)"},
    {132001, SEND_PERMANENT,
     "template not registered with Meta in this language, or not "
     "approved yet: register it as docs/whatsapp.md says, then requeue"},
    {132005, SEND_PERMANENT,
     "the template text with its parameters is "
     "too long"},
    {132007, SEND_PERMANENT, "a parameter breaks Meta's format policy"},
    {132012, SEND_PERMANENT,
     "a parameter does not match the format "
     "registered for the template"},
    {132015, SEND_PERMANENT, "template paused by Meta (low quality)"},
    {132016, SEND_PERMANENT, "template disabled by Meta"},
    {132018, SEND_PERMANENT,
     "a parameter holds a newline, a tab or too "
     "many spaces"},
    {131026, SEND_PERMANENT, "recipient cannot receive WhatsApp messages"},
    {131030, SEND_PERMANENT,
     "recipient not in the allowed list of this "
     "(test) phone number"},
    {190, SEND_PERMANENT, "access token refused: renew whatsapp.token_file"},
    {130429, SEND_TRANSIENT, "throughput limit reached"},
    {131056, SEND_TRANSIENT, "too many messages to this recipient"},
    {131016, SEND_TRANSIENT, "service unavailable"},
    {131000, SEND_TRANSIENT, "something went wrong at the provider"},
};

static const struct wa_error *
wa_error_find(long code)
{
	for (size_t i = 0; i < sizeof(wa_errors) / sizeof(wa_errors[0]); i++)
		if (wa_errors[i].code == code)
			return &wa_errors[i];
	return NULL;
}

/* The provider's error code (0 when none), message and details, bounded
 * and without control characters. */
static void
extract_error(const char *body, long *ret_code, char *out, size_t len)
{
	cJSON *root = cJSON_Parse(body), *err, *msg, *code, *data, *det;

	*ret_code = 0;
	if (root != NULL) {
		err = cJSON_GetObjectItemCaseSensitive(root, "error");
		msg = err ? cJSON_GetObjectItemCaseSensitive(err, "message")
		          : NULL;
		code =
		    err ? cJSON_GetObjectItemCaseSensitive(err, "code") : NULL;
		data = err ? cJSON_GetObjectItemCaseSensitive(err, "error_data")
		           : NULL;
		det = data ? cJSON_GetObjectItemCaseSensitive(data, "details")
		           : NULL;
		if (cJSON_IsNumber(code) && code->valuedouble > 0 &&
		    code->valuedouble < 1e9)
			*ret_code = (long)code->valuedouble;
		if (cJSON_IsString(msg))
			snprintf(out, len, "%.160s%s%.160s", msg->valuestring,
			         cJSON_IsString(det) ? " (" : "",
			         cJSON_IsString(det) ? det->valuestring : "");
		if (cJSON_IsString(msg) && cJSON_IsString(det) &&
		    strlen(out) + 1 < len)
			strcat(out, ")");
		cJSON_Delete(root);
	}
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
}

/* The template message for job: see the head of this file.  NULL when
 * out of memory; the caller frees with cJSON_Delete. */
static cJSON *
wa_request(const struct send_job *job, const char *opaque)
{
	const struct wa_template *t = job->wa_template;
	cJSON *req = cJSON_CreateObject(), *tpl, *lang, *comps, *body, *params;

	if (req == NULL ||
	    !cJSON_AddStringToObject(req, "messaging_product", "whatsapp") ||
	    !cJSON_AddStringToObject(req, "recipient_type", "individual") ||
	    !cJSON_AddStringToObject(req, "to", job->recipient) ||
	    !cJSON_AddStringToObject(req, "type", "template") ||
	    (tpl = cJSON_AddObjectToObject(req, "template")) == NULL ||
	    !cJSON_AddStringToObject(tpl, "name", t->name) ||
	    (lang = cJSON_AddObjectToObject(tpl, "language")) == NULL ||
	    !cJSON_AddStringToObject(lang, "code", t->language) ||
	    (comps = cJSON_AddArrayToObject(tpl, "components")) == NULL)
		goto fail;
	if (t->params.n > 0) {
		body = cJSON_CreateObject();
		if (body == NULL)
			goto fail;
		cJSON_AddItemToArray(comps, body); /* comps owns body */
		if (!cJSON_AddStringToObject(body, "type", "body") ||
		    (params = cJSON_AddArrayToObject(body, "parameters")) ==
		        NULL)
			goto fail;
		for (size_t i = 0; i < t->params.n; i++) {
			cJSON *p = cJSON_CreateObject();

			if (p == NULL)
				goto fail;
			cJSON_AddItemToArray(params, p);
			if (!cJSON_AddStringToObject(p, "type", "text") ||
			    !cJSON_AddStringToObject(p, "text",
			                             job->wa_params[i]))
				goto fail;
		}
	}
	if (!cJSON_AddStringToObject(req, "biz_opaque_callback_data", opaque))
		goto fail;
	return req;
fail:
	cJSON_Delete(req);
	return NULL;
}

static enum send_result
wa_send(void *state, const struct send_job *job, char *provider_id,
        size_t provider_id_len, char *ret_code, size_t code_len, char *errbuf,
        size_t errlen)
{
	struct wa_state *s = state;
	const struct notifier_conf *c = s->conf;
	char curl_err[CURL_ERROR_SIZE] = "", opaque[64], perr[340] = "";
	const struct wa_error *we;
	struct curl_slist *hdrs = NULL;
	cJSON *req = NULL;
	struct body_buf resp;
	char *auth = NULL, *body = NULL;
	enum send_result res = SEND_TRANSIENT;
	curl_off_t uploaded = 0;
	long status = 0, wa_code = 0;
	CURL *h = NULL;
	CURLcode cc;
	size_t alen = 0;

	/* the first 16 KiB of an answer; the rest is read and dropped */
	body_buf_init(&resp, WA_RESPONSE_MAX, BODY_TRUNCATE);
	snprintf(ret_code, code_len, "nomem");
	snprintf(errbuf, errlen, "out of memory");
	snprintf(opaque, sizeof(opaque), "job-%lld", (long long)job->id);
	if ((req = wa_request(job, opaque)) == NULL)
		goto out;
	body = cJSON_PrintUnformatted(req);
	alen = strlen("Authorization: Bearer ") + c->wa_token.len + 1;
	auth = malloc(alen);
	h = curl_easy_init();
	if (body == NULL || auth == NULL || h == NULL)
		goto out;
	snprintf(auth, alen, "Authorization: Bearer %s", c->wa_token.value);
	if (!curl_headers_add(&hdrs, "Content-Type: application/json") ||
	    !curl_headers_add(&hdrs, auth))
		goto out;
	curl_easy_setopt(h, CURLOPT_URL, s->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->wa_timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(c->wa_timeout_ms / 2));
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);

	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &uploaded);
	if (cc != CURLE_OK) {
		/* no (complete) answer: classify by how far we got; a
		 * request fully written counts as possibly accepted */
		res = channel_classify_curl((int)cc, 0, (int64_t)uploaded,
		                            ret_code, code_len);
		snprintf(errbuf, errlen, "whatsapp: %s",
		         curl_err[0] ? curl_err : curl_easy_strerror(cc));
		goto out;
	}
	snprintf(ret_code, code_len, "http_%ld", status);
	if (status >= 200 && status < 300) {
		extract_wamid(resp.data, provider_id, provider_id_len);
		errbuf[0] = '\0';
		res = SEND_OK;
		goto out;
	}
	extract_error(resp.data, &wa_code, perr, sizeof(perr));
	if ((we = wa_error_find(wa_code)) != NULL) {
		/* the reason first: it is what `notify jobs` shows */
		snprintf(ret_code, code_len, "wa_%ld", wa_code);
		snprintf(
		    errbuf, errlen,
		    "whatsapp: error %ld, %s (template %s/%s; HTTP %ld: %s)",
		    wa_code, we->reason, job->wa_template->name,
		    job->wa_template->language, status, perr);
		res = we->res;
		goto out;
	}
	if (wa_code > 0)
		snprintf(errbuf, errlen, "whatsapp: HTTP %ld error %ld: %s",
		         status, wa_code, perr);
	else
		snprintf(errbuf, errlen, "whatsapp: HTTP %ld%s%s", status,
		         perr[0] ? ": " : "", perr);
	if (status == 429 || status == 408 || status >= 500)
		res = SEND_TRANSIENT;
	else if (status >= 400)
		res = SEND_PERMANENT;
	else
		res = SEND_TRANSIENT; /* 1xx/3xx: not an answer we expect */
out:
	if (h)
		curl_easy_cleanup(h);
	curl_headers_free(hdrs); /* libcurl's copy of the token wiped */
	if (auth) {
		explicit_bzero(auth, alen);
		free(auth);
	}
	free(body);
	body_buf_free(&resp);
	cJSON_Delete(req);
	return res;
}

const struct channel_ops whatsapp_channel_ops = {
    .name = "whatsapp",
    .init = wa_init,
    .fini = wa_fini,
    .send = wa_send,
};
