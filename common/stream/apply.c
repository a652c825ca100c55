/*
 * apply.c - applying a batch of consecutive messages in one transaction
 * with the consumer's cursor: the optimistic mode (no savepoints, deferred
 * appends, all or nothing) and the careful one (a SAVEPOINT per message,
 * a refused message poisoned alone) it falls back to.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "liveness.h"
#include "stream_impl.h"

/* Opens the transaction and locks the cursor row: one round trip (the
 * row is created at 0 the first time). */
static int
consumer_begin(struct stream_consumer *c, int64_t *ret_cur)
{
	const char *params[] = {c->stream};
	PGresult *res = NULL;
	int rc;

	if ((rc = db_begin_with(c->db, &c->st_cur_lock.st, params, &res)) < 0)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		res = NULL;
		if ((rc = db_exec(c->db, &c->st_cur_init.st, params, NULL)) <
		        0 ||
		    (rc = db_exec(c->db, &c->st_cur_lock.st, params, &res)) <
		        0) {
			db_rollback(c->db);
			return rc;
		}
	}
	if (PQntuples(res) != 1) {
		PQclear(res);
		db_rollback(c->db);
		return KASIR_ESQL;
	}
	*ret_cur = db_get_i64(res, 0, 0);
	PQclear(res);
	return 0;
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
	stream_i64_text(it->seq, seq_s);
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

/* Writes the cursor and commits, in one round trip, with the messages
 * deferred on defer (when not NULL); 0 or the commit's error
 * (KASIR_EDBUNKNOWN included: the caller re-reads the cursor). */
static int
consumer_commit(struct stream_consumer *c, int64_t cur,
                struct stream_producer *defer)
{
	char cur_s[24];
	const char *params[] = {c->stream, cur_s};
	const struct db_stmt *st = &c->st_cur_set.st;
	const char *const *ps = params;

	stream_i64_text(cur, cur_s);
	if (defer != NULL)
		return producer_defer_commit_with(defer, c->db, st, params);
	return db_commit_with(c->db, 1, &st, &ps);
}

static void
consumer_log_poison(struct stream_consumer *c, const struct batch_item *it)
{
	char seq_s[24];

	stream_i64_text(it->seq, seq_s);
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
	rc = consumer_begin(c, &cur);
	if (rc < 0)
		return rc;
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
		/* the deferred messages, the cursor and COMMIT: one trip */
		rc = consumer_commit(c, cur, c->defer);
		stream_defer_end(c->defer, c->db);
		if (rc == KASIR_ESQL)
			return APPLY_CAREFULLY; /* refused, rolled back */
	} else {
		rc = consumer_commit(c, cur, NULL);
	}
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
consumer_apply_once(struct stream_consumer *c)
{
	int rc;

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

/* Applies the batch; a batch that fails (anything but a conflict with
 * another instance) marks the loop stalled until one goes through, so a
 * consumer stuck behind a lock is silent although its cursor reads
 * succeed (an outside fault attack, 2026-12-08: /readyz said 200 for as
 * long as an operator's session held one order's row). */
int
consumer_apply_batch(struct stream_consumer *c)
{
	int rc;

	if (c->batch.n == 0)
		return 0;
	rc = consumer_apply_once(c);
	if (rc >= 0)
		live_stalled(c->loop, false);
	else if (rc != KASIR_ECONFLICT)
		live_stalled(c->loop, true);
	return rc;
}
