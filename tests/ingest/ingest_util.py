"""Helpers shared by the kasir-ingest integration tests."""

import hashlib
import http.client
import json
import os
import socket
import subprocess

import kasirtest
import midtrans_fixtures

# The docs' example server key: the fixtures are signed with it.
DOCS_KEY = midtrans_fixtures.TEST_KEY
JSON = {"Content-Type": "application/json"}


def samples():
    """[(name, raw bytes)] of the Midtrans notification fixtures
    (tests/data/midtrans/notifications)."""
    return midtrans_fixtures.notifications()


def signature(order_id, status_code, gross_amount, key=DOCS_KEY):
    return hashlib.sha512((order_id + status_code + gross_amount + key).encode()).hexdigest()


def notification(order_id, status="settlement", code="200", amount="100000.00",
                 key=DOCS_KEY, **extra):
    """A signed notification body (bytes)."""
    body = {"transaction_time": "2026-11-23 16:00:00", "transaction_status": status,
            "transaction_id": "tx-" + order_id, "status_message": "midtrans payment notification",
            "status_code": code, "order_id": order_id, "gross_amount": amount,
            "payment_type": "bank_transfer", "currency": "IDR", "fraud_status": "accept",
            "signature_key": signature(order_id, code, amount, key)}
    body.update(extra)
    return json.dumps(body).encode()


def raw_request(port, method, path, headers, body=b"", source=None, timeout=10,
                send_body=True):
    """One request over a plain socket (for bodies the server may refuse
    before reading them, and to choose the client's source address).
    Returns (status, headers dict lower-cased, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for k, v in headers.items():
            head += f"{k}: {v}\r\n"
        head += "\r\n"
        s.sendall(head.encode())
        if send_body and body:
            try:
                s.sendall(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the body was read: read the answer
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise AssertionError(f"no HTTP answer: {data[:200]!r}")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def post_from(port, path, body, source, headers=None, timeout=10):
    """POST with the TCP connection bound to source (e.g. 127.0.0.2)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        h = dict(JSON)
        h.update(headers or {})
        conn.request("POST", path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def admin(st, cmd, args=None):
    """One admin socket call through tests/ingest_admin_call; the reply."""
    tool = os.path.join(kasirtest.build_dir(), "tests", "ingest_admin_call")
    url = st.config_value("ingest", "admin.socket")
    argv = [tool, url, cmd] + ([json.dumps(args)] if args is not None else [])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {r.returncode}: {r.stderr}")
    return json.loads(r.stdout)


def count(st, table, where="TRUE", params=None):
    return st.sql(f"SELECT count(*) FROM {table} WHERE {where}", params)[0][0]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


def pg_start_same_port(st):
    """Starts the stack's PostgreSQL again on the SAME port (the daemons'
    DSNs name it).  kasirtest.PgCluster picks a new port when the old one
    "is not free", and its check binds without SO_REUSEADDR, so the
    TIME_WAIT sockets of the connections we just killed make it move the
    cluster.  PostgreSQL itself binds with SO_REUSEADDR; check the same way.
    (Reported to the harness owner; remove once kasirtest does this.)"""
    def port_free(port, host="127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return True
            except OSError:
                return False
    port = st.pg.port
    saved = kasirtest._port_free
    kasirtest._port_free = port_free
    try:
        st.pg.start()
    finally:
        kasirtest._port_free = saved
    if st.pg.port != port:
        raise AssertionError(f"PostgreSQL moved from port {port} to {st.pg.port}")
    st.pg.wait_ready()
