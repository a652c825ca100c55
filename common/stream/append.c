/*
 * append.c - stream_append() in the caller's transaction, and deferred
 * appends (stream_defer_*): one multi-row insert for everything a batch
 * appended.  Both only insert into the schema's stream_log (log.sql), or
 * stream_pending for a stream with a source table of its own (no shared
 * row lock either way): the seq is given after COMMIT by the sequencer
 * (sequencer.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "envelope.h"
#include "err.h"
#include "util.h"
#include "stream_impl.h"

/* "kasir1 " + key id + " " + 64 hex + "\n", and seq digits */
#define STREAM_FRAME_OVERHEAD (8 + ENVELOPE_KEY_ID_MAX + 1 + 64 + 1 + 20)

/* Drops what a slot queued (the slot's thread, or the last one out). */
void
producer_defer_clear(struct defer_slot *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->q[i].tail);
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
           const char *at, const char *tail)
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
	m->tail = strdup(tail);
	if (m->tail == NULL)
		return -ENOMEM;
	m->type = type;
	kasir_strlcpy(m->id, id, sizeof(m->id));
	kasir_strlcpy(m->at, at, sizeof(m->at));
	d->n++;
	return 0;
}

int
stream_append(struct stream_producer *p, struct kasir_db *db,
              enum msg_type type, const struct cJSON *data, int64_t *ret_pos)
{
	char id[40], at[40];
	char *body = NULL;
	const char *tail;
	PGresult *res = NULL;
	int rc;

	if (p == NULL || db == NULL || type <= MSG_UNKNOWN ||
	    type >= MSG_TYPE_COUNT || type == MSG_STREAM_HEARTBEAT ||
	    type == MSG_REPLAY_REQUEST)
		return -EINVAL;
	rc = uuid_v4(id, sizeof(id));
	if (rc < 0)
		return rc;
	time_rfc3339(now_real_ms(), at, sizeof(at));
	/* Encoded with seq 0: the sequencer puts the real seq in place of
	 * the 0 (the STREAM_FRAME_OVERHEAD counts its digits). */
	rc = msg_encode_full(p->stream, 0, id, at, type, data, &body);
	if (rc < 0)
		return rc;
	if (strlen(body) + STREAM_FRAME_OVERHEAD > p->max_frame) {
		rc = KASIR_ETOOBIG;
		goto out;
	}
	if ((rc = producer_body_tail(p, body, &tail)) < 0)
		goto out;

	{
		struct defer_slot *d = defer_find(p, db);
		if (d != NULL && ret_pos == NULL) {
			rc = defer_push(d, type, id, at, tail);
			goto out;
		}
		/* the caller wants its position now: what was queued goes
		 * first, so the stream keeps the order of the calls */
		if (d != NULL && (rc = stream_defer_flush(p, db)) < 0)
			goto out;
	}
	{
		const char *params[] = {p->stream, id, msg_type_name(type), at,
		                        tail};

		rc = db_exec(db, &p->st_append_one.st, params, &res);
	}
	if (rc < 0)
		goto out;
	if (PQntuples(res) != 1) {
		rc = KASIR_ESQL;
		goto out;
	}
	if (ret_pos != NULL)
		*ret_pos = db_get_i64(res, 0, 0);
out:
	PQclear(res);
	free(body);
	return rc;
}

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

/* Writes what db deferred with one statement: inside its transaction
 * (commit false), or, commit true, with also (when not NULL: the caller's
 * last statement, a consumer's cursor) and the COMMIT in one round trip. */
static int
defer_write(struct stream_producer *p, struct kasir_db *db, bool commit,
            const struct db_stmt *also, const char *const *also_params)
{
	struct defer_slot *d;
	struct db_array a[4] = {{0}};
	const char *params[5];
	const struct db_stmt *st[2];
	const char *const *ps[2];
	size_t n = 0;
	int rc = 0;

	if (p == NULL || db == NULL)
		return -EINVAL;
	d = defer_find(p, db);
	if (d == NULL)
		return -EINVAL;
	for (size_t i = 0; i < d->n; i++) {
		struct deferred_msg *m = &d->q[i];

		db_array_add(&a[0], m->id);
		db_array_add(&a[1], msg_type_name(m->type));
		db_array_add(&a[2], m->at);
		db_array_add(&a[3], m->tail);
	}
	params[0] = p->stream;
	for (int i = 0; i < 4 && d->n > 0; i++) {
		params[i + 1] = db_array_text(&a[i]);
		if (params[i + 1] == NULL) {
			rc = -ENOMEM;
			if (commit)
				db_rollback(db);
			goto out;
		}
	}
	if (d->n > 0) {
		st[n] = &p->st_append_many.st;
		ps[n++] = params;
	}
	if (also != NULL) {
		st[n] = also;
		ps[n++] = also_params;
	}
	if (!commit)
		rc = n > 0 ? db_exec(db, st[0], ps[0], NULL) : 0;
	else
		rc = n > 0 ? db_commit_with(db, n, st, ps) : db_commit(db);
out:
	/* Committed with the transaction, or rolled back with it: either
	 * way the queue is done. */
	producer_defer_clear(d);
	for (int i = 0; i < 4; i++)
		db_array_free(&a[i]);
	return rc;
}

int
producer_defer_commit_with(struct stream_producer *p, struct kasir_db *db,
                           const struct db_stmt *also,
                           const char *const *also_params)
{
	return defer_write(p, db, true, also, also_params);
}

int
stream_defer_flush(struct stream_producer *p, struct kasir_db *db)
{
	return defer_write(p, db, false, NULL, NULL);
}

int
stream_defer_commit(struct stream_producer *p, struct kasir_db *db)
{
	return defer_write(p, db, true, NULL, NULL);
}

void
stream_defer_end(struct stream_producer *p, struct kasir_db *db)
{
	struct defer_slot *d;

	if (p == NULL || db == NULL || (d = defer_find(p, db)) == NULL)
		return;
	producer_defer_clear(d);
	pthread_mutex_lock(&p->mu);
	d->db = NULL;
	pthread_mutex_unlock(&p->mu);
}
