/*
 * evidence.c - applies payment evidence from the "ingest" stream
 * (payment.notification) and the "recon" stream (status.check).
 *
 * One message, inside the consumer's transaction (which also advances the
 * stream cursor): lock the order row, decide with state.c, record the
 * evidence, and write the transition, the order row's changes, the
 * entitlement grant/revoke and the order events.  Idempotent twice over:
 * the cursor drops a replayed message, and orders.evidence is unique on
 * (source, ref), and the state machine answers "noop" to the same
 * settlement seen again.  This is the careful pass; evidence_batch.c does
 * the same for a whole batch at once (evidence.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "evidence.h"
#include "order.h"
#include "stream.h"
#include "util.h"

static cJSON *
evidence_ref_json(const char *source, int64_t ref)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "source", source);
	cJSON_AddNumberToObject(o, "ref", (double)ref);
	return o;
}

const struct db_stmt ev_st_unknown = {
    .name = "order_unknown_insert",
    .sql = "INSERT INTO orders.unknown_notifications (source, ref,"
           " stream_seq, order_id, transaction_status, gross_amount,"
           " received_at, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
           " ON CONFLICT (source, ref) DO NOTHING",
    .nparams = 8,
};

#define EVIDENCE_COLS                                                          \
	" order_id, source, ref, stream_seq, kind, transaction_status,"        \
	" fraud_status, gross_amount, currency, payment_type,"                 \
	" transaction_id, received_at, status_before, status_after, result,"   \
	" reason, raw"

static const struct db_stmt st_evidence = {
    .name = "order_evidence_insert",
    .sql = "INSERT INTO orders.evidence (" EVIDENCE_COLS ") VALUES ($1, $2,"
           " $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
           " $17) ON CONFLICT (source, ref) DO NOTHING RETURNING id",
    .nparams = 17,
};

const struct db_stmt ev_st_evidence_id = {
    .name = "order_evidence_insert_id",
    .sql = "INSERT INTO orders.evidence (id," EVIDENCE_COLS ") VALUES ($1,"
           " $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
           " $16, $17, $18) ON CONFLICT (source, ref) DO NOTHING RETURNING id",
    .nparams = 18,
};

const struct db_stmt ev_st_transition = {
    .name = "order_transition_insert",
    .sql = "INSERT INTO orders.transitions (order_id, from_status,"
           " to_status, evidence_source, evidence_ref, evidence_id, reason)"
           " VALUES ($1, $2, $3, $4, $5, $6, $7)",
    .nparams = 7,
};

int
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
	                            e->in.fraud_status, e->state_key,
	                            sizeof(e->state_key)) < 0)
		e->state_key[0] = '\0';
	if (e->order_id == NULL || e->received_at == NULL || e->ref <= 0)
		return KASIR_EREJECT;
	return 0;
}

static int
record_unknown(struct order_service *s, struct kasir_db *db,
               const struct kasir_msg *msg, const struct evidence_msg *e)
{
	char ref[24], seq[24];
	char *raw = evidence_raw_text(msg, e);
	int rc;

	if (raw == NULL)
		return -ENOMEM;
	snprintf(ref, sizeof(ref), "%" PRId64, e->ref);
	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	const char *params[8] = {e->source,
	                         ref,
	                         seq,
	                         e->order_id,
	                         e->in.transaction_status,
	                         e->in.gross_amount,
	                         e->received_at,
	                         raw};
	rc = db_exec(db, &ev_st_unknown, params, NULL);
	free(raw);
	if (rc == 0)
		evidence_account_unknown(s, e);
	return rc;
}

void
evidence_account_unknown(struct order_service *s, const struct evidence_msg *e)
{
	metric_inc(s->m.unknown);
	log_order(LOG_WARNING, e->order_id,
	          "%s evidence for unknown order, kept for operators",
	          e->source);
}

char *
evidence_raw_text(const struct kasir_msg *msg, const struct evidence_msg *e)
{
	return cJSON_PrintUnformatted(e->raw ? e->raw : msg->data);
}

static int
emit_evidence(struct order_service *s, struct kasir_db *db,
              const struct evidence_msg *e, bool applied,
              enum order_status after)
{
	cJSON *d = cJSON_CreateObject(), *ev;
	int rc;

	if (d == NULL)
		return -ENOMEM;
	cJSON_AddStringToObject(d, "order_id", e->order_id);
	ev = evidence_ref_json(e->source, e->ref);
	if (ev == NULL) {
		cJSON_Delete(d);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(d, "evidence", ev);
	cJSON_AddStringToObject(
	    d, "transaction_status",
	    e->in.transaction_status ? e->in.transaction_status : e->kind);
	if (e->transaction_id != NULL)
		cJSON_AddStringToObject(d, "transaction_id", e->transaction_id);
	if (e->payment_type != NULL)
		cJSON_AddStringToObject(d, "payment_type", e->payment_type);
	cJSON_AddStringToObject(d, "received_at", e->received_at);
	cJSON_AddBoolToObject(d, "applied", applied);
	cJSON_AddStringToObject(d, "order_status", order_status_name(after));
	rc = stream_append(s->producer, db, MSG_ORDER_EVIDENCE, d, NULL);
	cJSON_Delete(d);
	return rc;
}

static int
emit_transition(struct order_service *s, struct kasir_db *db,
                const struct evidence_msg *e, enum order_status to,
                unsigned flags, const cJSON *snap)
{
	cJSON *extra = cJSON_CreateObject(), *ev;
	char at[40];
	int type;

	if (extra == NULL)
		return -ENOMEM;
	ev = evidence_ref_json(e->source, e->ref);
	if (ev == NULL) {
		cJSON_Delete(extra);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(extra, "evidence", ev);
	switch (to) {
	case ORDER_PAID:
		type = MSG_ORDER_PAID;
		time_rfc3339(now_real_ms(), at, sizeof(at));
		cJSON_AddStringToObject(extra, "paid_at", at);
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
		/* reversed / disputed are flags on the order (GET shows
		 * them); the message carries the fields proto defines. */
		(void)flags;
		cJSON_AddBoolToObject(extra, "partial", false);
		break;
	default:
		cJSON_Delete(extra);
		return -EINVAL;
	}
	return order_emit_snap(s, db, type, e->order_id, snap, extra);
}

/*
 * order.refunded with partial = true: the first partial refund of an order
 * that stays PAID (the notifier tells the customer, keeping the receipt).
 * refund_amount only when the evidence states it as a Midtrans amount;
 * otherwise omitted (the notifier then sends no notice: see its README).
 */
static int
emit_partial_refund(struct order_service *s, struct kasir_db *db,
                    const struct evidence_msg *e, const cJSON *snap)
{
	cJSON *extra = cJSON_CreateObject(), *ev;
	int64_t rupiah;

	if (extra == NULL)
		return -ENOMEM;
	ev = evidence_ref_json(e->source, e->ref);
	if (ev == NULL) {
		cJSON_Delete(extra);
		return -ENOMEM;
	}
	cJSON_AddItemToObject(extra, "evidence", ev);
	if (midtrans_amount_parse(e->refund_amount, &rupiah) == 0 && rupiah > 0)
		cJSON_AddNumberToObject(extra, "refund_amount", (double)rupiah);
	else
		log_order(LOG_WARNING, e->order_id,
		          "partial refund without a readable refund_amount:"
		          " order.refunded carries none");
	cJSON_AddBoolToObject(extra, "partial", true);
	return order_emit_snap(s, db, MSG_ORDER_REFUNDED, e->order_id, snap,
	                       extra);
}

void
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

int
evidence_emit_all(struct order_service *s, struct kasir_db *db,
                  const struct evidence_msg *e, const struct order_row *o,
                  const struct order_decision *d, enum order_status after,
                  const cJSON *snap, const PGresult *grant_res)
{
	int rc;

	if (d->transition &&
	    (rc = emit_transition(s, db, e, d->to, d->flags, snap)) < 0)
		return rc;
	if (d->grant_access &&
	    (rc = order_emit_granted(s, db, e->order_id, grant_res, snap)) < 0)
		return rc;
	if (d->revoke_access &&
	    (rc = order_emit_revoked(s, db, o, d->reason, snap)) < 0)
		return rc;
	/* the order's first partial refund (stored by this decision's
	 * update); a repeated one finds partial_refund set and says nothing */
	if ((d->flags & OFLAG_PARTIAL_REFUND) && after == ORDER_PAID &&
	    !o->partial_refund &&
	    (rc = emit_partial_refund(s, db, e, snap)) < 0)
		return rc;
	if (d->flags & OFLAG_FLAGGED) {
		cJSON *extra = cJSON_CreateObject();
		if (extra == NULL)
			return -ENOMEM;
		cJSON_AddStringToObject(extra, "reason",
		                        d->flag_reason ? d->flag_reason
		                                       : d->reason);
		if ((rc = order_emit_snap(s, db, MSG_ORDER_FLAGGED, e->order_id,
		                          snap, extra)) < 0)
			return rc;
	}
	if (d->confirm == CONFIRM_HOLD &&
	    (rc = confirm_request(s, db, e, snap)) < 0)
		return rc;
	return emit_evidence(s, db, e, d->result == EV_APPLIED, after);
}

void
evidence_account(struct order_service *s, const struct kasir_msg *msg,
                 const struct evidence_msg *e, enum order_status before,
                 enum order_status after, const struct order_decision *d)
{
	char seq[24];

	/* Counted before COMMIT: a rolled-back apply is retried and counted
	 * again, so these are "decisions taken", close enough for alerts. */
	metric_inc(s->m.evidence[d->result]);
	confirm_account(s, d);
	if (d->transition)
		metric_inc(s->m.transitions[d->to]);
	if (d->flags & OFLAG_FLAGGED)
		metric_inc(s->m.flags);
	snprintf(seq, sizeof(seq), "%" PRId64, msg->seq);
	log_fields(
	    d->transition || d->result == EV_FLAGGED ? LOG_NOTICE : LOG_INFO,
	    LOG_F({"ORDER_ID", e->order_id}, {"STREAM", msg->stream},
	          {"SEQ", seq}),
	    "%s %s: %s -> %s (%s: %s)", e->source,
	    e->in.transaction_status ? e->in.transaction_status : e->kind,
	    order_status_name(before), order_status_name(after),
	    evidence_result_name(d->result), d->reason);
}

/* The 17 evidence columns (EVIDENCE_COLS) of e with decision d. */
static void
evidence_row_params(const struct evidence_msg *e, const char *ref,
                    const char *seq, enum order_status before,
                    enum order_status after, const struct order_decision *d,
                    const char *raw, const char *p[17])
{
	p[0] = e->order_id;
	p[1] = e->source;
	p[2] = ref;
	p[3] = seq;
	p[4] = e->kind;
	p[5] = e->in.transaction_status;
	p[6] = e->in.fraud_status;
	p[7] = e->in.gross_amount;
	p[8] = e->in.currency;
	p[9] = e->payment_type;
	p[10] = e->transaction_id;
	p[11] = e->received_at;
	p[12] = order_status_name(before);
	p[13] = order_status_name(after);
	p[14] = evidence_result_name(d->result);
	p[15] = d->reason;
	p[16] = raw;
}

int
evidence_params(const struct kasir_msg *msg, const struct evidence_msg *e,
                enum order_status before, enum order_status after,
                const struct order_decision *d, const char *raw,
                struct evidence_params *ret)
{
	snprintf(ret->ref, sizeof(ret->ref), "%" PRId64, e->ref);
	snprintf(ret->seq, sizeof(ret->seq), "%" PRId64, msg->seq);
	evidence_row_params(e, ret->ref, ret->seq, before, after, d, raw,
	                    ret->p + 1);
	ret->p[0] = ret->id;
	return 0;
}

int
order_apply_evidence(void *arg, struct kasir_db *db,
                     const struct kasir_msg *msg)
{
	struct order_service *s = arg;
	struct evidence_msg e;
	struct evidence_params ep;
	struct order_row o;
	struct order_decision d;
	struct order_update u;
	cJSON *snap = NULL;
	char evid[24];
	char *raw = NULL;
	PGresult *res = NULL, *grant = NULL;
	enum order_status after;
	int rc;

	rc = evidence_parse(msg, &e);
	if (rc < 0) {
		metric_inc(s->m.poison);
		log_fields(LOG_ERR,
		           LOG_F({"STREAM", msg->stream},
		                 {"TYPE", msg_type_name(msg->type)}),
		           "stream message kasir-order cannot apply, refused");
		return KASIR_EREJECT;
	}
	rc = store_lock_order(db, e.order_id, e.checked_at, &o);
	if (rc == KASIR_ENOTFOUND)
		return record_unknown(s, db, msg, &e);
	if (rc < 0)
		return rc;
	e.in.past_expiry =
	    o.past_expiry && (e.checked_at == NULL || e.check_past_expiry);
	e.in.checked_before_paid = o.checked_before_paid;
	evidence_decide(s, &e, &o, &d);
	after = d.transition ? d.to : o.status;

	raw = evidence_raw_text(msg, &e);
	if (raw == NULL)
		return -ENOMEM;
	evidence_params(msg, &e, o.status, after, &d, raw, &ep);
	rc = db_exec(db, &st_evidence, ep.p + 1, &res);
	free(raw);
	if (rc < 0)
		return rc;
	if (PQntuples(res) != 1) {
		/* (source, ref) recorded before: the same evidence again. */
		PQclear(res);
		log_order(LOG_INFO, e.order_id,
		          "%s evidence %s already recorded, ignoring", e.source,
		          ep.ref);
		return 0;
	}
	kasir_strlcpy(evid, db_get(res, 0, 0), sizeof(evid));
	PQclear(res);

	if (d.transition) {
		const char *tp[7] = {e.order_id,
		                     order_status_name(o.status),
		                     order_status_name(d.to),
		                     e.source,
		                     ep.ref,
		                     evid,
		                     d.reason};
		if ((rc = db_exec(db, &ev_st_transition, tp, NULL)) < 0)
			return rc;
	}
	evidence_update(&e, &d, &u);
	if (store_update_needed(&u)) {
		if ((rc = store_update(db, &u, &snap)) < 0)
			return rc;
	}
	if (d.grant_access) {
		const char *gp[5] = {e.order_id, e.source, evid, NULL,
		                     d.reason};
		if ((rc = db_exec(db, &store_st_grant, gp, &grant)) < 0)
			goto out;
	}
	if (d.revoke_access) {
		const char *rp[4] = {e.order_id, e.source, evid, d.reason};
		if ((rc = db_exec(db, &store_st_revoke, rp, NULL)) < 0)
			goto out;
	}
	rc = evidence_emit_all(s, db, &e, &o, &d, after, snap, grant);
	if (rc == 0)
		evidence_account(s, msg, &e, o.status, after, &d);
out:
	PQclear(grant);
	cJSON_Delete(snap);
	return rc;
}
