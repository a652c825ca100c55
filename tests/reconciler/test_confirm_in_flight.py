#!/usr/bin/python3
"""A confirmation asked while a check of the same order is in flight is
asked right after that check (issue 13: "the order moves as soon as
Midtrans answers").

An operator's check of an order (reconcile.order) is in flight, its answer
held back 3 s by the fake's Status API and then a 500 (no retry), when
the customer pays and kasir-order holds the notification and asks for a
confirmation.  The operator's check was claimed before the request, so its
failure does not fail the confirmation; the request must be answered by
the next check, at once.  (An answer the in-flight check got would decide
by itself: since 2026-12-08 an operator's check is always sent to
kasir-order, and a settlement answer there makes the order PAID.)  The order's next scheduled check is 10 minutes away (the
production schedule): recording the operator's check used to set the watch
row's due time to it, over the "now" the request had set, and the order
then waited for that check, PENDING and "awaiting confirmation".
"""
import rstack
from rstack import log

SLOW_MS = 3000

# the production schedule, so that the next scheduled check, and the
# retry of a failed one, are far away; a request timeout above the
# held-back answer
OVERRIDES = {"RECON_FIRST_CHECK": "10m", "RECON_BACKOFF": "10m",
             "RECON_TIMEOUT": "10s", "RECON_LEASE": "5m", "RECON_RETRIES": "0",
             "RECON_RETRY": "10m", "RECON_RETRY_MAX": "10m"}


def watch(st, oid):
    """(confirmation asked, check in flight) of the order's watch row."""
    rows = st.sql("SELECT confirm_seq IS NOT NULL, lease_until IS NOT NULL"
                  " FROM recon.watch WHERE order_id = %s", (oid,))
    return rows[0] if rows else None


def main():
    with rstack.stack(OVERRIDES) as st:
        rstack.start(st)
        oid = rstack.create_order(st, "sela@example.com")
        st.wait_until(lambda: watch(st, oid) == (False, False), timeout=30,
                      what="%s watched by the reconciler" % oid)
        r = st.fake("POST", "/_fake/status_api",
                    {"mode": "5xx", "count": 1, "latency_ms_for": {oid: SLOW_MS}})
        assert r.status == 200, r
        out = rstack.admin(st, "reconcile.order", {"order_id": oid},
                           reason="test: a check in flight")
        assert out.get("ok"), out
        st.wait_until(lambda: watch(st, oid) == (False, True), timeout=30,
                      what="the operator's check of %s in flight" % oid)
        rstack.pay(st, oid, notify="normal")
        seen = []

        def asked():
            w = watch(st, oid)
            seen.append(w)
            return w[0]

        st.wait_until(asked, timeout=30, what="%s confirmation asked" % oid)
        # the precondition, read in the same row as the request: the
        # operator's check was still in flight when the request arrived
        assert seen[-1] == (True, True), (
            "the operator's check ended before the confirmation was asked:"
            " %r" % seen[-1])
        log("confirmation asked while the operator's check was in flight")
        # (the 500 is the in-flight check's: count 1, still pending here)
        st.wait_until(lambda: rstack.order_status(st, oid) == "PAID",
                      timeout=20, what="%s PAID right after the operator's"
                      " check (the next scheduled one is 10 minutes away)"
                      % oid)
        tr = rstack.transitions(st, oid, "PAID")
        assert len(tr) == 1 and tr[0][2] == "recon", tr
        chk = st.sql("SELECT confirm, transaction_status FROM"
                     " recon.status_check WHERE order_id = %s ORDER BY id",
                     (oid,))
        assert len(chk) == 2 and chk[0] == (False, None) and \
            chk[1] == (True, "settlement"), chk
        assert st.sql("SELECT confirm_seq, next_check_at > now() FROM"
                      " recon.watch WHERE order_id = %s", (oid,)) \
            == [(None, True)]
        log("ok: PAID by the check after the operator's, one transition")


if __name__ == "__main__":
    main()
