"""kasir-ingest end to end against a real PostgreSQL (issue 3, issue 8):

- every Midtrans fixture (tests/data/midtrans) POSTed -> 200 {"status":"ok","event_id":N}
  and a payment_event row whose raw body equals the bytes sent, parsed
  columns equal the body's fields, and exactly one payment.notification
  message per stored event on the ingest stream (raw object kept whole)
- duplicates are stored again and answered 200
- 48 at once, queued behind a lock, are stored in multi-row batches and
  each answer's event_id (and its stream message's) is its own row
- a forged signature -> 403 invalid_signature, nothing stored, the body in
  ingest.quarantine; "100000" vs "100000.00"
- 400 (each reason code), 415, 413 (10 MB and cap+1), 404 (trailing slash,
  never a redirect), 405; nothing stored for any of them
- payment_event / quarantine are append-only for kasir_ingest and even for
  the owner (triggers)
- metrics and the admin socket (status, events.list, quarantine.list)
"""

import json
import os
import re
import subprocess
import sys
import threading

import psycopg2

import kasirtest
from ingest_util import (DOCS_KEY, JSON, admin, check, count, notification,
                         post_from, raw_request, samples, signature)


def main():
    smp = samples()
    with kasirtest.Stack.for_test(server_key=DOCS_KEY,
                                  overrides={"INGEST_RATE": "10000",
                                             "INGEST_BURST": "10000",
                                             # the batch below waits on a
                                             # lock until all 48 are queued
                                             "INGEST_STATEMENT_TIMEOUT": "60s"}) as st:
        st.start("ingest")
        port = st.port("INGEST_HTTP")
        path = "/midtrans/notification"
        ok = 0

        # -- every fixture ------------------------------------------------------
        ids = {}
        for name, raw in smp:
            r = st.notify(raw, JSON)
            check(r.status == 200, f"{name}: 200 (got {r})")
            check(r.body.get("status") == "ok" and isinstance(r.body.get("event_id"), int),
                  f"{name}: body has status ok and an event id")
            ok += 1
            eid = r.body["event_id"]
            ids[eid] = (name, raw)
            row = st.sql("SELECT raw, order_id, transaction_status, status_code, "
                         "gross_amount, fraud_status, payment_type, transaction_id, "
                         "currency, signature_key_id, host(source_addr), received_at "
                         "FROM ingest.payment_event WHERE id = %s", (eid,))
            check(len(row) == 1, f"{name}: one payment_event row {eid}")
            row = row[0]
            check(bytes(row[0]) == raw, f"{name}: raw body stored byte for byte")
            body = json.loads(raw)
            for i, col in enumerate(("order_id", "transaction_status", "status_code",
                                     "gross_amount", "fraud_status", "payment_type",
                                     "transaction_id", "currency"), start=1):
                if row[i] != body.get(col):
                    raise AssertionError(f"{name}: column {col} = {row[i]!r}, "
                                         f"body has {body.get(col)!r}")
            check(row[9] == "primary", f"{name}: signature_key_id names the key id")
            check(row[10] == "127.0.0.1", f"{name}: source_addr is the peer")

        # -- the stream: one message per stored event ---------------------------
        def stream_rows():
            return st.sql("SELECT seq, type, body FROM ingest.stream_messages "
                          "WHERE stream = 'ingest' ORDER BY seq")
        # sequenced after COMMIT by the sequencer (docs/backbone.md): wait
        st.wait_until(lambda: len(stream_rows()) >= len(ids), timeout=10,
                      what="every stored event sequenced on the stream")
        rows = stream_rows()
        check(len(rows) == len(ids), f"{len(rows)} stream messages for {len(ids)} events")
        check([r[0] for r in rows] == list(range(1, len(rows) + 1)), "stream seq gap-free from 1")
        seen = set()
        for seq, typ, body in rows:
            msg = json.loads(body)
            check(typ == "payment.notification" and msg["type"] == typ,
                  f"seq {seq}: type payment.notification")
            d = msg["data"]
            name, raw = ids[d["event_id"]]
            sample = json.loads(raw)
            check(d["raw"] == sample, f"seq {seq}: raw object = the whole {name} (unknown fields kept)")
            check(d["order_id"] == sample["order_id"] and
                  d["gross_amount"] == sample["gross_amount"] and
                  d["transaction_status"] == sample["transaction_status"],
                  f"seq {seq}: parsed fields match {name}")
            seen.add(d["event_id"])
        check(seen == set(ids), "every stored event is on the stream exactly once")

        # -- duplicates are evidence ------------------------------------------------
        name, raw = smp[0]
        oid = json.loads(raw)["order_id"]
        before = count(st, "ingest.payment_event", "order_id = %s", (oid,))
        r1 = st.notify(raw, JSON)
        r2 = st.notify(raw, JSON)
        ok += 2
        check(r1.status == 200 and r2.status == 200, "duplicate delivery answered 200 twice")
        check(r1.body["event_id"] != r2.body["event_id"], "each delivery gets its own event id")
        check(count(st, "ingest.payment_event", "order_id = %s", (oid,)) == before + 2,
              "duplicates stored again")

        # content type with parameters
        r = st.notify(notification("ct-param-1"), {"Content-Type": "application/json; charset=utf-8"})
        ok += 1
        check(r.status == 200, f"application/json; charset=utf-8 accepted ({r})")

        # -- many at once: multi-row batches, each answer's id is its row -----
        # The committers wait on a lock while the notifications queue, so
        # that they are stored in batches of many: one INSERT per batch,
        # the ids given by position (services/ingest/store.c).
        held = st.pg.connect()
        held.autocommit = False
        held.cursor().execute("LOCK TABLE ingest.payment_event IN ACCESS EXCLUSIVE MODE")
        batch = {f"batch-{i:02d}": notification(f"batch-{i:02d}", amount=f"{1000 + i}.00")
                 for i in range(48)}
        answers = {}

        def send(name):
            answers[name] = post_from(port, path, batch[name], "127.0.0.1", timeout=120)
        senders = [threading.Thread(target=send, args=(n,)) for n in batch]
        for t in senders:
            t.start()
        # each of the 4 committers (the default) holds a first batch (of one
        # or more); 8 more queued behind them go into at most 4 transactions
        # after the lock, so fewer transactions than notifications
        queued = 8
        st.wait_until(lambda: st.metric("ingest", "kasir_ingest_queue_depth")
                      >= queued, timeout=50, what="the batch queued behind the lock")
        held.rollback()
        held.close()
        for t in senders:
            t.join(120)
        ok += len(batch)
        for name, raw in batch.items():
            s, _, b = answers[name]
            check(s == 200, f"{name}: 200 ({s} {b[:80]!r})")
            eid = json.loads(b)["event_id"]
            row = st.sql("SELECT order_id, gross_amount, raw FROM ingest.payment_event "
                         "WHERE id = %s", (eid,))
            check(len(row) == 1 and row[0][0] == name and bytes(row[0][2]) == raw and
                  row[0][1] == json.loads(raw)["gross_amount"],
                  f"{name}: its answer's event id {eid} is its own row")
        txs = st.sql("SELECT count(DISTINCT xmin::text) FROM ingest.payment_event "
                     "WHERE order_id LIKE 'batch-%'")[0][0]
        check(txs <= len(batch) - queued + 4,
              f"{len(batch)} notifications stored by {txs} transactions (multi-row batches)")
        n_batch = count(st, "ingest.payment_event", "order_id LIKE 'batch-%'")
        st.wait_until(lambda: len(st.sql(
            "SELECT 1 FROM ingest.stream_messages WHERE stream = 'ingest' "
            "AND body::jsonb #>> '{data,order_id}' LIKE 'batch-%'")) >= n_batch,
            timeout=10, what="the batch sequenced")
        wrong = st.sql("SELECT o.seq FROM ingest.stream_messages o JOIN ingest.payment_event e"
                       " ON (o.body::jsonb #>> '{data,event_id}')::bigint = e.id"
                       " WHERE o.stream = 'ingest' AND e.order_id LIKE 'batch-%'"
                       " AND (o.body::jsonb #>> '{data,order_id}' IS DISTINCT FROM e.order_id"
                       "  OR o.body::jsonb #>> '{data,gross_amount}'"
                       "     IS DISTINCT FROM e.gross_amount)")
        check(wrong == [], f"each stream message's event_id is its own row (wrong: {wrong})")

        stored = count(st, "ingest.payment_event")
        st.wait_until(lambda: len(stream_rows()) >= stored, timeout=10,
                      what="every stored event sequenced")
        streamed = len(stream_rows())
        check(stored == streamed, "stream and payment_event agree")

        # -- forged signatures --------------------------------------------------------
        forged = json.loads(smp[0][1])
        forged["gross_amount"] = "1.00"  # signature of the original amount
        fbody = json.dumps(forged).encode()
        r = st.notify(fbody, JSON)
        check(r.status == 403 and r.body["error"]["code"] == "invalid_signature",
              f"changed amount with the original signature -> 403 ({r})")
        other = notification("wrong-key-1", key="not-the-test-server-key")
        r = st.notify(other, JSON)
        check(r.status == 403, "signed with another server key -> 403")
        # gross_amount "100000" signed, body "100000.00"
        b = json.loads(notification("amount-1", amount="100000.00"))
        b["signature_key"] = signature("amount-1", "200", "100000")
        r = st.notify(json.dumps(b).encode(), JSON)
        check(r.status == 403, "signature of \"100000\" for a body of \"100000.00\" -> 403")
        check(count(st, "ingest.payment_event") == stored, "nothing stored for forged bodies")
        q = st.wait_until(lambda: st.sql(
            "SELECT raw, reason, order_id, host(source_addr) FROM ingest.quarantine "
            "ORDER BY id") if count(st, "ingest.quarantine") >= 3 else None,
            timeout=10, what="3 quarantine rows")
        check(bytes(q[0][0]) == fbody and q[0][1] == "invalid_signature" and
              q[0][2] == forged["order_id"] and q[0][3] == "127.0.0.1",
              "quarantine keeps body, reason, order_id and source")

        # -- 400 with a stable reason code ----------------------------------------
        sig = signature("1111", "200", "100000.00")
        base = ('"status_code":"200","gross_amount":"100000.00",'
                '"transaction_status":"settlement","signature_key":"%s"' % sig)
        bad = [
            (b'{"order_id":"1111",', "malformed_json"),
            (b'{"order_id":"1111","x":1}garbage', "malformed_json"),
            (b'[1,2,3]', "not_an_object"),
            (('{"order_id":"1111",' + base.replace('"status_code":"200",', '') + '}').encode(),
             "missing_field"),
            (('{"order_id":"1111",' + base.replace('"100000.00"', '100000.00') + '}').encode(),
             "wrong_type"),
            (('{"order_id":1111,' + base + '}').encode(), "wrong_type"),
            (('{"order_id":"11#11",' + base + '}').encode(), "invalid_order_id"),
            (('{"order_id":"' + "x" * 51 + '",' + base + '}').encode(), "invalid_order_id"),
            (('{"order_id":"1111","note":"').encode() + b'\xff\xfe"}', "invalid_utf8"),
            (('{"order_id":"1111","order_id":"2222",' + base + '}').encode(), "duplicate_key"),
            (('{"order_id":"1111","d":' + "[" * 40 + "]" * 40 + ',' + base + '}').encode(),
             "too_deep"),
            # 30,000 levels (60 KB: under the body cap)
            (b'{"d":' + b"[" * 30000 + b"]" * 30000 + b"}", "too_deep"),
        ]
        for body, code in bad:
            r = st.notify(body, JSON)
            if r.status != 400 or r.body["error"]["code"] != code:
                raise AssertionError(f"{body[:60]!r}...: want 400 {code}, got {r}")
        check(True, f"{len(bad)} malformed bodies -> 400 with the right reason code")

        # -- 415 ---------------------------------------------------------------------
        good = notification("ct-1")
        for ct in (None, "text/plain", "application/x-www-form-urlencoded",
                   "application/jsonp"):
            h = {"Content-Type": ct} if ct else {}
            status, _, _ = raw_request(port, "POST", path,
                                       dict(h, **{"Content-Length": str(len(good))}), good)
            check(status == 415, f"Content-Type {ct!r} -> 415")

        # -- 413 ---------------------------------------------------------------------
        status, _, _ = raw_request(port, "POST", path,
                                   {"Content-Type": "application/json",
                                    "Content-Length": str(10 * 1024 * 1024)},
                                   b"{" + b" " * 65536, send_body=True)
        check(status == 413, "declared 10 MB body -> 413 before reading it")
        big = b'{"order_id":"1111","pad":"' + b"x" * (64 * 1024) + b'"}'
        status, _, _ = raw_request(port, "POST", path,
                                   {"Content-Type": "application/json",
                                    "Content-Length": str(len(big))}, big)
        check(status == 413, "body of 64 KiB + a little -> 413")

        # -- 404 / 405 / never a redirect ------------------------------------------
        for p in (path + "/", "/", "/midtrans/notification/x", "/MIDTRANS/NOTIFICATION",
                  "//midtrans/notification"):
            status, hdrs, _ = raw_request(port, "POST", p,
                                          {"Content-Type": "application/json",
                                           "Content-Length": str(len(good))}, good)
            check(status == 404 and "location" not in hdrs, f"POST {p} -> 404, no Location")
        status, hdrs, _ = raw_request(port, "GET", path, {})
        check(status == 405 and "POST" in hdrs.get("allow", ""), "GET on the path -> 405 Allow: POST")
        check(hdrs.get("x-content-type-options") == "nosniff", "security headers present")

        check(count(st, "ingest.payment_event") == stored,
              "nothing stored for any 4xx")

        # -- append-only, for the runtime role and for the owner ----------------
        for role in ("kasir_ingest", "kasir_ingest_owner"):
            for table in ("ingest.payment_event", "ingest.quarantine"):
                for stmt in (f"UPDATE {table} SET received_at = now()",
                             f"DELETE FROM {table}",
                             f"TRUNCATE {table}"):
                    try:
                        st.sql(stmt, role=role)
                    except psycopg2.Error as e:
                        check(True, f"{role}: {stmt} refused ({e.pgcode})")
                        continue
                    raise AssertionError(f"{role}: {stmt} was allowed")
        check(count(st, "ingest.payment_event") == stored, "rows intact after the attempts")
        grants = st.sql("SELECT privilege_type FROM information_schema.role_table_grants "
                        "WHERE grantee = 'kasir_ingest' AND table_schema = 'ingest' "
                        "AND table_name = 'payment_event' ORDER BY 1")
        check(sorted(g[0] for g in grants) == ["INSERT", "SELECT"],
              f"kasir_ingest has only SELECT, INSERT on payment_event ({grants})")

        # -- metrics -------------------------------------------------------------------
        m = lambda o: st.metric("ingest", "kasir_ingest_requests_total", outcome=o)  # noqa: E731
        check(m("2xx") == ok, f"requests_total 2xx = {ok} ({m('2xx')})")
        check(m("403") == 3, "requests_total 403 = 3")
        check(m("400") == len(bad), f"requests_total 400 = {len(bad)}")
        check(m("415") == 4, "requests_total 415 = 4")
        check(st.metric("ingest", "kasir_ingest_signature_failures_total") == 3,
              "signature failures counted")
        check(st.metric("ingest", "kasir_ingest_last_notification_timestamp_seconds") > 1.7e9,
              "last notification timestamp set")
        check(st.metric("ingest", "kasir_ingest_batch_size_count") >= 1, "batch size observed")
        check(st.metric("ingest", "kasir_ingest_commit_seconds_count") >= 1, "commit latency observed")

        # -- admin socket ---------------------------------------------------------------
        s = admin(st, "status")
        check(s["ok"] and s["result"]["stored"] == stored and
              s["result"]["queue_depth"] == 0 and s["result"]["last_notification_at"],
              f"admin status ({s})")
        ev = admin(st, "events.list", {"order_id": forged["order_id"]})
        want = count(st, "ingest.payment_event", "order_id = %s", (forged["order_id"],))
        check(ev["ok"] and len(ev["result"]["events"]) == want and
              all(e["signature"] == "valid" and e["source"] == "127.0.0.1"
                  for e in ev["result"]["events"]),
              f"events.list lists the {want} stored events")
        check(len(ev["result"]["quarantined"]) == 1 and
              ev["result"]["quarantined"][0]["reason"] == "invalid_signature",
              "events.list includes the quarantined forgery")
        ql = admin(st, "quarantine.list", {"limit": 2, "with_body": True})
        check(ql["ok"] and len(ql["result"]["quarantined"]) == 2 and
              json.loads(ql["result"]["quarantined"][1]["body"])["order_id"] == "wrong-key-1",
              "quarantine.list: newest first, bounded by limit")
        bad_args = admin(st, "events.list", {"order_id": "x y"})
        check(not bad_args["ok"], "events.list refuses a bad order_id")

        # -- --check-config on the rendered template and on broken copies --------
        cfg = st.config_path("ingest")
        r = subprocess.run([st.binary("ingest"), "--check-config", cfg],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 0 and "configuration OK" in r.stdout,
              f"--check-config accepts the rendered template ({r.stderr.strip()})")
        text = open(cfg).read()
        broken = {
            "unknown key": text.replace("  body_max: 64KiB", "  body_max: 64KiB\n  bodymax: 1"),
            "bad proxy": text.replace("    - ::1", "    - not-an-address"),
            "bad path": text.replace("  path: /midtrans/notification", "  path: notification"),
            "batch too big": text.replace("batch_max: 64", "batch_max: 100000"),
            # a body that fits but whose message would not fit a frame:
            # kasir-order would refuse it and the stream stop there
            "body over a frame": text.replace("  body_max: 64KiB", "  body_max: 1MiB"),
        }
        for what, t in broken.items():
            check(t != text, f"broken config '{what}' differs from the template")
            bad_cfg = os.path.join(st.dir, "etc", "broken.yaml")
            with open(bad_cfg, "w") as f:
                f.write(t)
            r = subprocess.run([st.binary("ingest"), "--check-config", bad_cfg],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode != 0 and re.search(r"broken\.yaml:\d+: ", r.stderr),
                  f"--check-config refuses '{what}' with FILE:LINE ({r.stderr.strip()[:120]})")
            if what == "body over a frame":
                check("messages.max_frame" in r.stderr,
                      f"... and names messages.max_frame ({r.stderr.strip()[:160]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
