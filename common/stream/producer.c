/*
 * producer.c - a stream's producer: start and stop, the publisher thread
 * that sends sequenced rows on the fast path and heartbeats the head.
 * Appends are in append.c, the sequencer in sequencer.c, replay answers
 * in replay.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/rep.h>

#include "envelope.h"
#include "liveness.h"
#include "metrics.h"
#include "sock_close.h"
#include "util.h"
#include "stream_impl.h"

#define STREAM_HEARTBEAT_DEFAULT  1000
#define STREAM_REPLAY_MAX_DEFAULT 500
#define STREAM_REPLAY_MAX_LIMIT   10000
#define STREAM_PUBLISH_BATCH      256 /* rows per publisher query */
/* A push socket refuses a frame while the previous one is still being
 * written or the consumer is busy (nng 1.5.2, no send queue:
 * docs/backbone.md, "How much the fast path carries under load").  A
 * burst's last frames may be refused, and then only the next heartbeat
 * (stream.heartbeat, 1 s by default) or the consumer's poll would make the
 * consumer replay them: after a pass with refused frames the heartbeat is
 * sent this soon.  While heartbeats are refused too (the consumer busy or
 * gone) the delay doubles each time, up to the usual interval. */
#define STREAM_HEARTBEAT_AFTER_REFUSAL_MS 20
/* Messages a pass still reads and tries when a push socket's consumer has
 * not taken the last frame; above it the pass reads nothing and skips to
 * the head (producer_publish_pass).  Payment rates make passes of one or
 * two messages, which a skip would delay by the heartbeat above; ingest's
 * maximum makes passes of hundreds, all but one or two refused. */
#define STREAM_PUBLISH_BUSY_BACKLOG 32
/* Frames nng may queue for each subscriber of a fanout stream (pub): one
 * publisher pass.  nng's default is 16: the rest of a pass was dropped
 * whenever a subscriber was busy applying a batch, and each gap cost it
 * a replay round trip.  Measured at 500 payments/s, orders stream, per
 * subscriber in 20 s: gaps 230-270 -> 20-30, replays 950-1,100 ->
 * 100-190, duplicates 16,000-17,000 -> 2,600-4,000 (256 and 1,024 frames
 * alike).  Push streams (ingest, recon) stay unbuffered: see
 * docs/backbone.md, "How much the fast path carries under load".  The
 * frames are the stream's own rows (the orders stream's events, an order
 * snapshot each): a few KB. */
#define STREAM_PUBLISH_SENDBUF STREAM_PUBLISH_BATCH
/* The sequencer's pass when nothing woke it: rows another process
 * committed and left (it died before its own pass), and rows another
 * process sequenced that this one's publisher has not sent. */
#define STREAM_SEQUENCE_POLL_MS 50

bool
producer_stopping(struct stream_producer *p)
{
	bool s;

	pthread_mutex_lock(&p->mu);
	s = p->stopping;
	pthread_mutex_unlock(&p->mu);
	return s;
}

/* Moves the head forward only.  Called from the publisher and the
 * sequencer threads: a compare-and-swap, so that a lower head one of them
 * read earlier never replaces a higher one the other just stored. */
void
producer_set_head(struct stream_producer *p, int64_t head)
{
	int64_t cur = __atomic_load_n(&p->head, __ATOMIC_RELAXED);

	while (head > cur) {
		if (__atomic_compare_exchange_n(&p->head, &cur, head, false,
		                                __ATOMIC_RELAXED,
		                                __ATOMIC_RELAXED)) {
			metric_set(p->m_head, (double)head);
			return;
		}
	}
}

/* Reads the committed head (0 when the stream never had a message). */
static int
producer_read_head(struct stream_producer *p, struct kasir_db *db,
                   int64_t *ret_head)
{
	const char *params[] = {p->stream};
	PGresult *res = NULL;
	int64_t head = 0;
	int rc;

	rc = db_exec(db, &p->st_head_read.st, params, &res);
	if (rc < 0)
		return rc;
	if (PQntuples(res) > 0)
		head = db_get_i64(res, 0, 0);
	PQclear(res);
	*ret_head = head;
	return 0;
}

/*
 * The consumers connected to the publish socket, counted from nng's pipe
 * events (nng's thread).  With none, a publisher pass reads nothing
 * (producer_publish_pass).  A pipe that goes away without having been
 * added (the socket closing) could only make the count low: the
 * publisher then skips frames that replay gives anyway.  The count never
 * goes below 0 (events of several pipes may run at once).
 */
static void
producer_pipe_event(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	struct stream_producer *p = arg;
	int n = __atomic_load_n(&p->consumers, __ATOMIC_RELAXED);

	(void)pipe;
	if (ev == NNG_PIPE_EV_ADD_POST) {
		n = __atomic_add_fetch(&p->consumers, 1, __ATOMIC_RELAXED);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		while (n > 0 && !__atomic_compare_exchange_n(
		                    &p->consumers, &n, n - 1, false,
		                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
		n = n > 0 ? n - 1 : 0;
	}
	metric_set(p->m_consumers, (double)n);
}

/* Moves the sent position to the committed head without reading the
 * messages between (counted as unsent); head is the committed head when
 * the pass already read it, otherwise -1 (read here).  0 or the read's
 * error. */
static int
producer_skip_to_head(struct stream_producer *p, int64_t head,
                      int64_t *last_sent)
{
	int rc;

	if (head < 0 && (rc = producer_read_head(p, p->pub_db, &head)) < 0)
		return rc;
	producer_set_head(p, head);
	if (head > *last_sent) {
		metric_add(p->m_unsent, (uint64_t)(head - *last_sent));
		*last_sent = head;
	}
	return 0;
}

/* A push socket can take a frame now (nng's send descriptor is readable
 * when a send would not block).  A pub socket never refuses: true. */
static bool
producer_consumer_ready(struct stream_producer *p)
{
	struct pollfd pfd = {.fd = p->send_fd, .events = POLLIN};

	if (p->fanout || p->send_fd < 0)
		return true;
	return poll(&pfd, 1, 0) > 0;
}

/* 0 sent, or the send's error. */
static int
producer_heartbeat(struct stream_producer *p, int64_t head)
{
	cJSON *data = cJSON_CreateObject();
	char *body = NULL;
	int rc = -ENOMEM;

	if (data == NULL ||
	    cJSON_AddNumberToObject(data, "head", (double)head) == NULL)
		goto out;
	/* control messages are outside the sequence: seq 0 */
	if ((rc = msg_encode(p->stream, 0, MSG_STREAM_HEARTBEAT, data, &body)) <
	    0)
		goto out;
	rc = stream_seal_and_send(p->kr, p->pub, body, strlen(body),
	                          NNG_FLAG_NONBLOCK);
	if (rc < 0)
		metric_inc(p->m_send_failed);
out:
	free(body);
	cJSON_Delete(data);
	return rc;
}

/* What a publisher pass saw of its socket. */
struct publish_outcome {
	bool more;       /* a full batch: there may be more right away */
	bool refused;    /* a frame was refused */
	bool hb_sent;    /* the pass sent a heartbeat */
	bool hb_refused; /* ... and it was refused */
};

/*
 * One publisher pass: sends committed rows after *last_sent (and a
 * heartbeat when asked); *out says what happened.
 */
static void
producer_publish_pass(struct stream_producer *p, int64_t *last_sent,
                      bool heartbeat, struct publish_outcome *out)
{
	char after[24], limit[24];
	const char *params[4] = {p->stream, after, limit, p->body_prefix};
	PGresult *res = NULL;
	int64_t head = -1; /* read by this pass, or not (-1) */
	int rows;

	memset(out, 0, sizeof(*out));
	if (db_ensure(p->pub_db) < 0)
		return;
	if (*last_sent < 0 || heartbeat) {
		if (producer_read_head(p, p->pub_db, &head) < 0)
			return;
		producer_set_head(p, head);
		/* At start-up nothing old is re-sent: the heartbeat tells
		 * consumers the head and they replay what they miss. */
		if (*last_sent < 0)
			*last_sent = head;
	}
	if (__atomic_load_n(&p->consumers, __ATOMIC_RELAXED) <= 0) {
		/* Nobody to send to (kasir-order down; the second of two
		 * kasir-ingest processes whose stream kasir-order takes from
		 * the other): reading and rendering the messages would be
		 * for nothing.  The sent position moves to the head; a
		 * consumer that connects later learns the head from the
		 * heartbeat or the next frame and replays what it lacks. */
		if (producer_skip_to_head(p, head, last_sent) < 0)
			return;
		goto heartbeat;
	}
	if (__atomic_load_n(&p->head, __ATOMIC_RELAXED) - *last_sent >
	        STREAM_PUBLISH_BUSY_BACKLOG &&
	    !producer_consumer_ready(p)) {
		/* A backlog, and the push socket's consumer has not taken
		 * the last frame (its pull socket holds one): the frames
		 * read now would be refused.  It replays from its cursor; the
		 * heartbeat soon after a refusal tells it the head.  A few
		 * messages are still read and tried: the consumer often takes
		 * its frame while they are read, and at payment rates a skip
		 * would cost the 20 ms to that heartbeat. */
		if (producer_skip_to_head(p, head, last_sent) < 0)
			return;
		out->refused = true;
		goto heartbeat;
	}
	stream_i64_text(*last_sent, after);
	stream_i64_text(STREAM_PUBLISH_BATCH, limit);
	if (db_exec(p->pub_db, &p->st_after_pub.st, params, &res) < 0)
		return;
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++) {
		int64_t seq = db_get_i64(res, i, 0);
		const char *body = db_get(res, i, 1);

		if (body == NULL)
			continue;
		if (stream_seal_and_send(p->kr, p->pub, body,
		                         (size_t)PQgetlength(res, i, 1),
		                         NNG_FLAG_NONBLOCK) != 0) {
			/* refused: so would the rest be (a push socket's
			 * consumer takes one at a time); replay covers them,
			 * and sealing them would be for nothing */
			metric_inc(p->m_send_failed);
			metric_add(p->m_unsent, (uint64_t)(rows - i - 1));
			out->refused = true;
			seq = db_get_i64(res, rows - 1, 0);
		} else {
			metric_inc(p->m_sent);
		}
		*last_sent = seq;
		producer_set_head(p, seq);
		if (out->refused)
			break;
	}
	PQclear(res);
	out->more = rows == STREAM_PUBLISH_BATCH;
heartbeat:
	if (heartbeat) {
		out->hb_sent = true;
		out->hb_refused =
		    producer_heartbeat(
		        p, __atomic_load_n(&p->head, __ATOMIC_RELAXED)) < 0;
	}
}

static void *
producer_publisher_main(void *arg)
{
	struct stream_producer *p = arg;
	int64_t last_sent = -1, next_hb = 0;
	int64_t soon = STREAM_HEARTBEAT_AFTER_REFUSAL_MS;

	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		int64_t now = now_mono_ms();
		bool hb = now >= next_hb;
		struct publish_outcome o;

		if (!p->kicked && !hb) {
			stream_cond_wait_ms(&p->cv, &p->mu, next_hb - now);
			continue;
		}
		p->kicked = false;
		pthread_mutex_unlock(&p->mu);

		producer_publish_pass(p, &last_sent, hb, &o);
		if (hb)
			next_hb = now + p->heartbeat_ms;
		if (o.hb_sent && !o.hb_refused)
			soon = STREAM_HEARTBEAT_AFTER_REFUSAL_MS;
		if ((o.refused || o.hb_refused) && now + soon < next_hb)
			next_hb = now + soon;
		/* a refused heartbeat: the consumer is busy or gone; try
		 * again later each time, up to the usual interval */
		if (o.hb_refused && soon < p->heartbeat_ms)
			soon *= 2;

		pthread_mutex_lock(&p->mu);
		if (o.more)
			p->kicked = true;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int
producer_build_stmts(struct stream_producer *p)
{
	const char *s = p->schema, *n = p->stream;
	int rc;

	/* Appends go to the log, which the pass numbers as a source, or,
	 * beside a source table of the service's own, to stream_pending,
	 * which the pass moves into stream_out.  ORDER BY the ordinality:
	 * pos (nextval, evaluated after the sort) follows the order of the
	 * calls. */
	const char *to = p->log ? "stream_log" : "stream_pending";

	rc = stream_stmt_build(&p->st_append_one, "append_one", s, n, 5,
	                       "INSERT INTO %s.%s (stream, id, type, at, "
	                       "tail) VALUES ($1, $2::uuid, $3, "
	                       "$4::timestamptz, $5) RETURNING pos",
	                       s, to);
	if (rc == 0)
		rc = stream_stmt_build(
		    &p->st_append_many, "append_many", s, n, 5,
		    "INSERT INTO %s.%s (stream, id, type, at, tail) SELECT "
		    "$1, u.id, u.type, u.at, u.tail FROM unnest($2::uuid[], "
		    "$3::text[], $4::timestamptz[], $5::text[]) WITH "
		    "ORDINALITY AS u(id, type, at, tail, ord) ORDER BY u.ord",
		    s, to);
	if (rc == 0)
		rc = producer_sequencer_stmts(p);
	if (rc == 0)
		rc = stream_stmt_build(&p->st_head_read, "head_read", s, n, 1,
		                       "SELECT seq FROM %s.stream_head "
		                       "WHERE stream = $1",
		                       s);
	/* A stream's messages are stream_out's (what was numbered before
	 * stream_tick, or before the log; a source stream's appends) and its
	 * ticks' (tick.sql):
	 * the ticks that hold seqs after $2 up to $2 + $3, each rendered by
	 * the source in ord order and numbered from its first_seq; $4 is
	 * body_prefix.  Ticks follow each other without a gap and hold at
	 * least one seq each, so those are among the first $3 ticks ending
	 * after $2 (an index range of at most $3 entries, whatever size the
	 * ticks were cut to); only those that start in the window are
	 * rendered. */
	if (rc == 0)
		rc = stream_stmt_build(
		    &p->st_after_pub, "after_pub", s, n, 4,
		    "SELECT seq, body FROM ((SELECT seq, body FROM "
		    "%s.stream_out WHERE stream = $1 AND seq > $2::bigint "
		    "ORDER BY seq LIMIT $3::bigint) UNION ALL (SELECT r.seq, "
		    "$4::text || r.seq || r.tail FROM (SELECT first_seq, prev, "
		    "snap, lo, hi FROM %s.stream_tick WHERE stream = $1 AND "
		    "last_seq > $2::bigint ORDER BY last_seq LIMIT "
		    "$3::bigint) t, LATERAL (SELECT t.first_seq - 1 + "
		    "row_number() OVER (ORDER BY f.ord) AS seq, f.tail FROM "
		    "%s.%s(%st.prev, t.snap, t.lo, t.hi) f) r WHERE "
		    "t.first_seq <= $2::bigint + $3::bigint AND "
		    "r.seq > $2::bigint)) m ORDER BY seq LIMIT $3::bigint",
		    s, s, s, p->source, producer_src_args(p));
	if (rc == 0)
		rc = stream_stmt_build(&p->st_after_rep, "after_rep", s, n,
		                       p->st_after_pub.st.nparams, "%s",
		                       p->st_after_pub.sql);
	return rc;
}

int
stream_producer_start(const struct stream_producer_conf *conf,
                      const struct keyring *kr, struct metrics *m,
                      struct stream_producer **ret)
{
	struct stream_producer *p;
	struct db_conf dc;
	int rc;
	char loop[LIVE_NAME_MAX];

	if (conf == NULL || kr == NULL || ret == NULL ||
	    !stream_valid(conf->stream) || !stream_schema_valid(conf->schema) ||
	    conf->publish_url == NULL || conf->replay_url == NULL ||
	    conf->heartbeat_ms < 0 ||
	    (conf->source != NULL &&
	     (!stream_schema_valid(conf->source) ||
	      strlen(conf->source) + strlen("_ids") > STREAM_SCHEMA_MAX)))
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	kasir_strlcpy(p->stream, conf->stream, sizeof(p->stream));
	kasir_strlcpy(p->schema, conf->schema, sizeof(p->schema));
	p->log = conf->source == NULL;
	kasir_strlcpy(p->source, p->log ? "stream_log" : conf->source,
	              sizeof(p->source));
	p->fanout = conf->fanout;
	p->heartbeat_ms = conf->heartbeat_ms > 0 ? conf->heartbeat_ms
	                                         : STREAM_HEARTBEAT_DEFAULT;
	p->replay_max =
	    conf->replay_max > 0 ? conf->replay_max : STREAM_REPLAY_MAX_DEFAULT;
	if (p->replay_max > STREAM_REPLAY_MAX_LIMIT)
		p->replay_max = STREAM_REPLAY_MAX_LIMIT;
	p->max_frame =
	    conf->max_frame > 0 ? conf->max_frame : ENVELOPE_FRAME_DEFAULT_MAX;
	p->kr = kr;
	p->m_sent = stream_counter(m, "kasir_stream_sent_total", p->stream,
	                           NULL, "frames sent on the fast path");
	p->m_send_failed =
	    stream_counter(m, "kasir_stream_send_failed_total", p->stream, NULL,
	                   "fast-path sends that failed (replay covers them)");
	p->m_unsent = stream_counter(
	    m, "kasir_stream_unsent_total", p->stream, NULL,
	    "messages not read or sent: no consumer connected, or it had not "
	    "taken the last frame (replay covers them)");
	p->m_consumers =
	    stream_gauge(m, "kasir_stream_consumers", p->stream,
	                 "consumers connected to the publish socket");
	p->m_replays_served =
	    stream_counter(m, "kasir_stream_replays_served_total", p->stream,
	                   NULL, "replay requests answered");
	p->m_head = stream_gauge(m, "kasir_stream_head", p->stream,
	                         "highest committed seq of the stream");
	p->m_sequenced =
	    stream_counter(m, "kasir_stream_sequenced_total", p->stream, NULL,
	                   "appends this process's sequencer gave a seq");
	p->m_seq_passes = stream_counter(
	    m, "kasir_stream_sequencer_passes_total", p->stream, NULL,
	    "sequencer passes that held the stream's lock");
	p->m_seq_busy = stream_counter(
	    m, "kasir_stream_sequencer_busy_total", p->stream, NULL,
	    "sequencer passes that found another one running (retried)");
	p->m_seq_failures = stream_counter(
	    m, "kasir_stream_sequencer_failures_total", p->stream, NULL,
	    "sequencer passes the server refused (messages stay pending)");
	p->seq_poll_ms = STREAM_SEQUENCE_POLL_MS;
	stream_rejected_register(m, p->stream, p->m_rejected);

	rc = producer_build_stmts(p);
	if (rc < 0)
		goto fail_free;
	rc = -pthread_mutex_init(&p->mu, NULL);
	if (rc < 0)
		goto fail_free;
	rc = stream_cond_init_mono(&p->cv);
	if (rc < 0)
		goto fail_mutex;
	rc = stream_cond_init_mono(&p->seq_cv);
	if (rc < 0) {
		pthread_cond_destroy(&p->cv);
		goto fail_mutex;
	}

	/* Every statement of the three connections reads a few rows through
	 * an index (stream_out and stream_tick by seq, a source's rows by id
	 * or txid, stream_pending by pos, stream_head): enable_seqscan = off
	 * (db.h).  A generic plan made while a source table was small is
	 * otherwise kept after it grew: kasir-ingest's idle probe scanned the
	 * whole payment_event every 50 ms (ingest_source, part 9). */
	dc = conf->db;
	dc.index_scans = true;
	rc = db_open(&dc, &p->pub_db);
	if (rc < 0)
		goto fail_cond;
	rc = db_open(&dc, &p->rep_db);
	if (rc < 0)
		goto fail_db;
	rc = db_open(&dc, &p->seq_db);
	if (rc < 0)
		goto fail_db;
	/* the publisher passes every heartbeat; replay answers on demand */
	stream_loop_name(conf->db.application_name, "publish", p->stream, loop,
	                 sizeof(loop));
	db_set_loop(p->pub_db, loop, true, p->heartbeat_ms);
	stream_loop_name(conf->db.application_name, "replay", p->stream, loop,
	                 sizeof(loop));
	db_set_loop(p->rep_db, loop, false, 0);
	stream_loop_name(conf->db.application_name, "sequence", p->stream, loop,
	                 sizeof(loop));
	db_set_loop(p->seq_db, loop, true, p->seq_poll_ms);

	rc = stream_nng_err(p->fanout ? nng_pub0_open(&p->pub)
	                              : nng_push0_open(&p->pub));
	if (rc < 0)
		goto fail_db;
	p->pub_open = true;
	rc = stream_nng_err(nng_rep0_open(&p->rep));
	if (rc < 0)
		goto fail_sock;
	p->rep_open = true;
	/* Nothing is expected on the publish socket; requests are small. */
	nng_socket_set_size(p->pub, NNG_OPT_RECVMAXSZ, 64);
	if (p->fanout)
		nng_socket_set_int(p->pub, NNG_OPT_SENDBUF,
		                   STREAM_PUBLISH_SENDBUF);
	nng_socket_set_size(p->rep, NNG_OPT_RECVMAXSZ, STREAM_REPLAY_REQ_MAX);
	nng_socket_set_ms(p->rep, NNG_OPT_RECVTIMEO, 500);
	nng_socket_set_ms(p->rep, NNG_OPT_SENDTIMEO, STREAM_REPLAY_TIMEOUT_MS);
	/* no descriptor: every pass reads and tries, as before */
	if (nng_socket_get_int(p->pub, NNG_OPT_SENDFD, &p->send_fd) != 0)
		p->send_fd = -1;
	rc = stream_nng_err(nng_pipe_notify(p->pub, NNG_PIPE_EV_ADD_POST,
	                                    producer_pipe_event, p));
	if (rc == 0)
		rc = stream_nng_err(nng_pipe_notify(
		    p->pub, NNG_PIPE_EV_REM_POST, producer_pipe_event, p));
	if (rc == 0)
		rc = stream_nng_err(
		    nng_listen(p->pub, conf->publish_url, NULL, 0));
	if (rc == 0)
		rc = stream_nng_err(
		    nng_listen(p->rep, conf->replay_url, NULL, 0));
	if (rc == 0)
		rc = stream_nng_err(nng_aio_alloc(&p->rep_aio, NULL, NULL));
	if (rc < 0)
		goto fail_sock;

	rc = -pthread_create(&p->pub_thread, NULL, producer_publisher_main, p);
	if (rc < 0)
		goto fail_sock;
	p->pub_started = true;
	rc = -pthread_create(&p->seq_thread, NULL, producer_sequencer_main, p);
	if (rc < 0) {
		stream_producer_stop(p);
		return rc;
	}
	p->seq_started = true;
	rc = -pthread_create(&p->rep_thread, NULL, producer_replay_main, p);
	if (rc < 0) {
		stream_producer_stop(p);
		return rc;
	}
	p->rep_started = true;
	*ret = p;
	return 0;

fail_sock:
	nng_aio_free(p->rep_aio); /* NULL is fine */
	if (p->pub_open)
		nng_close(p->pub);
	if (p->rep_open)
		nng_close(p->rep);
fail_db:
	db_close(p->pub_db);
	db_close(p->rep_db);
	db_close(p->seq_db);
fail_cond:
	pthread_cond_destroy(&p->seq_cv);
	pthread_cond_destroy(&p->cv);
fail_mutex:
	pthread_mutex_destroy(&p->mu);
fail_free:
	free(p);
	return rc;
}

void
stream_producer_stop(struct stream_producer *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->cv);
	pthread_cond_broadcast(&p->seq_cv);
	pthread_mutex_unlock(&p->mu);
	/* the sequencer's last pass first: it kicks the publisher */
	if (p->seq_started)
		pthread_join(p->seq_thread, NULL);
	/* Wake the replay thread without closing its socket under it (see
	 * stream_aio_recvmsg()): its pending and later operations end with
	 * NNG_ECANCELED.  Sockets are closed only once no thread uses them
	 * and nng's timer thread is done with the aio (nng_aio_free). */
	if (p->rep_aio != NULL)
		nng_aio_stop(p->rep_aio);
	if (p->pub_started)
		pthread_join(p->pub_thread, NULL);
	if (p->rep_started)
		pthread_join(p->rep_thread, NULL);
	nng_aio_free(p->rep_aio);
	p->rep_aio = NULL;
	if (p->rep_open)
		sock_close_bounded(p->rep, p->stream, "replay");
	if (p->pub_open)
		sock_close_bounded(p->pub, p->stream, "publish");
	db_close(p->pub_db);
	db_close(p->rep_db);
	db_close(p->seq_db);
	for (size_t i = 0; i < STREAM_DEFER_SLOTS; i++)
		producer_defer_clear(&p->defer[i]);
	pthread_cond_destroy(&p->seq_cv);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void
stream_producer_kick(struct stream_producer *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->seq_kicked = true;
	pthread_cond_signal(&p->seq_cv);
	pthread_mutex_unlock(&p->mu);
}

/* Wakes the publisher: the sequencer moved rows (or saw the head move). */
void
producer_publisher_kick(struct stream_producer *p)
{
	pthread_mutex_lock(&p->mu);
	p->kicked = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

int64_t
stream_producer_head(const struct stream_producer *p)
{
	return p == NULL ? 0 : __atomic_load_n(&p->head, __ATOMIC_RELAXED);
}
