"""A scrape answers while another one is stuck in the database (found by
a fault attack, 2026-12-07).

kasir-notifier's and kasir-reconciler's /metrics read a few gauges from
PostgreSQL on their own connection.  With that connection's session
frozen (PostgreSQL frozen, or this one backend), the first scrape waits
in its query, and every later one used to wait behind it: Prometheus saw
a dead daemon (KasirDaemonDown, "restart it") where the loop gauges
(kasir_loop_silent) would have named the real cause.  Now a scrape that
finds another still in the database answers at once with the database
gauges as they were.  The test freezes each daemon's scrape session
(SIGSTOP of its backend), starts one scrape that waits, checks that the
next answers within 5 s with the loop gauges and that /readyz answers
too (the admin listener had one thread, which the waiting scrape held),
then lets the session go and the first scrape finish.
"""

import os
import signal
import sys
import threading
import time

import kasirtest
from faultutil import check


def scrape_backend(st, app):
    rows = st.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                  (app,))
    return rows[0][0] if len(rows) == 1 else None


def main():
    with kasirtest.Stack.for_test() as st:
        st.start_all(services=["ingest", "order", "notifier", "reconciler"])
        for svc in ("notifier", "reconciler"):
            app = f"kasir-{svc}-metrics"
            check(st.admin(svc, "/metrics").status == 200, f"{svc}: a first scrape")
            pid = scrape_backend(st, app)
            check(pid is not None, f"{svc}: its scrape session ({app}) is open")
            os.kill(pid, signal.SIGSTOP)
            first = {}
            try:
                t = threading.Thread(target=lambda: first.update(
                    r=st.admin(svc, "/metrics", timeout=60)))
                t.start()
                time.sleep(1.5)  # the first scrape is in its query now
                check(t.is_alive(), f"{svc}: the first scrape waits in the frozen session")
                t0 = time.monotonic()
                r = st.admin(svc, "/metrics", timeout=5)
                took = time.monotonic() - t0
                check(r.status == 200 and b"kasir_loop_silent" in r.raw,
                      f"{svc}: the next scrape answers meanwhile, with the loop gauges "
                      f"({took:.2f} s)")
                # the admin listener has threads to spare: the waiting
                # scrape holds one of them, not the only one
                rz = st.admin(svc, "/readyz", timeout=5)
                check(rz.status in (200, 503), f"{svc}: /readyz answers meanwhile ({rz.status})")
            finally:
                os.kill(pid, signal.SIGCONT)
            t.join(60)
            check(first.get("r") is not None and first["r"].status == 200,
                  f"{svc}: the first scrape finishes once the session runs again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
