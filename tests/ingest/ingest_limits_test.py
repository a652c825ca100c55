"""kasir-ingest's bounds (issue 3, issue 8):

- per-source rate limit: 429 with a Retry-After in seconds, nothing
  stored; sources are separate buckets; behind a trusted proxy the last
  X-Forwarded-For entry is the source, from any other peer the header is
  ignored (and a spoofed header cannot dodge the limit)
- quarantine is bounded: a per-minute budget and a row cap; what is not
  kept is counted (kasir_ingest_quarantine_dropped_total)
- a full queue answers 503 overloaded at once; deferred requests are
  answered 200 only after their rows committed (group commit)
"""

import json
import sys
import threading
import time

import kasirtest
from ingest_util import (DOCS_KEY, JSON, check, count, notification, post_from)

PATH = "/midtrans/notification"


def main():
    overrides = {"INGEST_RATE": "1", "INGEST_BURST": "3",
                 "INGEST_QUARANTINE_PER_MINUTE": "4", "INGEST_QUARANTINE_MAX_ROWS": "3",
                 "INGEST_QUEUE_MAX": "1", "INGEST_BATCH_MAX": "8",
                 # one committer: the full-queue case below fills exactly one
                 # committer and the queue (with N, N batches are in flight)
                 "INGEST_COMMITTERS": "1"}
    with kasirtest.Stack.for_test(server_key=DOCS_KEY, overrides=overrides) as st:
        st.start("ingest")
        port = st.port("INGEST_HTTP")

        # -- rate limit per source (127.0.0.1 is a trusted proxy) ----------------
        xff = {"X-Forwarded-For": "203.0.113.50, 198.51.100.1"}
        for i in range(3):
            r = st.notify(notification(f"rl-a-{i}"), dict(JSON, **xff))
            check(r.status == 200, f"burst request {i} from 198.51.100.1 -> 200 ({r})")
        r = st.notify(notification("rl-a-3"), dict(JSON, **xff))
        check(r.status == 429 and r.body["error"]["code"] == "rate_limited",
              f"4th request from 198.51.100.1 -> 429 ({r})")
        ra = r.headers.get("Retry-After")
        check(ra is not None and ra.isdigit() and 1 <= int(ra) <= 2,
              f"Retry-After in whole seconds ({ra!r})")
        check(count(st, "ingest.payment_event", "order_id = 'rl-a-3'") == 0,
              "nothing stored for the 429")
        rows = st.sql("SELECT DISTINCT host(source_addr) FROM ingest.payment_event "
                      "WHERE order_id LIKE 'rl-a-%%'")
        check(rows == [("198.51.100.1",)], f"source is the last X-Forwarded-For entry ({rows})")

        r = st.notify(notification("rl-b-0"), dict(JSON, **{"X-Real-IP": "198.51.100.2"}))
        check(r.status == 200, "another source has its own bucket (X-Real-IP)")
        check(st.sql("SELECT host(source_addr) FROM ingest.payment_event "
                     "WHERE order_id = 'rl-b-0'") == [("198.51.100.2",)],
              "X-Real-IP used without X-Forwarded-For")

        # From an untrusted peer (127.0.0.2) the headers are ignored: changing
        # X-Forwarded-For on every request does not dodge the limit.
        statuses = []
        for i in range(5):
            s, h, b = post_from(port, PATH, notification(f"rl-c-{i}"), "127.0.0.2",
                                {"X-Forwarded-For": f"192.0.2.{i}"})
            statuses.append(s)
        check(statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429],
              f"untrusted peer: spoofed X-Forwarded-For ignored ({statuses})")
        check(st.sql("SELECT DISTINCT host(source_addr) FROM ingest.payment_event "
                     "WHERE order_id LIKE 'rl-c-%%'") == [("127.0.0.2",)],
              "untrusted peer: source is the TCP peer")
        check(st.metric("ingest", "kasir_ingest_requests_total", outcome="429") == 3,
              "429s counted")
        time.sleep(1.2)
        r = st.notify(notification("rl-a-4"), dict(JSON, **xff))
        check(r.status == 200, "the bucket refills")

        # -- quarantine budget (4/minute) and cap (3 rows) ------------------------
        for i in range(6):
            r = st.notify(notification(f"forged-{i}", key="SB-Mid-server-wrong"),
                          dict(JSON, **{"X-Forwarded-For": "198.51.100.9"}))
            check(r.status == 403, f"forgery {i} -> 403")
        st.wait_until(lambda: st.metric("ingest", "kasir_ingest_quarantine_dropped_total") == 3,
                      timeout=10, what="3 quarantine drops (2 over budget, 1 over cap)")
        check(count(st, "ingest.quarantine") == 3, "quarantine capped at 3 rows")
        check(st.metric("ingest", "kasir_ingest_signature_failures_total") == 6,
              "every forgery counted")
        check(st.sql("SELECT DISTINCT host(source_addr), reason FROM ingest.quarantine")
              == [("198.51.100.9", "invalid_signature")], "quarantine source and reason")

        # -- full queue: 503 overloaded at once; group commit after the lock ------
        held = st.pg.connect()
        held.autocommit = False
        held.cursor().execute("LOCK TABLE ingest.payment_event IN ACCESS EXCLUSIVE MODE")
        results = {}

        def send(name, src):
            results[name] = post_from(port, PATH, notification(name), src, timeout=30)

        # one in the committer (waiting on the lock), one queued (queue_max 1)
        t1 = threading.Thread(target=send, args=("q-1", "127.0.0.3"))
        t1.start()
        time.sleep(0.4)
        t2 = threading.Thread(target=send, args=("q-2", "127.0.0.4"))
        t2.start()
        time.sleep(0.4)
        s, h, b = post_from(port, PATH, notification("q-3"), "127.0.0.5", timeout=5)
        check(s == 503 and json.loads(b)["error"]["code"] == "overloaded",
              f"queue full -> 503 overloaded at once ({s} {b[:80]!r})")
        check("q-1" not in results and "q-2" not in results,
              "deferred requests not answered before their commit")
        check(st.metric("ingest", "kasir_ingest_queue_depth") == 1, "queue depth gauge = 1")
        held.rollback()
        held.close()
        t1.join(20)
        t2.join(20)
        for name in ("q-1", "q-2"):
            s, h, b = results[name]
            body = json.loads(b)
            check(s == 200 and body["status"] == "ok", f"{name} -> 200 after the lock went")
            check(st.sql("SELECT order_id FROM ingest.payment_event WHERE id = %s",
                         (body["event_id"],)) == [(name,)], f"{name}: its event id is its row")
        check(count(st, "ingest.payment_event", "order_id = 'q-3'") == 0,
              "nothing stored for the overloaded request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
