"""nstack - a small stack for kasir-notifier's integration tests.

PostgreSQL (temporary cluster), an SMTP sink (aiosmtpd, one file per
message in a maildir), a fake WhatsApp Cloud API (one JSON line per
accepted request), a stand-in producer of the orders stream
(notifier-test-producer: the real backbone code over a test schema) and
kasir-notifier itself with the config rendered from
services/notifier/config.example.yaml.

The SMTP sink runs in this process, the WhatsApp fake is
tests/fakes/whatsapp-fake in a child process; a test switches their
behaviour directly (refuse / 4xx / 5xx / timeout) and they survive the
daemon being killed.  Everything is torn down by Stack.close().
"""
import email
import email.policy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

PG_BIN = "/usr/lib/postgresql/15/bin"
BUILD = os.environ.get("KASIR_BUILD_DIR", "")
SRC = os.environ.get("KASIR_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def free_port():
    """kasirtest's: claimed against parallel test processes, outside the
    ephemeral range (a bind(0) port released here could go to another
    test's process before ours binds it)."""
    import kasirtest
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


# ---------------------------------------------------------------- SMTP sink

class SmtpSink:
    """aiosmtpd server writing each accepted message to maildir/<n>.eml.
    refuse(): closes the listener (connection refused); accept(): reopens."""

    def __init__(self, maildir, port):
        from aiosmtpd.controller import Controller
        self.maildir = maildir
        self.port = port
        self.n = 0
        self.lock = threading.Lock()
        os.makedirs(maildir, exist_ok=True)
        sink = self

        self.mode = "normal"  # normal | 5xx (RCPT refused) | 4xx (DATA refused)

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if sink.mode == "5xx":
                    return "550 5.1.1 invalid recipient"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                if sink.mode == "4xx":
                    return "451 4.3.0 temporary failure"
                with sink.lock:
                    sink.n += 1
                    path = os.path.join(sink.maildir, "%06d.eml" % sink.n)
                with open(path + ".tmp", "wb") as f:
                    f.write(envelope.original_content or envelope.content)
                os.rename(path + ".tmp", path)
                return "250 OK queued"

        self._controller_cls = Controller
        self._handler = Handler()
        self.controller = None
        self.accept()

    def accept(self):
        if self.controller is None:
            self.controller = self._controller_cls(self._handler, hostname="127.0.0.1",
                                                   port=self.port)
            self.controller.start()

    def refuse(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def messages(self):
        out = []
        for name in sorted(os.listdir(self.maildir)):
            if not name.endswith(".eml"):
                continue
            with open(os.path.join(self.maildir, name), "rb") as f:
                msg = email.message_from_bytes(f.read(), policy=email.policy.default)
            out.append(msg)
        return out

    def close(self):
        self.refuse()


# ------------------------------------------------------------ WhatsApp fake

class WhatsAppFake:
    """tests/fakes/whatsapp-fake (the Cloud API's rules: templates
    registered in deploy/whatsapp/templates.json, no free text outside the
    customer-service window) in a child process, steered through its
    control port.  mode: normal | 4xx | 5xx | timeout (accepts and logs,
    answers after `delay` s) | refuse (listener closed)."""

    def __init__(self, logpath, port, token, tokenfile):
        self.logpath = logpath
        self.port = port
        self.control = free_port()
        self.delay = 5.0
        self._mode = "normal"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SRC, "tests", "fakes", "whatsapp-fake"),
             "--listen", "127.0.0.1:%d" % port, "--control", "127.0.0.1:%d" % self.control,
             "--out", logpath, "--token-file", tokenfile,
             "--templates", os.path.join(SRC, "deploy", "whatsapp", "templates.json")],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(os.path.dirname(logpath), "fake.log"), "w"))
        wait_for(lambda: self._ctl("GET", "/_fake/health") is not None, 20, "whatsapp-fake")

    def _ctl(self, method, path, body=None):
        import http.client
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.control, timeout=5)
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            out = json.loads(r.read() or b"null")
            c.close()
            return out if r.status == 200 else None
        except OSError:
            return None

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, m):
        body = {"mode": m}
        if m == "timeout":
            body["delay_s"] = self.delay
        if self._ctl("POST", "/_fake/mode", body) is None:
            raise AssertionError("whatsapp-fake refused mode %r" % m)
        self._mode = m

    def accept(self):
        self.mode = "normal"

    def refuse(self):
        self.mode = "refuse"

    def messages(self):
        """One dict per accepted message: request, text (what the customer
        reads: the registered template body with its parameters), ..."""
        if not os.path.exists(self.logpath):
            return []
        with open(self.logpath) as f:
            return [json.loads(l) for l in f if l.strip()]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ------------------------------------------------------------------- stack

class Stack:
    def __init__(self, overrides=None, name="notifier"):
        if not BUILD or not os.path.isdir(BUILD):
            skip("KASIR_BUILD_DIR not set (run through ctest)")
        self.bin = {
            "notifier": os.path.join(BUILD, "bin", "kasir-notifier"),
            "producer": os.path.join(BUILD, "tests", "notifier-test-producer"),
            "admin": os.path.join(BUILD, "tests", "admin-call"),
        }
        for b in self.bin.values():
            if not os.path.exists(b):
                raise AssertionError("missing binary " + b)
        self.overrides = overrides or {}
        self.dir = tempfile.mkdtemp(prefix="kasir-%s-" % name)
        os.chmod(self.dir, 0o755)
        self.procs = {}
        self.notifier_log = None
        self.ports = {}
        self.smtp = self.wa = None
        self.pg_dir = None
        try:
            self._secrets()
            self._postgres()
            self.smtp = SmtpSink(os.path.join(self.dir, "mail"), self.port("SMTP"))
            os.makedirs(os.path.join(self.dir, "whatsapp"), exist_ok=True)
            self.wa = WhatsAppFake(os.path.join(self.dir, "whatsapp", "messages.jsonl"),
                                   self.port("WHATSAPP"), self.token,
                                   os.path.join(self.secrets, "whatsapp-token"))
            self._producer()
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
        self.token = "test-whatsapp-token-" + os.urandom(8).hex()
        files = {"msg-k1": os.urandom(32).hex(), "smtp-password": "sink-password",
                 "whatsapp-token": self.token,
                 "db-kasir_notifier": "x", "db-kasir_notifier_owner": "x"}
        for k, v in files.items():
            p = os.path.join(self.secrets, k)
            with open(p, "w") as f:
                f.write(v + "\n")
            os.chmod(p, 0o600)

    def _postgres(self):
        self.pg_dir = os.path.join(self.dir, "pg")
        os.makedirs(self.pg_dir)
        shutil.chown(self.pg_dir, "postgres", "postgres")
        self.pg_port = self.port("DB")
        out = subprocess.run(["runuser", "-u", "postgres", "--", PG_BIN + "/initdb", "-D",
                              self.pg_dir + "/data", "-A", "trust", "-U", "postgres",
                              "--no-sync", "-E", "UTF8"], capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError("initdb failed: " + out.stderr)
        self.procs["postgres"] = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", PG_BIN + "/postgres", "-D", self.pg_dir + "/data",
             "-p", str(self.pg_port), "-k", self.pg_dir, "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=100"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "pg.log"), "w"))

        def up():
            try:
                psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres",
                                 dbname="postgres").close()
                return True
            except psycopg2.OperationalError:
                return False
        wait_for(up, 30, "postgres")
        c = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="postgres")
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE ROLE kasir_notifier_owner LOGIN")
        cur.execute("CREATE ROLE kasir_notifier LOGIN")
        cur.execute("CREATE DATABASE kasir")
        c.close()
        c = self.db(user="postgres")
        cur = c.cursor()
        cur.execute("CREATE SCHEMA notify AUTHORIZATION kasir_notifier_owner")
        cur.execute("CREATE SCHEMA testorders")
        c.close()

    def db(self, user="postgres"):
        c = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=user, dbname="kasir")
        c.autocommit = True
        return c

    def sql(self, q, args=None, user="postgres"):
        c = self.db(user)
        try:
            cur = c.cursor()
            cur.execute(q, args)
            return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def _producer(self):
        dsn = "host=127.0.0.1 port=%d dbname=kasir user=postgres" % self.pg_port
        self.procs["producer"] = subprocess.Popen(
            [self.bin["producer"], "testorders", dsn,
             "tcp://127.0.0.1:%d" % self.port("ORDERS_PUB"),
             "tcp://127.0.0.1:%d" % self.port("ORDERS_REPLAY"),
             os.path.join(self.secrets, "msg-k1")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.dir, "producer.log"), "w"), text=True, bufsize=1)
        line = self.procs["producer"].stdout.readline()
        if line.strip() != "ready":
            raise AssertionError("producer did not start: %r (see %s/producer.log)" % (line, self.dir))

    def _config(self):
        with open(os.path.join(SRC, "services", "notifier", "config.example.yaml")) as f:
            text = f.read()

        def tunable(m):
            name, default = m.group(1), m.group(2)
            return str(self.overrides.get(name, default))
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
        self.config = os.path.join(self.dir, "notifier.yaml")
        with open(self.config, "w") as f:
            f.write(text)
        self.admin_url = "ipc://%s/notifier.sock" % self.run

    # -- producer
    def publish(self, mtype, data):
        p = self.procs["producer"]
        p.stdin.write("%s %s\n" % (mtype, json.dumps(data)))
        p.stdin.flush()
        line = p.stdout.readline().strip()
        if not line.startswith("ok "):
            raise AssertionError("publish %s failed: %s" % (mtype, line))
        return int(line[3:])

    # -- notifier
    def start_notifier(self, wait_ready=True):
        assert "notifier" not in self.procs or self.procs["notifier"].poll() is not None
        self.notifier_log = open(os.path.join(self.dir, "notifier.log"), "a")
        self.procs["notifier"] = subprocess.Popen(
            [self.bin["notifier"], "--config", self.config],
            stdout=self.notifier_log, stderr=self.notifier_log)
        if wait_ready:
            wait_for(lambda: self.admin_ok(), 30, "kasir-notifier admin socket")

    def kill_notifier(self, sig=signal.SIGKILL):
        p = self.procs.get("notifier")
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=30)

    def stop_notifier(self):
        self.kill_notifier(signal.SIGTERM)

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

    def log_text(self):
        with open(os.path.join(self.dir, "notifier.log")) as f:
            return f.read()

    def jobs(self, order_id=None):
        q = ("SELECT id, order_id, kind, channel, state, attempts, last_error, uncertain"
             " FROM notify.job")
        if order_id:
            return self.sql(q + " WHERE order_id = %s ORDER BY id", (order_id,))
        return self.sql(q + " ORDER BY id")

    def close(self):
        for name in ("notifier", "producer"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                if name == "producer":
                    try:
                        p.stdin.close()
                    except OSError:
                        pass
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in (self.smtp, self.wa):
            if f:
                f.close()
        p = self.procs.get("postgres")
        if p and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KASIR_KEEP"):
            print("kept " + self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------ order events

def snapshot(order_id, status, name="Siti Rahayu", email_addr="siti@example.com",
             phone="081234567890", course="Sinematografi Dasar", amount=150000,
             created_at=None, expires_at=None):
    now = time.time()
    fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))
    return {
        "order_id": order_id, "status": status, "course_id": "sinema-101",
        "course_title": course, "amount": amount, "currency": "IDR",
        "customer": {"name": name, "email": email_addr, "phone": phone},
        "created_at": created_at or fmt(now),
        "expires_at": expires_at or fmt(now + 24 * 3600),
        "redirect_url": "https://app.sandbox.midtrans.com/snap/v4/redirection/%s" % order_id,
    }


def paid(order_id, **kw):
    d = snapshot(order_id, "PAID", **kw)
    d["evidence"] = {"source": "ingest", "ref": 1}
    d["paid_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return d


def granted(order_id, **kw):
    d = snapshot(order_id, "PAID", **kw)
    d["customer_email"] = d["customer"]["email"]
    d["valid_until"] = "2027-11-23T09:00:00.000Z"
    return d


def pay(stack, order_id, **kw):
    """order.created, order.payment_link, order.paid and access.granted as
    kasir-order emits them."""
    stack.publish("order.created", snapshot(order_id, "PENDING", **kw))
    stack.publish("order.payment_link", snapshot(order_id, "PENDING", **kw))
    stack.publish("order.paid", paid(order_id, **kw))
    stack.publish("access.granted", granted(order_id, **kw))


def mail_for(stack, order_id):
    return [m for m in stack.smtp.messages() if m.get("X-Kasir-Order") == order_id]


def wa_for(stack, order_id):
    return [m for m in stack.wa.messages() if order_id in m["text"]]
