"""Two kasir-ingest processes on one database, as behind nginx (issue 17).

Both append to the one "ingest" stream at the same time (their payment_event
inserts are the stream's source and take no shared lock, docs/backbone.md);
whichever sequencer holds the stream's advisory lock gives the committed
rows their seqs, and when
one process is SIGKILLed the other goes on sequencing everybody's rows.

Each process runs 6 committers.  ORDERS orders get STEPS notifications each, sent one after the other (the
next only after the previous one's 200, as Midtrans does), alternating
between the two processes; SENDERS threads run orders in parallel.  Half-way
through, process B is SIGKILLed and started again; a sender whose request
was cut resends to the other process (nginx's next upstream).

Checked in the database once everything committed is sequenced: every
stored payment_event has exactly one message on the stream, seq gap-free
from 1, nothing left unsequenced, and each order's messages in the order its
notifications were sent; both processes stored and sequenced some.
"""

import json
import random
import sys
import threading
import time

import kasirtest
from ingest_util import DOCS_KEY, JSON, check, notification

ORDERS = 150
STEPS = 6
SENDERS = 12
# more committers than the default 2: more transactions in flight at once
FAST = {"INGEST_RATE": "100000", "INGEST_BURST": "100000", "INGEST_COMMITTERS": "6"}


def render_second(st):
    """etc/ingest2.yaml: the ingest template with its own ports and admin
    socket, the same database."""
    with open(st.template_path("ingest")) as f:
        text = f.read()
    text = text.replace("@PORT_INGEST_", "@PORT_INGEST2_")
    text = text.replace("@RUN@/ingest.sock", "@RUN@/ingest2.sock")
    path = st.config_path("ingest2")
    with open(path, "w") as f:
        f.write(st.render_text(text, "ingest2"))
    return path


def start_second(st, path):
    st.spawn("ingest2", [st.binary("ingest"), "--config", path],
             ready=[("http", f"http://127.0.0.1:{st.port('INGEST2_ADMIN')}/readyz"),
                    ("tcp", st.port("INGEST2_HTTP"))])


def metric_b(st, name):
    """Sum of a metric of process B (its own admin listener)."""
    r = kasirtest.http("GET", f"http://127.0.0.1:{st.port('INGEST2_ADMIN')}/metrics")
    check(r.status == 200, "process B answers /metrics")
    return sum(v for (n, _), v in kasirtest.parse_metrics(r.raw.decode()).items()
               if n == name)


def main():
    rng = random.Random(int(time.time()))
    with kasirtest.Stack.for_test(server_key=DOCS_KEY, overrides=FAST) as st:
        st.start("ingest")
        second = render_second(st)
        start_second(st, second)
        urls = [st.url("ingest"),
                f"http://127.0.0.1:{st.port('INGEST2_HTTP')}/midtrans/notification"]

        jobs = [f"TWO-{i:03d}" for i in range(ORDERS)]
        lock = threading.Lock()
        state = {"sent": 0, "resent": 0, "503": 0, "errors": []}
        gate = threading.Event()  # set while B may be killed and restarted
        gate.set()

        def post(k, body):
            """To process k % 2; when its connection fails, to the other."""
            for attempt in range(40):
                gate.wait(30)
                url = urls[(k + attempt) % 2]
                try:
                    r = kasirtest.http("POST", url, body, JSON, timeout=15)
                except OSError:
                    with lock:
                        state["resent"] += 1
                    time.sleep(0.05)
                    continue
                if r.status == 200:
                    return
                if r.status != 503:
                    raise AssertionError(f"{url}: {r}")
                with lock:
                    state["503"] += 1
                time.sleep(0.05)
            raise AssertionError("notification not stored after 40 attempts")

        def sender(mine):
            try:
                for i, oid in mine:
                    for step in range(STEPS):
                        body = notification(oid, status="pending", code="201",
                                            transaction_id=f"tx-{oid}-{step}")
                        post(i + step, body)
                        with lock:
                            state["sent"] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    state["errors"].append(repr(e))

        threads = [threading.Thread(target=sender, daemon=True,
                                    args=([(i, o) for i, o in enumerate(jobs)
                                           if i % SENDERS == s],))
                   for s in range(SENDERS)]
        for t in threads:
            t.start()
        total = ORDERS * STEPS
        st.wait_until(lambda: state["sent"] >= total // 2 or state["errors"],
                      timeout=120, what="half of the notifications stored")
        check(not state["errors"], f"senders: {state['errors'][:3]}")
        b_stored = metric_b(st, "kasir_ingest_stored_total")
        b_sequenced = metric_b(st, "kasir_stream_sequenced_total")
        time.sleep(rng.uniform(0, 0.05))
        st.kill("ingest2")
        print(f"SIGKILL ingest2 at {state['sent']} of {total} stored "
              f"(it had stored {b_stored:.0f}, sequenced {b_sequenced:.0f})", flush=True)
        time.sleep(0.3)
        start_second(st, second)
        for t in threads:
            t.join(180)
        check(not state["errors"], f"senders: {state['errors'][:3]}")
        check(state["sent"] == total, f"{state['sent']} of {total} stored")
        # the database never went away: no notification answered 503
        check(state["503"] == 0, f"{state['503']} answers 503")
        check(b_stored > 0 and b_sequenced > 0,
              f"process B stored {b_stored} and sequenced {b_sequenced} before the kill")
        check(st.metric("ingest", "kasir_ingest_stored_total") > 0 and
              st.metric("ingest", "kasir_stream_sequenced_total") > 0,
              "process A stored and sequenced")

        kasirtest.wait_sequenced(st.sql, "ingest")
        n_ev = st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
        n, lo, hi, distinct = st.sql(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT seq)"
            " FROM ingest.stream_messages WHERE stream = 'ingest'")[0]
        check(n == n_ev and lo == 1 and hi == n and distinct == n,
              f"stream: {n} messages, seq {lo}..{hi} ({distinct} distinct), "
              f"{n_ev} stored events: want one each, gap-free")
        check(st.sql("SELECT seq FROM ingest.stream_head WHERE stream = 'ingest'")[0][0] == n,
              "stream_head at the last seq")
        orphans = st.sql(
            "SELECT e.id FROM ingest.payment_event e LEFT JOIN ingest.stream_messages o"
            " ON (o.body::jsonb #>> '{data,event_id}')::bigint = e.id"
            " GROUP BY e.id HAVING count(o.seq) <> 1 LIMIT 5")
        check(not orphans, f"events without exactly one message: {orphans}")
        rows = st.sql(
            "SELECT body::jsonb #>> '{data,order_id}', body::jsonb #>> '{data,transaction_id}'"
            " FROM ingest.stream_messages WHERE stream = 'ingest' ORDER BY seq")
        steps = {}
        for oid, tx in rows:
            steps.setdefault(oid, []).append(int(tx.rsplit("-", 1)[1]))
        bad = []
        for oid in jobs:
            got = steps.get(oid, [])
            # a resent notification may be stored twice (the cut request
            # may have committed): duplicates are evidence, order is not
            if got != sorted(got) or sorted(set(got)) != list(range(STEPS)):
                bad.append((oid, got))
        check(not bad, f"orders whose messages are not in send order: {bad[:3]}")
        print(f"ok: {n} messages from two processes ({state['resent']} resends "
              f"after the kill), every order in send order", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
