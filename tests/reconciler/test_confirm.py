#!/usr/bin/python3
"""The notification is a hint, Midtrans's answer is the proof (issue 13).

Midtrans signs only order_id + status_code + gross_amount.  With the real
kasir-ingest, kasir-order and kasir-reconciler and the fake Midtrans (whose
Status API tells the truth about what was paid there):

  1. a payment at the fake reaches PAID, the PAID transition's evidence is
     a Status API answer (source recon, confirm = true), exactly once;
  2. a correctly signed settlement for an order never paid at Midtrans stays
     PENDING, is flagged "notification contradicted by midtrans", doctor
     reports a P1 and the metric counts it; the same order paid at the fake
     then reaches PAID;
  3. every unsigned field of a genuine signed body, rewritten: the order
     never moves; where the field drives a decision the attempt is refused
     at the door (4xx) or flagged, and doctor reports it; a PAID order's
     genuine settlement body rewritten to refund, chargeback...: still PAID
     with access, contradicted;
  4. the Status API down (5xx) during a payment: PENDING with "awaiting
     confirmation since T" in the API's order JSON, kasirctl order show and
     doctor; PAID once it answers again, exactly one PAID transition;
  5. the database refuses a transition whose evidence is a notification;
  6. the unsigned fields that drive a decision only on other bodies: a
     genuine deny (202) given the settlement_time that marks a reversal
     (of a PENDING order, and of a PAID order whose failed first attempt
     it was), a genuine partial_refund whose refund_amount is rewritten
     (the customer is told Midtrans's amount), and the fields of every
     payment channel's genuine body (card, e-wallet, QRIS, store, bill,
     Permata VA) rewritten: never a wrong move.
"""
import copy
import hashlib
import json

import psycopg2

import kasirtest
import rstack
from rstack import log

CONTRADICTED = ("notification contradicted by midtrans: possible forgery "
                "or key leak")


def signed(st, body):
    b = dict(body)
    key = open(st.secret_path("midtrans-server-key")).read().strip()
    b["signature_key"] = hashlib.sha512(
        (b["order_id"] + b["status_code"] + b["gross_amount"] + key)
        .encode()).hexdigest()
    return b


def genuine_body(st, oid, action, **kw):
    """The body the fake sends for `action` (dropped: never delivered)."""
    args = {"notify": "drop"}
    args.update(kw)
    r = st.fake("POST", "/_fake/orders/%s/%s" % (oid, action), args)
    assert r.status == 200, r
    t = st.fake("GET", "/_fake/orders/%s?bodies=1" % oid).body
    return copy.deepcopy(t["notifications"][-1]["body"])


def order_row(st, oid):
    rows = st.sql("SELECT status, flagged, flag_reason, contradicted_at IS NOT"
                  " NULL, awaiting_status FROM orders.orders"
                  " WHERE order_id = %s", (oid,))
    return rows[0]


def transitions(st, oid):
    return st.sql("SELECT to_status, evidence_source FROM orders.transitions"
                  " WHERE order_id = %s ORDER BY id", (oid,))


def doctor(st):
    r = st.run_ctl("doctor", "--json")
    out = json.loads(r.stdout)
    return out.get("result", out)


def finding(doc, check):
    for f in doc.get("findings", []):
        if f.get("check") == check:
            return f
    return None


def finding_orders(doc, check):
    f = finding(doc, check)
    return {i.get("order_id") for i in (f or {}).get("items", [])}


def deliver(st, body):
    """POSTs body to kasir-ingest; True when it was accepted (2xx)."""
    r = st.notify(body)
    assert r.status < 500, r
    return 200 <= r.status < 300


def wait_evidence(st, oid, n, source="ingest"):
    st.wait_until(lambda: st.sql(
        "SELECT count(*) FROM orders.evidence WHERE order_id = %s AND"
        " source = %s", (oid, source))[0][0] >= n, timeout=20,
        what="%d %s evidence rows for %s" % (n, source, oid))


def wait_settled(st, oid):
    """No confirmation awaited any more (answered either way)."""
    st.wait_until(lambda: order_row(st, oid)[4] is None, timeout=30,
                  what="%s confirmation answered" % oid)


def test_paid_at_fake(st):
    oid = rstack.create_order(st, "lunas@example.com")
    rstack.pay(st, oid, notify="normal")
    st.wait_until(lambda: rstack.order_status(st, oid) == "PAID", timeout=30,
                  what="%s PAID" % oid)
    tr = transitions(st, oid)
    assert tr == [("PAID", "recon")], tr
    ref = rstack.transitions(st, oid, "PAID")[0][3]
    chk = st.sql("SELECT verdict, transaction_status, confirm, published"
                 " FROM recon.status_check WHERE id = %s", (ref,))
    assert chk == [("status", "settlement", True, True)], chk
    held = st.sql("SELECT result, reason FROM orders.evidence WHERE"
                  " order_id = %s AND source = 'ingest'", (oid,))
    assert held and all(r[0] == "noop" and "held" in r[1] for r in held), held
    st.wait_until(lambda: rstack.entitlements(st, oid) == 1, timeout=10,
                  what="access")
    assert order_row(st, oid)[1] is False
    log("paid at the fake: PAID on the Status API's answer, once")
    return oid


def test_never_paid(st):
    oid = rstack.create_order(st, "palsu@example.com")
    body = {"transaction_time": "2026-12-06 09:00:00",
            "transaction_status": "settlement",
            "transaction_id": "513f1f01-c9da-474c-9fc9-d5c64364b709",
            "status_message": "midtrans payment notification",
            "status_code": "200", "payment_type": "bank_transfer",
            "order_id": oid, "merchant_id": "G141532850",
            "gross_amount": "150000.00", "fraud_status": "accept",
            "currency": "IDR",
            "settlement_time": "2026-12-06 09:01:00"}
    assert deliver(st, signed(st, body))
    st.wait_until(lambda: order_row(st, oid)[3], timeout=30,
                  what="%s contradicted" % oid)
    status, flagged, reason, _, awaiting = order_row(st, oid)
    assert (status, flagged, reason, awaiting) == \
        ("PENDING", True, CONTRADICTED, None), order_row(st, oid)
    assert transitions(st, oid) == []
    assert rstack.entitlements(st, oid) == 0
    doc = doctor(st)
    f = finding(doc, "midtrans_contradicted")
    assert f and f["severity"] == "P1" and oid in finding_orders(
        doc, "midtrans_contradicted"), doc
    assert st.metric("order", "kasir_order_confirmations_total",
                     result="contradicted") >= 1
    log("signed settlement never paid at Midtrans: PENDING, flagged, P1")

    rstack.pay(st, oid, notify="normal")
    st.wait_until(lambda: rstack.order_status(st, oid) == "PAID", timeout=30,
                  what="%s PAID after paying at the fake" % oid)
    assert transitions(st, oid) == [("PAID", "recon")]
    log("the same order paid at the fake: PAID")


# Every field of a genuine notification the signature does not cover, with
# the value a forger would put there.  `decides`: the field drives a
# decision (the attempt must be refused at the door or flagged).
def rewrites(base):
    out = [
        ("transaction_status", "settlement", True),
        ("transaction_status", "capture", True),
        ("transaction_status", "refund", True),
        ("transaction_status", "expire", True),
        ("transaction_status", "cancel", True),
        ("transaction_status", "failure", True),
        ("transaction_status", "deny", False),
        ("fraud_status", "accept", True),  # on the capture/challenge body
        ("fraud_status", "deny", True),   # capture+deny: FAILED
        ("settlement_time", "2026-12-06 10:00:00", False),
        ("transaction_id", "00000000-0000-4000-8000-000000000000", False),
        ("payment_type", "gopay", False),
        ("status_message", "Success, transaction is found", False),
        ("currency", "USD", False),
        ("merchant_id", "M000000", False),
        ("transaction_time", "2026-01-01 00:00:00", False),
        ("expiry_time", "2030-01-01 00:00:00", False),
        ("va_numbers", [{"va_number": "99999999999", "bank": "bca"}], False),
        ("payment_amounts", [{"paid_at": "2026-12-06 10:00:00",
                              "amount": base["gross_amount"]}], False),
        ("signature_key_extra", "x", False),  # an unknown field added
    ]
    for k in sorted(base):
        if k not in ("order_id", "status_code", "gross_amount",
                     "signature_key") and k not in {r[0] for r in out}:
            out.append((k, "rewritten", False))
    return out


def test_rewritten_fields(st):
    n_attempts = 0
    for field, value, decides in rewrites(
            genuine_body(st, rstack.create_order(st, "probe@example.com"),
                         "pending")):
        oid = rstack.create_order(st, "field-%d@example.com" % n_attempts)
        n_attempts += 1
        if field == "fraud_status":
            body = genuine_body(st, oid, "challenge")
            assert body["transaction_status"] == "capture"
        else:
            body = genuine_body(st, oid, "pending")
        assert body["status_code"] == "201", body
        body[field] = value
        accepted = deliver(st, signed(st, body))
        if accepted:
            wait_evidence(st, oid, 1)
            wait_settled(st, oid)
        status, flagged, reason, contradicted, _ = order_row(st, oid)
        assert status == "PENDING", (field, value, order_row(st, oid))
        assert transitions(st, oid) == [], (field, value)
        assert rstack.entitlements(st, oid) == 0
        if decides and accepted:
            # refused at the door, or flagged: contradicted by the Status
            # API (P1), or refused by the state machine itself (a refund
            # of an order never paid: P2 flagged)
            assert flagged, (field, value, order_row(st, oid))
            doc = doctor(st)
            assert oid in (finding_orders(doc, "midtrans_contradicted")
                           if contradicted else
                           finding_orders(doc, "amount_mismatch")), \
                (field, value, order_row(st, oid))
        log("%s = %r: %s, order %s%s" % (
            field, value, "accepted" if accepted else "refused at the door",
            status, ", flagged: " + reason if flagged else ""))
    assert n_attempts >= 20, n_attempts


def test_paid_rewritten(st):
    """A genuine settlement body (200) of a PAID order, its status swapped
    for another 200-class one: the signature still holds and the body is
    consistent, so only Midtrans's answer can tell.  The order stays PAID
    with access; the attempt is contradicted."""
    for value in ("refund", "partial_refund", "chargeback",
                  "partial_chargeback", "deny"):
        oid = rstack.create_order(st, "korban-%s@example.com" % value)
        rstack.pay(st, oid, notify="normal")
        st.wait_until(lambda: rstack.order_status(st, oid) == "PAID",
                      timeout=30, what="%s PAID" % oid)
        t = st.fake("GET", "/_fake/orders/%s?bodies=1" % oid).body
        body = copy.deepcopy(t["notifications"][-1]["body"])
        assert body["status_code"] == "200", body
        body["transaction_status"] = value
        n = st.sql("SELECT count(*) FROM orders.evidence WHERE order_id = %s"
                   " AND source = 'ingest'", (oid,))[0][0]
        accepted = deliver(st, signed(st, body))
        if accepted:
            wait_evidence(st, oid, n + 1)
            wait_settled(st, oid)
        status, flagged, reason, contradicted, _ = order_row(st, oid)
        partial = st.sql("SELECT partial_refund OR disputed OR reversed FROM"
                         " orders.orders WHERE order_id = %s", (oid,))[0][0]
        assert (status, partial) == ("PAID", False), (value, order_row(st, oid))
        assert transitions(st, oid) == [("PAID", "recon")], value
        assert rstack.entitlements(st, oid) == 1, value
        if accepted:
            assert flagged, (value, order_row(st, oid))
            doc = doctor(st)
            assert oid in (finding_orders(doc, "midtrans_contradicted")
                           if contradicted else
                           finding_orders(doc, "amount_mismatch")), \
                (value, order_row(st, oid))
        log("PAID order, settlement rewritten to %s: %s, PAID with access%s"
            % (value, "accepted" if accepted else "refused at the door",
               ", flagged: " + reason if flagged else ""))


def test_status_api_down(st):
    oid = rstack.create_order(st, "sabar@example.com")
    r = st.fake("POST", "/_fake/status_api", {"mode": "5xx", "count": -1,
                                               "status": 503})
    assert r.status == 200, r
    rstack.pay(st, oid, notify="normal")
    st.wait_until(lambda: order_row(st, oid)[4] == "settlement", timeout=30,
                  what="%s awaiting confirmation" % oid)
    st.wait_until(lambda: st.sql(
        "SELECT count(*) FROM recon.status_check WHERE order_id = %s AND"
        " verdict = 'http_5xx' AND confirm", (oid,))[0][0] >= 3, timeout=30,
        what="confirmation retried against the failing Status API")
    assert rstack.order_status(st, oid) == "PENDING"
    view = st.api("GET", "/v1/orders/%s" % oid)
    assert view.status == 200, view
    conf = view.body.get("confirmation") or ""
    assert conf.startswith("awaiting confirmation since "), view.body
    shown = st.run_ctl("order", "show", oid)
    assert "awaiting confirmation since" in shown.stdout, shown.stdout
    assert oid in finding_orders(doctor(st), "awaiting_confirmation")
    log("Status API down: PENDING, %s" % conf)

    st.fake("POST", "/_fake/status_api", {"mode": "normal"})
    st.wait_until(lambda: rstack.order_status(st, oid) == "PAID", timeout=30,
                  what="%s PAID after the Status API recovered" % oid)
    assert transitions(st, oid) == [("PAID", "recon")]
    assert order_row(st, oid)[1:5] == (False, None, False, None)
    log("Status API back: PAID, one transition")

    # the same with a Status API that does not answer at all (timeouts)
    oid = rstack.create_order(st, "sabar2@example.com")
    st.fake("POST", "/_fake/status_api", {"mode": "timeout", "count": -1,
                                          "delay_s": 5})
    rstack.pay(st, oid, notify="normal")
    st.wait_until(lambda: st.sql(
        "SELECT count(*) FROM recon.status_check WHERE order_id = %s AND"
        " verdict = 'timeout' AND confirm", (oid,))[0][0] >= 2, timeout=60,
        what="confirmation timing out against a silent Status API")
    assert order_row(st, oid)[0] == "PENDING" and order_row(st, oid)[4] == \
        "settlement", order_row(st, oid)
    assert st.api("GET", "/v1/orders/%s" % oid).body["confirmation"] \
        .startswith("awaiting confirmation since ")
    st.fake("POST", "/_fake/status_api", {"mode": "normal"})
    st.wait_until(lambda: rstack.order_status(st, oid) == "PAID", timeout=60,
                  what="%s PAID after the timeouts" % oid)
    assert transitions(st, oid) == [("PAID", "recon")]
    log("Status API silent (timeouts), then back: PAID, one transition")


def refunded_messages(st, oid):
    kasirtest.wait_sequenced(st.sql, "orders")
    return [json.loads(r[0]) for r in st.sql(
        "SELECT body FROM orders.stream_log_messages WHERE type = 'order.refunded'"
        " AND (body::jsonb)->'data'->>'order_id' = %s ORDER BY seq", (oid,))]


def test_reversal_marker(st):
    """settlement_time on a deny is what makes it a reversal (docs/
    state-machine.md).  Added to a genuine failed attempt's deny (202,
    consistent, signed) it claims money went back."""
    # a PENDING order whose card attempt failed
    oid = rstack.create_order(st, "tolak@example.com")
    body = genuine_body(st, oid, "deny", payment_type="credit_card")
    assert body["status_code"] == "202" and "settlement_time" not in body, body
    body["settlement_time"] = "2026-12-06 10:00:00"
    assert deliver(st, signed(st, body))
    wait_evidence(st, oid, 1)
    wait_settled(st, oid)
    status, flagged, reason, contradicted, _ = order_row(st, oid)
    rev = st.sql("SELECT reversed FROM orders.orders WHERE order_id = %s",
                 (oid,))[0][0]
    assert (status, rev) == ("PENDING", False), order_row(st, oid)
    assert transitions(st, oid) == [] and rstack.entitlements(st, oid) == 0
    # The claim was a reversal ("deny/settled": a deny with
    # settlement_time), Midtrans answers a failed attempt ("deny"): the
    # answer does not bear the claim out, so the order is flagged as
    # contradicted and doctor reports it.
    assert flagged and contradicted, order_row(st, oid)
    assert oid in finding_orders(doctor(st), "midtrans_contradicted")
    log("PENDING order, failed attempt's deny given a settlement_time: "
        "PENDING, not reversed, flagged: %s" % reason)

    # a PAID order: its first attempt failed, the second paid
    oid = rstack.create_order(st, "tolak-lunas@example.com")
    body = genuine_body(st, oid, "deny", payment_type="credit_card")
    rstack.pay(st, oid, notify="normal", payment_type="credit_card")
    st.wait_until(lambda: rstack.order_status(st, oid) == "PAID", timeout=30,
                  what="%s PAID" % oid)
    t = st.fake("GET", "/_fake/orders/%s" % oid).body
    body["settlement_time"] = t.get("settlement_time") or "2026-12-06 10:00:00"
    n = st.sql("SELECT count(*) FROM orders.evidence WHERE order_id = %s"
               " AND source = 'ingest'", (oid,))[0][0]
    assert deliver(st, signed(st, body))
    wait_evidence(st, oid, n + 1)
    wait_settled(st, oid)
    status, flagged, reason, contradicted, _ = order_row(st, oid)
    assert status == "PAID" and rstack.entitlements(st, oid) == 1, \
        order_row(st, oid)
    assert transitions(st, oid) == [("PAID", "recon")]
    assert flagged and contradicted, order_row(st, oid)
    assert oid in finding_orders(doctor(st), "midtrans_contradicted")
    log("PAID order, its failed attempt's deny given a settlement_time: "
        "PAID with access, flagged: %s" % reason)


def test_refund_amount_rewritten(st):
    """A genuine partial_refund (200) with refund_amount (and refunds[])
    rewritten: the partial refund is real, the amount the customer is told
    is Midtrans's."""
    oid = rstack.create_order(st, "sebagian@example.com")
    rstack.pay(st, oid, notify="normal", payment_type="gopay")
    st.wait_until(lambda: rstack.order_status(st, oid) == "PAID", timeout=30,
                  what="%s PAID" % oid)
    body = genuine_body(st, oid, "refund", refund_amount=50000)
    assert body["transaction_status"] == "partial_refund", body
    assert body["refund_amount"] == "50000.00", body
    body["refund_amount"] = "1.00"
    body["refunds"] = [dict(r, refund_amount="1.00") for r in body["refunds"]]
    assert deliver(st, signed(st, body))
    st.wait_until(lambda: refunded_messages(st, oid), timeout=30,
                  what="%s order.refunded" % oid)
    wait_settled(st, oid)
    msgs = refunded_messages(st, oid)
    got = [m["data"].get("refund_amount") for m in msgs]
    assert got == [50000], (got, msgs)
    row = st.sql("SELECT status, partial_refund FROM orders.orders"
                 " WHERE order_id = %s", (oid,))[0]
    assert row == ("PAID", True) and rstack.entitlements(st, oid) == 1, row
    log("partial refund of 50000 with refund_amount rewritten to 1.00: "
        "the customer is told %s" % got[0])


# (action, options) whose genuine body carries each channel's own fields
CHANNELS = [("challenge", {}),
            ("pending", {"payment_type": "gopay"}),
            ("pending", {"payment_type": "qris"}),
            ("pending", {"payment_type": "cstore", "store": "indomaret"}),
            ("pending", {"payment_type": "echannel"}),
            ("pending", {"payment_type": "bank_transfer", "bank": "permata"})]
SIGNED = ("order_id", "status_code", "gross_amount", "signature_key")


def test_channel_fields(st):
    """Every unsigned field of each channel's genuine body rewritten (all
    in one body, so one order per channel): nothing moves."""
    for action, opts in CHANNELS:
        oid = rstack.create_order(st, "kanal-%s-%s@example.com"
                                  % (action, opts.get("payment_type", "cc")))
        body = genuine_body(st, oid, action, **opts)
        fields = sorted(k for k in body if k not in SIGNED and k not in (
            "transaction_status", "fraud_status", "status_message"))
        for k in fields:
            v = body[k]
            body[k] = (v + "9" if isinstance(v, str) else
                       [{"rewritten": True}] if isinstance(v, list) else
                       "rewritten")
        accepted = deliver(st, signed(st, body))
        if accepted:
            wait_evidence(st, oid, 1)
            wait_settled(st, oid)
        assert order_row(st, oid)[0] == "PENDING", (oid, order_row(st, oid))
        assert transitions(st, oid) == [] and rstack.entitlements(st, oid) == 0
        log("%s %s: %d unsigned fields rewritten (%s): %s, PENDING" % (
            action, opts.get("payment_type", "credit_card"), len(fields),
            ", ".join(fields), "accepted" if accepted else "refused"))


def test_database_refuses(st, paid_oid):
    oid = rstack.create_order(st, "db@example.com")
    ev = st.sql("SELECT id, ref FROM orders.evidence WHERE order_id = %s AND"
                " source = 'ingest' LIMIT 1", (paid_oid,))
    assert ev, paid_oid
    conn = psycopg2.connect(st.pg.dsn("kasir_order"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO orders.evidence (order_id, source, ref,"
                " stream_seq, kind, transaction_status, gross_amount,"
                " received_at, status_before, status_after, result, reason,"
                " raw) VALUES (%s, 'ingest', 999999999, 1, 'notification',"
                " 'settlement', '150000.00', now(), 'PENDING', 'PAID',"
                " 'applied', 'test', '{}') RETURNING id", (oid,))
            eid = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO orders.transitions (order_id, from_status,"
                " to_status, evidence_source, evidence_ref, evidence_id,"
                " reason) VALUES (%s, 'PENDING', 'CANCELLED', 'ingest',"
                " 999999999, %s, 'test')", (oid, eid))
    except psycopg2.Error as e:
        assert "not a Status API answer" in str(e), e
    else:
        raise AssertionError("a transition on notification evidence was "
                             "accepted in the default mode")
    finally:
        conn.close()
    assert st.sql("SELECT signature_only FROM orders.settings") == [(False,)]
    log("database: a transition on notification evidence refused")


def main():
    # two scheduler lanes: confirmations, retries while the Status API is
    # down and contradictions through lanes that share the watch list
    # (test_pipeline.py keeps one lane: its subject is one lane's window)
    with rstack.stack({"RECON_LANES": "2"}) as st:
        rstack.start(st)
        paid = test_paid_at_fake(st)
        test_never_paid(st)
        test_rewritten_fields(st)
        test_paid_rewritten(st)
        test_status_api_down(st)
        test_reversal_marker(st)
        test_refund_amount_rewritten(st)
        test_channel_fields(st)
        test_database_refuses(st, paid)
        log("ok")


if __name__ == "__main__":
    main()
