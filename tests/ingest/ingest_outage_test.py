"""kasir-ingest with PostgreSQL gone (issue 3): every notification is
answered 503 database_unavailable -- never 200 -- while the database is
down, requests caught in flight included; the daemon stays up; after
PostgreSQL returns, the redelivered notifications (Midtrans retries) are
stored, once each, and reach the ingest stream.  A body refused for its
signature while the database is down is still kept in quarantine once it
is back (the writer holds it and tries again).  Also checks the orderly
shutdown (SIGTERM: exit 0, checked by the harness).
"""

import json
import sys
import threading
import time

import kasirtest
from ingest_util import (DOCS_KEY, JSON, check, count, notification,
                         pg_start_same_port, samples)


def main():
    smp = samples()
    # durable: the subject is PostgreSQL going away (fsync stays on)
    with kasirtest.Stack.for_test(server_key=DOCS_KEY, durable=True) as st:
        st.start("ingest")
        r = st.notify(smp[0][1], JSON)
        check(r.status == 200, f"stored while the database is up ({r})")

        # A request caught in the committer when the database goes away:
        # hold a lock so it waits in its transaction, then stop PostgreSQL.
        held = st.pg.connect()
        held.autocommit = False
        cur = held.cursor()
        cur.execute("LOCK TABLE ingest.payment_event IN ACCESS EXCLUSIVE MODE")
        inflight = {}

        def send():
            inflight["r"] = st.notify(notification("inflight-1"), JSON, timeout=30)

        t = threading.Thread(target=send)
        t.start()
        time.sleep(0.5)  # deferred, waiting on the lock
        check("r" not in inflight, "request deferred while its insert waits")
        st.pg.stop("immediate")
        t.join(30)
        check(inflight["r"].status == 503, f"in-flight request -> 503 ({inflight['r']})")
        held.close()

        bodies = [raw for _, raw in smp[1:4]]
        for attempt in range(3):
            for raw in bodies:
                r = st.notify(raw, JSON)
                if r.status != 503 or r.body["error"]["code"] != "database_unavailable":
                    raise AssertionError(f"database down: want 503 database_unavailable, got {r}")
        check(True, "database down: every notification answered 503, never 200")
        forged = json.loads(notification("forged-1"))
        forged["signature_key"] = "0" * 128
        r = st.notify(json.dumps(forged).encode(), JSON)
        check(r.status == 403, f"bad signature while the database is down -> 403 ({r})")
        check(st.running("ingest"), "kasir-ingest stays up without its database")
        check(st.metric("ingest", "kasir_ingest_requests_total", outcome="2xx") == 1,
              "no 2xx counted while the database was down")
        # the main loop pings the database once a second
        st.wait_until(lambda: st.admin("ingest", "/readyz").status == 503, timeout=10,
                      what="/readyz not ready while the database is down")
        check(True, "/readyz says not ready while the database is down")

        pg_start_same_port(st)
        st.wait_until(lambda: count(st, "ingest.quarantine", "order_id = %s",
                                    ("forged-1",)) == 1,
                      timeout=30, what="the body refused while the database was down kept")
        check(st.metric("ingest", "kasir_ingest_quarantine_dropped_total") in (None, 0),
              "no refused body dropped")

        # Midtrans redelivers; the first attempts may still meet the
        # reconnect backoff (503), then each is stored.
        for raw in bodies + [notification("inflight-1")]:
            def deliver(raw=raw):
                r = st.notify(raw, JSON)
                if r.status not in (200, 503):
                    raise AssertionError(f"redelivery answered {r}")
                return r if r.status == 200 else None
            r = st.wait_until(deliver, timeout=30, interval=0.5, what="redelivery stored")
            oid = json.loads(raw)["order_id"]
            rows = st.sql("SELECT raw FROM ingest.payment_event WHERE id = %s",
                          (r.body["event_id"],))
            check(len(rows) == 1 and bytes(rows[0][0]) == raw,
                  f"{oid}: redelivery stored byte for byte")
        for raw in bodies:
            oid = json.loads(raw)["order_id"]
            n = count(st, "ingest.payment_event", "raw = %s", (raw,))
            check(n == 1, f"{oid}: stored once (the 503s stored nothing)")
        n_ev = count(st, "ingest.payment_event")
        # the sequencer gives committed messages their seq after COMMIT,
        # once its own connection is back (docs/backbone.md)
        st.wait_until(lambda: count(st, "ingest.stream_messages", "stream = 'ingest'") >= n_ev,
                      timeout=20, what="every stored event sequenced on the stream")
        n_msg = count(st, "ingest.stream_messages", "stream = 'ingest'")
        check(n_ev == n_msg == 5, f"stream has one message per stored event ({n_ev}, {n_msg})")
        st.wait_until(lambda: st.admin("ingest", "/readyz").status == 200, timeout=20,
                      what="ready again")
        code = st.stop("ingest")
        check(code == 0, f"SIGTERM: orderly exit 0 ({code})")

        # after a restart the last-notification gauge comes from the table,
        # not 0 ("nothing ever arrived" would mislead kasirctl status)
        last = st.sql("SELECT extract(epoch FROM max(received_at))::float8"
                      " FROM ingest.payment_event")[0][0]
        st.start("ingest")
        gauge = st.wait_until(
            lambda: st.metric("ingest",
                              "kasir_ingest_last_notification_timestamp_seconds"),
            timeout=10, what="last-notification gauge set after a restart")
        check(abs(gauge - last) < 1.0,
              f"restart: last-notification gauge {gauge} = last stored {last}")
        code = st.stop("ingest")
        check(code == 0, f"SIGTERM: orderly exit 0 ({code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
