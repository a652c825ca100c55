"""Issue 3: SIGKILL kasir-order again and again while 1,000 paid
notifications arrive through kasir-ingest (signed POSTs, ~20% of them
delivered twice, and a share paid through the fake Midtrans), restarting it
each time.  Afterwards every paid order is PAID with exactly one
entitlement, one PAID transition, one order.paid and one access.granted --
none twice -- and every stored notification was applied exactly once."""

import queue
import random
import threading
import time

from paystack import PayStack, check, main_wrapper, notification

N = 1000
VIA_FAKE = 200          # the first VIA_FAKE orders are paid by the fake Midtrans
SENDERS = 8
AMOUNT = 154600


def pool(n, jobs, fn):
    """Runs fn(job) for every job on n threads; re-raises the first error."""
    q = queue.Queue()
    for j in jobs:
        q.put(j)
    errors = []

    def worker():
        while not errors:
            try:
                j = q.get_nowait()
            except queue.Empty:
                return
            try:
                fn(j)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
    ts = [threading.Thread(target=worker) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def main():
    with PayStack.for_payment(overrides={"FAKE_MIDTRANS_RETRY_SCHEDULE": "1,1,2,2,5"}) as st:
        st.start_payment_path()
        ids = ["KILL-%04d" % i for i in range(N)]
        t0 = time.monotonic()
        pool(4, ids, lambda oid: st.create_order(oid, AMOUNT, email=f"{oid.lower()}@example.com"))
        check(True, f"{N} orders created through the API in {time.monotonic() - t0:.1f}s")

        stop = threading.Event()
        kills = []

        def killer():
            rnd = random.Random(7)
            while not stop.is_set():
                time.sleep(rnd.uniform(0.4, 1.2))
                if stop.is_set():
                    break
                st.kill("order")        # SIGKILL, waits for it to die
                kills.append(time.monotonic())
                time.sleep(rnd.uniform(0.0, 0.3))
                st.start("order", wait=False)

        rnd = random.Random(11)
        direct = []
        for oid in ids[VIA_FAKE:]:
            body = notification(oid, "settlement", "%d.00" % AMOUNT)
            direct.append(body)
            if rnd.random() < 0.2:      # Midtrans duplicates
                direct.append(body)
        rnd.shuffle(direct)
        answers = {}

        def send(body):
            # like Midtrans: retry until 2xx (kasir-ingest does not need
            # kasir-order, so it should answer 200 the first time)
            for _ in range(5):
                r = st.post(body)
                answers[r.status] = answers.get(r.status, 0) + 1
                if r.status == 200:
                    return
                time.sleep(0.5)
            raise AssertionError(f"{body['order_id']}: kasir-ingest kept answering {r}")

        def pay_via_fake(oid):
            r = st.fake("POST", f"/_fake/orders/{oid}/pay", {"payment_type": "bank_transfer"})
            if r.status != 200:
                raise AssertionError(f"fake pay {oid}: {r}")

        kt = threading.Thread(target=killer)
        kt.start()
        t0 = time.monotonic()
        try:
            pool(2, ids[:VIA_FAKE], pay_via_fake)
            pool(SENDERS, direct, send)
            sent_for = time.monotonic() - t0
            # keep killing while the fake's deliveries and the backlog drain
            expected = len(direct) + VIA_FAKE
            st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
                          >= expected, 60, f"{expected} notifications stored by kasir-ingest")
            time.sleep(1.0)
        finally:
            stop.set()
            kt.join()
        check(True, f"{expected} notifications ({len(direct)} POSTed, {VIA_FAKE} by the fake) "
              f"in {sent_for:.1f}s; answers {answers}")
        check(len(kills) >= 5, f"kasir-order SIGKILLed {len(kills)} times while they arrived")
        if not st.running("order"):
            st.start("order", wait=False)
        st.wait_ready("order")
        st.wait_applied(timeout=90)

        stored = st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
        check(stored == expected, f"kasir-ingest stored each delivery once ({stored})")
        bad = st.sql("SELECT order_id, status FROM orders.orders WHERE status <> 'PAID'")
        check(bad == [], f"every paid order is PAID ({len(bad)} not: {bad[:5]})")
        multi = st.sql("SELECT o.order_id, count(e.id) FROM orders.orders o"
                       " LEFT JOIN orders.entitlements e USING (order_id)"
                       " GROUP BY 1 HAVING count(e.id) <> 1")
        check(multi == [], f"exactly one entitlement per order, ever ({multi[:5]})")
        active = st.sql("SELECT count(*) FROM orders.entitlements WHERE revoked_at IS NULL")[0][0]
        check(active == N, f"{active} active entitlements")
        for mtype in ("order.paid", "access.granted"):
            dup = st.sql("SELECT (body::jsonb)->'data'->>'order_id', count(*)"
                         " FROM orders.stream_out WHERE type = %s GROUP BY 1"
                         " HAVING count(*) <> 1", (mtype,))
            total = st.sql("SELECT count(*) FROM orders.stream_out WHERE type = %s",
                           (mtype,))[0][0]
            check(dup == [] and total == N, f"one {mtype} per order ({total}, dup {dup[:5]})")
        paid = st.sql("SELECT count(*) FROM orders.transitions WHERE to_status = 'PAID'")[0][0]
        check(paid == N, f"one PAID transition per order ({paid})")
        ev = st.sql("SELECT count(*), count(DISTINCT ref) FROM orders.evidence"
                    " WHERE source = 'ingest'")[0]
        check(ev == (stored, stored),
              f"every stored notification applied exactly once as evidence ({ev})")
        res = dict(st.sql("SELECT result, count(*) FROM orders.evidence GROUP BY 1"))
        check(res.get("applied") == N and res.get("noop", 0) == stored - N,
              f"evidence results {res}")


if __name__ == "__main__":
    main_wrapper(main)
