/*
 * consumer.c - a stream's consumer: one thread, one connection.  The
 * database cursor is the only truth: every transaction re-reads it FOR
 * UPDATE (apply.c), so a restarted or second instance can never apply a
 * message twice, and anything not applied is fetched again by replay.
 * Live frames are an optimisation: out-of-order ones are dropped, never
 * buffered.  Here: start and stop, the main loop, catch-up by replay
 * (with a short-lived fetch thread that decodes the next batch; it never
 * touches the database) and the live step.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>

#include "envelope.h"
#include "err.h"
#include "liveness.h"
#include "log.h"
#include "metrics.h"
#include "sock_close.h"
#include "util.h"
#include "stream_impl.h"

#define STREAM_BATCH_DEFAULT   256
#define STREAM_BATCH_LIMIT     10000
#define STREAM_POLL_DEFAULT    2000
#define STREAM_LIVE_RECVBUF    128 /* live frames queued in nng, at most */
#define STREAM_LIVE_WAIT_MS    100 /* live recv timeout: stop/poll checks */
#define STREAM_BACKOFF_BASE_MS 100
#define STREAM_BACKOFF_CAP_MS  5000

static bool
consumer_stopping(struct stream_consumer *c)
{
	bool s;

	pthread_mutex_lock(&c->mu);
	s = c->stopping;
	pthread_mutex_unlock(&c->mu);
	return s;
}

/* Sleeps ms unless stopped. */
static void
consumer_sleep(struct stream_consumer *c, int64_t ms)
{
	int64_t until = now_mono_ms() + ms;

	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		int64_t left = until - now_mono_ms();

		if (left <= 0)
			break;
		stream_cond_wait_ms(&c->cv, &c->mu, left);
	}
	pthread_mutex_unlock(&c->mu);
}

static void
consumer_update_lag(struct stream_consumer *c)
{
	int64_t cur = __atomic_load_n(&c->cursor, __ATOMIC_RELAXED);
	int64_t head = __atomic_load_n(&c->head, __ATOMIC_RELAXED);

	metric_set(c->m_lag, head > cur ? (double)(head - cur) : 0.0);
}

void
consumer_set_cursor(struct stream_consumer *c, int64_t cur)
{
	__atomic_store_n(&c->cursor, cur, __ATOMIC_RELAXED);
	if (cur > __atomic_load_n(&c->head, __ATOMIC_RELAXED))
		__atomic_store_n(&c->head, cur, __ATOMIC_RELAXED);
	consumer_update_lag(c);
}

static void
consumer_heard_head(struct stream_consumer *c, int64_t head)
{
	if (head > __atomic_load_n(&c->head, __ATOMIC_RELAXED))
		__atomic_store_n(&c->head, head, __ATOMIC_RELAXED);
	consumer_update_lag(c);
}

static void
batch_clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		msg_free(b->items[i].msg);
	for (size_t i = 0; i < b->nheld; i++)
		nng_msg_free(b->held[i]);
	b->n = 0;
	b->nheld = 0;
}

static int64_t
batch_last_seq(const struct batch *b, int64_t cursor)
{
	return b->n > 0 ? b->items[b->n - 1].seq : cursor;
}

enum frame_kind { FRAME_BAD, FRAME_HEARTBEAT, FRAME_MSG };

/*
 * Verifies and decodes one frame into *it.  A frame of an unknown type
 * with a valid signature and header becomes a poison item (its seq must be
 * passed, or the stream would stall on it); everything else that fails is
 * counted and FRAME_BAD.
 */
static enum frame_kind
consumer_decode(struct stream_consumer *c, const char *frame, size_t len,
                struct batch_item *it, int64_t *ret_head)
{
	const char *body;
	size_t body_len;
	struct kasir_msg *m = NULL;
	char tname[64] = "";
	enum reject_reason why;
	int rc;

	memset(it, 0, sizeof(*it));
	rc = envelope_open(c->kr, frame, len, c->max_frame, &body, &body_len);
	if (rc < 0) {
		why = stream_reject_reason_of(rc);
		goto reject;
	}
	metric_inc(c->m_received);
	rc = msg_decode(body, body_len, &m, tname, sizeof(tname));
	if (rc == KASIR_ETYPE) {
		/* the header was valid (decode checks it before the type) */
		cJSON *root = cJSON_ParseWithLength(body, body_len);
		const cJSON *seq =
		    cJSON_GetObjectItemCaseSensitive(root, "seq");
		const cJSON *st =
		    cJSON_GetObjectItemCaseSensitive(root, "stream");

		if (!cJSON_IsNumber(seq) || !cJSON_IsString(st) ||
		    strcmp(st->valuestring, c->stream) != 0 ||
		    seq->valuedouble < 1) {
			cJSON_Delete(root);
			why = cJSON_IsString(st) ? REJ_STREAM : REJ_TYPE;
			goto reject;
		}
		it->seq = (int64_t)seq->valuedouble;
		cJSON_Delete(root);
		it->error = "unknown message type";
		kasir_strlcpy(it->type, tname, sizeof(it->type));
		it->body = body;
		it->body_len = body_len;
		metric_inc(c->m_rejected[REJ_TYPE]);
		return FRAME_MSG;
	}
	if (rc < 0) {
		why = REJ_MESSAGE;
		goto reject;
	}
	if (strcmp(m->stream, c->stream) != 0) {
		why = REJ_STREAM;
		goto reject;
	}
	if (m->type == MSG_STREAM_HEARTBEAT) {
		*ret_head = msg_int(m, "head");
		msg_free(m);
		return FRAME_HEARTBEAT;
	}
	if (m->type == MSG_REPLAY_REQUEST || m->seq < 1) {
		why = REJ_TYPE;
		goto reject;
	}
	it->seq = m->seq;
	it->msg = m;
	kasir_strlcpy(it->type, msg_type_name(m->type), sizeof(it->type));
	it->body = body;
	it->body_len = body_len;
	return FRAME_MSG;
reject:
	msg_free(m);
	metric_inc(c->m_rejected[why]);
	log_fields(LOG_DEBUG, LOG_F({"STREAM", c->stream}),
	           "frame refused (%s)", stream_reject_names[why]);
	return FRAME_BAD;
}

/* Reads the committed cursor (no lock). */
static int
consumer_read_cursor(struct stream_consumer *c, int64_t *ret_cur)
{
	const char *params[] = {c->stream};
	PGresult *res = NULL;
	int64_t cur = 0;
	int rc;

	rc = db_ensure(c->db);
	if (rc < 0)
		return rc;
	rc = db_exec(c->db, &c->st_cur_read.st, params, &res);
	if (rc < 0)
		return rc;
	if (PQntuples(res) > 0)
		cur = db_get_i64(res, 0, 0);
	PQclear(res);
	*ret_cur = cur;
	return 0;
}

/*
 * Decodes a replay answer into b (empty; it holds ans from now on): the
 * frames that follow `after`, one by one.  *ret_bad: a frame that is not
 * what was asked for (refused, or beyond a gap) stopped it.
 */
static void
consumer_fill(struct stream_consumer *c, struct batch *b, nng_msg *ans,
              int64_t after, bool *ret_bad)
{
	const uint8_t *p = nng_msg_body(ans);
	size_t len = nng_msg_len(ans), pos = 0;
	bool bad = false;
	int64_t hb;

	b->held[b->nheld++] = ans;
	while (pos < len && b->n < b->cap) {
		struct batch_item it;
		size_t flen;

		if (len - pos < 4) {
			bad = true;
			break;
		}
		flen = (size_t)p[pos] << 24 | (size_t)p[pos + 1] << 16 |
		       (size_t)p[pos + 2] << 8 | p[pos + 3];
		pos += 4;
		if (flen > len - pos) {
			bad = true;
			break;
		}
		if (consumer_decode(c, (const char *)p + pos, flen, &it, &hb) !=
		    FRAME_MSG) {
			bad = true;
			break;
		}
		pos += flen;
		if (it.seq != batch_last_seq(b, after) + 1) {
			/* not what was asked for: stop here */
			msg_free(it.msg);
			bad = it.seq > batch_last_seq(b, after) + 1;
			if (bad)
				metric_inc(c->m_gaps);
			break;
		}
		b->items[b->n++] = it;
	}
	if (bad)
		metric_inc(c->m_rejected[REJ_REPLAY]);
	*ret_bad = bad;
}

/* The next batch, asked for and decoded on a thread of its own while the
 * consumer thread applies the current one (consumer_catch_up). */
struct fetch {
	struct stream_consumer *c;
	int64_t after; /* the current batch's last seq */
	int rc;        /* 0: c->ahead holds the answer, or an error */
	bool bad;      /* consumer_fill()'s */
	pthread_t thread;
};

static void *
consumer_fetch_main(void *arg)
{
	struct fetch *f = arg;
	nng_msg *ans = NULL;

	f->rc = consumer_replay_request(f->c, f->c->fetch_aio, f->after, &ans);
	if (f->rc == 0)
		consumer_fill(f->c, &f->c->ahead, ans, f->after, &f->bad);
	return NULL;
}

/*
 * Replays from the cursor until the producer answers with nothing more.
 * Returns 0 when caught up, or an error (transient: back off and retry).
 *
 * A full batch is followed by more: a fetch thread asks for the next one
 * and decodes it (verifying every signature) while this one is applied,
 * so the consumer's connection waits for neither.  Its batch is used only
 * if it starts where the cursor stands after the apply; otherwise (a
 * refusal, another instance, a partial batch) it is dropped and asked
 * again.  The cursor read in each turn decides.  Without a thread (it
 * could not be started) the next batch is asked for in the next turn.
 */
static int
consumer_catch_up(struct stream_consumer *c)
{
	struct batch *b = &c->batch;
	struct fetch f = {.c = c};
	bool fetching = false;
	int rc = 0;

	while (!consumer_stopping(c)) {
		int64_t cur;
		bool bad = false, have = false;

		rc = consumer_read_cursor(c, &cur);
		if (rc < 0)
			break;
		consumer_set_cursor(c, cur);
		batch_clear(b);
		if (fetching) {
			pthread_join(f.thread, NULL);
			fetching = false;
			if (f.after == cur && f.rc < 0) {
				rc = f.rc; /* as if asked now */
				break;
			}
			if (f.after == cur) {
				struct batch t = *b;

				*b = c->ahead;
				c->ahead = t;
				bad = f.bad;
				have = true;
			}
			batch_clear(&c->ahead);
		}
		if (!have) {
			nng_msg *ans = NULL;

			rc = consumer_replay_request(c, c->aio, cur, &ans);
			if (rc < 0)
				break;
			consumer_fill(c, b, ans, cur, &bad);
		}
		if (b->n == 0) {
			rc = bad ? KASIR_EPROTO : 0;
			break;
		}
		consumer_heard_head(c, batch_last_seq(b, cur));
		if (!bad && b->n == b->cap) {
			f.after = batch_last_seq(b, cur);
			f.rc = 0;
			f.bad = false;
			fetching = pthread_create(&f.thread, NULL,
			                          consumer_fetch_main, &f) == 0;
		}
		rc = consumer_apply_batch(c);
		batch_clear(b);
		if (rc < 0 && rc != KASIR_ECONFLICT)
			break;
		rc = bad ? KASIR_EPROTO : 0; /* applied what was good */
		if (bad)
			break;
	}
	if (fetching) {
		pthread_join(f.thread, NULL);
		batch_clear(&c->ahead);
	}
	batch_clear(b);
	return rc == -ECANCELED ? 0 : rc;
}

/*
 * Takes live frames: applies the next ones (draining what is already
 * queued, up to batch_max, in one transaction), drops duplicates, and
 * asks for a replay on a gap or a heartbeat ahead of the cursor.
 */
static int
consumer_live_step(struct stream_consumer *c, bool *need_sync)
{
	struct batch *b = &c->batch;
	int64_t cur = __atomic_load_n(&c->cursor, __ATOMIC_RELAXED);
	int flags = 0;
	int rc = 0;

	batch_clear(b);
	while (b->n < b->cap) {
		struct batch_item it;
		int64_t head = 0, last = batch_last_seq(b, cur);
		nng_msg *nm = NULL;
		enum frame_kind k;
		int rv;

		rv = flags == 0
		         ? stream_aio_recvmsg(c->live, c->aio, &nm)
		         : stream_aio_recvmsg_nowait(c->live, c->aio, &nm);
		if (rv != 0)
			break; /* timeout, nothing more queued, or stopped */
		flags = NNG_FLAG_NONBLOCK;
		k = consumer_decode(c, nng_msg_body(nm), nng_msg_len(nm), &it,
		                    &head);
		if (k == FRAME_HEARTBEAT) {
			consumer_heard_head(c, head);
			if (head > last)
				*need_sync = true;
		} else if (k == FRAME_MSG && it.seq <= last) {
			metric_inc(c->m_duplicates);
			msg_free(it.msg);
		} else if (k == FRAME_MSG && it.seq == last + 1) {
			b->items[b->n++] = it;
			b->held[b->nheld++] = nm;
			consumer_heard_head(c, it.seq);
			continue; /* the batch holds nm now */
		} else if (k == FRAME_MSG) {
			metric_inc(c->m_gaps);
			log_fields(LOG_DEBUG, LOG_F({"STREAM", c->stream}),
			           "gap after seq %lld, replaying",
			           (long long)last);
			msg_free(it.msg);
			*need_sync = true;
			nng_msg_free(nm);
			break;
		}
		nng_msg_free(nm);
	}
	if (b->n > 0) {
		rc = consumer_apply_batch(c);
		if (rc == KASIR_ECONFLICT) {
			*need_sync = true;
			rc = 0;
		}
	}
	batch_clear(b);
	return rc;
}

static void
consumer_failed(struct stream_consumer *c, int rc, bool *need_sync)
{
	int64_t cur = __atomic_load_n(&c->cursor, __ATOMIC_RELAXED), wait;

	/* the backoff grows only while nothing moves */
	if (cur > c->fail_cursor)
		c->attempt = 0;
	c->fail_cursor = cur;
	wait = backoff_ms(c->attempt, STREAM_BACKOFF_BASE_MS,
	                  STREAM_BACKOFF_CAP_MS);
	if (c->attempt < 16)
		c->attempt++;
	metric_inc(c->m_failures);
	log_fields(LOG_DEBUG, LOG_F({"STREAM", c->stream}),
	           "stream consumer: %s, retrying in %lld ms",
	           kasir_strerror(rc), (long long)wait);
	*need_sync = true;
	consumer_sleep(c, wait);
}

static void *
consumer_main(void *arg)
{
	struct stream_consumer *c = arg;
	bool need_sync = true; /* start-up: replay first */
	int64_t next_poll = 0;

	while (!consumer_stopping(c)) {
		int rc;

		if (need_sync || now_mono_ms() >= next_poll) {
			rc = consumer_catch_up(c);
			if (rc < 0) {
				consumer_failed(c, rc, &need_sync);
				continue;
			}
			c->attempt = 0;
			need_sync = false;
			next_poll = now_mono_ms() + c->poll_ms;
			continue;
		}
		if (!c->fast_path) {
			consumer_sleep(c, next_poll - now_mono_ms());
			continue;
		}
		rc = consumer_live_step(c, &need_sync);
		if (rc < 0)
			consumer_failed(c, rc, &need_sync);
		else
			c->attempt = 0;
	}
	batch_clear(&c->batch);
	return NULL;
}

static int
consumer_build_stmts(struct stream_consumer *c)
{
	const char *s = c->schema, *n = c->stream;
	int rc;

	rc = stream_stmt_build(
	    &c->st_cur_read, "cur_read", s, n, 1,
	    "SELECT seq FROM %s.stream_cursor WHERE stream = $1", s);
	if (rc == 0)
		rc = stream_stmt_build(&c->st_cur_lock, "cur_lock", s, n, 1,
		                       "SELECT seq FROM %s.stream_cursor "
		                       "WHERE stream = $1 FOR UPDATE",
		                       s);
	if (rc == 0)
		rc = stream_stmt_build(
		    &c->st_cur_init, "cur_init", s, n, 1,
		    "INSERT INTO %s.stream_cursor (stream, seq) "
		    "VALUES ($1, 0) ON CONFLICT (stream) DO NOTHING",
		    s);
	if (rc == 0)
		rc = stream_stmt_build(
		    &c->st_cur_set, "cur_set", s, n, 2,
		    "UPDATE %s.stream_cursor SET seq = $2::bigint, "
		    "updated_at = now() WHERE stream = $1",
		    s);
	if (rc == 0)
		rc = stream_stmt_build(
		    &c->st_poison, "poison", s, n, 5,
		    "INSERT INTO %s.stream_poison (stream, seq, "
		    "type, error, body) VALUES ($1, $2::bigint, $3, "
		    "$4, $5)",
		    s);
	return rc;
}

static int
consumer_open_sockets(struct stream_consumer *c,
                      const struct stream_consumer_conf *conf)
{
	size_t answer_max = STREAM_REPLAY_ANSWER_MAX;
	int rc;

	if (c->max_frame + 4 > answer_max)
		answer_max = c->max_frame + 4;
	rc = stream_nng_err(nng_req0_open(&c->req));
	if (rc < 0)
		return rc;
	c->req_open = true;
	nng_socket_set_size(c->req, NNG_OPT_RECVMAXSZ, answer_max);
	nng_socket_set_ms(c->req, NNG_OPT_RECVTIMEO, STREAM_REPLAY_TIMEOUT_MS);
	nng_socket_set_ms(c->req, NNG_OPT_SENDTIMEO, STREAM_REPLAY_TIMEOUT_MS);
	nng_socket_set_ms(c->req, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(c->req, NNG_OPT_RECONNMAXT, 2000);
	/* non-blocking dial: the producer may come up later */
	rc = stream_nng_err(
	    nng_dial(c->req, conf->replay_url, NULL, NNG_FLAG_NONBLOCK));
	if (rc < 0)
		return rc;
	if (!c->fast_path)
		return 0;

	rc = stream_nng_err(c->fanout ? nng_sub0_open(&c->live)
	                              : nng_pull0_open(&c->live));
	if (rc < 0)
		return rc;
	c->live_open = true;
	if (c->fanout) {
		rc = stream_nng_err(
		    nng_socket_set(c->live, NNG_OPT_SUB_SUBSCRIBE, "", 0));
		if (rc < 0)
			return rc;
	}
	nng_socket_set_size(c->live, NNG_OPT_RECVMAXSZ, c->max_frame);
	nng_socket_set_int(c->live, NNG_OPT_RECVBUF, STREAM_LIVE_RECVBUF);
	nng_socket_set_ms(c->live, NNG_OPT_RECVTIMEO, STREAM_LIVE_WAIT_MS);
	nng_socket_set_ms(c->live, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(c->live, NNG_OPT_RECONNMAXT, 2000);
	return stream_nng_err(
	    nng_dial(c->live, conf->url, NULL, NNG_FLAG_NONBLOCK));
}

int
stream_consumer_start(const struct stream_consumer_conf *conf,
                      const struct keyring *kr, struct metrics *m,
                      stream_apply_fn apply, void *arg,
                      struct stream_consumer **ret)
{
	char loop[LIVE_NAME_MAX];
	struct stream_consumer *c;
	int rc;

	if (conf == NULL || kr == NULL || apply == NULL || ret == NULL ||
	    !stream_valid(conf->stream) || !stream_schema_valid(conf->schema) ||
	    conf->replay_url == NULL ||
	    (conf->fast_path && conf->url == NULL) || conf->poll_ms < 0)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	kasir_strlcpy(c->stream, conf->stream, sizeof(c->stream));
	kasir_strlcpy(c->schema, conf->schema, sizeof(c->schema));
	c->fanout = conf->fanout;
	c->fast_path = conf->fast_path;
	c->batch_max =
	    conf->batch_max > 0 ? conf->batch_max : STREAM_BATCH_DEFAULT;
	if (c->batch_max > STREAM_BATCH_LIMIT)
		c->batch_max = STREAM_BATCH_LIMIT;
	c->poll_ms = conf->poll_ms > 0 ? conf->poll_ms : STREAM_POLL_DEFAULT;
	c->max_frame =
	    conf->max_frame > 0 ? conf->max_frame : ENVELOPE_FRAME_DEFAULT_MAX;
	c->kr = kr;
	c->apply = apply;
	c->arg = arg;
	c->committed = conf->committed;
	c->defer = conf->defer;
	c->optimistic = conf->optimistic || conf->defer != NULL;
	c->apply_batch = c->optimistic ? conf->apply_batch : NULL;

	c->m_received =
	    stream_counter(m, "kasir_stream_received_total", c->stream, NULL,
	                   "verified frames received");
	c->m_applied =
	    stream_counter(m, "kasir_stream_applied_total", c->stream, NULL,
	                   "messages applied and committed");
	c->m_duplicates =
	    stream_counter(m, "kasir_stream_duplicates_total", c->stream, NULL,
	                   "messages dropped as already applied");
	c->m_gaps = stream_counter(m, "kasir_stream_gaps_total", c->stream,
	                           NULL, "gaps seen on the fast path");
	c->m_replays =
	    stream_counter(m, "kasir_stream_replays_total", c->stream, NULL,
	                   "replay answers received");
	c->m_poison =
	    stream_counter(m, "kasir_stream_poison_total", c->stream, NULL,
	                   "messages refused for good (stream_poison)");
	c->m_failures = stream_counter(
	    m, "kasir_stream_consumer_failures_total", c->stream, NULL,
	    "transient failures (database, replay timeout)");
	c->m_lag = stream_gauge(m, "kasir_stream_lag", c->stream,
	                        "producer head minus applied cursor");
	stream_rejected_register(m, c->stream, c->m_rejected);

	rc = consumer_build_stmts(c);
	if (rc < 0)
		goto fail_free;
	c->batch.cap = c->ahead.cap = c->batch_max;
	c->batch.items = calloc(c->batch.cap, sizeof(*c->batch.items));
	c->batch.held = calloc(c->batch.cap, sizeof(*c->batch.held));
	c->ahead.items = calloc(c->ahead.cap, sizeof(*c->ahead.items));
	c->ahead.held = calloc(c->ahead.cap, sizeof(*c->ahead.held));
	c->msgs = calloc(c->batch.cap, sizeof(*c->msgs));
	rc = -ENOMEM;
	if (c->batch.items == NULL || c->batch.held == NULL ||
	    c->ahead.items == NULL || c->ahead.held == NULL || c->msgs == NULL)
		goto fail_free;
	rc = -pthread_mutex_init(&c->mu, NULL);
	if (rc < 0)
		goto fail_free;
	rc = stream_cond_init_mono(&c->cv);
	if (rc < 0)
		goto fail_mutex;
	rc = db_open(&conf->db, &c->db);
	if (rc < 0)
		goto fail_cond;
	/* the consumer reads its cursor at least every poll_ms */
	stream_loop_name(conf->db.application_name, "consume", c->stream, loop,
	                 sizeof(loop));
	db_set_loop(c->db, loop, true, c->poll_ms);
	c->loop = live_register(loop, LIVE_PERIODIC, c->poll_ms);
	rc = stream_nng_err(nng_aio_alloc(&c->aio, NULL, NULL));
	if (rc == 0)
		rc = stream_nng_err(nng_aio_alloc(&c->fetch_aio, NULL, NULL));
	if (rc == 0)
		rc = consumer_open_sockets(c, conf);
	if (rc < 0)
		goto fail_sock;
	rc = -pthread_create(&c->thread, NULL, consumer_main, c);
	if (rc < 0)
		goto fail_sock;
	c->started = true;
	*ret = c;
	return 0;

fail_sock:
	nng_aio_free(c->aio); /* NULL is fine */
	nng_aio_free(c->fetch_aio);
	if (c->live_open)
		nng_close(c->live);
	if (c->req_open)
		nng_close(c->req);
	db_close(c->db);
fail_cond:
	pthread_cond_destroy(&c->cv);
fail_mutex:
	pthread_mutex_destroy(&c->mu);
fail_free:
	free(c->batch.items);
	free(c->ahead.items);
	free(c->msgs);
	free(c->batch.held);
	free(c->ahead.held);
	free(c);
	return rc;
}

void
stream_consumer_stop(struct stream_consumer *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stopping = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	/* Wake the thread without closing a socket under it (see
	 * stream_aio_recvmsg()): its pending and later receives and sends end
	 * with NNG_ECANCELED.  Close only after the join and nng_aio_free(),
	 * which waits until nng's timer thread is done with the aio. */
	if (c->aio != NULL)
		nng_aio_stop(c->aio);
	if (c->fetch_aio != NULL)
		nng_aio_stop(c->fetch_aio);
	if (c->started)
		pthread_join(c->thread, NULL); /* it joins its fetch thread */
	nng_aio_free(c->aio);
	nng_aio_free(c->fetch_aio);
	c->aio = NULL;
	c->fetch_aio = NULL;
	if (c->live_open)
		sock_close_bounded(c->live, c->stream, "live");
	if (c->req_open)
		sock_close_bounded(c->req, c->stream, "replay request");
	batch_clear(&c->batch);
	batch_clear(&c->ahead);
	db_close(c->db);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c->batch.items);
	free(c->ahead.items);
	free(c->msgs);
	free(c->batch.held);
	free(c->ahead.held);
	free(c);
}

int64_t
stream_consumer_cursor(const struct stream_consumer *c)
{
	return c == NULL ? 0 : __atomic_load_n(&c->cursor, __ATOMIC_RELAXED);
}

int64_t
stream_consumer_head(const struct stream_consumer *c)
{
	return c == NULL ? 0 : __atomic_load_n(&c->head, __ATOMIC_RELAXED);
}
