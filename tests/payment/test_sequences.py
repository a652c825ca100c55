"""Issue 3, end to end through kasir-ingest and kasir-order: delivery
orders and duplicates (settlement before pending, the same settlement
three times, settlement then deny, a refund before its settlement,
capture+accept then settlement, challenge), the same through the fake Midtrans, and the database refusing
PAID without evidence and changes to payment_event -- as the service roles
kasir_order / kasir_ingest with their own passwords.

Default mode (issue 13): each story happens at the fake Midtrans first
(st.truth, its notifications dropped), then the test POSTs the
notifications; a decisive one is held ("noop", awaiting confirmation) and
the reconciler's Status API answer moves the order (evidence source
recon).  The ingest evidence of each order is checked as it was recorded:
held (noop), ignored, noop."""

import threading

import psycopg2

from paystack import PayStack, check, course_for, main_wrapper, notification


def results(st, oid, source="ingest"):
    """Results of oid's evidence from `source` (ingest: the notifications;
    recon: the Status API answers), in order."""
    return [r[0] for r in st.sql("SELECT result FROM orders.evidence WHERE order_id = %s"
                                 " AND source = %s ORDER BY id", (oid, source))]


def by_status_api(st, oid, *moves):
    """oid's transitions are exactly `moves`, each proved by a Status API
    answer, and no notification of it was contradicted."""
    got = st.sources(oid)
    check(got == [(m, "recon") for m in moves] and not st.contradicted(oid),
          f"{oid}: transitions {got}, each on a Status API answer, none contradicted")


def test_settlement_before_pending(st):
    st.create_order("SEQ-1", 154600)
    st.truth("SEQ-1", "pay")
    st.deliver(notification("SEQ-1", "settlement"))
    st.deliver(notification("SEQ-1", "pending"))
    check(st.status("SEQ-1") == "PAID", "settlement before pending: PAID")
    check(results(st, "SEQ-1") == ["noop", "ignored"],
          f"settlement held, late pending recorded and ignored ({results(st, 'SEQ-1')})")
    check(results(st, "SEQ-1", "recon") == ["applied"], "the Status API answer applied")
    by_status_api(st, "SEQ-1", "PAID")
    check(st.entitlements("SEQ-1") == 1, "access granted")


def test_triple_settlement(st):
    st.create_order("SEQ-2", 154600)
    st.truth("SEQ-2", "pay")
    body = notification("SEQ-2", "settlement")
    # three deliveries at once (they may share one group commit)
    got = []
    ts = [threading.Thread(target=lambda: got.append(st.post(body).status)) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(got == [200, 200, 200], f"three identical settlements: 200 each ({got})")
    st.wait_applied()
    check(st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = 'SEQ-2'")[0][0] == 3,
          "each delivery stored as evidence")
    check(st.status("SEQ-2") == "PAID", "PAID")
    check(st.paid_transitions("SEQ-2") == 1, "one PAID transition")
    check(st.entitlements("SEQ-2", active_only=False) == 1, "one entitlement, ever")
    check(st.messages("SEQ-2", "order.paid") == 1, "one order.paid in orders.stream_log_messages")
    check(st.messages("SEQ-2", "access.granted") == 1, "one access.granted")
    check(results(st, "SEQ-2") == ["noop", "noop", "noop"],
          f"each notification recorded, none decided ({results(st, 'SEQ-2')})")
    check(results(st, "SEQ-2", "recon").count("applied") == 1,
          f"one Status API answer applied ({results(st, 'SEQ-2', 'recon')})")
    by_status_api(st, "SEQ-2", "PAID")


def test_reversal(st):
    st.create_order("SEQ-3", 150000, email="rev@example.com")
    st.truth("SEQ-3", "pay")
    st.deliver(notification("SEQ-3", "settlement", "150000.00"))
    check(st.access("rev@example.com", course_for(150000))["active"] is True,
          "settlement: access active")
    # a reversal's deny carries the settlement_time of the denied payment
    st.truth("SEQ-3", "reverse")
    st.deliver(notification("SEQ-3", "deny", "150000.00",
                            settlement_time="2026-11-23 16:00:05"))
    row = st.sql("SELECT status, reversed FROM orders.orders WHERE order_id = 'SEQ-3'")[0]
    check(row == ("REFUNDED", True), f"settlement then deny: REFUNDED, reversed ({row})")
    check(st.entitlements("SEQ-3") == 0, "entitlement revoked")
    check(st.access("rev@example.com", course_for(150000))["active"] is False,
          "GET /v1/access: no access any more")
    check(st.messages("SEQ-3", "access.revoked") == 1 and st.messages("SEQ-3", "order.refunded") == 1,
          "access.revoked and order.refunded emitted once")
    st.deliver(notification("SEQ-3", "settlement", "150000.00"))  # late duplicate
    check(st.status("SEQ-3") == "REFUNDED" and st.entitlements("SEQ-3") == 0,
          "a late duplicate settlement does not bring access back")
    by_status_api(st, "SEQ-3", "PAID", "REFUNDED")


def test_stale_deny_after_payment(st):
    """A failed attempt's deny delivered again after the customer paid (a
    Midtrans retry or reordering) must not take access away: recorded,
    order flagged for a Status API check."""
    st.create_order("SEQ-3B", 150000, email="stale@example.com")
    st.truth("SEQ-3B", "pending")
    st.deliver(notification("SEQ-3B", "pending", "150000.00"))
    st.truth("SEQ-3B", "deny")
    st.deliver(notification("SEQ-3B", "deny", "150000.00"))
    check(st.status("SEQ-3B") == "PENDING", "deny on a pending order: still PENDING")
    st.truth("SEQ-3B", "pay")
    st.deliver(notification("SEQ-3B", "settlement", "150000.00",
                            settlement_time="2026-11-23 16:01:00"))
    st.deliver(notification("SEQ-3B", "deny", "150000.00"))  # the stale one again
    row = st.sql("SELECT status, reversed, flagged FROM orders.orders "
                 "WHERE order_id = 'SEQ-3B'")[0]
    check(row == ("PAID", False, True), f"stale deny: PAID, not reversed, flagged ({row})")
    check(st.entitlements("SEQ-3B") == 1, "access kept")
    check(st.messages("SEQ-3B", "access.revoked") == 0, "no access.revoked")
    check(st.sources("SEQ-3B") == [("PAID", "recon")], "one transition: PAID on the Status API")


def test_reversal_before_its_settlement(st):
    """The mirror of the stale deny: the reversal's deny (it carries the
    settlement_time of the payment it reverses) arrives while the order is
    still PENDING, and the settlement arrives after it.  The money went
    back: the order must never become PAID nor get access; it ends FAILED
    and reversed.  The late settlement of that transaction is ignored; a
    settlement of another transaction is real money on a final order and
    is flagged for operators."""
    st.create_order("SEQ-3C", 150000, email="mirror@example.com")
    st.truth("SEQ-3C", "pay")
    tx1 = st.truth("SEQ-3C", "reverse")["transaction_id"]  # paid, then reversed
    st.deliver(notification("SEQ-3C", "deny", "150000.00", transaction_id=tx1,
                            settlement_time="2026-11-23 16:00:05"))
    row = st.sql("SELECT status, reversed, flagged FROM orders.orders "
                 "WHERE order_id = 'SEQ-3C'")[0]
    check(row == ("FAILED", True, False), f"reversal first: FAILED, reversed ({row})")
    st.deliver(notification("SEQ-3C", "settlement", "150000.00", transaction_id=tx1,
                            settlement_time="2026-11-23 16:00:05"))
    row = st.sql("SELECT status, flagged FROM orders.orders WHERE order_id = 'SEQ-3C'")[0]
    check(row == ("FAILED", False), f"its late settlement: still FAILED, not flagged ({row})")
    check(results(st, "SEQ-3C") == ["noop", "ignored"],
          f"evidence: held, ignored ({results(st, 'SEQ-3C')})")
    by_status_api(st, "SEQ-3C", "FAILED")
    check(st.entitlements("SEQ-3C") == 0 and st.messages("SEQ-3C", "order.paid") == 0,
          "no entitlement, no order.paid (so no receipt)")
    check(st.access("mirror@example.com", course_for(150000))["active"] is False,
          "GET /v1/access: no access")
    st.deliver(notification("SEQ-3C", "settlement", "150000.00", transaction_id="tx-3c-2",
                            settlement_time="2026-11-23 17:00:00"))
    row = st.sql("SELECT status, flagged FROM orders.orders WHERE order_id = 'SEQ-3C'")[0]
    check(row == ("FAILED", True),
          f"another transaction's settlement on the final order: flagged ({row})")
    check(st.entitlements("SEQ-3C") == 0, "still no entitlement")


def test_refund_before_its_settlement(st):
    """A full refund delivered while the order is still PENDING: its
    settlement (which a refund implies) is late.  The money went back, so
    the order ends REFUNDED at once (PENDING -> REFUNDED): never PAID, no
    access, no order.paid -- the only event a receipt is made from -- and
    one order.refunded.  The late settlement changes nothing."""
    st.create_order("SEQ-3D", 150000, email="refund-first@example.com")
    st.truth("SEQ-3D", "pay", payment_type="gopay")
    tx1 = st.truth("SEQ-3D", "refund")["transaction_id"]
    st.deliver(notification("SEQ-3D", "refund", "150000.00", transaction_id=tx1))
    row = st.sql("SELECT status, flagged FROM orders.orders WHERE order_id = 'SEQ-3D'")[0]
    check(row == ("REFUNDED", False), f"refund first: REFUNDED, not flagged ({row})")
    tr = st.sql("SELECT from_status, to_status FROM orders.transitions"
                " WHERE order_id = 'SEQ-3D' ORDER BY id")
    check(tr == [("PENDING", "REFUNDED")], f"one transition PENDING -> REFUNDED ({tr})")
    st.deliver(notification("SEQ-3D", "settlement", "150000.00", transaction_id=tx1))
    row = st.sql("SELECT status, flagged FROM orders.orders WHERE order_id = 'SEQ-3D'")[0]
    check(row == ("REFUNDED", False), f"its late settlement: still REFUNDED ({row})")
    check(results(st, "SEQ-3D") == ["noop", "ignored"],
          f"evidence: held, ignored ({results(st, 'SEQ-3D')})")
    by_status_api(st, "SEQ-3D", "REFUNDED")
    check(st.entitlements("SEQ-3D", active_only=False) == 0
          and st.messages("SEQ-3D", "order.paid") == 0
          and st.messages("SEQ-3D", "access.granted") == 0,
          "no entitlement ever, no order.paid (so no receipt), no access.granted")
    check(st.messages("SEQ-3D", "order.refunded") == 1
          and st.messages("SEQ-3D", "access.revoked") == 0,
          "one order.refunded, nothing to revoke")
    check(st.access("refund-first@example.com", course_for(150000))["active"] is False,
          "GET /v1/access: no access")


def test_capture_then_settlement(st):
    st.create_order("SEQ-4", 10000)
    st.truth("SEQ-4", "pay", payment_type="credit_card")
    st.deliver(notification("SEQ-4", "capture", "10000.00", payment_type="credit_card"))
    check(st.status("SEQ-4") == "PAID", "capture+accept: PAID")
    st.deliver(notification("SEQ-4", "settlement", "10000.00", payment_type="credit_card"))
    check(st.status("SEQ-4") == "PAID" and st.paid_transitions("SEQ-4") == 1
          and st.entitlements("SEQ-4", active_only=False) == 1
          and st.messages("SEQ-4", "order.paid") == 1,
          "capture+accept then settlement: one payment (one PAID, one entitlement, one order.paid)")
    by_status_api(st, "SEQ-4", "PAID")


def test_challenge(st):
    st.create_order("SEQ-5", 145000)
    st.truth("SEQ-5", "challenge")
    st.deliver(notification("SEQ-5", "capture", "145000.00", code="201",
                            fraud_status="challenge", payment_type="credit_card"))
    check(st.status("SEQ-5") == "PENDING" and st.entitlements("SEQ-5", False) == 0,
          "capture+challenge: stays PENDING, no access")


def test_through_fake(st):
    """The same stories told by the fake Midtrans (its own signing,
    delivery and retries; its Status API knows them)."""
    cases = [("FK-1", "pay", {"payment_type": "credit_card"}, "PAID", 1),  # capture, then settlement
             ("FK-2", "pay", {"notify": "duplicate"}, "PAID", 1),
             ("FK-3", "challenge", {}, "PENDING", 0),
             ("FK-4", "pay", {"delay_ms": 4000}, "PAID", 1)]
    for oid, action, opts, _, _ in cases:
        st.create_order(oid, 275000)
        r = st.fake("POST", f"/_fake/orders/{oid}/{action}", opts)
        check(r.status == 200, f"fake {action} {oid} ({r.status})")
    # FK-4: refunded in full while its settlement notification is still
    # delayed at the fake: the refund arrives first
    r = st.fake("POST", "/_fake/orders/FK-4/refund", {})
    check(r.status == 200, f"fake refund FK-4 ({r.status})")
    cases[3] = ("FK-4", "pay", {}, "REFUNDED", 0)
    for oid, action, _, want, ent in cases:
        st.wait_until(lambda: st.status(oid) == want and st.entitlements(oid) == ent, 20,
                      f"{oid} {want} with {ent} entitlement")
    # the card's settlement (and the duplicate) arrive after PAID: still one payment
    st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.payment_event"
                                 " WHERE order_id IN ('FK-1','FK-2')")[0][0] >= 4, 20,
                  "card settlement and duplicate delivered")
    st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.payment_event"
                                 " WHERE order_id = 'FK-4'")[0][0] >= 2, 20,
                  "FK-4's delayed settlement delivered after its refund")
    st.wait_applied()
    check(st.status("FK-4") == "REFUNDED" and st.entitlements("FK-4", False) == 0
          and st.messages("FK-4", "order.paid") == 0,
          "fake: refund before its delayed settlement ends REFUNDED, never paid")
    for oid in ("FK-1", "FK-2"):
        check(st.paid_transitions(oid) == 1 and st.entitlements(oid, False) == 1
              and st.messages(oid, "order.paid") == 1,
              f"{oid}: one PAID, one entitlement, one order.paid")
    r = st.fake("POST", "/_fake/orders/FK-2/reverse", {})
    check(r.status == 200, "fake reverse FK-2")
    st.wait_until(lambda: st.status("FK-2") == "REFUNDED" and st.entitlements("FK-2") == 0, 20,
                  "FK-2 reversed, access revoked")
    check(True, "fake: reversal revokes access")
    # what the fake still sends later (the reversal, FK-4's bank
    # confirmation of its refund, a duplicate's late copy) lands before
    # the next test counts payment_event
    fk = [c[0] for c in cases]
    st.wait_until(lambda: st.fake_done(fk), 30, "the fake sent everything about FK-1..4")
    st.wait_applied()
    for oid, moves in (("FK-1", ["PAID"]), ("FK-2", ["PAID", "REFUNDED"]), ("FK-3", []),
                       ("FK-4", ["REFUNDED"])):
        by_status_api(st, oid, *moves)


def refused(st, sql, role, params=None):
    """Runs sql as role; returns the server's error (first line) or fails."""
    try:
        st.sql(sql, params, role=role)
    except psycopg2.Error as e:
        return (e.pgerror or str(e)).strip().splitlines()[0]
    raise AssertionError(f"the database accepted, as {role}: {sql}")


def test_database_refusals(st):
    st.create_order("DB-1", 154600)
    st.truth("DB-1", "pending")
    st.deliver(notification("DB-1", "pending"))  # evidence of DB-1, not a payment
    paid_ev = st.sql("SELECT id, source, ref FROM orders.evidence WHERE order_id = 'SEQ-1'"
                     " AND result = 'applied'")[0]
    pend_ev = st.sql("SELECT id, source, ref FROM orders.evidence WHERE order_id = 'DB-1'")[0]
    ref_ev = st.sql("SELECT id, source, ref FROM orders.evidence WHERE order_id = 'SEQ-3D'"
                    " AND result = 'applied'")[0]
    role = "kasir_order"
    for why, sql, params in (
            ("UPDATE status to PAID", "UPDATE orders.orders SET status = 'PAID'"
             " WHERE order_id = 'DB-1'", None),
            ("PAID transition without evidence", "INSERT INTO orders.transitions (order_id,"
             " from_status, to_status, evidence_source, reason) VALUES"
             " ('DB-1', 'PENDING', 'PAID', 'operator', 'test')", None),
            ("transition to FAILED, then status PAID", "BEGIN; INSERT INTO orders.transitions"
             " (order_id, from_status, to_status, evidence_source, reason) VALUES"
             " ('DB-1', 'PENDING', 'FAILED', 'operator', 'test'); UPDATE orders.orders"
             " SET status = 'PAID' WHERE order_id = 'DB-1'; COMMIT", None),
            ("PAID naming another order's payment", "BEGIN; INSERT INTO orders.transitions"
             " (order_id, from_status, to_status, evidence_source, evidence_ref, evidence_id,"
             " reason) VALUES ('DB-1', 'PENDING', 'PAID', %s, %s, %s, 'test');"
             " UPDATE orders.orders SET status = 'PAID' WHERE order_id = 'DB-1'; COMMIT",
             (paid_ev[1], paid_ev[2], paid_ev[0])),
            ("PAID naming a pending notification", "BEGIN; INSERT INTO orders.transitions"
             " (order_id, from_status, to_status, evidence_source, evidence_ref, evidence_id,"
             " reason) VALUES ('DB-1', 'PENDING', 'PAID', %s, %s, %s, 'test');"
             " UPDATE orders.orders SET status = 'PAID' WHERE order_id = 'DB-1'; COMMIT",
             (pend_ev[1], pend_ev[2], pend_ev[0])),
            ("REFUNDED naming a pending notification", "BEGIN; INSERT INTO"
             " orders.transitions (order_id, from_status, to_status, evidence_source,"
             " evidence_ref, evidence_id, reason) VALUES ('DB-1', 'PENDING', 'REFUNDED',"
             " %s, %s, %s, 'test'); UPDATE orders.orders SET status = 'REFUNDED'"
             " WHERE order_id = 'DB-1'; COMMIT", (pend_ev[1], pend_ev[2], pend_ev[0])),
            ("REFUNDED naming another order's refund", "BEGIN; INSERT INTO"
             " orders.transitions (order_id, from_status, to_status, evidence_source,"
             " evidence_ref, evidence_id, reason) VALUES ('DB-1', 'PENDING', 'REFUNDED',"
             " %s, %s, %s, 'test'); UPDATE orders.orders SET status = 'REFUNDED'"
             " WHERE order_id = 'DB-1'; COMMIT", (ref_ev[1], ref_ev[2], ref_ev[0]))):
        check(True, f"{role}: {why} refused: {refused(st, sql, role, params)}")
    check(st.status("DB-1") == "PENDING" and st.sql("SELECT count(*) FROM orders.transitions"
                                                    " WHERE order_id = 'DB-1'")[0][0] == 0,
          "DB-1 still PENDING, no transition")
    for sql in ("DELETE FROM orders.evidence", "UPDATE orders.transitions SET reason = 'x'",
                "DELETE FROM orders.entitlements", "DELETE FROM orders.orders"):
        check(True, f"{role}: {sql} refused: {refused(st, sql, role)}")

    n = st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
    check(n > 0, f"payment_event holds {n} rows")
    for role in ("kasir_ingest", "kasir_ingest_owner"):
        for sql in ("UPDATE ingest.payment_event SET gross_amount = '1.00'",
                    "UPDATE ingest.payment_event SET transaction_status = 'settlement'"
                    " WHERE order_id = 'DB-1'",
                    "DELETE FROM ingest.payment_event",
                    "DELETE FROM ingest.payment_event WHERE order_id = 'DB-1'",
                    "TRUNCATE ingest.payment_event"):
            check(True, f"{role}: {sql} refused: {refused(st, sql, role)}")
    check(st.sql("SELECT count(*) FROM ingest.payment_event")[0][0] == n,
          "payment_event unchanged")


def main():
    with PayStack.for_payment(overrides={"FAKE_MIDTRANS_RETRY_SCHEDULE": "1,1,2"}) as st:
        st.start_payment_path()
        test_settlement_before_pending(st)
        test_triple_settlement(st)
        test_reversal(st)
        test_stale_deny_after_payment(st)
        test_reversal_before_its_settlement(st)
        test_refund_before_its_settlement(st)
        test_capture_then_settlement(st)
        test_challenge(st)
        test_through_fake(st)
        test_database_refusals(st)


if __name__ == "__main__":
    main_wrapper(main)
