/*
 * stream.c - the durable, signed message backbone (see stream.h and
 * docs/backbone.md).
 *
 * Producer: stream_append() runs in the caller's transaction; a publisher
 * thread sends committed rows over nng (fast path, non-blocking, losses
 * only counted) and heartbeats the head; a replay thread answers signed
 * replay requests from the table (the slow path that makes it exact).
 *
 * Consumer: one thread, one connection.  The database cursor is the only
 * truth: every transaction re-reads it FOR UPDATE, so a restarted or second
 * instance can never apply a message twice, and anything not applied is
 * fetched again by replay.  Live frames are an optimisation: out-of-order
 * ones are dropped, never buffered.
 *
 * Library code: logs at debug level, except a poisoned message (a message
 * skipped for good), which is an operator matter and logged as an error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "envelope.h"
#include "err.h"
#include "liveness.h"
#include "log.h"
#include "metrics.h"
#include "stream.h"
#include "util.h"

#define STREAM_SCHEMA_MAX         63 /* PostgreSQL identifier */
#define STREAM_HEARTBEAT_DEFAULT  1000
#define STREAM_REPLAY_MAX_DEFAULT 500
#define STREAM_REPLAY_MAX_LIMIT   10000
#define STREAM_BATCH_DEFAULT      256
#define STREAM_BATCH_LIMIT        10000
#define STREAM_POLL_DEFAULT       2000
#define STREAM_PUBLISH_BATCH      256 /* rows per publisher query */
#define STREAM_LIVE_RECVBUF       128 /* live frames queued in nng, at most */
#define STREAM_LIVE_WAIT_MS       100 /* live recv timeout: stop/poll checks */
#define STREAM_REPLAY_TIMEOUT_MS  5000
#define STREAM_CLOSE_WAIT_MS      1000 /* close_bounded() */
#define STREAM_REPLAY_REQ_MAX     4096 /* a replay request frame */
/* A replay answer holds at most this many bytes of frames (but always at
 * least one frame, which max_frame bounds). */
#define STREAM_REPLAY_ANSWER_MAX (8 * 1024 * 1024)
/* "kasir1 " + key id + " " + 64 hex + "\n", and seq digits */
#define STREAM_FRAME_OVERHEAD  (8 + ENVELOPE_KEY_ID_MAX + 1 + 64 + 1 + 20)
#define STREAM_BACKOFF_BASE_MS 100
#define STREAM_BACKOFF_CAP_MS  5000
#define STREAM_SQL_MAX         640
#define STREAM_DEFER_SLOTS     4 /* connections deferring at once */
#define STREAM_STMT_NAME_MAX   128

/* ------------------------------------------------------------------ */
/* shared helpers                                                      */

static bool
schema_valid(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= STREAM_SCHEMA_MAX)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	}
	return true;
}

static bool
stream_valid(const char *s)
{
	size_t i;

	if (s == NULL)
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= MSG_STREAM_MAX - 1)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		      s[i] == '-'))
			return false;
	}
	return i > 0;
}

/* A statement whose SQL and name are built once from code-given names. */
struct stream_stmt {
	char name[STREAM_STMT_NAME_MAX];
	char sql[STREAM_SQL_MAX];
	struct db_stmt st;
};

static int stmt_build(struct stream_stmt *s, const char *what,
                      const char *schema, const char *stream, int nparams,
                      const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/*
 * The liveness name of one of the backbone's loops: the service part of
 * the handle's application_name ("kasir-ingest-publisher" -> "ingest"),
 * the job and the stream: "ingest.publish.payment".
 */
static void
stream_loop_name(const char *app, const char *job, const char *stream,
                 char *out, size_t len)
{
	size_t n;

	if (app == NULL)
		app = "kasir";
	if (strncmp(app, "kasir-", 6) == 0)
		app += 6;
	n = strcspn(app, "-");
	snprintf(out, len, "%.*s.%s.%s", (int)(n < 16 ? n : 16), app, job,
	         stream);
}

static int
stmt_build(struct stream_stmt *s, const char *what, const char *schema,
           const char *stream, int nparams, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(s->name, sizeof(s->name), "kasir_stream_%s_%s_%s", what,
	             schema, stream);
	if (n < 0 || (size_t)n >= sizeof(s->name))
		return -ENAMETOOLONG;
	va_start(ap, fmt);
	n = vsnprintf(s->sql, sizeof(s->sql), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(s->sql))
		return -ENAMETOOLONG;
	s->st.name = s->name;
	s->st.sql = s->sql;
	s->st.nparams = nparams;
	return 0;
}

static void
i64_text(int64_t v, char buf[24])
{
	snprintf(buf, 24, "%lld", (long long)v);
}

static int
cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t attr;
	int rc;

	rc = pthread_condattr_init(&attr);
	if (rc != 0)
		return -rc;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
	return -rc;
}

/* Waits on cv for at most ms (mu held by the caller). */
static void
cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(cv, mu, &ts);
}

static int
nng_to_err(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECLOSED:
		return -ECANCELED;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_EADDRINVAL:
	case NNG_EINVAL:
		return -EINVAL;
	default:
		return KASIR_EPEER;
	}
}

/* Reasons a frame is rejected (kasir_stream_rejected_total{reason}). */
enum reject_reason {
	REJ_TOOBIG,
	REJ_ENVELOPE,
	REJ_KEY,
	REJ_SIGNATURE,
	REJ_MESSAGE,
	REJ_STREAM,
	REJ_TYPE,
	REJ_REPLAY,
	REJ_COUNT
};
static const char *const reject_names[REJ_COUNT] = {
    "toobig",  "envelope", "key",  "signature",
    "message", "stream",   "type", "replay"};

static struct metric *
counter(struct metrics *m, const char *name, const char *stream,
        const char *extra, const char *help)
{
	char labels[128];

	if (m == NULL)
		return NULL;
	if (extra != NULL)
		snprintf(labels, sizeof(labels), "stream=\"%s\",%s", stream,
		         extra);
	else
		snprintf(labels, sizeof(labels), "stream=\"%s\"", stream);
	return metrics_counter(m, name, labels, help);
}

static struct metric *
gauge(struct metrics *m, const char *name, const char *stream, const char *help)
{
	char labels[64];

	if (m == NULL)
		return NULL;
	snprintf(labels, sizeof(labels), "stream=\"%s\"", stream);
	return metrics_gauge(m, name, labels, help);
}

static void
rejected_register(struct metrics *m, const char *stream,
                  struct metric *out[REJ_COUNT])
{
	char extra[64];

	for (int i = 0; i < REJ_COUNT; i++) {
		snprintf(extra, sizeof(extra), "reason=\"%s\"",
		         reject_names[i]);
		out[i] = counter(m, "kasir_stream_rejected_total", stream,
		                 extra, "stream frames refused, by reason");
	}
}

static enum reject_reason
reject_reason_of(int rc)
{
	switch (rc) {
	case KASIR_ETOOBIG:
		return REJ_TOOBIG;
	case KASIR_EKEY:
		return REJ_KEY;
	case KASIR_ESIG:
		return REJ_SIGNATURE;
	case KASIR_ETYPE:
		return REJ_TYPE;
	case KASIR_EPROTO:
		return REJ_ENVELOPE;
	default:
		return REJ_MESSAGE;
	}
}

/* Signs body into a frame and sends it on s with flags. */
static int
seal_and_send(const struct keyring *kr, nng_socket s, const char *body,
              size_t body_len, int flags)
{
	char *frame = NULL;
	size_t len = 0;
	int rc;

	rc = envelope_seal(kr, body, body_len, &frame, &len);
	if (rc < 0)
		return rc;
	rc = nng_to_err(nng_send(s, frame, len, flags));
	free(frame);
	return rc;
}

/*
 * Blocking receive / send through the calling thread's own aio, with the
 * socket's RECVTIMEO / SENDTIMEO.  Shutdown rule (libnng 1.5.2): a socket
 * is never closed while another thread has an operation pending on it.
 * nng's timer thread calls a timed-out operation's cancel function with
 * the socket's protocol state outside any lock nng_close() waits for, so
 * closing the socket under a blocked nng_recvmsg() lets that timer thread
 * lock a destroyed mutex ("panic: pthread_mutex_lock: Invalid argument",
 * SIGABRT).  The stopper therefore nng_aio_stop()s the aio (the pending
 * operation ends with NNG_ECANCELED and every later one fails at once),
 * joins the thread, nng_aio_free()s the aio (which waits for the timer
 * thread to be done with it) and only then closes the socket.  Returns an
 * nng error; on success *ret is the message (caller frees).
 */
static int
aio_recvmsg_within(nng_socket s, nng_aio *aio, nng_duration timeout,
                   nng_msg **ret)
{
	int rv;

	nng_aio_set_timeout(aio, timeout);
	nng_recv_aio(s, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv == 0) {
		*ret = nng_aio_get_msg(aio);
		nng_aio_set_msg(aio, NULL);
	}
	return rv;
}

static int
aio_recvmsg(nng_socket s, nng_aio *aio, nng_msg **ret)
{
	return aio_recvmsg_within(s, aio, NNG_DURATION_DEFAULT, ret);
}

/* Non-blocking receive through aio: a message already queued, or
 * NNG_ETIMEDOUT at once. */
static int
aio_recvmsg_nowait(nng_socket s, nng_aio *aio, nng_msg **ret)
{
	return aio_recvmsg_within(s, aio, NNG_DURATION_ZERO, ret);
}

/* Sends msg through aio; msg is consumed whatever the outcome. */
static int
aio_sendmsg(nng_socket s, nng_aio *aio, nng_msg *msg)
{
	int rv;

	nng_aio_set_timeout(aio, NNG_DURATION_DEFAULT);
	nng_aio_set_msg(aio, msg);
	nng_send_aio(s, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		nng_aio_set_msg(aio, NULL);
	}
	return rv;
}

/* True when an nng result means "the stopper stopped us". */
static bool
nng_stopped(int rv)
{
	return rv == NNG_ECANCELED || rv == NNG_ECLOSED;
}

/*
 * nng_close() with a bounded wait, for teardown.  libnng 1.5.2 (Debian
 * 1.5.2-2) has a second shutdown bug: closing a tcp socket while one of
 * its pipes is between reading a message's header and its body makes the
 * transport drop the body read (nni_aio_begin fails on the closed rxaio
 * and nothing completes it), so the pipe's protocol receive never ends
 * and nng_close() waits for that pipe forever (and so does every later
 * close: nng reaps pipes on one thread).  Data arriving at the wrong
 * instant is enough; nothing on our side can prevent it.  The close runs
 * on a helper thread; after STREAM_CLOSE_WAIT_MS this thread logs a
 * warning and goes on, and later closes are not waited for (the process
 * is exiting: the helpers stay blocked until exit).  Every thread that
 * used s has been joined before.
 */
struct stream_closer {
	nng_socket s;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done; /* under mu */
	int refs;  /* under mu: the caller and the helper */
};

static void
closer_unref(struct stream_closer *k)
{
	bool last;

	pthread_mutex_lock(&k->mu);
	last = --k->refs == 0;
	pthread_mutex_unlock(&k->mu);
	if (last) {
		pthread_cond_destroy(&k->cv);
		pthread_mutex_destroy(&k->mu);
		free(k);
	}
}

static void *
closer_main(void *arg)
{
	struct stream_closer *k = arg;

	nng_close(k->s);
	pthread_mutex_lock(&k->mu);
	k->done = true;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mu);
	closer_unref(k);
	return NULL;
}

/* Set once a close did not finish: nng's single reaper thread is then
 * stuck, every later close would wait for it too, so they are not waited
 * for any more. */
static bool close_wedged;

static void
close_bounded(nng_socket s, const char *stream, const char *what)
{
	struct stream_closer *k = calloc(1, sizeof(*k));
	bool wedged = __atomic_load_n(&close_wedged, __ATOMIC_ACQUIRE);
	int64_t until = now_mono_ms() + (wedged ? 0 : STREAM_CLOSE_WAIT_MS);
	pthread_t t;
	bool done;

	if (k == NULL || pthread_mutex_init(&k->mu, NULL) != 0) {
		free(k);
		nng_close(s); /* unbounded, but closed */
		return;
	}
	if (cond_init_mono(&k->cv) < 0) {
		pthread_mutex_destroy(&k->mu);
		free(k);
		nng_close(s);
		return;
	}
	k->s = s;
	k->refs = 2;
	if (pthread_create(&t, NULL, closer_main, k) != 0) {
		k->refs = 1;
		nng_close(s);
		closer_unref(k);
		return;
	}
	pthread_detach(t);
	pthread_mutex_lock(&k->mu);
	while (!k->done && now_mono_ms() < until)
		cond_wait_ms(&k->cv, &k->mu, until - now_mono_ms());
	done = k->done;
	pthread_mutex_unlock(&k->mu);
	closer_unref(k);
	if (!done) {
		__atomic_store_n(&close_wedged, true, __ATOMIC_RELEASE);
		log_fields(LOG_WARNING, LOG_F({"STREAM", stream}),
		           "closing the %s socket did not finish (libnng "
		           "1.5.2 tcp close bug): left to process exit",
		           what);
	}
}

/* seal_and_send() through aio (blocking, the socket's SENDTIMEO); a stop
 * (NNG_ECANCELED) is -ECANCELED like a closed socket. */
static int
seal_and_send_aio(const struct keyring *kr, nng_socket s, nng_aio *aio,
                  const char *body, size_t body_len)
{
	char *frame = NULL;
	size_t len = 0;
	nng_msg *msg = NULL;
	int rc, rv;

	rc = envelope_seal(kr, body, body_len, &frame, &len);
	if (rc < 0)
		return rc;
	rv = nng_msg_alloc(&msg, 0);
	if (rv == 0)
		rv = nng_msg_append(msg, frame, len);
	free(frame);
	if (rv != 0) {
		nng_msg_free(msg);
		return nng_to_err(rv);
	}
	rv = aio_sendmsg(s, aio, msg);
	return nng_stopped(rv) ? -ECANCELED : nng_to_err(rv);
}

/* ------------------------------------------------------------------ */
/* producer                                                            */

/* One message queued by a deferring connection: encoded at flush time,
 * when its seq is known. */
struct deferred_msg {
	enum msg_type type;
	char id[40], at[40];
	cJSON *data; /* owned copy */
};

struct defer_slot {
	struct kasir_db *db; /* NULL: free; under the producer's mu */
	struct deferred_msg *q;
	size_t n, cap;
};

struct stream_producer {
	char stream[MSG_STREAM_MAX];
	char schema[STREAM_SCHEMA_MAX + 1];
	bool fanout;
	int64_t heartbeat_ms;
	unsigned replay_max;
	size_t max_frame;
	const struct keyring *kr;

	struct stream_stmt st_head_next; /* stream_append: seq = seq + 1 */
	struct stream_stmt st_out_insert;
	struct stream_stmt st_head_read;
	struct stream_stmt st_after_pub; /* rows with seq > $2 (publisher) */
	struct stream_stmt st_after_rep; /* same, replay thread */

	struct kasir_db *pub_db; /* publisher thread's */
	struct kasir_db *rep_db; /* replay thread's */
	nng_socket pub, rep;
	bool pub_open, rep_open;
	nng_aio *rep_aio; /* the replay thread's; see aio_recvmsg() */
	pthread_t pub_thread, rep_thread;
	bool pub_started, rep_started;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool kicked;   /* under mu */
	bool stopping; /* under mu */
	int64_t head;  /* atomic */

	struct metric *m_sent, *m_send_failed, *m_head, *m_replays_served;
	struct metric *m_rejected[REJ_COUNT];

	/* Deferred appends (stream_defer_begin): slot .db is set and cleared
	 * under mu; the queue of a slot belongs to the thread of its db. */
	struct stream_stmt st_head_add; /* seq = seq + $2 */
	struct stream_stmt st_out_many; /* k rows from arrays */
	struct defer_slot defer[STREAM_DEFER_SLOTS];
};

static bool
producer_stopping(struct stream_producer *p)
{
	bool s;

	pthread_mutex_lock(&p->mu);
	s = p->stopping;
	pthread_mutex_unlock(&p->mu);
	return s;
}

static void
producer_set_head(struct stream_producer *p, int64_t head)
{
	if (head > __atomic_load_n(&p->head, __ATOMIC_RELAXED)) {
		__atomic_store_n(&p->head, head, __ATOMIC_RELAXED);
		metric_set(p->m_head, (double)head);
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

static void
producer_heartbeat(struct stream_producer *p, int64_t head)
{
	cJSON *data = cJSON_CreateObject();
	char *body = NULL;
	int rc;

	if (data == NULL ||
	    cJSON_AddNumberToObject(data, "head", (double)head) == NULL)
		goto out;
	/* control messages are outside the sequence: seq 0 */
	if (msg_encode(p->stream, 0, MSG_STREAM_HEARTBEAT, data, &body) < 0)
		goto out;
	rc =
	    seal_and_send(p->kr, p->pub, body, strlen(body), NNG_FLAG_NONBLOCK);
	if (rc < 0)
		metric_inc(p->m_send_failed);
out:
	free(body);
	cJSON_Delete(data);
}

/*
 * One publisher pass: sends committed rows after *last_sent.  Returns true
 * when a full batch was sent (there may be more right away).
 */
static bool
producer_publish_pass(struct stream_producer *p, int64_t *last_sent,
                      bool heartbeat)
{
	char after[24], limit[24];
	const char *params[3] = {p->stream, after, limit};
	PGresult *res = NULL;
	int64_t head;
	int rows;

	if (db_ensure(p->pub_db) < 0)
		return false;
	if (*last_sent < 0 || heartbeat) {
		if (producer_read_head(p, p->pub_db, &head) < 0)
			return false;
		producer_set_head(p, head);
		/* At start-up nothing old is re-sent: the heartbeat tells
		 * consumers the head and they replay what they miss. */
		if (*last_sent < 0)
			*last_sent = head;
	}
	i64_text(*last_sent, after);
	i64_text(STREAM_PUBLISH_BATCH, limit);
	if (db_exec(p->pub_db, &p->st_after_pub.st, params, &res) < 0)
		return false;
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++) {
		int64_t seq = db_get_i64(res, i, 0);
		const char *body = db_get(res, i, 1);

		if (body == NULL)
			continue;
		if (seal_and_send(p->kr, p->pub, body,
		                  (size_t)PQgetlength(res, i, 1),
		                  NNG_FLAG_NONBLOCK) == 0)
			metric_inc(p->m_sent);
		else
			metric_inc(p->m_send_failed); /* replay covers it */
		*last_sent = seq;
		producer_set_head(p, seq);
	}
	PQclear(res);
	if (heartbeat)
		producer_heartbeat(p,
		                   __atomic_load_n(&p->head, __ATOMIC_RELAXED));
	return rows == STREAM_PUBLISH_BATCH;
}

static void *
producer_publisher_main(void *arg)
{
	struct stream_producer *p = arg;
	int64_t last_sent = -1, next_hb = 0;

	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		int64_t now = now_mono_ms();
		bool hb = now >= next_hb, more;

		if (!p->kicked && !hb) {
			cond_wait_ms(&p->cv, &p->mu, next_hb - now);
			continue;
		}
		p->kicked = false;
		pthread_mutex_unlock(&p->mu);

		more = producer_publish_pass(p, &last_sent, hb);
		if (hb)
			next_hb = now + p->heartbeat_ms;

		pthread_mutex_lock(&p->mu);
		if (more)
			p->kicked = true;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/*
 * Builds the answer to one replay request: 4-byte big-endian length + frame,
 * repeated, for rows with seq > after (at most max), bounded in bytes.
 */
static int
producer_replay_answer(struct stream_producer *p, int64_t after, int64_t max,
                       nng_msg **ret)
{
	char after_s[24], limit_s[24];
	const char *params[3] = {p->stream, after_s, limit_s};
	size_t cap = STREAM_REPLAY_ANSWER_MAX;
	PGresult *res = NULL;
	nng_msg *ans = NULL;
	int rc, rows;

	if (p->max_frame + 4 > cap)
		cap = p->max_frame + 4;
	if (max > p->replay_max)
		max = p->replay_max;
	i64_text(after, after_s);
	i64_text(max, limit_s);
	rc = db_ensure(p->rep_db);
	if (rc < 0)
		return rc;
	rc = db_exec(p->rep_db, &p->st_after_rep.st, params, &res);
	if (rc < 0)
		return rc;
	rc = nng_to_err(nng_msg_alloc(&ans, 0));
	if (rc < 0)
		goto out;
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++) {
		const char *body = db_get(res, i, 1);
		char *frame = NULL;
		size_t len = 0;
		uint8_t be[4];

		if (body == NULL)
			continue;
		rc = envelope_seal(p->kr, body, (size_t)PQgetlength(res, i, 1),
		                   &frame, &len);
		if (rc < 0)
			goto out;
		if (i > 0 && nng_msg_len(ans) + 4 + len > cap) {
			free(frame);
			break;
		}
		be[0] = (uint8_t)(len >> 24);
		be[1] = (uint8_t)(len >> 16);
		be[2] = (uint8_t)(len >> 8);
		be[3] = (uint8_t)len;
		rc = nng_to_err(nng_msg_append(ans, be, 4));
		if (rc == 0)
			rc = nng_to_err(nng_msg_append(ans, frame, len));
		free(frame);
		if (rc < 0)
			goto out;
	}
	*ret = ans;
	ans = NULL;
	rc = 0;
out:
	if (ans != NULL)
		nng_msg_free(ans);
	PQclear(res);
	return rc;
}

/* Verifies a replay request; 0 and the range, or a reject reason. */
static int
producer_replay_parse(struct stream_producer *p, nng_msg *req,
                      int64_t *ret_after, int64_t *ret_max,
                      enum reject_reason *ret_reason)
{
	const char *body;
	size_t body_len;
	struct kasir_msg *m = NULL;
	const char *stream;
	int rc;

	rc = envelope_open(p->kr, nng_msg_body(req), nng_msg_len(req),
	                   STREAM_REPLAY_REQ_MAX, &body, &body_len);
	if (rc < 0) {
		*ret_reason = reject_reason_of(rc);
		return rc;
	}
	rc = msg_decode(body, body_len, &m, NULL, 0);
	if (rc < 0) {
		*ret_reason = rc == KASIR_ETYPE ? REJ_TYPE : REJ_MESSAGE;
		return rc;
	}
	stream = msg_str(m, "stream");
	if (m->type != MSG_REPLAY_REQUEST) {
		*ret_reason = REJ_TYPE;
		rc = KASIR_EPROTO;
	} else if (strcmp(m->stream, p->stream) != 0 || stream == NULL ||
	           strcmp(stream, p->stream) != 0) {
		*ret_reason = REJ_STREAM;
		rc = KASIR_EPROTO;
	} else if (msg_int(m, "after") < 0 || msg_int(m, "max") < 1) {
		*ret_reason = REJ_REPLAY;
		rc = KASIR_EPROTO;
	} else {
		*ret_after = msg_int(m, "after");
		*ret_max = msg_int(m, "max");
		rc = 0;
	}
	msg_free(m);
	return rc;
}

static void *
producer_replay_main(void *arg)
{
	struct stream_producer *p = arg;

	while (!producer_stopping(p)) {
		enum reject_reason why = REJ_REPLAY;
		int64_t after = 0, max = 0;
		nng_msg *req = NULL, *ans = NULL;
		int rv;

		rv = aio_recvmsg(p->rep, p->rep_aio, &req);
		if (nng_stopped(rv))
			break;
		if (rv != 0)
			continue; /* timeout: re-check stopping */
		if (producer_replay_parse(p, req, &after, &max, &why) < 0) {
			/* unsigned or bad: no answer at all */
			metric_inc(p->m_rejected[why]);
			log_fields(LOG_DEBUG, LOG_F({"STREAM", p->stream}),
			           "replay request refused (%s)",
			           reject_names[why]);
			nng_msg_free(req);
			continue;
		}
		nng_msg_free(req);
		/* database down: no answer; the consumer times out and
		 * retries with backoff */
		if (producer_replay_answer(p, after, max, &ans) < 0)
			continue;
		if (aio_sendmsg(p->rep, p->rep_aio, ans) == 0)
			metric_inc(p->m_replays_served);
	}
	return NULL;
}

/* Drops what a slot queued (the slot's thread, or the last one out). */
static void
defer_clear(struct defer_slot *d)
{
	for (size_t i = 0; i < d->n; i++)
		cJSON_Delete(d->q[i].data);
	free(d->q);
	d->q = NULL;
	d->n = d->cap = 0;
}

/* The deferring slot of db, or NULL when db appends immediately. */
static struct defer_slot *
defer_find(struct stream_producer *p, const struct kasir_db *db)
{
	struct defer_slot *d = NULL;

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < STREAM_DEFER_SLOTS && d == NULL; i++)
		if (p->defer[i].db == db)
			d = &p->defer[i];
	pthread_mutex_unlock(&p->mu);
	return d;
}

static int
defer_push(struct defer_slot *d, enum msg_type type, const char *id,
           const char *at, const cJSON *data)
{
	struct deferred_msg *m;

	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		void *q = reallocarray(d->q, cap, sizeof(*d->q));
		if (q == NULL)
			return -ENOMEM;
		d->q = q;
		d->cap = cap;
	}
	m = &d->q[d->n];
	m->data = cJSON_Duplicate(data, true);
	if (m->data == NULL)
		return -ENOMEM;
	m->type = type;
	kasir_strlcpy(m->id, id, sizeof(m->id));
	kasir_strlcpy(m->at, at, sizeof(m->at));
	d->n++;
	return 0;
}

static int
producer_build_stmts(struct stream_producer *p)
{
	const char *s = p->schema, *n = p->stream;
	int rc;

	rc = stmt_build(&p->st_head_next, "head_next", s, n, 1,
	                "INSERT INTO %s.stream_head AS h (stream, seq) "
	                "VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE "
	                "SET seq = h.seq + 1 RETURNING seq",
	                s);
	if (rc == 0)
		rc = stmt_build(&p->st_out_insert, "out_insert", s, n, 6,
		                "INSERT INTO %s.stream_out (stream, seq, id, "
		                "type, at, body) VALUES ($1, $2::bigint, "
		                "$3::uuid, $4, $5::timestamptz, $6)",
		                s);
	if (rc == 0)
		rc = stmt_build(&p->st_head_add, "head_add", s, n, 2,
		                "INSERT INTO %s.stream_head AS h (stream, seq) "
		                "VALUES ($1, $2::bigint) ON CONFLICT (stream) "
		                "DO UPDATE SET seq = h.seq + $2::bigint "
		                "RETURNING seq",
		                s);
	if (rc == 0)
		rc =
		    stmt_build(&p->st_out_many, "out_many", s, n, 6,
		               "INSERT INTO %s.stream_out (stream, seq, id, "
		               "type, at, body) SELECT $1, u.seq, u.id, u.type,"
		               " u.at, u.body FROM unnest($2::bigint[], "
		               "$3::uuid[], $4::text[], $5::timestamptz[], "
		               "$6::text[]) AS u(seq, id, type, at, body)",
		               s);
	if (rc == 0)
		rc = stmt_build(&p->st_head_read, "head_read", s, n, 1,
		                "SELECT seq FROM %s.stream_head "
		                "WHERE stream = $1",
		                s);
	if (rc == 0)
		rc = stmt_build(&p->st_after_pub, "after_pub", s, n, 3,
		                "SELECT seq, body FROM %s.stream_out "
		                "WHERE stream = $1 AND seq > $2::bigint "
		                "ORDER BY seq LIMIT $3::bigint",
		                s);
	if (rc == 0)
		rc = stmt_build(&p->st_after_rep, "after_rep", s, n, 3, "%s",
		                p->st_after_pub.sql);
	return rc;
}

int
stream_producer_start(const struct stream_producer_conf *conf,
                      const struct keyring *kr, struct metrics *m,
                      struct stream_producer **ret)
{
	struct stream_producer *p;
	int rc;
	char loop[LIVE_NAME_MAX];

	if (conf == NULL || kr == NULL || ret == NULL ||
	    !stream_valid(conf->stream) || !schema_valid(conf->schema) ||
	    conf->publish_url == NULL || conf->replay_url == NULL ||
	    conf->heartbeat_ms < 0)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	kasir_strlcpy(p->stream, conf->stream, sizeof(p->stream));
	kasir_strlcpy(p->schema, conf->schema, sizeof(p->schema));
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
	p->m_sent = counter(m, "kasir_stream_sent_total", p->stream, NULL,
	                    "frames sent on the fast path");
	p->m_send_failed =
	    counter(m, "kasir_stream_send_failed_total", p->stream, NULL,
	            "fast-path sends that failed (replay covers them)");
	p->m_replays_served =
	    counter(m, "kasir_stream_replays_served_total", p->stream, NULL,
	            "replay requests answered");
	p->m_head = gauge(m, "kasir_stream_head", p->stream,
	                  "highest committed seq of the stream");
	rejected_register(m, p->stream, p->m_rejected);

	rc = producer_build_stmts(p);
	if (rc < 0)
		goto fail_free;
	rc = -pthread_mutex_init(&p->mu, NULL);
	if (rc < 0)
		goto fail_free;
	rc = cond_init_mono(&p->cv);
	if (rc < 0)
		goto fail_mutex;

	rc = db_open(&conf->db, &p->pub_db);
	if (rc < 0)
		goto fail_cond;
	rc = db_open(&conf->db, &p->rep_db);
	if (rc < 0)
		goto fail_db;
	/* the publisher passes every heartbeat; replay answers on demand */
	stream_loop_name(conf->db.application_name, "publish", p->stream, loop,
	                 sizeof(loop));
	db_set_loop(p->pub_db, loop, true, p->heartbeat_ms);
	stream_loop_name(conf->db.application_name, "replay", p->stream, loop,
	                 sizeof(loop));
	db_set_loop(p->rep_db, loop, false, 0);

	rc = nng_to_err(p->fanout ? nng_pub0_open(&p->pub)
	                          : nng_push0_open(&p->pub));
	if (rc < 0)
		goto fail_db;
	p->pub_open = true;
	rc = nng_to_err(nng_rep0_open(&p->rep));
	if (rc < 0)
		goto fail_sock;
	p->rep_open = true;
	/* Nothing is expected on the publish socket; requests are small. */
	nng_socket_set_size(p->pub, NNG_OPT_RECVMAXSZ, 64);
	nng_socket_set_size(p->rep, NNG_OPT_RECVMAXSZ, STREAM_REPLAY_REQ_MAX);
	nng_socket_set_ms(p->rep, NNG_OPT_RECVTIMEO, 500);
	nng_socket_set_ms(p->rep, NNG_OPT_SENDTIMEO, STREAM_REPLAY_TIMEOUT_MS);
	rc = nng_to_err(nng_listen(p->pub, conf->publish_url, NULL, 0));
	if (rc == 0)
		rc = nng_to_err(nng_listen(p->rep, conf->replay_url, NULL, 0));
	if (rc == 0)
		rc = nng_to_err(nng_aio_alloc(&p->rep_aio, NULL, NULL));
	if (rc < 0)
		goto fail_sock;

	rc = -pthread_create(&p->pub_thread, NULL, producer_publisher_main, p);
	if (rc < 0)
		goto fail_sock;
	p->pub_started = true;
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
fail_cond:
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
	pthread_mutex_unlock(&p->mu);
	/* Wake the replay thread without closing its socket under it (see
	 * aio_recvmsg()): its pending and later operations end with
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
		close_bounded(p->rep, p->stream, "replay");
	if (p->pub_open)
		close_bounded(p->pub, p->stream, "publish");
	db_close(p->pub_db);
	db_close(p->rep_db);
	for (size_t i = 0; i < STREAM_DEFER_SLOTS; i++)
		defer_clear(&p->defer[i]);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int
stream_append(struct stream_producer *p, struct kasir_db *db,
              enum msg_type type, const struct cJSON *data, int64_t *ret_seq)
{
	char id[40], at[40], seq_s[24];
	const char *head_params[] = {p == NULL ? NULL : p->stream};
	char *body = NULL;
	PGresult *res = NULL;
	int64_t seq;
	int rc;

	if (p == NULL || db == NULL || type <= MSG_UNKNOWN ||
	    type >= MSG_TYPE_COUNT || type == MSG_STREAM_HEARTBEAT ||
	    type == MSG_REPLAY_REQUEST)
		return -EINVAL;
	rc = uuid_v4(id, sizeof(id));
	if (rc < 0)
		return rc;
	time_rfc3339(now_real_ms(), at, sizeof(at));
	/* Check data and size BEFORE taking a seq: a caller that commits
	 * despite an error must not leave a hole in the sequence. */
	rc = msg_encode_full(p->stream, 0, id, at, type, data, &body);
	if (rc < 0)
		return rc;
	if (strlen(body) + STREAM_FRAME_OVERHEAD > p->max_frame) {
		free(body);
		return KASIR_ETOOBIG;
	}
	free(body);
	body = NULL;

	{
		struct defer_slot *d = defer_find(p, db);
		if (d != NULL && ret_seq == NULL)
			return defer_push(d, type, id, at, data);
		/* the caller wants its seq now: what was queued goes
		 * first, so the stream keeps the order of the calls */
		if (d != NULL && (rc = stream_defer_flush(p, db)) < 0)
			return rc;
	}
	rc = db_exec(db, &p->st_head_next.st, head_params, &res);
	if (rc < 0)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return KASIR_ESQL;
	}
	seq = db_get_i64(res, 0, 0);
	PQclear(res);

	rc = msg_encode_full(p->stream, seq, id, at, type, data, &body);
	if (rc < 0)
		return rc;
	i64_text(seq, seq_s);
	{
		const char *params[] = {p->stream,           seq_s, id,
		                        msg_type_name(type), at,    body};

		rc = db_exec(db, &p->st_out_insert.st, params, NULL);
	}
	free(body);
	if (rc < 0)
		return rc;
	if (ret_seq != NULL)
		*ret_seq = seq;
	return 0;
}

/* ------------------------------------------------------------------ */
/* deferred appends                                                    */

int
stream_defer_begin(struct stream_producer *p, struct kasir_db *db)
{
	int rc = -EBUSY;

	if (p == NULL || db == NULL)
		return -EINVAL;
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < STREAM_DEFER_SLOTS; i++) {
		if (p->defer[i].db == db) {
			rc = -EALREADY;
			break;
		}
		if (p->defer[i].db == NULL && rc == -EBUSY) {
			p->defer[i].db = db;
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int
stream_defer_flush(struct stream_producer *p, struct kasir_db *db)
{
	struct defer_slot *d;
	struct db_array a[5] = {{0}};
	const char *params[6];
	PGresult *res = NULL;
	char k_s[24], seq_s[24];
	int64_t last, first;
	int rc;

	if (p == NULL || db == NULL)
		return -EINVAL;
	d = defer_find(p, db);
	if (d == NULL)
		return -EINVAL;
	if (d->n == 0)
		return 0;
	i64_text((int64_t)d->n, k_s);
	params[0] = p->stream;
	params[1] = k_s;
	rc = db_exec(db, &p->st_head_add.st, params, &res);
	if (rc < 0)
		goto out;
	if (PQntuples(res) != 1) {
		rc = KASIR_ESQL;
		goto out;
	}
	last = db_get_i64(res, 0, 0);
	first = last - (int64_t)d->n + 1;
	for (size_t i = 0; i < d->n; i++) {
		struct deferred_msg *m = &d->q[i];
		char *body = NULL;

		rc = msg_encode_full(p->stream, first + (int64_t)i, m->id,
		                     m->at, m->type, m->data, &body);
		if (rc < 0)
			goto out;
		i64_text(first + (int64_t)i, seq_s);
		db_array_add(&a[0], seq_s);
		db_array_add(&a[1], m->id);
		db_array_add(&a[2], msg_type_name(m->type));
		db_array_add(&a[3], m->at);
		db_array_add(&a[4], body);
		free(body);
	}
	for (int i = 0; i < 5; i++) {
		params[i + 1] = db_array_text(&a[i]);
		if (params[i + 1] == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	rc = db_exec(db, &p->st_out_many.st, params, NULL);
out:
	/* Committed with the transaction, or rolled back with it: either
	 * way the queue is done. */
	defer_clear(d);
	PQclear(res);
	for (int i = 0; i < 5; i++)
		db_array_free(&a[i]);
	return rc;
}

void
stream_defer_end(struct stream_producer *p, struct kasir_db *db)
{
	struct defer_slot *d;

	if (p == NULL || db == NULL || (d = defer_find(p, db)) == NULL)
		return;
	defer_clear(d);
	pthread_mutex_lock(&p->mu);
	d->db = NULL;
	pthread_mutex_unlock(&p->mu);
}

void
stream_producer_kick(struct stream_producer *p)
{
	if (p == NULL)
		return;
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

/* ------------------------------------------------------------------ */
/* consumer                                                            */

/* One message waiting to be applied. */
struct batch_item {
	int64_t seq;
	struct kasir_msg *msg; /* NULL: record as poison without applying */
	const char *error;     /* why it is poison */
	bool msg_poisoned;     /* the callback refused it for good */
	char type[64];         /* type name, for poison rows */
	const char *body;      /* the body bytes, inside a held nng_msg */
	size_t body_len;
};

struct batch {
	struct batch_item *items;
	size_t n, cap;
	nng_msg **held; /* nng messages the bodies point into */
	size_t nheld;
};

struct stream_consumer {
	char stream[MSG_STREAM_MAX];
	char schema[STREAM_SCHEMA_MAX + 1];
	bool fanout, fast_path;
	unsigned batch_max;
	int64_t poll_ms;
	size_t max_frame;
	const struct keyring *kr;
	stream_apply_fn apply;
	void *arg;
	void (*committed)(void *arg);
	struct stream_producer *defer; /* optimistic batches; see stream.h */
	bool optimistic;               /* defer, or the conf's flag */
	stream_apply_batch_fn apply_batch;
	const struct kasir_msg **msgs; /* batch_max slots for apply_batch */

	struct stream_stmt st_cur_read;
	struct stream_stmt st_cur_lock;
	struct stream_stmt st_cur_init;
	struct stream_stmt st_cur_set;
	struct stream_stmt st_poison;

	struct kasir_db *db; /* the consumer thread's */
	nng_socket live, req;
	bool live_open, req_open;
	nng_aio *aio; /* the consumer thread's, both sockets; aio_recvmsg() */
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping; /* under mu */

	int64_t cursor;      /* atomic: last applied (as committed) */
	int64_t head;        /* atomic: producer head as last heard */
	int attempt;         /* consecutive transient failures (thread only) */
	int64_t fail_cursor; /* cursor at the last failure (thread only) */
	struct batch batch;

	struct metric *m_received, *m_applied, *m_duplicates, *m_gaps;
	struct metric *m_replays, *m_poison, *m_lag, *m_failures;
	struct metric *m_rejected[REJ_COUNT];
};

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
		cond_wait_ms(&c->cv, &c->mu, left);
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

static void
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
		why = reject_reason_of(rc);
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
	           "frame refused (%s)", reject_names[why]);
	return FRAME_BAD;
}

/* Locks the cursor row (creating it at 0 the first time). */
static int
consumer_lock_cursor(struct stream_consumer *c, int64_t *ret_cur)
{
	const char *params[] = {c->stream};
	PGresult *res = NULL;
	int rc;

	for (int pass = 0; pass < 2; pass++) {
		rc = db_exec(c->db, &c->st_cur_lock.st, params, &res);
		if (rc < 0)
			return rc;
		if (PQntuples(res) == 1) {
			*ret_cur = db_get_i64(res, 0, 0);
			PQclear(res);
			return 0;
		}
		PQclear(res);
		res = NULL;
		rc = db_exec(c->db, &c->st_cur_init.st, params, NULL);
		if (rc < 0)
			return rc;
	}
	return KASIR_ESQL;
}

static int
consumer_poison(struct stream_consumer *c, const struct batch_item *it,
                const char *error)
{
	char seq_s[24], *body;
	int rc;

	body = strndup(it->body, it->body_len);
	if (body == NULL)
		return -ENOMEM;
	i64_text(it->seq, seq_s);
	{
		const char *params[] = {c->stream, seq_s, it->type, error,
		                        body};

		rc = db_exec(c->db, &c->st_poison.st, params, NULL);
	}
	free(body);
	if (rc == 0)
		log_fields(
		    LOG_ERR, LOG_F({"STREAM", c->stream}, {"SEQ", seq_s}),
		    "message %s seq %s of type %s refused for good (%s), "
		    "recorded in %s.stream_poison, moving on",
		    c->stream, seq_s, it->type, error, c->schema);
	return rc;
}

/* Writes the cursor and commits; 0 or the commit's error. */
static int
consumer_commit(struct stream_consumer *c, int64_t cur)
{
	char cur_s[24];
	const char *params[] = {c->stream, cur_s};
	int rc;

	i64_text(cur, cur_s);
	rc = db_exec(c->db, &c->st_cur_set.st, params, NULL);
	if (rc < 0) {
		db_rollback(c->db);
		return rc;
	}
	return db_commit(c->db);
}

static void
consumer_log_poison(struct stream_consumer *c, const struct batch_item *it)
{
	char seq_s[24];

	i64_text(it->seq, seq_s);
	log_fields(LOG_ERR, LOG_F({"STREAM", c->stream}, {"SEQ", seq_s}),
	           "message %s seq %s of type %s refused for good (%s), "
	           "recorded in %s.stream_poison, moving on",
	           c->stream, seq_s, it->type, it->error, c->schema);
}

/*
 * Applies the batch (consecutive seqs) in ONE transaction with the cursor.
 * Returns 0 (the cursor moved, or everything was a duplicate),
 * KASIR_ECONFLICT when the batch does not start at cursor+1 (another
 * instance moved the cursor, or a gap: replay), or a transient error.  On
 * a transient error from the callback after some messages of the batch
 * were applied, those are committed (their savepoints were released) so
 * that one failing message never discards the work before it.
 */
/* consumer_apply_mode(): the optimistic pass failed, run the careful one */
#define APPLY_CAREFULLY 1

/*
 * Applies the batch in one transaction with the cursor.  careful: a
 * SAVEPOINT per message, so one failing message leaves the ones before it
 * applied and a refused one is poisoned alone.  Not careful (c->defer set):
 * no savepoints and deferred appends; any failure rolls everything back
 * and returns APPLY_CAREFULLY.
 */
static int
consumer_apply_mode(struct stream_consumer *c, bool careful)
{
	struct batch *b = &c->batch;
	uint64_t applied = 0, poisoned = 0, dups = 0;
	int64_t cur = 0;
	size_t i = 0, first, done;
	int rc, failed = 0;

	rc = db_ensure(c->db);
	if (rc < 0)
		return rc;
	rc = db_begin(c->db);
	if (rc < 0)
		return rc;
	rc = consumer_lock_cursor(c, &cur);
	if (rc < 0)
		goto rollback;
	while (i < b->n && b->items[i].seq <= cur) {
		dups++;
		i++;
	}
	if (i == b->n || b->items[i].seq != cur + 1) {
		db_rollback(c->db);
		metric_add(c->m_duplicates, dups);
		consumer_set_cursor(c, cur);
		return i == b->n ? 0 : KASIR_ECONFLICT;
	}
	if (!careful && c->defer != NULL &&
	    stream_defer_begin(c->defer, c->db) < 0) {
		db_rollback(c->db);
		return APPLY_CAREFULLY;
	}
	first = i;
	if (!careful && c->apply_batch != NULL) {
		size_t n = 0;
		for (; i < b->n && b->items[i].seq == cur + 1; i++) {
			if (b->items[i].msg == NULL)
				break; /* undecodable: the careful pass */
			c->msgs[n++] = b->items[i].msg;
			cur = b->items[i].seq;
		}
		if ((i < b->n && b->items[i].msg == NULL) ||
		    c->apply_batch(c->arg, c->db, c->msgs, n) != 0) {
			stream_defer_end(c->defer, c->db);
			db_rollback(c->db);
			return APPLY_CAREFULLY;
		}
		applied = n;
	}
	for (; i < b->n && b->items[i].seq == cur + 1; i++) {
		struct batch_item *it = &b->items[i];

		if (!careful) {
			rc = it->msg == NULL ? consumer_poison(c, it, it->error)
			                     : c->apply(c->arg, c->db, it->msg);
			if (rc != 0) {
				stream_defer_end(c->defer, c->db);
				db_rollback(c->db);
				return APPLY_CAREFULLY;
			}
			if (it->msg == NULL)
				poisoned++;
			else
				applied++;
			cur = it->seq;
			continue;
		}
		rc = db_savepoint(c->db, "kasir_stream_apply");
		if (rc < 0)
			goto rollback;
		if (it->msg == NULL) {
			rc = consumer_poison(c, it, it->error);
		} else {
			rc = c->apply(c->arg, c->db, it->msg);
			if (rc == KASIR_EREJECT) {
				it->error = "refused by the consumer";
				rc =
				    db_rollback_to(c->db, "kasir_stream_apply");
				if (rc == 0)
					rc = consumer_poison(c, it, it->error);
				if (rc == 0)
					it->msg_poisoned = true;
			}
		}
		if (rc < 0) {
			/* keep what was applied before this message */
			failed = rc;
			if (i == first ||
			    db_rollback_to(c->db, "kasir_stream_apply") < 0)
				goto rollback;
			break;
		}
		rc = db_release(c->db, "kasir_stream_apply");
		if (rc < 0)
			goto rollback;
		if (it->msg == NULL || it->msg_poisoned)
			poisoned++;
		else
			applied++;
		cur = it->seq;
	}
	done = i;
	if (!careful && c->defer != NULL) {
		rc = stream_defer_flush(c->defer, c->db);
		stream_defer_end(c->defer, c->db);
		if (rc < 0) {
			db_rollback(c->db);
			return APPLY_CAREFULLY;
		}
	}
	rc = consumer_commit(c, cur);
	if (rc < 0)
		return rc; /* unknown outcome included: re-read the cursor */
	consumer_set_cursor(c, cur);
	metric_add(c->m_applied, applied);
	metric_add(c->m_poison, poisoned);
	metric_add(c->m_duplicates, dups);
	for (size_t k = first; k < done; k++) {
		if (b->items[k].msg == NULL || b->items[k].msg_poisoned)
			consumer_log_poison(c, &b->items[k]);
	}
	if (c->committed != NULL)
		c->committed(c->arg);
	return failed;
rollback:
	db_rollback(c->db);
	return rc;
}

static int
consumer_apply_batch(struct stream_consumer *c)
{
	int rc;

	if (c->batch.n == 0)
		return 0;
	if (c->optimistic) {
		rc = consumer_apply_mode(c, false);
		if (rc != APPLY_CAREFULLY)
			return rc;
		log_fields(LOG_INFO, LOG_F({"STREAM", c->stream}),
		           "batch of %zu failed, applying it message by "
		           "message",
		           c->batch.n);
	}
	return consumer_apply_mode(c, true);
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

/* Sends a signed replay request and waits for the answer. */
static int
consumer_replay_request(struct stream_consumer *c, int64_t after, nng_msg **ret)
{
	cJSON *data = cJSON_CreateObject();
	char *body = NULL;
	nng_msg *ans = NULL;
	int rc = -ENOMEM, rv;

	if (data == NULL ||
	    cJSON_AddStringToObject(data, "stream", c->stream) == NULL ||
	    cJSON_AddNumberToObject(data, "after", (double)after) == NULL ||
	    cJSON_AddNumberToObject(data, "max", (double)c->batch_max) == NULL)
		goto out;
	rc = msg_encode(c->stream, 0, MSG_REPLAY_REQUEST, data, &body);
	if (rc < 0)
		goto out;
	rc = seal_and_send_aio(c->kr, c->req, c->aio, body, strlen(body));
	if (rc < 0)
		goto out;
	rv = aio_recvmsg(c->req, c->aio, &ans);
	if (rv != 0) {
		log_fields(LOG_DEBUG, LOG_F({"STREAM", c->stream}),
		           "replay request: %s", nng_strerror(rv));
		rc = nng_stopped(rv) ? -ECANCELED : nng_to_err(rv);
		goto out;
	}
	metric_inc(c->m_replays);
	*ret = ans;
out:
	free(body);
	cJSON_Delete(data);
	return rc;
}

/*
 * Replays from the cursor until the producer answers with nothing more.
 * Returns 0 when caught up, or an error (transient: back off and retry).
 */
static int
consumer_catch_up(struct stream_consumer *c)
{
	struct batch *b = &c->batch;

	while (!consumer_stopping(c)) {
		nng_msg *ans = NULL;
		const uint8_t *p;
		size_t len, pos = 0;
		int64_t cur, hb;
		bool bad = false;
		int rc;

		rc = consumer_read_cursor(c, &cur);
		if (rc < 0)
			return rc;
		consumer_set_cursor(c, cur);
		rc = consumer_replay_request(c, cur, &ans);
		if (rc < 0)
			return rc == -ECANCELED ? 0 : rc;
		batch_clear(b);
		b->held[b->nheld++] = ans;
		p = nng_msg_body(ans);
		len = nng_msg_len(ans);
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
			if (consumer_decode(c, (const char *)p + pos, flen, &it,
			                    &hb) != FRAME_MSG) {
				bad = true;
				break;
			}
			pos += flen;
			if (it.seq != batch_last_seq(b, cur) + 1) {
				/* not what was asked for: stop here */
				msg_free(it.msg);
				bad = it.seq > batch_last_seq(b, cur) + 1;
				if (bad)
					metric_inc(c->m_gaps);
				break;
			}
			b->items[b->n++] = it;
		}
		if (bad)
			metric_inc(c->m_rejected[REJ_REPLAY]);
		if (b->n == 0) {
			batch_clear(b);
			return bad ? KASIR_EPROTO : 0;
		}
		consumer_heard_head(c, batch_last_seq(b, cur));
		rc = consumer_apply_batch(c);
		batch_clear(b);
		if (rc < 0 && rc != KASIR_ECONFLICT)
			return rc;
		if (bad)
			return KASIR_EPROTO; /* applied what was good */
	}
	return 0;
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

		rv = flags == 0 ? aio_recvmsg(c->live, c->aio, &nm)
		                : aio_recvmsg_nowait(c->live, c->aio, &nm);
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

	rc =
	    stmt_build(&c->st_cur_read, "cur_read", s, n, 1,
	               "SELECT seq FROM %s.stream_cursor WHERE stream = $1", s);
	if (rc == 0)
		rc = stmt_build(&c->st_cur_lock, "cur_lock", s, n, 1,
		                "SELECT seq FROM %s.stream_cursor "
		                "WHERE stream = $1 FOR UPDATE",
		                s);
	if (rc == 0)
		rc =
		    stmt_build(&c->st_cur_init, "cur_init", s, n, 1,
		               "INSERT INTO %s.stream_cursor (stream, seq) "
		               "VALUES ($1, 0) ON CONFLICT (stream) DO NOTHING",
		               s);
	if (rc == 0)
		rc = stmt_build(&c->st_cur_set, "cur_set", s, n, 2,
		                "UPDATE %s.stream_cursor SET seq = $2::bigint, "
		                "updated_at = now() WHERE stream = $1",
		                s);
	if (rc == 0)
		rc =
		    stmt_build(&c->st_poison, "poison", s, n, 5,
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
	rc = nng_to_err(nng_req0_open(&c->req));
	if (rc < 0)
		return rc;
	c->req_open = true;
	nng_socket_set_size(c->req, NNG_OPT_RECVMAXSZ, answer_max);
	nng_socket_set_ms(c->req, NNG_OPT_RECVTIMEO, STREAM_REPLAY_TIMEOUT_MS);
	nng_socket_set_ms(c->req, NNG_OPT_SENDTIMEO, STREAM_REPLAY_TIMEOUT_MS);
	nng_socket_set_ms(c->req, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(c->req, NNG_OPT_RECONNMAXT, 2000);
	/* non-blocking dial: the producer may come up later */
	rc = nng_to_err(
	    nng_dial(c->req, conf->replay_url, NULL, NNG_FLAG_NONBLOCK));
	if (rc < 0)
		return rc;
	if (!c->fast_path)
		return 0;

	rc = nng_to_err(c->fanout ? nng_sub0_open(&c->live)
	                          : nng_pull0_open(&c->live));
	if (rc < 0)
		return rc;
	c->live_open = true;
	if (c->fanout) {
		rc = nng_to_err(
		    nng_socket_set(c->live, NNG_OPT_SUB_SUBSCRIBE, "", 0));
		if (rc < 0)
			return rc;
	}
	nng_socket_set_size(c->live, NNG_OPT_RECVMAXSZ, c->max_frame);
	nng_socket_set_int(c->live, NNG_OPT_RECVBUF, STREAM_LIVE_RECVBUF);
	nng_socket_set_ms(c->live, NNG_OPT_RECVTIMEO, STREAM_LIVE_WAIT_MS);
	nng_socket_set_ms(c->live, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(c->live, NNG_OPT_RECONNMAXT, 2000);
	return nng_to_err(
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
	    !stream_valid(conf->stream) || !schema_valid(conf->schema) ||
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

	c->m_received = counter(m, "kasir_stream_received_total", c->stream,
	                        NULL, "verified frames received");
	c->m_applied = counter(m, "kasir_stream_applied_total", c->stream, NULL,
	                       "messages applied and committed");
	c->m_duplicates = counter(m, "kasir_stream_duplicates_total", c->stream,
	                          NULL, "messages dropped as already applied");
	c->m_gaps = counter(m, "kasir_stream_gaps_total", c->stream, NULL,
	                    "gaps seen on the fast path");
	c->m_replays = counter(m, "kasir_stream_replays_total", c->stream, NULL,
	                       "replay answers received");
	c->m_poison = counter(m, "kasir_stream_poison_total", c->stream, NULL,
	                      "messages refused for good (stream_poison)");
	c->m_failures =
	    counter(m, "kasir_stream_consumer_failures_total", c->stream, NULL,
	            "transient failures (database, replay timeout)");
	c->m_lag = gauge(m, "kasir_stream_lag", c->stream,
	                 "producer head minus applied cursor");
	rejected_register(m, c->stream, c->m_rejected);

	rc = consumer_build_stmts(c);
	if (rc < 0)
		goto fail_free;
	c->batch.cap = c->batch_max;
	c->batch.items = calloc(c->batch.cap, sizeof(*c->batch.items));
	c->batch.held = calloc(c->batch.cap, sizeof(*c->batch.held));
	c->msgs = calloc(c->batch.cap, sizeof(*c->msgs));
	rc = -ENOMEM;
	if (c->batch.items == NULL || c->batch.held == NULL || c->msgs == NULL)
		goto fail_free;
	rc = -pthread_mutex_init(&c->mu, NULL);
	if (rc < 0)
		goto fail_free;
	rc = cond_init_mono(&c->cv);
	if (rc < 0)
		goto fail_mutex;
	rc = db_open(&conf->db, &c->db);
	if (rc < 0)
		goto fail_cond;
	/* the consumer reads its cursor at least every poll_ms */
	stream_loop_name(conf->db.application_name, "consume", c->stream, loop,
	                 sizeof(loop));
	db_set_loop(c->db, loop, true, c->poll_ms);
	rc = nng_to_err(nng_aio_alloc(&c->aio, NULL, NULL));
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
	free(c->msgs);
	free(c->batch.held);
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
	 * aio_recvmsg()): its pending and later receives and sends end with
	 * NNG_ECANCELED.  Close only after the join and nng_aio_free(), which
	 * waits until nng's timer thread is done with the aio. */
	if (c->aio != NULL)
		nng_aio_stop(c->aio);
	if (c->started)
		pthread_join(c->thread, NULL);
	nng_aio_free(c->aio);
	c->aio = NULL;
	if (c->live_open)
		close_bounded(c->live, c->stream, "live");
	if (c->req_open)
		close_bounded(c->req, c->stream, "replay request");
	batch_clear(&c->batch);
	db_close(c->db);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c->batch.items);
	free(c->msgs);
	free(c->batch.held);
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

/* ------------------------------------------------------------------ */
/* migration                                                           */

static bool
role_valid(const char *s)
{
	return schema_valid(s); /* same rule: [a-z_][a-z0-9_]*, <= 63 */
}

int
stream_migration_sql(const char *schema, const char *runtime_role,
                     char **ret_sql)
{
	char *tables = NULL, *grants = NULL, *sql = NULL;
	int n;

	if (!schema_valid(schema) || ret_sql == NULL ||
	    (runtime_role != NULL && !role_valid(runtime_role)))
		return -EINVAL;
	/* %1$s is the schema; it and the role were validated above, and come
	 * from code, never from input. */
	n = asprintf(
	    &tables,
	    "DO $kasir$ BEGIN\n"
	    "  IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n\n"
	    "      ON n.oid = p.pronamespace\n"
	    "      WHERE n.nspname = '%1$s' AND p.proname = 'refuse_change')\n"
	    "  THEN\n"
	    "    CREATE FUNCTION %1$s.refuse_change() RETURNS trigger\n"
	    "    LANGUAGE plpgsql AS $f$\n"
	    "    BEGIN\n"
	    "      RAISE EXCEPTION 'append-only table %%', TG_TABLE_NAME;\n"
	    "    END $f$;\n"
	    "  END IF;\n"
	    "END $kasir$;\n"
	    "\n"
	    "-- producer: gap-free counter and the append-only log\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_head (\n"
	    "  stream text PRIMARY KEY,\n"
	    "  seq bigint NOT NULL CHECK (seq >= 0)\n"
	    ");\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_out (\n"
	    "  stream text NOT NULL,\n"
	    "  seq bigint NOT NULL CHECK (seq > 0),\n"
	    "  id uuid NOT NULL UNIQUE,\n"
	    "  type text NOT NULL,\n"
	    "  at timestamptz NOT NULL,\n"
	    "  body text NOT NULL,\n"
	    "  PRIMARY KEY (stream, seq)\n"
	    ");\n"
	    "DROP TRIGGER IF EXISTS stream_out_append_only ON "
	    "%1$s.stream_out;\n"
	    "CREATE TRIGGER stream_out_append_only BEFORE UPDATE OR DELETE\n"
	    "  ON %1$s.stream_out FOR EACH ROW\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n"
	    "DROP TRIGGER IF EXISTS stream_out_no_truncate ON "
	    "%1$s.stream_out;\n"
	    "CREATE TRIGGER stream_out_no_truncate BEFORE TRUNCATE\n"
	    "  ON %1$s.stream_out FOR EACH STATEMENT\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n"
	    "\n"
	    "-- consumer: last applied seq per producer stream, and what was\n"
	    "-- refused for good\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_cursor (\n"
	    "  stream text PRIMARY KEY,\n"
	    "  seq bigint NOT NULL CHECK (seq >= 0),\n"
	    "  updated_at timestamptz NOT NULL DEFAULT now()\n"
	    ");\n"
	    "CREATE TABLE IF NOT EXISTS %1$s.stream_poison (\n"
	    "  stream text NOT NULL,\n"
	    "  seq bigint NOT NULL,\n"
	    "  type text NOT NULL,\n"
	    "  error text NOT NULL,\n"
	    "  body text NOT NULL,\n"
	    "  recorded_at timestamptz NOT NULL DEFAULT now(),\n"
	    "  PRIMARY KEY (stream, seq)\n"
	    ");\n"
	    "DROP TRIGGER IF EXISTS stream_poison_append_only\n"
	    "  ON %1$s.stream_poison;\n"
	    "CREATE TRIGGER stream_poison_append_only BEFORE UPDATE OR DELETE\n"
	    "  ON %1$s.stream_poison FOR EACH ROW\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n"
	    "DROP TRIGGER IF EXISTS stream_poison_no_truncate\n"
	    "  ON %1$s.stream_poison;\n"
	    "CREATE TRIGGER stream_poison_no_truncate BEFORE TRUNCATE\n"
	    "  ON %1$s.stream_poison FOR EACH STATEMENT\n"
	    "  EXECUTE FUNCTION %1$s.refuse_change();\n",
	    schema);
	if (n < 0)
		return -ENOMEM;
	if (runtime_role != NULL) {
		n = asprintf(
		    &grants,
		    "GRANT USAGE ON SCHEMA %1$s TO \"%2$s\";\n"
		    "GRANT SELECT, INSERT ON %1$s.stream_out,\n"
		    "  %1$s.stream_poison TO \"%2$s\";\n"
		    "GRANT SELECT, INSERT, UPDATE ON %1$s.stream_head,\n"
		    "  %1$s.stream_cursor TO \"%2$s\";\n",
		    schema, runtime_role);
		if (n < 0) {
			free(tables);
			return -ENOMEM;
		}
	}
	n = asprintf(&sql, "%s%s", tables, grants != NULL ? grants : "");
	free(tables);
	free(grants);
	if (n < 0)
		return -ENOMEM;
	*ret_sql = sql;
	return 0;
}
