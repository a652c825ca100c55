"""The ingest stream's source: a payment_event row is the stream message
(issue 17, docs/backbone.md "A table as the source").

kasir-ingest writes each notification once, as its payment_event row; the
ingest producer's sequencer takes the rows whose writing transaction
committed since its last pass (PgQ's snapshot rule) and numbers them in
ranges (ingest.stream_tick); readers render the messages from
payment_event (ingest.stream_messages here, the publisher's query in
kasir-ingest).  Checked here against a running kasir-ingest:

1. Out-of-order commits.  Transaction A inserts an event (the lower id)
   and stays open; transaction B inserts one (the higher id) and commits.
   B's message appears while A is open, A's is not there; then A commits
   and its message appears after B's.  Every row exactly once, seqs
   gap-free, and a rolled-back insert never appears.  A sequencer that
   kept a watermark ("everything up to the highest id taken") would lose A
   for good.
2. The rendered message is what kasir-order expects: every field of
   payment.notification (proto/messages.def) with the values the daemon
   parsed, "raw" the body exactly as received (non-ASCII, escapes and all),
   the header's id a UUID, at = received_at; a kasir-order that consumed
   it is checked by the payment tests.
3. The source keeps working across a kasir-ingest restart (the last
   snapshot is in stream_head), and the head row records it.
4. A pass reads what is new, not the table: with 100,000 rows already
   sequenced, asking the source for the next 50 reads a few dozen pages
   (counted with EXPLAIN (ANALYZE, BUFFERS), not timed); a scan of the
   table reads thousands.  Rendering the last range reads as few.  The
   100,000 rows stored while kasir-ingest was down were numbered by one
   pass, in ranges of at most TICK_ROWS (64) rows, gap-free.
5. A source the sequencer cannot read (EXECUTE revoked from kasir-ingest's
   role) loses nothing: notifications are still stored and answered 200,
   the failing passes are counted and logged once ("... and in what
   ingest.stream_source_ingest_ids() gives"), and once the right is back the
   stored rows are numbered, each once.
6. What a consumer gets is what the ranges say.  kasir-order, stopped
   while 700 notifications are stored (one pass: eleven ranges), replays
   them through kasir-ingest's own reader in batches that cross the
   ranges' ends; each one it records (orders.unknown_notifications: the
   orders are unknown) has the seq and the body ingest.stream_messages
   gives for its event.
7. No statement of kasir-ingest calls the source functions: the sequencer,
   its idle probe and the readers get them inlined (a call that is not
   inlined plans the function's body every time).  Counted with
   track_functions = 'all', against a control call that is counted.
8. With no consumer connected (kasir-order stopped) the publisher reads
   and sends nothing (kasir_stream_unsent_total counts what it skipped);
   kasir-order, started again, replays those messages.
9. A table that grew while kasir-ingest ran is still read through its
   indexes: with kasir-ingest running since payment_event was small,
   5,000 rows stored, numbered, replayed and probed count no sequential
   scan of it (a generic plan made on the small table used to scan it
   whole at every idle probe).
10. A busy consumer is not sent bursts to refuse: 5,000 messages at once
   to a running kasir-order, which takes one frame at a time, cost a
   handful of refused sends (every frame but one or two of each
   256-message pass was refused before), and all 5,000 are applied.
"""

import json
import sys
import time

import kasirtest
from ingest_util import DOCS_KEY, JSON, check, notification

# rows per stream_tick range (STREAM_TICK_ROWS, common/stream/sequencer.c)
TICK_ROWS = 64

# one event row as a test inserts it by hand (ingest's own columns)
INSERT = ("INSERT INTO ingest.payment_event (received_at, source_addr, order_id,"
          " transaction_status, status_code, gross_amount, signature_key_id, raw)"
          " VALUES (now(), '127.0.0.1', %s, 'pending', '201', '10000.00', 'test',"
          " convert_to(%s, 'UTF8')) RETURNING id")


def messages(st):
    """{event_id: [seq, ...]} of the ingest stream, and all seqs in order."""
    rows = st.sql("SELECT seq, (body::jsonb #>> '{data,event_id}')::bigint"
                  " FROM ingest.stream_messages WHERE stream = 'ingest' ORDER BY seq")
    by_event = {}
    for seq, ev in rows:
        by_event.setdefault(ev, []).append(seq)
    return by_event, [seq for seq, _ in rows]


def check_numbered_once(st, want, what):
    """Every committed row has been numbered: want messages in all, seqs
    gap-free from 1, no event twice."""
    kasirtest.wait_sequenced(st.sql, "ingest")
    got, seqs = messages(st)
    check(seqs == list(range(1, len(seqs) + 1)) and len(seqs) == want,
          f"{what}: {len(seqs)} messages, want {want} gap-free: {seqs[-5:]}")
    check(all(len(v) == 1 for v in got.values()), f"{what}: an event numbered twice")


def out_of_order(st):
    a = st.pg.connect()
    b = st.pg.connect()
    c = st.pg.connect()
    try:
        ca, cb, cc = a.cursor(), b.cursor(), c.cursor()
        ca.execute("BEGIN")
        ca.execute(INSERT, ("SRC-A", '{"order_id":"SRC-A"}'))
        id_a = ca.fetchone()[0]
        cc.execute("BEGIN")
        cc.execute(INSERT, ("SRC-C", '{"order_id":"SRC-C"}'))
        id_c = cc.fetchone()[0]
        cb.execute("BEGIN")
        cb.execute(INSERT, ("SRC-B", '{"order_id":"SRC-B"}'))
        id_b = cb.fetchone()[0]
        check(id_a < id_c < id_b, f"ids in insert order: {id_a} {id_c} {id_b}")
        cb.execute("COMMIT")
        # nothing kicks the sequencer here: its 50 ms poll finds B
        st.wait_until(lambda: id_b in messages(st)[0], timeout=20,
                      what="B's message, committed after A's insert")
        # A (lower id, still open) is not there; passes keep running
        time.sleep(0.3)
        got, _ = messages(st)
        check(id_a not in got, "A's message exists before A committed")
        cc.execute("ROLLBACK")
        ca.execute("COMMIT")
        st.wait_until(lambda: id_a in messages(st)[0], timeout=20,
                      what="A's message after A committed out of id order")
        time.sleep(0.3)  # more passes: nothing is taken twice
        got, seqs = messages(st)
        check(got[id_a] and got[id_b] and len(got[id_a]) == 1 and len(got[id_b]) == 1,
              f"A and B once each: {got.get(id_a)} {got.get(id_b)}")
        check(got[id_a][0] > got[id_b][0],
              f"A (committed last) after B: seq {got[id_a]} vs {got[id_b]}")
        check(id_c not in got, "the rolled-back insert has a message")
        check(seqs == list(range(1, len(seqs) + 1)), f"seqs gap-free from 1: {seqs}")
        n_ev = st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
        check(len(got) == n_ev and all(len(v) == 1 for v in got.values()),
              f"{n_ev} events, messages {got}: want one each")
        snap = st.sql("SELECT snap::text FROM ingest.stream_head WHERE stream = 'ingest'")
        check(snap and snap[0][0], f"stream_head keeps the last snapshot: {snap}")
        print(f"ok: out-of-order commit: B (id {id_b}) seq {got[id_b][0]}, "
              f"A (id {id_a}) seq {got[id_a][0]}; rolled-back C absent", flush=True)
    finally:
        for conn in (a, b, c):
            conn.close()


def rendered(st):
    extra = {"custom_field1": "Budi \u015amiech \U0001f3ac \"kutip\" \\ tab\t",
             "settlement_time": "2026-11-23 16:00:05",
             "va_numbers": [{"bank": "bca", "va_number": "12345"}]}
    body = notification("SRC-RENDER", **extra)
    # as a client may send it: spaces, key order of its own, \u escapes
    text = json.dumps(json.loads(body), indent=1, ensure_ascii=True).encode()
    r = kasirtest.http("POST", st.url("ingest"), text, JSON)
    check(r.status == 200, f"notification stored: {r}")
    ev = r.body["event_id"]
    kasirtest.wait_sequenced(st.sql, "ingest")
    body_text, seq = st.sql("SELECT body, seq FROM ingest.stream_messages"
                            " WHERE stream = 'ingest'"
                            " AND (body::jsonb #>> '{data,event_id}')::bigint = %s",
                            (ev,))[0]
    msg = json.loads(body_text)
    received = st.sql("SELECT to_char(received_at AT TIME ZONE 'UTC',"
                      " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM ingest.payment_event"
                      " WHERE id = %s", (ev,))[0][0]
    sent = json.loads(text)
    check(list(msg) == ["v", "stream", "seq", "id", "type", "at", "data"],
          f"header fields in the encoder's order: {list(msg)}")
    check(msg["v"] == 1 and msg["stream"] == "ingest" and msg["seq"] == seq
          and msg["type"] == "payment.notification" and msg["at"] == received,
          f"header: {msg}")
    check(len(msg["id"]) == 36 and msg["id"].count("-") == 4, f"id a UUID: {msg['id']}")
    want = {"event_id": ev, "order_id": "SRC-RENDER", "transaction_status": "settlement",
            "status_code": "200", "gross_amount": "100000.00", "received_at": received,
            "currency": "IDR", "payment_type": "bank_transfer", "fraud_status": "accept",
            "transaction_id": "tx-SRC-RENDER",
            "transaction_time": sent["transaction_time"],
            "settlement_time": "2026-11-23 16:00:05", "raw": sent}
    check(msg["data"] == want,
          f"data: {json.dumps(msg['data'])[:400]} vs {json.dumps(want)[:400]}")
    # raw is the received text itself, not a re-formatted copy
    check(text.decode() in body_text, "raw is the body byte for byte")
    # optional fields left out when the body has none (or null)
    r = kasirtest.http("POST", st.url("ingest"),
                       notification("SRC-BARE", fraud_status=None, settlement_time=None),
                       JSON)
    check(r.status == 200, f"bare notification stored: {r}")
    ev = r.body["event_id"]
    kasirtest.wait_sequenced(st.sql, "ingest")
    data = json.loads(st.sql(
        "SELECT body FROM ingest.stream_messages WHERE stream = 'ingest'"
        " AND (body::jsonb #>> '{data,event_id}')::bigint = %s", (ev,))[0][0])["data"]
    check("fraud_status" not in data and "settlement_time" not in data,
          f"absent optional fields left out: {sorted(data)}")
    print("ok: rendered message = the encoder's fields, raw as received", flush=True)


def restart(st):
    before = messages(st)[1][-1]
    st.stop("ingest")
    st.sql(INSERT, ("SRC-DOWN", '{"order_id":"SRC-DOWN"}'))  # while it is down
    st.start("ingest")
    r = kasirtest.http("POST", st.url("ingest"), notification("SRC-AFTER"), JSON)
    check(r.status == 200, f"stored after the restart: {r}")
    check_numbered_once(st, before + 2, "the row stored while down and one after")
    print("ok: a row stored while kasir-ingest was down is taken after its restart",
          flush=True)


# what the sequencer asks: the ids new since the head's snapshot
NEW_IDS = ("SELECT count(*) FROM ingest.stream_source_ingest_ids((SELECT snap FROM"
           " ingest.stream_head WHERE stream = 'ingest'), pg_current_snapshot())")
# what a reader renders: the last range
LAST_RANGE = ("SELECT count(*) FROM ingest.stream_tick t, LATERAL"
              " ingest.stream_source_ingest(t.prev, t.snap, t.lo, t.hi) f"
              " WHERE t.stream = 'ingest' AND t.last_seq ="
              " (SELECT max(last_seq) FROM ingest.stream_tick WHERE stream = 'ingest')")


def pages_read(st, query):
    """Pages query reads (shared buffers hit + read, its own statements
    included), on the second call of one session: the first one also
    reads the catalog to plan the function."""
    conn = st.pg.connect()
    try:
        cur = conn.cursor()
        for _ in range(2):
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query)
            top = cur.fetchone()[0][0]["Plan"]
    finally:
        conn.close()
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"], top["Actual Rows"]


def index_bound(st):
    st.stop("ingest")
    fill = ("INSERT INTO ingest.payment_event (received_at, source_addr, order_id,"
            " transaction_status, status_code, gross_amount, signature_key_id, raw)"
            " SELECT now(), '127.0.0.1', %s || g, 'pending', '201', '10000.00', 'test',"
            " convert_to('{\"order_id\":\"' || %s || g || '\"}', 'UTF8')"
            " FROM generate_series(1, %s) g")
    st.sql(fill, ("BULK-", "BULK-", 100000))
    head0 = st.sql("SELECT seq FROM ingest.stream_head WHERE stream = 'ingest'")[0][0]
    st.start("ingest")
    kasirtest.wait_sequenced(st.sql, "ingest", timeout=120)
    # one pass took the 100,000 (they were all committed before it), cut
    # into ranges of at most TICK_ROWS that follow each other without a gap
    ticks = st.sql("SELECT first_seq, last_seq FROM ingest.stream_tick"
                   " WHERE stream = 'ingest' AND last_seq > %s ORDER BY last_seq", (head0,))
    check(ticks[0][0] == head0 + 1 and ticks[-1][1] == head0 + 100000,
          f"the ranges cover the 100,000: {ticks[0]}..{ticks[-1]}")
    check(all(b[0] == a[1] + 1 for a, b in zip(ticks, ticks[1:])), "ranges without a gap")
    check(max(b - a + 1 for a, b in ticks) == TICK_ROWS
          and len(ticks) == -(-100000 // TICK_ROWS),
          f"{len(ticks)} ranges of at most {TICK_ROWS} rows")
    st.sql("ANALYZE ingest.payment_event")
    st.stop("ingest")  # nothing takes the next rows while we look
    st.sql(fill, ("NEXT-", "NEXT-", 50))
    pages, _ = pages_read(st, NEW_IDS)
    table = st.sql("SELECT pg_relation_size('ingest.payment_event') / 8192")[0][0]
    # the index path: the index's few pages and the 50 rows' heap pages
    check(pages < table / 10,
          f"the source read {pages} pages for 50 new rows; the table has {table}")
    st.start("ingest")
    n_ev = st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]
    check_numbered_once(st, n_ev, "every event of the filled table")
    render, rows = pages_read(st, LAST_RANGE)
    check(rows == 1 and render < table / 10,
          f"rendering the last range read {render} pages; the table has {table}")
    print(f"ok: 50 new rows of {n_ev}: the source read {pages} pages of a"
          f" {table}-page table, rendering them {render}", flush=True)


def source_refused(st):
    fn = "ingest.stream_source_ingest_ids(pg_snapshot, pg_snapshot)"
    before = messages(st)[1][-1]
    failures0 = st.metric("ingest", "kasir_stream_sequencer_failures_total")
    st.sql(f"REVOKE EXECUTE ON FUNCTION {fn} FROM kasir_ingest, PUBLIC")
    try:
        for i in range(3):
            r = kasirtest.http("POST", st.url("ingest"),
                               notification(f"SRC-REFUSED-{i}"), JSON)
            check(r.status == 200, f"stored while the source is refused: {r}")
        st.wait_until(lambda: st.metric("ingest", "kasir_stream_sequencer_failures_total")
                      > failures0, timeout=20, what="a failing pass counted")
        check(messages(st)[1][-1] == before, "a message was numbered without the source")
        log = st.log_text("ingest")
        check("and in what ingest.stream_source_ingest_ids() gives" in log,
              "the failure log names where the messages wait")
    finally:
        st.sql(f"GRANT EXECUTE ON FUNCTION {fn} TO kasir_ingest")
    check_numbered_once(st, before + 3, "the three stored while refused")
    st.wait_until(lambda: "sequencing stream ingest works again" in st.log_text("ingest"),
                  timeout=20, what="the recovery logged")
    print("ok: a refused source loses nothing; the rows are numbered once it is back",
          flush=True)


def consumed(st):
    st.start("order")
    kasirtest.wait_sequenced(st.sql, "ingest")
    head = st.sql("SELECT seq FROM ingest.stream_head WHERE stream = 'ingest'")[0][0]
    st.wait_until(lambda: st.sql("SELECT seq FROM orders.stream_cursor"
                                 " WHERE stream = 'ingest'") == [(head,)],
                  timeout=120, what="kasir-order caught up")
    st.stop("order")
    st.stop("ingest")
    fill = ("INSERT INTO ingest.payment_event (received_at, source_addr, order_id,"
            " transaction_status, status_code, gross_amount, signature_key_id, raw)"
            " SELECT now(), '127.0.0.1', 'CONSUMED-' || g, 'settlement', '200',"
            " '10000.00', 'test', convert_to('{\"order_id\":\"CONSUMED-' || g ||"
            " '\",\"transaction_status\":\"settlement\"}', 'UTF8')"
            " FROM generate_series(1, 700) g")
    st.sql(fill)
    st.start("ingest")
    kasirtest.wait_sequenced(st.sql, "ingest")
    ticks = st.sql("SELECT count(*) FROM ingest.stream_tick WHERE stream = 'ingest'"
                   " AND last_seq > %s", (head,))[0][0]
    check(ticks == -(-700 // TICK_ROWS), f"700 rows in {ticks} ranges")
    st.start("order")
    st.wait_until(lambda: st.sql("SELECT count(*) FROM orders.unknown_notifications"
                                 " WHERE order_id LIKE 'CONSUMED-%%'")[0][0] == 700,
                  timeout=120, what="kasir-order recorded the 700")
    got = st.sql("SELECT ref, stream_seq, raw::text FROM orders.unknown_notifications"
                 " WHERE order_id LIKE 'CONSUMED-%%' ORDER BY stream_seq")
    want = st.sql("SELECT (body::jsonb #>> '{data,event_id}')::bigint, seq,"
                  " (body::jsonb -> 'data' -> 'raw')::text FROM ingest.stream_messages"
                  " WHERE stream = 'ingest' AND seq > %s ORDER BY seq", (head,))
    check(got == want, f"what kasir-order got = the ranges: {got[:3]} vs {want[:3]}")
    print(f"ok: kasir-order replayed 700 messages across {ticks} ranges; every seq"
          " and body is the one the ranges give", flush=True)


def inlined(st):
    """7: no statement of kasir-ingest calls the source functions; each is
    inlined into its caller's plan.  PostgreSQL inlines a SQL function only
    when no argument is a sub-select; any other call goes through the SQL
    function executor, which plans the body at every call (a pass: 0.33 ms
    against 0.19 inlined, measured in a pgbench loop).  With track_functions = 'all' every call that is not
    inlined is counted in pg_stat_user_functions; an inlined one is not."""
    fns = ("stream_source_ingest_ids", "stream_source_ingest")
    counted = ("SELECT funcname, calls FROM pg_stat_user_functions"
               " WHERE schemaname = 'ingest'")
    st.stop("ingest")
    st.sql("ALTER ROLE kasir_ingest SET track_functions = 'all'")
    try:
        st.start("ingest")
        st.sql("SELECT pg_stat_reset()")
        before = messages(st)[1][-1]
        for i in range(20):
            r = kasirtest.http("POST", st.url("ingest"), notification(f"SRC-INLINE-{i}"), JSON)
            check(r.status == 200, f"stored: {r}")
        # numbered; read by the publisher or the replay server (kasir-order,
        # started by part 6, takes them); then idle passes (the probe)
        check_numbered_once(st, before + 20, "the twenty")
        st.wait_until(lambda: st.sql("SELECT seq FROM orders.stream_cursor"
                                     " WHERE stream = 'ingest'") == [(before + 20,)],
                      timeout=30, what="kasir-order took the twenty")
        time.sleep(0.5)
        # a backend's counters reach pg_stat_user_functions when it ends
        st.stop("ingest")
        st.wait_until(lambda: not st.sql("SELECT 1 FROM pg_stat_activity"
                                         " WHERE usename = 'kasir_ingest'"),
                      timeout=20, what="kasir-ingest's sessions ended")
        # the control: a call that cannot be inlined is counted
        conn = st.pg.connect()
        try:
            cur = conn.cursor()
            cur.execute("SET track_functions = 'all'")
            cur.execute("SELECT count(*) FROM ingest.stream_source_ingest_ids("
                        "(SELECT NULL::pg_snapshot), pg_current_snapshot())")
        finally:
            conn.close()
        st.wait_until(lambda: dict(st.sql(counted)).get(fns[0], 0) >= 1,
                      timeout=20, what="the control's call counted")
        calls = dict(st.sql(counted))
        check(calls.get(fns[0]) == 1 and calls.get(fns[1], 0) == 0,
              f"calls of the source by kasir-ingest (the control's one aside): {calls}")
    finally:
        st.stop("ingest")
        st.sql("ALTER ROLE kasir_ingest RESET track_functions")
        st.start("ingest")
    print("ok: 20 notifications numbered and published; no statement called the"
          " source functions (a control call was counted)", flush=True)


def publisher_alone(st):
    """8: with no consumer connected the publisher reads nothing, and a
    consumer that connects later replays what it missed."""
    def consumers():
        return st.metric("ingest", "kasir_stream_consumers")

    def tried():
        return (st.metric("ingest", "kasir_stream_sent_total")
                + st.metric("ingest", "kasir_stream_send_failed_total"))

    # kasir-order (part 6) takes the stream from kasir-ingest's publisher
    st.wait_until(lambda: consumers() == 1, timeout=20, what="kasir-order connected")
    st.stop("order")
    st.wait_until(lambda: consumers() == 0, timeout=20, what="kasir-order's pipe gone")
    tried0, unsent0 = tried(), st.metric("ingest", "kasir_stream_unsent_total")
    before = messages(st)[1][-1]
    for i in range(30):
        r = kasirtest.http("POST", st.url("ingest"), notification(f"SRC-ALONE-{i}"), JSON)
        check(r.status == 200, f"stored with no consumer: {r}")
    check_numbered_once(st, before + 30, "the thirty")
    st.wait_until(lambda: st.metric("ingest", "kasir_stream_unsent_total") >= unsent0 + 30,
                  timeout=20, what="the thirty counted as unsent")
    # a refused heartbeat counts as a failed send too: a few, never thirty
    check(tried() - tried0 < 30, f"the publisher tried {tried() - tried0} sends to nobody")
    st.start("order")
    st.wait_until(lambda: st.sql("SELECT seq FROM orders.stream_cursor"
                                 " WHERE stream = 'ingest'") == [(before + 30,)],
                  timeout=30, what="kasir-order replayed the thirty")
    st.wait_until(lambda: consumers() == 1, timeout=20, what="kasir-order connected again")
    print("ok: 30 notifications with no consumer: none read or sent; kasir-order"
          " replayed them once back", flush=True)


def grown(st):
    """9: a table that grew while kasir-ingest ran is still read through its
    indexes.  kasir-ingest's statements are prepared once per session; a
    generic plan made while payment_event was small is kept after it grew,
    and its idle probe then scanned the whole table every 50 ms.  Its
    connections run with enable_seqscan = off: with kasir-ingest running
    since the table held a few hundred rows, 5,000 more are stored,
    numbered, replayed to kasir-order, and probed for seconds of idle; no
    sequential scan of payment_event is counted meanwhile."""
    fill = ("INSERT INTO ingest.payment_event (received_at, source_addr, order_id,"
            " transaction_status, status_code, gross_amount, signature_key_id, raw)"
            " SELECT now(), '127.0.0.1', 'GROWN-' || g, 'pending', '201', '10000.00',"
            " 'test', convert_to('{\"order_id\":\"GROWN-' || g || '\"}', 'UTF8')"
            " FROM generate_series(1, 5000) g")
    scans = ("SELECT seq_scan FROM pg_stat_user_tables"
             " WHERE relid = 'ingest.payment_event'::regclass")
    st.stop("order")
    st.sql(fill)
    kasirtest.wait_sequenced(st.sql, "ingest")
    head = st.sql("SELECT seq FROM ingest.stream_head WHERE stream = 'ingest'")[0][0]
    time.sleep(1.5)  # the sessions' counters so far reach the view
    before = st.sql(scans)[0][0]
    st.start("order")
    st.wait_until(lambda: st.sql("SELECT seq FROM orders.stream_cursor"
                                 " WHERE stream = 'ingest'") == [(head,)],
                  timeout=60, what="kasir-order replayed the 5,000")
    time.sleep(3)  # about 60 idle probes; counters flushed (1 s)
    after = st.sql(scans)[0][0]
    check(after == before, f"{after - before} sequential scans of payment_event"
          " by kasir-ingest's probe, publisher or replay server")
    print(f"ok: 5,000 rows stored while kasir-ingest ran, numbered, replayed and"
          f" probed: no sequential scan of payment_event", flush=True)


def busy_consumer(st):
    """10: a consumer that takes one frame at a time (kasir-order's pull
    socket holds one) does not make the publisher read, sign and send a
    burst only to have it refused: a pass stops at its first refused
    frame, and with a backlog it reads nothing while the consumer has not
    taken the last frame.  5,000 rows stored at once while kasir-order
    runs: kasir-order gets all of them (by replay), and the publisher's
    refused sends stay a handful (every frame of each 256-message pass
    but one or two was refused before)."""
    fill = ("INSERT INTO ingest.payment_event (received_at, source_addr, order_id,"
            " transaction_status, status_code, gross_amount, signature_key_id, raw)"
            " SELECT now(), '127.0.0.1', 'BUSY-' || g, 'pending', '201', '10000.00',"
            " 'test', convert_to('{\"order_id\":\"BUSY-' || g || '\"}', 'UTF8')"
            " FROM generate_series(1, 5000) g")
    st.wait_until(lambda: st.metric("ingest", "kasir_stream_consumers") == 1,
                  timeout=20, what="kasir-order connected")
    refused0 = st.metric("ingest", "kasir_stream_send_failed_total")
    unsent0 = st.metric("ingest", "kasir_stream_unsent_total")
    st.sql(fill)
    kasirtest.wait_sequenced(st.sql, "ingest")
    head = st.sql("SELECT seq FROM ingest.stream_head WHERE stream = 'ingest'")[0][0]
    st.wait_until(lambda: st.sql("SELECT seq FROM orders.stream_cursor"
                                 " WHERE stream = 'ingest'") == [(head,)],
                  timeout=60, what="kasir-order took the 5,000")
    refused = st.metric("ingest", "kasir_stream_send_failed_total") - refused0
    unsent = st.metric("ingest", "kasir_stream_unsent_total") - unsent0
    check(refused < 500, f"{refused:.0f} sends refused for 5,000 messages"
          f" ({unsent:.0f} skipped)")
    print(f"ok: 5,000 messages to a busy kasir-order: {refused:.0f} sends refused,"
          f" {unsent:.0f} left to replay, all applied", flush=True)


def main():
    with kasirtest.Stack.for_test(server_key=DOCS_KEY) as st:
        st.start("ingest")
        out_of_order(st)
        rendered(st)
        restart(st)
        source_refused(st)
        consumed(st)
        inlined(st)
        publisher_alone(st)
        grown(st)
        busy_consumer(st)
        index_bound(st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
