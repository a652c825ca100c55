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

import sys
import time

import kasirtest

from faultutil import KEY, check, notification as signed, ready_again


def notification(n):
    return signed("RO", n)


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
        ready_again(st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
