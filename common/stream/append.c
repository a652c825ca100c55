/*
 * append.c - stream_append() in the caller's transaction, and deferred
 * appends (stream_defer_*): one head update and one multi-row insert for
 * everything a batch appended.
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
	stream_i64_text(seq, seq_s);
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
	stream_i64_text((int64_t)d->n, k_s);
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
		stream_i64_text(first + (int64_t)i, seq_s);
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
	producer_defer_clear(d);
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
	producer_defer_clear(d);
	pthread_mutex_lock(&p->mu);
	d->db = NULL;
	pthread_mutex_unlock(&p->mu);
}
