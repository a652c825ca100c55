#!/usr/bin/python3
"""kasir-loadgen (bench/loadgen) against a slow HTTP/1.1 server.

The server answers one request at a time, each after DELAY seconds, 200
unless the body says "fail" (then 503).  What must hold whatever the
machine's speed (a slower machine only makes the latencies longer):

1. Open loop, one connection, RATE/s for 1 s: the schedule does not wait
   for answers, so request i (due at i/RATE) is answered no earlier than
   (i + 1) * DELAY: the slowest latency is at least
   N * DELAY - (N - 1) / RATE, measured from the intended send time.  A
   generator that measured from the actual send (coordinated omission)
   reports about DELAY for every request.
2. Every scheduled request is sent and answered once, in body order from
   --offset, each with its own X-Forwarded-For address of --sources.
   Its "windows" place each answer by its latency origin: 10 windows of
   100 ms with 5 requests each, every one slow (over 20 ms), and the
   worst windows are the last five, since each answer waits for all the
   earlier ones.
3. Closed loop: one connection never has two requests in flight, and
   503 answers are counted as 5xx / non_2xx.
"""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("KASIR_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
LOADGEN = os.path.join(BUILD, "bin", "kasir-loadgen")
DELAY = 0.1
RATE = 50

seen = []  # (body, x-forwarded-for) in arrival order
inflight = [0, 0]  # now, max


class Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        inflight[0] += 1
        inflight[1] = max(inflight)
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        seen.append((body, self.headers.get("X-Forwarded-For")))
        time.sleep(DELAY)
        status = 503 if "fail" in body else 200
        out = b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        inflight[0] -= 1

    def log_message(self, *a):
        pass


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def loadgen(url, bodies, *extra):
    r = subprocess.run([LOADGEN, "--url", url, "--bodies", bodies] + list(extra),
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"kasir-loadgen exits 0 ({r.stderr.strip()})")
    return json.loads(r.stdout)


def main():
    if not os.access(LOADGEN, os.X_OK):
        print(f"FAIL: {LOADGEN} not built")
        sys.exit(1)
    # one thread: the server handles one request at a time
    srv = http.server.HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/n"
    with tempfile.TemporaryDirectory() as d:
        bodies = os.path.join(d, "bodies")
        with open(bodies, "w") as f:
            for i in range(100):
                f.write(json.dumps({"i": i}) + "\n")

        # 1 + 2: open loop
        n = RATE  # 1 s
        res = loadgen(url, bodies, "--connections", "1", "--rate", str(RATE),
                      "--duration", "1", "--offset", "7", "--sources", "1000")
        floor_ms = (n * DELAY - (n - 1) / RATE) * 1000
        print(json.dumps(res))
        check(res["scheduled"] == n and res["sent"] == n and res["answered"] == n,
              f"open loop: {n} scheduled, sent and answered")
        check(res["status"]["2xx"] == n and res["non_2xx"] == 0
              and res["unsent"] == 0, "open loop: all 2xx, nothing unsent")
        check(res["latency_from"] == "intended", "open loop: latency from "
              "the intended send time")
        check(res["latency_ms"]["max"] >= floor_ms - 1,
              f"open loop: max latency {res['latency_ms']['max']:.0f} ms >= "
              f"{floor_ms:.0f} ms (queued behind slow answers)")
        half_ms = ((n // 2) * DELAY - (n // 2 - 1) / RATE) * 1000
        check(res["latency_ms"]["p50"] >= half_ms - 1,
              f"open loop: p50 {res['latency_ms']['p50']:.0f} ms >= {half_ms:.0f} ms")
        got = [json.loads(b)["i"] for b, _ in seen]
        check(got == [(7 + i) % 100 for i in range(n)],
              "open loop: bodies in order from --offset, each once")
        win = res["windows"]
        check(win["ms"] == 100 and win["with_answers"] == 10
              and win["with_slow"] == 10 and win["slow"] == n,
              f"open loop: {n} slow answers in 10 windows of 100 ms ({win})")
        worst = win["worst"]
        check([w[0] for w in worst] == [0.9, 0.8, 0.7, 0.6, 0.5]
              and all(w[1] == 5 and w[2] == 5 for w in worst)
              and abs(worst[0][3] - res["latency_ms"]["max"]) < 0.01,
              f"open loop: the worst windows are the last five, the worst "
              f"holding the largest latency ({worst})")
        xff = [x for _, x in seen]
        check(len(set(xff)) == n and all(x.startswith("10.") for x in xff),
              "open loop: one X-Forwarded-For address of 10/8 per request")

        # 3: closed loop, 503s counted
        seen.clear()
        with open(bodies, "w") as f:  # every other body is answered 503
            for i in range(4):
                f.write(json.dumps({"i": i, "fail" if i % 2 else "ok": 1}) + "\n")
        res = loadgen(url, bodies, "--connections", "1", "--duration", "2")
        print(json.dumps(res))
        check(inflight[1] == 1, "closed loop: one request in flight per connection")
        # ~20 in 2 s; 2 (one of each kind) even on a machine 10x slower
        check(res["answered"] == len(seen) and res["answered"] >= 2,
              f"closed loop: every request answered ({res['answered']})")
        fails = sum(1 for b, _ in seen if '"fail"' in b)
        check(res["status"]["5xx"] == fails and res["non_2xx"] == fails
              and res["status"]["2xx"] == len(seen) - fails,
              f"closed loop: {fails} 503 answers counted as 5xx")
        check(res["latency_from"] == "sent" and
              res["latency_ms"]["p50"] >= DELAY * 1000 - 1,
              "closed loop: latency from the send, at least the server's delay")
    srv.shutdown()
    print("PASS")


if __name__ == "__main__":
    main()
