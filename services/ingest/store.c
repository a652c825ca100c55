/*
 * store.c - the committer: group commit of verified notifications.
 *
 * HTTP handlers verify a notification, defer their request and submit it
 * here.  One committer thread with its own database connection takes up to
 * batch_max queued notifications (waiting at most batch_wait for more when
 * fewer are queued), and in ONE transaction inserts each into
 * ingest.payment_event and appends its payment.notification message to the
 * ingest stream.  Only after COMMIT are the requests answered 200; if
 * anything fails every request of the batch gets 503 (Midtrans resends;
 * a duplicate is harmless: duplicates are evidence and are stored anyway).
 * A statement error (not a connection error) in a batch of several is
 * retried one notification per transaction, so one poisonous body cannot
 * keep failing its neighbours.
 *
 * The queue is bounded in count and in body bytes; a handler reserves its
 * place before it defers its request, and when the queue is full it
 * answers 503 overloaded at once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "util.h"

struct ingest_store {
	struct ingest_store_conf conf;
	struct kasir_db *db; /* committer thread only */
	struct stream_producer *producer;
	struct ingest_metrics *im;

	pthread_mutex_t lock;
	pthread_cond_t cond;      /* queue changed or stopping */
	struct ingest_item *head; /* FIFO */
	struct ingest_item **tail;
	size_t count;
	size_t bytes;    /* bodies queued or reserved */
	size_t reserved; /* reserved, not yet submitted */
	bool stopping;
	bool thread_started;
	pthread_t thread;

	/* committer thread only */
	struct ingest_item **batch; /* batch_max slots */
	int64_t *ids;               /* event id of batch[i] */
	char (*received)[40];       /* received_at text of batch[i] */
	bool db_was_down;           /* for logging once per state change */
};

static const struct db_stmt stmt_insert_event = {
    .name = "ingest_event_insert",
    .sql = "INSERT INTO ingest.payment_event (received_at, source_addr, "
           "order_id, transaction_status, status_code, gross_amount, "
           "fraud_status, payment_type, transaction_id, currency, "
           "signature_key_id, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, "
           "$8, $9, $10, $11, $12) RETURNING id",
    .nparams = 12,
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

/* Answers one request and frees its item: the single end of its life. */
static void
item_finish(struct ingest_store *s, struct ingest_item *it, int64_t event_id)
{
	struct http_response resp = {0};

	if (event_id > 0) {
		cJSON *o = cJSON_CreateObject();

		if (o != NULL && cJSON_AddStringToObject(o, "status", "ok") &&
		    cJSON_AddNumberToObject(o, "event_id", (double)event_id) &&
		    http_json(&resp, 200, o) == 0) {
			metric_inc(s->im->requests[OUT_2XX]);
		} else {
			/* Stored, but no memory to say so: Midtrans resends
			 * and the duplicate is stored again.  Never 200
			 * without a body we could build. */
			free(resp.body);
			memset(&resp, 0, sizeof(resp));
			http_error(&resp, 503, "internal_error",
			           "out of memory");
			metric_inc(s->im->requests[OUT_5XX]);
		}
		cJSON_Delete(o);
	} else {
		http_error(&resp, 503, "database_unavailable",
		           "the notification could not be stored; retry");
		metric_inc(s->im->requests[OUT_5XX]);
	}
	http_pending_complete(it->pending, &resp);
	ingest_item_free(it);
}

/* The stream message of a stored item: the parsed fields plus the whole
 * object as received ("raw", a reference: data never owns it). */
static int
append_message(struct ingest_store *s, struct ingest_item *it, int64_t id,
               const char *received)
{
	const struct notification *n = &it->n;
	cJSON *data;
	int r = -ENOMEM;

	data = cJSON_CreateObject();
	if (data == NULL ||
	    !cJSON_AddNumberToObject(data, "event_id", (double)id) ||
	    !cJSON_AddStringToObject(data, "order_id", n->order_id) ||
	    !cJSON_AddStringToObject(data, "transaction_status",
	                             n->transaction_status) ||
	    !cJSON_AddStringToObject(data, "status_code", n->status_code) ||
	    !cJSON_AddStringToObject(data, "gross_amount", n->gross_amount) ||
	    !cJSON_AddStringToObject(data, "received_at", received))
		goto out;
	{
		const struct {
			const char *name, *value;
		} opt[] = {
		    {"currency", n->currency},
		    {"payment_type", n->payment_type},
		    {"fraud_status", n->fraud_status},
		    {"transaction_id", n->transaction_id},
		    {"transaction_time", n->transaction_time},
		    {"settlement_time", n->settlement_time},
		};
		for (size_t i = 0; i < ARRAY_SIZE(opt); i++)
			if (opt[i].value != NULL &&
			    !cJSON_AddStringToObject(data, opt[i].name,
			                             opt[i].value))
				goto out;
	}
	if (!cJSON_AddItemReferenceToObject(data, "raw", n->obj))
		goto out;
	r = stream_append(s->producer, s->db, MSG_PAYMENT_NOTIFICATION, data,
	                  NULL);
out:
	cJSON_Delete(data);
	return r;
}

/* Sends the payment_event insert of one item into the pipeline. */
static int
send_insert(struct ingest_store *s, struct ingest_item *it, char *received,
            size_t received_len)
{
	const struct notification *n = &it->n;
	const char *params[12];
	char *hex;
	int r;

	time_rfc3339(it->received_ms, received, received_len);
	hex = ingest_bytea_hex(it->body, it->body_len);
	if (hex == NULL)
		return -ENOMEM;
	params[0] = received;
	params[1] = it->source;
	params[2] = n->order_id;
	params[3] = n->transaction_status;
	params[4] = n->status_code;
	params[5] = n->gross_amount;
	params[6] = n->fraud_status;
	params[7] = n->payment_type;
	params[8] = n->transaction_id;
	params[9] = n->currency;
	params[10] = it->key_id;
	params[11] = hex;
	r = db_pipe_send(s->db, &stmt_insert_event, params); /* copies */
	free(hex);
	return r;
}

/* Inserts items[0..n) into payment_event with their statements pipelined
 * (one round trip for the batch); ids[] gets their ids. */
static int
insert_events(struct ingest_store *s, struct ingest_item **items, size_t n,
              int64_t *ids, char (*received)[40])
{
	static const struct db_stmt *const stmts[] = {&stmt_insert_event};
	int r;

	if ((r = db_pipe_begin(s->db, stmts, 1)) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++)
		r = send_insert(s, items[i], received[i], sizeof(received[i]));
	if (r == 0)
		r = db_pipe_sync(s->db);
	for (size_t i = 0; i < n && r == 0; i++) {
		PGresult *res = NULL;
		if ((r = db_pipe_result(s->db, &res)) < 0)
			break;
		if (PQntuples(res) == 1)
			ids[i] = db_get_i64(res, 0, 0);
		else
			r = KASIR_ESQL;
		PQclear(res);
	}
	db_pipe_end(s->db);
	return r;
}

/* Writes items[0..n) in one transaction: the payment_event rows with one
 * pipeline, the stream messages deferred and written with two statements
 * (stream.h), so a batch costs the same few round trips whatever its
 * size.  0 committed (ids[] filled), otherwise the error; the
 * transaction is ended either way (db.h: a transaction lost with its
 * connection must be ended by the caller before the handle reconnects,
 * and that includes a BEGIN that failed). */
static int
write_batch(struct ingest_store *s, struct ingest_item **items, size_t n,
            int64_t *ids)
{
	int r;

	if ((r = db_ensure(s->db)) < 0)
		return r;
	if ((r = db_begin(s->db)) < 0)
		goto fail;
	if ((r = insert_events(s, items, n, ids, s->received)) < 0)
		goto fail;
	if ((r = stream_defer_begin(s->producer, s->db)) < 0)
		goto fail;
	for (size_t i = 0; i < n && r == 0; i++)
		r = append_message(s, items[i], ids[i], s->received[i]);
	if (r == 0)
		r = stream_defer_flush(s->producer, s->db);
	stream_defer_end(s->producer, s->db);
	if (r < 0)
		goto fail;
	return db_commit(s->db);
fail:
	db_rollback(s->db);
	return r;
}

static void
log_db_state(struct ingest_store *s, int r, size_t n)
{
	if (r == 0) {
		if (s->db_was_down)
			log_notice("database is back, notifications are "
			           "stored again");
		s->db_was_down = false;
		return;
	}
	if (r == KASIR_ESQL) {
		log_err("storing %zu notification(s) failed: %s (%s)", n,
		        db_last_error(s->db), db_last_sqlstate(s->db));
		return;
	}
	log_debug("storing %zu notification(s) failed: %s (%s)", n,
	          kasir_strerror(r), db_last_error(s->db));
	if (!s->db_was_down)
		log_err("storing %zu notification(s) failed: %s; answering "
		        "503 until the database is back",
		        n, kasir_strerror(r));
	s->db_was_down = true;
}

static void
commit_batch(struct ingest_store *s, struct ingest_item **items, size_t n)
{
	int64_t t0 = now_mono_ms();
	int r;

	r = write_batch(s, items, n, s->ids);
	log_db_state(s, r, n);
	if (r == 0) {
		double secs = (double)(now_mono_ms() - t0) / 1000.0;

		stream_producer_kick(s->producer);
		metric_observe(s->im->commit_seconds, secs);
		metric_observe(s->im->batch_size, (double)n);
		metric_add(s->im->stored, n);
		metric_set(s->im->last_notification,
		           (double)now_real_ms() / 1000.0);
		for (size_t i = 0; i < n; i++) {
			char id[24];

			snprintf(id, sizeof(id), "%lld", (long long)s->ids[i]);
			log_fields(LOG_INFO,
			           LOG_F({"ORDER_ID", items[i]->n.order_id},
			                 {"EVENT_ID", id},
			                 {"TRANSACTION_STATUS",
			                  items[i]->n.transaction_status}),
			           "notification stored: %s %s",
			           items[i]->n.transaction_status,
			           items[i]->n.status_code);
			item_finish(s, items[i], s->ids[i]);
		}
		return;
	}
	metric_inc(s->im->commit_failures);
	if (r == KASIR_ESQL && n > 1) {
		/* A statement failed: isolate the item that causes it. */
		for (size_t i = 0; i < n; i++)
			commit_batch(s, &items[i], 1);
		return;
	}
	for (size_t i = 0; i < n; i++)
		item_finish(s, items[i], 0);
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
load_last_notification(struct ingest_store *s)
{
	PGresult *res = NULL;

	if (db_ensure(s->db) < 0 ||
	    db_exec(s->db, &stmt_last_event, NULL, &res) < 0)
		return;
	if (PQntuples(res) == 1 && db_get(res, 0, 0) != NULL &&
	    metric_value(s->im->last_notification) == 0)
		metric_set(s->im->last_notification,
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
	struct ingest_store *s = arg;

	load_last_notification(s);
	pthread_mutex_lock(&s->lock);
	for (;;) {
		size_t n = 0;

		while (s->count == 0 && !(s->stopping && s->reserved == 0))
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->count == 0)
			break; /* stopping, nothing queued or reserved */
		if (s->count < s->conf.batch_max && s->conf.batch_wait_ms > 0 &&
		    !s->stopping) {
			struct timespec until;

			timespec_after_ms(&until, s->conf.batch_wait_ms);
			while (s->count < s->conf.batch_max && !s->stopping &&
			       pthread_cond_timedwait(&s->cond, &s->lock,
			                              &until) != ETIMEDOUT)
				;
		}
		while (s->head != NULL && n < s->conf.batch_max) {
			struct ingest_item *it = s->head;

			s->head = it->next;
			if (s->head == NULL)
				s->tail = &s->head;
			it->next = NULL;
			s->count--;
			s->bytes -= it->body_len;
			s->batch[n++] = it;
		}
		metric_set(s->im->queue_depth, (double)s->count);
		pthread_mutex_unlock(&s->lock);
		commit_batch(s, s->batch, n);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int
ingest_store_start(const struct ingest_store_conf *conf,
                   struct stream_producer *producer, struct ingest_metrics *im,
                   struct ingest_store **ret)
{
	struct ingest_store *s;
	pthread_condattr_t ca;
	int r;

	if (conf->batch_max == 0 || conf->queue_max == 0)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->conf = *conf;
	s->producer = producer;
	s->im = im;
	s->tail = &s->head;
	s->batch = calloc(conf->batch_max, sizeof(*s->batch));
	s->ids = calloc(conf->batch_max, sizeof(*s->ids));
	s->received = calloc(conf->batch_max, sizeof(*s->received));
	if (s->batch == NULL || s->ids == NULL || s->received == NULL) {
		r = -ENOMEM;
		goto fail_alloc;
	}
	if ((r = db_open(&conf->db, &s->db)) < 0)
		goto fail_alloc;
	/* the committer runs when notifications arrive */
	db_set_loop(s->db, "ingest.committer", false, 0);
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((r = pthread_create(&s->thread, NULL, committer_main, s)) != 0) {
		r = -r;
		goto fail_thread;
	}
	s->thread_started = true;
	*ret = s;
	return 0;

fail_thread:
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	db_close(s->db);
fail_alloc:
	free(s->ids);
	free(s->received);
	free(s->batch);
	free(s);
	return r;
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
	pthread_cond_signal(&s->cond); /* a draining thread may wait on it */
	pthread_mutex_unlock(&s->lock);
}

void
ingest_store_submit(struct ingest_store *s, struct ingest_item *it)
{
	pthread_mutex_lock(&s->lock);
	s->reserved--;
	it->next = NULL;
	*s->tail = it;
	s->tail = &it->next;
	s->count++;
	metric_set(s->im->queue_depth, (double)s->count);
	pthread_cond_signal(&s->cond);
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
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	/* The thread commits (or fails) the queue before it exits. */
	if (s->thread_started) {
		pthread_join(s->thread, NULL);
		s->thread_started = false;
	}
}

void
ingest_store_free(struct ingest_store *s)
{
	if (s == NULL)
		return;
	ingest_store_drain(s);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	db_close(s->db);
	free(s->ids);
	free(s->received);
	free(s->batch);
	free(s);
}
