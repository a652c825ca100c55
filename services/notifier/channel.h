/*
 * channel.h - a notification channel is a table of function pointers
 * (nng's rep0_sock_ops idea): the worker knows nothing about SMTP or
 * WhatsApp, and a new provider is one more table.
 */
#ifndef KASIR_NOTIFIER_CHANNEL_H
#define KASIR_NOTIFIER_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "notifier.h"

/* Result of one send, decides the job's next state. */
enum send_result {
	SEND_OK = 0,        /* accepted by the provider: sent */
	SEND_TRANSIENT = 1, /* not delivered, try again later: retry */
	SEND_PERMANENT = 2, /* never deliverable (bad recipient...): dead */
	SEND_UNCERTAIN = 3, /* timed out after the request went out: the
	                       provider may have accepted it; resent */
};

/* What the worker hands to a channel: one job, rendered. */
struct send_job {
	int64_t id;  /* notify.job id (Message-ID, callback data) */
	int attempt; /* 1-based */
	const char *order_id;
	const char *recipient; /* email address or normalised phone digits */
	const char *subject;   /* email only */
	const char *text;      /* email only: the body */
	/* WhatsApp only: the approved template and its body parameters
	 * (never free text) */
	const struct wa_template *wa_template;
	const char *const *wa_params; /* wa_template->params.n values */
};

struct channel_ops {
	const char *name; /* "email", "whatsapp" */
	/* One-time set-up from the configuration (e.g. curl defaults).
	 * Returns 0 or a negative error; may be NULL. */
	int (*init)(const struct notifier_conf *conf, void **ret_state);
	void (*fini)(void *state);
	/*
	 * Sends one message.  Thread-safe: called from several workers at
	 * once with the same state.  On SEND_OK provider_id receives the
	 * provider's message id (may stay empty).  Otherwise errbuf says
	 * what went wrong (never a secret) and *ret_code is a short
	 * bounded code for metrics ("connect", "timeout", "http_400",
	 * "smtp_550"...).
	 */
	enum send_result (*send)(void *state, const struct send_job *job,
	                         char *provider_id, size_t provider_id_len,
	                         char *ret_code, size_t code_len, char *errbuf,
	                         size_t errlen);
};

extern const struct channel_ops email_channel_ops;
extern const struct channel_ops whatsapp_channel_ops;

/* Used by email.c and whatsapp.c: classify a libcurl failure.
 * request_sent: bytes of the request body were uploaded. */
enum send_result channel_classify_curl(int curl_code, long response,
                                       int64_t uploaded, char *code,
                                       size_t code_len);

#endif
