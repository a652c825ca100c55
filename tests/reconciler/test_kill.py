#!/usr/bin/python3
"""SIGKILL of kasir-reconciler mid-run (requests in flight, rows leased,
answers being recorded), several times: no duplicate effects on orders
(exactly one PAID transition and one entitlement per order), and the
schedule resumes by itself: the rows the dead process had leased are
checked again once their lease expires."""
import random
import signal
import time

import rstack
from rstack import log

LEASE_S = 20
N = 8


def leased(st):
    return st.sql("SELECT count(*) FROM recon.watch WHERE lease_until > now()")[0][0]


def main():
    rnd = random.Random(4242)
    with rstack.stack({"RECON_TIMEOUT": "3s", "RECON_CONNECT_TIMEOUT": "1s",
                       "RECON_RETRIES": "1", "RECON_BATCH": "4",
                       "RECON_LEASE": "%ds" % LEASE_S,
                       "RECON_BACKOFF": "2s"}) as st:
        rstack.start(st)
        orders = [rstack.create_order(st, "k%d@example.com" % i) for i in range(N)]
        for oid in orders:
            rstack.pay(st, oid, notify="drop")
        log("%d orders paid, notifications dropped" % N)

        kills = 0
        held_at_kill = 0
        for round_ in range(3):
            # slow answers so the kill lands while requests are in flight
            r = st.fake("POST", "/_fake/status_api",
                        {"mode": "timeout", "count": 3, "delay_s": 2})
            assert r.status == 200, r
            st.wait_until(lambda: leased(st) > 0, timeout=30,
                          what="rows leased by the scheduler")
            time.sleep(rnd.uniform(0.0, 1.5))
            held = leased(st)
            st.kill("reconciler", signal.SIGKILL)
            kills += 1
            held_at_kill += held
            log("round %d: SIGKILL with %d row(s) leased" % (round_, held))
            time.sleep(rnd.uniform(0.2, 1.0))
            st.restart("reconciler")

        assert held_at_kill > 0, "never killed mid-run"
        # the schedule resumes: leases of the dead process expire and every
        # order is checked again and reaches PAID
        for oid in orders:
            st.wait_until(lambda: rstack.order_status(st, oid) == "PAID",
                          timeout=LEASE_S + 40, what="%s PAID after kills" % oid)
        time.sleep(3)  # let any duplicate evidence arrive
        for oid in orders:
            tr = rstack.transitions(st, oid, "PAID")
            assert len(tr) == 1, (oid, tr)
            assert rstack.entitlements(st, oid) == 1, oid
            assert st.sql("SELECT count(*) FROM orders.entitlement_events WHERE"
                          " order_id = %s AND action = 'grant'", (oid,))[0][0] == 1
            assert len(st.sql("SELECT 1 FROM orders.stream_out WHERE type ="
                              " 'order.paid' AND body::jsonb->'data'->>"
                              "'order_id' = %s", (oid,))) == 1, oid
        # nothing stays leased, no check left half-recorded
        st.wait_until(lambda: leased(st) == 0, timeout=LEASE_S + 10,
                      what="no lease left")
        # every status.check the reconciler appended names a stored check
        # and was applied by kasir-order exactly once
        dangling = st.sql(
            "SELECT count(*) FROM recon.stream_out s WHERE NOT EXISTS (SELECT 1"
            " FROM recon.status_check c WHERE c.id = (s.body::jsonb->'data'->>"
            "'check_id')::bigint AND c.published)")[0][0]
        assert dangling == 0, dangling
        st.wait_until(lambda: st.sql(
            "SELECT (SELECT coalesce(max(seq), 0) FROM recon.stream_out) ="
            " (SELECT coalesce(max(seq), 0) FROM orders.stream_cursor"
            "  WHERE stream = 'recon')")[0][0], timeout=20,
            what="kasir-order applied the whole recon stream")
        dup = st.sql("SELECT ref, count(*) FROM orders.evidence WHERE source ="
                     " 'recon' GROUP BY ref HAVING count(*) > 1")
        assert dup == [], dup
        log("ok after %d kills" % kills)


if __name__ == "__main__":
    main()
