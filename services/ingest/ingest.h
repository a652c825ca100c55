/*
 * ingest.h - kasir-ingest internals shared by its files.
 *
 *   main.c        start-up, the public HTTP handler, shutdown
 *   conf.c        the YAML table (struct ingest_conf)
 *   notification.c  parse / validate / signature (pure; notification.h)
 *   status_consistency.c  the one table of which status_code goes with
 *                 which transaction_status (pure; notification.h)
 *   source.c      which address a request comes from (trusted proxies)
 *   store.c       the committers: bounded queues + group commit of
 *                 payment_event rows (the ingest stream's source), N
 *                 transactions in flight, one order always on one
 *                 committer
 *   quarantine.c  bounded, rate-limited keeping of refused bodies
 *   admin.c       admin socket commands (status, events.list, ...)
 */
#ifndef KASIR_INGEST_H
#define KASIR_INGEST_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin_socket.h"
#include "base_conf.h"
#include "config.h"
#include "db.h"
#include "notification.h"
#include "ratelimit.h"

struct metric;
struct metrics;
struct http_pending;
struct stream_producer;

/* ---- configuration (conf.c) ---- */

#define INGEST_SERVER_KEYS_MAX 8
#define INGEST_PROXIES_MAX     64
#define INGEST_DEFAULT_PATH    "/midtrans/notification"
#define INGEST_BODY_MAX        (64 * 1024)

/* midtrans.server_keys[]: one Midtrans server key (rotation: several). */
struct ingest_server_key {
	char *id; /* stored as signature_key_id; never the key */
	struct conf_secret secret; /* the server key itself */
};

/* One trusted proxy network (address + prefix length). */
struct ingest_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

struct ingest_proxies {
	struct ingest_cidr *items; /* malloc'd */
	size_t count;
};

struct ingest_conf {
	struct base_conf base; /* must be first */

	/* ingest: the public listener */
	char *listen;
	char *path;
	int64_t max_connections;
	int64_t per_ip_connections;
	int64_t timeout_ms;
	int64_t threads;
	int64_t body_max;
	struct ingest_proxies trusted_proxies;

	/* ingest.rate_limit: per source address token bucket */
	int64_t rate_per_s;
	int64_t rate_burst;
	int64_t rate_max_sources;

	/* ingest.commit: group commit */
	int64_t queue_max;       /* notifications waiting */
	int64_t queue_max_bytes; /* their bodies, summed */
	int64_t batch_max;
	int64_t batch_wait_ms;
	int64_t statement_timeout_ms;
	int64_t committers; /* transactions in flight at once */

	/* ingest.quarantine */
	int64_t quarantine_per_minute;
	int64_t quarantine_max_rows;

	/* midtrans */
	struct conf_list server_keys; /* of struct ingest_server_key */
};

extern const struct conf_key ingest_conf_keys[];

/* Parses one address or CIDR ("10.0.0.0/8", "::1").  0 or -EINVAL. */
int ingest_cidr_parse(const char *s, struct ingest_cidr *ret);

/* ---- source address (source.c) ---- */

/*
 * The address a request is attributed to (rate limit, source_addr): the
 * TCP peer, unless the peer is a trusted proxy, then the last entry of
 * X-Forwarded-For (or X-Real-IP) when it is a valid address.  out gets a
 * normalised textual address (IPv4-mapped IPv6 becomes IPv4).
 */
void ingest_source_addr(const struct ingest_proxies *trusted, const char *peer,
                        const char *xff, const char *xreal, char *out,
                        size_t out_len);
/* True when addr (text) is inside one of the networks. */
bool ingest_addr_trusted(const struct ingest_proxies *trusted,
                         const char *addr);

/* ---- metrics ---- */

enum ingest_outcome {
	OUT_2XX,
	OUT_400,
	OUT_403,
	OUT_404,
	OUT_405,
	OUT_413,
	OUT_415,
	OUT_429,
	OUT_5XX,
	OUT_COUNT
};

struct ingest_metrics {
	struct metric *requests[OUT_COUNT];
	struct metric *commit_seconds;
	struct metric *batch_size;
	struct metric *signature_failures;
	struct metric *status_mismatches;
	struct metric *quarantine_dropped;
	struct metric *quarantine_stored;
	struct metric *queue_depth;
	struct metric *last_notification;
	struct metric *stored;
	struct metric *commit_failures;
};

int ingest_metrics_register(struct metrics *m, struct ingest_metrics *ret);

/* ---- the committer (store.c) ---- */

/* One verified notification on its way to the database.  Everything
 * transient for one webhook lives here and is freed at one point
 * (ingest_item_free), after its request was completed. */
struct ingest_item {
	struct ingest_item *next;
	struct notification n; /* owned: the parsed object */
	const char *body;      /* borrowed from the deferred request:
	                          valid until pending is completed */
	size_t body_len;
	const char *key_id;           /* borrowed from conf */
	char source[64];              /* attributed source address */
	int64_t received_ms;          /* wall clock, when it arrived */
	struct http_pending *pending; /* completed exactly once */
};

void ingest_item_free(struct ingest_item *it);

struct ingest_store;

#define INGEST_COMMITTERS_MAX 32 /* each one a database connection */

struct ingest_store_conf {
	struct db_conf db;   /* each committer opens its own connection */
	unsigned committers; /* threads, 1..INGEST_COMMITTERS_MAX */
	unsigned batch_max;
	int64_t batch_wait_ms;
	unsigned queue_max;
	size_t queue_max_bytes;
};

/* Starts the committer threads.  producer and metrics are borrowed and
 * must outlive the store. */
int ingest_store_start(const struct ingest_store_conf *conf,
                       struct stream_producer *producer,
                       struct ingest_metrics *im, struct ingest_store **ret);
/*
 * Reserves room for one notification of body_len bytes, so that after the
 * request is deferred the submit cannot fail.  0, -EAGAIN (queue full:
 * answer 503 overloaded) or -ESHUTDOWN (draining).  Every successful
 * reserve is followed by exactly one submit or unreserve.
 */
int ingest_store_reserve(struct ingest_store *s, size_t body_len);
void ingest_store_unreserve(struct ingest_store *s, size_t body_len);
/* Queues it (after a reserve).  The store now owns it: it completes the
 * request (200 after COMMIT, 503 on failure) and frees it. */
void ingest_store_submit(struct ingest_store *s, struct ingest_item *it);
/* Refuses new reservations, commits (or fails) everything queued or
 * reserved, and stops the thread.  The store stays valid for
 * reserve (-ESHUTDOWN) until ingest_store_free().  NULL is fine. */
void ingest_store_drain(struct ingest_store *s);
void ingest_store_free(struct ingest_store *s);
size_t ingest_store_depth(struct ingest_store *s);

/* ---- quarantine (quarantine.c) ---- */

struct ingest_quarantine;

struct ingest_quarantine_conf {
	struct db_conf db; /* its own connection (own thread) */
	unsigned per_minute;
	int64_t max_rows;
};

int ingest_quarantine_start(const struct ingest_quarantine_conf *conf,
                            struct ingest_metrics *im,
                            struct ingest_quarantine **ret);
/*
 * Keeps a copy of body (refused for reason) when the per-minute budget and
 * the table's cap allow; otherwise counts a drop.  Never blocks on the
 * database.  order_id may be NULL.
 */
void ingest_quarantine_add(struct ingest_quarantine *q, const char *reason,
                           const char *order_id, const char *source,
                           int64_t received_ms, const char *body,
                           size_t body_len);
void ingest_quarantine_stop(struct ingest_quarantine *q);

/* ---- admin socket (admin.c) ---- */

struct ingest_admin_ctx {
	struct kasir_db *db; /* the admin worker's own connection */
	struct ingest_store *store;
	struct ingest_metrics *im;
	struct stream_producer *producer;
	int64_t started_ms;
};

struct admin_request;
struct cJSON;
/* The admin command table and audit INSERT (admin_socket_conf). */
extern const struct db_stmt ingest_admin_audit_insert;
extern const struct admin_command ingest_admin_commands[];

/* evidence.order {order_id}: the notifications of one order with their raw
 * bodies (evidence_admin.c).  Same contract as an admin_handler_fn. */
int ingest_admin_evidence(struct ingest_admin_ctx *c, const struct cJSON *args,
                          struct cJSON **ret, char *code, size_t code_len,
                          char *msg, size_t msg_len);

/* bytea text form ("\x" + hex) of body; caller frees.  NULL on ENOMEM. */
char *ingest_bytea_hex(const char *body, size_t len);

#endif
