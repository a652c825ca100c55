"""SIGKILL kasir-order again and again while 1,000 paid notifications (plus
duplicates) arrive on the ingest stream; after the last restart every
paid order is PAID with exactly one entitlement, one PAID transition and
one order.paid message, none twice."""
import random
import threading
import time

from ostack import Stack, wait_for

N = 1000


def main():
    s = Stack(name="order-kill")
    try:
        s.start_order()
        ids = ["KILL-%04d" % i for i in range(N)]
        for oid in ids:
            s.create_order(oid, 154600)
        print("created %d orders" % N, flush=True)

        stop = threading.Event()

        def killer():
            rnd = random.Random(7)
            kills = 0
            while not stop.is_set():
                time.sleep(rnd.uniform(0.3, 1.2))
                if stop.is_set():
                    break
                s.kill_order()
                kills += 1
                time.sleep(rnd.uniform(0.0, 0.3))
                s.start_order(wait_ready=False)
            print("killed kasir-order %d times" % kills, flush=True)

        t = threading.Thread(target=killer)
        t.start()
        rnd = random.Random(11)
        sent = 0
        for oid in ids:
            body = {"order_id": oid, "transaction_status": "settlement",
                    "gross_amount": "154600.00", "status_code": "200", "currency": "IDR",
                    "payment_type": "bank_transfer", "transaction_id": "tx-" + oid}
            s.notify(body)
            sent += 1
            if rnd.random() < 0.2:  # Midtrans duplicates
                s.notify(body)
                sent += 1
        print("published %d notifications" % sent, flush=True)
        time.sleep(2)
        stop.set()
        t.join()
        s.kill_order()
        s.start_order()
        head = s.sql("SELECT max(seq) FROM testingest.stream_out")[0][0]
        s.wait_applied("ingest", head, timeout=180)

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
        dup_msgs = s.sql("SELECT body::jsonb->'data'->>'order_id', count(*) FROM orders.stream_out"
                         " WHERE type='order.paid' GROUP BY 1 HAVING count(*) <> 1")
        assert dup_msgs == [], dup_msgs[:10]
        n_msgs = s.sql("SELECT count(*) FROM orders.stream_out WHERE type='order.paid'")[0][0]
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
