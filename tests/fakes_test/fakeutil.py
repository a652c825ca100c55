"""Small helpers shared by the tests of tests/fakes/ (stdlib only)."""

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SOURCE_DIR = os.environ.get(
    "KASIR_SOURCE_DIR",
    os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..")))
FAKES_DIR = os.path.join(SOURCE_DIR, "tests", "fakes")
PYTHON = "/usr/bin/python3"
DOCS_KEY = "askvnoibnosifnboseofinbofinfgbiufglnbfg"

_failures = []
_tempdirs = []


def check(cond, what, *detail):
    """Records a failed expectation (prints it) without stopping the test."""
    if cond:
        print("ok   %s" % what)
    else:
        print("FAIL %s %s" % (what, " ".join(repr(d) for d in detail)))
        _failures.append(what)
    return cond


def finish():
    if _failures:
        print("%d check(s) failed: %s" % (len(_failures), _failures))
        sys.exit(1)
    print("all checks passed")
    for d in _tempdirs:  # kept when something failed, for the logs
        shutil.rmtree(d, ignore_errors=True)
    sys.exit(0)


def skip(msg):
    print("SKIP: %s" % msg)
    sys.exit(77)


def fixtures_dir():
    """tests/data/midtrans/notifications: the Midtrans notification
    fixtures (written by tests/data/midtrans/make-fixtures)."""
    return os.path.join(SOURCE_DIR, "tests", "data", "midtrans",
                        "notifications")


def free_port():
    """kasirtest's: outside the ephemeral range and claimed against the
    other test processes running in parallel.  A port the kernel handed
    out for bind(0) and released could go to a fake of another test
    before this one's bound it, and wait_port() then saw that fake
    listening (a suite run: the WhatsApp fake's test talked to an SMTP
    sink, "BadStatusLine: 220 localhost kasir smtp-sink")."""
    import kasirtest
    return kasirtest.free_port()


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not listening after %.0fs" % (port, timeout))


def wait_for(pred, timeout=10.0, interval=0.05):
    # monotonic: a wall clock set forward meanwhile ended a 5 s wait at
    # once (a suite run, 2026-12-07: "refuse ends after for_s" failed
    # with the whole test taking 1.95 s)
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def start(script, args, port, log_path):
    log = open(log_path, "ab")
    proc = subprocess.Popen([PYTHON, os.path.join(FAKES_DIR, script)] + args,
                            stdout=log, stderr=log)
    try:
        wait_port(port, proc=proc)
    except RuntimeError:
        proc.kill()
        proc.wait()
        log.close()
        with open(log_path, "rb") as f:
            sys.stdout.write(f.read().decode(errors="replace"))
        raise
    log.close()
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(port, method, path, body=None, headers=None, timeout=10.0,
            raw=None):
    """Returns (status, parsed JSON or raw bytes, response headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        payload = r.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload
        return r.status, parsed, dict(r.getheaders())
    finally:
        conn.close()


def basic(key):
    return "Basic " + base64.b64encode((key + ":").encode()).decode()


def sha512_sig(order_id, status_code, gross_amount, key):
    return hashlib.sha512((order_id + status_code + gross_amount +
                           key).encode()).hexdigest()


class Receiver:
    """A tiny notification receiver: records every POST; answers with the
    next code from `script` (then `default`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = []   # (monotonic time, path, headers, body dict)
        self.script = []
        self.default = 200
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with outer.lock:
                    outer.received.append((time.monotonic(), self.path,
                                           dict(self.headers), body))
                    code = outer.script.pop(0) if outer.script \
                        else outer.default
                data = b'{"ok":true}'
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "/moved")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/midtrans/notification" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def bodies(self, order_id=None):
        with self.lock:
            return [b for _, _, _, b in self.received
                    if isinstance(b, dict) and
                    (order_id is None or b.get("order_id") == order_id)]

    def entries(self, order_id=None):
        with self.lock:
            return [e for e in self.received
                    if isinstance(e[3], dict) and
                    (order_id is None or e[3].get("order_id") == order_id)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _tempdirs.append(d)
    return d
