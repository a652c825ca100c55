/*
 * replay.c - the slow path that makes the backbone exact: the producer's
 * replay thread answers signed requests from the table, and a consumer
 * sends such a request and waits for the answer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "envelope.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "stream_impl.h"

/*
 * Builds the answer to one replay request: 4-byte big-endian length + frame,
 * repeated, for rows with seq > after (at most max), bounded in bytes.
 */
static int
producer_replay_answer(struct stream_producer *p, int64_t after, int64_t max,
                       nng_msg **ret)
{
	char after_s[24], limit_s[24];
	const char *params[4] = {p->stream, after_s, limit_s, p->body_prefix};
	size_t cap = STREAM_REPLAY_ANSWER_MAX;
	PGresult *res = NULL;
	nng_msg *ans = NULL;
	int rc, rows;

	if (p->max_frame + 4 > cap)
		cap = p->max_frame + 4;
	if (max > p->replay_max)
		max = p->replay_max;
	stream_i64_text(after, after_s);
	stream_i64_text(max, limit_s);
	rc = db_ensure(p->rep_db);
	if (rc < 0)
		return rc;
	rc = db_exec(p->rep_db, &p->st_after_rep.st, params, &res);
	if (rc < 0)
		return rc;
	rc = stream_nng_err(nng_msg_alloc(&ans, 0));
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
		rc = stream_nng_err(nng_msg_append(ans, be, 4));
		if (rc == 0)
			rc = stream_nng_err(nng_msg_append(ans, frame, len));
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
		*ret_reason = stream_reject_reason_of(rc);
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

void *
producer_replay_main(void *arg)
{
	struct stream_producer *p = arg;

	while (!producer_stopping(p)) {
		enum reject_reason why = REJ_REPLAY;
		int64_t after = 0, max = 0;
		nng_msg *req = NULL, *ans = NULL;
		int rv;

		rv = stream_aio_recvmsg(p->rep, p->rep_aio, &req);
		if (stream_nng_stopped(rv))
			break;
		if (rv != 0)
			continue; /* timeout: re-check stopping */
		if (producer_replay_parse(p, req, &after, &max, &why) < 0) {
			/* unsigned or bad: no answer at all */
			metric_inc(p->m_rejected[why]);
			log_fields(LOG_DEBUG, LOG_F({"STREAM", p->stream}),
			           "replay request refused (%s)",
			           stream_reject_names[why]);
			nng_msg_free(req);
			continue;
		}
		nng_msg_free(req);
		/* database down: no answer; the consumer times out and
		 * retries with backoff */
		if (producer_replay_answer(p, after, max, &ans) < 0)
			continue;
		if (stream_aio_sendmsg(p->rep, p->rep_aio, ans) == 0)
			metric_inc(p->m_replays_served);
	}
	return NULL;
}

/* Sends a signed replay request for the messages after `after` through
 * aio (c->aio, or the fetch thread's).  The answer waits in the REQ socket
 * until consumer_replay_wait(); a newer request abandons an older one
 * (nng's REQ discards its answer). */
int
consumer_replay_send(struct stream_consumer *c, nng_aio *aio, int64_t after)
{
	cJSON *data = cJSON_CreateObject();
	char *body = NULL;
	int rc = -ENOMEM;

	if (data == NULL ||
	    cJSON_AddStringToObject(data, "stream", c->stream) == NULL ||
	    cJSON_AddNumberToObject(data, "after", (double)after) == NULL ||
	    cJSON_AddNumberToObject(data, "max", (double)c->batch_max) == NULL)
		goto out;
	rc = msg_encode(c->stream, 0, MSG_REPLAY_REQUEST, data, &body);
	if (rc < 0)
		goto out;
	rc = stream_seal_and_send_aio(c->kr, c->req, aio, body, strlen(body));
out:
	free(body);
	cJSON_Delete(data);
	return rc;
}

/* Waits for the answer to the last replay request sent. */
int
consumer_replay_wait(struct stream_consumer *c, nng_aio *aio, nng_msg **ret)
{
	nng_msg *ans = NULL;
	int rv;

	rv = stream_aio_recvmsg(c->req, aio, &ans);
	if (rv != 0) {
		log_fields(LOG_DEBUG, LOG_F({"STREAM", c->stream}),
		           "replay request: %s", nng_strerror(rv));
		return stream_nng_stopped(rv) ? -ECANCELED : stream_nng_err(rv);
	}
	metric_inc(c->m_replays);
	*ret = ans;
	return 0;
}

/* Sends a signed replay request and waits for the answer. */
int
consumer_replay_request(struct stream_consumer *c, nng_aio *aio, int64_t after,
                        nng_msg **ret)
{
	int rc = consumer_replay_send(c, aio, after);

	return rc < 0 ? rc : consumer_replay_wait(c, aio, ret);
}
