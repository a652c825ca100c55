/*
 * sequencer.c - gives committed appends their gap-free seqs.
 *
 * Appenders (append.c) only insert into S.stream_log (S.stream_pending for
 * a stream with a source table of its own): a bigserial pos, no shared row
 * lock, so any number of transactions append to one stream at once and
 * commit in any order.  The sequencer thread of a producer,
 * woken by stream_producer_kick() right after a local COMMIT (under load
 * at most every STREAM_SEQUENCE_GAP_MS) and every STREAM_SEQUENCE_POLL_MS
 * otherwise, runs passes (an unkicked one first
 * asks, in one statement, whether anything is pending and where the head
 * is, so an idle stream costs one query per poll); one pass is one
 * transaction of its own connection, sent as one pipeline (BEGIN, 1, 2,
 * (3,) COMMIT: one round trip; the server still runs them one after another,
 * each statement with its own snapshot):
 *
 *   1. pg_try_advisory_xact_lock(hashtext('kasir.stream.<schema>.<stream>'))
 *      - one sequencer at a time per stream, also across processes (two
 *      kasir-ingest behind one proxy both append; whichever holds the
 *      lock sequences everybody's rows; a dead one's lock goes with its
 *      connection).  Its answer is also kept in the transaction's setting
 *      kasir.sequencer_locked, which statement 2 reads: without the lock
 *      it moves nothing.  Not taken: another pass is running; retry in
 *      STREAM_SEQUENCE_BUSY_MS (it may not have seen our rows).
 *   2. one statement, with a snapshot taken after the lock (READ
 *      COMMITTED): the committed pending rows (a source stream's appends,
 *      and rows appended before the log existed) in pos order (at most
 *      STREAM_SEQUENCE_BATCH) go into stream_out with seqs head+1..head+k,
 *      their body = body_prefix || seq || tail; they are deleted from
 *      stream_pending; stream_head becomes head+k.
 *   3. the stream's source, stream_log (log.sql) or a table of the
 *      service (stream_producer_conf.source, kasir-ingest's
 *      payment_event): one more statement numbers the source's rows whose
 *      writing transaction is visible in this statement's snapshot and
 *      was not in the snapshot the head row keeps from the last pass that
 *      took rows (PgQ's rule: nothing is decided by a watermark of ids),
 *      after the pending ones, and stores the new snapshot with the head.
 *      It writes no row per message: the set between two snapshots never
 *      changes, so the pass stores ranges of it (S.stream_tick: seqs
 *      first..last are the set's rows with ord in lo..hi, at most
 *      STREAM_TICK_ROWS each), and readers render the messages from the
 *      source (producer.c).  An append or a notification is then written
 *      once and numbered for the cost of reading its id.
 *   4. COMMIT (durable), then the publisher is kicked.
 *
 * stream_pending is a queue: nearly all of its tuples are dead (moved)
 * until autovacuum comes, and its statistics describe whatever it held
 * when last analyzed, so the planner readily picks a sequential scan
 * that reads every dead tuple of the last minute (measured: 29 ms per
 * idle probe, a third of PostgreSQL's time in a 50,000-event drain).
 * Both statements read it through its primary key instead: the probe asks
 * for the first pos (a scalar subquery with ORDER BY pos LIMIT 1; EXISTS
 * would drop the ordering and allow the sequential scan), and the
 * sequencer's connection runs with enable_seqscan off (producer.c: so do
 * the publisher's and the replay server's; a generic plan made while a
 * source table was small otherwise scans it whole once it has grown).
 * An index scan skips the entries that earlier scans marked dead.  The batch
 * CTE is MATERIALIZED: inlined into the DELETE's join (it is referenced once),
 * the planner preferred a merge join over the whole index, dead entries
 * included (100 ms a pass at 500 payments/s, measured).
 *
 * Why nothing is lost or doubled: a row is in exactly one of stream_pending
 * and stream_out at every commit (moved and deleted in one transaction);
 * a row invisible to a pass (its writer has not committed yet, even with a
 * lower pos than rows already sequenced) simply stays for a later pass:
 * there is no watermark to fall behind.  The seqs stay gap-free because
 * only a lock holder writes stream_head, and it reads it after taking the
 * lock.  A message is published only after the pass that sequenced it
 * committed, so a seq a consumer has seen is never given again.  For the
 * log and any source: the rows numbered are exactly the rows visible in
 * the snapshot stored with the head (docs/backbone.md, "A table as the
 * source"), and a pass adds those visible in its own and not in that one.
 *
 * Order: pos follows the order of the appends (nextval), so two messages
 * of one connection keep their order, and a message whose transaction
 * began after another's COMMIT always gets the higher seq (it cannot be
 * visible to a pass that does not also see the earlier one; within one
 * pass the log's rows are numbered in pos order).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "stream_impl.h"

#define STREAM_SEQUENCE_BATCH   5000   /* rows per pass, at most */
#define STREAM_SEQUENCE_BATCH_S "5000" /* the same, as a parameter */
#define STREAM_SEQUENCE_BUSY_MS 2      /* retry while another pass runs */
/* Rows of a source stream per stream_tick range (tick.sql), as the
 * parameter's text.  Readers do not depend on it (producer.c), but each
 * renders the whole of every range its window touches, so at most twice
 * this minus two messages more than it asked for: a replay of 500 over
 * ranges of 256 rendered up to 1,010 messages, about 1.5x on average; 64
 * keeps it under 626, for one tick row per 64 notifications. */
#define STREAM_TICK_ROWS "64"
/* Under load a kick comes with every local COMMIT: passes start at most
 * every gap ms, so that each moves more rows for its fixed cost (a
 * transaction, a durable COMMIT, one round trip).  The gap follows the
 * rows the stream's head advanced since this sequencer's last pass (its
 * own pass's and any other process's: two kasir-ingest processes each
 * moved half the rows, so each kept the minimum gap and they ran 3-7
 * times the passes of one process, measured in docs/performance.md),
 * one ms per STREAM_SEQUENCE_GAP_ROWS rows
 * within [STREAM_SEQUENCE_GAP_MS, STREAM_SEQUENCE_GAP_MAX_MS]: it stays
 * at the minimum below STREAM_SEQUENCE_GAP_ROWS messages per ms (4,000/s:
 * every stream of 500 payments/s, whose latency counts) and grows to the
 * maximum above (kasir-ingest at its maximum, a 15 ms gap against 3 ms:
 * about 20% less server CPU per notification, measured in
 * docs/performance.md).  An idle stream's first message waits for
 * nothing. */
#define STREAM_SEQUENCE_GAP_MS     3
#define STREAM_SEQUENCE_GAP_MAX_MS 15
#define STREAM_SEQUENCE_GAP_ROWS   4

/* The gap before the next pass, after `moved` rows since the last. */
static int64_t
sequence_gap_ms(int64_t moved)
{
	int64_t g = moved / STREAM_SEQUENCE_GAP_ROWS;

	if (g < STREAM_SEQUENCE_GAP_MS)
		return STREAM_SEQUENCE_GAP_MS;
	return g > STREAM_SEQUENCE_GAP_MAX_MS ? STREAM_SEQUENCE_GAP_MAX_MS : g;
}

int
producer_body_tail(const struct stream_producer *p, const char *body,
                   const char **ret_tail)
{
	size_t n = strlen(p->body_prefix);

	/* msg_encode_full() writes v, stream, seq first; anything else is a
	 * programmer error (a changed encoder), never a stored body */
	if (strncmp(body, p->body_prefix, n) != 0 || body[n] != '0' ||
	    body[n + 1] != ',')
		return -EPROTO;
	*ret_tail = body + n + 1;
	return 0;
}

int
producer_sequencer_stmts(struct stream_producer *p)
{
	const char *s = p->schema, *n = p->stream;
	char src_probe[192 + 3 * STREAM_SCHEMA_MAX] = "";
	int rc;

	snprintf(p->body_prefix, sizeof(p->body_prefix),
	         "{\"v\":%d,\"stream\":\"%s\",\"seq\":", KASIR_PROTO_VERSION,
	         p->stream);
	snprintf(p->lock_key, sizeof(p->lock_key), "kasir.stream.%s.%s", s, n);
	rc = stream_stmt_build(&p->st_seq_lock, "seq_lock", s, n, 1,
	                       "SELECT set_config('kasir.sequencer_locked', "
	                       "pg_try_advisory_xact_lock(hashtext($1))::text, "
	                       "true)");
	if (rc == 0)
		snprintf(
		    src_probe, sizeof(src_probe),
		    " OR EXISTS (SELECT 1 FROM (SELECT (SELECT snap FROM "
		    "%s.stream_head WHERE stream = $1) AS snap) h, "
		    "LATERAL %s.%s_ids(%sh.snap, pg_current_snapshot()) f)",
		    s, s, p->source, producer_src_args(p));
	if (rc == 0)
		rc = stream_stmt_build(
		    &p->st_seq_probe, "seq_probe", s, n, 1,
		    "SELECT (SELECT pos FROM %s.stream_pending "
		    "WHERE stream = $1 ORDER BY pos LIMIT 1) IS NOT NULL%s, "
		    "coalesce((SELECT seq FROM %s.stream_head "
		    "WHERE stream = $1), 0)",
		    s, src_probe, s);
	if (rc == 0)
		rc = stream_stmt_build(
		    &p->st_seq_move, "seq_move", s, n, 3,
		    "WITH batch AS MATERIALIZED (SELECT pos "
		    "FROM %s.stream_pending WHERE stream = $1 "
		    "AND current_setting('kasir.sequencer_locked', true) "
		    "= 'true' ORDER BY pos LIMIT $2::bigint), "
		    "base AS (SELECT coalesce((SELECT seq FROM %s.stream_head "
		    "WHERE stream = $1), 0) AS seq), "
		    "gone AS (DELETE FROM %s.stream_pending d USING batch b "
		    "WHERE d.stream = $1 AND d.pos = b.pos "
		    "RETURNING d.pos, d.id, d.type, d.at, d.tail), "
		    "moved AS (INSERT INTO %s.stream_out (stream, seq, id, "
		    "type, at, body) SELECT $1, q.seq, q.id, q.type, q.at, "
		    "$3::text || q.seq || q.tail FROM (SELECT g.id, g.type, "
		    "g.at, g.tail, base.seq + row_number() OVER "
		    "(ORDER BY g.pos) AS seq FROM gone g, base) q "
		    "RETURNING seq), "
		    "head AS (INSERT INTO %s.stream_head AS h (stream, seq) "
		    "SELECT $1, max(seq) FROM moved HAVING count(*) > 0 "
		    "ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq "
		    "RETURNING seq) "
		    "SELECT (SELECT count(*) FROM moved), "
		    "coalesce((SELECT seq FROM head), (SELECT seq FROM base))",
		    s, s, s, s, s);
	/* The source's new rows, numbered after the pending ones (this
	 * statement sees statement 2's head): "new" is decided by snapshots
	 * alone, PgQ's way.  cur is this statement's own snapshot (taken
	 * after the lock), so a row is taken exactly when this statement can
	 * see it; the head row keeps cur as the next pass's last.  Every row
	 * visible in last was sequenced by an earlier pass, and no other row
	 * was, so a writer that commits out of id order is taken by the
	 * first pass that sees it, once.  No LIMIT: cutting the set would
	 * need a snapshot between the two, so a pass takes everything
	 * committed since the last one.  The set, in ord order, is cut into
	 * ranges of at most $2 rows, one stream_tick row each: seqs
	 * first..last are its rows with ord in lo..hi (tick.sql).
	 *
	 * The source is given columns (h.snap, cur.s), never sub-selects,
	 * here and in the probe: PostgreSQL inlines a SQL function only when
	 * no argument is a sub-select, and runs any other through its SQL
	 * function executor, which plans the body again at every call (a
	 * pass of 4 rows, run in a pgbench loop: 0.33 ms against 0.19
	 * inlined).  ingest_source checks that no pass calls it. */
	if (rc == 0)
		rc = stream_stmt_build(
		    &p->st_seq_source, "seq_source", s, n, 2,
		    "WITH h AS MATERIALIZED (SELECT (SELECT seq FROM "
		    "%s.stream_head WHERE stream = $1) AS seq, (SELECT snap "
		    "FROM %s.stream_head WHERE stream = $1) AS snap), "
		    "cur AS MATERIALIZED (SELECT pg_current_snapshot() AS s), "
		    "src AS MATERIALIZED (SELECT f.ord, row_number() OVER "
		    "(ORDER BY f.ord) - 1 AS i FROM h, cur, LATERAL "
		    "%s.%s_ids(%sh.snap, cur.s) f WHERE "
		    "current_setting('kasir.sequencer_locked', true) = "
		    "'true'), "
		    "base AS (SELECT coalesce((SELECT seq FROM h), 0) AS seq), "
		    "moved AS (INSERT INTO %s.stream_tick (stream, first_seq, "
		    "last_seq, lo, hi, prev, snap) SELECT $1, base.seq + "
		    "min(src.i) + 1, base.seq + max(src.i) + 1, min(src.ord), "
		    "max(src.ord), (SELECT snap FROM h), (SELECT s FROM cur) "
		    "FROM src, base GROUP BY src.i / $2::bigint, base.seq "
		    "RETURNING last_seq, last_seq - first_seq + 1 AS n), "
		    "head AS (INSERT INTO %s.stream_head AS x (stream, seq, "
		    "snap) SELECT $1, max(last_seq), (SELECT s FROM cur) FROM "
		    "moved HAVING count(*) > 0 ON CONFLICT (stream) DO UPDATE "
		    "SET seq = excluded.seq, snap = excluded.snap RETURNING "
		    "seq) "
		    "SELECT (SELECT coalesce(sum(n), 0) FROM moved), "
		    "coalesce((SELECT seq FROM head), (SELECT seq FROM base))",
		    s, s, s, p->source, producer_src_args(p), s, s);
	return rc;
}

/* Takes the head a pass (of any process) committed: the publisher sends
 * what this process has not sent yet. */
static void
sequence_saw_head(struct stream_producer *p, int64_t head, int64_t moved)
{
	int64_t before = __atomic_load_n(&p->head, __ATOMIC_RELAXED);

	producer_set_head(p, head);
	if (moved > 0 || head > before)
		producer_publisher_kick(p);
}

/* An unkicked pass's first question: is anything pending?  0 and
 * *ret_pending, or the error (outside any transaction). */
static int
sequence_probe(struct stream_producer *p, bool *ret_pending)
{
	const char *params[] = {p->stream};
	PGresult *res = NULL;
	int rc;

	if ((rc = db_ensure(p->seq_db)) < 0)
		return rc;
	if ((rc = db_exec(p->seq_db, &p->st_seq_probe.st, params, &res)) < 0)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return KASIR_ESQL;
	}
	*ret_pending = db_get(res, 0, 0) != NULL && db_get(res, 0, 0)[0] == 't';
	sequence_saw_head(p, db_get_i64(res, 0, 1), 0);
	PQclear(res);
	return 0;
}

/*
 * One pass (see the top of the file): one pipeline, one round trip.  0
 * with *ret_moved rows sequenced (*ret_full when the pending batch was
 * full: there may be more; *ret_busy when another sequencer held the
 * lock), or the error; the transaction is ended either way (a COMMIT whose
 * answer was lost is fine: the next pass reads the truth).
 */
static int
sequence_pass(struct stream_producer *p, int64_t *ret_moved, bool *ret_full,
              bool *ret_busy)
{
	const struct db_stmt *const st[] = {
	    &p->st_seq_lock.st, &p->st_seq_move.st, &p->st_seq_source.st};
	const char *lock_params[] = {p->lock_key};
	const char *move_params[] = {p->stream, STREAM_SEQUENCE_BATCH_S,
	                             p->body_prefix};
	const char *source_params[] = {p->stream, STREAM_TICK_ROWS};
	const char *const *params[] = {lock_params, move_params, source_params};
	const size_t nst = 3;
	PGresult *res[3] = {NULL, NULL, NULL};
	int64_t moved = 0, head = 0, pending_moved = 0;
	bool got = false;
	int rc;

	*ret_moved = 0;
	*ret_full = false;
	*ret_busy = false;
	if ((rc = db_ensure(p->seq_db)) < 0)
		return rc;
	/* BEGIN, lock, move (, source), COMMIT: the transaction is ended
	 * either way */
	if ((rc = db_tx_once(p->seq_db, nst, st, params, res)) < 0)
		return rc;
	for (size_t i = 0; i < nst && rc == 0; i++)
		if (PQntuples(res[i]) != 1)
			rc =
			    KASIR_ESQL; /* committed, but not a pass's answer */
	if (rc == 0) {
		got = db_get(res[0], 0, 0) != NULL &&
		      strcmp(db_get(res[0], 0, 0), "true") == 0;
		pending_moved = db_get_i64(res[1], 0, 0);
		moved = pending_moved;
		head = db_get_i64(res[2], 0, 1);
		moved += db_get_i64(res[2], 0, 0);
	}
	for (size_t i = 0; i < nst; i++)
		PQclear(res[i]);
	if (rc < 0)
		return rc;
	if (!got) {
		metric_inc(p->m_seq_busy);
		*ret_busy = true;
		return 0;
	}
	metric_inc(p->m_seq_passes);
	metric_add(p->m_sequenced, (uint64_t)moved);
	/* ours, or another process's rows this process has not sent */
	sequence_saw_head(p, head, moved);
	*ret_moved = moved;
	*ret_full = pending_moved == STREAM_SEQUENCE_BATCH;
	return 0;
}

/*
 * A pass the server refused (not a lost connection: those show in the
 * loop's liveness) leaves the stream's messages pending, so consumers
 * see nothing new: an operator matter, logged once per failing spell
 * and counted (kasir_stream_sequencer_failures_total).
 */
static void
sequence_note(struct stream_producer *p, int rc, bool *failing)
{
	if (rc == KASIR_ESQL) {
		char also[32 + 2 * STREAM_SCHEMA_MAX] = "";

		metric_inc(p->m_seq_failures);
		snprintf(also, sizeof(also), " and in what %s.%s_ids() gives",
		         p->schema, p->source);
		if (!*failing)
			log_fields(LOG_ERR, LOG_F({"STREAM", p->stream}),
			           "sequencing stream %s failed: %s; its "
			           "messages wait in %s.stream_pending%s, "
			           "retrying",
			           p->stream, db_last_error(p->seq_db),
			           p->schema, also);
		*failing = true;
	} else if (rc == 0 && *failing) {
		log_fields(LOG_NOTICE, LOG_F({"STREAM", p->stream}),
		           "sequencing stream %s works again", p->stream);
		*failing = false;
	}
}

void *
producer_sequencer_main(void *arg)
{
	struct stream_producer *p = arg;
	int64_t next = 0, moved = 0, last_pass = 0,
	        gap = STREAM_SEQUENCE_GAP_MS, seen = -1, head, advanced;
	bool busy = false, full = false, failing = false, kicked, pending;
	int rc;

	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		int64_t now = now_mono_ms();

		if (!p->seq_kicked && now < next) {
			stream_cond_wait_ms(&p->seq_cv, &p->mu, next - now);
			continue;
		}
		if (p->seq_kicked && !full && now < last_pass + gap) {
			stream_cond_wait_ms(&p->seq_cv, &p->mu,
			                    last_pass + gap - now);
			continue;
		}
		kicked = p->seq_kicked || busy || moved > 0;
		p->seq_kicked = false;
		pthread_mutex_unlock(&p->mu);

		/* a poll with nothing pending is one query; a kick, a retry
		 * and the pass after a busy one go straight to the pass */
		pending = true;
		moved = 0;
		full = false;
		busy = false;
		if (!kicked && sequence_probe(p, &pending) < 0)
			pending = false; /* db_ensure paces the reconnects */
		if (pending) {
			last_pass = now_mono_ms();
			rc = sequence_pass(p, &moved, &full, &busy);
			sequence_note(p, rc, &failing);
			/* the gap follows the stream, not this process's
			 * passes: with two processes each pass moves about
			 * half of what the head advanced since the last one */
			head = __atomic_load_n(&p->head, __ATOMIC_RELAXED);
			advanced = seen >= 0 ? head - seen : 0;
			seen = head;
			gap = sequence_gap_ms(advanced > moved ? advanced
			                                       : moved);
		}
		next = now_mono_ms() +
		       (busy ? STREAM_SEQUENCE_BUSY_MS : p->seq_poll_ms);

		pthread_mutex_lock(&p->mu);
		if (full)
			p->seq_kicked = true; /* there may be more */
	}
	pthread_mutex_unlock(&p->mu);
	/* What this process committed just before it stops: best effort,
	 * and only on a live connection (never a connect at shutdown); a
	 * restart or the other process sequences anything left. */
	if (db_is_up(p->seq_db))
		sequence_pass(p, &moved, &full, &busy);
	return NULL;
}
