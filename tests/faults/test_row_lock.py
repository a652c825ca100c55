"""/readyz tells the truth while one locked row stops a stream (found by an
outside fault attack, 2026-12-08; liveness.h "stalled").

An operator's session holds one order's row (BEGIN; SELECT ... FOR
UPDATE, and goes for coffee).  kasir-order's ingest consumer needs that
row for the order's notification: each try of the batch ends in
statement_timeout, and every later message of the stream, other
customers' payments, waits behind it.  Its cursor reads still succeed,
and those used to count as signs of life: /readyz said 200 for as long
as the lock was held.  Now a consumer whose batches keep failing is
stalled, and past its loop's bound /readyz answers 503 naming it.  Once
the session ends, both orders are PAID and /readyz is 200 again.
"""

import sys

import kasirtest

from faultutil import check, not_ready_within

COURSE = "bikin-film-pendek"


def order(st, n):
    r = st.api("POST", "/v1/orders", {"course_id": COURSE, "customer": {
        "name": "Budi", "email": f"lock{n}@example.com", "phone": f"+6281234567{n:03d}"}})
    check(r.status == 201, f"order {n} created ({r.status})")
    return r.body["order_id"]


def status(st, oid):
    return st.sql("SELECT status FROM orders.orders WHERE order_id = %s", (oid,))[0][0]


def main():
    ov = {"ORDER_SIGNATURE_ONLY": "true"}
    with kasirtest.Stack.for_test(overrides=ov) as st:
        st.start_all(services=["ingest", "order"])
        a, b = order(st, 1), order(st, 2)
        check(st.admin("order", "/readyz").status == 200, "kasir-order ready")
        held = st.pg.connect()
        held.autocommit = False
        try:
            held.cursor().execute("SELECT 1 FROM orders.orders WHERE order_id = %s"
                                  " FOR UPDATE", (a,))
            for oid in (a, b):
                r = st.fake("POST", f"/_fake/orders/{oid}/pay",
                            {"payment_type": "bank_transfer"})
                check(r.status in (200, 202), f"{oid} paid at Midtrans")
            why = not_ready_within(st, "order", 90)
            check(why is not None, "kasir-order's /readyz answers 503 while a row lock"
                  " stops its ingest consumer")
            secs, text = why
            check("order.consume.ingest" in text and "failed for" in text,
                  f"/readyz names the stalled consumer after {secs:.0f} s:"
                  f" {text.strip()[:160]}")
            check(status(st, b) == "PENDING",
                  "the other customer's payment waits behind the locked row")
        finally:
            held.rollback()
            held.close()
        st.wait_until(lambda: status(st, a) == "PAID" and status(st, b) == "PAID",
                      timeout=60, what="both orders PAID once the lock is gone")
        check(True, "both orders PAID once the lock is gone")
        st.wait_until(lambda: st.admin("order", "/readyz").status == 200, timeout=30,
                      what="kasir-order ready again")
        check(True, "kasir-order's /readyz is 200 again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
