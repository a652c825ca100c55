"""Rewritten but correctly signed notifications against the real
kasir-ingest and kasir-order (issue 13, item 1).

Midtrans signs only order_id + status_code + gross_amount.  Each case takes
a genuine body (signed, accepted, applied) and rewrites an unsigned field
so that the status no longer goes with the signed status_code: a pending
body (201) turned into a settlement, a capture/challenge (201) turned into
an accepted capture, a settlement (200) turned into a reversal or a
pending, a deny (202) turned into a refund.  Each forged body must get
400 inconsistent_status with a message saying which code Midtrans sends,
be kept in ingest.quarantine with that reason and its exact bytes, never
become a payment_event row or a message on the ingest stream, and leave
the order exactly where the genuine bodies put it.  A genuine deny with
fraud_status accept (202) passes: fraud_status matters only for capture.
The fake Midtrans's own bodies (challenge, then pay) pass the same door.

The stack runs in the default mode (kasir-reconciler too): what each
genuine body tells happens at the fake Midtrans first (notification
dropped), so the Status API confirms the genuine ones and the settlement
makes HS-PAID PAID on that answer.
"""

import json
import sys

import kasirtest
from hostile_util import DOCS_KEY, JSON, check, error_code, notif_dict, signature

COURSE = "agentbar-dasar"  # services/order/config.example.yaml: 154600
AMOUNT = "154600.00"
CUST = {"name": "Siti Rahma", "email": "siti@example.co.id", "phone": "081234567890"}


def genuine(oid, status, code, fraud="accept", **extra):
    """A body as Midtrans sends it (fraud None: no fraud_status field)."""
    b = notif_dict(oid, status=status, code=code, amount=AMOUNT)
    if fraud is None:
        del b["fraud_status"]
    else:
        b["fraud_status"] = fraud
    b.update(extra)
    b["signature_key"] = signature(oid, code, AMOUNT)
    return b


def forged(body, **changes):
    """body with unsigned fields rewritten (None removes one); the
    signature is the genuine one and still verifies."""
    b = dict(body)
    for k, v in changes.items():
        if v is None:
            b.pop(k, None)
        else:
            b[k] = v
    return json.dumps(b).encode()


class Door:
    def __init__(self, st):
        self.st = st
        self.forged = 0

    def head(self):
        return self.st.sql("SELECT " + kasirtest.stream_head_sql("ingest", "ingest"))[0][0]

    def events(self, oid):
        return self.st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = %s",
                           (oid,))[0][0]

    def evidence(self, oid):
        """Notifications kasir-order recorded for oid."""
        return self.st.sql("SELECT count(*) FROM orders.evidence WHERE order_id = %s"
                           " AND source = 'ingest'", (oid,))[0][0]

    def awaiting(self, oid):
        return self.st.sql("SELECT awaiting_status FROM orders.orders WHERE order_id = %s",
                           (oid,))[0][0]

    def truth(self, oid, action, **opts):
        """action happens at the fake Midtrans (its notification dropped)."""
        r = self.st.fake("POST", f"/_fake/orders/{oid}/{action}", dict(opts, notify="drop"))
        check(r.status == 200, f"{oid}: {action} at the fake Midtrans ({r.status})")

    def status(self, oid):
        return self.st.sql("SELECT status FROM orders.orders WHERE order_id = %s", (oid,))[0][0]

    def cursor(self):
        r = self.st.sql("SELECT seq FROM orders.stream_cursor WHERE stream = 'ingest'")
        return r[0][0] if r else 0

    def deliver(self, body):
        """A genuine body: 200, then applied by kasir-order and, when it
        was held, confirmed by the Status API."""
        oid = body["order_id"]
        r = self.st.notify(json.dumps(body).encode(), JSON)
        check(r.status == 200, f"{oid} genuine {body['transaction_status']}"
                               f"/{body.get('fraud_status')} {body['status_code']}: 200 ({r})")
        head = self.head()
        self.st.wait_until(lambda: self.cursor() >= head, 30, f"kasir-order applied seq {head}")
        self.st.wait_until(lambda: self.awaiting(oid) is None, 30, f"{oid} confirmed")

    def refuse(self, what, oid, raw, expect_code):
        head, events, evidence, status = (self.head(), self.events(oid),
                                          self.evidence(oid), self.status(oid))
        r = self.st.notify(raw, JSON)
        check(r.status == 400, f"{what}: 400 (got {r.status}: {r.raw[:200]!r})")
        check(error_code(r.raw) == "inconsistent_status", f"{what}: error inconsistent_status")
        msg = json.loads(r.raw)["error"]["message"]
        check(f"Midtrans sends {expect_code}" in msg, f"{what}: the answer says why ({msg})")
        self.forged += 1
        n = self.forged
        rows = self.st.wait_until(
            lambda: self.st.sql("SELECT raw, reason, order_id FROM ingest.quarantine "
                                "WHERE reason = 'inconsistent_status' ORDER BY id")
            if self.st.sql("SELECT count(*) FROM ingest.quarantine "
                           "WHERE reason = 'inconsistent_status'")[0][0] >= n else None,
            10, f"{n} inconsistent_status quarantine rows")
        check(len(rows) == n and bytes(rows[-1][0]) == raw and rows[-1][2] == oid,
              f"{what}: quarantined with reason inconsistent_status, order_id and its bytes")
        check(self.head() == head, f"{what}: nothing appended to the ingest stream")
        check(self.events(oid) == events, f"{what}: no payment_event row")
        check(self.evidence(oid) == evidence and self.status(oid) == status,
              f"{what}: kasir-order never saw it, order still {status}")


def create(st, oid):
    r = st.api("POST", "/v1/orders", {"course_id": COURSE, "order_id": oid, "customer": CUST})
    if r.status != 201:
        raise AssertionError(f"create order {oid}: {r}")


def entitlements(st, oid):
    return st.sql("SELECT count(*) FROM orders.entitlements WHERE order_id = %s"
                  " AND revoked_at IS NULL", (oid,))[0][0]


def paid_messages(st, oid):
    kasirtest.wait_sequenced(st.sql, "orders")
    return st.sql("SELECT count(*) FROM orders.stream_log_messages WHERE type = 'order.paid'"
                  " AND (body::jsonb)->'data'->>'order_id' = %s", (oid,))[0][0]


def main():
    # The door is what is tested: the genuine bodies are made here (not by
    # the fake), after the same story happened at the fake, in the default
    # mode (the confirmation itself is tested by
    # tests/reconciler/test_confirm.py)
    with kasirtest.Stack.for_test(server_key=DOCS_KEY,
                                  overrides={"INGEST_RATE": "10000",
                                             "INGEST_BURST": "10000",
                                             "ORDER_SIGNATURE_ONLY": "false"}) as st:
        names = ("fake-midtrans", "ingest", "order", "reconciler")
        for n in names:
            st.start(n, wait=False)
        for n in names:
            st.wait_ready(n)
        d = Door(st)
        for oid in ("HS-PEND", "HS-CHAL", "HS-PAID", "HS-DENY", "HS-FAKE"):
            create(st, oid)

        # a pending bank transfer (201): rewritten into a payment
        d.truth("HS-PEND", "pending")
        pend = genuine("HS-PEND", "pending", "201", fraud=None)
        d.deliver(pend)
        d.refuse("pending 201 rewritten to settlement", "HS-PEND",
                 forged(pend, transaction_status="settlement", settlement_time="2026-11-23 16:01:00"),
                 "200")
        d.refuse("pending 201 rewritten to capture/accept", "HS-PEND",
                 forged(pend, transaction_status="capture", fraud_status="accept",
                        payment_type="credit_card"), "200")

        # a card payment held for review (capture/challenge, 201)
        d.truth("HS-CHAL", "challenge")
        chal = genuine("HS-CHAL", "capture", "201", fraud="challenge", payment_type="credit_card")
        d.deliver(chal)
        d.refuse("capture/challenge 201 with fraud_status rewritten to accept", "HS-CHAL",
                 forged(chal, fraud_status="accept"), "200")
        d.refuse("capture/challenge 201 with fraud_status removed", "HS-CHAL",
                 forged(chal, fraud_status=None), "200")

        # a paid order (settlement, 200): rewritten into a reversal, a pending
        d.truth("HS-PAID", "pay")
        paid = genuine("HS-PAID", "settlement", "200", settlement_time="2026-11-23 16:00:05")
        d.deliver(paid)
        check(d.status("HS-PAID") == "PAID" and entitlements(st, "HS-PAID") == 1,
              "genuine settlement: PAID with access")
        tr = st.sql("SELECT to_status, evidence_source FROM orders.transitions"
                    " WHERE order_id = 'HS-PAID'")
        check(tr == [("PAID", "recon")], f"HS-PAID: PAID on the Status API's answer ({tr})")
        d.refuse("settlement 200 rewritten to deny (a reversal)", "HS-PAID",
                 forged(paid, transaction_status="deny"), "202")
        d.refuse("settlement 200 rewritten to cancel", "HS-PAID",
                 forged(paid, transaction_status="cancel"), "202")
        d.refuse("settlement 200 rewritten to pending", "HS-PAID",
                 forged(paid, transaction_status="pending"), "201")

        # a card deny carries fraud_status accept with 202: passes; rewritten
        # into a refund it does not
        d.truth("HS-DENY", "deny", payment_type="credit_card")
        deny = genuine("HS-DENY", "deny", "202", fraud="accept", payment_type="credit_card")
        d.deliver(deny)
        d.refuse("deny 202 rewritten to refund", "HS-DENY",
                 forged(deny, transaction_status="refund"), "200")

        # where the orders are: only the genuine bodies moved them
        check(d.status("HS-PEND") == "PENDING" and entitlements(st, "HS-PEND") == 0
              and paid_messages(st, "HS-PEND") == 0, "HS-PEND: PENDING, no access, no order.paid")
        check(d.status("HS-CHAL") == "PENDING" and entitlements(st, "HS-CHAL") == 0
              and paid_messages(st, "HS-CHAL") == 0, "HS-CHAL: PENDING, no access, no order.paid")
        check(d.status("HS-PAID") == "PAID" and entitlements(st, "HS-PAID") == 1,
              "HS-PAID: still PAID with access")
        check(d.status("HS-DENY") == "PENDING", "HS-DENY: deny on a pending order, PENDING")
        for oid, n in (("HS-PEND", 1), ("HS-CHAL", 1), ("HS-PAID", 1), ("HS-DENY", 1)):
            check(d.evidence(oid) == n and d.events(oid) == n,
                  f"{oid}: {n} payment_event row and {n} evidence row (the genuine ones)")
        check(st.metric("ingest", "kasir_ingest_status_mismatch_total") == d.forged,
              f"kasir_ingest_status_mismatch_total = {d.forged}")
        check(st.metric("ingest", "kasir_ingest_requests_total", outcome="400") == d.forged,
              f"{d.forged} answers counted as 400")

        # the fake Midtrans sends consistent bodies: challenge, then pay
        for action in ("challenge", "pay"):
            r = st.fake("POST", f"/_fake/orders/HS-FAKE/{action}", {})
            check(r.status == 200, f"fake {action}: 200 ({r})")
        st.wait_until(lambda: d.status("HS-FAKE") == "PAID", 30, "HS-FAKE PAID")
        check(entitlements(st, "HS-FAKE") == 1, "the fake's capture/challenge then "
                                                "capture/accept: PAID with access")
        check(st.metric("ingest", "kasir_ingest_status_mismatch_total") == d.forged,
              "nothing the fake sent was refused")
    print("PASS", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
