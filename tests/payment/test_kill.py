"""Issue 3: SIGKILL kasir-order again and again while 1,000 paid
notifications arrive through kasir-ingest (signed POSTs, ~20% of them
delivered twice, and a share paid through the fake Midtrans), restarting it
each time.  Afterwards every paid order is PAID with exactly one
entitlement, one PAID transition, one order.paid and one access.granted --
none twice -- and every stored notification was applied exactly once.

Kills follow conditions, not a clock (issue 12): the killer strikes when
kasir-order has applied something since it was last started AND still has
a backlog (its ingest cursor is behind ingest's head), and the arrivals come
in waves, each sent once the previous wave has been struck (or fully
applied, so the next wave makes a new backlog).  When the notifications run
out before MIN_KILLS kills, further waves re-deliver already sent ones, as
Midtrans does.  So the test kills at least MIN_KILLS times mid-backlog and
checks every invariant on a machine of any speed.

Default mode (issue 13): every order is paid at the fake Midtrans first
(the POSTed ones with their notification dropped), so each settlement is
held until kasir-reconciler's Status API answer confirms it; kills also
land while confirmations are in flight.  Every PAID transition names a
Status API answer."""

import contextlib
import queue
import random
import threading
import time

import kasirtest

from paystack import PayStack, check, main_wrapper, notification

N = 1000
VIA_FAKE = 200          # the first VIA_FAKE orders are paid by the fake Midtrans
SENDERS = 8
AMOUNT = 154600
MIN_KILLS = 5
WAVES = 8               # the first notifications come in this many waves
REDELIVER_WAVE = 50     # size of a wave of re-deliveries
WAVE_BOUND = 60         # s: a wave is struck or applied within this, or FAIL
ARRIVALS_BOUND = 200    # s: all waves and MIN_KILLS kills within this, or FAIL

# kasir-order's ingest cursor and kasir-ingest's head, in one snapshot
PROGRESS_SQL = ("SELECT (SELECT coalesce(max(seq), 0) FROM orders.stream_cursor"
                "        WHERE stream = 'ingest'),"
                "       " + kasirtest.stream_head_sql("ingest", "ingest"))


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


class Killer(threading.Thread):
    """SIGKILLs kasir-order whenever it has applied something since its last
    start and still has a backlog; restarts it at once (no wait)."""

    def __init__(self, st):
        super().__init__(daemon=True)
        self.st = st
        self.stop = threading.Event()
        self.kills = []         # (cursor, head) seen just before each kill
        self.error = None

    def run(self):
        try:
            with contextlib.closing(self.st.pg.connect()) as conn:
                cur = conn.cursor()

                def progress():
                    cur.execute(PROGRESS_SQL)
                    return cur.fetchone()
                base = progress()[0]
                while not self.stop.is_set():
                    applied, head = progress()
                    if not (base < applied < head):
                        time.sleep(0.002)
                        continue
                    self.st.kill("order")        # SIGKILL, waits for it to die
                    self.kills.append((applied, head))
                    base = progress()[0]         # stable: the process is dead
                    self.st.start("order", wait=False)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = e


def main():
    # durable: the subject is killed processes (fsync stays on)
    with PayStack.for_payment(overrides={"FAKE_MIDTRANS_RETRY_SCHEDULE": "1,1,2,2,5"},
                              durable=True) as st:
        st.start_payment_path()
        ids = ["KILL-%04d" % i for i in range(N)]
        t0 = time.monotonic()
        pool(4, ids, lambda oid: st.create_order(oid, AMOUNT, email=f"{oid.lower()}@example.com"))
        check(True, f"{N} orders created through the API in {time.monotonic() - t0:.1f}s")

        t0 = time.monotonic()
        pool(4, ids[VIA_FAKE:], lambda oid: st.truth(oid, "pay", payment_type="bank_transfer"))
        check(True, f"{N - VIA_FAKE} orders paid at the fake (notifications dropped) in "
              f"{time.monotonic() - t0:.1f}s")

        rnd = random.Random(11)
        arrivals = [("fake", oid) for oid in ids[:VIA_FAKE]]
        for oid in ids[VIA_FAKE:]:
            body = notification(oid, "settlement", "%d.00" % AMOUNT)
            arrivals.append(("post", body))
            if rnd.random() < 0.2:      # Midtrans duplicates
                arrivals.append(("post", body))
        rnd.shuffle(arrivals)
        waves = [arrivals[i::WAVES] for i in range(WAVES)]
        answers = {}
        posted = []
        lock = threading.Lock()

        def send(body):
            # like Midtrans: retry until 2xx (kasir-ingest does not need
            # kasir-order, so it should answer 200 the first time)
            for _ in range(5):
                r = st.post(body)
                with lock:
                    answers[r.status] = answers.get(r.status, 0) + 1
                if r.status == 200:
                    with lock:
                        posted.append(body)
                    return
                time.sleep(0.5)
            raise AssertionError(f"{body['order_id']}: kasir-ingest kept answering {r}")

        def arrive(a):
            kind, what = a
            if kind == "post":
                send(what)
                return
            r = st.fake("POST", f"/_fake/orders/{what}/pay", {"payment_type": "bank_transfer"})
            if r.status != 200:
                raise AssertionError(f"fake pay {what}: {r}")

        def struck_or_applied(before):
            if killer.error:
                raise killer.error
            if len(killer.kills) > before:
                return True
            applied, head = st.sql(PROGRESS_SQL)[0]
            return st.running("order") and applied >= head

        killer = Killer(st)
        killer.start()
        t0 = time.monotonic()
        n_waves = 0
        try:
            while n_waves < len(waves) or len(killer.kills) < MIN_KILLS:
                if time.monotonic() - t0 > ARRIVALS_BOUND:
                    raise AssertionError(
                        f"{len(killer.kills)} kills in {n_waves} waves after "
                        f"{ARRIVALS_BOUND}s: kasir-order never had a backlog to be killed in")
                if n_waves < len(waves):
                    wave = waves[n_waves]
                else:                   # out of notifications: Midtrans re-delivers
                    with lock:
                        wave = [("post", b) for b in rnd.sample(posted, REDELIVER_WAVE)]
                before = len(killer.kills)
                pool(SENDERS, wave, arrive)
                n_waves += 1
                st.wait_until(lambda: struck_or_applied(before), WAVE_BOUND,
                              f"wave {n_waves} struck by a kill or applied")
            sent_for = time.monotonic() - t0
        finally:
            killer.stop.set()
            killer.join()
        if killer.error:
            raise killer.error
        kills = killer.kills
        check(len(kills) >= MIN_KILLS,
              f"kasir-order SIGKILLed {len(kills)} times with a backlog, in {n_waves} waves "
              f"over {sent_for:.1f}s; (applied, head) at each kill: {kills}")
        expected = len(posted) + VIA_FAKE
        st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
                      >= expected, 60, f"{expected} notifications stored by kasir-ingest")
        check(True, f"{expected} notifications ({len(posted)} POSTed, {VIA_FAKE} by the fake); "
              f"answers {answers}")
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
        kasirtest.wait_sequenced(st.sql, "orders")
        for mtype in ("order.paid", "access.granted"):
            dup = st.sql("SELECT (body::jsonb)->'data'->>'order_id', count(*)"
                         " FROM orders.stream_log_messages WHERE type = %s GROUP BY 1"
                         " HAVING count(*) <> 1", (mtype,))
            total = st.sql("SELECT count(*) FROM orders.stream_log_messages WHERE type = %s",
                           (mtype,))[0][0]
            check(dup == [] and total == N, f"one {mtype} per order ({total}, dup {dup[:5]})")
        paid = st.sql("SELECT count(*) FROM orders.transitions WHERE to_status = 'PAID'"
                      " AND evidence_source = 'recon'")[0][0]
        check(paid == N, f"one PAID transition per order, on a Status API answer ({paid})")
        ev = st.sql("SELECT count(*), count(DISTINCT ref) FROM orders.evidence"
                    " WHERE source = 'ingest'")[0]
        check(ev == (stored, stored),
              f"every stored notification applied exactly once as evidence ({ev})")
        res = dict(st.sql("SELECT result, count(*) FROM orders.evidence"
                          " WHERE source = 'ingest' GROUP BY 1"))
        check(res == {"noop": stored}, f"no notification decided alone: {res}")
        res = dict(st.sql("SELECT result, count(*) FROM orders.evidence"
                          " WHERE source = 'recon' GROUP BY 1"))
        check(res.get("applied") == N, f"{N} Status API answers applied ({res})")
        bad = st.sql("SELECT count(*) FROM orders.orders WHERE contradicted_at IS NOT NULL"
                     " OR flagged")[0][0]
        check(bad == 0, f"no order contradicted or flagged ({bad})")


if __name__ == "__main__":
    main_wrapper(main)
