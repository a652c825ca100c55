/*
 * stream.h - the durable, signed message backbone (ARCHITECTURE.md).
 *
 * Producer side, in the producing service's schema S:
 *   S.stream_log(pos, stream, txid, id, type, at, tail)  appends, written
 *                                      once (append-only; log.sql)
 *   S.stream_head(stream text PK, seq bigint, snap)      gap-free counter
 *   S.stream_tick(stream, first_seq, last_seq, lo, hi, prev, snap)
 *                                      the numbering: seqs first..last are
 *                                      the source rows with ord in lo..hi
 *                                      committed between prev and snap
 *   S.stream_out(stream, seq, id uuid, type, at, body)   messages numbered
 *                                      before the log (and a source
 *                                      stream's appends), append-only
 *   S.stream_pending(stream, pos, id, type, at, tail)    appends of a
 *                                      stream with its own source table
 * stream_append() runs INSIDE the caller's transaction and inserts the
 * message into stream_log (pos: a bigserial; txid: the writer's
 * transaction id; no shared row lock, so any number of transactions
 * append to one stream at once).  After COMMIT the caller calls
 * stream_producer_kick(), which wakes the producer's sequencer thread: in
 * one transaction of its own, holding the stream's advisory lock (one
 * sequencer at a time, also across processes), it numbers the log rows
 * whose writer committed since the snapshot of its last pass (PgQ's rule:
 * decided by snapshots, never by a watermark of ids), in pos order, with
 * the next gap-free seqs: one stream_tick row per range of at most
 * STREAM_TICK_ROWS, never a copy of a row; and moves stream_head.  A row
 * committed late (lower pos than rows already numbered) is simply
 * numbered in a later pass.  Then a publisher thread reads the messages
 * with seq > last sent from its own connection (rendered from the ticks
 * and the log), signs them (envelope) and sends them over nng, pub
 * (fan-out) or push (pipeline), non-blocking: nng is only the fast path.
 * It also sends a heartbeat {head} every heartbeat_ms.  A replay thread
 * answers req/rep requests "messages of stream with seq > after, at most
 * max" from the same tables.  A stream with a source table of its own
 * (conf.source, kasir-ingest's) is numbered the same way from that table.
 *
 * Consumer side, in the consuming service's schema C:
 *   C.stream_cursor(stream text PK, seq bigint)    last applied seq
 *   C.stream_poison(stream, seq, type, error, body) messages refused for good
 * A consumer thread with its own connection receives frames, verifies them
 * (envelope_open + msg_decode), drops seq <= cursor (duplicate), and applies
 * seq == cursor+1 through the callback inside ONE transaction that also
 * advances the cursor (SELECT ... FOR UPDATE on the cursor row, so two
 * instances never both apply).  A gap (seq > cursor+1), start-up, and a
 * heartbeat ahead of the cursor all trigger replay from the producer's
 * replay socket, in batches of up to batch_max messages per transaction.
 * Memory is bounded: nng receive buffers and the frame size are capped, and
 * out-of-order frames are not buffered (replay fetches them).
 *
 * Result: every committed message is applied exactly once, in seq order,
 * whatever is killed, restarted, dropped, duplicated or reordered.
 *
 * The tables are created by the backbone's migrations (stream_migrations,
 * below: the SQL files of common/stream, built into the library), which
 * the caller hands to db_migrate() before its own files.
 */
#ifndef KASIR_STREAM_H
#define KASIR_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include "db.h"
#include "../proto/message.h"

struct cJSON;
struct keyring;
struct metrics;
struct stream_producer;
struct stream_consumer;

struct stream_producer_conf {
	const char *stream;      /* "orders" */
	const char *schema;      /* schema holding stream_head/stream_out */
	const char *publish_url; /* bound: pub or push */
	const char *replay_url;  /* bound: rep */
	bool fanout;             /* true: pub/sub; false: push/pull */
	int64_t heartbeat_ms;    /* default 1000 */
	unsigned replay_max;     /* messages per replay answer, default 500 */
	size_t max_frame;        /* default ENVELOPE_FRAME_DEFAULT_MAX */
	struct db_conf db;       /* for the publisher and replay threads */
	/*
	 * Optional: a table of the service is the stream's source, so each
	 * message is written once, by its writer, as a row of that table
	 * (kasir-ingest's payment_event), instead of a stream_append().  The
	 * name of two functions of schema:
	 *   <source>_ids(last pg_snapshot, cur pg_snapshot) RETURNS TABLE
	 *     (ord bigint): the rows whose writing transaction is visible in
	 *     cur and not in last (last NULL: every row it has ever given),
	 *     ord a unique, stable key of the row (its order within a pass);
	 *   <source>(last, cur, lo bigint, hi bigint) RETURNS TABLE (ord
	 *     bigint, id uuid, type text, at timestamptz, tail text): the same
	 *     rows with lo <= ord <= hi, rendered: tail is the message body
	 *     after its seq.
	 * The sequencer numbers the first function's rows after its pending
	 * rows and stores ranges (S.stream_tick), never the rows; readers
	 * render them with the second (docs/backbone.md, "A table as the
	 * source"). Appends still work: they go to stream_pending and are
	 * moved into stream_out.  NULL: the stream's source is the schema's
	 * stream_log, where its appends go (log.sql).
	 */
	const char *source;
};

/* Starts the publisher and replay threads.  kr and m are borrowed and must
 * outlive the producer.  Strings in conf are copied. */
int stream_producer_start(const struct stream_producer_conf *conf,
                          const struct keyring *kr, struct metrics *m,
                          struct stream_producer **ret);
/* Stops the threads, closes sockets; NULL is fine. */
void stream_producer_stop(struct stream_producer *p);

/*
 * Appends one message to the producer's stream inside the transaction open
 * on db (the caller's connection).  data is checked against the type's
 * field table and borrowed.  On success *ret_pos (may be NULL) is its
 * position in stream_pending: the order the sequencer keeps among
 * messages of this stream, NOT its seq (a seq exists only after COMMIT,
 * when the sequencer has moved it).  The message is sequenced and sent
 * only after the caller commits and kicks.
 */
int stream_append(struct stream_producer *p, struct kasir_db *db,
                  enum msg_type type, const struct cJSON *data,
                  int64_t *ret_pos);
/*
 * Deferred appends, for a connection that appends many messages in one
 * transaction (a stream consumer applying a batch).  After
 * stream_defer_begin(p, db), stream_append(p, db, ...) checks the message
 * and only queues it in memory (ret_pos must then be NULL, or the queue is
 * flushed first and that append is immediate); appends from other
 * connections stay immediate.  stream_defer_flush(p, db) inserts the k
 * rows into stream_pending with one statement, in the order of the calls
 * (their pos order), inside db's open transaction: call it right before
 * COMMIT.
 * It empties the queue whatever its result (a failed flush means the
 * caller rolls back).  stream_defer_end(p, db) drops anything still
 * queued (after a ROLLBACK) and makes db's appends immediate again.
 * stream_defer_commit(p, db) is the flush and the COMMIT in one round
 * trip (db_commit_with(); db_commit() when nothing is queued), with
 * db_commit()'s outcomes: the transaction is ended whatever it returns.
 * At most STREAM_DEFER_SLOTS connections defer at once (-EBUSY);
 * each slot is used by its connection's thread only.
 */
#define STREAM_DEFER_SLOTS 64
int stream_defer_begin(struct stream_producer *p, struct kasir_db *db);
int stream_defer_flush(struct stream_producer *p, struct kasir_db *db);
int stream_defer_commit(struct stream_producer *p, struct kasir_db *db);
void stream_defer_end(struct stream_producer *p, struct kasir_db *db);

/* Wakes the sequencer (which wakes the publisher) after a COMMIT that
 * contained appends.  Thread-safe. */
void stream_producer_kick(struct stream_producer *p);
/* Highest seq known committed (as of the last publisher pass). */
int64_t stream_producer_head(const struct stream_producer *p);

/*
 * Apply callback: runs inside the consumer's transaction on db.  Return 0
 * when applied; KASIR_EREJECT when the message can never be applied (it is
 * recorded in stream_poison, logged, counted, and the cursor moves on);
 * any other negative value rolls the transaction back and the message is
 * retried after a backoff.
 */
typedef int (*stream_apply_fn)(void *arg, struct kasir_db *db,
                               const struct kasir_msg *msg);
/* The same for n consecutive messages at once (optimistic pass only, see
 * stream_consumer_conf.apply_batch): 0 when all are applied; anything
 * else and the batch is applied again message by message. */
typedef int (*stream_apply_batch_fn)(void *arg, struct kasir_db *db,
                                     const struct kasir_msg *const *msgs,
                                     size_t n);

struct stream_consumer_conf {
	const char *stream;     /* producer stream name */
	const char *schema;     /* consumer's schema (stream_cursor) */
	const char *url;        /* producer's publish socket (dialed) */
	const char *replay_url; /* producer's replay socket (dialed) */
	bool fanout;            /* must match the producer */
	bool fast_path;         /* false: ignore live frames, replay only */
	unsigned batch_max;     /* messages per transaction, default 256 */
	int64_t poll_ms;        /* replay poll when idle, default 2000 */
	size_t max_frame;
	struct db_conf db; /* the consumer's own connection */
	/* optional: called after each successful COMMIT (e.g. to kick the
	 * service's own producer when the callback appended messages) */
	void (*committed)(void *arg);
	/* optional: the producer the callback appends to.  Set, the batch is
	 * applied optimistically: no SAVEPOINT per message and the appends
	 * deferred (stream_defer_begin) and flushed once before COMMIT.  If
	 * any message fails, the batch is rolled back and applied again the
	 * careful way (a SAVEPOINT per message, immediate appends), which
	 * isolates the failing message exactly as without this option.  The
	 * callback must then keep no state outside the transaction. */
	struct stream_producer *defer;
	/* the same optimistic pass for a callback that appends nothing
	 * (implied by defer) */
	bool optimistic;
	/* optional, with defer or optimistic: applies the optimistic pass's
	 * messages in one call (e.g. with the statements of all of them
	 * pipelined) instead of one apply call each; apply stays the careful
	 * pass. */
	stream_apply_batch_fn apply_batch;
};

int stream_consumer_start(const struct stream_consumer_conf *conf,
                          const struct keyring *kr, struct metrics *m,
                          stream_apply_fn apply, void *arg,
                          struct stream_consumer **ret);
void stream_consumer_stop(struct stream_consumer *c);
/* Last applied seq and the producer's head as last heard (for lag). */
int64_t stream_consumer_cursor(const struct stream_consumer *c);
int64_t stream_consumer_head(const struct stream_consumer *c);

/* The backbone's own migrations, in order: "0000_stream" (stream_head,
 * stream_out (append-only), stream_cursor, stream_poison (append-only))
 * "0001_stream_pending" (the queue of appends waiting for the
 * sequencer), "0002_stream_source" (stream_head.snap, for a producer
 * with a source table), "0003_stream_tick" (a source stream's numbered
 * ranges) and "0004_stream_log" (the log appends go to, a source like any
 * other), with grants for the runtime role.  Every service schema
 * gets them: pass (stream_migrations, STREAM_MIGRATIONS) to db_migrate() and
 * db_migrations_applied(). */
#define STREAM_MIGRATIONS 5
extern const struct db_builtin stream_migrations[STREAM_MIGRATIONS];
/* The SQL of "0000_stream" for schema (db_builtin_sql()); on success
 * *ret_sql (caller frees) is the SQL text. */
int stream_migration_sql(const char *schema, const char *runtime_role,
                         char **ret_sql);

/* Metrics (labels stream="..."): kasir_stream_sent_total,
 * kasir_stream_received_total, kasir_stream_applied_total,
 * kasir_stream_duplicates_total, kasir_stream_gaps_total,
 * kasir_stream_replays_total, kasir_stream_rejected_total{reason=...},
 * kasir_stream_poison_total, kasir_stream_lag, kasir_stream_head. */

#endif
