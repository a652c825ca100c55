/*
 * test_state.c - the order state machine, row by row against the table in
 * docs/state-machine.md (Midtrans's statuses: docs/midtrans.md), plus
 * sequences of reordered / duplicated evidence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "state.h"

#define AMOUNT 154600

#define N  EVIDENCE_NOTIFICATION
#define S  EVIDENCE_STATUS
#define NF EVIDENCE_NOT_FOUND
#define EX EVIDENCE_EXPIRED

struct row {
	int line;
	enum order_status from;
	enum evidence_kind kind;
	const char *ts, *fraud, *amount, *currency;
	bool past_expiry;
	/* expected */
	enum evidence_result result;
	enum order_status to; /* == from when no transition */
	bool grant, revoke;
	unsigned flags;
};

#define R(...)                                                                 \
	{                                                                      \
		__LINE__, __VA_ARGS__                                          \
	}
#define A  "154600.00"
#define P  ORDER_PENDING
#define PD ORDER_PAID
#define F  ORDER_FAILED
#define E  ORDER_EXPIRED
#define C  ORDER_CANCELLED
#define RF ORDER_REFUNDED

static const struct row rows[] = {
    /* PENDING: every Midtrans transaction_status */
    R(P, N, "settlement", NULL, A, "IDR", false, EV_APPLIED, PD, true, false,
      0),
    R(P, N, "settlement", "accept", "154600", NULL, false, EV_APPLIED, PD, true,
      false, 0),
    R(P, N, "capture", "accept", A, "IDR", false, EV_APPLIED, PD, true, false,
      0),
    R(P, N, "capture", NULL, A, "IDR", false, EV_APPLIED, PD, true, false, 0),
    R(P, N, "capture", "challenge", A, "IDR", false, EV_NOOP, P, false, false,
      0),
    R(P, N, "capture", "deny", A, "IDR", false, EV_APPLIED, F, false, false, 0),
    R(P, N, "capture", "weird", A, "IDR", false, EV_INVALID, P, false, false,
      0),
    R(P, N, "failure", NULL, A, "IDR", false, EV_APPLIED, F, false, false, 0),
    R(P, N, "pending", NULL, A, "IDR", false, EV_NOOP, P, false, false, 0),
    R(P, N, "authorize", NULL, A, "IDR", false, EV_NOOP, P, false, false, 0),
    R(P, N, "deny", "accept", A, "IDR", false, EV_NOOP, P, false, false, 0),
    /* deny past expiry: the Status API's check after expiry ends it; a
     * notification (maybe applied late from a backlog) waits for that */
    R(P, S, "deny", NULL, A, "IDR", true, EV_APPLIED, F, false, false, 0),
    R(P, S, "deny", NULL, A, "IDR", false, EV_NOOP, P, false, false, 0),
    R(P, N, "deny", NULL, A, "IDR", true, EV_NOOP, P, false, false, 0),
    R(P, N, "expire", NULL, A, "IDR", false, EV_APPLIED, E, false, false, 0),
    R(P, N, "cancel", "accept", A, "IDR", false, EV_APPLIED, C, false, false,
      0),
    /* a full refund / chargeback before its (late) settlement: the money
     * went back, REFUNDED, nothing granted so nothing revoked */
    R(P, N, "refund", NULL, A, "IDR", false, EV_APPLIED, RF, false, false, 0),
    R(P, S, "refund", NULL, A, "IDR", false, EV_APPLIED, RF, false, false, 0),
    R(P, N, "partial_refund", NULL, A, "IDR", false, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    R(P, N, "chargeback", NULL, A, "IDR", false, EV_APPLIED, RF, false, false,
      OFLAG_DISPUTED),
    R(P, N, "partial_chargeback", NULL, A, "IDR", false, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    /* the Status API's partial refund proves the payment it partly
     * refunds (its settlement notification may be lost for good) */
    R(P, S, "partial_refund", NULL, A, "IDR", false, EV_APPLIED, PD, true,
      false, OFLAG_PARTIAL_REFUND),
    R(P, S, "partial_chargeback", NULL, A, "IDR", false, EV_APPLIED, PD, true,
      false, OFLAG_DISPUTED),
    R(P, S, "partial_refund", NULL, "1.00", "IDR", false, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    R(P, N, "refund", NULL, "1.00", "IDR", false, EV_FLAGGED, P, false, false,
      OFLAG_FLAGGED),
    R(P, N, "expired", NULL, A, "IDR", false, EV_INVALID, P, false, false, 0),
    R(P, N, NULL, NULL, A, "IDR", false, EV_INVALID, P, false, false, 0),
    /* amount / currency: never PAID, flagged */
    R(P, N, "settlement", NULL, "154601.00", "IDR", false, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    R(P, N, "settlement", NULL, "154600.01", "IDR", false, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    R(P, N, "settlement", NULL, "1546000", "IDR", false, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    R(P, N, "settlement", NULL, NULL, "IDR", false, EV_FLAGGED, P, false, false,
      OFLAG_FLAGGED),
    R(P, N, "capture", "accept", A, "USD", false, EV_FLAGGED, P, false, false,
      OFLAG_FLAGGED),
    R(P, S, "settlement", NULL, "15460.00", "IDR", true, EV_FLAGGED, P, false,
      false, OFLAG_FLAGGED),
    R(PD, N, "deny", NULL, "1.00", "IDR", false, EV_FLAGGED, PD, false, false,
      OFLAG_FLAGGED),
    /* status checks */
    R(P, S, "settlement", NULL, A, "IDR", false, EV_APPLIED, PD, true, false,
      0),
    R(P, S, "pending", NULL, A, "IDR", true, EV_NOOP, P, false, false, 0),
    R(P, S, "expire", NULL, A, "IDR", true, EV_APPLIED, E, false, false, 0),
    R(P, NF, NULL, NULL, NULL, NULL, false, EV_NOOP, P, false, false, 0),
    R(P, NF, NULL, NULL, NULL, NULL, true, EV_APPLIED, E, false, false, 0),
    R(P, EX, NULL, NULL, NULL, NULL, true, EV_APPLIED, E, false, false, 0),
    R(P, EX, NULL, NULL, NULL, NULL, false, EV_NOOP, P, false, false, 0),
    R(PD, NF, NULL, NULL, NULL, NULL, true, EV_IGNORED, PD, false, false, 0),
    R(PD, EX, NULL, NULL, NULL, NULL, true, EV_IGNORED, PD, false, false, 0),
    R(E, NF, NULL, NULL, NULL, NULL, true, EV_NOOP, E, false, false, 0),
    /* PAID */
    R(PD, N, "settlement", NULL, A, "IDR", false, EV_NOOP, PD, false, false, 0),
    R(PD, N, "capture", "accept", A, "IDR", false, EV_NOOP, PD, false, false,
      0),
    R(PD, N, "capture", "challenge", A, "IDR", false, EV_IGNORED, PD, false,
      false, 0),
    R(PD, N, "pending", NULL, A, "IDR", false, EV_IGNORED, PD, false, false, 0),
    R(PD, N, "authorize", NULL, A, "IDR", false, EV_IGNORED, PD, false, false,
      0),
    R(PD, N, "failure", NULL, A, "IDR", false, EV_IGNORED, PD, false, false, 0),
    R(PD, N, "expire", NULL, A, "IDR", false, EV_IGNORED, PD, false, false, 0),
    R(PD, N, "cancel", NULL, A, "IDR", false, EV_FLAGGED, PD, false, false,
      OFLAG_FLAGGED),
    /* deny on PAID: a notification without settlement_time is flagged (a
     * stale attempt or a reversal: the Status API decides); see
     * test_reversal_needs_settled_evidence for the reversal itself */
    R(PD, N, "deny", NULL, A, "IDR", false, EV_FLAGGED, PD, false, false,
      OFLAG_FLAGGED),
    R(PD, S, "deny", NULL, A, "IDR", false, EV_APPLIED, RF, false, true,
      OFLAG_REVERSED),
    R(PD, N, "refund", NULL, A, "IDR", false, EV_APPLIED, RF, false, true, 0),
    R(PD, N, "partial_refund", NULL, A, "IDR", false, EV_APPLIED, PD, false,
      false, OFLAG_PARTIAL_REFUND),
    R(PD, N, "chargeback", NULL, A, "IDR", false, EV_APPLIED, RF, false, true,
      OFLAG_DISPUTED),
    R(PD, N, "partial_chargeback", NULL, A, "IDR", false, EV_APPLIED, PD, false,
      false, OFLAG_DISPUTED),
    R(PD, S, "refund", NULL, A, "IDR", false, EV_APPLIED, RF, false, true, 0),
    /* final states: forward only */
    R(F, N, "settlement", NULL, A, "IDR", false, EV_FLAGGED, F, false, false,
      OFLAG_FLAGGED),
    R(E, N, "settlement", NULL, A, "IDR", false, EV_FLAGGED, E, false, false,
      OFLAG_FLAGGED),
    R(C, N, "capture", "accept", A, "IDR", false, EV_FLAGGED, C, false, false,
      OFLAG_FLAGGED),
    R(F, N, "failure", NULL, A, "IDR", false, EV_NOOP, F, false, false, 0),
    R(F, N, "capture", "deny", A, "IDR", false, EV_NOOP, F, false, false, 0),
    R(E, N, "expire", NULL, A, "IDR", false, EV_NOOP, E, false, false, 0),
    R(C, N, "cancel", NULL, A, "IDR", false, EV_NOOP, C, false, false, 0),
    R(E, N, "pending", NULL, A, "IDR", false, EV_IGNORED, E, false, false, 0),
    R(E, N, "cancel", NULL, A, "IDR", false, EV_IGNORED, E, false, false, 0),
    R(C, N, "expire", NULL, A, "IDR", false, EV_IGNORED, C, false, false, 0),
    R(F, N, "deny", NULL, A, "IDR", false, EV_IGNORED, F, false, false, 0),
    R(RF, N, "refund", NULL, A, "IDR", false, EV_NOOP, RF, false, false, 0),
    R(RF, N, "deny", NULL, A, "IDR", false, EV_NOOP, RF, false, false, 0),
    R(RF, N, "settlement", NULL, A, "IDR", false, EV_IGNORED, RF, false, false,
      0),
    R(RF, N, "capture", "accept", A, "IDR", false, EV_IGNORED, RF, false, false,
      0),
    R(RF, N, "pending", NULL, A, "IDR", false, EV_IGNORED, RF, false, false, 0),
    R(RF, N, "partial_refund", NULL, A, "IDR", false, EV_IGNORED, RF, false,
      false, 0),
};

static void
test_table(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct order_facts o = {.status = r->from, .amount = AMOUNT};
		struct evidence_in ev = {
		    .kind = r->kind,
		    .transaction_status = r->ts,
		    .fraud_status = r->fraud,
		    .gross_amount = r->amount,
		    .currency = r->currency,
		    .past_expiry = r->past_expiry,
		};
		struct order_decision d;

		memset(&d, 0xA5, sizeof(d)); /* must be fully written */
		order_decide(&o, &ev, &d);
		enum order_status to = d.transition ? d.to : r->from;
		if (d.result != r->result || to != r->to ||
		    d.transition != (r->to != r->from) ||
		    d.grant_access != r->grant ||
		    d.revoke_access != r->revoke || d.flags != r->flags ||
		    d.reason == NULL) {
			fprintf(stderr,
			        "test_state.c:%d: %s + %s/%s amount=%s: got "
			        "%s -> %s grant=%d revoke=%d flags=%#x, want "
			        "%s -> %s grant=%d revoke=%d flags=%#x\n",
			        r->line, order_status_name(r->from),
			        r->ts ? r->ts : "(kind)",
			        r->fraud ? r->fraud : "-",
			        r->amount ? r->amount : "-",
			        evidence_result_name(d.result),
			        order_status_name(to), d.grant_access,
			        d.revoke_access, d.flags,
			        evidence_result_name(r->result),
			        order_status_name(r->to), r->grant, r->revoke,
			        r->flags);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void
test_amounts(void **state)
{
	(void)state;
	assert_true(amount_matches("154600.00", 154600));
	assert_true(amount_matches("154600", 154600));
	assert_true(amount_matches("154600.0", 154600));
	assert_true(amount_matches("100000.00", 100000));
	assert_false(amount_matches("154600.50", 154600));
	assert_false(amount_matches("154600.", 154600));
	assert_false(amount_matches("", 154600));
	assert_false(amount_matches(NULL, 154600));
	assert_false(amount_matches("-154600", 154600));
	assert_false(amount_matches("+154600", 154600));
	assert_false(amount_matches(" 154600", 154600));
	assert_false(amount_matches("154600 ", 154600));
	assert_false(amount_matches("1.546e5", 154600));
	assert_false(amount_matches("154600.00x", 154600));
	assert_true(
	    amount_matches("0154600.00", 154600)); /* decimal equality */
	assert_false(amount_matches("99999999999999999999", 154600));
	assert_false(amount_matches("154,600.00", 154600));
}

static void
test_amount_parse(void **state)
{
	int64_t v = -1;

	(void)state;
	assert_int_equal(midtrans_amount_parse("50000.00", &v), 0);
	assert_int_equal(v, 50000);
	assert_int_equal(midtrans_amount_parse("50000", &v), 0);
	assert_int_equal(v, 50000);
	assert_int_equal(midtrans_amount_parse("999999999999999", &v), 0);
	assert_int_equal(v, 999999999999999);
	v = -1;
	assert_true(midtrans_amount_parse("50000.50", &v) < 0);
	assert_true(midtrans_amount_parse("1000000000000000", &v) < 0);
	assert_true(midtrans_amount_parse("", &v) < 0);
	assert_true(midtrans_amount_parse(NULL, &v) < 0);
	assert_true(midtrans_amount_parse("-1", &v) < 0);
	assert_true(midtrans_amount_parse("5e4", &v) < 0);
	assert_true(midtrans_amount_parse("50000.", &v) < 0);
	assert_int_equal(v, -1); /* written only on success */
}

/* Applies a sequence of evidence the way evidence.c does and counts the
 * effects an outside observer sees. */
struct sim {
	enum order_status status;
	int grants, revokes, paid_events;
	unsigned flags;
	const char *txn; /* orders.transaction_id */
	enum evidence_result last;
};

/* Notification about Midtrans transaction txn (NULL: none named). */
static void
sim_apply_txn(struct sim *s, const char *ts, const char *fraud, const char *amt,
              const char *settlement_time, const char *txn)
{
	struct order_facts o = {.status = s->status,
	                        .amount = AMOUNT,
	                        .reversed = (s->flags & OFLAG_REVERSED) != 0,
	                        .transaction_id = s->txn};
	struct evidence_in ev = {.kind = EVIDENCE_NOTIFICATION,
	                         .transaction_status = ts,
	                         .fraud_status = fraud,
	                         .gross_amount = amt ? amt : A,
	                         .currency = "IDR",
	                         .settlement_time = settlement_time,
	                         .transaction_id = txn};
	struct order_decision d;

	order_decide(&o, &ev, &d);
	s->last = d.result;
	/* evidence.c st_set_txn: first seen, then each transition's */
	if (d.result != EV_FLAGGED && d.result != EV_INVALID && txn != NULL &&
	    (s->txn == NULL || d.transition))
		s->txn = txn;
	if (d.transition) {
		assert_true(d.to != s->status);
		if (d.to == ORDER_PAID)
			s->paid_events++;
		s->status = d.to;
	}
	s->grants += d.grant_access;
	s->revokes += d.revoke_access;
	s->flags |= d.flags;
}

static void
sim_apply_st(struct sim *s, const char *ts, const char *fraud, const char *amt,
             const char *settlement_time)
{
	sim_apply_txn(s, ts, fraud, amt, settlement_time, NULL);
}

static void
sim_apply(struct sim *s, const char *ts, const char *fraud, const char *amt)
{
	sim_apply_st(s, ts, fraud, amt, NULL);
}

static void
test_settlement_before_pending(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "settlement", NULL, NULL);
	sim_apply(&s, "pending", NULL, NULL);
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.grants, 1);
	assert_int_equal(s.paid_events, 1);
}

static void
test_settlement_three_times(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "pending", NULL, NULL);
	for (int i = 0; i < 3; i++)
		sim_apply(&s, "settlement", NULL, NULL);
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.grants, 1);
	assert_int_equal(s.paid_events, 1);
}

static void
test_capture_then_settlement_is_one_payment(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "capture", "accept", NULL);
	sim_apply(&s, "settlement", "accept", NULL);
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.grants, 1);
	assert_int_equal(s.paid_events, 1);
}

static void
test_settlement_then_deny_reverses(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "pending", NULL, NULL);
	sim_apply(&s, "settlement", NULL, NULL);
	/* a reversal's deny names when the transaction had settled */
	sim_apply_st(&s, "deny", NULL, NULL, "2026-11-23 16:00:05");
	sim_apply_st(&s, "deny", NULL, NULL, "2026-11-23 16:00:05"); /* dup */
	sim_apply(&s, "settlement", NULL, NULL); /* late duplicate */
	assert_int_equal(s.status, ORDER_REFUNDED);
	assert_int_equal(s.grants, 1);
	assert_int_equal(s.revokes, 1);
	assert_true(s.flags & OFLAG_REVERSED);
}

/* The failed attempt's deny delivered late (retried or reordered by
 * Midtrans) after the customer paid with another attempt: no reversal, the
 * customer keeps access, the order is flagged for a Status API check. */
static void
test_stale_deny_after_payment_is_flagged(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "pending", NULL, NULL);
	sim_apply(&s, "settlement", NULL, NULL);
	sim_apply(&s, "deny", NULL, NULL); /* stale: no settlement_time */
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.grants, 1);
	assert_int_equal(s.revokes, 0);
	assert_true(s.flags & OFLAG_FLAGGED);
	assert_false(s.flags & OFLAG_REVERSED);
}

/* The mirror of the stale deny: the reversal's deny (it names when the
 * transaction settled) arrives while the order is still PENDING, and the
 * settlement it reverses arrives after it.  The money went back: never
 * PAID, no access, no receipt; the late settlement of that transaction is
 * stale, while a settlement of another transaction is real money on a
 * final order and is flagged for operators. */
static void
test_reversal_before_its_settlement(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply_txn(&s, "pending", NULL, NULL, NULL, "t1");
	sim_apply_txn(&s, "deny", NULL, NULL, "2026-11-23 16:00:05", "t1");
	assert_int_equal(s.status, ORDER_FAILED);
	assert_true(s.flags & OFLAG_REVERSED);
	sim_apply_txn(&s, "settlement", NULL, NULL, "2026-11-23 16:00:05",
	              "t1");
	assert_int_equal(s.last, EV_IGNORED);
	sim_apply_txn(&s, "deny", NULL, NULL, "2026-11-23 16:00:05", "t1");
	assert_int_equal(s.status, ORDER_FAILED);
	assert_int_equal(s.grants, 0);
	assert_int_equal(s.paid_events, 0);
	assert_false(s.flags & OFLAG_FLAGGED);
	sim_apply_txn(&s, "settlement", NULL, NULL, "2026-11-23 17:00:00",
	              "t2");
	assert_int_equal(s.last, EV_FLAGGED);
	assert_int_equal(s.status, ORDER_FAILED);
	assert_int_equal(s.grants, 0);
	assert_true(s.flags & OFLAG_FLAGGED);
}

/* A full refund (Midtrans: settlement -> refund) delivered before its
 * delayed settlement: the order ends REFUNDED at once, never PAID: no
 * access, no order.paid (so no receipt); the late settlement, in either
 * order with a duplicate refund, changes nothing. */
static void
test_refund_before_its_settlement(void **state)
{
	static const char *const seqs[][4] = {
	    {"pending", "refund", "settlement", "refund"},
	    {"refund", "settlement", "pending", NULL},
	    {"refund", "pending", "refund", "settlement"},
	    {"chargeback", "settlement", NULL, NULL},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(seqs) / sizeof(*seqs); i++) {
		struct sim s = {0};
		for (int k = 0; k < 4 && seqs[i][k] != NULL; k++) {
			sim_apply_txn(&s, seqs[i][k], NULL, NULL, NULL, "t1");
			if (strcmp(seqs[i][k], "settlement") == 0)
				assert_int_equal(s.last, EV_IGNORED);
		}
		assert_int_equal(s.status, ORDER_REFUNDED);
		assert_int_equal(s.grants, 0);
		assert_int_equal(s.revokes, 0);
		assert_int_equal(s.paid_events, 0);
		assert_false(s.flags & OFLAG_FLAGGED);
	}
}

/* Settlement and refund in both orders: REFUNDED without access either
 * way; only the order that saw the payment first granted (and revoked). */
static void
test_refund_and_settlement_either_order(void **state)
{
	struct sim a = {0}, b = {0};

	(void)state;
	sim_apply(&a, "settlement", NULL, NULL);
	sim_apply(&a, "refund", NULL, NULL);
	sim_apply(&b, "refund", NULL, NULL);
	sim_apply(&b, "settlement", NULL, NULL);
	assert_int_equal(a.status, ORDER_REFUNDED);
	assert_int_equal(b.status, ORDER_REFUNDED);
	assert_int_equal(a.grants - a.revokes, 0);
	assert_int_equal(b.grants - b.revokes, 0);
	assert_int_equal(a.paid_events, 1);
	assert_int_equal(b.paid_events, 0);
}

/* A failed attempt (t1) then a reversed payment (t2): the order follows
 * t2 from the reversal on, so t2's late settlement is recognised. */
static void
test_reversal_after_failed_attempt(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply_txn(&s, "deny", NULL, NULL, NULL, "t1");
	assert_int_equal(s.status, ORDER_PENDING);
	sim_apply_txn(&s, "deny", NULL, NULL, "2026-11-23 16:00:05", "t2");
	sim_apply_txn(&s, "settlement", NULL, NULL, "2026-11-23 16:00:05",
	              "t2");
	assert_int_equal(s.status, ORDER_FAILED);
	assert_int_equal(s.last, EV_IGNORED);
	assert_int_equal(s.grants, 0);
}

/* The reconciler asked the Status API while the customer's first attempt
 * was denied; the customer then paid, and kasir applied the payment before
 * that (older) answer, because the recon stream lagged the ingest stream.
 * The stale deny must not reverse the payment; a check made after the
 * payment still does. */
static void
test_status_deny_older_than_payment(void **state)
{
	struct order_facts paid = {.status = ORDER_PAID, .amount = AMOUNT};
	struct evidence_in ev = {.kind = EVIDENCE_STATUS,
	                         .transaction_status = "deny",
	                         .gross_amount = A,
	                         .currency = "IDR",
	                         .checked_before_paid = true};
	struct order_decision d;

	(void)state;
	order_decide(&paid, &ev, &d);
	assert_int_equal(d.result, EV_FLAGGED);
	assert_false(d.transition);
	assert_false(d.revoke_access);
	assert_true(d.flags & OFLAG_FLAGGED);
	ev.checked_before_paid = false; /* a fresh check: a reversal */
	order_decide(&paid, &ev, &d);
	assert_int_equal(d.result, EV_APPLIED);
	assert_int_equal(d.to, ORDER_REFUNDED);
	assert_true(d.revoke_access);
}

/* A PAID order paid by t2; an answer or claim about t1 (an earlier failed
 * attempt of the same order, or an id a notification named: unsigned)
 * never reverses, refunds or partly refunds it: flagged instead.  The
 * same answers about t2 do. */
/* Snap said 406 for the order (its id was used at Midtrans before
 * kasir's call): no payment is its own, by notification or answer; an
 * expiry still applies. */
static void
test_id_taken(void **state)
{
	struct order_facts o = {
	    .status = ORDER_PENDING, .amount = AMOUNT, .id_taken = true};
	struct evidence_in ev = {.kind = EVIDENCE_STATUS,
	                         .transaction_status = "settlement",
	                         .gross_amount = A,
	                         .currency = "IDR",
	                         .transaction_id = "t1"};
	struct order_decision d;

	(void)state;
	order_decide(&o, &ev, &d);
	assert_int_equal(d.result, EV_FLAGGED);
	assert_false(d.transition);
	assert_false(d.grant_access);
	assert_int_equal(d.flags, OFLAG_FLAGGED);
	ev.kind = EVIDENCE_NOTIFICATION;
	order_decide(&o, &ev, &d);
	assert_int_equal(d.result, EV_FLAGGED);
	assert_false(d.transition);
	ev.transaction_status = "expire";
	order_decide(&o, &ev, &d);
	assert_true(d.transition);
	assert_int_equal(d.to, ORDER_EXPIRED);
	/* the same settlement pays an order whose id was kasir's */
	o.id_taken = false;
	ev.transaction_status = "settlement";
	order_decide(&o, &ev, &d);
	assert_true(d.transition);
	assert_int_equal(d.to, ORDER_PAID);
}

static void
test_reversal_of_another_transaction(void **state)
{
	struct order_facts paid = {
	    .status = ORDER_PAID, .amount = AMOUNT, .transaction_id = "t2"};
	static const char *const what[] = {"deny", "refund", "chargeback",
	                                   "partial_refund",
	                                   "partial_chargeback"};
	struct order_decision d;

	(void)state;
	for (size_t i = 0; i < sizeof(what) / sizeof(*what); i++) {
		struct evidence_in ev = {.kind = EVIDENCE_STATUS,
		                         .transaction_status = what[i],
		                         .gross_amount = A,
		                         .currency = "IDR",
		                         .settlement_time =
		                             "2026-11-23 16:00:05",
		                         .transaction_id = "t1"};

		order_decide(&paid, &ev, &d);
		assert_int_equal(d.result, EV_FLAGGED);
		assert_false(d.transition);
		assert_false(d.revoke_access);
		assert_int_equal(d.flags, OFLAG_FLAGGED);
		ev.kind = EVIDENCE_NOTIFICATION;
		order_decide(&paid, &ev, &d);
		assert_int_equal(d.result, EV_FLAGGED);
		assert_false(d.transition);
		ev.kind = EVIDENCE_STATUS;
		ev.transaction_id = "t2"; /* the payment's own */
		order_decide(&paid, &ev, &d);
		assert_int_equal(d.result, EV_APPLIED);
	}
}

static void
test_deny_then_retry_pays(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "pending", NULL, NULL);
	sim_apply(&s, "deny", NULL, NULL);
	assert_int_equal(s.status, ORDER_PENDING);
	sim_apply(&s, "settlement", NULL, NULL);
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.grants, 1);
	assert_int_equal(s.revokes, 0);
}

static void
test_challenge_then_accept(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "capture", "challenge", NULL);
	assert_int_equal(s.status, ORDER_PENDING);
	assert_int_equal(s.grants, 0);
	sim_apply(&s, "capture", "accept", NULL);
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.grants, 1);
}

static void
test_expire_after_paid_ignored(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "settlement", NULL, NULL);
	sim_apply(&s, "expire", NULL, NULL);
	sim_apply(&s, "cancel", NULL, NULL);
	assert_int_equal(s.status, ORDER_PAID);
	assert_int_equal(s.revokes, 0);
}

static void
test_mismatch_never_paid(void **state)
{
	struct sim s = {0};

	(void)state;
	sim_apply(&s, "settlement", NULL, "1000.00");
	sim_apply(&s, "capture", "accept", "999999.00");
	assert_int_equal(s.status, ORDER_PENDING);
	assert_int_equal(s.grants, 0);
	assert_true(s.flags & OFLAG_FLAGGED);
}

/* Every permutation of {pending, settlement, settlement, expire}: the
 * outcome is always exactly one payment. */
static void
test_permutations(void **state)
{
	const char *ev[4] = {"pending", "settlement", "settlement", "expire"};
	int idx[4] = {0, 1, 2, 3};
	int count = 0;

	(void)state;
	/* Heap's algorithm, iterative */
	int c[4] = {0};
	for (int i = 0;;) {
		struct sim s = {0};
		for (int k = 0; k < 4; k++)
			sim_apply(&s, ev[idx[k]], NULL, NULL);
		/* expire before settlement makes the order EXPIRED and the
		 * late payment flagged; otherwise PAID exactly once */
		int first_settle = -1, first_expire = -1;
		for (int k = 0; k < 4; k++) {
			if (first_settle < 0 &&
			    strcmp(ev[idx[k]], "settlement") == 0)
				first_settle = k;
			if (first_expire < 0 &&
			    strcmp(ev[idx[k]], "expire") == 0)
				first_expire = k;
		}
		if (first_settle < first_expire) {
			assert_int_equal(s.status, ORDER_PAID);
			assert_int_equal(s.grants, 1);
			assert_int_equal(s.paid_events, 1);
		} else {
			assert_int_equal(s.status, ORDER_EXPIRED);
			assert_int_equal(s.grants, 0);
			assert_true(s.flags & OFLAG_FLAGGED);
		}
		count++;
		while (i < 4 && c[i] >= i) {
			c[i] = 0;
			i++;
		}
		if (i >= 4)
			break;
		int j = (i % 2 == 0) ? 0 : c[i];
		int t = idx[j];
		idx[j] = idx[i];
		idx[i] = t;
		c[i]++;
		i = 0;
	}
	assert_int_equal(count, 24);
}

static void
test_names(void **state)
{
	enum order_status s;

	(void)state;
	for (unsigned i = 0; i < ORDER_STATUS_COUNT; i++) {
		assert_int_equal(order_status_parse(order_status_name(i), &s),
		                 0);
		assert_int_equal(s, i);
	}
	assert_int_not_equal(order_status_parse("paid", &s), 0);
	assert_int_not_equal(order_status_parse(NULL, &s), 0);
	assert_string_equal(order_status_name(ORDER_STATUS_COUNT), "UNKNOWN");
}

/* Midtrans's transaction graph: what a Status API answer may say about a
 * payment a notification claimed (confirm.c). */
static void
test_midtrans_graph(void **state)
{
	static const struct {
		const char *held, *later;
		bool follows;
	} edges[] = {
	    {"settlement", "settlement", true},
	    {"settlement", "refund", true},
	    {"settlement", "partial_refund", true},
	    {"settlement", "chargeback", true},
	    {"settlement", "partial_chargeback", true},
	    {"settlement", "deny/settled", true}, /* reversal */
	    /* a failed attempt's deny never follows a settlement, and a
	     * claimed reversal is not borne out by one */
	    {"settlement", "deny", false},
	    {"capture", "deny/settled", true},
	    {"deny/settled", "deny", false},
	    {"pending", "deny/settled", true},
	    {"settlement", "pending", false},
	    {"settlement", "expire", false},
	    {"settlement", "cancel", false},
	    {"settlement", "capture", false},
	    {"capture", "settlement", true},
	    {"capture", "refund", true}, /* via settlement */
	    {"capture", "cancel", true},
	    {"capture", "capture/challenge", false},
	    {"capture", "pending", false},
	    {"capture/challenge", "capture", true},
	    {"capture/deny", "deny", true},
	    {"pending", "settlement", true},
	    {"pending", "refund", true},
	    {"expire", "expire", true},
	    {"expire", "settlement", false},
	    {"cancel", "settlement", false},
	    {"refund", "settlement", false},
	    {"refund", "refund", true},
	    {"partial_refund", "refund", true},
	    {"chargeback", "refund", false},
	    {"failure", "settlement", false},
	    {"deny", "settlement", false},
	};
	char key[24];

	(void)state;
	for (size_t i = 0; i < sizeof(edges) / sizeof(*edges); i++) {
		if (midtrans_state_follows(edges[i].held, edges[i].later) !=
		    edges[i].follows)
			fail_msg("%s -> %s: expected %s", edges[i].held,
			         edges[i].later,
			         edges[i].follows ? "yes" : "no");
	}
	assert_false(midtrans_state_follows(NULL, "settlement"));
	assert_false(midtrans_state_follows("settlement", NULL));
	assert_int_equal(midtrans_state_key("capture", "accept", NULL, key, 24),
	                 0);
	assert_string_equal(key, "capture");
	assert_int_equal(midtrans_state_key("capture", NULL, NULL, key, 24), 0);
	assert_string_equal(key, "capture");
	assert_int_equal(
	    midtrans_state_key("capture", "challenge", NULL, key, 24), 0);
	assert_string_equal(key, "capture/challenge");
	assert_int_equal(
	    midtrans_state_key("settlement", "accept", NULL, key, 24), 0);
	assert_string_equal(key, "settlement");
	assert_int_equal(
	    midtrans_state_key("deny", NULL, "2026-12-06 10:00:00", key, 24),
	    0);
	assert_string_equal(key, "deny/settled");
	assert_int_equal(midtrans_state_key("deny", NULL, "", key, 24), 0);
	assert_string_equal(key, "deny");
	assert_int_not_equal(
	    midtrans_state_key("capture", "maybe", NULL, key, 24), 0);
	assert_int_not_equal(midtrans_state_key("paid", NULL, NULL, key, 24),
	                     0);
	assert_int_not_equal(midtrans_state_key(NULL, NULL, NULL, key, 24), 0);
	assert_int_not_equal(
	    midtrans_state_key("settlement", NULL, NULL, key, 5), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_amounts),
	    cmocka_unit_test(test_amount_parse),
	    cmocka_unit_test(test_settlement_before_pending),
	    cmocka_unit_test(test_settlement_three_times),
	    cmocka_unit_test(test_capture_then_settlement_is_one_payment),
	    cmocka_unit_test(test_settlement_then_deny_reverses),
	    cmocka_unit_test(test_reversal_before_its_settlement),
	    cmocka_unit_test(test_reversal_after_failed_attempt),
	    cmocka_unit_test(test_refund_before_its_settlement),
	    cmocka_unit_test(test_refund_and_settlement_either_order),
	    cmocka_unit_test(test_status_deny_older_than_payment),
	    cmocka_unit_test(test_reversal_of_another_transaction),
	    cmocka_unit_test(test_id_taken),
	    cmocka_unit_test(test_deny_then_retry_pays),
	    cmocka_unit_test(test_stale_deny_after_payment_is_flagged),
	    cmocka_unit_test(test_challenge_then_accept),
	    cmocka_unit_test(test_expire_after_paid_ignored),
	    cmocka_unit_test(test_mismatch_never_paid),
	    cmocka_unit_test(test_permutations),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_midtrans_graph),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
