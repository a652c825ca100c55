/*
 * quarantine.c - keeps refused notification bodies for forensics.
 *
 * A body refused for a bad signature is evidence of someone probing the
 * endpoint (or of a key rotation gone wrong), and a signed body whose
 * status_code does not go with its status is evidence of a genuine body
 * replayed with its status rewritten (status_consistency.c), so each is
 * kept in ingest.quarantine with its source address, reason and time.  An
 * attacker controls how many of those arrive, so keeping them is bounded
 * three ways: a per-minute budget (token bucket), a small in-memory queue,
 * and a cap on the table's rows.  The table is append-only evidence:
 * nothing is pruned; above the cap new rows are dropped and counted
 * (kasir_ingest_quarantine_dropped_total).  The HTTP answer (403 or 400)
 * never waits for any of this: one thread with its own connection writes.
 * While the database is down (or restarting: the first command on a
 * connection PostgreSQL dropped fails) the writer keeps the body it holds
 * and tries again with backoff, 100 ms doubling to 5 s; what arrives
 * meanwhile waits in the queue, and only what does not fit is dropped.
 * (Dropping at the first failure lost the first body refused after every
 * PostgreSQL restart: an outside operator check, 2026-12-08.)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define QUARANTINE_QUEUE_MAX      32
#define QUARANTINE_RETRY_FIRST_MS 100
#define QUARANTINE_RETRY_MAX_MS   5000

struct q_item {
	struct q_item *next;
	char reason[32];
	char order_id[NOTIF_ORDER_ID_MAX + 1]; /* "" when unknown */
	char source[64];
	int64_t received_ms;
	size_t body_len;
	char body[]; /* copy of the refused body */
};

struct ingest_quarantine {
	struct ingest_quarantine_conf conf;
	struct ingest_metrics *im;
	struct kasir_db *db; /* writer thread only */
	struct tbucket budget;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct q_item *head;
	struct q_item **tail;
	size_t count;
	bool stopping;
	pthread_t thread;
	bool db_was_down;
};

static const struct db_stmt stmt_insert_quarantine = {
    .name = "ingest_quarantine_insert",
    .sql = "INSERT INTO ingest.quarantine (received_at, source_addr, "
           "reason, order_id, raw) SELECT $1::timestamptz, $2::inet, "
           "$3::text, $4::text, $5::bytea WHERE (SELECT count(*) FROM "
           "ingest.quarantine) < $6::bigint RETURNING id",
    .nparams = 6,
};

static void
drop(struct ingest_quarantine *q)
{
	metric_inc(q->im->quarantine_dropped);
}

/* Writes one row; returns 0 stored, 1 dropped (cap), or an error. */
static int
write_one(struct ingest_quarantine *q, const struct q_item *it)
{
	char received[40], cap[24];
	const char *params[6];
	PGresult *res = NULL;
	char *hex;
	int r;

	if ((r = db_ensure(q->db)) < 0)
		return r;
	time_rfc3339(it->received_ms, received, sizeof(received));
	snprintf(cap, sizeof(cap), "%lld", (long long)q->conf.max_rows);
	hex = ingest_bytea_hex(it->body, it->body_len);
	if (hex == NULL)
		return -ENOMEM;
	params[0] = received;
	params[1] = it->source;
	params[2] = it->reason;
	params[3] = it->order_id[0] != '\0' ? it->order_id : NULL;
	params[4] = hex;
	params[5] = cap;
	r = db_exec(q->db, &stmt_insert_quarantine, params, &res);
	free(hex);
	if (r < 0)
		return r;
	r = PQntuples(res) == 1 ? 0 : 1;
	PQclear(res);
	return r;
}

/* Writes it, trying again while the database fails, until stored, over
 * the cap, or the service stops (then it is dropped). */
static void
write_kept(struct ingest_quarantine *q, const struct q_item *it)
{
	int64_t wait_ms = QUARANTINE_RETRY_FIRST_MS;
	int r;

	for (;;) {
		r = write_one(q, it);
		if (r >= 0)
			break;
		if (!q->db_was_down)
			log_warning(
			    "quarantine: keeping a refused body failed: "
			    "%s; trying again",
			    r == KASIR_ESQL ? db_last_error(q->db)
			                    : kasir_strerror(r));
		q->db_was_down = true;
		pthread_mutex_lock(&q->lock);
		if (!q->stopping) {
			struct timespec ts;

			deadline_after_ms(CLOCK_MONOTONIC, wait_ms, &ts);
			pthread_cond_timedwait(&q->cond, &q->lock, &ts);
		}
		bool stopping = q->stopping;
		pthread_mutex_unlock(&q->lock);
		if (stopping) {
			log_warning("quarantine: stopping with the database "
			            "down: a refused body dropped");
			drop(q);
			return;
		}
		wait_ms = wait_ms * 2 > QUARANTINE_RETRY_MAX_MS
		              ? QUARANTINE_RETRY_MAX_MS
		              : wait_ms * 2;
	}
	if (r == 1) {
		drop(q);
		return;
	}
	metric_inc(q->im->quarantine_stored);
	if (q->db_was_down)
		log_notice("quarantine: database is back");
	q->db_was_down = false;
}

static void *
quarantine_main(void *arg)
{
	struct ingest_quarantine *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct q_item *it;

		while (q->head == NULL && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->head == NULL)
			break;
		it = q->head;
		q->head = it->next;
		if (q->head == NULL)
			q->tail = &q->head;
		q->count--;
		pthread_mutex_unlock(&q->lock);
		write_kept(q, it);
		free(it);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int
ingest_quarantine_start(const struct ingest_quarantine_conf *conf,
                        struct ingest_metrics *im,
                        struct ingest_quarantine **ret)
{
	struct ingest_quarantine *q;
	int r;

	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->conf = *conf;
	q->im = im;
	q->tail = &q->head;
	tbucket_init(&q->budget, (double)conf->per_minute / 60.0,
	             (double)conf->per_minute);
	if ((r = db_open(&conf->db, &q->db)) < 0) {
		free(q);
		return r;
	}
	db_set_loop(q->db, "ingest.quarantine", false, 0);
	pthread_mutex_init(&q->lock, NULL);
	if ((r = cond_init_monotonic(&q->cond)) < 0) {
		pthread_mutex_destroy(&q->lock);
		db_close(q->db);
		free(q);
		return r;
	}
	if ((r = pthread_create(&q->thread, NULL, quarantine_main, q)) != 0) {
		pthread_cond_destroy(&q->cond);
		pthread_mutex_destroy(&q->lock);
		db_close(q->db);
		free(q);
		return -r;
	}
	*ret = q;
	return 0;
}

void
ingest_quarantine_add(struct ingest_quarantine *q, const char *reason,
                      const char *order_id, const char *source,
                      int64_t received_ms, const char *body, size_t body_len)
{
	struct q_item *it;

	if (q == NULL)
		return;
	if (q->conf.per_minute == 0 || q->conf.max_rows == 0 ||
	    !tbucket_take(&q->budget, NULL)) {
		drop(q);
		return;
	}
	it = malloc(sizeof(*it) + body_len);
	if (it == NULL) {
		drop(q);
		return;
	}
	memset(it, 0, sizeof(*it));
	kasir_strlcpy(it->reason, reason, sizeof(it->reason));
	if (order_id != NULL)
		kasir_strlcpy(it->order_id, order_id, sizeof(it->order_id));
	kasir_strlcpy(it->source, source, sizeof(it->source));
	it->received_ms = received_ms;
	it->body_len = body_len;
	memcpy(it->body, body, body_len);

	pthread_mutex_lock(&q->lock);
	if (q->stopping || q->count >= QUARANTINE_QUEUE_MAX) {
		pthread_mutex_unlock(&q->lock);
		free(it);
		drop(q);
		return;
	}
	*q->tail = it;
	q->tail = &it->next;
	q->count++;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void
ingest_quarantine_stop(struct ingest_quarantine *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thread, NULL); /* writes what is queued first */
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	db_close(q->db);
	free(q);
}
