#!/usr/bin/python3
"""The watch list built from a whole batch equals the one built message by
message (watchlist.c).

kasir-reconciler applies a batch of orders stream messages optimistically:
in rounds of at most one message per order, each kind of write (order
created, evidence, confirmation asked, final) one array statement per
round.  This test writes the same stories of order events (crafted
messages, straight into kasir-order's stream queue, which its sequencer
numbers and serves) for twin orders:

  set A  each message applied before the next one is written (batches
         of one);
  set B  written while kasir-reconciler is stopped, the stories
         interleaved; it then applies the backlog in a few large batches,
         several messages of one order in each.

Every twin's watch row must end identical in every column the orders
stream decides (status, final, transaction id and payment type learned
first / last, last key, the keys heard, when the last notification came,
when the first news came, the orders seq that last changed it as a
position in its story, the confirmation asked), and as the rules say
(checked against fixed expectations too).  The batch must have been
applied optimistically (no fall-back in the log).  Then the consumer's
cursor is set back before set B and the backlog applied again: the
stories that start with a watch row make the same rows again (nothing is
added), and there is still one row per order.

The fake Midtrans is stopped: no Status API answer changes a row
(failed checks only touch the scheduler's own columns).
"""
import contextlib
import json
import time
import uuid

import kasirtest
import rstack
from rstack import log

CREATED = "2026-12-07T01:00:00Z"
EXPIRES = "2026-12-08T01:00:00Z"
R1 = "2026-12-07T01:01:00.000Z"
R2 = "2026-12-07T01:02:00.000Z"
R3 = "2026-12-07T01:03:00.000Z"
R0 = "2026-12-07T00:59:00.000Z"  # older than R1: last_notification_at keeps R1


def snapshot(oid, status, txn=None):
    d = {"order_id": oid, "status": status, "course_id": "c1",
         "course_title": "Course", "amount": 150000, "currency": "IDR",
         "customer": {"name": "Budi", "email": "budi@example.com"},
         "created_at": CREATED, "expires_at": EXPIRES}
    if txn is not None:
        d["transaction_id"] = txn
    return d


def created(oid):
    return ("order.created", snapshot(oid, "PENDING"))


def evidence(oid, ts, received, source="ingest", txn=None, ptype=None,
             applied=False):
    d = {"order_id": oid, "evidence": {"source": source, "ref": 1},
         "transaction_status": ts, "received_at": received,
         "applied": applied, "order_status": "PENDING"}
    if txn is not None:
        d["transaction_id"] = txn
    if ptype is not None:
        d["payment_type"] = ptype
    return ("order.evidence", d)


def confirm(oid, ts, txn=None):
    d = snapshot(oid, "PENDING", txn)
    d.update({"evidence": {"source": "ingest", "ref": 1},
              "transaction_status": ts, "gross_amount": "150000.00",
              "requested_at": R2})
    return ("confirm.request", d)


def final(oid, typ, status, ts=None, received=None, txn=None, source="recon"):
    d = snapshot(oid, status, txn)
    d["evidence"] = {"source": source, "ref": 1}
    if ts is not None:
        d["transaction_status"] = ts
    if received is not None:
        d["received_at"] = received
    if typ == "order.paid":
        d["paid_at"] = R3
    if typ == "order.refunded":
        d["partial"] = False
    return (typ, d)


def access(oid):
    d = snapshot(oid, "PAID")
    d["customer_email"] = "budi@example.com"
    return ("access.granted", d)


# name -> function(order id) -> the story's messages, in order
STORIES = {
    # the payment path: learned first transaction id stays, heard grows
    "pay": lambda o: [
        created(o),
        evidence(o, "pending", R1, txn="tx-1", ptype="bank_transfer"),
        confirm(o, "settlement", txn="tx-2"),
        evidence(o, "settlement", R2, txn="tx-2", ptype="bank_transfer"),
        final(o, "order.paid", "PAID", "settlement", R3, txn="tx-1"),
        access(o),
        final(o, "order.refunded", "REFUNDED", "refund", R0, txn="tx-1",
              source="ingest")],
    # a confirmation for an order never seen makes its row
    "confirm-first": lambda o: [
        confirm(o, "settlement", txn="tx-c"),
        evidence(o, "settlement", R1, ptype="gopay"),
        evidence(o, "settlement", R2, ptype="qris"),
        final(o, "order.paid", "PAID", "settlement", R2)],
    # a final event for an order never seen, no evidence said
    "final-unseen": lambda o: [
        final(o, "order.expired", "EXPIRED")],
    # recon evidence is no notification; a bad received_at is not counted
    "recon-evidence": lambda o: [
        created(o),
        evidence(o, "pending", R1, source="recon", applied=True),
        evidence(o, "expire", "not a time"),
        evidence(o, "not_found", R2, source="recon"),
        confirm(o, "expire"),
        confirm(o, "expire")],
    # the same key twice, an older notification, a new one
    "heard": lambda o: [
        created(o),
        evidence(o, "pending", R2),
        evidence(o, "pending", R1),
        evidence(o, "settlement", R0),
        evidence(o, "settlement", R3),
        evidence(o, "capture", R1, ptype="credit_card", applied=True)],
    # what kasir-order did not apply (flagged, ignored, a no-op) is heard
    # but is not what the answers are compared with: a flagged reversal
    # leaves the settlement it knows
    "flagged": lambda o: [
        created(o),
        evidence(o, "settlement", R1, applied=True),
        evidence(o, "deny", R2),
        confirm(o, "refund")],
    # evidence before its order is watched changes nothing
    "early-evidence": lambda o: [
        evidence(o, "pending", R1, txn="tx-e"),
        created(o),
        evidence(o, "settlement", R2, source="recon", txn="tx-f",
                 applied=True)],
}

# what the rules say, for a few columns of each story's row
EXPECT = {
    "pay": {"status": "REFUNDED", "final": True, "transaction_id": "tx-1",
            "payment_type": "bank_transfer", "last_key": "status:refund",
            "heard": ["status:pending", "status:settlement",
                      "status:refund"]},
    "confirm-first": {"status": "PAID", "final": True,
                      "transaction_id": "tx-c", "payment_type": "qris",
                      "heard": ["status:settlement"], "confirm": True},
    "final-unseen": {"status": "EXPIRED", "final": True, "heard": []},
    "recon-evidence": {"final": False, "last_key": "status:pending",
                       "heard": [], "news": False, "confirm": True},
    "heard": {"heard": ["status:pending", "status:settlement",
                        "status:capture"], "payment_type": "credit_card",
              "last_key": "status:capture"},
    "flagged": {"last_key": "status:settlement",
                "heard": ["status:settlement", "status:deny"]},
    "early-evidence": {"transaction_id": "tx-f", "heard": [],
                       "last_key": "status:settlement", "news": False},
}

# the stories whose first message finds no row: applying them again (the
# cursor set back) is not a replay of what they did the first time
NOT_REPLAYABLE = {"early-evidence"}

COLUMNS = ("status, final, final_at IS NOT NULL, transaction_id,"
           " payment_type, last_key, heard, last_notification_at, news_at,"
           " orders_seq, confirm_seq, confirm_since IS NOT NULL,"
           " created_at, expires_at")


def write(st, msgs):
    """Appends msgs [(type, data)] to kasir-order's orders stream queue, in
    order (kasir-order's sequencer numbers them); returns their ids."""
    ids = []
    with contextlib.closing(st.pg.connect()) as conn:
        with conn.cursor() as cur:
            for typ, data in msgs:
                mid = str(uuid.uuid4())
                at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                tail = "," + json.dumps(
                    {"id": mid, "type": typ, "at": at, "data": data},
                    separators=(",", ":"))[1:]
                cur.execute("INSERT INTO orders.stream_pending"
                            " (stream, id, type, at, tail)"
                            " VALUES ('orders', %s, %s, %s, %s)",
                            (mid, typ, at, tail))
                ids.append(mid)
    return ids


def head(st):
    return st.sql("SELECT coalesce((SELECT seq FROM orders.stream_head"
                  " WHERE stream = 'orders'), 0)")[0][0]


def cursor(st):
    rows = st.sql("SELECT seq FROM recon.stream_cursor"
                  " WHERE stream = 'orders'")
    return rows[0][0] if rows else 0


def wait_applied(st):
    st.wait_until(lambda: st.sql(
        f"SELECT {kasirtest.unsequenced_sql('orders')}")[0][0] == 0,
        timeout=30, what="the orders stream sequenced")
    h = head(st)
    st.wait_until(lambda: cursor(st) >= h, timeout=60,
                  what="kasir-reconciler applied the orders stream to %d" % h)


def seq_positions(st, ids):
    """seq -> position of its message in its story."""
    pos = {}
    for story_ids in ids.values():
        for i, mid in enumerate(story_ids):
            seq = st.sql("SELECT seq FROM orders.stream_log_messages WHERE id = %s",
                         (mid,))[0][0]
            pos[seq] = i
    return pos


def row(st, oid, pos):
    rows = st.sql("SELECT " + COLUMNS + " FROM recon.watch"
                  " WHERE order_id = %s", (oid,))
    if not rows:
        return None
    r = list(rows[0])
    r[9] = pos.get(r[9], ("unknown seq", r[9]))
    r[10] = None if r[10] is None else pos.get(r[10], ("unknown", r[10]))
    return r


def check_expected(name, r):
    want = EXPECT[name]
    got = {"status": r[0], "final": r[1], "transaction_id": r[3],
           "payment_type": r[4], "last_key": r[5], "heard": r[6],
           "news": r[8] is not None, "confirm": r[10] is not None}
    for k, v in want.items():
        assert got[k] == v, "%s: %s is %r, expected %r" % (name, k, got[k], v)


def main():
    with rstack.stack({"RECON_FIRST_CHECK": "1h"}) as st:
        rstack.start(st)
        st.stop("fake-midtrans")
        ids_a, ids_b = {}, {}

        log("set A: one message at a time")
        for name, story in STORIES.items():
            ids_a[name] = []
            for m in story("wb-a-" + name):
                ids_a[name] += write(st, [m])
                wait_applied(st)

        log("set B: the stories interleaved, applied as a backlog")
        st.stop("reconciler")
        before_b = head(st)
        msgs, ids_b = [], {n: [] for n in STORIES}
        stories = {n: s("wb-b-" + n) for n, s in STORIES.items()}
        for i in range(max(len(s) for s in stories.values())):
            for name, s in stories.items():
                if i < len(s):
                    msgs.append((name, s[i]))
        for (name, m), mid in zip(msgs, write(st, [m for _, m in msgs])):
            ids_b[name].append(mid)
        st.start("reconciler")
        wait_applied(st)
        assert "applying it message by message" not in \
            st.log_text("reconciler"), "set B fell back to the careful pass"

        pos = seq_positions(st, ids_a)
        pos.update(seq_positions(st, ids_b))
        rows_b = {}
        for name in STORIES:
            a = row(st, "wb-a-" + name, pos)
            b = row(st, "wb-b-" + name, pos)
            log("%s: %s" % (name, a))
            assert a is not None and a == b, \
                "%s: one by one %s, batched %s" % (name, a, b)
            check_expected(name, a)
            rows_b[name] = b
        last = st.sql("SELECT last_ingest_at = (SELECT max(news_at)"
                      " FROM recon.watch) FROM recon.settings")[0][0]
        assert last, "recon.settings.last_ingest_at is not the newest news"

        log("set B again: the cursor set back before it")
        st.stop("reconciler")
        n_rows = st.sql("SELECT count(*) FROM recon.watch")[0][0]
        st.sql("UPDATE recon.stream_cursor SET seq = %s"
               " WHERE stream = 'orders'", (before_b,))
        st.start("reconciler")
        wait_applied(st)
        assert st.sql("SELECT count(*) FROM recon.watch")[0][0] == n_rows
        for name in STORIES:
            if name in NOT_REPLAYABLE:
                continue
            b = row(st, "wb-b-" + name, pos)
            assert b == rows_b[name], \
                "%s applied again: %s, first %s" % (name, b, rows_b[name])
        assert "applying it message by message" not in \
            st.log_text("reconciler"), "set B fell back to the careful pass"
        assert st.sql("SELECT count(*) FROM recon.stream_poison")[0][0] == 0
        log("ok: %d stories, batched equals one by one" % len(STORIES))


if __name__ == "__main__":
    main()
