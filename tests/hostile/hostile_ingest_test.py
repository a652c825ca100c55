"""Hostile input against a real kasir-ingest (issue 8, item 2).

Every hostile request gets a clear 4xx with a stable error code (or 429),
nothing it carried is stored in ingest.payment_event or on the ingest
stream, and the daemon stays up (same pid, /healthz 200):

- malformed and truncated JSON, non-objects, empty body, NUL escapes
- 10 MB bodies (declared, and chunked with no length), huge headers
- deeply nested arrays (at top level and inside a valid notification)
- wrong content types, invalid UTF-8 (raw bytes, overlong, surrogates)
- duplicate keys, numbers where strings belong, each missing field
- forged signatures, a valid signature replayed onto another order or
  amount, injection strings as order ids
- a replayed valid notification is stored again (it is evidence, 200) and
  an unknown order id is kept (200): neither is "wrong"
- a slowloris attack (300 connections from 6 loopback addresses sending
  headers a byte at a time for 20 s) and a 2,000-connection flood of junk
  and forged requests, while valid notifications keep arriving: every one
  of them is accepted; latency is measured and printed (asserted only
  against a generous sanity bound)
"""

import json
import select
import socket
import sys
import threading
import time

import kasirtest
from hostile_util import (DOCS_KEY, JSON, Alive, Burst, Flood, Slowloris, check, error_code,
                          notif, notif_dict, percentile, raise_fd_limit, raw_http, request_bytes)

PATH = "/midtrans/notification"
SLOW_CONNS, SLOW_SECONDS = 300, 20
FLOOD_CONNS, FLOOD_WORKERS, FLOOD_SECONDS = 2000, 40, 60
BASELINE_PROBES = 40    # latency baseline: this many, however long they take
BURST_CONNS = 2000  # opened at once
SANITY_LATENCY_S = 5.0  # a valid notification answered later than this fails


def post(port, body, headers=None, source=None):
    h = dict(JSON)
    h.update(headers or {})
    if "Content-Length" not in h and "Transfer-Encoding" not in h:
        h["Content-Length"] = str(len(body))
    return raw_http(port, request_bytes("POST", PATH, h, body), source)


def chunked_upload(port, total):
    """POSTs a chunked body of up to total bytes; returns the status the
    server answered while we were sending (None: closed without one)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(request_bytes("POST", PATH, {"Content-Type": "application/json",
                                               "Transfer-Encoding": "chunked"}))
        piece = b"A" * 16384
        first = b'{"order_id":"'
        s.sendall(b"%x\r\n" % len(first) + first + b"\r\n")
        sent = 0
        while sent < total:
            r, _, _ = select.select([s], [], [], 0)
            if r:
                break
            try:
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        else:
            try:
                s.sendall(b'1\r\n"\r\n0\r\n\r\n')  # the end of the body
            except (BrokenPipeError, ConnectionResetError):
                pass
        buf = b""
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                buf += c
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    if not buf.startswith(b"HTTP/"):
        return None
    return int(buf.split(b" ", 2)[1])


def stored(st):
    return (st.sql("SELECT count(*) FROM ingest.payment_event")[0][0],
            st.sql("SELECT " + kasirtest.stream_head_sql("ingest", "ingest"))[0][0])


def hostile_cases():
    """[(name, body bytes, extra headers, allowed statuses, error code or None)]"""
    good = notif_dict("hostile-base")
    gb = json.dumps(good).encode()
    cases = [
        ("malformed JSON", b'{"order_id": "x",', {}, {400}, "malformed_json"),
        ("bare garbage", b"\x00\x01\x02 not json", {}, {400}, None),
        ("empty body", b"", {}, {400}, None),
        ("array", b"[]", {}, {400}, "not_an_object"),
        ("string", b'"order_id"', {}, {400}, "not_an_object"),
        ("null", b"null", {}, {400}, "not_an_object"),
        ("trailing garbage", gb + b"}", {}, {400}, "malformed_json"),
        ("two objects", gb + gb, {}, {400}, "malformed_json"),
        ("unclosed arrays 60k deep", b"[" * 60000, {}, {400}, "too_deep"),
        ("nested arrays 33 deep in a valid notification",
         json.dumps(dict(good, extra=json.loads("[" * 33 + "]" * 33))).encode(), {}, {400},
         "too_deep"),
        ("nested objects 5000 deep in a valid notification",
         gb[:-1] + b', "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", {}, {400}, "too_deep"),
        ("invalid UTF-8 byte", gb.replace(b"midtrans payment", b"midtrans \xff\xfe payment"),
         {}, {400}, "invalid_utf8"),
        ("overlong UTF-8", gb.replace(b"midtrans payment", b"midtrans \xc0\xaf payment"),
         {}, {400}, "invalid_utf8"),
        ("UTF-8 encoded surrogate", gb.replace(b"midtrans payment", b"\xed\xa0\x80"),
         {}, {400}, "invalid_utf8"),
        ("lone surrogate escape", gb.replace(b"midtrans payment", b"\\ud800"), {}, {400}, None),
        ("NUL escape in order_id",
         json.dumps(dict(good, order_id="hostile\u0000base")).encode(), {}, {400}, None),
        ("duplicate order_id key", gb[:-1] + b', "order_id": "someone-else"}', {}, {400},
         "duplicate_key"),
        ("duplicate key via escape", gb[:-1] + b', "order\\u005fid": "someone-else"}', {}, {400},
         "duplicate_key"),
        ("gross_amount as a number",
         json.dumps(dict(good, gross_amount=100000.00)).encode(), {}, {400}, "wrong_type"),
        ("status_code as a number", json.dumps(dict(good, status_code=200)).encode(), {},
         {400}, "wrong_type"),
        ("order_id as an object", json.dumps(dict(good, order_id={"a": 1})).encode(), {},
         {400}, "wrong_type"),
        ("signature_key as an array",
         json.dumps(dict(good, signature_key=[good["signature_key"]])).encode(), {}, {400},
         "wrong_type"),
        ("order_id SQL injection",
         json.dumps(notif_dict("x' OR '1'='1")).encode(), {}, {400}, "invalid_order_id"),
        ("order_id path traversal",
         json.dumps(notif_dict("../../etc/passwd")).encode(), {}, {400}, "invalid_order_id"),
        ("order_id 51 chars", json.dumps(notif_dict("A" * 51)).encode(), {}, {400},
         "invalid_order_id"),
        ("order_id empty", json.dumps(notif_dict("")).encode(), {}, {400}, None),
        ("status_code 10 KB", json.dumps(dict(good, status_code="2" * 10000)).encode(), {},
         {400}, None),
        ("forged signature (random hex)",
         json.dumps(dict(good, signature_key="ab" * 64)).encode(), {}, {403},
         "invalid_signature"),
        ("signature in upper case",
         json.dumps(dict(good, signature_key=good["signature_key"].upper())).encode(), {},
         {400, 403}, None),
        ("signature truncated",
         json.dumps(dict(good, signature_key=good["signature_key"][:127])).encode(), {},
         {400, 403}, None),
        ("signature of another server key",
         json.dumps(notif_dict("hostile-base", key="SB-Mid-server-forged")).encode(), {},
         {403}, "invalid_signature"),
        ("valid signature replayed onto another order",
         json.dumps(dict(good, order_id="hostile-other")).encode(), {}, {403},
         "invalid_signature"),
        ("valid signature replayed with a lower amount",
         json.dumps(dict(good, gross_amount="1.00")).encode(), {}, {403}, "invalid_signature"),
        ("valid signature replayed with another status",
         json.dumps(dict(good, status_code="201")).encode(), {}, {403}, "invalid_signature"),
        ("empty signature", json.dumps(dict(good, signature_key="")).encode(), {}, {400, 403},
         None),
    ]
    for cut in (1, 17, len(gb) // 2, len(gb) - 2, len(gb) - 1):
        cases.append((f"valid notification truncated to {cut} bytes", gb[:cut], {}, {400},
                      "malformed_json"))
    for field in ("order_id", "status_code", "gross_amount", "signature_key"):
        d = dict(good)
        del d[field]
        cases.append((f"missing {field}", json.dumps(d).encode(), {}, {400}, "missing_field"))
    for ct in ("text/plain", "application/x-www-form-urlencoded", "application/jsonp",
               "multipart/form-data; boundary=x", ""):
        cases.append((f"Content-Type {ct!r}", gb, {"Content-Type": ct}, {415}, None))
    return cases


def run_cases(st, port, alive):
    before = stored(st)
    for name, body, hdrs, allowed, code in hostile_cases():
        status, head, rbody = post(port, body, hdrs)
        check(status in allowed, f"{name} -> {sorted(allowed)} (got {status}: {rbody[:120]!r})")
        if code is not None:
            check(error_code(rbody) == code, f"{name}: error code {code}")
        elif status >= 400 and status != 413:
            check(error_code(rbody) is not None, f"{name}: JSON error with a code")
    # no Content-Type at all
    status, _, _ = raw_http(port, request_bytes("POST", PATH, {"Content-Length": "2"}, b"{}"))
    check(status == 415, f"no Content-Type -> 415 ({status})")

    # 10 MB: declared, then sent for real
    big = b'{"order_id":"' + b"A" * (10 * 1024 * 1024) + b'"}'
    status, _, _ = post(port, big)
    check(status == 413, f"10 MB body with Content-Length -> 413 ({status})")
    # chunked, no length: the cap must hold on what arrives.  Sent piece by
    # piece, reading as soon as the server answers (its answer would be
    # lost in a reset if we kept writing into a closed connection).
    # common/http.c drains at most 1 MiB past the cap for the 413, then
    # hangs up: 200 KB gets its 413, 10 MB is cut off.
    status = chunked_upload(port, 200 * 1024)
    check(status == 413, f"200 KB chunked body -> 413 ({status})")
    status = chunked_upload(port, 10 * 1024 * 1024)
    check(status in (None, 413), f"10 MB chunked body -> 413 or cut off ({status})")
    # a 200 KB header
    status, _, _ = raw_http(port, request_bytes(
        "POST", PATH, {"Content-Type": "application/json", "X-Big": "h" * 200000,
                       "Content-Length": "2"}, b"{}"))
    check(status is None or 400 <= status < 500,
          f"200 KB header -> 4xx or closed ({status})")
    # a request line that is not HTTP
    status, _, _ = raw_http(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
    check(status is None or 400 <= status < 500, f"TLS hello on plain HTTP -> 4xx or closed "
                                                  f"({status})")
    after = stored(st)
    check(after == before, f"nothing stored by the hostile requests ({before} -> {after})")
    rows = st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id <> ALL(%s)",
                  (["hostile-replay", "hostile-unknown-order"],))[0][0]
    check(rows == 0, "no payment_event row for any hostile order id")
    alive.check("after the hostile requests")


def run_replay_and_unknown(st, port):
    before = stored(st)
    body = notif("hostile-replay")
    ids = []
    for i in range(3):
        status, _, rbody = post(port, body)
        check(status == 200, f"valid notification delivery {i + 1} -> 200 ({status})")
        ids.append(json.loads(rbody)["event_id"])
    check(len(set(ids)) == 3, "a replayed notification is stored again (evidence)")
    huge = notif("hostile-replay")[:-1] + b', "n": 1' + b"0" * 5000 + b"}"
    status, _, _ = post(port, huge)
    check(status == 200, f"a valid notification with a 5000-digit extra number -> 200 "
                         f"(unknown fields kept) ({status})")
    status, _, _ = post(port, notif("hostile-unknown-order"))
    check(status == 200, "an unknown order id is kept (200), never refused or lost")
    after = stored(st)
    check(after[0] == before[0] + 5 and after[1] == before[1] + 5,
          f"exactly the 5 valid deliveries stored and streamed ({before} -> {after})")


class Prober:
    """Valid notifications from 127.0.0.1 every `interval` s; records
    (status, latency)."""

    def __init__(self, port, prefix, interval=0.05):
        self.port, self.prefix, self.interval = port, prefix, interval
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self.stop.is_set():
            body = notif(f"{self.prefix}-{i}")
            t0 = time.monotonic()
            try:
                status, _, _ = post(self.port, body)
            except OSError as e:
                status = f"error {e}"
            self.results.append((status, time.monotonic() - t0, t0))
            i += 1
            self.stop.wait(self.interval)

    def run_count(self, n, bound=60):
        """Until n notifications were answered (bound: a FAIL, not a skip)."""
        self.thread.start()
        kasirtest.wait_until(lambda: len(self.results) >= n, bound,
                             f"{n} valid notifications answered")
        self.finish()

    def finish(self):
        self.stop.set()
        self.thread.join(30)

    def report(self, label):
        lat = [l for s, l, _ in self.results]
        bad = [(s, l) for s, l, _ in self.results if s != 200]
        print(f"# {label}: {len(self.results)} valid notifications, "
              f"p50 {percentile(lat, 50) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms, not 200: {len(bad)}", flush=True)
        return lat, bad


def run_attacks(st, port, alive):
    before = stored(st)
    base = Prober(port, "hostile-base-lat")
    base.run_count(BASELINE_PROBES)
    blat, bbad = base.report("baseline")
    check(not bbad and len(blat) >= BASELINE_PROBES,
          "baseline: every valid notification accepted")

    slow = Slowloris(port, [f"127.0.2.{i}" for i in range(1, 7)], SLOW_CONNS, SLOW_SECONDS)
    forged = json.dumps(notif_dict("hostile-flood", key="SB-Mid-server-forged")).encode()
    junk = [b'{"order_id": "x",', b"[" * 1000, forged, b"", b'{"a":1}',
            b"\xff\xfe" * 100]
    # every 20th connection of the flood and of the burst carries a valid
    # notification: they are sent while the attack is at its peak
    flood = Flood(port, [f"127.0.3.{i}" for i in range(1, 51)], FLOOD_CONNS, FLOOD_WORKERS,
                  FLOOD_SECONDS, junk, valid=lambda i: notif(f"hostile-in-flood-{i}"),
                  valid_every=20)
    probe = Prober(port, "hostile-attack-lat")
    burst = Burst(port, [f"127.0.5.{i}" for i in range(1, 51)], BURST_CONNS, 30, junk,
                  valid=lambda i: notif(f"hostile-in-burst-{i}"), valid_every=20)
    slow.start()
    time.sleep(2)  # let the slow connections settle in
    probe.thread.start()
    flood.start()
    flood.join()
    time.sleep(1)
    burst.start()
    burst.join()
    slow.join()
    probe.finish()
    print(f"# slowloris: {slow.opened} connections opened ({slow.refused} refused), "
          f"{slow.bytes_sent} bytes sent one at a time, {slow.closed_by_server} closed by "
          f"the server", flush=True)
    print(f"# flood: {flood.done} junk + {len(flood.valid_results)} valid connections "
          f"({FLOOD_WORKERS} at a time) in "
          f"{flood.elapsed:.1f} s, statuses {dict(sorted(flood.statuses.items()))}, "
          f"no answer {flood.errors}", flush=True)
    print(f"# burst: {BURST_CONNS} connections at once in {burst.t1 - burst.t0:.1f} s, "
          f"statuses {dict(sorted(burst.statuses.items()))}, no answer {burst.no_answer}, "
          f"connect failed {burst.connect_failed}", flush=True)
    for name, res, what in (("flood", flood.valid_results, "latency"),
                            ("burst", burst.valid_results,
                             "answered after the burst began (connects included)")):
        vl = [l for _, l in res]
        print(f"# valid notifications inside the {name}: {len(res)}, {what} "
              f"p50 {percentile(vl, 50) * 1000:.1f} ms, p99 {percentile(vl, 99) * 1000:.1f} ms",
              flush=True)
    lat, bad = probe.report("under slowloris + flood")
    check(slow.opened >= SLOW_CONNS // 2, f"slowloris held {slow.opened} connections")
    junk_n = FLOOD_CONNS - FLOOD_CONNS // 20
    check(flood.done == junk_n, f"flood made {flood.done} of {junk_n} junk connections")
    answered = sum(flood.statuses.values())
    check(all(400 <= s < 500 or s == 503 for s in flood.statuses),
          f"flood: only 4xx/503 answers ({flood.statuses})")
    check(answered >= junk_n * 0.9,
          f"flood: the server answered {answered} of {junk_n} junk requests")
    check(len(lat) >= 20, f"{len(lat)} valid notifications sent during the attack")
    for name, res, n in (("flood", flood.valid_results, FLOOD_CONNS // 20),
                         ("burst", burst.valid_results, BURST_CONNS // 20)):
        check(len(res) == n and all(st == 200 for st, _ in res),
              f"all {n} valid notifications inside the {name} accepted "
              f"({[st for st, _ in res if st != 200][:5]})")
    check(max(l for _, l in flood.valid_results) < SANITY_LATENCY_S,
          f"no valid notification inside the flood waited more than {SANITY_LATENCY_S} s")
    banswered = sum(burst.statuses.values())
    check(all(400 <= s < 500 or s == 503 for s in burst.statuses),
          f"burst: only 4xx/503 answers ({burst.statuses})")
    check(banswered + burst.no_answer + burst.connect_failed + len(burst.valid_results) ==
          BURST_CONNS,
          "burst: every connection accounted for")
    check(not bad, f"every valid notification accepted during the attack ({bad[:5]})")
    check(max(lat) < SANITY_LATENCY_S,
          f"no valid notification waited more than {SANITY_LATENCY_S} s "
          f"(max {max(lat) * 1000:.0f} ms)")
    after = stored(st)
    want = len(blat) + len(lat) + len(flood.valid_results) + len(burst.valid_results)
    check(after[0] - before[0] == want and after[1] - before[1] == want,
          f"exactly the {want} valid notifications stored and streamed, nothing from the "
          f"attack ({before} -> {after})")
    n = st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = 'hostile-flood'")[0][0]
    check(n == 0, "no forged flood notification stored")
    alive.check("after slowloris + flood")
    # and it still serves
    status, _, _ = post(port, notif("hostile-after"))
    check(status == 200, "a valid notification after the attack -> 200")


def run_per_ip_cap(st, port, alive):
    """One address opening more slow connections than
    ingest.per_ip_connections: the excess is closed at once."""
    cap = int(st.config_value("ingest", "ingest.per_ip_connections"))
    want = cap + 50
    slow = Slowloris(port, ["127.0.4.1"], want, 6)
    slow.start()
    time.sleep(3)
    status, _, _ = post(port, notif("hostile-per-ip"))
    slow.join()
    cut = slow.closed_by_server + slow.refused
    print(f"# one address, {want} slow connections: {slow.opened} opened, "
          f"{cut} closed or refused by the server (cap {cap})", flush=True)
    check(cut >= want - cap, f"per-address cap: at least {want - cap} of {want} slow "
                             f"connections from one address cut ({cut})")
    check(status == 200, "a valid notification from another address meanwhile -> 200")
    alive.check("after the per-address connection cap")


def main():
    # Rate limits high enough that the test's own valid notifications from
    # 127.0.0.1 are not throttled; the flood comes from other addresses.
    overrides = {"INGEST_RATE": "1000", "INGEST_BURST": "1000"}
    with kasirtest.Stack.for_test(server_key=DOCS_KEY, overrides=overrides) as st:
        if not st.available("ingest"):
            raise AssertionError("bin/kasir-ingest not built")
        raise_fd_limit(8192)
        st.start("ingest")
        port = st.port("INGEST_HTTP")
        alive = Alive(st, ["ingest"])
        run_cases(st, port, alive)
        run_replay_and_unknown(st, port)
        run_attacks(st, port, alive)
        run_per_ip_cap(st, port, alive)
    print("hostile_ingest: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
