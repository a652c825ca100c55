#!/usr/bin/python3
"""A Snap order whose customer never picks a payment method: the Status API
answers 404 "Transaction doesn't exist." until the order expires.  Those
answers are stored but are never evidence of anything before expiry: the
order stays PENDING (never FAILED, never EXPIRED early).  Right after
expiry + grace the reconciler checks again and that answer (407, or 404
past expiry) is what makes kasir-order mark the order EXPIRED, naming the
stored check.

A second order whose customer picked a method but did not pay: its
"pending" answer is sent to kasir-order once, and not repeated.

A third order whose card payment was denied (a no-op: the customer may pay
again) and who never paid: the Status API answers "deny" before and after
expiry (the fake does not expire its transactions here, so its Status
API keeps the last attempt's "deny").  The answer after expiry is news (kasir-order ends the order
FAILED on it) although it repeats the answers before: it once stayed
unsent, and the order PENDING for good."""
import time

import rstack
from rstack import log

EXPIRY_S = 60  # kasir-order's minimum order.expiry


def main():
    with rstack.stack({"ORDER_EXPIRY": "1m", "RECON_BACKOFF": "4s,8s",
                       "RECON_EXPIRY_GRACE": "2s",
                       "FAKE_MIDTRANS_NO_AUTO_EXPIRE": "1"}) as st:
        rstack.start(st)
        never = rstack.create_order(st, "never@example.com")
        chose = rstack.create_order(st, "chose@example.com")
        r = st.fake("POST", "/_fake/orders/%s/pending" % chose,
                    {"notify": "drop", "payment_type": "bank_transfer"})
        assert r.status == 200, r
        denied = rstack.create_order(st, "denied@example.com")
        r = st.fake("POST", "/_fake/orders/%s/deny" % denied,
                    {"payment_type": "credit_card"})
        assert r.status == 200, r
        expires = st.sql("SELECT extract(epoch FROM expires_at) FROM"
                         " orders.orders WHERE order_id = %s", (never,))[0][0]
        expires = float(expires)
        log("orders created; expiry in %.0fs" % (expires - time.time()))

        # before expiry: several 404 answers, none sent, order PENDING
        while time.time() < expires - 3:
            assert rstack.order_status(st, never) == "PENDING"
            time.sleep(1)
        ch = rstack.checks(st, never)
        assert len(ch) >= 3, ch
        for _, verdict, http, _, published, past, _ in ch:
            assert (verdict, http, published, past) == \
                ("not_found", 404, False, False), ch
        assert rstack.transitions(st, never) == []
        # the recorded evidence on kasir-order's side: nothing from recon
        assert st.sql("SELECT count(*) FROM orders.evidence WHERE order_id = %s",
                      (never,))[0][0] == 0

        # the order that chose a method: "pending" sent once
        chose_checks = rstack.checks(st, chose)
        assert len(chose_checks) >= 3, chose_checks
        assert all(c[1] == "status" and c[3] == "pending" for c in chose_checks)
        assert [c[4] for c in chose_checks].count(True) == 1, chose_checks
        assert rstack.order_status(st, chose) == "PENDING"
        # the denied card: its notification a no-op, still PENDING
        assert st.sql("SELECT source, result FROM orders.evidence WHERE"
                      " order_id = %s AND source = 'ingest'", (denied,)) == \
            [("ingest", "noop")]
        assert rstack.order_status(st, denied) == "PENDING"

        # after expiry: EXPIRED through a stored check made after expiry
        st.wait_until(lambda: rstack.order_status(st, never) == "EXPIRED",
                      timeout=30, what="EXPIRED after expiry")
        took = time.time() - expires
        log("EXPIRED %.1fs after expires_at" % took)
        assert took < 15, took
        tr = rstack.transitions(st, never)
        assert len(tr) == 1 and tr[0][:3] == ("PENDING", "EXPIRED", "recon"), tr
        row = st.sql("SELECT c.verdict, c.http_status, c.past_expiry, c.published,"
                     " c.requested_at >= o.expires_at, c.body"
                     " FROM recon.status_check c JOIN orders.orders o"
                     " ON o.order_id = c.order_id WHERE c.id = %s", (tr[0][3],))
        assert row, tr
        verdict, http, past, published, after_expiry, body = row[0]
        assert verdict in ("expired", "not_found"), row
        assert http in (404, 407) and past and published and after_expiry, row
        assert '"status_code"' in body
        assert rstack.entitlements(st, never) == 0
        st.wait_until(lambda: st.sql("SELECT final FROM recon.watch WHERE"
                                     " order_id = %s", (never,)) == [(True,)],
                      timeout=10, what="watch row final")
        # no order is left pending past expiry + grace without a check
        facts = rstack.admin(st, "doctor.facts")
        assert facts["ok"], facts
        assert facts["result"]["pending_past_expiry_unchecked"] == 0, facts
        # the denied card ends FAILED on the Status API's deny past expiry
        st.wait_until(lambda: rstack.order_status(st, denied) == "FAILED",
                      timeout=30, what="denied order FAILED after expiry")
        tr = rstack.transitions(st, denied)
        assert len(tr) == 1 and tr[0][:3] == ("PENDING", "FAILED", "recon"), tr
        assert st.sql("SELECT transaction_status, past_expiry FROM"
                      " recon.status_check WHERE id = %s", (tr[0][3],)) == \
            [("deny", True)]
        log("ok")


if __name__ == "__main__":
    main()
