/*
 * whatsapp.c - the WhatsApp channel, WhatsApp Cloud API message format:
 *
 *   POST {base}/{version}/{phone_number_id}/messages
 *   Authorization: Bearer <token>
 *   {"messaging_product":"whatsapp","recipient_type":"individual",
 *    "to":"628...","type":"text","text":{"preview_url":false,"body":"..."},
 *    "biz_opaque_callback_data":"job-<id>"}
 *
 * 2xx -> sent (provider id = messages[0].id, the wamid); 429 and 5xx ->
 * transient; other 4xx -> permanent (bad recipient, bad template: burning
 * the retry schedule would not help); connection refused -> transient;
 * timeout or broken connection after the request went out -> uncertain.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "channel.h"

#define WA_RESPONSE_MAX (16 * 1024)

struct wa_state {
	const struct notifier_conf *conf; /* borrowed */
	char url[512];
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

struct rbuf {
	char data[WA_RESPONSE_MAX + 1];
	size_t len;
};

static size_t
response_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct rbuf *b = arg;
	size_t n = size * nmemb, room = WA_RESPONSE_MAX - b->len;

	/* keep the first 16 KiB; the rest is read and dropped */
	if (n < room)
		room = n;
	memcpy(b->data + b->len, ptr, room);
	b->len += room;
	b->data[b->len] = '\0';
	return n;
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

/* The provider's error message, bounded and without control chars. */
static void
extract_error(const char *body, char *out, size_t len)
{
	cJSON *root = cJSON_Parse(body), *err, *msg;

	if (root != NULL) {
		err = cJSON_GetObjectItemCaseSensitive(root, "error");
		msg = err ? cJSON_GetObjectItemCaseSensitive(err, "message")
		          : NULL;
		if (cJSON_IsString(msg))
			snprintf(out, len, "%.200s", msg->valuestring);
		cJSON_Delete(root);
	}
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
}

static enum send_result
wa_send(void *state, const struct send_job *job, char *provider_id,
        size_t provider_id_len, char *ret_code, size_t code_len, char *errbuf,
        size_t errlen)
{
	struct wa_state *s = state;
	const struct notifier_conf *c = s->conf;
	char curl_err[CURL_ERROR_SIZE] = "", opaque[64], perr[256] = "";
	struct curl_slist *hdrs = NULL;
	cJSON *req = NULL, *text;
	struct rbuf *resp = NULL;
	char *auth = NULL, *body = NULL;
	enum send_result res = SEND_TRANSIENT;
	curl_off_t uploaded = 0;
	long status = 0;
	CURL *h = NULL;
	CURLcode cc;
	size_t alen = 0;

	snprintf(ret_code, code_len, "nomem");
	snprintf(errbuf, errlen, "out of memory");
	snprintf(opaque, sizeof(opaque), "job-%lld", (long long)job->id);
	req = cJSON_CreateObject();
	if (req == NULL ||
	    !cJSON_AddStringToObject(req, "messaging_product", "whatsapp") ||
	    !cJSON_AddStringToObject(req, "recipient_type", "individual") ||
	    !cJSON_AddStringToObject(req, "to", job->recipient) ||
	    !cJSON_AddStringToObject(req, "type", "text") ||
	    (text = cJSON_AddObjectToObject(req, "text")) == NULL ||
	    !cJSON_AddFalseToObject(text, "preview_url") ||
	    !cJSON_AddStringToObject(text, "body", job->text) ||
	    !cJSON_AddStringToObject(req, "biz_opaque_callback_data", opaque))
		goto out;
	body = cJSON_PrintUnformatted(req);
	alen = strlen("Authorization: Bearer ") + c->wa_token.len + 1;
	auth = malloc(alen);
	resp = calloc(1, sizeof(*resp));
	h = curl_easy_init();
	if (body == NULL || auth == NULL || resp == NULL || h == NULL)
		goto out;
	snprintf(auth, alen, "Authorization: Bearer %s", c->wa_token.value);
	hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	if (hdrs == NULL)
		goto out;
	{
		struct curl_slist *t = curl_slist_append(hdrs, auth);

		if (t == NULL)
			goto out;
		hdrs = t;
	}
	curl_easy_setopt(h, CURLOPT_URL, s->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, response_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
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
		extract_wamid(resp->data, provider_id, provider_id_len);
		errbuf[0] = '\0';
		res = SEND_OK;
		goto out;
	}
	extract_error(resp->data, perr, sizeof(perr));
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
	curl_slist_free_all(hdrs);
	if (auth) {
		explicit_bzero(auth, alen);
		free(auth);
	}
	free(body);
	free(resp);
	cJSON_Delete(req);
	return res;
}

const struct channel_ops whatsapp_channel_ops = {
    .name = "whatsapp",
    .init = wa_init,
    .fini = wa_fini,
    .send = wa_send,
};
