/*
 * reconciler.h - kasir-reconciler's internal interfaces.
 *
 * The reconciler closes every pending order against the Midtrans Status
 * API and keeps every answer as evidence:
 *
 *   watchlist.c  apply callback of the "orders" stream consumer: the watch
 *                list (recon.watch), transaction ids, the time of the last
 *                webhook notification, final orders leave the schedule.
 *   schedule.c   pure: when an order is checked next (first check,
 *                backoff, the check right after expiry, retries).
 *   statusapi.c  the Status API client (libcurl multi, rolling: each
 *                check comes back as soon as it is finished; bounded
 *                concurrency, requests-per-second cap, timeouts, retries)
 *                and the interpretation of an answer (pure).
 *   evidence.c   the scheduler lanes: each claims due rows with a lease,
 *                keeps requests in flight, stores every answer in
 *                recon.status_check as it arrives and appends what says
 *                something new to the "recon" stream in the same
 *                transaction.
 *   mode.c       normal / reconciliation mode: operator and automatic.
 *   admin.c      operator commands on the admin socket, scrape metrics.
 *   refund.c     refund.order: Midtrans's Refund API with a refund key
 *                stored (recon.refund) before the call.
 *   evidence_admin.c  evidence.order: one order's answers and refunds, raw.
 *   conf.c       the configuration table.
 */
#ifndef KASIR_RECONCILER_H
#define KASIR_RECONCILER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin_socket.h"
#include "base_conf.h"
#include "body_buf.h"
#include "config.h"
#include "ratelimit.h"

#define RECON_NAME   "kasir-reconciler"
#define RECON_SCHEMA "recon"
#define RECON_ROLE   "kasir_reconciler"

/* Bounds. */
#define RECON_BACKOFF_MAX     16    /* entries of schedule.backoff */
#define RECON_TXN_TYPES_MAX   16    /* payment types queried by txn id */
#define RECON_CONCURRENCY_MAX 64    /* Status API requests in flight */
#define RECON_BATCH_MAX       500   /* orders held by the pipeline */
#define RECON_LANES_MAX       8     /* scheduler lanes (schedule.lanes) */
#define RECON_TRIES_MAX       6     /* attempts per check (1 + retries) */
#define RECON_BODY_MAX        65536 /* bytes of an answer kept */
#define RECON_ID_MAX          64    /* order_id <= 50, transaction ids */
#define RECON_FIELD_MAX       64    /* one field of an answer */
#define RECON_ERROR_MAX       256   /* transport error text kept */

/* ---- configuration (conf.c) ------------------------------------------- */

/* "10m,30m,1h,3h" parsed. */
struct recon_durations {
	int64_t ms[RECON_BACKOFF_MAX];
	size_t n;
};

/* Payment types whose status is asked by transaction id (DANA, BSI). */
struct recon_types {
	char name[RECON_TXN_TYPES_MAX][32];
	size_t n;
};

struct recon_conf {
	struct base_conf base; /* must be first */

	/* Status API */
	char *core_url;                /* https://api.midtrans.com */
	struct conf_secret server_key; /* never logged */
	int64_t connect_timeout_ms;
	int64_t timeout_ms;       /* whole request */
	int64_t retries;          /* extra attempts on 5xx/timeouts */
	int64_t retry_backoff_ms; /* base of the in-request backoff */
	int64_t concurrency;      /* requests in flight */
	int64_t rps;              /* global requests-per-second cap */
	char *by_txn_types_text;  /* "dana,bsi" */
	struct recon_types by_txn_types;

	/* schedule */
	int64_t first_check_ms;
	struct recon_durations backoff;
	int64_t expiry_grace_ms;
	int64_t retry_ms;      /* after a failed check: base delay */
	int64_t retry_max_ms;  /* ... capped here */
	int64_t lease_ms;      /* a claimed row comes back after this */
	int64_t poll_ms;       /* scheduler idle poll */
	int64_t batch;         /* window: orders held at once (all lanes) */
	int64_t lanes;         /* scheduler threads, each its own connection */
	int64_t auth_pause_ms; /* checks paused after a 401 */

	/* modes */
	bool auto_mode;             /* enter/leave automatically */
	int64_t mode_interval_ms;   /* every pending order, in reconcile mode */
	int64_t auto_silence_ms;    /* no notification for this long */
	int64_t activity_window_ms; /* orders created this recently count */
};

/* Its finish hook checks the rules between keys (conf.c). */
extern const struct conf_key recon_conf_keys[];
/* "10m, 30m,1h" -> d.  -EINVAL / -ERANGE / KASIR_ETOOBIG. */
int recon_durations_parse(const char *s, struct recon_durations *d);
/* "dana, bsi" -> t (lower-case names).  -EINVAL / KASIR_ETOOBIG. */
int recon_types_parse(const char *s, struct recon_types *t);
bool recon_types_has(const struct recon_types *t, const char *name);

/* ---- schedule (schedule.c, pure) ------------------------------------- */

struct sched_conf {
	int64_t first_check_ms;
	const struct recon_durations *backoff;
	int64_t expiry_grace_ms;
	int64_t retry_ms;
	int64_t retry_max_ms;
};

/* What the schedule knows about one watched order.  Times are real-time
 * milliseconds. */
struct sched_order {
	int64_t created_ms;
	int64_t expires_ms;
	int attempts;        /* checks answered so far (not errors) */
	int failures;        /* consecutive failed checks */
	bool expiry_checked; /* answered by a check made at/after expiry */
};

/* When an order just created (attempts 0) is checked first:
 * created + first_check, or right after expiry + grace if that is
 * earlier. */
int64_t sched_first_check(const struct sched_conf *c,
                          const struct sched_order *o);
/* After an answered check at now_ms (o->attempts already counts it):
 * now + backoff[attempts-1] (the last entry repeats), but never later than
 * expiry + grace while the expiry has not been checked. */
int64_t sched_after_answer(const struct sched_conf *c,
                           const struct sched_order *o, int64_t now_ms);
/* After a failed check (5xx, timeout, unusable answer) at now_ms
 * (o->failures already counts it): now + retry * 2^(failures-1), capped at
 * retry_max, and never later than expiry + grace while the expiry has
 * not been checked (unless that moment is past: then now + retry). */
int64_t sched_after_failure(const struct sched_conf *c,
                            const struct sched_order *o, int64_t now_ms);
/* True when a check made at checked_ms answers the expiry question. */
bool sched_is_expiry_check(const struct sched_order *o, int64_t checked_ms);
/* After an answered check that does not show a refund accepted at
 * since_ms yet (an order followed after kasirctl refund, evidence.c): now
 * + the time since the refund was accepted (so the checks come at about
 * 1x, 2x, 4x... the first delay), at least retry and at most the backoff
 * list's last step. */
int64_t sched_after_refund_answer(const struct sched_conf *c, int64_t since_ms,
                                  int64_t now_ms);
/* How long an accepted refund is followed: after a week without an answer
 * that shows it, the reconciler stops asking and logs an error. */
#define RECON_REFUND_FOLLOW_MS (7 * 24 * 3600 * INT64_C(1000))

/* ---- Status API answers (statusapi.c) -------------------------------- */

enum recon_verdict {
	VERDICT_STATUS =
	    0,             /* 200 + body status_code 2xx + transaction_status */
	VERDICT_NOT_FOUND, /* 404 "Transaction doesn't exist.": not started */
	VERDICT_EXPIRED,   /* 407 */
	VERDICT_AUTH,      /* 401: wrong server key */
	VERDICT_HTTP_5XX,  /* 5xx (HTTP or body): transient */
	VERDICT_TIMEOUT,   /* no answer in time / connection failed */
	VERDICT_UNEXPECTED, /* anything else: kept, never acted on */
	VERDICT_COUNT
};
/* "status", "not_found", "expired", "auth", "http_5xx", "timeout",
 * "unexpected". */
const char *recon_verdict_name(enum recon_verdict v);
/* An answer worth acting on (status, not_found, expired). */
bool recon_verdict_is_answer(enum recon_verdict v);
/* Retried within the same check (5xx, timeouts). */
bool recon_verdict_is_transient(enum recon_verdict v);

/* The fields of one answer, copied out of the body.  Empty string when
 * the body had no such string field. */
struct status_fields {
	char transaction_status[RECON_FIELD_MAX];
	char status_code[16];
	char status_message[128];
	char gross_amount[RECON_FIELD_MAX];
	char currency[16];
	char payment_type[RECON_FIELD_MAX];
	char fraud_status[RECON_FIELD_MAX];
	char transaction_id[RECON_ID_MAX];
	char order_id[RECON_ID_MAX];
	char settlement_time[32];            /* a deny with it: a reversal */
	char transaction_time[32];           /* WIB, "YYYY-MM-DD HH:MM:SS" */
	char refund_amount[RECON_FIELD_MAX]; /* a refund's amount, "50000.00" */
};

/*
 * Interprets one Status API answer exactly as midtrans/README.md says,
 * checking BOTH the HTTP status and the body's status_code:
 *   HTTP 200 + status_code 200/201/202 + transaction_status  -> status
 *     (the body must name the order asked about: order_id when asked by
 *     order id, transaction_id when asked by transaction id)
 *   HTTP 200|404 + status_code 404                            -> not_found
 *   HTTP 200|407 + status_code 407                            -> expired
 *   HTTP 401, or status_code 401                              -> auth
 *   HTTP 5xx, or HTTP 200 + status_code 5xx                   -> http_5xx
 *   http_status 0 (transport failure / timeout)               -> timeout
 *   anything else (a 404 without a Midtrans body...)          -> unexpected
 * body need not be NUL-terminated.  order_id / txn_id: what was asked
 * (txn_id NULL when asked by order id).  Always succeeds; *ret_fields is
 * fully written (may be NULL).
 */
enum recon_verdict statusapi_interpret(long http_status, const char *body,
                                       size_t body_len, const char *order_id,
                                       const char *txn_id,
                                       struct status_fields *ret_fields);

/*
 * True when the answer's transaction was made before the order existed at
 * kasir (transaction_time earlier than created_ms by more than
 * STATUSAPI_CLOCK_SLACK_MS): a transaction kasir's Snap call cannot have
 * started, so someone else's payment under an order id used before (an
 * outside attack, 2026-12-07: another system's settled payment paid a
 * later kasir order given the same id).  Such an answer is not evidence
 * for the order.  False when either time is unknown.
 */
#define STATUSAPI_CLOCK_SLACK_MS 2000
bool statusapi_predates(const struct status_fields *f, int64_t created_ms);

/* ---- the Status API client (statusapi.c) ------------------------------ */

struct metrics;
struct metric;

/* One attempt of a check. */
struct statusapi_answer {
	long http_status; /* 0: no HTTP answer */
	enum recon_verdict verdict;
	struct status_fields f;
	/* the first RECON_BODY_MAX bytes (body.data may be NULL);
	 * body.overflow: Midtrans sent more */
	struct body_buf body;
	char error[RECON_ERROR_MAX]; /* transport error text; "" if none */
	int64_t latency_ms;
	int64_t at_ms; /* real time the answer arrived */
};

/* One check: the caller fills order_id/ident/by_txn; the client fills
 * answers (owned by the call until statusapi_call_reset). */
struct statusapi_call {
	char order_id[RECON_ID_MAX];
	int64_t created_ms;       /* the order's creation at kasir; 0: not known
	                           * (set by the claim; statusapi_call_reset()
	                           * keeps it, like the ids) */
	char ident[RECON_ID_MAX]; /* what goes in the URL */
	bool by_txn;              /* ident is a transaction id */
	/* orders stream seq of the confirm.request this check answers
	 * (evidence.c); 0: a scheduled check */
	int64_t confirm_seq;
	struct statusapi_answer answers[RECON_TRIES_MAX];
	int nanswers;
	bool skipped; /* never sent (auth failure in the batch, stopping) */

	/* internal */
	int64_t next_ms;
	void *easy;
	struct statusapi_answer *cur;
	int64_t started_ms;
};
void statusapi_call_reset(struct statusapi_call *c);

struct statusapi;
struct statusapi_metrics {
	struct metric *latency;  /* histogram, seconds */
	struct metric *errors;   /* transport errors, 5xx, unexpected */
	struct metric *requests; /* requests sent */
};

/* conf and m are borrowed and must outlive the client.  The client of one
 * of `share` scheduler lanes gets its share of conf->concurrency and
 * conf->rps (at least 1 each). */
int statusapi_new(const struct recon_conf *conf,
                  const struct statusapi_metrics *m, int share,
                  struct statusapi **ret);
void statusapi_free(struct statusapi *a);
/* "Authorization: Basic base64(server_key:)", the header of every call to
 * Midtrans's Core API (Status, Refund); the caller wipes and frees it.
 * NULL when out of memory. */
char *recon_auth_header(const struct recon_conf *conf);
/*
 * The rolling client (one owner thread; statusapi_wakeup from any).
 *
 * statusapi_add: lends c to the client (reset first) until a step gives
 * it back.  0, or KASIR_ETOOBIG when RECON_BATCH_MAX calls are held.
 *
 * statusapi_step: starts what may start (at most conf->concurrency in
 * flight, conf->rps per second, a transient answer retried up to
 * conf->retries times with backoff), waits at most wait_ms when nothing
 * is finished (less when a retry or token is due; statusapi_wakeup ends
 * the wait), and gives back in done[] every call finished by now: its
 * final answer, retries exhausted, or skipped (halted before it was
 * sent).  done must hold statusapi_held() pointers.  Returns 0.
 *
 * After a 401 the client is halted: no new request starts and the calls
 * not in flight come back skipped; statusapi_halt does the same on
 * purpose (stopping), statusapi_resume ends it.
 */
int statusapi_add(struct statusapi *a, struct statusapi_call *c);
int statusapi_step(struct statusapi *a, int64_t wait_ms,
                   struct statusapi_call **done, size_t *ret_n);
size_t statusapi_held(const struct statusapi *a);
size_t statusapi_running(const struct statusapi *a);
void statusapi_halt(struct statusapi *a);
void statusapi_resume(struct statusapi *a);
void statusapi_wakeup(struct statusapi *a);

/* ---- the running service ---------------------------------------------- */

struct daemon;
struct kasir_db;
struct kasir_msg;
struct stream_producer;
struct stream_consumer;
struct cJSON;

enum recon_mode { MODE_NORMAL = 0, MODE_RECONCILE = 1 };
const char *recon_mode_name(enum recon_mode m);

struct recon_metrics {
	struct metric
	    *checks[VERDICT_COUNT]; /* kasir_reconciler_checks_total */
	struct metric *pending[5];  /* by age bucket */
	struct metric *oldest_pending;
	struct metric *past_expiry_unchecked;
	struct metric *mode;
	struct metric *mode_changes;
	struct metric *auth_failures;
	struct metric *auth_broken;
	struct metric *published;
	struct metric *stream_lag;
	struct statusapi_metrics api;
};

/* Age buckets of pending orders (label values). */
extern const char *const recon_age_buckets[5];

struct recon {
	struct recon_conf *conf; /* borrowed */
	struct daemon *d;        /* borrowed */
	struct recon_metrics m;
	struct sched_conf sched;

	struct stream_producer *producer;
	struct stream_consumer *consumer;
	struct statusapi *api;

	/* the scheduler lanes (evidence.c): schedule.lanes threads */
	struct recon_lane {
		struct recon *r;
		int index;
		pthread_t thread;
		bool started;
		bool woken;               /* under wake_lock */
		struct kasir_db *db;      /* the lane's own connection */
		struct statusapi *api;    /* the lane's own client */
		size_t window;            /* its share of schedule.batch */
		atomic_size_t free_slots; /* window slots not lent: which
		                             lane a confirmation wakes */
	} lanes[RECON_LANES_MAX];
	int nlanes;
	atomic_bool stopping;
	pthread_mutex_t wake_lock;
	pthread_cond_t wake;

	/* shared state, read by admin/metrics, written by the scheduler */
	atomic_int mode; /* enum recon_mode */
	atomic_bool auth_broken;
	atomic_llong auth_paused_until; /* real ms; 0: not paused */
	atomic_llong last_check_ms;     /* real ms of the last answer */
	atomic_uint confirm_waiting;    /* confirm.requests applied: wake
	                                   lanes for them after COMMIT */

	struct kasir_db *admin_db;  /* admin socket thread */
	struct kasir_db *scrape_db; /* metrics scrape */
	pthread_mutex_t scrape_lock;
};

/* watchlist.c: the orders stream apply callback (arg = struct recon). */
int watchlist_apply(void *arg, struct kasir_db *db,
                    const struct kasir_msg *msg);
/* The consumer's optimistic pass: the batch's statements pipelined (any
 * failure: the consumer applies the batch again with watchlist_apply). */
int watchlist_apply_batch(void *arg, struct kasir_db *db,
                          const struct kasir_msg *const *msgs, size_t n);
/* The consumer's after-COMMIT hook: wakes the scheduler when a
 * confirmation was requested. */
void watchlist_committed(void *arg);

/* evidence.c: the scheduler lanes (r->lanes, r->nlanes set up). */
int scheduler_start(struct recon *r);
void scheduler_stop(struct recon *r);
void scheduler_wake(struct recon *r);
/* Wakes the lanes with the most free slots, enough of them for n new
 * confirmations (one, mostly): the others need not claim for nothing. */
void scheduler_wake_for(struct recon *r, unsigned n);

/* mode.c */
/* Loads the persisted mode into r->mode (start-up).  0 or a db error. */
int mode_load(struct recon *r, struct kasir_db *db);
/* Automatic enter/leave, called by the scheduler before each pass. */
void mode_evaluate(struct recon *r, struct kasir_db *db);
/* Operator change inside the caller's open transaction: writes
 * recon.settings; *ret_before gets the previous mode.  The caller audits,
 * commits, then calls mode_committed(). */
int mode_set_locked(struct recon *r, struct kasir_db *db, enum recon_mode m,
                    const char *by, enum recon_mode *ret_before);
void mode_committed(struct recon *r, enum recon_mode before,
                    enum recon_mode after, const char *by, const char *why);

/* admin.c */
/* The admin command table and audit INSERT (admin_socket_conf). */
extern const struct db_stmt recon_admin_audit_insert;
extern const struct admin_command recon_admin_commands[];
/* The audit row (recon.audit) of an admin request, in the open transaction
 * or alone (the role and the reason are checked by the admin socket
 * against the command table). */
int recon_admin_audit(struct kasir_db *db, const struct admin_request *req,
                      const struct cJSON *before, const struct cJSON *after,
                      const char *result, const char *error);
/* evidence_admin.c: evidence.order {order_id}: Status API answers with raw
 * bodies and refunds of one order; NULL on a database error. */
struct cJSON *recon_admin_evidence(struct kasir_db *db, const char *order_id);
/* refund.c: refund.order {order_id, amount?} (engineer, audited), and the
 * refunds of one order as JSON (NULL on a database error). */
int recon_admin_refund(void *arg, const struct admin_request *req,
                       struct cJSON **ret, char *code, size_t code_len,
                       char *msg, size_t msg_len);
struct cJSON *recon_refunds_json(struct kasir_db *db, const char *order_id);
void recon_scrape(void *arg);

#endif
