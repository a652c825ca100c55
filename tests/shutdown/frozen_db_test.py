"""SIGTERM ends every daemon within 28 s while PostgreSQL is frozen (found
by an outside attack, 2026-12-07).

A frozen server (its host stopped, SIGSTOP) keeps its TCP connections
open and acknowledged, so no timeout fires on the client side and every
thread that waits in libpq waits until it resumes -- the main loop too,
whose database ping then never reads the signal.  Before, the four
daemons ignored SIGTERM for as long as PostgreSQL was stopped (systemd
kills them after TimeoutStopSec=30s).  Now a thread arms a 28 s deadline
as soon as the signal is pending; when it expires the daemon writes one
line and exits (PostgreSQL rolls back what was not committed).

Payments flow while PostgreSQL (postmaster and every backend) is stopped;
each daemon gets SIGTERM and must be gone within 30 s.  Then PostgreSQL
resumes, the daemons start again and a payment goes through.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import kasirtest

COURSE = "bikin-film-pendek"
DAEMONS = ("ingest", "order", "reconciler", "notifier")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


def pg_pids(st):
    pm = int(open(os.path.join(st.pg.data, "postmaster.pid")).readline())
    kids = subprocess.run(["pgrep", "-P", str(pm)], capture_output=True,
                          text=True).stdout.split()
    return [pm] + [int(k) for k in kids]


def pay(st, n):
    r = st.api("POST", "/v1/orders", {"course_id": COURSE, "customer": {
        "name": "Budi", "email": f"frozen{n}@example.com", "phone": "+6281234567890"}},
        timeout=5)
    if r.status == 201:
        st.fake("POST", f"/_fake/orders/{r.body['order_id']}/pay",
                {"payment_type": "bank_transfer"})
        return r.body["order_id"]
    return None


def main():
    with kasirtest.Stack.for_test(durable=True) as st:
        st.start_all()
        for i in range(3):
            pay(st, i)
        frozen = pg_pids(st)
        for p in frozen:
            os.kill(p, signal.SIGSTOP)
        try:
            # calls that will wait on the frozen server: an API request, the
            # fake's notification, every loop's next statement
            def waiting_request():
                try:
                    pay(st, 99)
                except OSError:
                    pass  # no answer from a frozen stack: expected

            threading.Thread(target=waiting_request, daemon=True).start()
            time.sleep(3)
            took = {}

            def stop(d):
                pid, t = st.pid(d), time.monotonic()
                os.kill(pid, signal.SIGTERM)
                while st.running(d) and time.monotonic() - t < 45:
                    time.sleep(0.2)
                took[d] = (time.monotonic() - t, st.running(d))

            ts = [threading.Thread(target=stop, args=(d,)) for d in DAEMONS]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        finally:
            for p in frozen:
                os.kill(p, signal.SIGCONT)
        for d in DAEMONS:
            secs, running = took[d]
            check(not running and secs < 30,
                  f"kasir-{d} gone {secs:.1f} s after SIGTERM, PostgreSQL frozen")
        late = [d for d in DAEMONS if "still stopping after 28 s" in st.log_text(d)]
        check(late, f"the deadline ended the stop of {late}")
        for d in DAEMONS:
            st.start(d)
        oid = pay(st, 100)
        check(oid is not None, "an order after PostgreSQL resumed")
        st.wait_until(lambda: st.sql("SELECT status FROM orders.orders WHERE order_id = %s",
                                     (oid,)) == [("PAID",)], timeout=40, what="PAID")
        check(True, "a payment goes through after the restart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
