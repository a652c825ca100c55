/*
 * state.c - the order payment state machine: a pure function from (order,
 * evidence) to a decision.  The table it implements, row by row, is in
 * docs/state-machine.md (Midtrans's statuses: docs/midtrans.md).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "state.h"

static const char *const status_names[ORDER_STATUS_COUNT] = {
    [ORDER_PENDING] = "PENDING",     [ORDER_PAID] = "PAID",
    [ORDER_FAILED] = "FAILED",       [ORDER_EXPIRED] = "EXPIRED",
    [ORDER_CANCELLED] = "CANCELLED", [ORDER_REFUNDED] = "REFUNDED",
};

const char *
order_status_name(enum order_status s)
{
	if ((unsigned)s >= ORDER_STATUS_COUNT)
		return "UNKNOWN";
	return status_names[s];
}

int
order_status_parse(const char *s, enum order_status *ret)
{
	if (s == NULL)
		return -EINVAL;
	for (unsigned i = 0; i < ORDER_STATUS_COUNT; i++) {
		if (strcmp(s, status_names[i]) == 0) {
			*ret = (enum order_status)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
evidence_result_name(enum evidence_result r)
{
	switch (r) {
	case EV_APPLIED:
		return "applied";
	case EV_NOOP:
		return "noop";
	case EV_IGNORED:
		return "ignored";
	case EV_FLAGGED:
		return "flagged";
	case EV_INVALID:
		return "invalid";
	}
	return "invalid";
}

bool
amount_matches(const char *s, int64_t amount)
{
	int64_t v;

	return midtrans_amount_parse(s, &v) == 0 && v == amount;
}

/* What a piece of evidence says, independent of the order's state. */
enum meaning {
	M_UNKNOWN = 0,
	M_SUCCESS,   /* settlement, capture+accept (or no fraud_status) */
	M_CHALLENGE, /* capture+challenge: merchant review */
	M_FAILURE,   /* capture+deny, failure */
	M_PENDING,   /* pending, authorize */
	M_DENY,      /* deny: attempt failed, or reversal after settlement */
	M_EXPIRE,
	M_CANCEL,
	M_REFUND,
	M_PARTIAL_REFUND,
	M_CHARGEBACK,
	M_PARTIAL_CHARGEBACK,
	M_NOT_FOUND, /* Status API 404: the customer has not started paying */
	M_EXPIRED_CHECK, /* Status API 407 */
};

static enum meaning
classify(const struct evidence_in *ev)
{
	const char *ts = ev->transaction_status, *fs = ev->fraud_status;

	if (ev->kind == EVIDENCE_NOT_FOUND)
		return M_NOT_FOUND;
	if (ev->kind == EVIDENCE_EXPIRED)
		return M_EXPIRED_CHECK;
	if (ts == NULL)
		return M_UNKNOWN;
	if (strcmp(ts, "settlement") == 0)
		return M_SUCCESS;
	if (strcmp(ts, "capture") == 0) {
		if (fs == NULL || strcmp(fs, "accept") == 0)
			return M_SUCCESS;
		if (strcmp(fs, "challenge") == 0)
			return M_CHALLENGE;
		if (strcmp(fs, "deny") == 0)
			return M_FAILURE;
		return M_UNKNOWN;
	}
	if (strcmp(ts, "failure") == 0)
		return M_FAILURE;
	if (strcmp(ts, "pending") == 0 || strcmp(ts, "authorize") == 0)
		return M_PENDING;
	if (strcmp(ts, "deny") == 0)
		return M_DENY;
	if (strcmp(ts, "expire") == 0)
		return M_EXPIRE;
	if (strcmp(ts, "cancel") == 0)
		return M_CANCEL;
	if (strcmp(ts, "refund") == 0)
		return M_REFUND;
	if (strcmp(ts, "partial_refund") == 0)
		return M_PARTIAL_REFUND;
	if (strcmp(ts, "chargeback") == 0)
		return M_CHARGEBACK;
	if (strcmp(ts, "partial_chargeback") == 0)
		return M_PARTIAL_CHARGEBACK;
	return M_UNKNOWN;
}

static void
set(struct order_decision *d, enum evidence_result r, const char *reason)
{
	d->result = r;
	d->reason = reason;
}

static void
move(struct order_decision *d, enum order_status to, const char *reason)
{
	d->result = EV_APPLIED;
	d->transition = true;
	d->to = to;
	d->reason = reason;
}

/* A deny carrying settlement_time: the transaction had settled. */
static bool
has_settlement_time(const struct evidence_in *ev)
{
	return ev->settlement_time != NULL && ev->settlement_time[0] != 0;
}

/* The evidence is about the transaction the order already follows. */
static bool
same_transaction(const struct order_facts *o, const struct evidence_in *ev)
{
	return o->transaction_id != NULL && ev->transaction_id != NULL &&
	       strcmp(o->transaction_id, ev->transaction_id) == 0;
}

/* Both name a transaction, and not the same one. */
static bool
other_transaction(const struct order_facts *o, const struct evidence_in *ev)
{
	return o->transaction_id != NULL && ev->transaction_id != NULL &&
	       !same_transaction(o, ev);
}

static void
decide_pending(enum meaning m, const struct evidence_in *ev,
               struct order_decision *d)
{
	switch (m) {
	case M_SUCCESS:
		move(d, ORDER_PAID, "payment confirmed by midtrans");
		d->grant_access = true;
		return;
	case M_CHALLENGE:
		set(d, EV_NOOP, "capture challenged: awaiting merchant review");
		return;
	case M_FAILURE:
		move(d, ORDER_FAILED, "payment failed");
		return;
	case M_PENDING:
		set(d, EV_NOOP, "payment pending");
		return;
	case M_DENY:
		if (has_settlement_time(ev)) {
			/* The transaction settled and was reversed; its
			 * settlement notification is late or lost.  Never
			 * PAID: the money went back. */
			move(d, ORDER_FAILED,
			     "reversal seen before its settlement: payment "
			     "reversed");
			d->flags = OFLAG_REVERSED;
		} else if (ev->kind == EVIDENCE_STATUS && ev->past_expiry) {
			/* The Status API's check after expiry: the last
			 * attempt was denied and no retry is possible any
			 * more.  (A deny notification received past expiry
			 * waits for this check: during a backlog "now" is
			 * later than when Midtrans sent it.) */
			move(d, ORDER_FAILED,
			     "status api: payment denied, past expiry");
		} else {
			set(d, EV_NOOP,
			    "deny on a pending order: attempt failed, customer "
			    "may retry");
		}
		return;
	case M_EXPIRE:
		move(d, ORDER_EXPIRED, "midtrans expired the transaction");
		return;
	case M_CANCEL:
		move(d, ORDER_CANCELLED, "midtrans cancelled the transaction");
		return;
	case M_REFUND:
		/* A full refund implies the settlement it refunds: that
		 * settlement is late or lost.  The money went back, so the
		 * order ends REFUNDED straight away: never PAID, no access,
		 * no receipt (docs/state-machine.md, "Refund seen before its
		 * settlement"); the late settlement is then stale. */
		move(d, ORDER_REFUNDED,
		     "refund seen before its settlement: refunded, never "
		     "paid");
		return;
	case M_CHARGEBACK:
		move(d, ORDER_REFUNDED,
		     "chargeback seen before its settlement: refunded, "
		     "never paid");
		d->flags = OFLAG_DISPUTED;
		return;
	case M_PARTIAL_REFUND:
	case M_PARTIAL_CHARGEBACK:
		/* Part of the money stays with the merchant: the customer
		 * keeps access (PAID).  The Status API's answer proves the
		 * payment it partly refunds, whose settlement notification
		 * may never come (lost while the merchant refunded from the
		 * dashboard): PAID now, with the flag it would have added
		 * after the settlement.  A notification alone waits for that
		 * answer (the database refuses PAID on it: migration 0003). */
		if (ev->kind != EVIDENCE_STATUS) {
			set(d, EV_FLAGGED,
			    "partial refund or chargeback for an order never "
			    "seen paid: the status api decides");
			d->flags = OFLAG_FLAGGED;
			return;
		}
		move(d, ORDER_PAID,
		     m == M_PARTIAL_REFUND
		         ? "status api: paid, partly refunded before its "
		           "settlement was seen"
		         : "status api: paid, partly charged back before its "
		           "settlement was seen");
		d->grant_access = true;
		d->flags = m == M_PARTIAL_REFUND ? OFLAG_PARTIAL_REFUND
		                                 : OFLAG_DISPUTED;
		return;
	case M_NOT_FOUND:
		if (ev->past_expiry)
			move(d, ORDER_EXPIRED,
			     "status api: never started, past expiry");
		else
			set(d, EV_NOOP,
			    "status api: not started yet, before expiry");
		return;
	case M_EXPIRED_CHECK:
		if (ev->past_expiry)
			move(d, ORDER_EXPIRED,
			     "status api: expired, past expiry");
		else
			set(d, EV_NOOP,
			    "status api: expired before the order's expiry, "
			    "waiting");
		return;
	case M_UNKNOWN:
		break;
	}
	set(d, EV_INVALID, "unknown transaction_status");
}

/*
 * A deny on a PAID order is a reversal (Permata VA, Mandiri bill, Indomaret:
 * settlement then deny) only when the evidence shows the denied transaction
 * had settled: the Status API's current answer, or a notification carrying
 * settlement_time.  A deny without it is, as far as the notification shows,
 * the late delivery of an earlier failed attempt (the customer retried and
 * paid): revoking on it would take access from a paying customer.  It is
 * recorded and the order flagged so an operator asks the Status API
 * (kasirctl reconcile ORDER_ID), whose answer then decides.
 */
static void
decide_paid(enum meaning m, const struct evidence_in *ev,
            struct order_decision *d)
{
	switch (m) {
	case M_SUCCESS:
		set(d, EV_NOOP, "already paid: same payment");
		return;
	case M_DENY:
		if (ev->kind == EVIDENCE_STATUS && ev->checked_before_paid) {
			/* The failed attempt before the payment, as the
			 * Status API saw it then: not a reversal. */
			set(d, EV_FLAGGED,
			    "status api deny older than the payment: stale, "
			    "check again");
			d->flags = OFLAG_FLAGGED;
			return;
		}
		if (ev->kind != EVIDENCE_STATUS && !has_settlement_time(ev)) {
			set(d, EV_FLAGGED,
			    "deny after settlement without settlement_time: "
			    "stale attempt or reversal, verify with the status "
			    "api");
			d->flags = OFLAG_FLAGGED;
			return;
		}
		move(d, ORDER_REFUNDED, "reversal: deny after settlement");
		d->revoke_access = true;
		d->flags = OFLAG_REVERSED;
		return;
	case M_REFUND:
		move(d, ORDER_REFUNDED, "refunded");
		d->revoke_access = true;
		return;
	case M_CHARGEBACK:
		move(d, ORDER_REFUNDED, "chargeback");
		d->revoke_access = true;
		d->flags = OFLAG_DISPUTED;
		return;
	case M_PARTIAL_REFUND:
		set(d, EV_APPLIED, "partially refunded: access kept");
		d->flags = OFLAG_PARTIAL_REFUND;
		return;
	case M_PARTIAL_CHARGEBACK:
		set(d, EV_APPLIED, "partial chargeback: access kept, disputed");
		d->flags = OFLAG_DISPUTED;
		return;
	case M_CANCEL:
		/* A card capture can be voided (capture -> cancel) before it
		 * settles: access stays, operators decide. */
		set(d, EV_FLAGGED,
		    "cancel after paid: ignored, check the payment");
		d->flags = OFLAG_FLAGGED;
		return;
	case M_CHALLENGE:
	case M_FAILURE:
	case M_PENDING:
	case M_EXPIRE:
	case M_NOT_FOUND:
	case M_EXPIRED_CHECK:
		set(d, EV_IGNORED, "stale: order already paid");
		return;
	case M_UNKNOWN:
		break;
	}
	set(d, EV_INVALID, "unknown transaction_status");
}

static void
decide_final(const struct order_facts *o, const struct evidence_in *ev,
             enum meaning m, struct order_decision *d)
{
	enum order_status s = o->status;

	if (m == M_UNKNOWN) {
		set(d, EV_INVALID, "unknown transaction_status");
		return;
	}
	if (m == M_SUCCESS && o->reversed && ev->kind != EVIDENCE_STATUS &&
	    same_transaction(o, ev)) {
		/* The settlement of the very transaction whose reversal was
		 * applied, delivered late: not new money. */
		set(d, EV_IGNORED,
		    "stale settlement of a reversed transaction");
		return;
	}
	if (m == M_SUCCESS && s != ORDER_REFUNDED) {
		/* Money arrived for an order that is already final: never
		 * resurrect it, but operators must refund or follow up. */
		set(d, EV_FLAGGED, "payment for an order already final");
		d->flags = OFLAG_FLAGGED;
		return;
	}
	if ((s == ORDER_FAILED && m == M_FAILURE) ||
	    (s == ORDER_EXPIRED &&
	     (m == M_EXPIRE || m == M_EXPIRED_CHECK || m == M_NOT_FOUND)) ||
	    (s == ORDER_CANCELLED && m == M_CANCEL) ||
	    (s == ORDER_REFUNDED &&
	     (m == M_REFUND || m == M_DENY || m == M_CHARGEBACK))) {
		set(d, EV_NOOP, "already final: same outcome");
		return;
	}
	set(d, EV_IGNORED, "stale: order already final");
}

void
order_decide(const struct order_facts *o, const struct evidence_in *ev,
             struct order_decision *ret)
{
	struct order_decision d = {.result = EV_INVALID, .to = o->status};
	enum meaning m = classify(ev);

	if (m == M_UNKNOWN) {
		set(&d, EV_INVALID, "unknown transaction_status");
		*ret = d;
		return;
	}
	/* Amount and currency first: mismatching evidence has no effect at
	 * all (it can never make an order PAID) and flags the order. */
	if (ev->kind == EVIDENCE_NOTIFICATION || ev->kind == EVIDENCE_STATUS) {
		if (!amount_matches(ev->gross_amount, o->amount)) {
			set(&d, EV_FLAGGED, "amount mismatch");
			d.flags = OFLAG_FLAGGED;
			*ret = d;
			return;
		}
		if (ev->currency != NULL && strcmp(ev->currency, "IDR") != 0) {
			set(&d, EV_FLAGGED, "currency mismatch");
			d.flags = OFLAG_FLAGGED;
			*ret = d;
			return;
		}
	}
	switch (o->status) {
	case ORDER_PENDING:
		decide_pending(m, ev, &d);
		if (o->id_taken && d.transition && d.to == ORDER_PAID) {
			/* Snap said 406 for this order: its id was used at
			 * Midtrans before kasir asked, kasir got no token, so
			 * its customer cannot have paid under it; the payment
			 * is someone else's (an outside attack, 2026-12-07:
			 * another system's Snap transaction under the id, paid
			 * after the kasir order was created) */
			d = (struct order_decision){.to = o->status};
			set(&d, EV_FLAGGED,
			    "payment under an order id Midtrans had before "
			    "kasir's Snap call (406): not this order's "
			    "payment");
			d.flags = OFLAG_FLAGGED;
		}
		break;
	case ORDER_PAID:
		decide_paid(m, ev, &d);
		if (d.result == EV_APPLIED && other_transaction(o, ev)) {
			/* A reversal or refund of another transaction than the
			 * one that paid: an earlier failed attempt of this
			 * order, as the Status API keeps it, or an id that a
			 * notification named (unsigned).  Not the payment's. */
			d = (struct order_decision){.to = o->status};
			set(&d, EV_FLAGGED,
			    "reversal of another transaction than the "
			    "payment's: ignored, check the payment");
			d.flags = OFLAG_FLAGGED;
		}
		break;
	case ORDER_FAILED:
	case ORDER_EXPIRED:
	case ORDER_CANCELLED:
	case ORDER_REFUNDED:
		decide_final(o, ev, m, &d);
		break;
	default:
		set(&d, EV_INVALID, "order in an unknown state");
		break;
	}
	*ret = d;
}

/* Midtrans's transaction graph (state.h): every direct successor. */
static const struct {
	const char *from;
	const char *to[7];
} midtrans_edges[] = {
    {"pending",
     {"settlement", "capture", "expire", "cancel", "deny", "failure"}},
    {"authorize", {"capture", "deny", "cancel", "expire"}},
    {"capture/challenge", {"capture", "deny", "cancel"}},
    {"capture", {"settlement", "cancel"}},
    {"capture/deny", {"deny"}},
    {"settlement",
     {"refund", "partial_refund", "chargeback", "partial_chargeback",
      "deny/settled"}},
    {"partial_refund", {"refund", "partial_refund"}},
    {"partial_chargeback", {"chargeback"}},
};

static const char *const midtrans_states[] = {
    "pending",      "authorize",
    "capture",      "capture/challenge",
    "capture/deny", "settlement",
    "deny",         "cancel",
    "expire",       "failure",
    "refund",       "partial_refund",
    "chargeback",   "partial_chargeback",
};

int
midtrans_state_key(const char *ts, const char *fs, const char *settlement_time,
                   char *buf, size_t len)
{
	const char *key = NULL;

	if (ts == NULL || len == 0)
		return -EINVAL;
	if (strcmp(ts, "deny") == 0 && settlement_time != NULL &&
	    settlement_time[0] != '\0') {
		key = "deny/settled";
	} else if (strcmp(ts, "capture") == 0) {
		if (fs == NULL || strcmp(fs, "accept") == 0)
			key = "capture";
		else if (strcmp(fs, "challenge") == 0)
			key = "capture/challenge";
		else if (strcmp(fs, "deny") == 0)
			key = "capture/deny";
		else
			return -EINVAL;
	} else {
		for (size_t i = 0;
		     i < sizeof(midtrans_states) / sizeof(*midtrans_states);
		     i++)
			if (strcmp(ts, midtrans_states[i]) == 0)
				key = midtrans_states[i];
	}
	if (key == NULL || strlen(key) >= len)
		return -EINVAL;
	memcpy(buf, key, strlen(key) + 1);
	return 0;
}

/* Depth-first over midtrans_edges; depth bounds the (acyclic but for
 * partial_refund's self edge) walk. */
static bool
follows_from(const char *from, const char *later, int depth)
{
	if (strcmp(from, later) == 0)
		return true;
	if (depth <= 0)
		return false;
	for (size_t i = 0; i < sizeof(midtrans_edges) / sizeof(*midtrans_edges);
	     i++) {
		if (strcmp(midtrans_edges[i].from, from) != 0)
			continue;
		for (size_t k = 0; k < 7 && midtrans_edges[i].to[k] != NULL;
		     k++)
			if (strcmp(midtrans_edges[i].to[k], from) != 0 &&
			    follows_from(midtrans_edges[i].to[k], later,
			                 depth - 1))
				return true;
	}
	return false;
}

bool
midtrans_state_follows(const char *held, const char *later)
{
	if (held == NULL || later == NULL)
		return false;
	return follows_from(held, later, 8);
}
