/*
 * stream_impl.h - what the parts of the backbone share (private to
 * common/stream/; the API is stream.h).  Map:
 *
 *   shared.c     name checks, statements, metrics, condition variables
 *   transport.c  nng: errors, seal and send, aio receive/send, bounded close
 *   producer.c   producer start/stop, publisher thread, heartbeat
 *   append.c     stream_append, deferred appends (stream_defer_*): rows
 *                into the schema's stream_log (log.sql)
 *   sequencer.c  the sequencer thread: committed appends -> seq ranges
 *                (stream_tick), pre-log pending rows -> stream_out
 *   replay.c     replay answers (producer) and replay requests (consumer)
 *   consumer.c   consumer start/stop, main loop, catch-up, live step
 *   apply.c      a batch in one transaction: optimistic and careful modes
 *   schema.c     the tables' migration (schema.sql, grants.sql)
 *
 * The durable, signed message backbone (stream.h, docs/backbone.md).
 *
 * Producer: stream_append() runs in the caller's transaction and writes
 * the message once, into stream_log; a sequencer thread gives committed
 * appends their gap-free seqs (snapshot ranges in stream_tick); a publisher
 * thread sends sequenced rows over nng (fast path, non-blocking, losses
 * only counted) and heartbeats the head; a replay thread answers signed
 * replay requests from the table (the slow path that makes it exact).
 *
 * Consumer: one thread, one connection (while catching up, a fetch thread
 * asks for and decodes the next batch).  The database cursor is the only
 * truth: every transaction re-reads it FOR UPDATE, so a restarted or second
 * instance can never apply a message twice, and anything not applied is
 * fetched again by replay.  Live frames are an optimisation: out-of-order
 * ones are dropped, never buffered.
 *
 * Library code: logs at debug level, except a poisoned message (a message
 * skipped for good), which is an operator matter and logged as an error.
 */
#ifndef KASIR_STREAM_IMPL_H
#define KASIR_STREAM_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>

#include "stream.h"

struct metric;
struct metrics;

#define STREAM_SCHEMA_MAX        63 /* PostgreSQL identifier */
#define STREAM_REPLAY_TIMEOUT_MS 5000
#define STREAM_REPLAY_REQ_MAX    4096 /* a replay request frame */
/* A replay answer holds at most this many bytes of frames (but always at
 * least one frame, which max_frame bounds). */
#define STREAM_REPLAY_ANSWER_MAX (8 * 1024 * 1024)
#define STREAM_SQL_MAX           1536
#define STREAM_STMT_NAME_MAX     128

/* A statement whose SQL and name are built once from code-given names. */
struct stream_stmt {
	char name[STREAM_STMT_NAME_MAX];
	char sql[STREAM_SQL_MAX];
	struct db_stmt st;
};

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

/* One message queued by a deferring connection, already encoded. */
struct deferred_msg {
	enum msg_type type;
	char id[40], at[40];
	char *tail; /* owned: the body after its seq (sequencer.c) */
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

	struct stream_stmt st_append_one; /* stream_append, RETURNING pos */
	struct stream_stmt st_head_read;
	struct stream_stmt st_after_pub; /* rows with seq > $2 (publisher) */
	struct stream_stmt st_after_rep; /* same, replay thread */

	struct kasir_db *pub_db; /* publisher thread's */
	struct kasir_db *rep_db; /* replay thread's */
	nng_socket pub, rep;
	bool pub_open, rep_open;
	nng_aio *rep_aio; /* the replay thread's; see stream_aio_recvmsg() */
	pthread_t pub_thread, rep_thread;
	bool pub_started, rep_started;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool kicked;   /* under mu */
	bool stopping; /* under mu */
	int64_t head;  /* atomic */
	int consumers; /* atomic: pipes on pub (producer_pipe_event) */
	int send_fd;   /* pub's NNG_OPT_SENDFD, -1: none */

	struct metric *m_sent, *m_send_failed, *m_head, *m_replays_served;
	struct metric *m_unsent, *m_consumers;
	struct metric *m_rejected[REJ_COUNT];

	/* Deferred appends (stream_defer_begin): slot .db is set and cleared
	 * under mu; the queue of a slot belongs to the thread of its db. */
	struct stream_stmt st_append_many; /* k rows from arrays */
	struct defer_slot defer[STREAM_DEFER_SLOTS];

	/* The sequencer (sequencer.c): its thread, connection and wake-up.
	 * body_prefix is what every body has before its seq,
	 * '{"v":1,"stream":"<stream>","seq":'; pending rows keep what
	 * follows the seq (the tail). */
	char body_prefix[64 + MSG_STREAM_MAX];
	char lock_key[32 + STREAM_SCHEMA_MAX + MSG_STREAM_MAX];
	struct stream_stmt st_seq_probe; /* anything pending? the head */
	struct stream_stmt st_seq_lock;  /* pg_try_advisory_xact_lock */
	struct stream_stmt st_seq_move;  /* pending -> stream_out, head */
	/* The source the pass numbers and readers render: the service's
	 * own table (stream_producer_conf.source: its functions take
	 * (last, cur) and (last, cur, lo, hi)) or, without one, the schema's
	 * stream_log, which appends go to (log.sql: its functions take the
	 * stream first; producer_src_args()). */
	char source[STREAM_SCHEMA_MAX + 1]; /* "stream_log" or conf.source */
	bool log;                           /* source is stream_log */
	struct stream_stmt st_seq_source;   /* new source rows -> ticks */
	struct kasir_db *seq_db;
	pthread_t seq_thread;
	bool seq_started;
	pthread_cond_t seq_cv; /* with mu */
	bool seq_kicked;       /* under mu */
	int64_t seq_poll_ms;
	struct metric *m_sequenced, *m_seq_passes, *m_seq_busy, *m_seq_failures;
};

/* What a call of the source's functions puts before its snapshots: the
 * log's take the stream first, which is $1 in every statement that
 * calls them (the sequencer's probe and pass, the readers). */
static inline const char *
producer_src_args(const struct stream_producer *p)
{
	return p->log ? "$1, " : "";
}

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
	struct live_loop *loop; /* its liveness: stalled while batches fail */
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
	nng_aio *
	    aio; /* the consumer thread's, both sockets; stream_aio_recvmsg() */
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
	/* The fetch thread's (consumer.c): while a full batch is applied, it
	 * asks for the next one on req and decodes it here, with its own
	 * aio; the consumer thread touches neither until it has joined it. */
	struct batch ahead;
	nng_aio *fetch_aio;

	struct metric *m_received, *m_applied, *m_duplicates, *m_gaps;
	struct metric *m_replays, *m_poison, *m_lag, *m_failures;
	struct metric *m_rejected[REJ_COUNT];
};

/* shared.c */
bool stream_schema_valid(const char *s);
bool stream_valid(const char *s);
void stream_loop_name(const char *app, const char *job, const char *stream,
                      char *out, size_t len);
int stream_stmt_build(struct stream_stmt *s, const char *what,
                      const char *schema, const char *stream, int nparams,
                      const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void stream_i64_text(int64_t v, char buf[24]);
int stream_cond_init_mono(pthread_cond_t *cv);
void stream_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
struct metric *stream_counter(struct metrics *m, const char *name,
                              const char *stream, const char *extra,
                              const char *help);
struct metric *stream_gauge(struct metrics *m, const char *name,
                            const char *stream, const char *help);
void stream_rejected_register(struct metrics *m, const char *stream,
                              struct metric *out[REJ_COUNT]);
extern const char *const stream_reject_names[REJ_COUNT];
enum reject_reason stream_reject_reason_of(int rc);

/* transport.c */
int stream_nng_err(int rv);
int stream_seal_and_send(const struct keyring *kr, nng_socket s,
                         const char *body, size_t body_len, int flags);
int stream_aio_recvmsg(nng_socket s, nng_aio *aio, nng_msg **ret);
int stream_aio_recvmsg_nowait(nng_socket s, nng_aio *aio, nng_msg **ret);
int stream_aio_sendmsg(nng_socket s, nng_aio *aio, nng_msg *msg);
bool stream_nng_stopped(int rv);
int stream_seal_and_send_aio(const struct keyring *kr, nng_socket s,
                             nng_aio *aio, const char *body, size_t body_len);

/* producer.c */
bool producer_stopping(struct stream_producer *p);
void producer_set_head(struct stream_producer *p, int64_t head);
void producer_publisher_kick(struct stream_producer *p);

/* sequencer.c */
int producer_sequencer_stmts(struct stream_producer *p);
void *producer_sequencer_main(void *arg);
/* Splits a body encoded with seq 0 into its tail (points into body). */
int producer_body_tail(const struct stream_producer *p, const char *body,
                       const char **ret_tail);

/* append.c */
void producer_defer_clear(struct defer_slot *d);
/* The deferred messages of db, also (a consumer's cursor update) and the
 * COMMIT in one round trip: db_commit_with()'s outcomes. */
int producer_defer_commit_with(struct stream_producer *p, struct kasir_db *db,
                               const struct db_stmt *also,
                               const char *const *also_params);

/* replay.c */
void *producer_replay_main(void *arg);
int consumer_replay_send(struct stream_consumer *c, nng_aio *aio,
                         int64_t after);
int consumer_replay_wait(struct stream_consumer *c, nng_aio *aio,
                         nng_msg **ret);
int consumer_replay_request(struct stream_consumer *c, nng_aio *aio,
                            int64_t after, nng_msg **ret);

/* consumer.c */
void consumer_set_cursor(struct stream_consumer *c, int64_t cur);

/* apply.c */
int consumer_apply_batch(struct stream_consumer *c);

#endif
