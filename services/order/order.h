/*
 * order.h - kasir-order internals shared by its files.
 *
 *   conf.c      the YAML table (struct order_conf)
 *   catalog.c   the course catalog from the config
 *   store.c     the writes on schema "orders" and the order events
 *   store_view.c  read-only views of an order (API, admin)
 *   state.c     the payment state machine (pure; state.h)
 *   evidence.c  the evidence path: ingest/recon stream messages decided
 *               into effects (evidence.h)
 *   confirm.c   notifications held until the Status API confirms them
 *   snap.c      Midtrans Snap client (libcurl)
 *   api.c       the HTTP API for the website
 *   admin.c     the admin socket commands (kasirctl)
 *   main.c      start-up, wiring, shutdown
 */
#ifndef KASIR_ORDER_H
#define KASIR_ORDER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin_socket.h"
#include "base_conf.h"
#include "config.h"
#include "db.h"
#include "state.h"

struct cJSON;
struct kasir_msg;
struct metric;
struct metrics;
struct stream_producer;

#define ORDER_ID_MAX       50
#define ORDER_NAME_MAX     100
#define ORDER_EMAIL_MAX    254
#define ORDER_TXN_ID_MAX   128 /* Midtrans sends a UUID (36) */
#define ORDER_PHONE_MIN    8
#define ORDER_PHONE_MAX    16
#define ORDER_IDEM_KEY_MAX 255
#define COURSE_ID_MAX      64
#define COURSE_TITLE_MAX   200
#define CATALOG_MAX        500
#define ORDER_EXPORT_MAX   100000 /* rows per export.orders call */
#define ORDER_LIST_MAX     1000   /* rows per listing */
#define SNAP_RETRIES_MAX   5

/* One course of the catalog (config "courses:" list). */
struct course {
	char *id; /* [A-Za-z0-9._-], <= COURSE_ID_MAX */
	char *title;
	int64_t price;       /* IDR, > 0 */
	char *access_text;   /* "lifetime" or "<N>d" */
	int64_t access_days; /* 0 = lifetime (derived from access_text) */
	bool drill;          /* kasirctl drill's course: its orders are
	                        marked drill and left out of export.orders */
};

struct order_conf {
	struct base_conf base;
	char *http_listen;
	int64_t http_threads;
	int64_t http_max_connections;
	int64_t http_per_ip;
	int64_t http_timeout_ms;
	int64_t http_body_max;
	struct conf_secret api_token;
	int64_t order_expiry_ms;
	/* false (default): a notification never moves an order by itself,
	 * the Status API's answer does (confirm.c); true: a consistent,
	 * signed notification is evidence on its own (warned at start) */
	bool signature_only;
	char *snap_url; /* ".../snap/v1" */
	char *core_url; /* Status API base */
	struct conf_secret server_key;
	int64_t snap_connect_timeout_ms;
	int64_t snap_timeout_ms;
	int64_t snap_retries;
	struct conf_list courses; /* of struct course */
};

extern const struct conf_key order_conf_keys[];

/* catalog.c: lookups over conf->courses (no copies). */
const struct course *catalog_find(const struct order_conf *c, const char *id);
/* {"courses":[{id,title,price,currency,access}]}; NULL on ENOMEM. */
struct cJSON *catalog_json(const struct order_conf *c);

/* Counters shared by the service (all may be NULL: no-ops). */
struct order_metrics {
	struct metric *created;
	struct metric *transitions[ORDER_STATUS_COUNT];
	struct metric *evidence[5]; /* by enum evidence_result */
	struct metric *unknown;
	struct metric *flags;
	struct metric *poison;
	struct metric *snap_latency;
	struct metric *snap_errors;
	struct metric *snap_ok;
	struct metric *confirm[3]; /* held, agreed, contradicted */
};
void order_metrics_init(struct order_metrics *om, struct metrics *m);

/* A small pool of database connections for the HTTP threads. */
struct db_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct kasir_db *dbs[16];
	bool busy[16];
	unsigned n;
};
int db_pool_init(struct db_pool *p, const struct db_conf *conf, unsigned n);
void db_pool_fini(struct db_pool *p);
struct kasir_db *db_pool_get(struct db_pool *p);
void db_pool_put(struct db_pool *p, struct kasir_db *db);

/* The service: everything the handlers need. */
struct order_service {
	const struct order_conf *conf;
	struct stream_producer *producer; /* "orders" */
	struct order_metrics m;
	struct db_pool pool;       /* API threads */
	struct kasir_db *admin_db; /* admin socket worker */
};

/* ---- store.c ---- */

/* Row of orders.orders as text (from the database). */
struct order_row {
	char order_id[ORDER_ID_MAX + 1];
	enum order_status status;
	int64_t amount;
	bool past_expiry;
	/* the evidence was taken (checked_at) before the order was paid */
	bool checked_before_paid;
	int64_t access_days; /* 0 = lifetime */
	char customer_email[ORDER_EMAIL_MAX + 1];
	char course_id[COURSE_ID_MAX + 1];
	bool flagged, partial_refund, disputed, reversed;
	bool has_transaction_id;
	/* Midtrans transaction id; a longer one is truncated here and then
	 * never equals the evidence's (state.c compares whole strings). */
	char transaction_id[ORDER_TXN_ID_MAX + 1];
	/* the Midtrans state a held notification claimed (midtrans_state_key),
	 * "" when no confirmation is awaited (confirm.c) */
	char awaiting[24];
	/* Snap answered 406 for this order: its id was used at Midtrans
	 * before kasir's call, kasir got no Snap token, so no payment of
	 * this order's customer can exist under it (orders.needs_reconcile) */
	bool id_taken;
};

/* The columns of struct order_row, in store_row_from()'s order, of the
 * orders table (alias t) with past_expiry and checked_before_paid judged
 * at timestamptz expression at (NULL: now, and never before paid). */
#define STORE_ROW_COLS(t, at)                                                  \
	t ".order_id, " t ".status, " t ".amount, coalesce(" at ", now())"     \
	  " >= " t ".expires_at, coalesce(" t ".access_days, 0), " t           \
	  ".customer_email, " t ".course_id, " t ".flagged, " t                \
	  ".partial_refund, " t ".disputed, " t ".reversed, " t                \
	  ".transaction_id, coalesce(" at " < " t ".paid_at, false), " t       \
	  ".awaiting_status, " t ".needs_reconcile"
/* Fills *ret from the STORE_ROW_COLS starting at column col of row. */
int store_row_from(const PGresult *res, int row, int col,
                   struct order_row *ret);
/* Locks the order (SELECT ... FOR UPDATE) inside the open transaction.
 * checked_at may be NULL (past_expiry then from now()). KASIR_ENOTFOUND
 * when unknown. */
int store_lock_order(struct kasir_db *db, const char *order_id,
                     const char *checked_at, struct order_row *ret);
/* The ORDER_SNAPSHOT object of messages.def for order_id (as of this
 * transaction).  On success *ret (caller deletes). */
int store_order_snapshot(struct kasir_db *db, const char *order_id,
                         struct cJSON **ret);
/* What one piece of evidence changes on the locked order row. */
struct order_update {
	const char *order_id;
	const char *status; /* new status, or NULL: unchanged */
	bool learn_txn;     /* record transaction_id / payment_type */
	const char *transaction_id, *payment_type; /* may be NULL */
	bool txn_from_transition; /* this transaction decided the order */
	unsigned flags;           /* enum order_flag bits to set */
	const char *flag_reason;  /* with OFLAG_FLAGGED */
	const char *awaiting;     /* hold: the claimed state; NULL: keep */
	bool awaiting_clear;      /* the confirmation is answered */
	bool contradicted;        /* ... and Midtrans contradicted it */
	/* with status PAID: when the payment was proven (the Status API
	 * answer's checked_at); NULL: now() */
	const char *paid_at;
};
/* Grants access for the locked PAID order o (entitlement_events and the
 * current entitlement) and appends access.granted to p / revokes it and
 * appends access.revoked; by an operator (source "operator", audit_id).
 * KASIR_ECONFLICT when o is not PAID. */
int store_grant(struct stream_producer *p, struct kasir_db *db,
                const struct order_row *o, const char *source,
                const char *audit_id, const char *reason);
int store_revoke(struct stream_producer *p, struct kasir_db *db,
                 const struct order_row *o, const char *source,
                 const char *reason);
/* Appends order event type to p: the ORDER_SNAPSHOT of order_id (snap,
 * borrowed; NULL: read it now) with the fields of extra on top (each
 * taken over; extra is consumed whatever the result). */
int store_emit(struct stream_producer *p, struct kasir_db *db, int type,
               const char *order_id, const struct cJSON *snap,
               struct cJSON *extra);

/* ---- store_view.c ---- */
/* Everything known about an order: order, transitions, evidence,
 * entitlements history and current, audit.  full=false: the API view
 * (no raw bodies, no audit). */
int store_order_view(struct kasir_db *db, const char *order_id, bool full,
                     struct cJSON **ret);
/* Generic: runs stmt and returns the rows as an array of objects
 * (db_json.h: column name -> typed value or null); the statement bounds
 * itself with LIMIT. */
int store_rows_json(struct kasir_db *db, const struct db_stmt *stmt,
                    const char *const *params, struct cJSON **ret);
/* Begins the read-only transaction in which whole-table facts (doctor,
 * the consistency gauges) are read; end it with db_rollback().  Its joins
 * are hash or merge joins whatever the statistics say (see store_view.c). */
int store_facts_begin(struct kasir_db *db);
/* An entitlement (the table as "e") that gives access now: what
 * GET /v1/access answers and what blocks an operator's grant. */
#define ENTITLEMENT_ACTIVE                                                     \
	"(e.revoked_at IS NULL AND (e.valid_until IS NULL"                     \
	" OR e.valid_until > now()))"
/* The SOP's P1 "paid but access inactive", for the orders table as "o":
 * PAID with no active entitlement, unless the one it has ran the whole
 * term the course sold (access_days: its end is not a fault).  An end
 * moved earlier behind kasir's back counts (an outside check,
 * 2026-12-08: a lifetime course's valid_until set in the past went
 * unnoticed).  Read inside store_facts_begin(). */
#define ORDER_PAID_WITHOUT_ACCESS                                              \
	"o.status = 'PAID' AND NOT EXISTS (SELECT 1 FROM orders.entitlements " \
	"e WHERE e.order_id = o.order_id AND (" ENTITLEMENT_ACTIVE             \
	" OR (e.revoked_at IS NULL AND e.valid_until >= e.granted_at"          \
	"     + o.access_days * interval '1 day')))"
/* Active entitlement for (email, course): NULL data when none. */
int store_access(struct kasir_db *db, const char *email, const char *course_id,
                 struct cJSON **ret);

/* ---- snap.c ---- */
enum snap_outcome {
	SNAP_OK = 0,      /* token + redirect_url */
	SNAP_USED,        /* 406: order_id already known at Midtrans */
	SNAP_REJECTED,    /* 4xx: permanent (bad key, bad request) */
	SNAP_UNAVAILABLE, /* 5xx / timeouts after the bounded retries */
};
struct snap_request {
	const char *order_id;
	int64_t amount;
	const char *course_id, *course_title;
	const char *name, *email, *phone;
	int64_t expiry_minutes;
};
struct snap_result {
	enum snap_outcome outcome;
	char token[256];
	char redirect_url[1024];
	char error[256]; /* for operators; never contains the key */
	int http_status;
	int attempts;
};
int snap_global_init(void);
/* Creates the Snap transaction; retries 5xx/timeouts with the same
 * order_id (bounded).  Always fills *ret; returns 0. */
int snap_create(const struct order_conf *c, const struct snap_request *rq,
                struct snap_result *ret);
/* The longest snap_create() can take: every attempt's timeout and every
 * backoff between them.  An order's Snap lease (api.c) outlasts it. */
int64_t snap_call_bound_ms(const struct order_conf *c);

/* ---- api.c / admin.c ---- */
struct http_request;
struct http_response;
int api_handle(void *arg, const struct http_request *req,
               struct http_response *resp);
/* The admin command table and audit INSERT (admin_socket_conf). */
extern const struct db_stmt order_admin_audit_insert;
extern const struct admin_command order_admin_commands[];

#endif
