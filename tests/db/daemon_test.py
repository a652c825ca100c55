"""common/daemon.c with a real PostgreSQL (issue 2: daemon start-up, health,
systemd notifications, shutdown).

Runs build/tests/daemon-driver (daemon_driver.c: only the base config,
schema "ingest") with $NOTIFY_SOCKET pointing at a datagram socket of this
test and WATCHDOG_USEC set, and checks:
  - started while PostgreSQL is down it waits (STATUS=waiting for
    database, no READY), then migrates and sends READY=1 once it is up;
  - /healthz, /readyz, /metrics on the admin listener;
  - PostgreSQL stopped: /readyz 503 "database unreachable", the watchdog
    is no longer fed, kasir_database_up 0; back after a restart;
  - a wedged main loop: /healthz 503 and no watchdog;
  - SIGTERM: STOPPING=1 and exit 0;
  - a migration the server refuses: exit non-zero with the file named.
"""
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import kasirtest


class Notify:
    """Collects sd_notify datagrams."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []  # (monotonic time, "KEY=value")
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            now = time.monotonic()
            with self.lock:
                for line in data.decode().splitlines():
                    self.msgs.append((now, line))

    def has(self, line, since=0.0):
        with self.lock:
            return any(m == line and t >= since for t, m in self.msgs)

    def count(self, line, since=0.0):
        with self.lock:
            return sum(1 for t, m in self.msgs if m == line and t >= since)

    def statuses(self):
        with self.lock:
            return [m for _, m in self.msgs if m.startswith("STATUS=")]

    def close(self):
        self.sock.close()


def write_config(path, st, pg, admin_port, migrations):
    sec = st.secrets_dir
    text = f"""log:
  level: debug
database:
  url: "host=127.0.0.1 port={pg.port} dbname=kasir user=kasir_ingest"
  password_file: {sec}/db-kasir_ingest
  migrate_url: "host=127.0.0.1 port={pg.port} dbname=kasir user=kasir_ingest_owner"
  migrate_password_file: {sec}/db-kasir_ingest_owner
  migrations: {migrations}
admin:
  listen: 127.0.0.1:{admin_port}
messages:
  keys:
    - id: k1
      secret: {sec}/msg-k1
  sign_with: k1
"""
    with open(path, "w") as f:
        f.write(text)


def get(port, path):
    try:
        return kasirtest.http("GET", f"http://127.0.0.1:{port}{path}", timeout=3)
    except Exception as e:  # connection refused while starting
        return e


def status_of(port, path):
    r = get(port, path)
    return getattr(r, "status", None)


def main():
    exe = os.path.join(kasirtest.build_dir(), "tests", "daemon-driver")
    if not os.path.exists(exe):
        raise AssertionError("daemon-driver not built")
    with kasirtest.Stack.for_test() as st, \
            tempfile.TemporaryDirectory(prefix="kasir-dt-") as tmp:
        pg = st.pg
        mig = os.path.join(tmp, "mig")
        os.makedirs(mig)
        with open(os.path.join(mig, "0001_t.sql"), "w") as f:
            f.write("CREATE TABLE ingest.dt (id int);\n"
                    "GRANT SELECT ON ingest.dt TO kasir_ingest;\n")
        admin = kasirtest.free_port()
        conf = os.path.join(tmp, "dt.yaml")
        write_config(conf, st, pg, admin, mig)
        r = subprocess.run([exe, "--check-config", conf], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr

        notify = Notify(os.path.join(tmp, "notify.sock"))
        hang = os.path.join(tmp, "hang")
        env = dict(os.environ, NOTIFY_SOCKET=notify.path,
                   WATCHDOG_USEC="2000000", KASIR_TEST_HANG_FILE=hang)
        env.pop("JOURNAL_STREAM", None)
        log = open(os.path.join(tmp, "daemon.log"), "w+")

        def logtext():
            log.flush()
            with open(log.name) as f:
                return f.read()

        # 1. database down at start: wait, no READY
        port = pg.port
        pg.stop("fast")
        proc = subprocess.Popen([exe, "--config", conf], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            kasirtest.wait_until(lambda: "STATUS=waiting for database" in
                                 notify.statuses(), 15, "waiting status")
            time.sleep(1)
            assert proc.poll() is None, logtext()
            assert not notify.has("READY=1")
            pg.start()
            assert pg.port == port, "the cluster moved to another port"
            kasirtest.wait_until(lambda: notify.has("READY=1"), 30, "READY=1")
            assert "schema ingest migrated" in logtext()
            assert pg.psql("SELECT version FROM ingest.schema_migrations "
                           "ORDER BY 1") == [("0000_stream",), ("0001_stream_pending",),
                                             ("0001_t",), ("0002_stream_source",),
                                             ("0003_stream_tick",), ("0004_stream_log",)]

            # 2. health endpoints
            kasirtest.wait_until(lambda: status_of(admin, "/readyz") == 200, 10,
                                 "/readyz 200")
            assert status_of(admin, "/healthz") == 200
            m = get(admin, "/metrics")
            assert m.status == 200
            metrics = kasirtest.parse_metrics(m.raw.decode())
            assert metrics[("kasir_database_up", frozenset())] == 1, metrics
            kasirtest.wait_until(lambda: kasirtest.parse_metrics(
                get(admin, "/metrics").raw.decode()).get(
                    ("kasir_test_ticks_total", frozenset()), 0) >= 1, 5,
                "main loop ticks counted")
            assert status_of(admin, "/nothing") == 404
            kasirtest.wait_until(lambda: notify.count("WATCHDOG=1") >= 2, 10,
                                 "watchdog fed")

            # 3. database lost: not ready, watchdog starves, still healthy
            pg.stop("fast")
            kasirtest.wait_until(lambda: status_of(admin, "/readyz") == 503, 10,
                                 "/readyz 503 with the database down")
            r = get(admin, "/readyz")
            assert "database unreachable" in r.raw.decode(), r.raw
            assert status_of(admin, "/healthz") == 200
            t0 = time.monotonic() + 0.5
            time.sleep(2.5)
            assert notify.count("WATCHDOG=1", since=t0) == 0, \
                "watchdog fed while the database was down"
            metrics = kasirtest.parse_metrics(get(admin, "/metrics").raw.decode())
            assert metrics[("kasir_database_up", frozenset())] == 0
            pg.start()
            kasirtest.wait_until(lambda: status_of(admin, "/readyz") == 200, 20,
                                 "/readyz 200 after the restart")
            t1 = time.monotonic()
            kasirtest.wait_until(lambda: notify.count("WATCHDOG=1", since=t1) >= 1,
                                 5, "watchdog fed again")

            # 4. wedged main loop
            open(hang, "w").close()
            kasirtest.wait_until(lambda: status_of(admin, "/healthz") == 503, 15,
                                 "/healthz 503 while the loop is wedged")
            os.unlink(hang)
            kasirtest.wait_until(lambda: status_of(admin, "/healthz") == 200, 15,
                                 "/healthz 200 again")

            # 5. SIGTERM
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, logtext()
            kasirtest.wait_until(lambda: notify.has("STOPPING=1"), 5, "STOPPING=1")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        # 6. a migration the server refuses is fatal, and says which
        with open(os.path.join(mig, "0002_bad.sql"), "w") as f:
            f.write("INSERT INTO ingest.no_such_table VALUES (1);\n")
        log.seek(0)
        log.truncate()
        proc = subprocess.Popen([exe, "--config", conf], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = logtext()
        assert rc != 0, text
        assert "0002_bad" in text and "no_such_table" in text, text
        notify.close()
        log.close()
        print("ok daemon", flush=True)


if __name__ == "__main__":
    main()
