"""Issue 3: PostgreSQL stopped under the running payment path.  kasir-ingest
answers 503 (never 200) to every notification, both daemons stay up, and
after PostgreSQL returns the redelivered notifications -- the fake
Midtrans's own retries and a Midtrans-like re-POST -- are stored and
applied: the orders end PAID with access, each payment once.

Default mode (issue 13): the payments are made at the fake Midtrans, so
the reconciler (which loses PostgreSQL too) confirms them once it is back;
every PAID transition names a Status API answer."""

import time

from paystack import PayStack, check, main_wrapper, notification


def attempts(st, oid):
    """HTTP statuses of the fake's delivery attempts for oid."""
    r = st.fake("GET", f"/_fake/orders/{oid}")
    if r.status != 200:
        raise AssertionError(f"fake truth of {oid}: {r}")
    return [a.get("http_status") for n in r.body.get("notifications", [])
            for a in n.get("attempts", [])]


def main():
    # the fake retries for ~40 s: longer than the outage below; durable:
    # the subject is PostgreSQL going away (fsync stays on)
    with PayStack.for_payment(overrides={
            "FAKE_MIDTRANS_RETRY_SCHEDULE": "1,2,2,3,3,4,5,5,5,5,5"}, durable=True) as st:
        st.start_payment_path()
        for oid in ("OUT-0", "OUT-1", "OUT-2", "OUT-3"):
            st.create_order(oid, 275000, email=f"{oid.lower()}@example.com")
        st.truth("OUT-0", "pay")
        st.deliver(notification("OUT-0", "settlement", "275000.00"))
        check(st.status("OUT-0") == "PAID", "before the outage: OUT-0 PAID")

        st.pg.stop("fast")
        t_down = time.monotonic()
        st.truth("OUT-3", "pay")  # the fake answers without PostgreSQL
        body = notification("OUT-3", "settlement", "275000.00")
        for i in range(3):
            r = st.post(body)
            check(r.status == 503, f"database down: POST #{i + 1} answered {r.status}, want 503")
        for oid in ("OUT-1", "OUT-2"):
            r = st.fake("POST", f"/_fake/orders/{oid}/pay", {"payment_type": "gopay"})
            check(r.status == 200, f"fake Midtrans pays {oid}")
        st.wait_until(lambda: all(len(attempts(st, o)) >= 2 for o in ("OUT-1", "OUT-2")),
                      20, "the fake's first deliveries and a retry")
        got = {o: attempts(st, o) for o in ("OUT-1", "OUT-2")}
        check(all(s and all(a == 503 for a in s) for s in got.values()),
              f"every delivery during the outage answered 503 ({got})")
        check(st.metric("ingest", "kasir_ingest_requests_total", outcome="2xx") == 1,
              "no 2xx counted during the outage")
        r = st.api("GET", "/v1/orders/OUT-0")
        check(r.status >= 500, f"kasir-order API without its database: {r.status}")
        time.sleep(max(0.0, 4.0 - (time.monotonic() - t_down)))
        check(st.running("ingest") and st.running("order") and st.running("reconciler"),
              "the daemons stay up")

        st.pg.start()
        check(True, f"PostgreSQL back on port {st.pg.port} after "
              f"{time.monotonic() - t_down:.1f}s")
        # Midtrans retries OUT-3 (the 503'd direct POST); the fake retries its own
        st.wait_until(lambda: st.post(body).status == 200, 30, "re-POST of OUT-3 accepted")
        st.wait_until(lambda: all(st.status(o) == "PAID" for o in ("OUT-1", "OUT-2", "OUT-3")),
                      60, "OUT-1..3 PAID after PostgreSQL returned")
        for oid in ("OUT-1", "OUT-2"):
            st.wait_until(lambda: st.fake("GET", f"/_fake/orders/{oid}").body
                          ["notifications"][0]["delivered"], 30, f"{oid} delivered")
            a = attempts(st, oid)
            check(a[-1] == 200 and 503 in a, f"{oid}: 503 while down, then 200 ({a})")
        st.wait_applied()
        for oid in ("OUT-0", "OUT-1", "OUT-2", "OUT-3"):
            n = st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = %s",
                       (oid,))[0][0]
            check(n == 1, f"{oid}: stored once ({n})")
            check(st.entitlements(oid, active_only=False) == 1 and st.paid_transitions(oid) == 1
                  and st.messages(oid, "order.paid") == 1,
                  f"{oid}: PAID once, one entitlement, one order.paid")
            check(st.sources(oid) == [("PAID", "recon")] and not st.contradicted(oid),
                  f"{oid}: PAID on the Status API's answer, not contradicted")
            a = st.access(f"{oid.lower()}@example.com", "kursus-275000")
            check(a["active"] is True, f"{oid}: access active ({a})")


if __name__ == "__main__":
    main_wrapper(main)
