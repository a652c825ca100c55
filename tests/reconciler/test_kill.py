#!/usr/bin/python3
"""SIGKILL of kasir-reconciler mid-run (requests in flight, rows leased,
answers being recorded), several times: no duplicate effects on orders
(exactly one PAID transition and one entitlement per order), and the
schedule resumes by itself: the rows the dead process had leased are
checked again once their lease expires."""
import random
import signal
import time

import kasirtest
import rstack
from rstack import log

LEASE_S = 20
N = 8
MID_RUN_KILLS = 3       # kills that find rows leased by the dead process
MAX_ROUNDS = 10


def leased(st, since="-infinity"):
    """Rows leased now, by leases that end after `since`."""
    return st.sql("SELECT count(*) FROM recon.watch WHERE lease_until > now()"
                  " AND lease_until > %s::timestamptz", (since,))[0][0]


def main():
    rnd = random.Random(4242)
    with rstack.stack({"RECON_TIMEOUT": "3s", "RECON_CONNECT_TIMEOUT": "1s",
                       "RECON_RETRIES": "1", "RECON_BATCH": "4",
                       "RECON_LEASE": "%ds" % LEASE_S,
                       "RECON_BACKOFF": "2s"}, durable=True) as st:  # kills: fsync on
        rstack.start(st)
        orders = [rstack.create_order(st, "k%d@example.com" % i) for i in range(N)]
        r = st.fake("POST", "/_fake/status_api",
                    {"mode": "timeout", "count": -1, "delay_s": 2})
        assert r.status == 200, r
        for oid in orders:
            rstack.pay(st, oid, notify="drop")
        log("%d orders paid, notifications dropped" % N)

        # Every Status API request hangs (2 s, then the connection closes)
        # until the kills are done, so checks are always in flight and no
        # order is paid early.  A kill lands on a condition, not a clock:
        # as soon as rows are leased.  It counts as mid-run when rows are
        # still leased once the process is dead (only it held them);
        # otherwise another round creates the condition again.
        # (Leases are told apart by lease_until: a process's leases end
        # after every lease of the processes killed before it.)
        kills = 0
        mid_run = 0
        since = "-infinity"
        while mid_run < MID_RUN_KILLS:
            assert kills < MAX_ROUNDS, \
                "%d kills, %d mid-run: rows were never still leased at a kill" % (kills, mid_run)
            st.wait_until(lambda: leased(st, since) > 0, timeout=30,
                          what="rows leased by the scheduler")
            st.kill("reconciler", signal.SIGKILL)
            kills += 1
            held = leased(st, since)    # the dead process's leases, if any
            mid_run += held > 0
            since = st.sql("SELECT greatest(%s::timestamptz, max(lease_until))::text"
                           " FROM recon.watch", (since,))[0][0]
            log("kill %d: SIGKILL with %d row(s) still leased" % (kills, held))
            time.sleep(rnd.uniform(0.2, 1.0))
            st.restart("reconciler")
        r = st.fake("POST", "/_fake/status_api", {"mode": "normal"})
        assert r.status == 200, r

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
            kasirtest.wait_sequenced(st.sql, "orders")
            assert len(st.sql("SELECT 1 FROM orders.stream_log_messages WHERE type ="
                              " 'order.paid' AND body::jsonb->'data'->>"
                              "'order_id' = %s", (oid,))) == 1, oid
        # nothing stays leased, no check left half-recorded
        st.wait_until(lambda: leased(st) == 0, timeout=LEASE_S + 10,
                      what="no lease left")
        # every status.check the reconciler appended names a stored check
        # and was applied by kasir-order exactly once
        dangling = st.sql(
            "SELECT count(*) FROM recon.stream_log_messages s WHERE NOT EXISTS (SELECT 1"
            " FROM recon.status_check c WHERE c.id = (s.body::jsonb->'data'->>"
            "'check_id')::bigint AND c.published)")[0][0]
        assert dangling == 0, dangling
        st.wait_until(lambda: st.sql(
            "SELECT " + kasirtest.stream_head_sql("recon", "recon") + " ="
            " (SELECT coalesce(max(seq), 0) FROM orders.stream_cursor"
            "  WHERE stream = 'recon')")[0][0], timeout=20,
            what="kasir-order applied the whole recon stream")
        dup = st.sql("SELECT ref, count(*) FROM orders.evidence WHERE source ="
                     " 'recon' GROUP BY ref HAVING count(*) > 1")
        assert dup == [], dup
        log("ok after %d kills" % kills)


if __name__ == "__main__":
    main()
