/*
 * store.c - the committer: group commit of verified notifications.
 *
 * HTTP handlers verify a notification, defer their request and submit it
 * here.  N committer threads (ingest.commit.committers), each with its own
 * database connection and its own FIFO queue, commit at the same time: an
 * insert takes no shared lock (the stream's seqs are given after COMMIT:
 * docs/backbone.md), so N transactions are in flight and their WAL
 * flushes overlap.  A notification goes to the
 * committer chosen by a hash of its order_id, so two notifications of one
 * order are stored (and get their stream seqs) in arrival order: one
 * committer commits its queue in order, one transaction after the other.
 * A committer takes up to batch_max queued notifications (waiting at most
 * batch_wait for more when fewer are queued), and in ONE transaction
 * inserts them into ingest.payment_event: one statement for the batch,
 * which also gives their ids, and the COMMIT.  That row is the only copy
 * written: it is the ingest stream's payment.notification message too
 * (the producer's source, migrations 0004_stream_source and
 * 0005_stream_tick: the sequencer numbers the rows whose transaction
 * committed, the publisher and replay render them).  Only after
 * COMMIT are the requests answered 200; if anything fails every request of the
 * batch gets 503 (Midtrans resends; a duplicate is harmless: duplicates are
 * evidence and are stored anyway). A statement error (not a connection error)
 * in a batch of several is retried one notification per transaction, so one
 * poisonous body cannot keep failing its neighbours.
 *
 * The queues are bounded together in count and in body bytes; a handler
 * reserves its place before it defers its request, and when they are full
 * it answers 503 overloaded at once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "util.h"

struct ingest_store;

/* One committer: its thread, connection and queue. */
struct ingest_committer {
	struct ingest_store *s;
	unsigned index;
	struct kasir_db *db; /* its thread only */

	/* under s->lock */
	pthread_cond_t cond;      /* its queue changed, or stopping */
	struct ingest_item *head; /* FIFO */
	struct ingest_item **tail;
	size_t count;
	bool thread_started;
	pthread_t thread;

	/* its thread only */
	struct ingest_item **batch; /* batch_max slots */
	int64_t *ids;               /* event id of batch[i] */
	char (*received)[40];       /* received_at text of batch[i] */
	bool db_was_down;           /* for logging once per state change */
};

struct ingest_store {
	struct ingest_store_conf conf;
	struct stream_producer *producer;
	struct ingest_metrics *im;

	pthread_mutex_t lock;
	size_t count;    /* queued, all committers */
	size_t bytes;    /* bodies queued or reserved */
	size_t reserved; /* reserved, not yet submitted */
	bool stopping;

	struct ingest_committer *c; /* conf.committers */
};

/* A batch's rows are one statement: one multi-row insert of arrays (one
 * executor run, not one per notification) that also gives the batch its
 * event ids.  "ids" takes n ids from the sequence and numbers them
 * ascending (pos); row pos of the arrays gets the id numbered pos, and the
 * statement returns the ids ordered by pos: item i's id is row i of the
 * result by construction, never by the order of RETURNING rows.  A
 * notification sent after another one's 200 gets the higher id, whichever
 * committer or process stores it. */
#define EVENT_COLUMNS 14
static const struct db_stmt stmt_insert_events = {
    .name = "ingest_event_insert_many",
    .sql = "WITH ids AS (SELECT id, row_number() OVER (ORDER BY id) AS pos"
           "  FROM (SELECT nextval('ingest.payment_event_id_seq') AS id"
           "   FROM generate_series(1, cardinality($1::timestamptz[]))) s),"
           " ins AS (INSERT INTO ingest.payment_event (id, received_at, "
           "source_addr, order_id, transaction_status, status_code, "
           "gross_amount, fraud_status, payment_type, transaction_id, "
           "currency, signature_key_id, raw, transaction_time,"
           " settlement_time)"
           "  SELECT ids.id, u.received_at, u.source_addr, u.order_id,"
           "   u.transaction_status, u.status_code, u.gross_amount,"
           "   u.fraud_status, u.payment_type, u.transaction_id, u.currency,"
           "   u.signature_key_id, u.raw, u.transaction_time,"
           "   u.settlement_time"
           "  FROM unnest($1::timestamptz[], $2::inet[], $3::text[],"
           "   $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
           "   $9::text[], $10::text[], $11::text[], $12::bytea[],"
           "   $13::text[], $14::text[])"
           "   WITH ORDINALITY AS u(received_at, source_addr, order_id,"
           "   transaction_status, status_code, gross_amount, fraud_status,"
           "   payment_type, transaction_id, currency, signature_key_id, raw,"
           "   transaction_time, settlement_time, pos)"
           "  JOIN ids USING (pos))"
           " SELECT id FROM ids ORDER BY pos",
    .nparams = EVENT_COLUMNS,
};

char *
ingest_bytea_hex(const char *body, size_t len)
{
	char *out = malloc(2 * len + 3);

	if (out == NULL)
		return NULL;
	out[0] = '\\';
	out[1] = 'x';
	hex_encode((const uint8_t *)body, len, out + 2);
	return out;
}

void
ingest_item_free(struct ingest_item *it)
{
	if (it == NULL)
		return;
	notification_fini(&it->n);
	free(it);
}

/* Answers one request and frees its item: the single end of its life.
 * The 200 body is written directly ({"status":"ok","event_id":N}: no
 * string to escape), not built as a JSON tree. */
static void
item_finish(struct ingest_store *s, struct ingest_item *it, int64_t event_id)
{
	struct http_response resp = {0};

	if (event_id > 0) {
		char body[64];

		snprintf(body, sizeof(body),
		         "{\"status\":\"ok\",\"event_id\":%lld}",
		         (long long)event_id);
		if (http_text(&resp, 200, "application/json", body) == 0) {
			metric_inc(s->im->requests[OUT_2XX]);
		} else {
			/* Stored, but no memory to say so: Midtrans resends
			 * and the duplicate is stored again.  Never 200
			 * without a body we could build. */
			http_error(&resp, 503, "internal_error",
			           "out of memory");
			metric_inc(s->im->requests[OUT_5XX]);
		}
	} else {
		http_error(&resp, 503, "database_unavailable",
		           "the notification could not be stored; retry");
		metric_inc(s->im->requests[OUT_5XX]);
	}
	http_pending_complete(it->pending, &resp);
	ingest_item_free(it);
}

/* Adds one item's row to the column arrays col[0..EVENT_COLUMNS). */
static int
add_row(struct db_array *col, const struct ingest_item *it, char *received,
        size_t received_len)
{
	const struct notification *n = &it->n;
	char *hex;

	time_rfc3339(it->received_ms, received, received_len);
	hex = ingest_bytea_hex(it->body, it->body_len);
	if (hex == NULL)
		return -ENOMEM;
	db_array_add(&col[0], received);
	db_array_add(&col[1], it->source);
	db_array_add(&col[2], n->order_id);
	db_array_add(&col[3], n->transaction_status);
	db_array_add(&col[4], n->status_code);
	db_array_add(&col[5], n->gross_amount);
	db_array_add(&col[6], n->fraud_status);
	db_array_add(&col[7], n->payment_type);
	db_array_add(&col[8], n->transaction_id);
	db_array_add(&col[9], n->currency);
	db_array_add(&col[10], it->key_id);
	db_array_add(&col[11], hex);
	db_array_add(&col[12], n->transaction_time);
	db_array_add(&col[13], n->settlement_time);
	free(hex);
	return 0;
}

/* Stores items[0..n) in one transaction sent as one pipeline, one round
 * trip whatever the batch's size: BEGIN, the insert of every row into
 * payment_event (one statement, which also gives the ids: ids[i] is the
 * id of items[i]), COMMIT.  0 committed (ids[] filled), otherwise
 * db_tx_once()'s error (KASIR_EDBUNKNOWN: the connection was lost after
 * the COMMIT was sent); the transaction is ended either way.  The stream
 * message is the row itself: the caller's kick after COMMIT makes the
 * sequencer take it. */
static int
write_batch(struct ingest_committer *c, struct ingest_item **items, size_t n,
            int64_t *ids)
{
	const struct db_stmt *const st[] = {&stmt_insert_events};
	struct db_array col[EVENT_COLUMNS] = {{0}};
	const char *params[EVENT_COLUMNS];
	const char *const *pp[] = {params};
	PGresult *res = NULL;
	int r;

	if ((r = db_ensure(c->db)) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++)
		r = add_row(col, items[i], c->received[i],
		            sizeof(c->received[i]));
	for (size_t k = 0; k < EVENT_COLUMNS && r == 0; k++)
		if ((params[k] = db_array_text(&col[k])) == NULL)
			r = -ENOMEM;
	if (r == 0)
		r = db_tx_once(c->db, 1, st, pp, &res);
	/* committed: a result that is not the batch's ids is a bug in the
	 * statement, and the rows are stored; still never 200 without an
	 * id (503: Midtrans resends, the duplicate is stored too), and not
	 * KASIR_ESQL, which would store each row again one by one */
	if (r == 0 && (size_t)PQntuples(res) != n)
		r = -EPROTO;
	for (size_t i = 0; i < n && r == 0; i++)
		if ((ids[i] = db_get_i64(res, (int)i, 0)) <= 0)
			r = -EPROTO;
	PQclear(res);
	for (size_t k = 0; k < EVENT_COLUMNS; k++)
		db_array_free(&col[k]);
	return r;
}

static void
log_db_state(struct ingest_committer *c, int r, size_t n)
{
	if (r == 0) {
		if (c->db_was_down)
			log_notice("database is back, notifications are "
			           "stored again");
		c->db_was_down = false;
		return;
	}
	if (r == KASIR_ESQL) {
		log_err("storing %zu notification(s) failed: %s (%s)", n,
		        db_last_error(c->db), db_last_sqlstate(c->db));
		return;
	}
	log_debug("storing %zu notification(s) failed: %s (%s)", n,
	          kasir_strerror(r), db_last_error(c->db));
	if (!c->db_was_down)
		log_err("storing %zu notification(s) failed: %s; answering "
		        "503 until the database is back",
		        n, kasir_strerror(r));
	c->db_was_down = true;
}

static void
commit_batch(struct ingest_committer *c, struct ingest_item **items, size_t n)
{
	int64_t t0 = now_mono_ms();
	int r;

	r = write_batch(c, items, n, c->ids);
	log_db_state(c, r, n);
	if (r == 0) {
		double secs = (double)(now_mono_ms() - t0) / 1000.0;

		stream_producer_kick(c->s->producer);
		metric_observe(c->s->im->commit_seconds, secs);
		metric_observe(c->s->im->batch_size, (double)n);
		metric_add(c->s->im->stored, n);
		metric_set(c->s->im->last_notification,
		           (double)now_real_ms() / 1000.0);
		for (size_t i = 0; i < n; i++) {
			char id[24];

			snprintf(id, sizeof(id), "%lld", (long long)c->ids[i]);
			log_fields(LOG_INFO,
			           LOG_F({"ORDER_ID", items[i]->n.order_id},
			                 {"EVENT_ID", id},
			                 {"TRANSACTION_STATUS",
			                  items[i]->n.transaction_status}),
			           "notification stored: %s %s",
			           items[i]->n.transaction_status,
			           items[i]->n.status_code);
			item_finish(c->s, items[i], c->ids[i]);
		}
		return;
	}
	metric_inc(c->s->im->commit_failures);
	if (r == KASIR_ESQL && n > 1) {
		/* A statement failed: isolate the item that causes it. */
		for (size_t i = 0; i < n; i++)
			commit_batch(c, &items[i], 1);
		return;
	}
	for (size_t i = 0; i < n; i++)
		item_finish(c->s, items[i], 0);
}

static const struct db_stmt stmt_last_event = {
    .name = "ingest_last_event",
    .sql = "SELECT extract(epoch FROM received_at)::float8"
           " FROM ingest.payment_event ORDER BY id DESC LIMIT 1",
    .nparams = 0,
};

/* The last-notification gauge as of the table, once after start: a
 * restart must not make it look as if nothing ever arrived.  Best effort
 * (the database may be down: the next stored batch sets it anyway). */
static void
load_last_notification(struct ingest_committer *c)
{
	PGresult *res = NULL;

	if (db_ensure(c->db) < 0 ||
	    db_exec(c->db, &stmt_last_event, NULL, &res) < 0)
		return;
	if (PQntuples(res) == 1 && db_get(res, 0, 0) != NULL &&
	    metric_value(c->s->im->last_notification) == 0)
		metric_set(c->s->im->last_notification,
		           strtod(db_get(res, 0, 0), NULL));
	PQclear(res);
}

static void
timespec_after_ms(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *
committer_main(void *arg)
{
	struct ingest_committer *c = arg;
	struct ingest_store *s = c->s;

	if (c->index == 0)
		load_last_notification(c);
	pthread_mutex_lock(&s->lock);
	for (;;) {
		size_t n = 0;

		while (c->count == 0 && !(s->stopping && s->reserved == 0))
			pthread_cond_wait(&c->cond, &s->lock);
		if (c->count == 0)
			break; /* stopping, nothing queued or reserved */
		if (c->count < s->conf.batch_max && s->conf.batch_wait_ms > 0 &&
		    !s->stopping) {
			struct timespec until;

			timespec_after_ms(&until, s->conf.batch_wait_ms);
			while (c->count < s->conf.batch_max && !s->stopping &&
			       pthread_cond_timedwait(&c->cond, &s->lock,
			                              &until) != ETIMEDOUT)
				;
		}
		while (c->head != NULL && n < s->conf.batch_max) {
			struct ingest_item *it = c->head;

			c->head = it->next;
			if (c->head == NULL)
				c->tail = &c->head;
			it->next = NULL;
			c->count--;
			s->count--;
			s->bytes -= it->body_len;
			c->batch[n++] = it;
		}
		metric_set(s->im->queue_depth, (double)s->count);
		pthread_mutex_unlock(&s->lock);
		commit_batch(c, c->batch, n);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Wakes every committer (stopping, or a reservation ended). */
static void
wake_all(struct ingest_store *s)
{
	for (unsigned i = 0; i < s->conf.committers; i++)
		pthread_cond_broadcast(&s->c[i].cond);
}

static void
committer_fini(struct ingest_committer *c)
{
	db_close(c->db);
	pthread_cond_destroy(&c->cond);
	free(c->ids);
	free(c->received);
	free(c->batch);
}

static int
committer_init(struct ingest_store *s, unsigned index)
{
	struct ingest_committer *c = &s->c[index];
	const struct ingest_store_conf *conf = &s->conf;
	char loop[32];
	int r;

	c->s = s;
	c->index = index;
	c->tail = &c->head;
	if ((r = cond_init_monotonic(&c->cond)) < 0)
		return r;
	c->batch = calloc(conf->batch_max, sizeof(*c->batch));
	c->ids = calloc(conf->batch_max, sizeof(*c->ids));
	c->received = calloc(conf->batch_max, sizeof(*c->received));
	if (c->batch == NULL || c->ids == NULL || c->received == NULL)
		return -ENOMEM;
	if ((r = db_open(&conf->db, &c->db)) < 0)
		return r;
	/* each committer runs when notifications arrive */
	snprintf(loop, sizeof(loop), "ingest.committer.%u", index);
	db_set_loop(c->db, loop, false, 0);
	return 0;
}

/* The committer of an order: all of one order's notifications go through
 * one queue, in arrival order (FNV-1a of the order id). */
static struct ingest_committer *
committer_of(struct ingest_store *s, const char *order_id)
{
	uint32_t h = 2166136261u;

	for (const char *p = order_id; p != NULL && *p != '\0'; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return &s->c[h % s->conf.committers];
}

int
ingest_store_start(const struct ingest_store_conf *conf,
                   struct stream_producer *producer, struct ingest_metrics *im,
                   struct ingest_store **ret)
{
	struct ingest_store *s;
	unsigned inited = 0, started = 0;
	int r = 0;

	if (conf->batch_max == 0 || conf->queue_max == 0 ||
	    conf->committers == 0 || conf->committers > INGEST_COMMITTERS_MAX)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->conf = *conf;
	s->producer = producer;
	s->im = im;
	s->c = calloc(conf->committers, sizeof(*s->c));
	if (s->c == NULL) {
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	for (; inited < conf->committers && r == 0; inited++)
		r = committer_init(s, inited);
	for (; started < conf->committers && r == 0; started++) {
		struct ingest_committer *c = &s->c[started];

		r = -pthread_create(&c->thread, NULL, committer_main, c);
		if (r == 0)
			c->thread_started = true;
	}
	if (r < 0) {
		ingest_store_free(s); /* joins what started, frees the rest */
		return r;
	}
	*ret = s;
	return 0;
}

int
ingest_store_reserve(struct ingest_store *s, size_t body_len)
{
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (s->stopping)
		r = -ESHUTDOWN;
	else if (s->count + s->reserved >= s->conf.queue_max ||
	         s->bytes + body_len > s->conf.queue_max_bytes)
		r = -EAGAIN;
	else {
		s->reserved++;
		s->bytes += body_len;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

void
ingest_store_unreserve(struct ingest_store *s, size_t body_len)
{
	pthread_mutex_lock(&s->lock);
	s->reserved--;
	s->bytes -= body_len;
	if (s->stopping)
		wake_all(s); /* a draining committer may wait on it */
	pthread_mutex_unlock(&s->lock);
}

void
ingest_store_submit(struct ingest_store *s, struct ingest_item *it)
{
	struct ingest_committer *c = committer_of(s, it->n.order_id);

	pthread_mutex_lock(&s->lock);
	s->reserved--;
	it->next = NULL;
	*c->tail = it;
	c->tail = &it->next;
	c->count++;
	s->count++;
	metric_set(s->im->queue_depth, (double)s->count);
	/* Wake the committer only when it waits for this: for a first item
	 * (its queue was empty) or for a full batch (it waits up to
	 * batch_wait for one).  A signal per item would switch to it and
	 * back for every notification it then goes on waiting after. */
	if (c->count == 1 || c->count == s->conf.batch_max)
		pthread_cond_signal(&c->cond);
	if (s->stopping && s->reserved == 0)
		wake_all(s); /* the others may wait for this last one */
	pthread_mutex_unlock(&s->lock);
}

size_t
ingest_store_depth(struct ingest_store *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->count;
	pthread_mutex_unlock(&s->lock);
	return n;
}

void
ingest_store_drain(struct ingest_store *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	wake_all(s);
	pthread_mutex_unlock(&s->lock);
	/* Each thread commits (or fails) its queue before it exits. */
	for (unsigned i = 0; i < s->conf.committers; i++) {
		struct ingest_committer *c = &s->c[i];

		if (c->thread_started) {
			pthread_join(c->thread, NULL);
			c->thread_started = false;
		}
	}
}

void
ingest_store_free(struct ingest_store *s)
{
	if (s == NULL)
		return;
	ingest_store_drain(s);
	for (unsigned i = 0; i < s->conf.committers; i++)
		if (s->c[i].s != NULL)
			committer_fini(&s->c[i]);
	pthread_mutex_destroy(&s->lock);
	free(s->c);
	free(s);
}
