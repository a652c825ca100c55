#!/usr/bin/python3
"""The reconciler's confirmation pipeline records each answer as it arrives
(issue 13, latency).

The scheduler keeps a window of claimed orders with requests in flight and
records every check as soon as its answer is in, claiming new work while
other requests are still waiting.  One slow Status API answer must
therefore hold back nobody:

  1. order A is paid at the fake, whose Status API answers about A only
     after SLOW_MS; A's notification arrives and the reconciler claims A
     (its lease is set: the request is on its way);
  2. orders B1..B3 are paid at the fake (answered at once) and notified;
  3. every B is PAID, its check recorded, before A's answer has even
     arrived: B's recon.status_check.checked_at (the recording
     transaction's start) is earlier than A's requested_at + latency_ms;
     and A is PAID afterwards, exactly once.

A scheduler that waits for a whole batch of requests before recording (or
that claims only between batches) records the Bs after A's answer and
fails step 3.  Checked three ways: the batch scheduler this replaced, the
pipeline with no claim while a request is in flight, and the pipeline
recording only once every held request is answered: each fails here.
"""
import rstack
from rstack import log

SLOW_MS = 6000

# Retries off and a request timeout above SLOW_MS: A is answered on its
# first request, so its answer arrives requested_at + SLOW_MS.
OVERRIDES = {
    "RECON_TIMEOUT": "9s",
    "RECON_RETRIES": "0",
    "RECON_CONCURRENCY": "4",
    "RECON_BATCH": "8",
    "RECON_LEASE": "60s",
}


def leased(st, oid):
    rows = st.sql("SELECT lease_until IS NOT NULL FROM recon.watch"
                  " WHERE order_id = %s", (oid,))
    return bool(rows) and rows[0][0]


def confirm_check(st, oid):
    """(checked_at, requested_at, answered at) of the order's confirming
    check, epochs in seconds; None when there is none yet."""
    rows = st.sql("SELECT extract(epoch FROM checked_at)::float8,"
                  " extract(epoch FROM requested_at)::float8,"
                  " extract(epoch FROM requested_at)::float8"
                  "  + latency_ms / 1000.0"
                  " FROM recon.status_check WHERE order_id = %s AND confirm"
                  " AND verdict = 'status' ORDER BY id LIMIT 1", (oid,))
    return rows[0] if rows else None


def main():
    with rstack.stack(OVERRIDES) as st:
        rstack.start(st)
        slow = rstack.create_order(st, "lambat@example.com")
        fast = [rstack.create_order(st, "cepat%d@example.com" % i)
                for i in range(3)]
        r = st.fake("POST", "/_fake/status_api",
                    {"mode": "normal", "latency_ms_for": {slow: SLOW_MS}})
        assert r.status == 200, r

        rstack.pay(st, slow, notify="normal")
        st.wait_until(lambda: leased(st, slow), timeout=30,
                      what="%s claimed by the scheduler" % slow)
        log("%s claimed: its answer comes in %d ms" % (slow, SLOW_MS))
        for oid in fast:
            rstack.pay(st, oid, notify="normal")
        st.wait_until(lambda: all(rstack.order_status(st, o) == "PAID"
                                  for o in fast), timeout=30,
                      what="the fast orders PAID")
        a_seen = confirm_check(st, slow)
        st.wait_until(lambda: rstack.order_status(st, slow) == "PAID",
                      timeout=30, what="%s PAID" % slow)

        a = confirm_check(st, slow)
        assert a is not None, "no confirming check for %s" % slow
        a_answered = a[2]
        for oid in fast:
            b = confirm_check(st, oid)
            assert b is not None, "no confirming check for %s" % oid
            # asked while A's request was in flight, and recorded before
            # A's answer arrived
            assert b[1] >= a[1], (oid, b, a)
            assert b[0] < a_answered, (
                "%s recorded at %.3f, after %s's slow answer at %.3f: the "
                "slow answer held it back" % (oid, b[0], slow, a_answered))
            log("%s recorded %.0f ms before the slow answer arrived"
                % (oid, (a_answered - b[0]) * 1000))
        assert a_seen is None, (
            "%s's answer recorded before the fast orders were PAID" % slow)
        for oid in [slow] + fast:
            tr = rstack.transitions(st, oid, "PAID")
            assert len(tr) == 1 and tr[0][2] == "recon", (oid, tr)
        log("ok")


if __name__ == "__main__":
    main()
