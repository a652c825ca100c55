"""What the fault tests share: a check that prints, waiting for a daemon's
/readyz to say 503, and signed Midtrans notifications for the test's
server key."""

import hashlib
import json
import time

KEY = "askvnoibnosifnboseofinbofinfgbiufglnbfg"


def check(cond, what):
    """Raises naming what failed, else prints "ok - what" (TAP-like)."""
    if cond:
        print(f"ok - {what}", flush=True)
        return
    raise AssertionError(what)


def not_ready_within(st, svc, seconds):
    """Polls svc's /readyz until it answers 503: (seconds it took, the
    answer's text), or None after `seconds`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        rz = st.admin(svc, "/readyz")
        if rz.status == 503:
            return time.monotonic() - t0, rz.raw.decode(errors="replace")
        time.sleep(0.5)
    return None


def ready_again(st):
    """Waits for kasir-ingest's /readyz to answer 200 again."""
    st.wait_until(lambda: st.admin("ingest", "/readyz").status == 200, timeout=30,
                  what="kasir-ingest ready again")
    check(True, "kasir-ingest's /readyz is 200 again")


def notification(prefix, n):
    """A signed pending notification of order PREFIX-NNNN."""
    oid, code, amount = f"{prefix}-{n:04d}", "201", "154600.00"
    b = {"transaction_time": "2026-11-23 16:00:00", "transaction_status": "pending",
         "transaction_id": f"tx-{oid}", "status_message": "midtrans payment notification",
         "status_code": code, "order_id": oid, "gross_amount": amount,
         "payment_type": "bank_transfer", "currency": "IDR",
         "signature_key": hashlib.sha512((oid + code + amount + KEY).encode()).hexdigest()}
    return json.dumps(b).encode()
