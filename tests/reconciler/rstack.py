"""rstack - what the reconciler's integration tests share.

A kasirtest.Stack with the fake Midtrans, the real kasir-ingest,
kasir-order and kasir-reconciler (short schedule tunables unless a test
overrides them), and helpers: create an order through the API, pay it at
the fake with notifications dropped, call the reconciler's admin socket,
read the evidence tables.
"""
import json
import os
import subprocess
import sys
import time

import kasirtest

# Seconds instead of minutes: the test schedule.  A test may override any.
FAST = {
    "RECON_FIRST_CHECK": "2s",
    "RECON_BACKOFF": "2s,3s",
    "RECON_EXPIRY_GRACE": "2s",
    "RECON_MODE_INTERVAL": "2s",
    "RECON_AUTO_SILENCE": "1h",     # automatic mode off unless a test wants it
    "RECON_CONNECT_TIMEOUT": "1s",
    "RECON_TIMEOUT": "2s",
    "RECON_RETRIES": "2",
    "RECON_RETRY_BACKOFF": "200ms",
    "RECON_RETRY": "1s",
    "RECON_RETRY_MAX": "2s",
    "RECON_LEASE": "45s",
    "RECON_POLL": "200ms",
    "RECON_BATCH": "8",
    "RECON_CONCURRENCY": "4",
    "RECON_RPS": "20",
    "FAKE_MIDTRANS_RETRY_SCHEDULE": "1,1,1",
}

COURSE = "bikin-film-pendek"  # 150000, from services/order/config.example.yaml


def stack(overrides=None, name=None, durable=False):
    """kasirtest.Stack.for_test with FAST + overrides; durable=True keeps
    fsync on (the tests whose subject is durability)."""
    o = dict(FAST)
    o.update(overrides or {})
    for svc in ("ingest", "order", "reconciler"):
        if not os.path.exists(os.path.join(kasirtest.build_dir(), "bin",
                                           "kasir-" + svc)):
            raise AssertionError("kasir-%s is not built" % svc)
    return kasirtest.Stack.for_test(name=name, overrides=o, durable=durable)


def _api_up(st):
    try:
        return st.api("GET", "/v1/courses").status == 200
    except OSError:
        return False


def start(st):
    st.start_all(services=["ingest", "order", "reconciler"])
    # kasir-order's /readyz can answer before its API listener is up
    st.wait_until(lambda: _api_up(st), timeout=30, what="kasir-order API")


def create_order(st, email="budi@example.com"):
    r = st.api("POST", "/v1/orders", {
        "course_id": COURSE,
        "customer": {"name": "Budi Santoso", "email": email,
                     "phone": "+6281234567890"}})
    assert r.status == 201, r
    return r.body["order_id"]


def pay(st, order_id, notify="drop", payment_type="bank_transfer"):
    r = st.fake("POST", "/_fake/orders/%s/pay" % order_id,
                {"notify": notify, "payment_type": payment_type})
    assert r.status == 200, r
    return r.body


def order_status(st, order_id):
    rows = st.sql("SELECT status FROM orders.orders WHERE order_id = %s",
                  (order_id,))
    return rows[0][0] if rows else None


def entitlements(st, order_id):
    return st.sql("SELECT count(*) FROM orders.entitlements WHERE order_id = %s"
                  " AND revoked_at IS NULL", (order_id,))[0][0]


def transitions(st, order_id, to=None):
    q = ("SELECT from_status, to_status, evidence_source, evidence_ref"
         " FROM orders.transitions WHERE order_id = %s")
    args = [order_id]
    if to:
        q += " AND to_status = %s"
        args.append(to)
    return st.sql(q + " ORDER BY id", args)


def checks(st, order_id):
    return st.sql("SELECT id, verdict, http_status, transaction_status,"
                  " published, past_expiry, attempt FROM recon.status_check"
                  " WHERE order_id = %s ORDER BY id", (order_id,))


def admin(st, cmd, args=None, reason=None, actor="test"):
    """One request on the reconciler's admin socket (ipc: the peer is
    root, so the role is engineer)."""
    tool = os.path.join(kasirtest.build_dir(), "tests", "admin-call")
    req = {"v": 1, "cmd": cmd, "args": args or {}, "actor": actor}
    if reason is not None:
        req["reason"] = reason
    url = "ipc://%s/reconciler.sock" % st.run_path
    out = subprocess.run([tool, url, json.dumps(req)], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError("admin %s: no answer: %s" % (cmd, out.stderr))
    return json.loads(out.stdout)


def ingest_events(st, order_id):
    return st.sql("SELECT count(*) FROM ingest.payment_event"
                  " WHERE order_id = %s", (order_id,))[0][0]


def log(msg):
    print("%s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)
    sys.stdout.flush()
