#!/usr/bin/python3
"""A whole batch applied at once equals the same messages applied one by one.

kasir-order applies a backlog optimistically: the whole batch goes through
the evidence path at once, in rounds of one message per order, each kind of
write one array statement (services/order/evidence.c, store.c); on any
failure the batch is applied again one message at a time by the same code
with n = 1.  This test delivers the same notification sequences to twin
orders:

  set A  while kasir-order runs, each notification applied before the next
         is sent (batches of one);
  set B  while kasir-order is stopped; it then applies the whole backlog,
         all orders interleaved, in a few large batches.

Every twin must end identical: status, flags, flag reason, transaction id,
evidence (status before/after, result, reason) in order, transitions,
entitlement events, and the types of its order events on the orders stream,
in order.  Evidence for unknown orders is kept in both.  And the batch must
have been applied optimistically (no fall-back in kasir-order's log), or
this test would only compare the one-message case with itself.

Both modes: order.signature_only (the notifications decide; the subject
of that run is that mode) and the default mode.  In the default mode
kasir-reconciler is held back while both sets are delivered: every
notification that would move an order is held, awaiting the Status API, and
the held state, the evidence and the confirm.request events must be
identical both ways.  Then each story happens at the fake Midtrans (TRUTH),
the reconciler starts and answers every confirmation: each twin ends where
Midtrans's truth says (never PAID unless the truth is paid, access exactly
when it is), both twins alike.
"""
import sys

import kasirtest

from paystack import PayStack, check, main_wrapper, notification

AMOUNT = 150000
A = "150000.00"
ST = "2026-11-23 16:00:05"

# name -> [(transaction_status, extra fields)]
SEQUENCES = {
    "pay": [("pending", {}), ("settlement", {"settlement_time": ST}),
            ("settlement", {"settlement_time": ST})],
    "reverse": [("settlement", {"settlement_time": ST}),
                ("deny", {"settlement_time": ST}),
                ("settlement", {"settlement_time": ST})],
    "mirror": [("deny", {"settlement_time": ST, "transaction_id": "tx-m1"}),
               ("settlement", {"settlement_time": ST, "transaction_id": "tx-m1"}),
               ("settlement", {"settlement_time": ST, "transaction_id": "tx-m2"})],
    "stale-deny": [("pending", {}), ("deny", {}),
                   ("settlement", {"settlement_time": ST}), ("deny", {})],
    "mismatch": [("settlement", {"gross_amount": "1000.00"}),
                 ("settlement", {"settlement_time": ST})],
    "capture": [("capture", {"payment_type": "credit_card"}),
                ("settlement", {"payment_type": "credit_card",
                                "settlement_time": ST})],
    "challenge": [("capture", {"fraud_status": "challenge",
                               "payment_type": "credit_card"}),
                  ("capture", {"payment_type": "credit_card"})],
    "refund": [("settlement", {"settlement_time": ST}),
               ("partial_refund", {}), ("refund", {})],
    "expire": [("pending", {}), ("expire", {}),
               ("settlement", {"settlement_time": ST})],
    "chargeback": [("settlement", {"settlement_time": ST}),
                   ("chargeback", {})],
    "cancel": [("pending", {}), ("cancel", {}), ("cancel", {})],
}


# name -> what happened at Midtrans, in order (fake actions and options):
# the story each sequence's notifications tell
TRUTH = {
    "pay": [("pay", {})],
    "reverse": [("pay", {}), ("reverse", {})],
    "mirror": [("pay", {}), ("reverse", {})],
    "stale-deny": [("pending", {}), ("deny", {}), ("pay", {})],
    "mismatch": [("pay", {})],
    "capture": [("pay", {"payment_type": "credit_card"})],
    "challenge": [("challenge", {}), ("pay", {})],
    "refund": [("pay", {"payment_type": "gopay"}), ("refund", {"refund_amount": 50000}),
               ("refund", {})],
    "expire": [("pending", {}), ("expire", {})],
    "chargeback": [("pay", {"payment_type": "credit_card"}), ("chargeback", {})],
    "cancel": [("pending", {}), ("cancel", {})],
}
# name -> (the fake's truth after TRUTH, where kasir-order ends once the
# Status API answered the held backlog).  A reversal is held before the
# settlement it reverses was applied, and the answer (deny with
# settlement_time) moves the PENDING order: FAILED, reversed -- never PAID.
CONFIRMED = {"pay": ("PAID", "PAID"), "reverse": ("REVERSED", "FAILED"),
             "mirror": ("REVERSED", "FAILED"), "stale-deny": ("PAID", "PAID"),
             "mismatch": ("PAID", "PAID"), "capture": ("PAID", "PAID"),
             "challenge": ("PAID", "PAID"), "refund": ("REFUNDED", "REFUNDED"),
             "expire": ("EXPIRED", "EXPIRED"), "chargeback": ("REFUNDED", "REFUNDED"),
             "cancel": ("CANCELLED", "CANCELLED")}


def bodies(oid, steps):
    out = []
    for ts, extra in steps:
        extra = dict(extra)
        amount = extra.pop("gross_amount", A)
        extra.setdefault("transaction_id", "tx-" + oid.split("-", 1)[1])
        out.append(notification(oid, ts, amount, **extra))
    return out


def facts(st, oid, keys=None):
    """Everything kasir-order recorded about oid (or only `keys` of it),
    without ids and times."""
    out = {}
    if keys is None or "events" in keys:
        kasirtest.wait_sequenced(st.sql, "orders")  # events: stream_out
    for k, sql in FACTS.items():
        if keys is None or k in keys:
            out[k] = st.sql(sql, (oid,))
    return out


FACTS = {
    "order": ("SELECT status, flagged, flag_reason, partial_refund, disputed,"
              " reversed, transaction_id, payment_type, awaiting_status"
              " FROM orders.orders WHERE order_id = %s"),
    "evidence": ("SELECT transaction_status, status_before, status_after,"
                 " result, reason FROM orders.evidence WHERE order_id = %s"
                 " ORDER BY id"),
    "transitions": ("SELECT from_status, to_status, reason"
                    " FROM orders.transitions WHERE order_id = %s"
                    " ORDER BY id"),
    "entitlements": ("SELECT action, reason FROM orders.entitlement_events"
                     " WHERE order_id = %s ORDER BY id"),
    "active": ("SELECT count(*) FROM orders.entitlements"
               " WHERE order_id = %s AND revoked_at IS NULL"),
    "events": ("SELECT type FROM orders.stream_log_messages"
               " WHERE (body::jsonb)->'data'->>'order_id' = %s"
               " ORDER BY seq"),
}


def outcome(st, oid):
    """Where oid ended: its order row, transitions, active entitlements."""
    return facts(st, oid, ("order", "transitions", "active"))


def main():
    run(signature_only=True)
    run(signature_only=False)


def run(signature_only):
    print(f"== order.signature_only: {signature_only}", flush=True)
    with PayStack.for_payment(signature_only=signature_only) as st:
        st.start_payment_path(reconciler=signature_only)
        for name in SEQUENCES:
            st.create_order(f"A-{name}", AMOUNT, email=f"a-{name}@example.com")
            st.create_order(f"B-{name}", AMOUNT, email=f"b-{name}@example.com")

        # set A: one at a time
        for name, steps in SEQUENCES.items():
            for b in bodies(f"A-{name}", steps):
                st.deliver(b)
        st.deliver(notification("A-unknown", "settlement", A))

        # set B: a backlog, the orders interleaved
        st.stop("order")
        queues = [bodies(f"B-{name}", steps) for name, steps in SEQUENCES.items()]
        sent = 0
        while any(queues):
            for qu in queues:
                if qu:
                    r = st.post(qu.pop(0))
                    if r.status != 200:
                        raise AssertionError(f"POST: {r}")
                    sent += 1
        st.post(notification("B-unknown", "settlement", A))
        st.start("order")
        st.wait_applied(timeout=60)
        log = st.log_text("order")
        check("applying it message by message" not in log,
              f"the backlog of {sent + 1} was applied as a batch (no fall-back)")

        for name in SEQUENCES:
            fa, fb = facts(st, f"A-{name}"), facts(st, f"B-{name}")
            for k in fa:
                if fa[k] != fb[k]:
                    print(f"A-{name} {k}: {fa[k]}", file=sys.stderr)
                    print(f"B-{name} {k}: {fb[k]}", file=sys.stderr)
                check(fa[k] == fb[k], f"{name}: {k} identical one by one and in a batch")
        unk = st.sql("SELECT order_id, transaction_status FROM orders.unknown_notifications"
                     " ORDER BY order_id")
        check(unk == [("A-unknown", "settlement"), ("B-unknown", "settlement")],
              f"evidence for unknown orders kept both ways ({unk})")
        # the outcomes themselves (so identical-but-wrong cannot pass)
        want = {"pay": "PAID", "reverse": "REFUNDED", "mirror": "FAILED",
                "stale-deny": "PAID", "mismatch": "PAID", "capture": "PAID",
                "challenge": "PAID", "refund": "REFUNDED", "expire": "EXPIRED",
                "chargeback": "REFUNDED", "cancel": "CANCELLED"}
        if not signature_only:
            # held: nothing moved without the Status API; what would have
            # moved awaits it (expire's first move is held, so its late
            # settlement is a move too)
            want = {name: "PENDING" for name in want}
            held = st.sql("SELECT count(*) FROM orders.orders WHERE order_id LIKE 'B-%%'"
                          " AND awaiting_status IS NOT NULL")[0][0]
            check(held >= 10, f"{held} orders awaiting confirmation")
        for name, status in want.items():
            check(st.status(f"B-{name}") == status, f"{name}: {status}")
        if not signature_only:
            confirmed(st)


def confirmed(st):
    """The held backlog, answered by the Status API once the stories
    happened at the fake."""
    truth = {}
    for name, actions in TRUTH.items():
        for twin in "AB":
            for action, opts in actions:
                t = st.truth(f"{twin}-{name}", action, **opts)
            truth[name] = t
    st.start("reconciler")
    st.wait_applied(timeout=60, confirmed=True)
    for name, t in truth.items():
        fa, fb = outcome(st, f"A-{name}"), outcome(st, f"B-{name}")
        status = fa["order"][0][0]
        truth_status, want = CONFIRMED[name]
        check(t["status"] == truth_status, f"{name}: the fake's truth is {t['status']}")
        check(status == want and fa["active"] == [(1 if want == "PAID" else 0,)],
              f"{name}: Midtrans says {t['status']}: {status}, "
              f"{fa['active'][0][0]} active entitlement")
        moved = st.sources(f"A-{name}") + st.sources(f"B-{name}")
        check(all(src == "recon" for _, src in moved),
              f"{name}: every transition on a Status API answer ({moved})")
        # the twins' transaction ids are the fake's, one per twin
        fa["order"] = [r[:6] + r[7:] for r in fa["order"]]
        fb["order"] = [r[:6] + r[7:] for r in fb["order"]]
        for k in ("order", "transitions", "active"):
            if fa[k] != fb[k]:
                print(f"A-{name} {k}: {fa[k]}\nB-{name} {k}: {fb[k]}", file=sys.stderr)
            check(fa[k] == fb[k], f"{name}: {k} identical after the confirmations")


if __name__ == "__main__":
    main_wrapper(main)
