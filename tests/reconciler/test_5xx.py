#!/usr/bin/python3
"""The Status API answers 5xx (and then times out) for a while: every
answer is stored, each check is retried at most `retries` times with
backoff and then rescheduled, the reconciler neither crashes nor exceeds
its requests-per-second cap, and once the API recovers every paid order
catches up to PAID."""
import time

import rstack
from rstack import log

RPS = 5
RETRIES = 2
FAULTS = 24


def main():
    with rstack.stack({"RECON_RPS": str(RPS), "RECON_RETRIES": str(RETRIES),
                       "RECON_TIMEOUT": "2s", "RECON_LEASE": "90s"}) as st:
        rstack.start(st)
        r = st.fake("POST", "/_fake/status_api",
                    {"mode": "5xx", "count": FAULTS, "status": 503})
        assert r.status == 200, r
        orders = [rstack.create_order(st, "b%d@example.com" % i) for i in range(4)]
        for oid in orders:
            rstack.pay(st, oid, notify="drop")
        log("4 orders paid (notifications dropped), %d x 503 armed" % FAULTS)

        # the fault is consumed by our checks: 503 answers, stored
        st.wait_until(lambda: st.sql(
            "SELECT count(*) FROM recon.status_check WHERE verdict = 'http_5xx'"
        )[0][0] >= FAULTS, timeout=60, what="%d stored 503 answers" % FAULTS)
        assert st.running("reconciler")
        # then the API times out twice (longer than midtrans.timeout)
        r = st.fake("POST", "/_fake/status_api",
                    {"mode": "timeout", "count": 2, "delay_s": 4})
        assert r.status == 200, r

        for oid in orders:
            st.wait_until(lambda: rstack.order_status(st, oid) == "PAID",
                          timeout=60, what="%s PAID after the outage" % oid)
            assert rstack.entitlements(st, oid) == 1
            assert len(rstack.transitions(st, oid, "PAID")) == 1
        log("all PAID after the outage")
        assert st.running("reconciler"), "kasir-reconciler died"

        rows = st.sql("SELECT verdict, http_status, attempt, published, body"
                      " FROM recon.status_check WHERE verdict = 'http_5xx'")
        assert len(rows) >= FAULTS
        for verdict, http, attempt, published, body in rows:
            assert http == 503 and not published, (verdict, http, published)
            assert "recovering" in body  # the raw answer is kept
        # bounded retries: never more than 1 + retries attempts per check
        assert st.sql("SELECT max(attempt) FROM recon.status_check")[0][0] \
            <= RETRIES + 1
        # checks that used up their retries were rescheduled, not dropped:
        # the same order was asked again later with attempt 1
        assert st.sql("SELECT count(DISTINCT order_id) FROM recon.status_check"
                      " WHERE attempt = %s AND verdict = 'http_5xx'",
                      (RETRIES + 1,))[0][0] >= 1
        st.wait_until(lambda: st.sql(
            "SELECT count(*) FROM recon.status_check WHERE verdict = 'timeout'"
            " AND http_status = 0 AND error IS NOT NULL")[0][0] >= 2,
            timeout=20, what="two stored timeouts")

        # the global cap: no 1-second window holds more than RPS requests
        # (+1: the bucket's single token of burst)
        worst = st.sql(
            "SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY requested_at"
            " RANGE BETWEEN CURRENT ROW AND interval '999 milliseconds'"
            " FOLLOWING) AS n FROM recon.status_check) x")[0][0]
        log("busiest second: %d requests (cap %d/s)" % (worst, RPS))
        assert worst <= RPS + 1, worst

        m5 = st.metric("reconciler", "kasir_reconciler_checks_total",
                       result="http_5xx")
        assert m5 >= FAULTS, m5
        assert st.metric("reconciler", "kasir_reconciler_checks_total",
                         result="timeout") >= 2
        assert st.metric("reconciler", "kasir_reconciler_api_errors_total") >= FAULTS + 2
        log("ok")


if __name__ == "__main__":
    main()
