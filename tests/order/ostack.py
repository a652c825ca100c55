"""ostack - a small stack for kasir-order's integration tests.

PostgreSQL (a temporary kasirtest.PgCluster, root or not), the fake Midtrans (tests/fakes), two
stand-in producers over the real backbone (order-test-producer): one for
the "ingest" stream (payment.notification, push/pull) and one for the
"recon" stream (status.check), and kasir-order itself with the config
rendered from services/order/config.example.yaml and a test catalog whose
prices match the Midtrans fixtures (tests/data/midtrans).

Everything is torn down by Stack.close().
"""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import psycopg2

import midtrans_fixtures
import kasirtest  # PgCluster: runs PostgreSQL as root (via runuser) or not

BUILD = os.environ.get("KASIR_BUILD_DIR", "")
SRC = os.environ.get("KASIR_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SERVER_KEY = midtrans_fixtures.TEST_KEY  # the docs' example key

# price -> course id; every amount used by a fixture has a course
TEST_COURSES = [
    ("kursus-10000", "Kursus Uji Sepuluh Ribu", 10000, "lifetime"),
    ("kursus-100000", "Kursus Uji Seratus Ribu", 100000, "lifetime"),
    ("kursus-145000", "Kursus Uji Kartu", 145000, "lifetime"),
    ("kursus-150000", "Kelas Bikin Film Pendek", 150000, "lifetime"),
    ("kursus-154600", "AgentBar Dasar", 154600, "365d"),
    ("kursus-162500", "Kursus Uji Alfamart", 162500, "30d"),
    ("kursus-244108", "Kursus Uji Mandiri", 244108, "lifetime"),
    ("kursus-275000", "Sinematografi Lanjutan", 275000, "180d"),
]


def course_for(amount):
    amount = int(float(amount))
    for cid, _, price, _ in TEST_COURSES:
        if price == amount:
            return cid
    raise AssertionError("no test course priced %d" % amount)


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def free_port():
    """kasirtest's: claimed against parallel test processes, outside the
    ephemeral range (a bind(0) port released here could go to another
    test's process before ours binds it)."""
    return kasirtest.free_port()


def wait_for(pred, timeout, what, interval=0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def samples():
    """[(name, parsed body)] of the Midtrans notification fixtures
    (tests/data/midtrans/notifications), in name order."""
    return [(n, json.loads(raw)) for n, raw in midtrans_fixtures.notifications()]


class Stack:
    def __init__(self, overrides=None, name="order", durable=False):
        if not BUILD or not os.path.isdir(BUILD):
            skip("KASIR_BUILD_DIR not set (run through ctest)")
        self.bin = {
            "order": os.path.join(BUILD, "bin", "kasir-order"),
            "producer": os.path.join(BUILD, "tests", "order-test-producer"),
            "admin": os.path.join(BUILD, "tests", "admin-call"),
            "fake": os.path.join(SRC, "tests", "fakes", "kasir-fake-midtrans"),
        }
        for b in self.bin.values():
            if not os.path.exists(b):
                raise AssertionError("missing binary " + b)
        self.overrides = overrides or {}
        self.durable = durable  # False: fsync = off (kasirtest.PgCluster)
        self.dir = tempfile.mkdtemp(prefix="kasir-%s-" % name)
        os.chmod(self.dir, 0o755)
        self.procs = {}
        self.ports = {}
        self.event_id = 1000
        self.check_id = 5000
        self.last_seq = {}  # stream -> seq of the last message published
        try:
            self._secrets()
            self._postgres()
            self._fake()
            self.producer("ingest", "testingest", "INGEST")
            self.producer("recon", "testrecon", "RECON")
            self._config()
        except BaseException:
            self.close()
            raise

    def port(self, name):
        if name not in self.ports:
            self.ports[name] = free_port()
        return self.ports[name]

    # -- setup
    def _secrets(self):
        self.secrets = os.path.join(self.dir, "secrets")
        self.run = os.path.join(self.dir, "run")
        os.makedirs(self.secrets, mode=0o700)
        os.makedirs(self.run, mode=0o755)
        self.token = "test-api-token-" + os.urandom(12).hex()
        files = {"msg-k1": os.urandom(32).hex(), "api-token": self.token,
                 "midtrans-server-key": SERVER_KEY}
        for role in kasirtest.db_roles():  # bootstrap.sql sets them all
            files["db-" + role] = os.urandom(18).hex()
        for k, v in files.items():
            p = os.path.join(self.secrets, k)
            with open(p, "w") as f:
                f.write(v + "\n")
            os.chmod(p, 0o600)

    def _postgres(self):
        """A throwaway cluster (kasirtest.PgCluster: initdb as an
        unprivileged user whether we are root or not), bootstrapped with
        deploy/sql/bootstrap.sql (roles, schemas, passwords from secrets),
        plus the stand-in producers' schemas."""
        self.pg = kasirtest.PgCluster(os.path.join(self.dir, "pg"), secrets_dir=self.secrets,
                                      durable=self.durable,
                                      template=kasirtest.test_template_dir())
        self.pg.start()
        self.pg.bootstrap(self.secrets)
        self.pg_port = self.pg.port
        self.sql("CREATE SCHEMA testingest")
        self.sql("CREATE SCHEMA testrecon")

    def stop_postgres(self):
        if getattr(self, "pg", None) is not None:
            self.pg.stop("fast")

    def _fake(self):
        self.fake_url = "http://127.0.0.1:%d" % self.port("FAKE_MIDTRANS")
        keyf = os.path.join(self.secrets, "midtrans-server-key")
        self.procs["fake"] = subprocess.Popen(
            [self.bin["fake"], "--listen", "127.0.0.1:%d" % self.port("FAKE_MIDTRANS"),
             "--server-key-file", keyf,
             "--notify-url", "http://127.0.0.1:%d/midtrans/notification" % self.port("INGEST_HTTP"),
             "--retry-schedule", "1,1,1", "--no-auto-expire"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "fake.log"), "w"))
        wait_for(lambda: self._fake_health(), 20, "fake midtrans")

    def _fake_health(self):
        try:
            with urllib.request.urlopen(self.fake_url + "/_fake/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def fake(self, path, body=None):
        req = urllib.request.Request(self.fake_url + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def producer(self, stream, schema, portname):
        dsn = self.pg.superuser_dsn("kasir")
        p = subprocess.Popen(
            [self.bin["producer"], schema, dsn, stream, "push",
             "tcp://127.0.0.1:%d" % self.port(portname + "_PUB"),
             "tcp://127.0.0.1:%d" % self.port(portname + "_REPLAY"),
             os.path.join(self.secrets, "msg-k1")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.dir, "producer-%s.log" % stream), "w"), text=True,
            bufsize=1)
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError("producer %s did not start: %r" % (stream, line))
        self.procs["producer-" + stream] = p

    def _config(self):
        with open(os.path.join(SRC, "services", "order", "config.example.yaml")) as f:
            text = f.read()
        text = text[:text.index("\ncourses:")] + "\ncourses:\n" + "".join(
            '  - id: %s\n    title: "%s"\n    price: %d\n    access: %s\n' % c
            for c in TEST_COURSES)

        def tunable(m):
            return str(self.overrides.get(m.group(1), m.group(2)))
        text = re.sub(r"@([A-Z_]+)=([^@]*)@", tunable, text)
        fixed = {"VAR": self.dir, "SECRETS": self.secrets, "RUN": self.run, "SRC": SRC,
                 "DB_HOST": "127.0.0.1", "DB_PORT": str(self.pg_port)}

        def repl(m):
            name = m.group(1)
            if name in fixed:
                return fixed[name]
            if name.startswith("PORT_"):
                return str(self.port(name[5:]))
            raise AssertionError("unknown placeholder @%s@" % name)
        text = re.sub(r"@([A-Z_0-9]+)@", repl, text)
        self.config = os.path.join(self.dir, "order.yaml")
        with open(self.config, "w") as f:
            f.write(text)
        self.admin_url = "ipc://%s/order.sock" % self.run
        self.api = "http://127.0.0.1:%d" % self.port("ORDER_HTTP")

    # -- producers
    def publish(self, stream, mtype, data):
        p = self.procs["producer-" + stream]
        p.stdin.write("%s %s\n" % (mtype, json.dumps(data)))
        p.stdin.flush()
        line = p.stdout.readline().strip()
        if not line.startswith("ok "):
            raise AssertionError("publish %s failed: %s" % (mtype, line))
        self.last_seq[stream] = int(line[3:])
        return self.last_seq[stream]

    def notify(self, body, **changes):
        """Publishes a Midtrans notification body on the ingest stream as
        kasir-ingest would after verifying it.  Returns its event_id."""
        body = dict(body, **changes)
        self.event_id += 1
        data = {"event_id": self.event_id, "order_id": body["order_id"],
                "transaction_status": body["transaction_status"],
                "status_code": body.get("status_code", "200"),
                "gross_amount": body["gross_amount"], "received_at": now_rfc3339(),
                "raw": body}
        for k in ("currency", "payment_type", "fraud_status", "transaction_id",
                  "transaction_time", "settlement_time"):
            if k in body:
                data[k] = body[k]
        self.publish("ingest", "payment.notification", data)
        return self.event_id

    def status_check(self, order_id, verdict, past_expiry, **fields):
        self.check_id += 1
        data = {"check_id": self.check_id, "order_id": order_id,
                "http_status": {"status": 200, "not_found": 404, "expired": 407}[verdict],
                "verdict": verdict, "checked_at": now_rfc3339(), "past_expiry": past_expiry}
        data.update(fields)
        self.publish("recon", "status.check", data)
        return self.check_id

    # -- kasir-order
    def start_order(self, wait_ready=True):
        assert "order" not in self.procs or self.procs["order"].poll() is not None
        log = open(os.path.join(self.dir, "order.log"), "a")
        self.procs["order"] = subprocess.Popen([self.bin["order"], "--config", self.config],
                                               stdout=log, stderr=log)
        if wait_ready:
            wait_for(lambda: self.admin_ok(), 30, "kasir-order admin socket")
            wait_for(lambda: self._api_up(), 30, "kasir-order api")

    def _api_up(self):
        try:
            return self.http("GET", "/v1/courses")[0] == 200
        except OSError:
            return False

    def kill_order(self, sig=signal.SIGKILL):
        p = self.procs.get("order")
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=30)

    def log_text(self):
        with open(os.path.join(self.dir, "order.log")) as f:
            return f.read()

    def http(self, method, path, body=None, token=True, headers=None, raw=None):
        h = {"Content-Type": "application/json"}
        if token is True:
            h["Authorization"] = "Bearer " + self.token
        elif token:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.api + path, method=method, data=data, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null"), dict(r.headers)
        except urllib.error.HTTPError as e:
            txt = e.read()
            try:
                j = json.loads(txt)
            except ValueError:
                j = txt
            return e.code, j, dict(e.headers)

    def create_order(self, order_id, amount=None, course=None, email="budi@example.com", key=None):
        body = {"course_id": course or course_for(amount),
                "customer": {"name": "Budi Santoso", "email": email, "phone": "+6281234567890"}}
        if order_id is not None:
            body["order_id"] = order_id
        st, j, _ = self.http("POST", "/v1/orders", body,
                             headers={"Idempotency-Key": key} if key else None)
        if st != 201:
            raise AssertionError("create order %s: %s %r" % (order_id, st, j))
        return j

    def admin(self, cmd, args=None, reason=None, actor="test", incident=None):
        req = {"v": 1, "cmd": cmd, "args": args or {}, "actor": actor}
        if reason is not None:
            req["reason"] = reason
        if incident is not None:
            req["incident"] = incident
        out = subprocess.run([self.bin["admin"], self.admin_url, json.dumps(req)],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError("admin %s: no answer: %s" % (cmd, out.stderr))
        return json.loads(out.stdout)

    def admin_ok(self):
        try:
            return self.admin("status").get("ok") is True
        except AssertionError:
            return False

    # -- database
    def db(self, user="postgres"):
        """Autocommit connection: the superuser over the unix socket, any
        other role over TCP with its password from the secrets."""
        return self.pg.connect(None if user == "postgres" else user)

    def sql(self, q, args=None, user="postgres"):
        c = self.db(user)
        try:
            cur = c.cursor()
            cur.execute(q, args)
            return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def status(self, order_id):
        r = self.sql("SELECT status FROM orders.orders WHERE order_id=%s", (order_id,))
        return r[0][0] if r else None

    def applied(self, stream, seq):
        r = self.sql("SELECT seq FROM orders.stream_cursor WHERE stream=%s", (stream,))
        return r and r[0][0] >= seq

    def wait_applied(self, stream, seq, timeout=30):
        wait_for(lambda: self.applied(stream, seq), timeout, "%s seq %d applied" % (stream, seq))

    def events(self, order_id, mtype=None):
        kasirtest.wait_sequenced(self.sql, "orders")
        q = "SELECT type, body FROM orders.stream_log_messages WHERE body::jsonb->'data'->>'order_id' = %s"
        args = [order_id]
        if mtype:
            q += " AND type = %s"
            args.append(mtype)
        return self.sql(q + " ORDER BY seq", args)

    def close(self):
        """Stops everything.  kasir-order must exit 0 on SIGTERM (or have
        been SIGKILLed by the test) and its log must hold no sanitizer
        report; otherwise the test fails (unless it is failing already:
        KASIR_KEEP_TMP set by the caller's error path)."""
        problems = []
        for name in ("order", "producer-ingest", "producer-recon", "fake"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                if name.startswith("producer"):
                    try:
                        p.stdin.close()
                    except OSError:
                        pass
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
                    problems.append("%s ignored SIGTERM" % name)
                if name == "order" and p.returncode != 0:
                    problems.append("kasir-order exited %s after SIGTERM" % p.returncode)
            elif p and name == "order" and p.returncode not in (0, -signal.SIGKILL):
                problems.append("kasir-order died on its own (status %s)" % p.returncode)
        try:
            text = self.log_text()
        except OSError:
            text = ""
        for mark in kasirtest.SANITIZER_MARKS:
            if mark in text:
                problems.append("sanitizer report in %s/order.log (%r)" % (self.dir, mark))
                break
        try:
            self.stop_postgres()
        except Exception:
            pass
        if problems:
            print("\n".join("PROBLEM: " + x for x in problems))
            print(text[-6000:])
            if not os.environ.get("KASIR_KEEP_TMP"):
                print("kept " + self.dir)
                raise AssertionError("kasir-order problems: " + "; ".join(problems))
        if os.environ.get("KASIR_KEEP_TMP"):
            print("kept " + self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
