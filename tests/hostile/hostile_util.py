"""Helpers of the hostile-input tests (issue 8, item 2): raw HTTP over
sockets, the slowloris and flood generators (bounded, loopback only) and
the "daemon still up" checks."""

import hashlib
import json
import select
import socket
import threading
import time


DOCS_KEY = "askvnoibnosifnboseofinbofinfgbiufglnbfg"
JSON = {"Content-Type": "application/json"}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


def signature(order_id, status_code, gross_amount, key=DOCS_KEY):
    return hashlib.sha512((order_id + status_code + gross_amount + key).encode()).hexdigest()


def notif_dict(order_id, status="settlement", code="200", amount="100000.00", key=DOCS_KEY):
    return {"transaction_time": "2026-11-23 16:00:00", "transaction_status": status,
            "transaction_id": "tx-" + order_id, "status_message": "midtrans payment notification",
            "status_code": code, "order_id": order_id, "gross_amount": amount,
            "payment_type": "bank_transfer", "currency": "IDR", "fraud_status": "accept",
            "signature_key": signature(order_id, code, amount, key)}


def notif(order_id, **kw):
    return json.dumps(notif_dict(order_id, **kw)).encode()


def raw_http(port, data, source=None, timeout=15, read=True):
    """Sends data (a whole request, bytes) on a fresh connection and reads
    until the server closes.  Returns (status or None when the server closed
    without answering, head text, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    buf = b""
    try:
        # In pieces, stopping as soon as the server answers: a server that
        # refuses early (413) and closes would otherwise reset the
        # connection under our writes and the answer would be lost.
        try:
            for off in range(0, len(data), 16384):
                if off and select.select([s], [], [], 0)[0]:
                    break
                s.sendall(data[off:off + 16384])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all was sent: read the answer
        if not read:
            return None, "", b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return None, head.decode("latin-1"), body
    return int(lines[0].split()[1]), head.decode("latin-1"), body


def request_bytes(method, path, headers, body=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for k, v in headers.items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


class Alive:
    """Remembers each daemon's pid; check() asserts it is unchanged and
    that /healthz answers 200."""

    def __init__(self, st, names):
        self.st = st
        self.pids = {n: st.pid(n) for n in names}

    def check(self, when):
        for n, pid in self.pids.items():
            check(self.st.running(n) and self.st.pid(n) == pid,
                  f"{when}: {n} still running with pid {pid}")
            r = self.st.admin(n, "/healthz")
            check(r.status == 200, f"{when}: {n} /healthz 200 ({r.status})")


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


class Slowloris:
    """conns connections spread over the given source addresses, each
    sending a request head one byte every `interval` seconds and never
    finishing it.  Bounded: stops after `seconds`.  Counts connections the
    server closed (it may time them out or refuse them)."""

    def __init__(self, port, sources, conns, seconds, interval=0.25):
        self.port, self.sources, self.conns = port, sources, conns
        self.seconds, self.interval = seconds, interval
        self.opened = self.closed_by_server = self.refused = 0
        self.bytes_sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def join(self):
        self.thread.join(self.seconds + 30)

    def _run(self):
        head = (b"POST /midtrans/notification HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nX-Slow: " + b"a" * 100000)
        socks = []
        for i in range(self.conns):
            src = self.sources[i % len(self.sources)]
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2,
                                             source_address=(src, 0))
                s.setblocking(False)
                socks.append([s, 0])
                self.opened += 1
            except OSError:
                self.refused += 1
        end = time.monotonic() + self.seconds
        while time.monotonic() < end and socks:
            alive = []
            for ent in socks:
                s, pos = ent
                try:
                    s.send(head[pos:pos + 1])
                    ent[1] = pos + 1
                    self.bytes_sent += 1
                    alive.append(ent)
                except BlockingIOError:
                    alive.append(ent)
                except OSError:
                    self.closed_by_server += 1
                    s.close()
            socks = alive
            time.sleep(self.interval)
        for s, _ in socks:
            s.close()


class Flood:
    """total connections from `sources` (loopback), `workers` at a time,
    each sending one junk or forged request and reading the answer.
    Bounded by total and by `seconds`.  Records every status seen."""

    def __init__(self, port, sources, total, workers, seconds, bodies, valid=None,
                 valid_every=0):
        self.port, self.sources, self.total = port, sources, total
        self.workers, self.seconds, self.bodies = workers, seconds, bodies
        # every valid_every-th connection carries valid(i), a correctly
        # signed notification, instead of junk: its answer goes to
        # valid_results [(status, latency)]
        self.valid, self.valid_every = valid, valid_every
        self.valid_results = []
        self.statuses = {}
        self.errors = 0
        self.done = 0
        self._lock = threading.Lock()
        self._next = 0
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True)
                        for w in range(workers)]

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(self.seconds + 30)
        self.elapsed = time.monotonic() - self.t0

    def _take(self):
        with self._lock:
            if self._next >= self.total or time.monotonic() - self.t0 > self.seconds:
                return None
            self._next += 1
            return self._next

    def _run(self, w):
        while True:
            i = self._take()
            if i is None:
                return
            is_valid = self.valid_every and i % self.valid_every == 0
            body = self.valid(i) if is_valid else self.bodies[i % len(self.bodies)]
            data = request_bytes("POST", "/midtrans/notification",
                                 {"Content-Type": "application/json",
                                  "Content-Length": str(len(body))}, body)
            t0 = time.monotonic()
            try:
                st, _, _ = raw_http(self.port, data, self.sources[i % len(self.sources)],
                                    timeout=20)
            except OSError:
                st = None
            if is_valid:
                with self._lock:
                    self.valid_results.append((st, time.monotonic() - t0))
                continue
            with self._lock:
                self.done += 1
                if st is None:
                    self.errors += 1
                else:
                    self.statuses[st] = self.statuses.get(st, 0) + 1


def raise_fd_limit(want):
    """The soft RLIMIT_NOFILE up to want (bounded by the hard limit)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Burst:
    """total connections opened at once (non-blocking, from `sources` on
    loopback), each sending one junk or forged request right away; then
    every answer is read.  Bounded by total and by `seconds`.  t0/t1 frame
    the window during which the connections were open."""

    def __init__(self, port, sources, total, seconds, bodies, valid=None, valid_every=0):
        self.port, self.sources, self.total = port, sources, total
        self.seconds, self.bodies = seconds, bodies
        self.valid, self.valid_every = valid, valid_every  # as in Flood
        self.valid_results = []
        self.statuses = {}
        self.no_answer = self.connect_failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def join(self):
        self.thread.join(self.seconds + 30)

    def _run(self):
        import selectors
        sel = selectors.DefaultSelector()
        self.t0 = time.monotonic()
        for i in range(self.total):
            is_valid = bool(self.valid_every and i % self.valid_every == 0)
            body = self.valid(i) if is_valid else self.bodies[i % len(self.bodies)]
            req = request_bytes("POST", "/midtrans/notification",
                                {"Content-Type": "application/json",
                                 "Content-Length": str(len(body))}, body)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((self.sources[i % len(self.sources)], 0))
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                sel.register(s, selectors.EVENT_WRITE, [req, b"", is_valid])
            except OSError:
                self.connect_failed += 1
        end = self.t0 + self.seconds
        while sel.get_map() and time.monotonic() < end:
            for key, ev in sel.select(timeout=0.5):
                s, st = key.fileobj, key.data
                try:
                    if ev & selectors.EVENT_WRITE:
                        n = s.send(st[0])
                        st[0] = st[0][n:]
                        if not st[0]:
                            sel.modify(s, selectors.EVENT_READ, st)
                        continue
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    st[1] += chunk
                    continue
                sel.unregister(s)
                s.close()
                self._record(st)
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
            key.fileobj.close()
            self._record(key.data)
        self.t1 = time.monotonic()

    def _record(self, st):
        buf, is_valid = st[1], st[2]
        code = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else None
        if is_valid:
            self.valid_results.append((code, time.monotonic() - self.t0))
        elif code is not None:
            self.statuses[code] = self.statuses.get(code, 0) + 1
        else:
            self.no_answer += 1
