"""kasir-order applies payment evidence from the ingest and recon streams
(the real backbone) to orders created through its API: every Midtrans
notification fixture (tests/data/midtrans), reorderings, duplicates,
reversal, mismatches, unknown orders, status checks, poison messages, and the database refusing PAID
without evidence and changes to append-only tables (as kasir_order).

The state-machine sequences run in order.signature_only mode, the mode in
which a signed notification is evidence on its own; then kasir-order is
restarted in the default mode: a notification that would move an order is
held until a Status API answer (status.check with confirm) agrees, and one
that Midtrans contradicts flags the order (test_confirmation)."""
import json
import re
import signal

import psycopg2

import kasirtest

from ostack import Stack, samples, wait_for

# What each sample, applied in file order, leaves its order in.
EXPECTED = {
    "A_card_capture_accept.json": "PAID",
    "B_card_capture_challenge.json": "PENDING",   # merchant review
    "C_card_deny.json": "PENDING",                # deny on a pending order (C17550)
    "D_card_cancel.json": "CANCELLED",
    "E_gopay_pending.json": "PENDING",
    "F_gopay_settlement.json": "PAID",
    "G_qris_pending.json": "PENDING",             # order03 again
    "H_qris_expire.json": "EXPIRED",              # order03
    "K_bni_va_settlement.json": "PAID",
    "L_alfamart_pending_no_fraud.json": "PENDING",
    "M_bca_va_settlement.json": "PAID",
    "N_bca_va_partial_refund.json": "PAID",         # flag partial_refund, access kept
    "O_bca_va_refund.json": "REFUNDED",             # access revoked
    "P_card_settlement.json": "PAID",               # the capture's settlement: a no-op
    "Q_card_chargeback.json": "REFUNDED",           # disputed, access revoked
}


def entitlements(s, oid, active_only=True):
    q = "SELECT count(*) FROM orders.entitlements WHERE order_id=%s"
    if active_only:
        q += " AND revoked_at IS NULL"
    return s.sql(q, (oid,))[0][0]


def paid_transitions(s, oid):
    return s.sql("SELECT count(*) FROM orders.transitions WHERE order_id=%s AND to_status='PAID'",
                 (oid,))[0][0]


def access(s, email, course):
    st, j, _ = s.http("GET", "/v1/access?customer_email=%s&course_id=%s" % (email, course))
    assert st == 200, (st, j)
    return j


def test_samples(s):
    created = set()
    for name, body in samples():
        oid = body["order_id"]
        if oid not in created:
            s.create_order(oid, body["gross_amount"])
            created.add(oid)
        eid = s.notify(body)
        seq = s.sql("SELECT max(seq) FROM testingest.stream_log_messages")[0][0]
        s.wait_applied("ingest", seq)
        assert s.status(oid) == EXPECTED[name], (name, s.status(oid))
        ev = s.sql("SELECT ref, result FROM orders.evidence WHERE source='ingest' AND ref=%s",
                   (eid,))
        assert len(ev) == 1, (name, ev)
    # PAID orders have exactly one active entitlement and a transition naming
    # its ingest evidence; the others none
    for name, body in samples():
        oid = body["order_id"]
        want = 1 if s.status(oid) == "PAID" else 0
        assert entitlements(s, oid) == want, (name, entitlements(s, oid))
        if want:
            t = s.sql("SELECT evidence_source, evidence_ref FROM orders.transitions"
                      " WHERE order_id=%s AND to_status='PAID'", (oid,))
            assert len(t) == 1 and t[0][0] == "ingest" and t[0][1] > 0, t
            assert len(s.events(oid, "order.paid")) == 1
            assert len(s.events(oid, "access.granted")) == 1
    # the API timeline shows the transitions with their evidence
    st, j, _ = s.http("GET", "/v1/orders/Order-5100")
    assert st == 200 and j["status"] == "PAID", (st, j)
    tl = j["timeline"]
    assert len(tl) == 1 and tl[0]["to"] == "PAID" and tl[0]["source"] == "ingest", tl
    assert tl[0]["transaction_status"] == "settlement" and tl[0]["received_at"], tl
    a = access(s, "budi@example.com", "kursus-154600")
    assert a["active"] is True and a["order_id"] == "Order-5100" and a["valid_until"], a


def refunded_events(s, oid):
    """(partial, refund_amount or None) of each order.refunded of oid."""
    out = []
    for _, body in s.events(oid, "order.refunded"):
        d = (body if isinstance(body, dict) else json.loads(body))["data"]
        out.append((d["partial"], d.get("refund_amount")))
    return out


def base(oid, amount="154600.00", status="settlement", **kw):
    b = {"order_id": oid, "transaction_status": status, "gross_amount": amount,
         "status_code": "200", "currency": "IDR", "payment_type": "bank_transfer",
         "transaction_id": "tx-" + oid}
    b.update(kw)
    return b


def apply(s, body, **kw):
    s.notify(body, **kw)
    s.wait_applied("ingest", s.sql("SELECT max(seq) FROM testingest.stream_log_messages")[0][0])


def test_sequences(s):
    # settlement before pending ends PAID
    s.create_order("SEQ-1", 154600)
    apply(s, base("SEQ-1"))
    apply(s, base("SEQ-1", status="pending", status_code="201"))
    assert s.status("SEQ-1") == "PAID"

    # settlement x3: one PAID, one entitlement, one order.paid
    s.create_order("SEQ-2", 154600)
    for _ in range(3):
        apply(s, base("SEQ-2"))
    assert s.status("SEQ-2") == "PAID"
    assert paid_transitions(s, "SEQ-2") == 1
    assert entitlements(s, "SEQ-2", active_only=False) == 1
    paid = s.events("SEQ-2", "order.paid")
    assert len(paid) == 1
    # the transition's event says what its evidence said (for the
    # reconciler); order.evidence only for the two that changed nothing
    said = json.loads(paid[0][1])["data"]
    assert said["transaction_status"] == "settlement" and said["received_at"], said
    assert said["evidence"]["source"] == "ingest", said
    ev = [json.loads(b)["data"] for _, b in s.events("SEQ-2", "order.evidence")]
    assert [e["applied"] for e in ev] == [False, False], ev
    res = [r[0] for r in s.sql("SELECT result FROM orders.evidence WHERE order_id='SEQ-2' ORDER BY id")]
    assert res == ["applied", "noop", "noop"], res

    # settlement then deny: reversal revokes access
    s.create_order("SEQ-3", 150000, email="rev@example.com")
    apply(s, base("SEQ-3", amount="150000.00"))
    assert access(s, "rev@example.com", "kursus-150000")["active"] is True
    # a deny without settlement_time may be a stale failed attempt: flagged
    apply(s, base("SEQ-3", amount="150000.00", status="deny", status_code="202"))
    assert s.status("SEQ-3") == "PAID"
    assert s.sql("SELECT flagged FROM orders.orders WHERE order_id='SEQ-3'")[0][0] is True
    assert entitlements(s, "SEQ-3") == 1
    # the reversal's deny names when the payment had settled
    apply(s, base("SEQ-3", amount="150000.00", status="deny", status_code="202",
                  settlement_time="2026-11-23 16:00:05"))
    assert s.status("SEQ-3") == "REFUNDED"
    assert s.sql("SELECT reversed FROM orders.orders WHERE order_id='SEQ-3'")[0][0] is True
    assert entitlements(s, "SEQ-3") == 0
    assert access(s, "rev@example.com", "kursus-150000")["active"] is False
    assert len(s.events("SEQ-3", "access.revoked")) == 1
    assert len(s.events("SEQ-3", "order.refunded")) == 1
    hist = s.sql("SELECT action FROM orders.entitlement_events WHERE order_id='SEQ-3' ORDER BY id")
    assert [h[0] for h in hist] == ["grant", "revoke"], hist
    apply(s, base("SEQ-3", amount="150000.00"))  # late duplicate settlement
    assert s.status("SEQ-3") == "REFUNDED" and entitlements(s, "SEQ-3") == 0

    # capture+accept then settlement is one payment
    s.create_order("SEQ-4", 10000)
    apply(s, base("SEQ-4", amount="10000.00", status="capture", fraud_status="accept",
                  payment_type="credit_card"))
    apply(s, base("SEQ-4", amount="10000.00", fraud_status="accept", payment_type="credit_card"))
    assert s.status("SEQ-4") == "PAID" and paid_transitions(s, "SEQ-4") == 1
    assert entitlements(s, "SEQ-4", active_only=False) == 1
    assert len(s.events("SEQ-4", "order.paid")) == 1

    # challenge stays pending, no access
    s.create_order("SEQ-5", 145000)
    apply(s, base("SEQ-5", amount="145000.00", status="capture", fraud_status="challenge",
                  status_code="201"))
    assert s.status("SEQ-5") == "PENDING" and entitlements(s, "SEQ-5") == 0

    # "100000" (old senders) equals an order of 100000; a changed amount is
    # refused and flagged, never PAID
    s.create_order("SEQ-6", 100000)
    apply(s, base("SEQ-6", amount="100000"))
    assert s.status("SEQ-6") == "PAID"
    s.create_order("SEQ-7", 100000)
    apply(s, base("SEQ-7", amount="1000.00"))
    apply(s, base("SEQ-7", amount="100000.00", currency="USD"))
    assert s.status("SEQ-7") == "PENDING" and entitlements(s, "SEQ-7") == 0
    fl = s.sql("SELECT flagged, flag_reason FROM orders.orders WHERE order_id='SEQ-7'")[0]
    assert fl[0] is True and "mismatch" in fl[1], fl
    assert len(s.events("SEQ-7", "order.flagged")) == 2
    facts = s.admin("doctor.facts")["result"]
    assert any(r["order_id"] == "SEQ-7" for r in facts["flagged"]), facts["flagged"]

    # the first partial refund of a PAID order tells (order.refunded,
    # partial, the amount in rupiah); a second one, a repeat, says nothing
    # more; the full refund then its own
    s.create_order("SEQ-8", 154600)
    apply(s, base("SEQ-8"))
    apply(s, base("SEQ-8", status="partial_refund", refund_amount="50000.00"))
    apply(s, base("SEQ-8", status="partial_refund", refund_amount="60000.00"))
    assert s.status("SEQ-8") == "PAID" and entitlements(s, "SEQ-8") == 1
    assert refunded_events(s, "SEQ-8") == [(True, 50000)], refunded_events(s, "SEQ-8")
    apply(s, base("SEQ-8", status="refund"))
    assert s.status("SEQ-8") == "REFUNDED"
    assert refunded_events(s, "SEQ-8") == [(True, 50000), (False, None)], \
        refunded_events(s, "SEQ-8")
    # an amount that is not a Midtrans amount is not guessed: left out
    s.create_order("SEQ-9", 154600)
    apply(s, base("SEQ-9"))
    apply(s, base("SEQ-9", status="partial_refund", refund_amount="50000.50"))
    assert refunded_events(s, "SEQ-9") == [(True, None)], refunded_events(s, "SEQ-9")

    # expire / cancel after PAID are recorded and ignored
    apply(s, base("SEQ-1", status="expire", status_code="202"))
    assert s.status("SEQ-1") == "PAID" and entitlements(s, "SEQ-1") == 1


def test_unknown_and_poison(s):
    apply(s, base("NOBODY-1"))
    r = s.sql("SELECT order_id, transaction_status FROM orders.unknown_notifications")
    assert ("NOBODY-1", "settlement") in r, r
    lst = s.admin("orders.unknown_notifications")["result"]["notifications"]
    assert any(x["order_id"] == "NOBODY-1" for x in lst), lst
    # a type kasir-order does not apply is refused for good; the stream goes on
    seq = s.publish("ingest", "test.effect", {"n": 1})
    s.wait_applied("ingest", seq)
    p = s.sql("SELECT seq FROM orders.stream_poison WHERE stream='ingest'")
    assert (seq,) in p, p
    s.create_order("AFTER-POISON", 154600)
    apply(s, base("AFTER-POISON"))
    assert s.status("AFTER-POISON") == "PAID"


def test_batch_poison(s):
    """A batch with a message the evidence path refuses: the batch fails as
    a whole, and the same path with one message at a time (each in a
    SAVEPOINT) applies the others and poisons that one alone.  (Runs last:
    it restarts kasir-order, in the default mode by now, where a Status
    API answer is evidence.)"""
    for oid in ("BATCH-P1", "BATCH-P2"):
        s.create_order(oid, 154600)
    s.kill_order(signal.SIGTERM)
    s.status_check("BATCH-P1", "status", False, transaction_status="settlement",
                   gross_amount="154600.00", settlement_time="2026-12-06 10:00:00")
    s.check_id += 1
    bad = s.check_id
    s.publish("recon", "status.check", {
        "check_id": bad, "order_id": "BATCH-P1", "http_status": 200,
        "verdict": "no-such-verdict", "checked_at": "2026-12-06T10:00:00Z",
        "past_expiry": False})
    s.status_check("BATCH-P2", "status", False, transaction_status="settlement",
                   gross_amount="154600.00", settlement_time="2026-12-06 10:00:00")
    last = s.sql("SELECT max(seq) FROM testrecon.stream_log_messages")[0][0]
    s.start_order()
    s.wait_applied("recon", last)
    assert s.status("BATCH-P1") == "PAID" and s.status("BATCH-P2") == "PAID", \
        (s.status("BATCH-P1"), s.status("BATCH-P2"))
    poisoned = s.sql("SELECT count(*) FROM orders.stream_poison WHERE stream = 'recon'"
                     " AND seq = %s", (last - 1,))[0][0]
    assert poisoned == 1, poisoned
    assert "applying it message by message" in s.log_text(), "no careful pass"
    assert s.sql("SELECT count(*) FROM orders.evidence WHERE source = 'recon'"
                 " AND ref = %s", (bad,)) == [(0,)]


def test_status_checks(s):
    s.create_order("REC-1", 154600)
    s.status_check("REC-1", "not_found", False)
    s.wait_applied("recon", s.last_seq["recon"])
    assert s.status("REC-1") == "PENDING"
    # the reconciler says past expiry but our expires_at has not passed
    s.status_check("REC-1", "not_found", True)
    s.wait_applied("recon", s.last_seq["recon"])
    assert s.status("REC-1") == "PENDING"
    s.sql("UPDATE orders.orders SET expires_at = now() - interval '1 second'"
          " WHERE order_id='REC-1'")
    cid = s.status_check("REC-1", "not_found", True)
    s.wait_applied("recon", s.sql("SELECT max(seq) FROM testrecon.stream_log_messages")[0][0])
    assert s.status("REC-1") == "EXPIRED"
    t = s.sql("SELECT evidence_source, evidence_ref FROM orders.transitions WHERE order_id='REC-1'")
    assert t == [("recon", cid)], t
    # a settlement found by the reconciler pays with the check as evidence
    s.create_order("REC-2", 154600)
    cid = s.status_check("REC-2", "status", False, transaction_status="settlement",
                         gross_amount="154600.00", currency="IDR", status_code="200")
    s.wait_applied("recon", s.sql("SELECT max(seq) FROM testrecon.stream_log_messages")[0][0])
    assert s.status("REC-2") == "PAID"
    t = s.sql("SELECT evidence_source, evidence_ref FROM orders.transitions WHERE order_id='REC-2'")
    assert t == [("recon", cid)], t
    # money after EXPIRED never resurrects the order; it is flagged
    apply(s, base("REC-1"))
    assert s.status("REC-1") == "EXPIRED"
    assert s.sql("SELECT flagged FROM orders.orders WHERE order_id='REC-1'")[0][0] is True


def refused(s, q, args=None, user="kasir_order"):
    try:
        s.sql(q, args, user=user)
    except psycopg2.Error as e:
        return str(e).strip().splitlines()[0]
    raise AssertionError("database accepted: %s" % q)


def test_database_refusals(s):
    s.create_order("DB-1", 154600)
    # PAID without evidence
    print(refused(s, "UPDATE orders.orders SET status='PAID' WHERE order_id='DB-1'"))
    print(refused(s, "INSERT INTO orders.transitions (order_id, from_status, to_status,"
                     " evidence_source, reason) VALUES ('DB-1','PENDING','PAID','operator','x')"))
    print(refused(s, "BEGIN; INSERT INTO orders.transitions (order_id, from_status, to_status,"
                     " evidence_source, reason) VALUES ('DB-1','PENDING','FAILED','operator','x');"
                     " UPDATE orders.orders SET status='PAID' WHERE order_id='DB-1'; COMMIT"))
    # even the owner cannot make it PAID without a transition with evidence
    print(refused(s, "UPDATE orders.orders SET status='PAID' WHERE order_id='DB-1'",
                  user="postgres"))
    assert s.status("DB-1") == "PENDING"
    # the status guard is one check per statement (migration 0011): every
    # row of a multi-row UPDATE is checked, not only the first
    s.create_order("DB-2", 154600)
    print(refused(s, "UPDATE orders.orders SET status='FAILED'"
                     " WHERE order_id IN ('DB-1', 'DB-2')", user="postgres"))
    # identity, amount and customer never change, whoever asks
    print(refused(s, "UPDATE orders.orders SET amount = amount + 1 WHERE order_id='DB-1'"))
    print(refused(s, "UPDATE orders.orders SET order_id = 'DB-9' WHERE order_id='DB-1'",
                  user="postgres"))
    print(refused(s, "UPDATE orders.orders SET customer_email = 'x@example.com'"
                     " WHERE order_id='DB-2'", user="postgres"))
    assert s.status("DB-2") == "PENDING"
    # append-only tables, as the service role and as the owner
    for t in ("evidence", "transitions", "entitlement_events", "audit",
              "unknown_notifications"):
        print(refused(s, "DELETE FROM orders.%s" % t))
        print(refused(s, "UPDATE orders.%s SET id = id" % t))
        print(refused(s, "DELETE FROM orders.%s" % t, user="kasir_order_owner"))
        print(refused(s, "TRUNCATE orders.%s CASCADE" % t, user="kasir_order_owner"))
    print(refused(s, "DELETE FROM orders.orders"))
    print(refused(s, "DELETE FROM orders.entitlements"))
    assert s.sql("SELECT count(*) FROM orders.evidence")[0][0] > 0


def refused_reference(s, q, user="postgres"):
    """q is refused as a dangling reference (SQLSTATE 23503), by the
    statement checks of migration 0013, whoever asks."""
    try:
        s.sql(q, user=user)
    except psycopg2.Error as e:
        assert e.pgcode == "23503", (q, e.pgcode, str(e))
        return str(e).strip().splitlines()[0]
    raise AssertionError("database accepted: %s" % q)


def test_reference_refusals(s):
    """Every reference of the evidence path's tables (migration 0013, which
    replaced 0001's foreign keys): a row naming an order, evidence row or
    entitlement event that is not there is refused, in a multi-row
    statement too, and nothing of the statement stays."""
    s.create_order("REF-1", 154600)
    ev = ("INSERT INTO orders.evidence (order_id, source, ref, stream_seq, kind,"
          " transaction_status, received_at, status_before, status_after, result,"
          " reason, raw) VALUES ('%s', 'ingest', %d, %d, 'notification',"
          " 'pending', now(), 'PENDING', 'PENDING', 'ignored', 'test', '{}')")
    s.sql(ev % ("REF-1", -7, -7), user="postgres")
    ev_id = s.sql("SELECT id FROM orders.evidence WHERE ref = -7")[0][0]
    before = s.sql("SELECT (SELECT count(*) FROM orders.evidence),"
                   " (SELECT count(*) FROM orders.transitions),"
                   " (SELECT count(*) FROM orders.entitlement_events),"
                   " (SELECT count(*) FROM orders.entitlements)")
    print(refused_reference(s, ev % ("NOPE-1", -8, -8)))
    # the second row of two is the bad one
    print(refused_reference(s, (ev % ("REF-1", -9, -9)) + ", ('NOPE-2', 'ingest', -10, -10,"
                            " 'notification', 'pending', now(), 'PENDING', 'PENDING',"
                            " 'ignored', 'test', '{}')"))
    tr = ("INSERT INTO orders.transitions (order_id, from_status, to_status,"
          " evidence_source, evidence_id, reason) VALUES ('%s', 'PENDING', 'FAILED',"
          " 'operator', %s, 'x')")
    print(refused_reference(s, tr % ("NOPE-3", "NULL")))
    print(refused_reference(s, tr % ("REF-1", "-5")))
    ee = ("INSERT INTO orders.entitlement_events (order_id, customer_email, course_id,"
          " action, source, evidence_id, reason) VALUES ('%s', 'a@example.com',"
          " 'c', 'grant', 'operator', %s, 'x')")
    print(refused_reference(s, ee % ("NOPE-4", "NULL")))
    print(refused_reference(s, ee % ("REF-1", "-6")))
    # a real grant event, for the entitlements' references
    s.sql(ee % ("REF-1", ev_id), user="postgres")
    gid = s.sql("SELECT max(id) FROM orders.entitlement_events WHERE order_id = 'REF-1'")[0][0]
    en = ("INSERT INTO orders.entitlements (order_id, customer_email, course_id,"
          " grant_event_id, revoke_event_id) VALUES ('%s', 'a@example.com', 'c', %s, %s)")
    print(refused_reference(s, en % ("NOPE-5", gid, "NULL")))
    print(refused_reference(s, en % ("REF-1", "-11", "NULL")))
    print(refused_reference(s, en % ("REF-1", gid, "-12")))
    s.sql(en % ("REF-1", gid, "NULL"), user="postgres")
    print(refused_reference(s, "UPDATE orders.entitlements SET revoke_event_id = -13,"
                               " revoked_at = now() WHERE order_id = 'REF-1'"))
    print(refused_reference(s, "UPDATE orders.entitlements SET order_id = 'NOPE-6'"
                               " WHERE order_id = 'REF-1'"))
    after = s.sql("SELECT (SELECT count(*) FROM orders.evidence),"
                  " (SELECT count(*) FROM orders.transitions),"
                  " (SELECT count(*) FROM orders.entitlement_events) - 1,"
                  " (SELECT count(*) FROM orders.entitlements) - 1")
    assert after == before, (before, after)
    assert s.sql("SELECT revoked_at IS NULL FROM orders.entitlements"
                 " WHERE order_id = 'REF-1'") == [(True,)]


# Every column the evidence path's UPDATE changes on every payment
# (store.c st_update), awaiting_* included: in the default mode every
# payment's notification is held for the Status API (migration 0012).
# contradicted_at is indexed on purpose: it changes only when Midtrans
# contradicts a notification.
EVIDENCE_UPDATED = ("status", "paid_at", "transaction_id", "payment_type", "flagged",
                    "flag_reason", "partial_refund", "disputed", "reversed",
                    "awaiting_since", "awaiting_status", "updated_at")


def test_order_update_is_hot(s):
    """The order row's UPDATE of a payment can be a heap-only tuple update
    (docs/performance.md (c)): no index of orders.orders names a column it
    changes (in its key, expression or predicate), the pages keep room, and
    a payment's two updates in the default mode (its notification held for
    the Status API, then PENDING -> PAID with its evidence and transition,
    the hold cleared) pass the statement guard and are both counted HOT."""
    for name, ddl in s.sql("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)"
                           " FROM pg_index WHERE indrelid = 'orders.orders'::regclass"):
        used = ddl.split(" USING ", 1)[1]
        for col in EVIDENCE_UPDATED:
            assert not re.search(r"\b%s\b" % col, used), (name, ddl, col)
    opts = s.sql("SELECT reloptions FROM pg_class WHERE oid = 'orders.orders'::regclass")[0][0]
    assert "fillfactor=80" in (opts or []), opts
    s.create_order("HOT-1", 154600)
    # one transaction, rolled back: nothing of it stays
    c = s.db("postgres")
    try:
        cur = c.cursor()
        cur.execute("BEGIN")
        cur.execute(
        "UPDATE orders.orders SET awaiting_since = now(),"
        "  awaiting_status = 'settlement' WHERE order_id = 'HOT-1';"
        "UPDATE orders.settings SET signature_only = true;"
        " INSERT INTO orders.evidence (order_id, source, ref, stream_seq, kind,"
        "  transaction_status, received_at, status_before, status_after, result,"
        "  reason, raw) VALUES ('HOT-1', 'ingest', -1, -1, 'notification',"
        "  'settlement', now(), 'PENDING', 'PAID', 'applied', 'test', '{}');"
        " INSERT INTO orders.transitions (order_id, from_status, to_status,"
        "  evidence_source, evidence_ref, evidence_id, reason)"
        "  SELECT 'HOT-1', 'PENDING', 'PAID', 'ingest', -1, id, 'test'"
        "  FROM orders.evidence WHERE source = 'ingest' AND ref = -1;"
        " UPDATE orders.orders SET status = 'PAID', paid_at = now(),"
        "  awaiting_since = NULL, awaiting_status = NULL,"
        "  updated_at = now() WHERE order_id = 'HOT-1';"
        " SELECT pg_stat_get_xact_tuples_updated('orders.orders'::regclass),"
        "  pg_stat_get_xact_tuples_hot_updated('orders.orders'::regclass)")
        hot = cur.fetchall()
        cur.execute("ROLLBACK")
    finally:
        c.close()
    assert hot == [(2, 2)], hot
    assert s.status("HOT-1") == "PENDING"


def test_access_grant(s):
    s.create_order("ADM-1", 154600)
    apply(s, base("ADM-1"))
    # updated_at moves with the status (store.c, since migration 0011)
    assert s.sql("SELECT updated_at > created_at FROM orders.orders"
                 " WHERE order_id='ADM-1'") == [(True,)]
    # the entitlement disappears behind the service's back
    s.sql("UPDATE orders.entitlements SET revoked_at = now() WHERE order_id='ADM-1'")
    facts = s.admin("doctor.facts")["result"]
    assert any(r["order_id"] == "ADM-1" for r in facts["paid_without_access"]), facts
    r = s.admin("access.grant", {"order_id": "ADM-1"})
    assert r["ok"] is False and r["error"]["code"] == "reason_required", r
    r = s.admin("access.grant", {"order_id": "ADM-1"}, reason="customer lost access", incident="INC-1")
    assert r["ok"] is True, r
    assert entitlements(s, "ADM-1") == 1
    facts = s.admin("doctor.facts")["result"]
    assert not any(r["order_id"] == "ADM-1" for r in facts["paid_without_access"]), facts
    r = s.admin("access.grant", {"order_id": "ADM-1"}, reason="again")
    assert r["ok"] is False and r["error"]["code"] == "already_active", r
    # never for an unpaid order
    s.create_order("ADM-2", 154600)
    r = s.admin("access.grant", {"order_id": "ADM-2"}, reason="customer says they paid")
    assert r["ok"] is False and r["error"]["code"] == "not_paid", r
    assert entitlements(s, "ADM-2") == 0 and s.status("ADM-2") == "PENDING"
    audit = s.sql("SELECT order_id, result, reason, incident FROM orders.audit ORDER BY id")
    assert ("ADM-1", "ok", "customer lost access", "INC-1") in audit, audit
    assert ("ADM-2", "refused", "customer says they paid", None) in audit, audit
    assert sum(1 for a in audit if a[1] == "refused") == 3, audit
    show = s.admin("order.show", {"order_id": "ADM-1"})["result"]
    assert show["status"] == "PAID" and len(show["audit"]) >= 2, show
    assert [e["action"] for e in show["entitlement_history"]] == ["grant", "grant"], show
    # there is no command that sets PAID
    for cmd in ("order.pay", "order.set_status", "order.mark_paid"):
        r = s.admin(cmd, {"order_id": "ADM-2", "status": "PAID"}, reason="x")
        assert r["ok"] is False and r["error"]["code"] == "unknown_command", r
    assert s.status("ADM-2") == "PENDING"


def order_row(s, oid):
    return s.sql("SELECT status, flagged, flag_reason, awaiting_status,"
                 " contradicted_at IS NOT NULL FROM orders.orders"
                 " WHERE order_id = %s", (oid,))[0]


def confirm(s, oid, ts, amount="154600.00", **kw):
    fields = dict(transaction_status=ts, gross_amount=amount, currency="IDR",
                  status_code={"settlement": "200", "pending": "201"}.get(ts, "200"),
                  confirm=True)
    fields.update(kw)
    cid = s.status_check(oid, "status", False, **fields)
    s.wait_applied("recon", s.last_seq["recon"])
    return cid


def test_confirmation(s):
    """Default mode: hold, confirm, contradict; both apply paths."""
    s.overrides["ORDER_SIGNATURE_ONLY"] = "false"
    s._config()
    s.kill_order(signal.SIGTERM)
    s.start_order()
    assert s.sql("SELECT signature_only FROM orders.settings") == [(False,)]
    # one warning per start in signature_only mode, none in the default
    assert s.log_text().count("order.signature_only is on") == 1
    # held: the settlement notification changes nothing but the wait
    s.create_order("CNF-1", 154600)
    apply(s, base("CNF-1"))
    assert order_row(s, "CNF-1") == ("PENDING", False, None, "settlement", False)
    ev = s.sql("SELECT result, reason FROM orders.evidence WHERE order_id='CNF-1'")
    assert ev == [("noop", "held: awaiting confirmation by the midtrans status api")], ev
    kasirtest.wait_sequenced(s.sql, "orders")
    req = s.sql("SELECT body::jsonb->'data' FROM orders.stream_log_messages"
                " WHERE type = 'confirm.request'")
    assert [r[0]["order_id"] for r in req] == ["CNF-1"], req
    assert req[0][0]["transaction_status"] == "settlement", req
    view = s.http("GET", "/v1/orders/CNF-1")
    assert view[0] == 200 and view[1]["confirmation"].startswith(
        "awaiting confirmation since "), view
    # a scheduled (not confirm) pending answer neither moves nor flags
    s.status_check("CNF-1", "status", False, transaction_status="pending",
                   gross_amount="154600.00", status_code="201")
    s.wait_applied("recon", s.last_seq["recon"])
    assert order_row(s, "CNF-1") == ("PENDING", False, None, "settlement", False)
    # Midtrans agrees: PAID on the Status API's answer
    cid = confirm(s, "CNF-1", "settlement")
    assert order_row(s, "CNF-1") == ("PAID", False, None, None, False)
    t = s.sql("SELECT evidence_source, evidence_ref FROM orders.transitions"
              " WHERE order_id='CNF-1'")
    assert t == [("recon", cid)], t
    # refund of a PAID order: held, then confirmed by a later state
    apply(s, base("CNF-1", status="refund"))
    assert order_row(s, "CNF-1")[0::3] == ("PAID", "refund"), order_row(s, "CNF-1")
    confirm(s, "CNF-1", "refund")
    assert order_row(s, "CNF-1")[0] == "REFUNDED", order_row(s, "CNF-1")
    # contradicted: the body says settlement, Midtrans says pending
    s.create_order("CNF-2", 154600)
    apply(s, base("CNF-2"))
    confirm(s, "CNF-2", "pending")
    row = order_row(s, "CNF-2")
    assert row == ("PENDING", True, "notification contradicted by midtrans: "
                   "possible forgery or key leak", None, True), row
    # contradicted: Midtrans does not know the payment (404)
    s.create_order("CNF-3", 154600)
    apply(s, base("CNF-3", status="capture", fraud_status="accept"))
    s.status_check("CNF-3", "not_found", False, confirm=True)
    s.wait_applied("recon", s.last_seq["recon"])
    assert order_row(s, "CNF-3")[0::4] == ("PENDING", True), order_row(s, "CNF-3")
    # contradicted: the right state with another amount
    s.create_order("CNF-4", 154600)
    apply(s, base("CNF-4"))
    confirm(s, "CNF-4", "settlement", amount="1546.00")
    assert order_row(s, "CNF-4")[0::4] == ("PENDING", True), order_row(s, "CNF-4")
    # capture accept claimed, Midtrans says capture challenge: contradicted
    s.create_order("CNF-5", 154600)
    apply(s, base("CNF-5", status="capture", fraud_status="accept"))
    confirm(s, "CNF-5", "capture", fraud_status="challenge")
    assert order_row(s, "CNF-5")[0::4] == ("PENDING", True), order_row(s, "CNF-5")
    # the payment and its refund both happened before the reconciler
    # asked: Midtrans answers refund, a later state of the claimed
    # settlement; a full refund seen before its settlement ends the order
    # PENDING -> REFUNDED, never PAID (the state machine's rule)
    s.create_order("CNF-6", 154600)
    apply(s, base("CNF-6"))
    cid = confirm(s, "CNF-6", "refund")
    assert order_row(s, "CNF-6") == ("REFUNDED", False, None, None, False), \
        order_row(s, "CNF-6")
    t = s.sql("SELECT from_status, to_status, evidence_source, evidence_ref"
              " FROM orders.transitions WHERE order_id='CNF-6'")
    assert t == [("PENDING", "REFUNDED", "recon", cid)], t
    # ... a later state that cannot move a PENDING order proves the claim:
    # a partial chargeback answer for a claimed capture -> PAID on the
    # answer, with the answer's flag (disputed) merged
    s.create_order("CNF-10", 154600)
    apply(s, base("CNF-10", status="capture", fraud_status="accept"))
    cid = confirm(s, "CNF-10", "partial_chargeback")
    assert order_row(s, "CNF-10")[0] == "PAID", order_row(s, "CNF-10")
    t = s.sql("SELECT to_status, evidence_source, evidence_ref FROM orders.transitions"
              " WHERE order_id='CNF-10'")
    assert t == [("PAID", "recon", cid)], t
    assert s.sql("SELECT disputed FROM orders.orders WHERE order_id='CNF-10'") == [(True,)]
    # ... a partial refund is a flag, merged at once
    s.create_order("CNF-7", 154600)
    apply(s, base("CNF-7"))
    confirm(s, "CNF-7", "partial_refund", refund_amount="25000.00")
    assert order_row(s, "CNF-7") == ("PAID", False, None, None, False), \
        order_row(s, "CNF-7")
    # paid and partly refunded in one answer: both told
    assert len(s.events("CNF-7", "order.paid")) == 1
    assert refunded_events(s, "CNF-7") == [(True, 25000)], refunded_events(s, "CNF-7")
    assert s.sql("SELECT partial_refund FROM orders.orders WHERE order_id='CNF-7'") == [(True,)]
    # ... a reversal (deny carrying settlement_time) answered before kasir
    # saw the settlement: the money went back, never PAID (the state
    # machine's "reversal seen before its settlement")
    s.create_order("CNF-8", 154600)
    apply(s, base("CNF-8"))
    confirm(s, "CNF-8", "deny", settlement_time="2026-12-06 10:00:00")
    assert s.sql("SELECT status, reversed, awaiting_status, flagged FROM orders.orders"
                 " WHERE order_id='CNF-8'") == [("FAILED", True, None, False)]
    assert s.sql("SELECT count(*) FROM orders.entitlements WHERE order_id='CNF-8'") == [(0,)]
    # ... but a deny without settlement_time is a failed attempt: it
    # cannot follow a settlement, the claim is contradicted
    s.create_order("CNF-9", 154600)
    apply(s, base("CNF-9"))
    confirm(s, "CNF-9", "deny")
    assert order_row(s, "CNF-9")[0::4] == ("PENDING", True), order_row(s, "CNF-9")
    # a reversal of a PAID order: held, confirmed, REFUNDED
    apply(s, base("CNF-7", status="deny", settlement_time="2026-12-06 10:00:00"))
    assert order_row(s, "CNF-7")[0::3] == ("PAID", "deny/settled"), order_row(s, "CNF-7")
    confirm(s, "CNF-7", "deny", settlement_time="2026-12-06 10:00:00")
    assert s.sql("SELECT status, reversed FROM orders.orders WHERE order_id='CNF-7'") == \
        [("REFUNDED", True)]
    # the database refuses a transition on notification evidence
    eid = s.sql("SELECT id, ref FROM orders.evidence WHERE order_id='CNF-2'"
                " AND source='ingest'")[0]
    refused(s, "INSERT INTO orders.transitions (order_id, from_status, to_status,"
            " evidence_source, evidence_ref, evidence_id, reason) VALUES"
            " ('CNF-2', 'PENDING', 'CANCELLED', 'ingest', %s, %s, 'x')",
            (eid[1], eid[0]))
    # ...checked once per statement (migration 0014): in a statement of two
    # rows, the second without a Status API answer, the statement is
    # refused whole; the first row alone is accepted
    good = s.sql("SELECT id, ref FROM orders.evidence WHERE order_id='CNF-1'"
                 " AND source='recon' AND kind='status' ORDER BY id LIMIT 1")[0]
    two = ("INSERT INTO orders.transitions (order_id, from_status, to_status,"
           " evidence_source, evidence_ref, evidence_id, reason) VALUES"
           " ('CNF-1', 'PENDING', 'CANCELLED', 'recon', %s, %s, 'x')")
    n0 = s.sql("SELECT count(*) FROM orders.transitions")[0][0]
    conn = psycopg2.connect(s.pg.dsn("kasir_order"))
    try:
        cur = conn.cursor()
        try:
            cur.execute(two + ", ('CNF-2', 'PENDING', 'CANCELLED', 'ingest', %s, %s, 'x')",
                        (good[1], good[0], eid[1], eid[0]))
        except psycopg2.Error as e:
            assert e.pgcode == "23514", (e.pgcode, str(e))
            assert "PENDING -> CANCELLED of order CNF-2 refused: its evidence is not a" \
                   " Status API answer" in str(e), str(e)
        else:
            raise AssertionError("two transitions, one on notification evidence, accepted")
        conn.rollback()
        cur.execute(two, (good[1], good[0]))  # accepted; rolled back below
        conn.rollback()
    finally:
        conn.close()
    assert s.sql("SELECT count(*) FROM orders.transitions")[0][0] == n0


def main():
    s = Stack(name="order-evidence", overrides={"ORDER_SIGNATURE_ONLY": "true"})
    try:
        s.start_order()
        assert s.sql("SELECT signature_only FROM orders.settings") == [(True,)]
        assert "order.signature_only is on" in s.log_text(), "no start-up warning"
        for t in (test_samples, test_sequences, test_unknown_and_poison, test_status_checks,
                  test_database_refusals, test_reference_refusals, test_order_update_is_hot,
                  test_access_grant, test_confirmation,
                  test_batch_poison):
            print("==", t.__name__, flush=True)
            t(s)
        print("ok")
    except BaseException:
        print("stack kept for inspection: " + s.dir)
        try:
            print(s.log_text()[-6000:])
        except OSError:
            pass
        import os
        os.environ["KASIR_KEEP_TMP"] = "1"
        raise
    finally:
        s.close()


if __name__ == "__main__":
    main()
