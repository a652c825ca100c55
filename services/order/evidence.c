/*
 * evidence.c - the evidence path of kasir-order (evidence.h): payment
 * evidence from the "ingest" stream (payment.notification) and the
 * "recon" stream (status.check), one message or a whole batch, by the
 * same code.
 *
 * Inside the consumer's transaction (which also advances the stream
 * cursor), per round of the batch (at most one message of each order):
 * store.c locks the orders and reads them, confirm.c decides each message
 * (with state.c), this file turns each decision into a list of effects,
 * and store.c writes them and appends the order events.  Idempotent twice
 * over: the cursor drops a replayed message, orders.evidence is unique on
 * (source, ref) (a recorded one is a duplicate here), and the state
 * machine answers "noop" to the same settlement seen again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "err.h"
#include "evidence.h"
#include "log.h"
#include "metrics.h"
#include "order.h"
#include "stream.h"
#include "util.h"

/* Messages per call: the backbone's own bound on a consumer's batch
 * (STREAM_BATCH_LIMIT, common/stream/consumer.c); a larger call is a bug. */
#define EVIDENCE_BATCH_MAX 10000

/* Reads msg; KASIR_EREJECT when it is not evidence kasir-order can use. */
static int
evidence_parse(const struct kasir_msg *msg, struct evidence_msg *e)
{
	memset(e, 0, sizeof(*e));
	if (msg->type == MSG_PAYMENT_NOTIFICATION) {
		e->source = "ingest";
		e->kind = "notification";
		e->ref = msg_int(msg, "event_id");
		e->received_at = msg_str(msg, "received_at");
		e->raw = msg_obj(msg, "raw");
		e->in.kind = EVIDENCE_NOTIFICATION;
		if (e->raw != NULL) {
			const cJSON *ra = cJSON_GetObjectItemCaseSensitive(
			    e->raw, "refund_amount");
			if (cJSON_IsString(ra))
				e->refund_amount = ra->valuestring;
		}
	} else if (msg->type == MSG_STATUS_CHECK) {
		const char *verdict = msg_str(msg, "verdict");
		e->source = "recon";
		e->ref = msg_int(msg, "check_id");
		e->received_at = msg_str(msg, "checked_at");
		e->checked_at = e->received_at;
		e->check_past_expiry = msg_bool(msg, "past_expiry");
		e->confirm = msg_bool(msg, "confirm");
		e->raw = msg->data;
		e->refund_amount = msg_str(msg, "refund_amount");
		if (strcmp(verdict, "status") == 0) {
			e->kind = "status";
			e->in.kind = EVIDENCE_STATUS;
		} else if (strcmp(verdict, "not_found") == 0) {
			e->kind = "not_found";
			e->in.kind = EVIDENCE_NOT_FOUND;
		} else if (strcmp(verdict, "expired") == 0) {
			e->kind = "expired";
			e->in.kind = EVIDENCE_EXPIRED;
		} else {
			return KASIR_EREJECT;
		}
	} else {
		return KASIR_EREJECT;
	}
	e->order_id = msg_str(msg, "order_id");
	e->in.transaction_status = msg_str(msg, "transaction_status");
	e->in.fraud_status = msg_str(msg, "fraud_status");
	e->in.gross_amount = msg_str(msg, "gross_amount");
	e->in.currency = msg_str(msg, "currency");
	e->in.settlement_time = msg_str(msg, "settlement_time");
	e->payment_type = msg_str(msg, "payment_type");
	e->transaction_id = msg_str(msg, "transaction_id");
	e->in.transaction_id = e->transaction_id;
	if (e->in.kind == EVIDENCE_EXPIRED)
		kasir_strlcpy(e->state_key, "expire", sizeof(e->state_key));
	else if (e->in.kind != EVIDENCE_NOT_FOUND &&
	         midtrans_state_key(e->in.transaction_status,
	                            e->in.fraud_status, e->in.settlement_time,
	                            e->state_key, sizeof(e->state_key)) < 0)
		e->state_key[0] = '\0';
	if (e->order_id == NULL || e->received_at == NULL || e->ref <= 0)
		return KASIR_EREJECT;
	return 0;
}

/* {"source", "ref"}: the evidence an order event names. */
static cJSON *
evidence_ref_json(const struct evidence_msg *e)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "source", e->source);
	cJSON_AddNumberToObject(o, "ref", (double)e->ref);
	return o;
}

/* An object holding only "evidence" (the start of most events' fields). */
static cJSON *
fields_with_ref(const struct evidence_msg *e)
{
	cJSON *d = cJSON_CreateObject(), *ev = evidence_ref_json(e);

	if (d == NULL || ev == NULL) {
		cJSON_Delete(d);
		cJSON_Delete(ev);
		return NULL;
	}
	cJSON_AddItemToObject(d, "evidence", ev);
	return d;
}

/* What a piece of evidence said and when it arrived, for kasir-reconciler
 * (its watch list learns the payment type and, from notifications, that
 * webhooks arrive): on order.evidence, and on the event of the transition
 * the evidence made, which then goes without an order.evidence. */
static void
evidence_said_add(cJSON *d, const struct evidence_msg *e)
{
	cJSON_AddStringToObject(
	    d, "transaction_status",
	    e->in.transaction_status ? e->in.transaction_status : e->kind);
	if (e->payment_type != NULL)
		cJSON_AddStringToObject(d, "payment_type", e->payment_type);
	cJSON_AddStringToObject(d, "received_at", e->received_at);
}

/* order.evidence: what was received and what it did (no snapshot), for
 * evidence that made no transition. */
static cJSON *
evidence_event(const struct evidence_msg *e, bool applied,
               enum order_status after)
{
	cJSON *d = cJSON_CreateObject(), *ev = evidence_ref_json(e);

	if (d == NULL || ev == NULL) {
		cJSON_Delete(d);
		cJSON_Delete(ev);
		return NULL;
	}
	cJSON_AddStringToObject(d, "order_id", e->order_id);
	cJSON_AddItemToObject(d, "evidence", ev);
	if (e->transaction_id != NULL)
		cJSON_AddStringToObject(d, "transaction_id", e->transaction_id);
	evidence_said_add(d, e);
	cJSON_AddBoolToObject(d, "applied", applied);
	cJSON_AddStringToObject(d, "order_status", order_status_name(after));
	return d;
}

/* confirm.request: what is claimed (confirm_request_fields) and, with
 * said, what the held evidence said, which order.evidence would have
 * carried (the reconciler learns the payment and that webhooks flow from
 * it: services/reconciler/watchlist.c). */
static cJSON *
confirm_request_said(const struct evidence_msg *e, bool said)
{
	cJSON *d = confirm_request_fields(e), *o;

	if (d == NULL || !said)
		return d;
	if ((o = cJSON_AddObjectToObject(d, "said")) == NULL) {
		cJSON_Delete(d);
		return NULL;
	}
	if (e->transaction_id != NULL)
		cJSON_AddStringToObject(o, "transaction_id", e->transaction_id);
	evidence_said_add(o, e);
	return d;
}

/* The event of a transition to `to` and its fields; -EINVAL for a status
 * no transition reaches. */
static int
transition_event(const struct evidence_msg *e, enum order_status to,
                 int *ret_type, cJSON **ret_fields)
{
	cJSON *d;
	char at[40];
	int type;

	switch (to) {
	case ORDER_PAID:
		type = MSG_ORDER_PAID;
		break;
	case ORDER_FAILED:
		type = MSG_ORDER_FAILED;
		break;
	case ORDER_EXPIRED:
		type = MSG_ORDER_EXPIRED;
		break;
	case ORDER_CANCELLED:
		type = MSG_ORDER_CANCELLED;
		break;
	case ORDER_REFUNDED:
		type = MSG_ORDER_REFUNDED;
		break;
	default:
		return -EINVAL;
	}
	if ((d = fields_with_ref(e)) == NULL)
		return -ENOMEM;
	evidence_said_add(d, e); /* the transaction id is the snapshot's */
	if (to == ORDER_PAID) {
		time_rfc3339(now_real_ms(), at, sizeof(at));
		cJSON_AddStringToObject(d, "paid_at", at);
	}
	/* reversed / disputed are flags on the order (GET shows them); the
	 * message carries the fields proto defines */
	if (to == ORDER_REFUNDED)
		cJSON_AddBoolToObject(d, "partial", false);
	*ret_type = type;
	*ret_fields = d;
	return 0;
}

/*
 * order.refunded with partial = true: the first partial refund of an order
 * that stays PAID (the notifier tells the customer, keeping the receipt).
 * refund_amount only when the evidence states it as a Midtrans amount;
 * otherwise omitted (the notifier then sends no notice: see its README).
 */
static cJSON *
partial_refund_fields(const struct evidence_msg *e)
{
	cJSON *d = fields_with_ref(e);
	int64_t rupiah;

	if (d == NULL)
		return NULL;
	if (midtrans_amount_parse(e->refund_amount, &rupiah) == 0 && rupiah > 0)
		cJSON_AddNumberToObject(d, "refund_amount", (double)rupiah);
	else
		log_order(LOG_WARNING, e->order_id,
		          "partial refund without a readable refund_amount:"
		          " order.refunded carries none");
	cJSON_AddBoolToObject(d, "partial", true);
	return d;
}

/* What the decision d changes on the order row. */
static void
evidence_update(const struct evidence_msg *e, const struct order_decision *d,
                struct order_update *u)
{
	/* Transaction id and payment type come only from evidence whose
	 * amount matched (never from evidence we refused): the first one
	 * seen, then the one of each transition, so a PAID, FAILED or
	 * REFUNDED order names the transaction that decided it. */
	*u = (struct order_update){
	    .order_id = e->order_id,
	    .status = d->transition ? order_status_name(d->to) : NULL,
	    .learn_txn = d->result != EV_FLAGGED && d->result != EV_INVALID &&
	                 (e->transaction_id != NULL || e->payment_type != NULL),
	    .transaction_id = e->transaction_id,
	    .payment_type = e->payment_type,
	    .txn_from_transition = d->transition,
	    .flags = d->flags,
	    .flag_reason = d->flag_reason ? d->flag_reason : d->reason,
	    .awaiting = d->confirm == CONFIRM_HOLD ? e->state_key : NULL,
	    .awaiting_clear = d->confirm == CONFIRM_CLEAR,
	    .contradicted = d->contradicted,
	    /* a Status API answer proves the payment as of its check, so
	     * a later answer (a reversal) is never older than the payment */
	    .paid_at = e->checked_at,
	};
}

static bool
update_needed(const struct order_update *u)
{
	return u->status != NULL || u->learn_txn || u->flags != 0 ||
	       u->awaiting != NULL || u->awaiting_clear;
}

/* Appends an effect to l; -ENOMEM (its data is then deleted). */
static int
effect_add(struct effect_list *l, const struct effect *f)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct effect *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL) {
			cJSON_Delete(f->data);
			return -ENOMEM;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *f;
	return 0;
}

/* Appends an order event (data: its fields, taken over; NULL: ENOMEM). */
static int
event_add(struct effect_list *l, struct evidence_rec *r, int type, cJSON *data,
          bool snapshot)
{
	if (data == NULL)
		return -ENOMEM;
	return effect_add(l, &(struct effect){.kind = EFFECT_EVENT,
	                                      .rec = r,
	                                      .type = type,
	                                      .data = data,
	                                      .snapshot = snapshot});
}

static int
plain_add(struct effect_list *l, enum effect_kind kind, struct evidence_rec *r)
{
	return effect_add(l, &(struct effect){.kind = kind, .rec = r});
}

/*
 * Decides message r on its order as store_evidence_lock() read it and
 * appends what the decision does to l, in the order it happens: the
 * evidence row, the transition, the order row, the transition's event,
 * the grant or revocation (with their events), the partial refund's
 * event, order.flagged, the confirm.request of a held notification (which
 * says what it said), or else order.evidence when there was no
 * transition.
 */
static int
evidence_plan(const struct order_service *s, struct evidence_rec *r,
              struct effect_list *l)
{
	const struct order_decision *d = &r->d;
	struct evidence_msg *e = &r->e;
	struct order_update u;
	int rc, type;
	cJSON *fields;

	if (r->fate == EV_FATE_UNKNOWN)
		return plain_add(l, EFFECT_KEEP_UNKNOWN, r);
	if (r->fate == EV_FATE_DUP)
		return 0;
	e->in.past_expiry = r->before.past_expiry &&
	                    (e->checked_at == NULL || e->check_past_expiry);
	e->in.checked_before_paid = r->before.checked_before_paid;
	evidence_decide(s, e, &r->before, &r->d);
	r->after = d->transition ? d->to : r->before.status;

	if ((rc = plain_add(l, EFFECT_RECORD, r)) < 0)
		return rc;
	if (d->transition && (rc = plain_add(l, EFFECT_TRANSITION, r)) < 0)
		return rc;
	evidence_update(e, d, &u);
	if (update_needed(&u) &&
	    (rc = effect_add(l, &(struct effect){.kind = EFFECT_UPDATE,
	                                         .rec = r,
	                                         .u = u})) < 0)
		return rc;
	if (d->transition) {
		if ((rc = transition_event(e, d->to, &type, &fields)) < 0 ||
		    (rc = event_add(l, r, type, fields, true)) < 0)
			return rc;
	}
	if (d->grant_access && (rc = plain_add(l, EFFECT_GRANT, r)) < 0)
		return rc;
	if (d->revoke_access && (rc = plain_add(l, EFFECT_REVOKE, r)) < 0)
		return rc;
	/* the order's first partial refund (stored by this decision's
	 * update); a repeated one finds partial_refund set and says nothing */
	if ((d->flags & OFLAG_PARTIAL_REFUND) && r->after == ORDER_PAID &&
	    !r->before.partial_refund &&
	    (rc = event_add(l, r, MSG_ORDER_REFUNDED, partial_refund_fields(e),
	                    true)) < 0)
		return rc;
	if (d->flags & OFLAG_FLAGGED) {
		fields = cJSON_CreateObject();
		if (fields != NULL)
			cJSON_AddStringToObject(fields, "reason",
			                        d->flag_reason ? d->flag_reason
			                                       : d->reason);
		if ((rc = event_add(l, r, MSG_ORDER_FLAGGED, fields, true)) < 0)
			return rc;
	}
	/* A transition's event already says what the evidence said
	 * (evidence_said_add), and so does the confirm.request of a held
	 * notification (its "said"): no order.evidence for either, one
	 * message fewer per payment in each mode. */
	if (d->confirm == CONFIRM_HOLD)
		return event_add(l, r, MSG_CONFIRM_REQUEST,
		                 confirm_request_said(e, !d->transition), true);
	if (d->transition)
		return 0;
	return event_add(l, r, MSG_ORDER_EVIDENCE,
	                 evidence_event(e, d->result == EV_APPLIED, r->after),
	                 false);
}

/* Counts and logs what r did (once it is part of the transaction).
 * Counted before COMMIT: a rolled-back apply is retried and counted
 * again, so these are "decisions taken", close enough for alerts. */
static void
evidence_account(struct order_service *s, const struct evidence_rec *r)
{
	const struct evidence_msg *e = &r->e;
	const struct order_decision *d = &r->d;

	if (r->fate == EV_FATE_UNKNOWN) {
		metric_inc(s->m.unknown);
		log_order(LOG_WARNING, e->order_id,
		          "%s evidence for unknown order, kept for operators",
		          e->source);
		return;
	}
	if (r->fate == EV_FATE_DUP) {
		log_order(LOG_INFO, e->order_id,
		          "%s evidence %s already recorded, ignoring",
		          e->source, r->ref);
		return;
	}
	metric_inc(s->m.evidence[d->result]);
	confirm_account(s, d);
	if (d->transition)
		metric_inc(s->m.transitions[d->to]);
	if (d->flags & OFLAG_FLAGGED)
		metric_inc(s->m.flags);
	log_fields(
	    d->transition || d->result == EV_FLAGGED ? LOG_NOTICE : LOG_INFO,
	    LOG_F({"ORDER_ID", e->order_id}, {"STREAM", r->msg->stream},
	          {"SEQ", r->seq}),
	    "%s %s: %s -> %s (%s: %s)", e->source,
	    e->in.transaction_status ? e->in.transaction_status : e->kind,
	    order_status_name(r->before.status), order_status_name(r->after),
	    evidence_result_name(d->result), d->reason);
}

/* By order id, then by position in the batch. */
static int
by_order(const void *a, const void *b)
{
	const struct evidence_rec *x = *(const struct evidence_rec *const *)a;
	const struct evidence_rec *y = *(const struct evidence_rec *const *)b;
	int c = strcmp(x->e.order_id, y->e.order_id);

	if (c != 0)
		return c;
	return x < y ? -1 : x > y;
}

/* Reads msgs into recs and numbers each message's round (how many
 * messages of its order come before it; tmp: n slots); returns the
 * number of rounds, or KASIR_EREJECT for a message kasir-order cannot
 * use. */
static int
evidence_read(const struct kasir_msg *const *msgs, size_t n,
              struct evidence_rec *recs, struct evidence_rec **tmp)
{
	unsigned rounds = 0;

	for (size_t i = 0; i < n; i++) {
		struct evidence_rec *r = &recs[i];

		r->msg = msgs[i];
		if (evidence_parse(msgs[i], &r->e) < 0)
			return KASIR_EREJECT;
		snprintf(r->ref, sizeof(r->ref), "%" PRId64, r->e.ref);
		snprintf(r->seq, sizeof(r->seq), "%" PRId64, msgs[i]->seq);
		r->raw =
		    cJSON_PrintUnformatted(r->e.raw ? r->e.raw : msgs[i]->data);
		if (r->raw == NULL)
			return -ENOMEM;
		tmp[i] = r;
	}
	qsort(tmp, n, sizeof(*tmp), by_order);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 &&
		    strcmp(tmp[i - 1]->e.order_id, tmp[i]->e.order_id) == 0)
			tmp[i]->round = tmp[i - 1]->round + 1;
		if (tmp[i]->round + 1 > rounds)
			rounds = tmp[i]->round + 1;
	}
	return (int)rounds;
}

/* The path for n >= 1 messages (evidence.h). */
static int
evidence_apply(struct order_service *s, struct kasir_db *db,
               const struct kasir_msg *const *msgs, size_t n)
{
	struct evidence_rec *recs, **round;
	struct effect_list l = {0};
	int rc, rounds;

	if (n == 0)
		return 0;
	if (n > EVIDENCE_BATCH_MAX)
		return -E2BIG;
	recs = calloc(n, sizeof(*recs));
	round = calloc(n, sizeof(*round));
	if (recs == NULL || round == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = rounds = evidence_read(msgs, n, recs, round);
	if (rc == KASIR_EREJECT && n == 1) {
		/* the careful pass: the consumer poisons it */
		metric_inc(s->m.poison);
		log_fields(LOG_ERR,
		           LOG_F({"STREAM", msgs[0]->stream},
		                 {"TYPE", msg_type_name(msgs[0]->type)}),
		           "stream message kasir-order cannot apply, refused");
	}
	if (rc < 0 || (rc = store_evidence_ids(db, recs, n)) < 0)
		goto out;
	for (int k = 0; k < rounds && rc == 0; k++) {
		size_t m = 0;

		for (size_t i = 0; i < n; i++)
			if (recs[i].round == (unsigned)k)
				round[m++] = &recs[i];
		if ((rc = store_evidence_lock(db, round, m)) < 0)
			break;
		for (size_t i = 0; i < m && rc == 0; i++)
			rc = evidence_plan(s, round[i], &l);
		if (rc == 0)
			rc = store_effects_apply(s->producer, db, &l);
		for (size_t i = 0; i < m && rc == 0; i++)
			evidence_account(s, round[i]);
		effects_free(&l);
	}
out:
	effects_free(&l);
	for (size_t i = 0; recs != NULL && i < n; i++) {
		free(recs[i].raw);
		cJSON_Delete(recs[i].snap);
	}
	free(recs);
	free(round);
	return rc;
}

int
order_apply_evidence(void *arg, struct kasir_db *db,
                     const struct kasir_msg *msg)
{
	return evidence_apply(arg, db, &msg, 1);
}

int
order_apply_evidence_batch(void *arg, struct kasir_db *db,
                           const struct kasir_msg *const *msgs, size_t n)
{
	return evidence_apply(arg, db, msgs, n);
}
