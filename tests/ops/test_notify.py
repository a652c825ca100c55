"""The real daemons under a systemd-like supervisor (issue 7): each of
kasir-ingest, kasir-order, kasir-notifier and kasir-reconciler is started
with $NOTIFY_SOCKET pointing at this test's AF_UNIX datagram socket,
WATCHDOG_USEC=2 s and WATCHDOG_PID set to its own pid (exec from a shell,
as systemd does), and:
  - started while PostgreSQL is down, sends no READY=1 (STATUS= says it
    waits for the database) and /readyz is not 200;
  - once PostgreSQL is up, sends READY=1, and by then its migrations are
    recorded in <schema>.schema_migrations (READY after migrations);
  - sends WATCHDOG=1 regularly while healthy;
  - stops sending WATCHDOG=1 when its database is gone (PgCluster.stop) and
    /readyz says so; resumes after PostgreSQL is back;
  - SIGTERM: STOPPING=1 and exit 0.
"""
import os
import socket
import sys
import threading
import time

import kasirtest

DAEMONS = ("ingest", "order", "notifier", "reconciler")
WATCHDOG_USEC = 2_000_000


class Notify:
    """Collects sd_notify datagrams on one socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []  # (monotonic time, "KEY=value")
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            now = time.monotonic()
            with self.lock:
                for line in data.decode(errors="replace").splitlines():
                    self.msgs.append((now, line))

    def first(self, line):
        with self.lock:
            return next((t for t, m in self.msgs if m == line), None)

    def count(self, line, since=0.0, until=None):
        with self.lock:
            return sum(1 for t, m in self.msgs
                       if m == line and t >= since and (until is None or t <= until))

    def statuses(self):
        with self.lock:
            return [m for _, m in self.msgs if m.startswith("STATUS=")]


failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def readyz(st, svc):
    try:
        return kasirtest.http("GET", st.url(f"{svc}_admin") + "/readyz", timeout=3).status
    except OSError:
        return None


def main():
    with kasirtest.Stack.for_test("ops-notify") as st:
        missing = [d for d in DAEMONS if not st.available(d)]
        if missing:
            raise kasirtest.HarnessError(f"daemons not built: {missing}")
        st.setup()
        sockdir = os.path.join(st.dir, "sd")
        os.makedirs(sockdir, exist_ok=True)
        notes = {d: Notify(os.path.join(sockdir, f"{d}.sock")) for d in DAEMONS}
        st.start_fakes()

        # 1. PostgreSQL down: the daemons wait, no READY.
        st.pg.stop()
        for d in DAEMONS:
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"',
                    *st.command(d)]
            st.spawn(d, argv, ready=None, wait=False,
                     env={"NOTIFY_SOCKET": notes[d].path,
                          "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        time.sleep(4)
        for d in DAEMONS:
            check(st.running(d), f"{d}: still running while PostgreSQL is down")
            check(notes[d].first("READY=1") is None, f"{d}: no READY=1 without a database")
            check(any("waiting for database" in s for s in notes[d].statuses()),
                  f"{d}: STATUS= says it waits for the database ({notes[d].statuses()})")
            check(readyz(st, d) != 200, f"{d}: /readyz is not 200")

        # 2. PostgreSQL up: READY=1, after the migrations.
        st.pg.start()
        st.pg.wait_ready()
        for d in DAEMONS:
            try:
                kasirtest.wait_until(lambda d=d: notes[d].first("READY=1"), 60,
                                     f"{d}: READY=1")
            except kasirtest.WaitTimeout as e:
                check(False, str(e))
                continue
            schema = kasirtest.SERVICES[d]
            mig_dir = os.path.join(kasirtest.source_dir(), "services", d, "migrations")
            files = sorted(f for f in os.listdir(mig_dir) if f.endswith(".sql"))
            rows = st.sql(f"SELECT count(*) FROM {schema}.schema_migrations")
            check(rows and rows[0][0] >= len(files),
                  f"{d}: READY=1 sent and {schema}.schema_migrations holds all "
                  f"{len(files)} migrations ({rows})")
            check(kasirtest.wait_until(lambda d=d: readyz(st, d) == 200, 30,
                                       f"{d} /readyz 200") is True,
                  f"{d}: /readyz 200")
            # READY must come after the STATUS= that announced migrating.
            st_list = notes[d].statuses()
            check(any(s.startswith("STATUS=migrating") for s in st_list),
                  f"{d}: STATUS=migrating schema ... before READY")

        # 3. Healthy: WATCHDOG=1 at least every WATCHDOG_USEC/2.
        t0 = time.monotonic()
        time.sleep(4)
        t1 = time.monotonic()
        for d in DAEMONS:
            n = notes[d].count("WATCHDOG=1", since=t0, until=t1)
            check(n >= 3, f"{d}: {n} WATCHDOG=1 in 4 s while healthy (>= 3)")

        # 4. Database gone: the watchdog is no longer fed.
        st.pg.stop()
        gone = time.monotonic()
        time.sleep(3)  # one ping period (1 s) plus a connect timeout margin
        quiet_from = time.monotonic()
        time.sleep(4)
        quiet_to = time.monotonic()
        for d in DAEMONS:
            n = notes[d].count("WATCHDOG=1", since=quiet_from, until=quiet_to)
            check(n == 0, f"{d}: no WATCHDOG=1 while the database is gone ({n} in 4 s)")
            check(readyz(st, d) == 503, f"{d}: /readyz 503 while the database is gone")
            check(st.running(d), f"{d}: still running (systemd, not the daemon, decides)")
        print(f"     database stopped at +0, quiet window +{quiet_from - gone:.1f}s.."
              f"+{quiet_to - gone:.1f}s", flush=True)

        # 5. Back: the watchdog resumes.
        st.pg.start()
        st.pg.wait_ready()
        back = time.monotonic()
        for d in DAEMONS:
            try:
                kasirtest.wait_until(lambda d=d: notes[d].count("WATCHDOG=1", since=back) >= 2,
                                     30, f"{d}: WATCHDOG=1 again")
                check(True, f"{d}: WATCHDOG=1 again after PostgreSQL is back")
            except kasirtest.WaitTimeout as e:
                check(False, str(e))

        # 6. SIGTERM: STOPPING=1, exit 0.
        for d in DAEMONS:
            rc = st.stop(d)
            check(rc == 0, f"{d}: exit 0 after SIGTERM ({rc})")
            check(notes[d].first("STOPPING=1") is not None, f"{d}: STOPPING=1")

        if failures:
            st.dump_logs(30)
            raise AssertionError(f"{len(failures)} checks failed: {failures}")
    print("\nall sd_notify checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
