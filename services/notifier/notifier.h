/*
 * notifier.h - kasir-notifier's internal interfaces.
 *
 * The notifier turns order events (the "orders" stream) into notification
 * jobs (notify.job) and delivers them by email and WhatsApp:
 *
 *   jobs.c      apply callback of the stream consumer: upserts the
 *               notifier's own record of the order (notify.orders) and
 *               creates / cancels jobs in the same transaction.
 *   worker.c    N threads: claim a due job (lease), guard it, render it,
 *               send it through its channel, record the attempt.
 *   guard.c     the send-time checks (receipt only for a PAID order...).
 *   template.c  YAML templates, placeholders, rupiah formatting.
 *   mime.c      RFC 5322 / MIME message building, RFC 2047 subjects.
 *   email.c     SMTP channel (libcurl); whatsapp.c  WhatsApp Cloud API.
 *   admin.c     operator commands on the admin socket.
 *   conf.c      the configuration table.
 *
 * Delivery is at-least-once: a job is committed as 'sending' with a lease
 * BEFORE the provider is called and as 'sent' after it answered.  A job
 * found in 'sending' with an expired lease may have been delivered by a
 * worker that died: the reclaim records an attempt with result 'uncertain'
 * and the job is sent again.  Duplicates are therefore possible only where
 * an 'uncertain' attempt says so.
 */
#ifndef KASIR_NOTIFIER_H
#define KASIR_NOTIFIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base_conf.h"
#include "config.h"
#include "admin_socket.h"

#define NOTIFIER_NAME   "kasir-notifier"
#define NOTIFIER_SCHEMA "notify"
#define NOTIFIER_ROLE   "kasir_notifier"

/* Bounds. */
#define NOTIFY_SCHEDULE_MAX    16 /* retry delays */
#define NOTIFY_REMINDERS_MAX   8  /* reminder offsets per kind */
#define NOTIFY_WORKERS_MAX     64
#define NOTIFY_TEMPLATE_MAX    8192  /* one template's text */
#define NOTIFY_RENDERED_MAX    16384 /* one rendered text */
#define NOTIFY_VALUE_MAX       512   /* one placeholder value */
#define NOTIFY_ERROR_MAX       512   /* error text kept per attempt */
#define NOTIFY_PROVIDER_ID_MAX 256
#define WA_PARAMS_MAX          10  /* body parameters of one template */
#define WA_URL_MAX             512 /* BASE/VERSION/ID/messages, NUL included */

/* ---- kinds and channels ------------------------------------------------ */

enum notify_kind {
	KIND_INSTRUCTIONS = 0, /* order.created: how to pay, link, deadline */
	KIND_REMINDER,         /* pending order, at configured offsets */
	KIND_RECEIPT,          /* order.paid: receipt + access details */
	KIND_EXPIRY,           /* order.expired */
	KIND_REFUND,           /* order.refunded */
	KIND_COUNT
};

enum notify_channel_id { CHANNEL_EMAIL = 0, CHANNEL_WHATSAPP, CHANNEL_COUNT };

/* "instructions", ... ; NULL for out of range. */
const char *notify_kind_name(enum notify_kind k);
/* -EINVAL when unknown. */
int notify_kind_parse(const char *s, enum notify_kind *ret);
const char *notify_channel_name(enum notify_channel_id c);
int notify_channel_parse(const char *s, enum notify_channel_id *ret);

/* ---- configuration ----------------------------------------------------- */

/* A list of durations ("30s,2m,10m"), parsed from a YAML string. */
struct duration_list {
	int64_t ms[NOTIFY_SCHEDULE_MAX];
	size_t n;
	bool set; /* present in the file (an empty list is meaningful) */
};

struct notify_template {
	char *subject; /* email subject (UTF-8, one line) */
	char *email;   /* email body (UTF-8 text) */
};

/* The placeholders a text or a WhatsApp template parameter may use. */
enum template_var {
	TV_CUSTOMER_NAME = 0,
	TV_COURSE_TITLE,
	TV_AMOUNT,
	TV_ORDER_ID,
	TV_REDIRECT_URL,
	TV_EXPIRES_AT,
	TV_VALID_UNTIL,
	TV_COUNT
};

/*
 * A WhatsApp message template as registered with Meta: kasir starts
 * every conversation, so it may only send approved templates (free text
 * is refused outside the 24-hour customer-service window, error 131047).
 * params[i] fills the body's {{i+1}}.  Registered texts: docs/whatsapp.md
 * and deploy/whatsapp/templates.json.
 */
struct wa_template {
	char *name;     /* "kasir_bukti_pembayaran": [a-z0-9_], 1..512 */
	char *language; /* "id" */
	struct wa_params {
		enum template_var var[WA_PARAMS_MAX];
		size_t n;
		bool set; /* present in the file */
	} params;
};

enum smtp_tls { SMTP_TLS_OFF = 0, SMTP_TLS_OPTIONAL, SMTP_TLS_REQUIRED };

struct notifier_conf {
	struct base_conf base; /* must be first */

	/* email */
	bool email_enabled;
	char *smtp_url;      /* smtp://host:port or smtps://host:port */
	char *smtp_starttls; /* "off" | "optional" | "required" */
	enum smtp_tls smtp_tls;
	char *smtp_username;              /* optional */
	struct conf_secret smtp_password; /* optional */
	char *mail_from;                  /* bare address: kasir@example.com */
	char *mail_from_name;             /* display name, UTF-8 */
	char *message_id_domain; /* right side of Message-ID, default "kasir" */
	int64_t smtp_timeout_ms;
	int64_t email_rate; /* messages per second */
	int64_t email_burst;

	/* whatsapp */
	bool whatsapp_enabled;
	char *wa_base;    /* https://graph.facebook.com */
	char *wa_version; /* v19.0 */
	char *wa_phone_number_id;
	struct conf_secret wa_token;
	int64_t wa_timeout_ms;
	int64_t whatsapp_rate;
	int64_t whatsapp_burst;

	/* jobs */
	int64_t workers;
	int64_t lease_ms;
	int64_t poll_ms;            /* idle worker poll */
	struct duration_list retry; /* delays between attempts */
	int64_t jitter_pct;         /* +/- percent applied to each delay */
	struct duration_list remind_after_created;
	struct duration_list remind_before_expiry;

	struct notify_template tpl[KIND_COUNT];
	struct wa_template wa_tpl[KIND_COUNT];
};

/* Its finish hook fills defaults that a table default cannot express
 * (lists, templates) and checks the rules between keys (conf.c). */
extern const struct conf_key notifier_conf_keys[];
/* Parses "30s, 2m,10m" into l.  -EINVAL / -ERANGE / KASIR_ETOOBIG. */
int duration_list_parse(const char *s, struct duration_list *l);

/* ---- templates (template.c) -------------------------------------------- */

/* The Indonesian default template of kind k. */
const struct notify_template *template_default(enum notify_kind k);
/* The default WhatsApp template of kind k (its name, "id", its params;
 * the strings are static). */
const struct wa_template *wa_template_default(enum notify_kind k);
/* "customer_name" -> TV_CUSTOMER_NAME; -EINVAL when unknown. */
int template_var_parse(const char *name, enum template_var *ret);
const char *template_var_name(enum template_var tv);
/* true when s is a valid template name: [a-z0-9_], 1..512 bytes. */
bool wa_template_name_valid(const char *s);

/* "Rp150.000", "-Rp1.250.000", "Rp0".  -ENOSPC when len is too small
 * (32 bytes always suffice). */
int rupiah_format(int64_t amount, char *buf, size_t len);
/* RFC 3339 time -> "23 November 2026 16:33 WIB" (Asia/Jakarta, UTC+7).
 * -EINVAL when rfc3339 does not parse. */
int time_format_wib(const char *rfc3339, char *buf, size_t len);

/* The values a template may use: {customer_name} {course_title} {amount}
 * {order_id} {redirect_url} {expires_at} {valid_until}.  Borrowed
 * strings; NULL renders as "-". */
struct template_vars {
	const char *customer_name;
	const char *course_title;
	const char *amount; /* already formatted */
	const char *order_id;
	const char *redirect_url;
	const char *expires_at;  /* already formatted */
	const char *valid_until; /* already formatted */
};

/* Checks that every {placeholder} in text is known and braces balance.
 * 0 or -EINVAL with why filled. */
int template_check(const char *text, char *why, size_t why_len);
/* Renders text.  On success *ret (caller frees) is the NUL-terminated
 * result.  -EINVAL unknown placeholder, KASIR_ETOOBIG result above
 * NOTIFY_RENDERED_MAX. */
int template_render(const char *text, const struct template_vars *v,
                    char **ret);
/* The value of tv in v ("-" when NULL), made fit for a WhatsApp template
 * parameter: control characters become spaces, runs of spaces one
 * space, no leading/trailing space (the Cloud API refuses newlines, tabs
 * and more than four consecutive spaces), "-" when empty; truncated to
 * len - 1 bytes on a UTF-8 boundary. */
void template_param(const struct template_vars *v, enum template_var tv,
                    char *out, size_t len);

/* ---- MIME (mime.c) ----------------------------------------------------- */

/* RFC 2047 encoding of a header value: one or more "=?UTF-8?B?...?="
 * encoded words of at most 75 characters, separated by CRLF SP.  Input
 * must be valid UTF-8 (words never split a character).  On success *ret
 * is malloc'd.  -EINVAL on invalid UTF-8. */
int mime_encode_header(const char *utf8, char **ret);
/* Quoted-printable body (RFC 2045): CRLF line ends, lines <= 76 chars,
 * '=', non-ASCII, a leading '.' and trailing white space encoded.
 * On success *ret is malloc'd. */
int mime_qp_encode(const char *text, char **ret);
/* true when addr is a plausible bare address: 3..254 bytes, one '@',
 * printable ASCII without space, quotes, angle brackets, CR or LF. */
bool mime_address_valid(const char *addr);

struct mime_message {
	const char *from_addr;
	const char *from_name; /* may be NULL */
	const char *to_addr;
	const char *subject; /* UTF-8 */
	const char *body;    /* UTF-8 text */
	int64_t job_id;      /* Message-ID <job-ID@domain> */
	const char *msgid_domain;
	const char *order_id; /* X-Kasir-Order header; may be NULL */
	int64_t date_ms;      /* Date: header (real time ms) */
};
/* Builds the full RFC 5322 message (headers + QP body, CRLF).  On success
 * *ret (caller frees) and *ret_len are set.  -EINVAL on a bad address or
 * invalid UTF-8. */
int mime_build(const struct mime_message *m, char **ret, size_t *ret_len);

/* ---- retry schedule (conf.c) ------------------------------------------- */

/* Delay before attempt number attempts+1, after `attempts` failed
 * attempts (1-based), with +/- jitter_pct percent; r in [0,1) is the
 * random draw (tests pass fixed values).  -1 when the schedule is
 * exhausted (the job is dead). */
int64_t notify_retry_delay(const struct duration_list *schedule, int attempts,
                           int jitter_pct, double r);

/* Digits of a phone number for WhatsApp: "+62 812-3456" -> "628123456",
 * a leading 0 becomes 62 (Indonesia).  -EINVAL unless 8..15 digits. */
int phone_normalize(const char *in, char *out, size_t len);

/* ---- the running service ---------------------------------------------- */

#include <pthread.h>
#include <stdatomic.h>

#include "ratelimit.h"

struct daemon;
struct metrics;
struct metric;
struct kasir_db;
struct kasir_msg;
struct channel_ops;
struct stream_consumer;

struct notifier_metrics {
	struct metric
	    *jobs[7][CHANNEL_COUNT];   /* kasir_notifier_jobs{state,channel} */
	struct metric *oldest_queued;  /* seconds */
	struct metric *oldest_waiting; /* seconds since first chance to go */
	struct metric *oldest_failing; /* seconds since its first failure */
	struct metric *latency[CHANNEL_COUNT]; /* send latency histogram */
	struct metric *sent[CHANNEL_COUNT];
	struct metric *uncertain[CHANNEL_COUNT];
	struct metric *guard_blocked;
	struct metric *cancelled;
	struct metric *stream_lag;
	struct metric *paused;
};

struct notifier {
	struct notifier_conf *conf; /* borrowed */
	struct daemon *d;           /* borrowed */
	struct metrics *metrics;    /* borrowed (the daemon's) */
	struct notifier_metrics m;

	const struct channel_ops *ops[CHANNEL_COUNT];
	void *chan_state[CHANNEL_COUNT];
	bool chan_enabled[CHANNEL_COUNT];
	struct tbucket bucket[CHANNEL_COUNT];

	struct stream_consumer *consumer;
	pthread_t workers[NOTIFY_WORKERS_MAX];
	size_t nworkers;
	atomic_bool stopping;
	pthread_mutex_t wake_lock;
	pthread_cond_t wake; /* new jobs committed / requeued */

	struct kasir_db *scrape_db; /* metrics scrape connection */
	pthread_mutex_t scrape_lock;
	struct kasir_db *admin_db; /* admin socket's connection (one thread) */
};

/* The job state names in the order of notifier_metrics.jobs. */
extern const char *const notify_job_states[7];

/* jobs.c: the orders stream apply callback (arg = struct notifier). */
int jobs_apply(void *arg, struct kasir_db *db, const struct kasir_msg *msg);
/* The consumer's optimistic pass: the whole batch in three array
 * statements, one pipeline (any failure: the consumer applies the batch
 * again with jobs_apply). */
int jobs_apply_batch(void *arg, struct kasir_db *db,
                     const struct kasir_msg *const *msgs, size_t n);

/* worker.c */
int workers_start(struct notifier *n);
void workers_stop(struct notifier *n);
void workers_wake(struct notifier *n);

/* guard.c: decides at claim time, inside the claim transaction, whether
 * the job may still be sent given the notifier's record of the order
 * (status is NULL when there is no record).  true: send; false: cancel
 * with *ret_why set (static string) and *ret_guard true when this was the
 * receipt guard (counted separately). */
bool guard_allows(enum notify_kind kind, const char *status, bool revoked,
                  const char **ret_why, bool *ret_guard);

/* admin.c */
/* The admin command table and audit INSERT (admin_socket_conf). */
extern const struct db_stmt notifier_admin_audit_insert;
extern const struct admin_command notifier_admin_commands[];
/* metrics scrape callback (admin.c, shares the status queries) */
void notifier_scrape(void *arg);

#endif
