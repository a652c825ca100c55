"""paystack - helpers for the end-to-end payment-path tests (issue 3).

The real kasir-ingest, kasir-order and kasir-reconciler, the fake Midtrans,
one throwaway PostgreSQL, all through tests/lib/kasirtest.py.
Notifications are POSTed to kasir-ingest over HTTP (signed like Midtrans
signs them) or sent by the fake Midtrans; nothing is injected behind the
daemons' backs.

The stack runs in the default mode (issue 13): a notification that would
move an order is only a hint, held until the reconciler asked the fake's
Status API, and the answer is the evidence.  So a test that POSTs a
settlement first makes the payment at the fake (truth(): the fake's state
changes, its own notification is dropped), and expects PAID only then; a
settlement for an order never paid at the fake is contradicted and
flagged.  for_payment(signature_only=True) is the merchant's opt-out,
where a signed notification decides alone: only tests whose subject is
that mode use it.

PayStack is a kasirtest.Stack whose rendered kasir-order config carries a
test catalog: one course per amount the tests need (course_for(amount)),
so an order created through the API has exactly the sample's
gross_amount.  The Midtrans server key is the docs' example key the
fixtures (tests/data/midtrans) are signed with.
"""

import hashlib
import json
import os
import re
import secrets
import sys

import kasirtest
import midtrans_fixtures

# The docs' example server key: the fixtures (tests/data/midtrans) are
# signed with it, so it is the stack's configured key.
DOCS_KEY = midtrans_fixtures.TEST_KEY
# Any other key: what a forged (or docs-original, not re-signed) body has.
OTHER_KEY = "SB-Mid-server-" + secrets.token_urlsafe(18)
JSON = {"Content-Type": "application/json"}

# amount (rupiah) -> access; every amount a sample or a test uses.
AMOUNTS = {10000: "lifetime", 100000: "lifetime", 145000: "lifetime",
           150000: "lifetime", 154600: "365d", 162500: "30d",
           244108: "lifetime", 275000: "180d"}


def course_for(amount):
    """The test course priced `amount` ("154600.00", "154600" or 154600)."""
    n = int(float(amount))
    if n not in AMOUNTS:
        raise AssertionError(f"no test course priced {n}")
    return f"kursus-{n}"


def catalog_yaml():
    out = "courses:\n"
    for n, access in sorted(AMOUNTS.items()):
        out += (f"  - id: {course_for(n)}\n    title: \"Kursus Uji {n}\"\n"
                f"    price: {n}\n    access: {access}\n")
    return out


def signature(order_id, status_code, gross_amount, key=DOCS_KEY):
    """hex(SHA512(order_id + status_code + gross_amount + server_key))."""
    return hashlib.sha512((order_id + status_code + gross_amount + key)
                          .encode("utf-8")).hexdigest()


def signed(body, key=DOCS_KEY, sign_amount=None):
    """A copy of body with signature_key computed over its own fields (or
    over sign_amount instead of its gross_amount) with key."""
    b = dict(body)
    b["signature_key"] = signature(b["order_id"], b["status_code"],
                                   sign_amount if sign_amount is not None
                                   else b["gross_amount"], key)
    return b


def status_code_for(status, fraud):
    """The status_code Midtrans sends with a transaction_status (fraud_status
    matters only for capture): kasir-ingest refuses any other
    (docs/state-machine.md, "At the door")."""
    if status == "capture":
        return {"challenge": "201", "deny": "202"}.get(fraud, "200")
    if status == "pending":
        return "201"
    if status in ("deny", "cancel", "expire", "failure"):
        return "202"
    return "200"  # settlement, refunds, chargebacks, authorize


def notification(order_id, status="settlement", amount="154600.00", code=None,
                 key=DOCS_KEY, **extra):
    """A signed Midtrans-shaped notification (dict); code defaults to the one
    Midtrans sends with status (and fraud_status)."""
    b = {"transaction_time": "2026-11-23 16:00:00", "transaction_status": status,
         "transaction_id": "tx-" + order_id, "status_message": "midtrans payment notification",
         "status_code": code, "order_id": order_id, "gross_amount": amount,
         "payment_type": "bank_transfer", "currency": "IDR", "fraud_status": "accept",
         "merchant_id": "G141532850"}
    b.update(extra)
    if code is None:
        b["status_code"] = status_code_for(status, b.get("fraud_status"))
    return signed(b, key)


def samples():
    """[(file name, raw bytes, parsed dict)] of the Midtrans notification
    fixtures (tests/data/midtrans/notifications), in name order."""
    return [(n, raw, json.loads(raw)) for n, raw in midtrans_fixtures.notifications()]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


class PayStack(kasirtest.Stack):
    """kasirtest.Stack + the test catalog in kasir-order's config."""

    def render(self, svc):
        path = super().render(svc)
        if svc == "order":
            with open(path) as f:
                text = f.read()
            m = re.search(r"^courses:\s*$", text, re.M)
            if m is None:
                raise kasirtest.HarnessError(f"{path}: no top-level courses: section")
            rest = text[m.end():]
            # the catalog runs to the next top-level key (or the end)
            nxt = re.search(r"^[A-Za-z_]", rest, re.M)
            tail = rest[nxt.start():] if nxt else ""
            with open(path + ".tmp", "w") as f:
                f.write(text[:m.start()] + catalog_yaml() + tail)
            os.chmod(path + ".tmp", 0o640)
            os.replace(path + ".tmp", path)
        return path

    @classmethod
    def for_payment(cls, overrides=None, signature_only=False, **kw):
        """The payment path: in the default mode (the Status API's answer is
        the evidence of every decisive transition) unless signature_only.
        The reconciler asks the Status API only when kasir-order asks for a
        confirmation (its scheduled first check stays at minutes), with a
        rate and concurrency that do not throttle the bulk tests and short
        retries after a failed check."""
        ov = {"INGEST_RATE": "100000", "INGEST_BURST": "100000",
              "ORDER_SIGNATURE_ONLY": "true" if signature_only else "false",
              "RECON_RPS": "1000", "RECON_CONCURRENCY": "8", "RECON_BATCH": "64",
              "RECON_POLL": "200ms", "RECON_CONNECT_TIMEOUT": "1s",
              "RECON_TIMEOUT": "3s", "RECON_RETRIES": "1",
              "RECON_RETRY_BACKOFF": "200ms", "RECON_RETRY": "1s",
              "RECON_RETRY_MAX": "2s"}
        ov.update(overrides or {})
        return cls.for_test(overrides=ov, server_key=DOCS_KEY, **kw)

    def start_payment_path(self, reconciler=True):
        """fake Midtrans, kasir-ingest, kasir-order and (unless a test holds
        the confirmations back on purpose) kasir-reconciler."""
        names = ("fake-midtrans", "ingest", "order") + (("reconciler",) if reconciler else ())
        for n in names:
            self.start(n, wait=False)
        for n in names:
            self.wait_ready(n)

    # -- Midtrans's truth -----------------------------------------------------
    def truth(self, order_id, action, **opts):
        """Makes `action` (pay, pending, challenge, deny, cancel, expire,
        refund, reverse, chargeback) happen at the fake Midtrans, so its
        Status API says so; the fake's own notification is dropped unless
        opts say otherwise (notify=...).  The transaction, when the action
        makes one, gets the id notification() writes ("tx-" + order_id),
        as Midtrans's notifications and answers of one payment share
        theirs.  Returns the fake's truth."""
        body = {"notify": "drop", "transaction_id": "tx-" + order_id}
        body.update(opts)
        r = self.fake("POST", f"/_fake/orders/{order_id}/{action}", body)
        if r.status != 200:
            raise AssertionError(f"fake {action} {order_id}: {r}")
        return r.body

    def fake_done(self, order_ids):
        """The fake has nothing more to send about order_ids: no follow-up
        due (a card's settlement, a refund's bank confirmation) and every
        notification delivered, dropped or given up."""
        for oid in order_ids:
            t = self.fake("GET", f"/_fake/orders/{oid}").body
            if t.get("followup") or not all(
                    n["delivered"] or n["dropped"] or n["gave_up"]
                    for n in t.get("notifications", [])):
                return False
        return True

    def awaiting(self, order_id=None):
        """Orders (or: is order_id) awaiting a Status API confirmation."""
        if order_id is None:
            return self.sql("SELECT count(*) FROM orders.orders"
                            " WHERE awaiting_status IS NOT NULL")[0][0]
        return self.sql("SELECT awaiting_status FROM orders.orders WHERE order_id = %s",
                        (order_id,))[0][0]

    def contradicted(self, order_id):
        return self.sql("SELECT contradicted_at IS NOT NULL FROM orders.orders"
                        " WHERE order_id = %s", (order_id,))[0][0]

    def sources(self, order_id):
        """[(to_status, evidence_source)] of order_id's transitions."""
        return self.sql("SELECT to_status, evidence_source FROM orders.transitions"
                        " WHERE order_id = %s ORDER BY id", (order_id,))

    # -- orders ---------------------------------------------------------------
    def create_order(self, order_id, amount, email="budi@example.com"):
        body = {"course_id": course_for(amount), "order_id": order_id,
                "customer": {"name": "Budi Santoso", "email": email,
                             "phone": "081234567890"}}
        r = self.api("POST", "/v1/orders", body)
        if r.status != 201 or r.body.get("order_id") != order_id:
            raise AssertionError(f"create order {order_id}: {r}")
        return r.body

    def status(self, order_id):
        r = self.sql("SELECT status FROM orders.orders WHERE order_id = %s", (order_id,))
        return r[0][0] if r else None

    def entitlements(self, order_id, active_only=True):
        q = "SELECT count(*) FROM orders.entitlements WHERE order_id = %s"
        if active_only:
            q += " AND revoked_at IS NULL"
        return self.sql(q, (order_id,))[0][0]

    def messages(self, order_id, mtype):
        """Messages of type mtype about order_id on the orders stream."""
        kasirtest.wait_sequenced(self.sql, "orders")
        return self.sql("SELECT count(*) FROM orders.stream_log_messages WHERE type = %s"
                        " AND (body::jsonb)->'data'->>'order_id' = %s",
                        (mtype, order_id))[0][0]

    def paid_transitions(self, order_id):
        return self.sql("SELECT count(*) FROM orders.transitions WHERE order_id = %s"
                        " AND to_status = 'PAID'", (order_id,))[0][0]

    def access(self, email, course):
        r = self.api("GET", f"/v1/access?customer_email={email}&course_id={course}")
        if r.status != 200:
            raise AssertionError(f"GET /v1/access: {r}")
        return r.body

    # -- notifications --------------------------------------------------------
    def post(self, body, timeout=10):
        """POSTs a notification (dict or raw bytes) to kasir-ingest."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.notify(raw, JSON, timeout=timeout)

    def ingest_head(self):
        return self.sql("SELECT " + kasirtest.stream_head_sql("ingest", "ingest"))[0][0]

    def order_cursor(self):
        r = self.sql("SELECT seq FROM orders.stream_cursor WHERE stream = 'ingest'")
        return r[0][0] if r else 0

    def wait_applied(self, timeout=30, confirmed=None):
        """Until kasir-order has applied everything kasir-ingest stored and
        (confirmed; by default when kasir-reconciler runs) every
        confirmation it asked for was answered: no order awaits the Status
        API.  The hold is set in the transaction that applies the
        notification, and a second round in the one that applies the
        answer, so this is a settled state, not a pause."""
        head = self.ingest_head()
        self.wait_until(lambda: self.order_cursor() >= head, timeout,
                        f"kasir-order applied ingest seq {head}")
        if confirmed is None:
            confirmed = self.running("reconciler")
        if confirmed:
            self.wait_until(lambda: self.awaiting() == 0, timeout,
                            "every confirmation answered by the Status API")

    def deliver(self, body, want=200):
        """POST, expect `want`, and (for 200) wait until it is applied."""
        r = self.post(body)
        if r.status != want:
            raise AssertionError(f"POST {body.get('order_id') if isinstance(body, dict) else ''}"
                                 f": want {want}, got {r}")
        if want == 200:
            self.wait_applied()
        return r


def main_wrapper(fn):
    """Runs fn() and turns an AssertionError into a clear FAIL line."""
    try:
        fn()
    except AssertionError as e:
        print(f"FAIL: {e}", flush=True)
        raise
    print("PASS", flush=True)
    sys.exit(0)
