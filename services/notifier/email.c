/*
 * email.c - the email channel: one SMTP transaction per message through
 * libcurl (smtp:// with STARTTLS off/optional/required, or smtps://).
 *
 * Classification (channel.h): a 5xx reply is permanent (mailbox does not
 * exist...), a 4xx reply or no connection is transient, and a broken or
 * timed-out connection after the message body started to go out is
 * uncertain (the server may have queued it; the stable Message-ID lets a
 * duplicate be recognised).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "channel.h"
#include "util.h"

struct email_state {
	const struct notifier_conf *conf; /* borrowed; outlives the channel */
};

static int
email_init(const struct notifier_conf *conf, void **ret_state)
{
	struct email_state *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	s->conf = conf;
	*ret_state = s;
	return 0;
}

static void
email_fini(void *state)
{
	free(state);
}

struct upload {
	const char *data;
	size_t len, pos;
};

static size_t
upload_read(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct upload *u = arg;
	size_t n = size * nmemb;

	if (n > u->len - u->pos)
		n = u->len - u->pos;
	memcpy(buf, u->data + u->pos, n);
	u->pos += n;
	return n;
}

enum send_result
channel_classify_curl(int curl_code, long response, int64_t uploaded,
                      char *code, size_t code_len)
{
	switch (curl_code) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		snprintf(code, code_len, "connect");
		return SEND_TRANSIENT;
	case CURLE_OPERATION_TIMEDOUT:
		snprintf(code, code_len, "timeout");
		return uploaded > 0 ? SEND_UNCERTAIN : SEND_TRANSIENT;
	case CURLE_LOGIN_DENIED:
		snprintf(code, code_len, "auth");
		return SEND_TRANSIENT;
	case CURLE_USE_SSL_FAILED:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
		snprintf(code, code_len, "tls");
		return SEND_TRANSIENT;
	default:
		break;
	}
	if (response >= 500 && response < 600) {
		snprintf(code, code_len, "smtp_%ld", response);
		return SEND_PERMANENT;
	}
	if (response >= 400 && response < 500) {
		snprintf(code, code_len, "smtp_%ld", response);
		return SEND_TRANSIENT;
	}
	snprintf(code, code_len, "curl_%d", curl_code);
	return uploaded > 0 ? SEND_UNCERTAIN : SEND_TRANSIENT;
}

static enum send_result
email_send(void *state, const struct send_job *job, char *provider_id,
           size_t provider_id_len, char *ret_code, size_t code_len,
           char *errbuf, size_t errlen)
{
	const struct notifier_conf *c = ((struct email_state *)state)->conf;
	struct mime_message mm = {
	    .from_addr = c->mail_from,
	    .from_name = c->mail_from_name,
	    .to_addr = job->recipient,
	    .subject = job->subject,
	    .body = job->text,
	    .job_id = job->id,
	    .msgid_domain = c->message_id_domain,
	    .order_id = job->order_id,
	    .date_ms = now_real_ms(),
	};
	char curl_err[CURL_ERROR_SIZE] = "", addr[300];
	struct curl_slist *rcpt = NULL;
	struct upload up = {0};
	enum send_result res;
	curl_off_t uploaded = 0;
	long response = 0;
	char *msg = NULL;
	size_t msg_len;
	CURL *h = NULL;
	CURLcode cc;
	int r;

	r = mime_build(&mm, &msg, &msg_len);
	if (r < 0) {
		snprintf(ret_code, code_len, "message");
		snprintf(errbuf, errlen, "cannot build the message: %s",
		         r == -EINVAL ? "invalid recipient or text"
		                      : "out of memory");
		return r == -EINVAL ? SEND_PERMANENT : SEND_TRANSIENT;
	}
	h = curl_easy_init();
	snprintf(addr, sizeof(addr), "<%s>", job->recipient);
	rcpt = curl_slist_append(NULL, addr);
	if (h == NULL || rcpt == NULL) {
		snprintf(ret_code, code_len, "nomem");
		snprintf(errbuf, errlen, "out of memory");
		res = SEND_TRANSIENT;
		goto out;
	}
	up.data = msg;
	up.len = msg_len;
	curl_easy_setopt(h, CURLOPT_URL, c->smtp_url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USE_SSL,
	                 c->smtp_tls == SMTP_TLS_REQUIRED ? (long)CURLUSESSL_ALL
	                 : c->smtp_tls == SMTP_TLS_OPTIONAL
	                     ? (long)CURLUSESSL_TRY
	                     : (long)CURLUSESSL_NONE);
	if (c->smtp_password.value != NULL) {
		curl_easy_setopt(h, CURLOPT_USERNAME,
		                 c->smtp_username ? c->smtp_username : "");
		curl_easy_setopt(h, CURLOPT_PASSWORD, c->smtp_password.value);
	}
	snprintf(addr, sizeof(addr), "<%s>", c->mail_from);
	curl_easy_setopt(h, CURLOPT_MAIL_FROM, addr);
	curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, upload_read);
	curl_easy_setopt(h, CURLOPT_READDATA, &up);
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)msg_len);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->smtp_timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(c->smtp_timeout_ms / 2));
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);

	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response);
	curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &uploaded);
	if (cc == CURLE_OK) {
		snprintf(provider_id, provider_id_len, "<job-%lld@%s>",
		         (long long)job->id, c->message_id_domain);
		res = SEND_OK;
		goto out;
	}
	res = channel_classify_curl((int)cc, response, (int64_t)uploaded,
	                            ret_code, code_len);
	snprintf(errbuf, errlen, "smtp: %s (reply %ld)",
	         curl_err[0] ? curl_err : curl_easy_strerror(cc), response);
out:
	curl_slist_free_all(rcpt);
	if (h)
		curl_easy_cleanup(h);
	free(msg);
	return res;
}

const struct channel_ops email_channel_ops = {
    .name = "email",
    .init = email_init,
    .fini = email_fini,
    .send = email_send,
};
