"""SIGKILL kasir-order again and again while 1,000 paid notifications (plus
duplicates) arrive on the ingest stream, each order's first one followed by
the Status API's confirming answer on the recon stream (as kasir-reconciler
sends it; the two streams interleave freely); after the last restart every
paid order is PAID with exactly one entitlement, one PAID transition (its
evidence the Status API answer) and one order.paid message, none twice, and
no order still awaits confirmation.

Kills follow conditions, not a clock (issue 12): kasir-order is killed when
it has applied something since it was last started and still has a backlog
(its ingest cursor behind the stream's head); the notifications are
published in waves, each once the previous one was struck by a kill or
fully applied, with re-deliveries (as Midtrans re-sends) until MIN_KILLS
kills landed -- on a machine of any speed."""
import contextlib
import random
import threading
import time

import kasirtest

from ostack import Stack

N = 1000
WAVES = 8
MIN_KILLS = 5
REDELIVER_WAVE = 50
WAVE_BOUND = 60
ARRIVALS_BOUND = 200

PROGRESS_SQL = ("SELECT (SELECT coalesce(max(seq), 0) FROM orders.stream_cursor"
                "        WHERE stream = 'ingest'),"
                "       (SELECT coalesce(max(seq), 0) FROM testingest.stream_log_messages)")


class Killer(threading.Thread):
    """SIGKILLs kasir-order whenever it has applied something since its last
    start and still has a backlog; restarts it at once (no wait)."""

    def __init__(self, s):
        super().__init__(daemon=True)
        self.s = s
        self.stop = threading.Event()
        self.kills = []
        self.error = None

    def run(self):
        try:
            with contextlib.closing(self.s.db()) as conn:
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
                    self.s.kill_order()
                    self.kills.append((applied, head))
                    base = progress()[0]
                    self.s.start_order(wait_ready=False)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = e


def main():
    s = Stack(name="order-kill", durable=True)  # the subject: kills (fsync on)
    try:
        s.start_order()
        ids = ["KILL-%04d" % i for i in range(N)]
        for oid in ids:
            s.create_order(oid, 154600)
        print("created %d orders" % N, flush=True)

        rnd = random.Random(11)
        bodies = []
        for oid in ids:
            body = {"order_id": oid, "transaction_status": "settlement",
                    "gross_amount": "154600.00", "status_code": "200", "currency": "IDR",
                    "payment_type": "bank_transfer", "transaction_id": "tx-" + oid}
            bodies.append(body)
            if rnd.random() < 0.2:  # Midtrans duplicates
                bodies.append(body)
        waves = [bodies[i::WAVES] for i in range(WAVES)]
        killer = Killer(s)

        def struck_or_applied(before):
            if killer.error:
                raise killer.error
            if len(killer.kills) > before:
                return True
            applied, head = s.sql(PROGRESS_SQL)[0]
            return s.procs["order"].poll() is None and applied >= head

        killer.start()
        sent = 0
        confirmed = set()
        n_waves = 0
        t0 = time.monotonic()
        try:
            while n_waves < len(waves) or len(killer.kills) < MIN_KILLS:
                assert time.monotonic() - t0 < ARRIVALS_BOUND, \
                    "%d kills in %d waves after %ds: kasir-order never had a backlog " \
                    "to be killed in" % (len(killer.kills), n_waves, ARRIVALS_BOUND)
                wave = waves[n_waves] if n_waves < len(waves) else \
                    rnd.sample(bodies, REDELIVER_WAVE)  # Midtrans re-delivers
                before = len(killer.kills)
                for body in wave:
                    s.notify(body)
                    sent += 1
                    if body["order_id"] not in confirmed:
                        confirmed.add(body["order_id"])
                        s.status_check(body["order_id"], "status", False,
                                       transaction_status="settlement",
                                       gross_amount="154600.00", currency="IDR",
                                       status_code="200", payment_type="bank_transfer",
                                       transaction_id=body["transaction_id"],
                                       confirm=True)
                n_waves += 1
                deadline = time.monotonic() + WAVE_BOUND
                while not struck_or_applied(before):
                    assert time.monotonic() < deadline, \
                        "wave %d neither struck by a kill nor applied in %ds" % (n_waves,
                                                                               WAVE_BOUND)
                    time.sleep(0.01)
        finally:
            killer.stop.set()
            killer.join()
        if killer.error:
            raise killer.error
        kills = killer.kills
        print("published %d notifications in %d waves; killed kasir-order %d times with a "
              "backlog, (applied, head) at each: %s" % (sent, n_waves, len(kills), kills),
              flush=True)
        assert len(kills) >= MIN_KILLS, kills
        s.kill_order()
        s.start_order()
        head = s.sql("SELECT max(seq) FROM testingest.stream_log_messages")[0][0]
        s.wait_applied("ingest", head, timeout=180)
        head = s.sql("SELECT max(seq) FROM testrecon.stream_log_messages")[0][0]
        s.wait_applied("recon", head, timeout=180)

        bad = s.sql("SELECT order_id, status FROM orders.orders WHERE order_id LIKE 'KILL-%%'"
                    " AND status <> 'PAID'")
        assert bad == [], bad[:10]
        multi = s.sql("SELECT order_id, count(*) FROM orders.entitlements"
                      " WHERE order_id LIKE 'KILL-%%' GROUP BY order_id HAVING count(*) <> 1")
        assert multi == [], multi[:10]
        n_ent = s.sql("SELECT count(*) FROM orders.entitlements WHERE order_id LIKE 'KILL-%%'"
                      " AND revoked_at IS NULL")[0][0]
        assert n_ent == N, n_ent
        n_paid = s.sql("SELECT count(*) FROM orders.transitions WHERE to_status='PAID'"
                       " AND order_id LIKE 'KILL-%%'")[0][0]
        assert n_paid == N, n_paid
        by_ingest = s.sql("SELECT count(*) FROM orders.transitions WHERE"
                          " evidence_source <> 'recon' AND order_id LIKE 'KILL-%%'")[0][0]
        assert by_ingest == 0, by_ingest
        waiting = s.sql("SELECT count(*) FROM orders.orders WHERE order_id LIKE 'KILL-%%'"
                        " AND (awaiting_since IS NOT NULL OR flagged)")[0][0]
        assert waiting == 0, waiting
        kasirtest.wait_sequenced(s.sql, "orders")
        dup_msgs = s.sql("SELECT body::jsonb->'data'->>'order_id', count(*) FROM orders.stream_log_messages"
                         " WHERE type='order.paid' GROUP BY 1 HAVING count(*) <> 1")
        assert dup_msgs == [], dup_msgs[:10]
        n_msgs = s.sql("SELECT count(*) FROM orders.stream_log_messages WHERE type='order.paid'")[0][0]
        assert n_msgs == N, n_msgs
        n_ev = s.sql("SELECT count(*) FROM orders.evidence WHERE source='ingest'")[0][0]
        assert n_ev == sent, (n_ev, sent)
        print("ok")
    except BaseException:
        print("stack kept for inspection: " + s.dir)
        import os
        os.environ["KASIR_KEEP_TMP"] = "1"
        raise
    finally:
        s.close()


if __name__ == "__main__":
    main()
