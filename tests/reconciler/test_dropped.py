#!/usr/bin/python3
"""Notifications dropped entirely (notify: drop): every paid order reaches
PAID with access through the reconciler, within the configured interval,
with the transition naming the stored status check; and the unpaid order
in the same batch stays PENDING (a pending answer is not payment)."""
import time

import rstack
from rstack import log


def main():
    with rstack.stack() as st:
        rstack.start(st)
        paid = [rstack.create_order(st, "buyer%d@example.com" % i)
                for i in range(5)]
        unpaid = rstack.create_order(st, "window-shopper@example.com")
        t0 = time.time()
        for i, oid in enumerate(paid):
            rstack.pay(st, oid, notify="drop",
                       payment_type=("bank_transfer", "gopay", "qris")[i % 3])
        log("paid %d orders at the fake, notifications dropped" % len(paid))

        # first check 2s after creation, backoff 2s,3s: every paid order
        # must be PAID well within first_check + a couple of backoff steps
        for oid in paid:
            st.wait_until(lambda: rstack.order_status(st, oid) == "PAID",
                          timeout=30, what="%s PAID through the reconciler" % oid)
        took = time.time() - t0
        log("all PAID after %.1fs" % took)
        assert took < 20, "reconciliation took %.1fs (interval is seconds)" % took

        for oid in paid:
            # no notification ever reached kasir-ingest
            assert rstack.ingest_events(st, oid) == 0
            tr = rstack.transitions(st, oid, "PAID")
            assert len(tr) == 1, tr
            _, _, source, ref = tr[0]
            assert source == "recon", tr
            # the transition names a stored status check that says so
            chk = st.sql("SELECT order_id, verdict, transaction_status,"
                         " http_status, published, body FROM recon.status_check"
                         " WHERE id = %s", (ref,))
            assert chk and chk[0][0] == oid, chk
            assert chk[0][1:5] == ("status", "settlement", 200, True), chk
            assert '"settlement"' in chk[0][5]
            st.wait_until(lambda: rstack.entitlements(st, oid) == 1, timeout=10,
                          what="%s entitlement" % oid)
            # the watch row left the schedule
            st.wait_until(lambda: st.sql(
                "SELECT final, status FROM recon.watch WHERE order_id = %s",
                (oid,)) == [(True, "PAID")], timeout=10,
                what="%s final in recon.watch" % oid)

        # the window shopper: answers 404 before expiry, nothing sent
        st.wait_until(lambda: len(rstack.checks(st, unpaid)) >= 2, timeout=20,
                      what="two checks of the unpaid order")
        assert rstack.order_status(st, unpaid) == "PENDING"
        for _, verdict, http, _, published, past, _ in rstack.checks(st, unpaid):
            assert (verdict, http, published, past) == \
                ("not_found", 404, False, False)

        # checks after PAID: none (final orders leave the schedule)
        n = {oid: len(rstack.checks(st, oid)) for oid in paid}
        time.sleep(5)
        for oid in paid:
            assert len(rstack.checks(st, oid)) == n[oid], oid

        # evidence is append-only, for the runtime role and everybody else
        for q in ("UPDATE recon.status_check SET verdict = 'status'",
                  "DELETE FROM recon.status_check",
                  "TRUNCATE recon.status_check"):
            for role in ("kasir_reconciler", None):
                try:
                    st.sql(q, role=role)
                except Exception as e:  # psycopg2 error
                    assert "refused" in str(e) or "permission denied" in str(e), e
                else:
                    raise AssertionError("%s succeeded as %s" % (q, role))
        assert st.metric("reconciler", "kasir_reconciler_checks_total",
                         result="status") >= len(paid)
        assert st.metric("reconciler", "kasir_reconciler_published_total") >= len(paid)
        log("ok")


if __name__ == "__main__":
    main()
