"""Unsigned transaction ids and payment types against the real daemons
(found by an outside attack on 2026-12-07; docs/state-machine.md, "The
Status API answer must be about this order").

A notification's transaction_id and payment_type are not signed.  The
reconciler asks the Status API by transaction id for the
`midtrans.by_transaction_id` channels (DANA, BSI), with the id a
notification named, so every case here starts from a genuine body whose
unsigned fields were rewritten:

1. stall: a payment_type recon.watch cannot hold (65 characters) stopped
   the reconciler's orders-stream consumer for good (a CHECK violation
   retried forever): no payment could be confirmed after it.  A later
   honest payment must reach PAID.
2. borrowed transaction: the attacker's own pending body with
   payment_type "dana" and another order's settled transaction id made
   the reconciler ask about that transaction, and its settlement paid the
   attacker's order.  The answer names another order: never evidence.
3. capture/deny: a genuine deny rewritten to capture + fraud deny (still
   202, consistent) was confirmed by the Status API's truthful "deny" and
   applied as the claim, FAILED, so the customer's retry was refused.  A
   deny leaves the order PENDING, whichever body claimed it.
4. a junk transaction id: a claim naming one made the reconciler ask by
   it; Midtrans's 404 for an unknown transaction expired a paid order.
   Asked by a transaction id, 404 and 407 say nothing about the order;
   the watch keeps the id it learned first.  And a payment proven with a
   partial refund already on it (an earlier attempt's id learned first)
   keeps the partial refund, about the paying transaction.
5. terminal escapes: escape sequences in those fields reached the
   operator's terminal through `kasirctl order show` (a fake "status
   PAID" line, the window title); text output shows them as '?'.
6. someone else's payment: a payment made at Midtrans under an order id
   before kasir had that order (another system on the same Midtrans
   account), then a kasir order given the same id (the API lets a client
   choose it; Snap answers 406).  Its settlement, asked by order id, paid
   the kasir order: access and receipt for a customer who never paid.
   A transaction made before the order was created is not its payment.
7. someone else's Snap transaction, paid later: the other system opened a
   Snap transaction under the id first (no payment yet), kasir's Snap
   call for its order got 406, and the other system's customer paid
   after the kasir order was created (an attack on the fix of 6).  Snap
   said 406, kasir got no token: no payment under that id is the kasir
   order's.  Flagged, never PAID.

The fake Midtrans keeps one transaction per order, so an earlier attempt
of an order is stood in for by another fake order's declined transaction.
"""

import base64
import json
import os
import sys
import tarfile
import time
import urllib.request

import kasirtest
from hostile_util import DOCS_KEY, JSON, check, notif_dict, signature

COURSE = "agentbar-dasar"  # services/order/config.example.yaml: 154600
AMOUNT = "154600.00"
CUST = {"name": "Siti Rahma", "email": "siti@example.co.id", "phone": "081234567890"}


def body(oid, status, code, **extra):
    """A signed body (extra: unsigned fields; None removes one)."""
    b = notif_dict(oid, status=status, code=code, amount=AMOUNT)
    for k, v in extra.items():
        if v is None:
            b.pop(k, None)
        else:
            b[k] = v
    b["signature_key"] = signature(oid, code, AMOUNT)
    return json.dumps(b).encode()


def create(st, oid):
    r = st.api("POST", "/v1/orders", {"course_id": COURSE, "order_id": oid, "customer": CUST})
    check(r.status == 201, f"order {oid} created ({r.status})")


def truth(st, oid, action, **opts):
    """What happened at Midtrans, its own notification dropped."""
    r = st.fake("POST", f"/_fake/orders/{oid}/{action}", dict(opts, notify="drop"))
    if r.status != 200:
        raise AssertionError(f"fake {action} {oid}: {r}")
    return st.fake("GET", f"/_fake/orders/{oid}").body


def notify(st, data, what):
    r = st.notify(data, JSON)
    check(r.status == 200, f"{what}: accepted ({r.status} {r.raw[:120]!r})")


def status(st, oid):
    return st.sql("SELECT status, awaiting_status FROM orders.orders WHERE order_id = %s",
                  (oid,))[0]


def entitlements(st, oid):
    return st.sql("SELECT count(*) FROM orders.entitlements WHERE order_id = %s", (oid,))[0][0]


def receipts(st, oid):
    return st.sql("SELECT count(*) FROM notify.job WHERE order_id = %s AND kind = 'receipt'",
                  (oid,))[0][0]


def applied(st):
    """Waits until kasir-order applied everything kasir-ingest stored."""
    head = st.sql("SELECT " + kasirtest.stream_head_sql("ingest", "ingest"))[0][0]
    st.wait_until(lambda: (st.sql("SELECT coalesce(max(seq), 0) FROM orders.stream_cursor"
                                  " WHERE stream = 'ingest'")[0][0] >= head),
                  timeout=30, what="kasir-order applied the ingest stream")


def paid(st, oid, what):
    st.wait_until(lambda: status(st, oid) == ("PAID", None), timeout=40, what=what)
    check(True, what)


def case_stall(st):
    create(st, "TX-5")
    truth(st, "TX-5", "pending", payment_type="bank_transfer")
    notify(st, body("TX-5", "pending", "201", fraud_status=None, payment_type="x" * 65),
           "TX-5 pending body with a 65-character payment_type")
    applied(st)
    create(st, "TX-5B")
    r = st.fake("POST", "/_fake/orders/TX-5B/pay", {"payment_type": "bank_transfer"})
    check(r.status == 200, "TX-5B paid at Midtrans (its notification delivered)")
    paid(st, "TX-5B", "an honest payment after the 65-character payment_type reaches PAID")
    head = st.sql("SELECT " + kasirtest.stream_head_sql("orders", "orders"))[0][0]
    st.wait_until(lambda: st.sql("SELECT seq FROM recon.stream_cursor WHERE stream = 'orders'")[0][0]
                  >= head, timeout=20, what="the reconciler's orders cursor at the head")
    check(True, "the reconciler's orders-stream consumer is at the head")
    check(st.sql("SELECT count(*) FROM recon.stream_poison")[0][0] == 0,
          "no message set aside: the payment type is left out, the evidence applied")


def case_borrowed(st):
    create(st, "TX-V1")
    v = truth(st, "TX-V1", "pay", payment_type="bank_transfer")
    create(st, "TX-A1")
    truth(st, "TX-A1", "pending", payment_type="bank_transfer")
    notify(st, body("TX-A1", "pending", "201", fraud_status=None, payment_type="dana",
                    transaction_id=v["transaction_id"]),
           "TX-A1's pending body naming TX-V1's settled transaction, payment_type dana")
    applied(st)
    st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.status_check WHERE order_id = 'TX-A1'"
                                 " AND by_transaction_id")[0][0] >= 1,
                  timeout=30, what="the reconciler asked about TX-A1 by transaction id")
    rows = st.sql("SELECT verdict, transaction_status FROM recon.status_check"
                  " WHERE order_id = 'TX-A1' AND by_transaction_id")
    check(all(r[0] == "unexpected" for r in rows),
          f"the answer about TX-V1's transaction is not a status of TX-A1 ({rows})")
    time.sleep(2)  # what a wrong answer would have done, kasir-order does now
    check(status(st, "TX-A1")[0] == "PENDING", "TX-A1 stays PENDING")
    check(entitlements(st, "TX-A1") == 0, "TX-A1 has no course access")
    check(receipts(st, "TX-A1") == 0, "TX-A1 has no receipt")
    check("names order TX-V1, not TX-A1" in st.log_text("reconciler"),
          "the reconciler logs the answer naming another order")


def case_capture_deny(st):
    create(st, "TX-D2")
    f = truth(st, "TX-D2", "deny", payment_type="credit_card")
    notify(st, body("TX-D2", "capture", "202", fraud_status="deny", payment_type="credit_card",
                    transaction_id=f["transaction_id"]),
           "TX-D2's deny rewritten to capture + fraud deny")
    applied(st)
    st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.status_check"
                                 " WHERE order_id = 'TX-D2' AND confirm")[0][0] >= 1
                  and status(st, "TX-D2")[1] is None,
                  timeout=30, what="the Status API answered TX-D2's confirmation")
    check(status(st, "TX-D2") == ("PENDING", None),
          "Midtrans's deny leaves TX-D2 PENDING (the customer may pay again)")
    r = st.fake("POST", "/_fake/orders/TX-D2/pay", {"payment_type": "bank_transfer"})
    check(r.status == 200, "TX-D2 paid at Midtrans on the retry")
    paid(st, "TX-D2", "the retry makes TX-D2 PAID")
    check(entitlements(st, "TX-D2") == 1, "TX-D2 has course access")


def case_junk_transaction(st):
    """A claim naming a junk transaction id: asked by it, Midtrans knows
    no such transaction (404), which says nothing about this order: the
    paid order must not expire on it.  The watch keeps the id it learned
    first, so the order's own payment is still found."""
    create(st, "TX-J1")
    truth(st, "TX-J1", "pending", payment_type="bank_transfer", transaction_id="tx-TX-J1")
    notify(st, body("TX-J1", "pending", "201", fraud_status=None, transaction_id="tx-TX-J1"),
           "TX-J1's genuine pending body")
    applied(st)
    truth(st, "TX-J1", "pay", payment_type="bank_transfer")  # its notification lost
    notify(st, body("TX-J1", "expire", "202", transaction_id="junk-0001", payment_type="dana"),
           "TX-J1's 202 body rewritten: expire, a junk transaction id, dana")
    applied(st)
    st.wait_until(lambda: status(st, "TX-J1")[1] is None, timeout=30,
                  what="the confirmation of TX-J1 answered")
    check(status(st, "TX-J1")[0] == "PAID",
          f"TX-J1 PAID on its own transaction's answer, never EXPIRED ({status(st, 'TX-J1')})")


def case_partial_proven(st):
    """The order learned an earlier attempt's id; the payment (another
    transaction) was partly refunded before kasir asked: the answer proves
    the payment and its partial refund, both about the paying
    transaction, which the order names from then on."""
    create(st, "TX-P1")
    notify(st, body("TX-P1", "pending", "201", fraud_status=None,
                    transaction_id="tx-first-attempt"), "TX-P1's first attempt pending")
    applied(st)
    truth(st, "TX-P1", "pay", payment_type="bank_transfer", transaction_id="tx-TX-P1")
    truth(st, "TX-P1", "refund", refund_amount=50000)
    notify(st, body("TX-P1", "settlement", "200", transaction_id="tx-TX-P1"),
           "TX-P1's settlement notification")
    applied(st)
    st.wait_until(lambda: status(st, "TX-P1")[1] is None and status(st, "TX-P1")[0] != "PENDING",
                  timeout=30, what="TX-P1 decided")
    row = st.sql("SELECT status, partial_refund, flagged, transaction_id FROM orders.orders"
                 " WHERE order_id = 'TX-P1'")[0]
    check(row == ("PAID", True, False, "tx-TX-P1"),
          f"TX-P1 PAID, partly refunded, not flagged, naming the payment ({row})")


def case_terminal(st):
    create(st, "TX-E4")
    truth(st, "TX-E4", "pending", payment_type="bank_transfer")
    notify(st, body("TX-E4", "pending", "201", fraud_status=None,
                    payment_type="bank_transfer\u001b[2K\r\u001b[1A  status  PAID\n",
                    transaction_id="tx\u001b]0;pwned\u0007\u009b"),
           "TX-E4's pending body with escape sequences in payment_type and transaction_id")
    applied(st)
    cp = st.run_ctl("order", "show", "TX-E4")
    out = cp.stdout if isinstance(cp.stdout, str) else cp.stdout.decode()
    check(cp.returncode == 0 and "TX-E4" in out, "kasirctl order show TX-E4 answers")
    bad = [c for c in out if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f]
    check(not bad, f"no control character reaches the terminal ({bad[:5]})")
    check("bank_transfer?[2K?" in out, "the escape shows as '?'")
    cp = st.run_ctl("--json", "order", "show", "TX-E4")
    out = cp.stdout if isinstance(cp.stdout, str) else cp.stdout.decode()
    bad = [c for c in out if ord(c) < 0x20 and c not in "\n\t" or 0x7f <= ord(c) <= 0x9f]
    check("\\u001b[2K" in out and not bad,
          f"--json keeps the value, escaped by JSON, and no C1 character ({bad[:5]})")
    # the evidence archive is not printed: it keeps what the daemons
    # hold byte for byte, escapes included (kasirctl's raw_replies)
    path = os.path.join(st.dir, "TX-E4-evidence.tar")
    cp = st.run_ctl("evidence", "TX-E4", "--output", path)
    check(cp.returncode == 0, f"kasirctl evidence TX-E4 ({cp.stderr.strip()[:200]})")
    with tarfile.open(path) as t:
        data = b"".join(t.extractfile(m).read() for m in t.getmembers() if m.isfile())
    check(b"bank_transfer\\u001b[2K\\r\\u001b[1A" in data
          and b"bank_transfer?[2K" not in data,
          "the evidence archive keeps the payment type as the daemons hold it")


def case_foreign_payment(st):
    oid = "TX-F6"
    r = st.fake("POST", f"/_fake/orders/{oid}/pay",
                {"amount": int(float(AMOUNT)), "payment_type": "bank_transfer",
                 "notify": "drop"})
    check(r.status == 200, "someone else's payment settled at Midtrans under TX-F6")
    # whole seconds in transaction_time, 2 s of clock slack: the order is
    # created more than 3 s later (a sleep is a lower bound)
    time.sleep(3.5)
    r = st.api("POST", "/v1/orders", {"course_id": COURSE, "order_id": oid, "customer": CUST})
    check(r.status == 502, f"the kasir order TX-F6: Snap says the id is used ({r.status})")
    st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.status_check WHERE order_id = %s",
                                 (oid,))[0][0] >= 1, timeout=30, what="TX-F6 checked")
    time.sleep(1)
    v = st.sql("SELECT verdict, transaction_status FROM recon.status_check"
               " WHERE order_id = %s ORDER BY id", (oid,))
    check(v and all(x == ("unexpected", "settlement") for x in v),
          f"the settlement answer is kept, not evidence ({v})")
    check(status(st, oid)[0] == "PENDING" and entitlements(st, oid) == 0
          and receipts(st, oid) == 0, f"TX-F6 stays PENDING: no access, no receipt ({status(st, oid)})")
    check("before the order was created" in st.log_text("reconciler"),
          "the reconciler says why")


def case_foreign_snap(st):
    oid = "TX-F7"
    req = urllib.request.Request(
        st.url("fake_midtrans") + "/snap/v1/transactions",
        data=json.dumps({"transaction_details": {"order_id": oid,
                                                 "gross_amount": int(float(AMOUNT))}}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode((DOCS_KEY + ":").encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        check(r.status == 201, "another system's Snap transaction under TX-F7")
    r = st.api("POST", "/v1/orders", {"course_id": COURSE, "order_id": oid, "customer": CUST})
    check(r.status == 502, f"the kasir order TX-F7: Snap says the id is used ({r.status})")
    time.sleep(3.5)  # the payment comes well after the order: not case 6's rule
    r = st.fake("POST", f"/_fake/orders/{oid}/pay",
                {"payment_type": "bank_transfer", "notify": "drop"})
    check(r.status == 200, "the other system's customer pays")
    # the first check (2 s) found nothing yet; ask again now, as the SOP
    # tells an operator to for a pending order
    cp = st.run_ctl("reconcile", oid, "--reason", "pending order, customer says paid")
    check(cp.returncode == 0, f"kasirctl reconcile TX-F7 ({cp.stderr.strip()[:160]})")
    st.wait_until(lambda: st.sql("SELECT flagged FROM orders.orders WHERE order_id = %s",
                                 (oid,))[0][0], timeout=40, what="TX-F7 flagged")
    check(status(st, oid)[0] == "PENDING" and entitlements(st, oid) == 0
          and receipts(st, oid) == 0, f"TX-F7 stays PENDING: no access, no receipt ({status(st, oid)})")
    why = st.sql("SELECT flag_reason FROM orders.orders WHERE order_id = %s", (oid,))[0][0]
    check("before kasir's Snap call (406)" in (why or ""), f"the flag says why ({why})")


def main():
    overrides = {"ORDER_SIGNATURE_ONLY": "false", "RECON_FIRST_CHECK": "2s",
                 "INGEST_RATE": "10000", "INGEST_BURST": "10000"}
    with kasirtest.Stack.for_test(server_key=DOCS_KEY, overrides=overrides) as st:
        st.start_all()
        case_stall(st)
        case_borrowed(st)
        case_capture_deny(st)
        case_junk_transaction(st)
        case_partial_proven(st)
        case_terminal(st)
        case_foreign_payment(st)
        case_foreign_snap(st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
