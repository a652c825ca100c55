/*
 * state.h - the order payment state machine (docs/state-machine.md).
 *
 * A pure function from (order facts, one piece of Midtrans evidence) to a
 * decision: no database, no clock, no allocation, so every row of the
 * table in docs/state-machine.md is unit-tested
 * (tests/unit_order/).  evidence.c applies the decision in one
 * transaction (transition row, entitlement grant/revoke, order events).
 *
 * States move forward only:
 *   PENDING -> PAID | FAILED | EXPIRED | CANCELLED
 *   PAID    -> REFUNDED            (refund, chargeback, settlement->deny)
 *   PENDING -> REFUNDED            (a full refund or chargeback seen
 *                                   before its settlement)
 * (a reversal seen before its settlement: PENDING -> FAILED, reversed)
 * plus flags on PAID orders (partial_refund, disputed) and on any order
 * (flagged: amount/currency mismatch or a late payment operators must see).
 */
#ifndef KASIR_ORDER_STATE_H
#define KASIR_ORDER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "midtrans_amount.h"

enum order_status {
	ORDER_PENDING = 0,
	ORDER_PAID,
	ORDER_FAILED,
	ORDER_EXPIRED,
	ORDER_CANCELLED,
	ORDER_REFUNDED,
	ORDER_STATUS_COUNT
};

/* "PENDING", ...; "UNKNOWN" for an out-of-range value. */
const char *order_status_name(enum order_status s);
/* 0 and *ret set, or -EINVAL. */
int order_status_parse(const char *s, enum order_status *ret);

/* What kind of evidence this is. */
enum evidence_kind {
	EVIDENCE_NOTIFICATION = 0, /* ingest: a verified HTTP notification */
	EVIDENCE_STATUS,           /* recon: Status API answer with a body */
	EVIDENCE_NOT_FOUND,        /* recon: 404 "Transaction doesn't exist." */
	EVIDENCE_EXPIRED,          /* recon: 407 expired */
};

/* The evidence as the state machine sees it.  Strings are borrowed and
 * may be NULL when the field was absent. */
struct evidence_in {
	enum evidence_kind kind;
	const char *transaction_status;
	const char *fraud_status;
	const char *gross_amount;    /* as received: "154600.00" or "154600" */
	const char *currency;        /* absent on some channels: accepted */
	const char *settlement_time; /* present once the transaction settled */
	const char *transaction_id;  /* Midtrans transaction it is about */
	bool past_expiry;            /* the order's expires_at has passed */
	/* a Status API answer taken before kasir recorded the payment (the
	 * recon stream can lag the ingest stream): not the current truth */
	bool checked_before_paid;
};

/* What the state machine needs to know about the order. */
struct order_facts {
	enum order_status status;
	int64_t amount; /* IDR, integer rupiah */
	bool reversed;  /* a reversal (deny after settlement) was applied */
	const char *transaction_id; /* learned from applied evidence, or NULL */
	/* Midtrans had the order id before kasir's Snap call (Snap said
	 * 406): no payment under it is this order's */
	bool id_taken;
};

/* How a piece of evidence was used (orders.evidence.result). */
enum evidence_result {
	EV_APPLIED = 0, /* changed the order (status or a flag) */
	EV_NOOP,        /* consistent with the current state: nothing to do */
	EV_IGNORED,     /* stale or out of order: recorded, no effect */
	EV_FLAGGED,     /* refused and the order flagged for operators */
	EV_INVALID,     /* unknown transaction_status: recorded, no effect */
};
const char *evidence_result_name(enum evidence_result r);

/* Flags a decision sets on the order (bit set). */
enum order_flag {
	OFLAG_FLAGGED = 1 << 0,        /* operators must look (see reason) */
	OFLAG_PARTIAL_REFUND = 1 << 1, /* partial_refund on a PAID order */
	OFLAG_DISPUTED = 1 << 2,       /* chargeback / partial_chargeback */
	OFLAG_REVERSED = 1 << 3,       /* deny after settlement */
};

/* The confirmation step of a decision (confirm.c, default mode). */
enum confirm_step {
	CONFIRM_NONE = 0,
	CONFIRM_HOLD,  /* a notification that would move the order: held,
	                  the Status API is asked (confirm.request) */
	CONFIRM_CLEAR, /* the awaited confirmation is answered, or moot */
};

struct order_decision {
	enum evidence_result result;
	bool transition; /* status changes to .to */
	enum order_status to;
	bool grant_access;  /* with the transition to PAID */
	bool revoke_access; /* with the transition to REFUNDED */
	unsigned flags;     /* enum order_flag bits to set */
	const char *reason; /* static, lower-case, for evidence.reason */
	/* confirm.c's part (order_decide leaves them zero) */
	enum confirm_step confirm;
	bool contradicted; /* Midtrans contradicts the held notification */
	const char *flag_reason; /* with OFLAG_FLAGGED; NULL: reason */
};

/*
 * Decides what evidence ev means for an order in state o.  Always
 * succeeds; *ret is fully written.  Rules (docs/state-machine.md):
 * success = settlement, or capture with fraud_status accept or absent;
 * evidence whose amount or currency differs from the order never makes it
 * PAID (EV_FLAGGED); forward only; anything else is recorded.
 */
void order_decide(const struct order_facts *o, const struct evidence_in *ev,
                  struct order_decision *ret);

/*
 * Midtrans's transaction states and the order they follow
 * (docs/state-machine.md, "Confirmation"):
 *   pending   -> settlement | capture | expire | cancel | deny | failure
 *   authorize -> capture | deny | cancel | expire
 *   capture/challenge -> capture | deny | cancel
 *   capture   -> settlement | cancel
 *   capture/deny -> deny
 *   settlement -> refund | partial_refund | chargeback
 *                 | partial_chargeback | deny/settled
 *   partial_refund -> refund | partial_refund
 *   partial_chargeback -> chargeback
 * The key of a state: transaction_status, with the fraud status for a
 * capture ("capture" = accept or none, "capture/challenge",
 * "capture/deny"), and "deny/settled" for a deny that carries
 * settlement_time (the reversal of a settled payment, as opposed to a
 * failed attempt: "deny").  The two denies are different claims: a
 * notification that says the payment had settled is borne out only by an
 * answer that says so too.  Returns the key in buf, or -EINVAL for an
 * unknown or too long status.
 */
int midtrans_state_key(const char *transaction_status, const char *fraud_status,
                       const char *settlement_time, char *buf, size_t len);
/* True when state `later` is `held` itself or reachable from it. */
bool midtrans_state_follows(const char *held, const char *later);

/*
 * Compares a Midtrans gross_amount string with an integer rupiah amount as
 * decimals: "154600.00", "154600.0" and "154600" equal 154600; "154600.50",
 * "", "-1", "1e5", " 154600" do not.  Returns true on equality.
 */
bool amount_matches(const char *gross_amount, int64_t amount);

#endif
