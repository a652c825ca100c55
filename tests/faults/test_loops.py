"""Every loop comes back after its database connection or PostgreSQL itself
dies at any statement (issue 12; docs/failure-model.md).

The four daemons run with failpoints armed (common/failpoint.h): every
database command of every loop passes a failpoint named
"<loop>:<statement>".

Phase A, "break": every failpoint breaks its connection once, on its second
hit (the first is often start-up).  Traffic that makes every loop work runs
twice, so every statement reached twice has been broken exactly there.

Phase B, "server dies": chosen loops stop just before a statement (several
inside an open transaction, among them the scheduler's ROLLBACK of the
reproduction in issue 12), PostgreSQL is stopped -m immediate and started
again, then they go on: the next call is the first to see the dead server.

After each phase every loop must do real work again within BOUND_S, written
below from the reconnect backoff and the poll intervals: an order created
through the API, a dropped-webhook payment PAID through the reconciler, its
receipt email sent, a notification stored; no loop silent
(kasir_loop_silent), every /readyz 200.  The test prints the failpoints it
covered and fails when a loop registered for liveness had none.
"""
import glob
import json
import os
import signal
import sys
import threading
import time

import kasirtest

# the reconciler's and notifier's schedule in seconds (tests/reconciler/rstack.py)
FAST = {
    "RECON_FIRST_CHECK": "2s", "RECON_BACKOFF": "2s,3s", "RECON_EXPIRY_GRACE": "2s",
    "RECON_MODE_INTERVAL": "2s", "RECON_AUTO_SILENCE": "1h",
    "RECON_CONNECT_TIMEOUT": "1s", "RECON_TIMEOUT": "2s", "RECON_RETRIES": "2",
    "RECON_RETRY_BACKOFF": "200ms", "RECON_RETRY": "1s", "RECON_RETRY_MAX": "2s",
    "RECON_LEASE": "21s", "RECON_POLL": "200ms", "RECON_BATCH": "4",
    "RECON_CONCURRENCY": "4", "RECON_RPS": "20",
    "NOTIFY_POLL": "200ms",
    # one ingest committer: phase B pauses the one COMMIT a known
    # notification reaches (with several, its order id picks the committer;
    # each is the same loop with its own connection)
    "INGEST_COMMITTERS": "1",
    "FAKE_MIDTRANS_RETRY_SCHEDULE": "1,1,1,2,2,3,3",
}

# How long one piece of real work may take after the faults, at most:
#   5 s  reconnect backoff cap (db.c DB_BACKOFF_MAX_MS) + 5 s connect timeout
# + 21 s a claimed reconciler row's lease (RECON_LEASE: at least twice the
#        longest batch of 4 checks) that a broken pass held,
# + 2 s first check + 3 s last backoff step (RECON_*)
# + 2 s stream consumer replay poll (STREAM_POLL_DEFAULT)
# + 0.2 s notifier poll + 3 s the fake's first delivery retries
# = 41.2 s; x2 for the sanitizer build on a loaded 2-core machine.
BOUND_S = 2 * (5 + 5 + 21 + 2 + 3 + 2 + 0.2 + 3)

DAEMONS = ("ingest", "order", "notifier", "reconciler")
COURSE = "bikin-film-pendek"
RECEIPT_SUBJECT = "Pembayaran diterima"


def log(msg):
    print("%s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def tolerant(fn, *a, **kw):
    """Traffic during faults: failures are expected, never fatal."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - the fault phase tolerates all
        return e


def create_order(st, i):
    r = st.api("POST", "/v1/orders", {
        "course_id": COURSE,
        "customer": {"name": "Budi Santoso", "email": "loop%d@example.com" % i,
                     "phone": "+6281234567890"}})
    return r.body["order_id"] if r.status == 201 else None


def status(st, oid):
    rows = st.sql("SELECT status FROM orders.orders WHERE order_id = %s", (oid,))
    return rows[0][0] if rows else None


def receipts(st, oid):
    import email
    import email.policy
    n = 0
    for path in st.mail_messages():
        if not path.endswith(".eml"):
            continue
        with open(path, "rb") as f:
            m = email.message_from_bytes(f.read(), policy=email.policy.default)
        if m.get("X-Kasir-Order") == oid and RECEIPT_SUBJECT in str(m["Subject"]):
            n += 1
    return n


def traffic(st, seq):
    """One round that makes every loop work; failures tolerated."""
    oids = [tolerant(create_order, st, seq * 10 + k) for k in range(3)]
    oids = [o for o in oids if isinstance(o, str)]
    for k, oid in enumerate(oids):
        tolerant(st.api, "GET", "/v1/orders/%s" % oid)
        tolerant(st.fake, "POST", "/_fake/orders/%s/pay" % oid,
                 {"notify": "drop" if k == 0 else "normal",
                  "payment_type": "bank_transfer"})
    # a badly signed notification: the quarantine loop
    tolerant(st.notify, {"order_id": "NOPE-%d" % seq, "status_code": "200",
                         "gross_amount": "1.00", "transaction_status": "settlement",
                         "signature_key": "0" * 128})
    for cmd in (("status",), ("doctor",)):
        tolerant(st.run_ctl, *cmd, timeout=30)
    if oids:
        tolerant(st.run_ctl, "order", "show", oids[0], timeout=30)
    for svc in DAEMONS:
        tolerant(st.metrics, svc)
    return oids


def loops(st):
    """{loop: silent} over every daemon's kasir_loop_silent series."""
    out = {}
    for svc in DAEMONS:
        for (name, labels), v in st.metrics(svc).items():
            if name == "kasir_loop_silent":
                out[dict(labels)["loop"]] = v
    return out


def all_ready(st):
    for svc in DAEMONS:
        r = tolerant(st.admin, svc, "/readyz")
        if isinstance(r, Exception) or r.status != 200:
            return False
    return True


def real_work(st, seq, phase):
    """After the faults: each piece of work must happen within BOUND_S."""
    t0 = time.monotonic()
    left = lambda: max(1.0, BOUND_S - (time.monotonic() - t0))  # noqa: E731
    st.wait_until(lambda: all_ready(st), left(), "%s: every /readyz 200" % phase)
    silent = []

    def none_silent():
        silent[:] = [k for k, v in loops(st).items() if v]
        return not silent
    try:
        st.wait_until(none_silent, left(), "%s: no loop silent" % phase)
    except kasirtest.WaitTimeout:
        raise AssertionError("%s: loops still silent after %.0f s: %s"
                             % (phase, BOUND_S, silent))
    made = []

    def created():
        o = tolerant(create_order, st, seq)
        if isinstance(o, str):
            made.append(o)
        return bool(made)
    st.wait_until(created, left(), "%s: an order created through the API" % phase)
    dropped = made[0]
    n = create_order(st, seq + 1)
    assert n, "%s: a second API order" % phase
    r = st.fake("POST", "/_fake/orders/%s/pay" % dropped,
                {"notify": "drop", "payment_type": "gopay"})
    assert r.status == 200, r
    r = st.fake("POST", "/_fake/orders/%s/pay" % n,
                {"notify": "normal", "payment_type": "bank_transfer"})
    assert r.status == 200, r
    st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.payment_event"
                                 " WHERE order_id = %s", (n,))[0][0] >= 1,
                  left(), "%s: a notification stored by kasir-ingest" % phase)
    st.wait_until(lambda: status(st, dropped) == "PAID", left(),
                  "%s: a dropped-webhook payment PAID through the reconciler" % phase)
    st.wait_until(lambda: status(st, n) == "PAID", left(),
                  "%s: a notified payment PAID" % phase)
    st.wait_until(lambda: receipts(st, dropped) == 1, left(),
                  "%s: the receipt email sent" % phase)
    log("%s: real work done again in %.1f s (bound %.0f s)"
        % (phase, time.monotonic() - t0, BOUND_S))


def failpoint_lines(fpdir):
    hit, fired = {}, set()
    for path in glob.glob(os.path.join(fpdir, "failpoints.*")):
        with open(path) as f:
            for line in f:
                what, _, name = line.strip().partition(" ")
                if what == "hit":
                    hit[name] = hit.get(name, 0) + 1
                elif what == "fired":
                    fired.add(name)
    return hit, fired


def start_daemons(st, env):
    for svc in DAEMONS:
        st.start(svc, wait=False, env=env)
    for svc in DAEMONS:
        st.wait_ready(svc)


def stop_daemons(st):
    for svc in reversed(DAEMONS):
        st.stop(svc)


def phase_break(st, fpdir):
    env = {"KASIR_FAILPOINTS": "*=break@2", "KASIR_FAILPOINT_DIR": fpdir}
    start_daemons(st, env)
    for seq in (100, 200, 300):
        traffic(st, seq)
        time.sleep(1)  # let periodic loops pass their statements again
    real_work(st, 1000, "phase A (break)")
    hit, fired = failpoint_lines(fpdir)
    by_loop = {}
    for name in sorted(hit):
        loop, _, stmt = name.partition(":")
        by_loop.setdefault(loop, []).append(stmt + ("" if name in fired else " (hit once, not fired)"))
    log("phase A: %d failpoints hit, %d fired" % (len(hit), len(fired)))
    for loop in sorted(by_loop):
        log("  %-32s %s" % (loop, ", ".join(by_loop[loop])))
    # a pool's slots and a daemon's workers share their statements: one
    # family ("order.api", "notifier.worker") is covered by any member
    family = lambda name: name.rstrip("0123456789").rstrip(".")  # noqa: E731
    registered = set(family(l) for l in loops(st))
    covered = set(family(f.partition(":")[0]) for f in fired)
    uncovered = sorted(registered - covered)
    assert not uncovered, "loops with no failpoint fired: %s" % uncovered
    # the loops of issue 12 by name: each must have been broken somewhere
    for need in ("reconciler.scheduler", "notifier.worker.0", "order.api.0",
                 "ingest.committer.0", "order.admin", "ingest.quarantine",
                 "ingest.sequence.ingest"):
        assert any(f.startswith(need + ":") for f in fired), \
            "%s: no failpoint fired (fired: %s)" % (need, sorted(fired))
    assert any(f.startswith("order.consume.") for f in fired) and \
        any(f.startswith("notifier.consume.") for f in fired) and \
        any(f.startswith("ingest.publish.") for f in fired), \
        "stream loops not covered: %s" % sorted(fired)
    return hit


# Phase B: where the loops stop while PostgreSQL is stopped and started:
# "<loop>:<statement>=pause@N", the Nth hit after the daemons start.  Each
# sits inside an open transaction whose next call is the paused one.
PAUSES = (
    "reconciler.scheduler:ROLLBACK@2",  # mode_evaluate: the reproduction
    "notifier.worker.0:ROLLBACK@2",     # claim() with nothing due (issue 12)
    "ingest.committer.0:COMMIT@1",      # the notification posted below
    "order.api.0:COMMIT@1",             # the POST /v1/orders below
)


def phase_pause(st, fpdir, hit, unpaid):
    pdir = os.path.join(fpdir, "b")
    os.makedirs(pdir, exist_ok=True)
    names = [p.partition("@")[0] for p in PAUSES]
    missing = [n for n in names if n not in hit]
    assert not missing, "phase B failpoints never reached in phase A: %s" % missing
    env = {"KASIR_FAILPOINTS": ",".join(p.replace("@", "=pause@") for p in PAUSES),
           "KASIR_FAILPOINT_DIR": pdir}
    start_daemons(st, env)
    files = lambda: glob.glob(os.path.join(pdir, "pause.*"))  # noqa: E731
    # the paused requests block until released: send them from threads
    blocked = [threading.Thread(target=tolerant, args=(create_order, st, 4000),
                                daemon=True),
               threading.Thread(target=tolerant, daemon=True, args=(
                   st.fake, "POST", "/_fake/orders/%s/pay" % unpaid,
                   {"notify": "normal", "payment_type": "bank_transfer"}))]
    for t in blocked:
        t.start()
    st.wait_until(lambda: len(files()) == len(PAUSES), 60,
                  "every loop stopped at its failpoint (%s)" % names)
    log("phase B: paused at %s" % sorted(os.path.basename(f) for f in files()))
    st.pg.stop("immediate")
    st.pg.start()
    for f in files():
        os.unlink(f)
    log("phase B: PostgreSQL stopped -m immediate and started, loops released")
    for t in blocked:
        t.join(30)
    real_work(st, 2000, "phase B (server stopped)")
    # the payment whose notification was caught in the committer's COMMIT:
    # the fake retries it, or the reconciler finds it
    st.wait_until(lambda: status(st, unpaid) == "PAID", BOUND_S,
                  "phase B: the payment caught by the restart PAID")
    _, fired = failpoint_lines(pdir)
    assert set(names) <= fired, (names, fired)


def main():
    # an outage test: PostgreSQL is stopped -m immediate, so fsync stays on
    with kasirtest.Stack.for_test(name="faults-loops", overrides=FAST,
                                  durable=True) as st:
        for svc in DAEMONS:
            if not st.available(svc):
                raise AssertionError("kasir-%s is not built" % svc)
        fpdir = os.path.join(st.dir, "failpoints")
        os.makedirs(fpdir, exist_ok=True)
        st.start_fakes()
        hit = phase_break(st, fpdir)
        unpaid = create_order(st, 3999)
        assert unpaid, "an order for phase B"
        stop_daemons(st)
        phase_pause(st, fpdir, hit, unpaid)
        log("ok")


if __name__ == "__main__":
    main()
