"""The consumer's batch path (jobs_apply_batch: three array statements per
batch) gives exactly the rows of the careful path (jobs_apply: one event at
a time), and applying a batch again adds nothing.

The same events are applied twice, each time as one consumer batch (the
notifier is down while they are published, so it replays them in one
transaction on start): once with a refused event at the end, which sends
the whole batch to the careful pass (the reference), once without (the
batch path).  Several events per order, orders interleaved: instructions
and reminders created then cancelled in the same batch, reminders outside
the order's window, a second payment link (the first job of a key wins),
partial and full refunds, access granted / revoked / granted again, a
record and jobs that existed before the batch.  Compared: every job row
(in id order: the same order of creation) and every notify.orders row,
order ids and seqs made relative.  Then the batch path's cursor is moved
back and the batch applied once more: no row is added or changed."""
import json
import time

from nstack import Stack, wait_for, snapshot, paid, granted

T0 = time.time() - 60
FMT = "%Y-%m-%dT%H:%M:%S.000Z"


def ts(t):
    return time.strftime(FMT, time.gmtime(t))


def snap(oid, status, expires_in=24 * 3600, **kw):
    return snapshot(oid, status, created_at=ts(T0), expires_at=ts(T0 + expires_in), **kw)


def paid_(oid, **kw):
    d = paid(oid, created_at=ts(T0), expires_at=ts(T0 + 24 * 3600), **kw)
    d["paid_at"] = ts(T0 + 30)
    return d


def granted_(oid, until="2027-11-23T09:00:00.000Z"):
    d = granted(oid, created_at=ts(T0), expires_at=ts(T0 + 24 * 3600))
    if until is None:
        del d["valid_until"]
    else:
        d["valid_until"] = until
    return d


def ended(oid, status):
    """order.expired / failed / cancelled: they carry their evidence."""
    return dict(snap(oid, status), evidence={"source": "recon", "ref": 3})


def refunded(oid, partial=False, amount=None):
    d = snap(oid, "PAID" if partial else "REFUNDED")
    d["evidence"] = {"source": "ingest", "ref": 2}
    d["partial"] = partial
    if amount is not None:
        d["refund_amount"] = amount
    return d


def before_events(p):
    """Applied in an earlier batch: a record and jobs exist already."""
    f, g = p + "-f", p + "-g"
    return [("order.created", snap(f, "PENDING")),
            ("order.payment_link", snap(f, "PENDING")),
            ("access.granted", granted_(g)),
            ("access.revoked", dict(granted_(g), reason="chargeback"))]


def batch_events(p):
    a, b, c, d, e, f, g, h, i = (p + "-" + x for x in "abcdefghi")
    ev = []
    # interleaved: a and b begin together
    ev += [("order.created", snap(a, "PENDING")), ("order.created", snap(b, "PENDING"))]
    ev += [("order.payment_link", snap(a, "PENDING")),
           ("order.payment_link", snap(b, "PENDING"))]
    ev += [("order.paid", paid_(a)), ("access.granted", granted_(a))]
    ev += [("order.expired", ended(b, "EXPIRED"))]
    # c: paid, partial refunds (one without an amount: no notice), full refund
    ev += [("order.created", snap(c, "PENDING")), ("order.payment_link", snap(c, "PENDING")),
           ("order.paid", paid_(c)),
           ("order.refunded", refunded(c, partial=True, amount=50000)),
           ("order.refunded", refunded(c, partial=True)),
           ("order.refunded", refunded(c))]
    # d: a 90-minute window (some reminders outside it), a second link with a
    # longer one (the first job of a key wins, new keys come), cancelled,
    # then a link again (nothing new)
    ev += [("order.created", snap(d, "PENDING", 5400)),
           ("order.payment_link", snap(d, "PENDING", 5400)),
           ("order.payment_link", snap(d, "PENDING", 5 * 3600)),
           ("order.cancelled", ended(d, "CANCELLED")),
           ("order.payment_link", snap(d, "PENDING", 10 * 3600))]
    # e: access granted, revoked, granted again without valid_until, flagged
    ev += [("access.granted", granted_(e)),
           ("access.revoked", dict(granted_(e), reason="chargeback")),
           ("access.granted", granted_(e, None)),
           ("order.flagged", dict(snap(e, "PAID"), reason="review"))]
    # f: its jobs and record exist (before_events); paid now
    ev += [("order.paid", paid_(f))]
    # g: revoked before; flagged now (flag, grant and valid_until kept)
    ev += [("order.flagged", dict(snap(g, "PAID"), reason="review"))]
    # h: no usable phone: email only
    ev += [("order.created", snap(h, "PENDING", phone="12")),
           ("order.payment_link", snap(h, "PENDING", phone="12")),
           ("order.paid", paid_(h, phone="12"))]
    # i: a first event carrying valid_until (a new record stores it), paid
    ev += [("order.created", dict(snap(i, "PENDING"), valid_until="2030-01-01T00:00:00.000Z")),
           ("order.paid", paid_(i))]
    # b and a again, late in the batch
    ev += [("order.refunded", refunded(a)), ("order.failed", ended(b, "FAILED"))]
    return ev


# the consumer's reasons (the receipt guard cancels with others)
CANCELS = ("order paid", "order expired", "order refunded", "order failed", "order cancelled")


def cursor(s):
    r = s.sql("SELECT seq FROM notify.stream_cursor WHERE stream = 'orders'")
    return r[0][0] if r else 0


def norm(v, p):
    return v.replace(p + "-", "P-") if isinstance(v, str) else v


def job_rows(s, p, base):
    rows = s.sql("SELECT order_id, kind, channel, variant, recipient, state, last_error,"
                 " max_attempts, payload::text, origin, due_at, created_at"
                 " FROM notify.job WHERE order_id LIKE %s ORDER BY id", (p + "-%",))
    out = []
    for oid, kind, ch, var, to, state, err, maxa, payload, origin, due, created in rows:
        seq = int(origin.split(":")[1])
        # what the consumer decided; a worker moves the rest along
        if not (state == "cancelled" and err in CANCELS):
            state, err = "live", None
        out.append((norm(oid, p), kind, ch, var, to, state, err, maxa,
                    json.loads(norm(payload, p)),
                    "before" if seq < base else seq - base,
                    due if kind == "reminder" else due == created))
    return out


def order_rows(s, p, base):
    rows = s.sql("SELECT order_id, status, snapshot::text, last_seq, last_type, paid_at,"
                 " revoked, access_granted, access_valid_until"
                 " FROM notify.orders WHERE order_id LIKE %s ORDER BY order_id", (p + "-%",))
    return [(norm(r[0], p), r[1], json.loads(norm(r[2], p)), r[3] - base) + tuple(r[4:])
            for r in rows]


def careful_lines(s):
    return s.log_text().count("applying it message by message")


def apply_once(s, events, tail=()):
    """Publishes with the notifier down, starts it: one batch."""
    s.stop_notifier()
    base = None
    for t, d in list(events) + list(tail):
        seq = s.publish(t, d)
        base = seq if base is None else base
    head = seq
    s.start_notifier()
    wait_for(lambda: cursor(s) == head, 60, "cursor at %d" % head)
    return base


def main():
    s = Stack({"NOTIFY_REMIND_AFTER": "1h,2h", "NOTIFY_REMIND_BEFORE": "3h,30m",
               "NOTIFY_POLL": "200ms"}, "batch")
    try:
        apply_once(s, before_events("ref") + before_events("bat"))
        # the instructions that existed before are sent before the batch
        # comes (a cancel would race with the workers); the reminders wait
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE kind = 'instructions'"
                               " AND state = 'sent'")[0][0] == 4, 30, "instructions sent")

        # the reference: a refused event at the end, the careful pass
        n0 = careful_lines(s)
        ref_base = apply_once(s, batch_events("ref"),
                              [("order.flagged", dict(snap("x" * 60, "PAID"), reason="x"))])
        assert careful_lines(s) == n0 + 1, "the reference did not go message by message"
        poison = s.sql("SELECT count(*) FROM notify.stream_poison")[0][0]
        assert poison == 1, poison

        # the batch path
        bat_base = apply_once(s, batch_events("bat"))
        assert careful_lines(s) == n0 + 1, "the batch went message by message:\n" + s.log_text()
        # one transaction: one batch
        tx = s.sql("SELECT count(DISTINCT xmin::text) FROM notify.orders"
                   " WHERE order_id LIKE %s", ("bat-%",))
        assert tx == [(1,)], tx

        ref_jobs, bat_jobs = job_rows(s, "ref", ref_base), job_rows(s, "bat", bat_base)
        assert len(ref_jobs) > 30, ref_jobs
        for k, (x, y) in enumerate(zip(ref_jobs, bat_jobs)):
            assert x == y, "job %d differs:\n careful %r\n batch   %r" % (k, x, y)
        assert len(ref_jobs) == len(bat_jobs), (len(ref_jobs), len(bat_jobs))
        ref_orders, bat_orders = order_rows(s, "ref", ref_base), order_rows(s, "bat", bat_base)
        assert len(ref_orders) == 9, ref_orders
        for x, y in zip(ref_orders, bat_orders):
            assert x == y, "record differs:\n careful %r\n batch   %r" % (x, y)
        assert len(ref_orders) == len(bat_orders)
        # the cases the scenario is for, as the careful pass left them
        states = {(r[0], r[1], r[2], r[3]): (r[5], r[6]) for r in ref_jobs}
        assert states[("P-a", "instructions", "email", 0)] == ("cancelled", "order paid")
        assert states[("P-b", "reminder", "whatsapp", 1)] == ("cancelled", "order expired")
        assert states[("P-d", "reminder", "email", 1)] == ("cancelled", "order cancelled")
        assert states[("P-f", "reminder", "email", 0)] == ("cancelled", "order paid")
        assert ("P-c", "refund", "email", 1) in states and ("P-c", "refund", "email", 0) in states
        assert not [k for k in states if k[0] == "P-h" and k[2] == "whatsapp"]

        # applied again (cursor moved back): nothing added or changed.  What
        # a worker may change meanwhile (a send) is left out, except on the
        # jobs the consumer cancelled: updated_at shows any update.
        jobs_q = ("SELECT id, order_id, kind, channel, variant, recipient, max_attempts,"
                  " payload, origin, requeues, created_at,"
                  " CASE WHEN state = 'cancelled' THEN (state, last_error, updated_at)::text END"
                  " FROM notify.job WHERE order_id LIKE %s ORDER BY id")
        orders_q = ("SELECT order_id, status, snapshot, last_seq, last_type, paid_at,"
                    " revoked, access_granted, access_valid_until, created_at"
                    " FROM notify.orders WHERE order_id LIKE %s ORDER BY order_id")
        jobs, orders = s.sql(jobs_q, ("bat-%",)), s.sql(orders_q, ("bat-%",))
        s.stop_notifier()
        head = cursor(s)
        s.sql("UPDATE notify.stream_cursor SET seq = %s WHERE stream = 'orders'", (bat_base - 1,))
        s.start_notifier()
        wait_for(lambda: cursor(s) == head, 60, "cursor back at %d" % head)
        assert careful_lines(s) == n0 + 1, "the batch went message by message"
        assert s.sql(jobs_q, ("bat-%",)) == jobs, "applying the batch again changed jobs"
        assert s.sql(orders_q, ("bat-%",)) == orders, "applying the batch again changed records"
        print("ok: %d jobs, %d records, batch == careful" % (len(bat_jobs), len(bat_orders)))
    finally:
        s.close()


if __name__ == "__main__":
    main()
