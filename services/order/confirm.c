/*
 * confirm.c - the notification is a hint, Midtrans's answer is the proof.
 *
 * Midtrans signs only order_id + status_code + gross_amount; everything
 * else in a notification can be rewritten by anyone who has seen one
 * genuine body.  So in the default mode (order.signature_only: false):
 *
 *   - a notification whose decision would move the order (PAID, FAILED,
 *     EXPIRED, CANCELLED, REFUNDED) or set a flag that is news (partial
 *     refund, partial chargeback) is recorded, has no effect, and the
 *     order awaits confirmation: orders.awaiting_status = the state it
 *     claimed, awaiting_since = now, and a confirm.request goes to the
 *     reconciler on the orders stream (CONFIRM_HOLD);
 *   - the reconciler asks the Status API by order id (retried with
 *     backoff while it fails) and publishes the answer with confirm =
 *     true.  It agrees when it has the order's amount and its state is the
 *     claimed one or a later state of the same payment
 *     (midtrans_state_follows, state.c): the state machine then decides
 *     on the answer itself, so the transition's evidence is the Status
 *     API answer.  Otherwise the order is flagged and contradicted_at set:
 *     "notification contradicted by midtrans: possible forgery or key
 *     leak" (a P1 for kasirctl doctor and the alert rules);
 *   - an agreeing answer in a later state proves the claimed one
 *     (proven_claim());
 *   - any Status API answer that moves the order also ends the wait.
 *
 * The database enforces the mode (migrations/0003): in the default mode a
 * transition whose evidence is not a Status API answer is refused.
 */
#include <errno.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "evidence.h"
#include "metrics.h"
#include "order.h"
#include "state.h"
#include "stream.h"
#include "util.h"

#define CONTRADICTED                                                           \
	"notification contradicted by midtrans: possible forgery or key leak"

enum { CONFIRM_M_HELD = 0, CONFIRM_M_AGREED, CONFIRM_M_CONTRADICTED };

/* The Status API answer e agrees with the awaited state of o. */
static bool
answer_agrees(const struct evidence_msg *e, const struct order_row *o)
{
	if (e->in.kind == EVIDENCE_NOT_FOUND)
		return false; /* Midtrans does not know the payment */
	if (e->in.kind == EVIDENCE_STATUS &&
	    !amount_matches(e->in.gross_amount, o->amount))
		return false;
	/* the graph also tells the two denies apart: a settlement (or a
	 * claimed reversal, "deny/settled") is followed only by a deny that
	 * says the payment had settled, never by a failed attempt's */
	if (e->state_key[0] == '\0' ||
	    !midtrans_state_follows(o->awaiting, e->state_key))
		return false;
	return true;
}

static void
hold(struct order_decision *d, const struct order_row *o)
{
	*d = (struct order_decision){
	    .result = EV_NOOP,
	    .to = o->status,
	    .reason = "held: awaiting confirmation by the midtrans status api",
	    .confirm = CONFIRM_HOLD,
	};
}

static void
contradicted(struct order_decision *d)
{
	d->confirm = CONFIRM_CLEAR;
	d->contradicted = true;
	d->flags |= OFLAG_FLAGGED;
	d->flag_reason = CONTRADICTED;
	if (!d->transition) {
		/* nothing else happens: the contradiction is the news */
		d->result = EV_FLAGGED;
		d->reason = CONTRADICTED;
	}
}

/*
 * An agreeing answer in a LATER state than the claimed one (settlement
 * claimed, partial_refund answered: the customer paid and was partly
 * refunded before the reconciler asked) proves the claimed state
 * happened.  When the answer itself cannot move the order from where it
 * is (a partial refund of a PENDING order), the claimed state is applied
 * with the answer as its evidence; what the answer adds is then either
 * merged (a flag: partial refund, partial chargeback) or, if it is a
 * transition of its own from there, confirmed again: the order awaits the
 * answer's state and a new confirm.request goes out (CONFIRM_HOLD on
 * recon evidence).  Each round moves the order forward, so this ends.
 * Returns false when it does not apply (d untouched).
 */
static bool
proven_claim(const struct evidence_msg *e, const struct order_row *o,
             const struct order_facts *facts, struct order_decision *d)
{
	struct evidence_in claimed = e->in;
	struct order_facts after = *facts;
	struct order_decision first, next;
	char ts[sizeof(o->awaiting)];
	char *slash;

	if (d->transition || strcmp(e->state_key, o->awaiting) == 0)
		return false;
	memcpy(ts, o->awaiting, sizeof(ts));
	slash = strchr(ts, '/');
	if (slash != NULL)
		*slash = '\0';
	claimed.transaction_status = ts;
	/* the part after '/' is a fraud status only for a capture; a
	 * claimed "deny/settled" never gets here: no later state follows
	 * it in the graph */
	claimed.fraud_status =
	    slash != NULL && strcmp(ts, "capture") == 0 ? slash + 1 : NULL;
	order_decide(facts, &claimed, &first);
	/* Only a payment is proven by a later state (a refund follows the
	 * settlement it refunds).  A claimed failure is not: a capture
	 * denied by fraud detection is answered "deny", which for this
	 * order means what a genuine deny means (the customer may pay
	 * again), and the claim was the unsigned fraud_status. */
	if (!first.transition || first.to != ORDER_PAID)
		return false;
	after.status = first.to;
	after.reversed = facts->reversed || (first.flags & OFLAG_REVERSED);
	/* the claimed transition's evidence is the answer: from here the
	 * order names its transaction (evidence_update), and what the
	 * answer adds (a partial refund) is about that payment */
	if (e->in.transaction_id != NULL)
		after.transaction_id = e->in.transaction_id;
	order_decide(&after, &e->in, &next);
	*d = first;
	if (next.transition) {
		d->confirm = CONFIRM_HOLD;
	} else {
		d->confirm = CONFIRM_CLEAR;
		d->flags |= next.flags;
		if (next.flags & OFLAG_FLAGGED)
			d->flag_reason = next.reason;
	}
	return true;
}

void
evidence_decide(const struct order_service *s, const struct evidence_msg *e,
                const struct order_row *o, struct order_decision *d)
{
	struct order_facts facts = {
	    .status = o->status,
	    .amount = o->amount,
	    .reversed = o->reversed,
	    .transaction_id = o->has_transaction_id ? o->transaction_id : NULL,
	    .id_taken = o->id_taken,
	};

	order_decide(&facts, &e->in, d);
	if (s->conf->signature_only)
		return;
	if (e->in.kind == EVIDENCE_NOTIFICATION) {
		/* a move, or a flag that is news (partial refund, partial
		 * chargeback): held.  Refusals (flagged) and no-ops stand. */
		if (d->transition || d->result == EV_APPLIED)
			hold(d, o);
		return;
	}
	/* a Status API answer */
	if (o->awaiting[0] != '\0' && e->confirm) {
		if (!answer_agrees(e, o))
			contradicted(d);
		else if (!proven_claim(e, o, &facts, d))
			d->confirm = CONFIRM_CLEAR;
	} else if (o->awaiting[0] != '\0' && d->transition) {
		d->confirm = CONFIRM_CLEAR; /* Midtrans moved it anyway */
	}
}

cJSON *
confirm_request_fields(const struct evidence_msg *e)
{
	cJSON *d = cJSON_CreateObject(), *ev;
	char at[40];

	if (d == NULL)
		return NULL;
	ev = cJSON_AddObjectToObject(d, "evidence");
	if (ev == NULL) {
		cJSON_Delete(d);
		return NULL;
	}
	cJSON_AddStringToObject(ev, "source", e->source);
	cJSON_AddNumberToObject(ev, "ref", (double)e->ref);
	/* what is claimed: the notification's state, or the later state a
	 * Status API answer showed (proven_claim) */
	cJSON_AddStringToObject(d, "transaction_status", e->state_key);
	if (e->in.fraud_status != NULL)
		cJSON_AddStringToObject(d, "fraud_status", e->in.fraud_status);
	cJSON_AddStringToObject(d, "gross_amount",
	                        e->in.gross_amount ? e->in.gross_amount : "");
	time_rfc3339(now_real_ms(), at, sizeof(at));
	cJSON_AddStringToObject(d, "requested_at", at);
	return d;
}

void
confirm_account(struct order_service *s, const struct order_decision *d)
{
	if (d->confirm == CONFIRM_HOLD)
		metric_inc(s->m.confirm[CONFIRM_M_HELD]);
	else if (d->contradicted)
		metric_inc(s->m.confirm[CONFIRM_M_CONTRADICTED]);
	else if (d->confirm == CONFIRM_CLEAR)
		metric_inc(s->m.confirm[CONFIRM_M_AGREED]);
}
