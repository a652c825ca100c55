"""/readyz tells the truth when PostgreSQL refuses every write (found by
an outside attack, 2026-12-07; docs/failure-model.md, "A command that
succeeded is not always work done").

The server is made read-only, as a standby is after a failover
(`default_transaction_read_only`), while notifications keep arriving.
Before, every BEGIN, SELECT and ROLLBACK counted as a sign of life and
kasir-ingest's /readyz stayed 200 for as long as every notification got
503.  Now its committer loop turns silent within its bound (15 s of
failing while asked) and /readyz answers 503 naming it; once the server
takes writes again, the next notification is stored and /readyz is 200.
"""

import json
import sys
import time

import kasirtest

KEY = "askvnoibnosifnboseofinbofinfgbiufglnbfg"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


def notification(n):
    import hashlib
    oid, code, amount = f"RO-{n:04d}", "201", "154600.00"
    b = {"transaction_time": "2026-11-23 16:00:00", "transaction_status": "pending",
         "transaction_id": f"tx-{oid}", "status_message": "midtrans payment notification",
         "status_code": code, "order_id": oid, "gross_amount": amount,
         "payment_type": "bank_transfer", "currency": "IDR",
         "signature_key": hashlib.sha512((oid + code + amount + KEY).encode()).hexdigest()}
    return json.dumps(b).encode()


def main():
    ov = {"INGEST_RATE": "10000", "INGEST_BURST": "10000"}
    with kasirtest.Stack.for_test(server_key=KEY, overrides=ov) as st:
        st.start("ingest")
        r = st.notify(notification(0), {"Content-Type": "application/json"})
        check(r.status == 200, f"a notification stored ({r.status})")
        check(st.admin("ingest", "/readyz").status == 200, "kasir-ingest ready")
        st.pg.psql("ALTER SYSTEM SET default_transaction_read_only = on")
        st.pg.psql("SELECT pg_reload_conf()")
        try:
            t0, n, ready = time.monotonic(), 1, None
            while time.monotonic() - t0 < 45:
                r = st.notify(notification(n), {"Content-Type": "application/json"})
                n += 1
                rz = st.admin("ingest", "/readyz")
                if rz.status == 503:
                    ready = (time.monotonic() - t0, r.status, rz.raw.decode(errors="replace"))
                    break
                time.sleep(0.5)
            check(ready is not None,
                  "kasir-ingest's /readyz answers 503 while every write is refused")
            secs, last, why = ready
            check(last == 503, f"notifications refused meanwhile ({last})")
            check("ingest.committer" in why,
                  f"/readyz names the silent committer after {secs:.0f} s: {why.strip()[:120]}")
        finally:
            st.pg.psql("ALTER SYSTEM RESET default_transaction_read_only")
            st.pg.psql("SELECT pg_reload_conf()")
        time.sleep(1)
        r = st.notify(notification(9999), {"Content-Type": "application/json"})
        check(r.status == 200, f"stored again once the server takes writes ({r.status})")
        st.wait_until(lambda: st.admin("ingest", "/readyz").status == 200, timeout=30,
                      what="kasir-ingest ready again")
        check(True, "kasir-ingest's /readyz is 200 again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
