"""kbench - the benchmarks of kasir (issue 8 item 4), on the real daemons.

Run with Debian's /usr/bin/python3 (psycopg2).  Each benchmark starts its
own throwaway stack (tests/lib/kasirtest.py: PostgreSQL 15 with fsync=on and
synchronous_commit=on, the daemons of --build-dir, the fakes) under
<build-dir>/bench-runs/, prints its figures and rewrites its own section of
docs/performance.md (between "<!-- bench:X begin -->" and
"<!-- bench:X end -->") with the machine description, the load average
measured next to every figure and the exact command that reproduces it.

    bench/kbench.py ingest     [--seconds 10] [--clients 32]      (a)
                               [--committers N] [--rounds 4]
                               [--no-peer] [--no-pair] [--profile]
    bench/kbench.py e2e        [--seconds 10] [--rates 100,500]   (b)
                               [--status-latency-ms 50]
    bench/kbench.py drain      [--events 10000]                   (c)
    bench/kbench.py reconciler [--orders 400] [--concurrency 8]   (d)
    bench/kbench.py rss        [--seconds 60] [--rate 200]        (e)
    bench/kbench.py confirm    [--seconds 20] [--rates 100,500]   (f)
                               [--status-latency-ms 50] [--clients 16]

Orders are inserted with SQL (PENDING, exactly what POST /v1/orders stores
before Snap answers) so that seeding does not measure the fake's Snap; the
notifications are real Midtrans bodies signed with the stack's server key
(SHA512(order_id + status_code + gross_amount + server_key)).
No timing assertion anywhere: these are measurements, not tests.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
import kasirtest  # noqa: E402

DOC = os.path.join(SRC, "docs", "performance.md")
PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
AMOUNT = 150000

# Overrides: the per-source rate limit (50/s, burst 100 by default) would
# otherwise answer 429 to a benchmark that comes from one address.
BASE_OVERRIDES = {
    "INGEST_RATE": "1000000",
    "INGEST_BURST": "1000000",
    "INGEST_PER_IP_CONNECTIONS": "1000",
    "INGEST_LOG_LEVEL": "warning",
    "LOG_LEVEL": "warning",
}


# --------------------------------------------------------------------------
# machine, load, percentiles, the document


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
                break
    try:
        pgv = subprocess.run([f"{kasirtest.PG_BIN}/postgres", "--version"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        pgv = "?"
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux "
            f"{platform.release()}, {pgv}; PostgreSQL settings of "
            "tests/lib/kasirtest.py (fsync=on, synchronous_commit=on, "
            f"shared_buffers=128MB); kernel writeback: {writeback()}")


def writeback():
    """When the kernel starts writing dirty pages back: it decides how
    long a WAL flush can wait behind them (docs/operations.md, "The
    PostgreSQL host")."""
    vals = {}
    for k in ("dirty_background_bytes", "dirty_background_ratio"):
        try:
            with open(f"/proc/sys/vm/{k}") as f:
                vals[k] = int(f.read().strip())
        except (OSError, ValueError):
            vals[k] = None
    if vals["dirty_background_bytes"]:
        return f"vm.dirty_background_bytes={vals['dirty_background_bytes']}"
    return f"vm.dirty_background_ratio={vals['dirty_background_ratio']}%"


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def update_doc(key, title, body_md):
    """Replaces the section of bench `key` in docs/performance.md."""
    begin, end = f"<!-- bench:{key} begin -->", f"<!-- bench:{key} end -->"
    try:
        with open(DOC) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    section = f"{begin}\n## {title}\n\n{body_md.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end),
                      lambda m: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = DOC + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, DOC)
    print(f"[kbench] updated {os.path.relpath(DOC, SRC)} section {key}")


def header(args):
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # the bench/X wrappers name themselves in KBENCH_CMD, and say in
    # KBENCH_FIXED how many arguments of their own they pass first (the
    # wrapper passes them again when run as printed)
    cmd = os.environ.get("KBENCH_CMD")
    skip = 2 + int(os.environ.get("KBENCH_FIXED", "0")) if cmd else 1
    argv = " ".join(shlex.quote(a) for a in sys.argv[skip:])
    cmd = cmd or "/usr/bin/python3 bench/kbench.py"
    return (f"- Run: {now}, build `{args.build_dir}`"
            f" (CMAKE_BUILD_TYPE={build_type(args.build_dir)})\n"
            f"- Machine: {machine()}\n"
            f"- Reproduce: `cd {SRC} && {cmd} {argv}`\n"
            f"- Load average (1/5/15 min) before the run: {args.load_before}\n"
            + quiet_note(args.load_before))


def quiet_note(load_before):
    """Whether the machine was quiet enough for the figures to be compared
    with the targets: the 1-minute load average before the run."""
    try:
        one = float(str(load_before).split()[0])
    except (ValueError, IndexError):
        one = float("inf")
    if one <= QUIET_LOAD:
        return (f"- Quiet machine (1-minute load <= {QUIET_LOAD} before the"
                " run, nothing else running): comparable with the targets.\n")
    return ("- **Loaded machine (1-minute load above "
            f"{QUIET_LOAD} before the run): other work shared the 2 cores;"
            " re-run on a quiet machine before comparing with the"
            " targets.**\n")


QUIET_LOAD = 2.5


def build_type(build):
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1].strip() or "(none: -O0)"
    except OSError:
        pass
    return "?"


# --------------------------------------------------------------------------
# the stack, orders, signed notifications


def make_stack(args, name, overrides=None, base=True):
    """base=False: only `overrides` (ingest's own limits at their defaults)."""
    ov = dict(BASE_OVERRIDES) if base else {}
    ov.update(overrides or {})
    d = os.path.join(args.build_dir, "bench-runs", f"{name}-{os.getpid()}")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.environ["KASIR_BUILD_DIR"] = args.build_dir
    os.environ.setdefault("KASIR_SOURCE_DIR", SRC)
    st = kasirtest.Stack(d, ov, build=args.build_dir, src=SRC,
                         remove_on_success=not args.keep, watchdog=True)
    return st


def settle(st):
    """Starts a measured phase from a clean state: PostgreSQL's dirty
    buffers written (CHECKPOINT) and the kernel's dirty pages flushed
    (sync).  Without it the writeback the set-up or the phase before left
    lands inside the next one: on 2026-12-07 one stall of 300-600 ms per
    10 s open-loop phase of (a), the WAL's fsync queued behind ~150 MB of
    data pages the kernel was writing (iowait 41%); that stall was the
    whole p99 (10.8 and 15.6 ms with this step, 300-570 without)."""
    st.sql("CHECKPOINT")
    os.sync()


def seed_orders(st, prefix, n, expires="1 day"):
    """n PENDING orders <prefix>-000001.. inserted with SQL; returns ids."""
    ids = [f"{prefix}-{i:06d}" for i in range(1, n + 1)]
    with st.pg.connect() as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO orders.orders (order_id, course_id, course_title,"
                " amount, customer_name, customer_email, customer_phone,"
                " expires_at, snap_token, redirect_url)"
                " SELECT %s || '-' || lpad(g::text, 6, '0'), 'bench-course',"
                " 'Kelas Benchmark', %s, 'Budi Bench',"
                " 'budi' || g || '@example.com', '+62812' || lpad(g::text, 7, '0'),"
                " now() + %s::interval, 'tok-' || g, 'https://example/' || g"
                " FROM generate_series(1, %s) g",
                (prefix, AMOUNT, expires, n))
    return ids


def notification(order_id, key, status="settlement"):
    code, gross = "200", f"{AMOUNT}.00"
    sig = hashlib.sha512((order_id + code + gross + key).encode()).hexdigest()
    return json.dumps({
        "transaction_time": "2026-11-23 10:00:00",
        "transaction_status": status,
        "transaction_id": str(uuid.uuid4()),
        "status_message": "midtrans payment notification",
        "status_code": code,
        "signature_key": sig,
        "settlement_time": "2026-11-23 10:00:05",
        "payment_type": "bank_transfer",
        "va_numbers": [{"va_number": "9888800000012345", "bank": "bca"}],
        "order_id": order_id,
        "merchant_id": "G141532850",
        "gross_amount": gross,
        "fraud_status": "accept",
        "currency": "IDR",
    }, separators=(",", ":"))


def write_lua(path, bodies, url_path, conns, rate=None, once=False):
    """wrk script: POSTs the bodies round-robin (each thread its own slice
    when once=True: a thread that ran out sends GET /_bench_done, a 404 that
    stores nothing).  rate: offered load over all connections, by a per-
    connection delay (wrk has no open-loop mode: see the notes)."""
    with open(path, "w") as f:
        f.write("local bodies = {\n")
        for b in bodies:
            f.write("[==[" + b + "]==],\n")
        f.write("}\n")
        f.write(f"local path = {json.dumps(url_path)}\n")
        f.write(f"local once = {'true' if once else 'false'}\n")
        delay = 0 if not rate else max(1, int(round(conns * 1000.0 / rate)))
        f.write(f"local delay_ms = {delay}\n")
        f.write("""
local n = #bodies
local counter = 0
-- tid is a global of each thread's own Lua state (set by setup() in the
-- main state): never shadow it with a local.
local next_tid = 0
local nthreads = 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  nthreads = tonumber(args[1] or "1")
  counter = 0
  -- wrk calls request() once more on thread 0, after init(), to verify the
  -- script, and throws that request away: start one earlier there so
  -- that no body is skipped.
  if tid == 0 then counter = -1 end
end
function request()
  local i
  if once then
    i = tid + math.max(counter, 0) * nthreads + 1
    counter = counter + 1
    if i > n then
      return wrk.format("GET", "/_bench_done")
    end
  else
    i = ((tid * 7919 + counter) % n) + 1
    counter = counter + 1
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/json"},
                    bodies[i])
end
if delay_ms > 0 then
  function delay() return delay_ms end
end
local errs = 0
function response(status, headers, body)
  if status ~= 200 and status ~= 404 then errs = errs + 1 end
end
function done(summary, latency, requests)
  io.write(string.format(
    "KBENCH requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d "
    .. "connect_err=%d read_err=%d write_err=%d status_err=%d timeout=%d\\n",
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
""")


def run_wrk(url, lua, seconds, conns, threads=2):
    argv = [WRK, "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", "15s", "-s", lua, url, "--", str(threads)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"KBENCH (.*)", r.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {r.stdout}\n{r.stderr}")
    res = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    res["rate"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def calibrate(url, lua, bodies, path, conns, rate, seconds=3):
    """wrk's delay() is think time after each answer: the achieved rate is
    conns / (delay + latency).  One 3 s probe measures the latency at this
    load and returns the rate to ask write_lua() for so that the achieved
    rate comes close to `rate`."""
    write_lua(lua, bodies, path, conns, rate=rate)
    probe = run_wrk(url, lua, seconds, conns)
    d0 = conns * 1000.0 / rate
    lat = conns * 1000.0 / max(probe["rate"], 1e-3) - d0
    d1 = conns * 1000.0 / rate - max(lat, 0.0)
    return conns * 1000.0 / d1 if d1 >= 1 else conns * 1000.0

def ms(us):
    return f"{us / 1000.0:.1f}"


# --------------------------------------------------------------------------
# (a) ingest vs the physical limit and a naive peer: bench/kbench_ingest.py


# --------------------------------------------------------------------------
# (b) end to end


E2E_SQL = """
SELECT o.order_id,
  extract(epoch FROM (SELECT min(e.received_at) FROM ingest.payment_event e
                      WHERE e.order_id = o.order_id)),
  extract(epoch FROM (SELECT min(t.at) FROM orders.transitions t
                      WHERE t.order_id = o.order_id AND t.to_status = 'PAID')),
  extract(epoch FROM (SELECT min(g.at) FROM orders.entitlement_events g
                      WHERE g.order_id = o.order_id AND g.action = 'grant')),
  extract(epoch FROM (SELECT min(j.created_at) FROM notify.job j
                      WHERE j.order_id = o.order_id AND j.kind = 'receipt'))
FROM orders.orders o WHERE o.order_id LIKE %s
"""


def e2e_rows(st, prefix):
    """(order_id, received, paid, granted, receipt job) epochs as floats
    (extract() is numeric: Decimal in psycopg2)."""
    return [(r[0],) + tuple(None if v is None else float(v) for v in r[1:])
            for r in st.sql(E2E_SQL, (prefix + "-%",))]


def pay_at_fake(st, ids, threads=8):
    """Makes Midtrans's truth say each order is paid (the fake's Status API
    then answers settlement) without sending the notification: wrk sends
    it.  In the default mode kasir-order holds the notification until the
    Status API confirms it, so an order never paid at the fake would be
    contradicted, not PAID."""
    fake = st.url("fake_midtrans")
    todo = list(ids)
    lock = threading.Lock()
    errors = []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                oid = todo.pop()
            r = kasirtest.http("POST", f"{fake}/_fake/orders/{oid}/pay",
                               {"amount": AMOUNT, "notify": "drop",
                                "payment_type": "bank_transfer"})
            if r.status != 200:
                errors.append((oid, r.status))
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit(f"paying at the fake failed: {errors[:5]}")


# The reconciler sized for confirmations at hundreds per second (the
# defaults are a small shop's: 4 in flight, 10 requests/s).
E2E_RECON = {
    "RECON_CONCURRENCY": "64",
    "RECON_RPS": "1000",
    "RECON_BATCH": "64",
    "RECON_POLL": "200ms",
    "RECON_FIRST_CHECK": "1h",
    "RECON_BACKOFF": "1h",
    "RECON_AUTO_SILENCE": "1h",
}


def bench_e2e(args):
    rates = [int(x) for x in args.rates.split(",")]
    st = make_stack(args, "e2e", E2E_RECON)
    results = []
    with st:
        st.start_all(services=["ingest", "order", "notifier", "reconciler"])
        r = kasirtest.http("POST", st.url("fake_midtrans") + "/_fake/status_api",
                           {"mode": "normal", "latency_ms": args.status_latency_ms})
        if r.status != 200:
            raise SystemExit(f"fake Status API latency: {r}")
        key = st.secret("midtrans-server-key")
        url = st.url("ingest")
        path = "/" + url.split("/", 3)[3]
        work = tempfile.mkdtemp(prefix="kbench-b-", dir=st.dir)
        for idx, rate in enumerate(rates):
            prefix = f"e2e{idx}"
            n = int(rate * args.seconds)
            ids = seed_orders(st, prefix, n)
            pay_at_fake(st, ids)
            bodies = [notification(f"{prefix}-{i:06d}", key) for i in range(1, n + 1)]
            lua = os.path.join(work, f"e{rate}.lua")
            # wrk's think time is added to each answer's latency: with
            # enough connections the think time dominates and the achieved
            # rate stays close to the offered one (each order is notified
            # once, so there is no calibration probe as in (a))
            conns = max(args.clients, rate // 10)
            write_lua(lua, bodies, path, conns, rate=rate, once=True)
            la = loadavg()
            # long enough for every connection to send its slice
            run_wrk(url, lua, args.seconds + 5, conns)

            def complete():
                # orders whose notification wrk did send (at a lower
                # achieved rate it sends fewer than n): all with a job.
                # Counts only: E2E_SQL, planned on statistics from before
                # the run, is slow and would load the cores while the last
                # payments are on their way (see confirm_point); it runs
                # once, after an ANALYZE.
                got, done = st.sql(
                    "SELECT (SELECT count(DISTINCT order_id) FROM ingest.payment_event"
                    "  WHERE order_id LIKE %s),"
                    " (SELECT count(DISTINCT order_id) FROM notify.job"
                    "  WHERE kind = 'receipt' AND order_id LIKE %s)",
                    (prefix + "-%", prefix + "-%"))[0]
                return got > 0 and done >= got

            try:
                kasirtest.wait_until(complete, timeout=args.drain_timeout,
                                     what="every order PAID with a receipt job",
                                     interval=0.2)
            except kasirtest.WaitTimeout:
                pass
            st.sql("ANALYZE ingest.payment_event, orders.transitions,"
                   " orders.entitlement_events, notify.job, orders.orders")
            rows = [r for r in e2e_rows(st, prefix) if r[1] is not None]
            done = [r for r in rows if r[4] is not None]
            paid = [r for r in rows if r[2] is not None]
            lat_paid = [(r[2] - r[1]) * 1000 for r in paid if r[1] is not None]
            lat_job = [(r[4] - r[1]) * 1000 for r in done]
            if done:
                span = max(r[4] for r in done) - min(r[1] for r in done)
                thr = len(done) / span if span > 0 else float("nan")
            else:
                thr = 0.0
            ing = st.sql("SELECT count(*), extract(epoch FROM max(received_at) -"
                         " min(received_at)) FROM ingest.payment_event"
                         " WHERE order_id LIKE %s", (prefix + "-%",))[0]
            sent = ing[0] / float(ing[1]) if ing[1] else float("nan")
            api = st.sql("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                         " percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),"
                         " count(*) FROM recon.status_check WHERE order_id LIKE %s",
                         (prefix + "-%",))[0]
            results.append({"api_p50": float(api[0] or 0), "api_p99": float(api[1] or 0),
                            "api_n": api[2]})
            results[-1].update({"rate": rate, "n": len(rows), "sent": sent,
                            "paid": len(paid), "done": len(done), "thr": thr,
                            "paid_p50": pct(lat_paid, 50), "paid_p99": pct(lat_paid, 99),
                            "p50": pct(lat_job, 50), "p99": pct(lat_job, 99),
                            "p999": pct(lat_job, 99.9), "max": max(lat_job or [0]),
                            "la": la})
    lines = ["| offered /s | orders notified | ingest accepted /s | PAID | receipt job | "
             "throughput /s | PAID p50/p99 ms | Status API p50/p99 ms (checks) | "
             "job p50 ms | job p99 ms | job p99.9 ms | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rate']} | {r['n']} | {r['sent']:.0f} | {r['paid']} | {r['done']} | "
                     f"{r['thr']:.0f} | {r['paid_p50']:.0f} / {r['paid_p99']:.0f} | "
                     f"{r['api_p50']:.0f} / {r['api_p99']:.0f} ({r['api_n']}) | "
                     f"{r['p50']:.0f} | {r['p99']:.0f} | {r['p999']:.0f} | {r['la']} |")
    table = "\n".join(lines)
    print(table)
    t500 = [r for r in results if r["rate"] == 500]
    if t500:
        r = t500[0]
        verdict = ("met" if r["p99"] <= 100 and r["done"] == r["n"] else
                   f"MISSED: p99 {r['p99']:.0f} ms = {r['p99'] / 100.0:.1f}x the limit, "
                   f"{r['thr']:.0f}/s of 500/s sustained")
    else:
        verdict = "not measured (no 500/s point)"
    if t500:
        r = t500[0]
        confirm_verdict = (
            f"PAID p99 {r['paid_p99']:.0f} ms, Status API p99 {r['api_p99']:.0f} ms: "
            + ("met" if r["paid"] == r["n"] and
               r["paid_p99"] <= r["api_p99"] + 50 else "MISSED"))
    else:
        confirm_verdict = "not measured (no 500/s point)"
    md = header(args) + f"""- Offered load by wrk (Lua think time, each order's settlement
  notification sent once) for {args.seconds} s per point; ingest, order,
  notifier and reconciler running (+ the fakes).  Every order is first paid
  at the fake (its truth says settlement, no notification sent): kasir-order
  holds each notification until the reconciler's Status API answer confirms
  it (docs/state-machine.md, "Confirmation"); the fake's Status API answers
  in a fixed {args.status_latency_ms} ms (`latency_ms`), the reconciler runs
  with concurrency 64, rps 1000, batch 64.  Latency per order from DB timestamps:
  `ingest.payment_event.received_at` -> `orders.transitions.at` (PAID; the
  entitlement grant is in the same transaction) -> `notify.job.created_at`
  (kind receipt).  Throughput = completed orders / (last job - first receipt).
  `transitions.at` is `now()`, the start of kasir-order's transaction.

{table}

- Target: p99 <= 100 ms at 500 payments/s: {verdict}.
- Target with the confirmation: notification -> PAID p99 at most 50 ms above
  the fake Status API's own p99 at 500 payments/s: {confirm_verdict}.
"""
    update_doc("b", "(b) End to end: notification -> PAID + access -> receipt job", md)


# --------------------------------------------------------------------------
# (f) confirmation latency: notification -> PAID through the Status API


CONFIRM_SQL = """
SELECT o.order_id,
  extract(epoch FROM (SELECT min(e.received_at) FROM ingest.payment_event e
                      WHERE e.order_id = o.order_id)),
  extract(epoch FROM (SELECT min(v.recorded_at) FROM orders.evidence v
                      WHERE v.order_id = o.order_id AND v.source = 'ingest')),
  extract(epoch FROM (SELECT min(c.requested_at) FROM recon.status_check c
                      WHERE c.order_id = o.order_id AND c.confirm)),
  extract(epoch FROM (SELECT min(c.requested_at + c.latency_ms
                                 * interval '1 millisecond')
                      FROM recon.status_check c
                      WHERE c.order_id = o.order_id AND c.confirm
                        AND c.published)),
  extract(epoch FROM (SELECT min(c.checked_at) FROM recon.status_check c
                      WHERE c.order_id = o.order_id AND c.confirm
                        AND c.published)),
  extract(epoch FROM (SELECT min(t.at) FROM orders.transitions t
                      WHERE t.order_id = o.order_id AND t.to_status = 'PAID'))
FROM orders.orders o WHERE o.order_id LIKE %s
"""

# The reconciler sized for confirmations at hundreds per second: a window
# of 64 claimed orders, up to 64 requests in flight.
CONFIRM_RECON = dict(E2E_RECON, RECON_BATCH="64", RECON_CONCURRENCY="64",
                     RECON_POLL="200ms")


def open_loop_send(args, work, url, bodies, rate, conns):
    """Sends bodies[i] at t0 + i/rate with kasir-loadgen (bench/loadgen:
    open loop, a late answer does not delay the next send, a due request
    waits for the next free keep-alive connection, and its latency counts
    from its intended time).  Returns (t0, intended send time per index,
    answered 2xx, the generator's CPU seconds).  The generator is C: the
    Python threads that sent before used 0.2-0.3 ms of CPU per payment
    on the two cores the stack was measured on."""
    import kbench_ingest
    binary = kbench_ingest.loadgen_binary(args.build_dir)
    path = os.path.join(work, "confirm-bodies.txt")
    with open(path, "w") as f:
        for b in bodies:
            f.write(b + "\n")
    res = kbench_ingest.run_loadgen(binary, [url], path, conns,
                                    len(bodies) / float(rate), 0, rate=rate,
                                    sources=0)
    t0 = res["t0_unix_ms"] / 1000.0
    intended = [t0 + i / float(rate) for i in range(len(bodies))]
    return t0, intended, res["status"]["2xx"], res["cpu_s"]


def in_flight(st, prefix):
    """Status API requests in flight during the run, from the stored
    checks: (time-averaged, max) over the span of the checks."""
    rows = st.sql("SELECT extract(epoch FROM requested_at)::float8,"
                  " latency_ms FROM recon.status_check WHERE order_id LIKE %s",
                  (prefix + "-%",))
    ev = []
    busy = 0.0
    for t, lat in rows:
        ev.append((t, 1))
        ev.append((t + (lat or 0) / 1000.0, -1))
        busy += (lat or 0) / 1000.0
    if not ev:
        return 0.0, 0
    ev.sort()
    cur = peak = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    span = ev[-1][0] - ev[0][0]
    return (busy / span if span > 0 else 0.0), peak


def pg_pids(st):
    """The stack's PostgreSQL: its postmaster (first line of
    postmaster.pid) and the postmaster's children."""
    try:
        with open(os.path.join(st.pg.data, "postmaster.pid")) as f:
            pm = int(f.readline())
    except (OSError, ValueError, AttributeError):
        return []
    kids = subprocess.run(["ps", "--ppid", str(pm), "-o", "pid="],
                          capture_output=True, text=True).stdout.split()
    return [pm] + [int(k) for k in kids]


def cpu_snapshot(st):
    """CPU seconds so far of each daemon, the fake Midtrans, PostgreSQL
    (its processes now: a backend that exited is not counted) and this
    process (the open-loop sender)."""
    snap = {}
    for name in ("ingest", "order", "notifier", "reconciler", "fake-midtrans",
                 "smtp-sink", "whatsapp-fake"):
        pid = st.pid(name)
        snap[name] = cpu_seconds(pid) if pid else float("nan")
    snap["postgres"] = {pid: cpu_seconds(pid) for pid in pg_pids(st)}
    snap["apps"] = dict(st.sql("SELECT pid, application_name FROM pg_stat_activity"))
    t = os.times()
    snap["bench (python)"] = t.user + t.system
    return snap


def cpu_used(before, after):
    """CPU seconds between two snapshots; PostgreSQL's split by the
    application_name of each backend (kasir-order-..., kasir-reconciler-
    scheduler, ...; "postgres (other)": postmaster, walwriter, ...)."""
    out = {}
    for k, v in after.items():
        if k == "apps":
            continue
        if k == "postgres":
            for pid, c in v.items():
                if c != c:
                    continue
                app = after["apps"].get(pid) or "other"
                key = f"postgres: {app}"
                out[key] = out.get(key, 0.0) + c - before[k].get(pid, 0.0)
        else:
            out[k] = v - before[k]
    return out


CONFIRM_HOPS = (
    ("intended -> ingest stored", None, 0),
    ("ingest stored -> held by kasir-order (confirm.request)", 0, 1),
    ("held -> Status API request (reconciler)", 1, 2),
    ("request -> answer (the fake)", 2, 3),
    ("answer -> recorded (recon COMMIT starts)", 3, 4),
    ("recorded -> PAID (kasir-order)", 4, 5),
)


# The fast path's counters (each daemon's /metrics): who publishes which
# stream, who consumes it.  A frame refused or dropped on the way reaches
# its consumer by replay (docs/backbone.md, "How much the fast path carries
# under load").
FASTPATH_PRODUCED = (("ingest", "ingest"), ("order", "orders"),
                     ("reconciler", "recon"))
FASTPATH_CONSUMED = (("order", "ingest"), ("reconciler", "orders"),
                     ("notifier", "orders"), ("order", "recon"))


def fastpath_snapshot(st, services):
    out = {}
    for svc, stream in FASTPATH_PRODUCED:
        if svc in services:
            for m in ("sent", "send_failed"):
                out[(svc, stream, m)] = st.metric(svc, f"kasir_stream_{m}_total",
                                                  stream=stream)
    for svc, stream in FASTPATH_CONSUMED:
        if svc in services:
            for m in ("gaps", "replays", "duplicates"):
                out[(svc, stream, m)] = st.metric(svc, f"kasir_stream_{m}_total",
                                                  stream=stream)
    return out


def fastpath_table(res):
    """Markdown: frames sent live / refused per stream, and per consumer
    the gaps, replay requests and duplicates it saw, per point."""
    lines = ["| stream: producer -> consumer | "
             + " | ".join(f"{x['rate']}/s: live sent / refused; gaps, replays, duplicates"
                          for x in res) + " |",
             "|---|" + "---|" * len(res)]
    producer_of = {stream: svc for svc, stream in FASTPATH_PRODUCED}
    for svc, stream in FASTPATH_CONSUMED:
        cells = []
        for x in res:
            f = x["fastpath"]
            prod = producer_of[stream]
            if (svc, stream, "gaps") not in f or (prod, stream, "sent") not in f:
                cells.append("-")
                continue
            cells.append(f"{f[(prod, stream, 'sent')]:.0f} / {f[(prod, stream, 'send_failed')]:.0f}; "
                         f"{f[(svc, stream, 'gaps')]:.0f}, {f[(svc, stream, 'replays')]:.0f}, "
                         f"{f[(svc, stream, 'duplicates')]:.0f}")
        lines.append(f"| {stream}: {producer_of[stream]} -> {svc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wal_snapshot(st):
    """Transactions committed in the kasir database (read-only ones
    included), WAL flushes (fsync of the WAL: what a durable COMMIT
    waits for; one flush serves every COMMIT waiting at that moment) and
    WAL bytes, cluster-wide, so far."""
    r = st.sql("SELECT (SELECT xact_commit FROM pg_stat_database"
               " WHERE datname = 'kasir'), wal_sync, wal_bytes FROM pg_stat_wal")[0]
    return [float(v) for v in r]


def confirm_point(args, st, key, idx, rate, services):
    """One offered rate on the running stack: seed, pay at the fake, send
    open loop, wait for PAID; returns the figures."""
    seconds = args.seconds
    prefix = f"cf{idx}"
    n = rate * seconds
    ids = seed_orders(st, prefix, n)
    pay_at_fake(st, ids)
    bodies = [notification(oid, key) for oid in ids]
    settle(st)
    up_before = subprocess.run(["uptime"], capture_output=True,
                               text=True).stdout.strip()
    la = loadavg()
    print(f"[kbench] confirm: {n} payments at {rate}/s; {up_before}")
    cpu0 = cpu_snapshot(st)
    fp0 = fastpath_snapshot(st, services)
    wal0 = wal_snapshot(st)
    if args.statements:
        st.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        st.sql("SELECT pg_stat_statements_reset()")
        seq0 = seqscan_snapshot(st)
    t0, intended, accepted, sender_cpu = open_loop_send(
        args, st.dir, st.url("ingest"), bodies, rate, args.clients)
    sent_end = time.time()

    def rows():
        return {r[0]: [None if v is None else float(v) for v in r[1:]]
                for r in st.sql(CONFIRM_SQL, (prefix + "-%",))}

    # the wait polls a count of the PAID transitions: the hop query above,
    # planned on statistics from before the run, took 15 s per call with
    # 10,000 orders and ran on the same two cores while the last payments
    # were still on their way (their latency, the CPU and the wall time
    # counted it); it runs once, after the run and an ANALYZE
    def all_paid():
        return st.sql("SELECT count(*) FROM orders.transitions"
                      " WHERE to_status = 'PAID' AND order_id LIKE %s",
                      (prefix + "-%",))[0][0] >= n
    try:
        kasirtest.wait_until(all_paid, timeout=args.drain_timeout,
                             what="every order PAID", interval=0.2)
    except kasirtest.WaitTimeout:
        pass
    cpu = cpu_used(cpu0, cpu_snapshot(st))
    cpu["sender (kasir-loadgen)"] = sender_cpu
    wall = time.time() - t0
    # a backend sends its counters at most once a second
    time.sleep(1.5)
    wal = [b - a for a, b in zip(wal0, wal_snapshot(st))]
    fp1 = fastpath_snapshot(st, services)
    fastpath = {k: fp1[k] - fp0.get(k, 0.0) for k in fp1}
    st.sql("ANALYZE ingest.payment_event, orders.evidence, recon.status_check,"
           " orders.transitions, orders.orders")
    if args.statements:
        print(f"[kbench] confirm {rate}/s: PostgreSQL statements"
              " (pg_stat_statements):\n" + drain_statements(st, args.statements_top))
        print(f"[kbench] confirm {rate}/s: sequential scans"
              " (pg_stat_user_tables):\n" + seqscan_diff(seq0, st))
    got = rows()
    want = {oid: intended[i] for i, oid in enumerate(ids)}
    paid = [oid for oid, v in got.items() if v[5] is not None]
    lat = [(got[o][5] - want[o]) * 1000 for o in paid]
    hops = []
    for _, a, b in CONFIRM_HOPS:
        vals = []
        for o in paid:
            v = got[o]
            start = want[o] if a is None else v[a]
            if start is not None and v[b] is not None:
                vals.append((v[b] - start) * 1000)
        hops.append((pct(vals, 50), pct(vals, 99)))
    api = st.sql("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                 " percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),"
                 " count(*), count(*) FILTER (WHERE verdict <> 'status')"
                 " FROM recon.status_check WHERE order_id LIKE %s",
                 (prefix + "-%",))[0]
    avg_fl, peak_fl = in_flight(st, prefix)
    ptimes = sorted(got[o][5] for o in paid)
    return {
        "rate": rate, "n": n, "accepted": accepted, "paid": len(paid),
        "thr": (len(ptimes) - 1) / (ptimes[-1] - ptimes[0]) if len(ptimes) > 1 else 0,
        "achieved": n / (sent_end - t0) if sent_end > t0 else float("nan"),
        "p50": pct(lat, 50), "p99": pct(lat, 99),
        "api_p50": float(api[0] or 0), "api_p99": float(api[1] or 0),
        "api_n": api[2], "api_err": api[3], "avg_fl": avg_fl, "peak_fl": peak_fl,
        "hops": hops, "cpu": cpu, "wall": wall, "la": la, "uptime": up_before,
        "fastpath": fastpath, "wal": wal,
    }


def bench_confirm(args):
    rates = [int(x) for x in args.rates.split(",")]
    st = make_stack(args, "confirm", dict(CONFIRM_RECON, RECON_LANES=str(args.lanes)))
    services = ["ingest", "order", "reconciler"]
    if not args.without_notifier:
        services.append("notifier")
    res = []
    with st:
        st.start_all(services=services)
        r = kasirtest.http("POST", st.url("fake_midtrans") + "/_fake/status_api",
                           {"mode": "normal", "latency_ms": args.status_latency_ms})
        if r.status != 200:
            raise SystemExit(f"fake Status API latency: {r}")
        key = st.secret("midtrans-server-key")
        for idx, rate in enumerate(rates):
            res.append(confirm_point(args, st, key, idx, rate, services))
    table = [
        "| offered /s | payments | accepted by ingest | achieved send /s | PAID "
        "| PAID /s (first->last) | PAID p50 ms | PAID p99 ms "
        "| Status API p50 / p99 ms (checks, not status) | in flight avg / max "
        "| target (API p99 + 50) | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for x in res:
        target = x["api_p99"] + 50
        if x["paid"] == x["n"] and x["p99"] <= target:
            v = f"**met** ({target - x['p99']:.0f} ms to spare)"
        else:
            v = (f"**MISSED** by {x['p99'] - target:.0f} ms"
                 + ("" if x["paid"] == x["n"] else f"; only {x['paid']} of {x['n']} PAID"))
        verdicts.append(f"- {x['rate']} payments/s: PAID p99 {x['p99']:.0f} ms, "
                        f"target {target:.0f} ms: {v}.")
        table.append(
            f"| {x['rate']} | {x['n']} | {x['accepted']} | {x['achieved']:.0f} | {x['paid']} "
            f"| {x['thr']:.0f} | {x['p50']:.0f} | {x['p99']:.0f} "
            f"| {x['api_p50']:.0f} / {x['api_p99']:.0f} ({x['api_n']}, {x['api_err']}) "
            f"| {x['avg_fl']:.1f} / {x['peak_fl']} | {target:.0f} | {x['la']} |")
    hop_table = ["| hop | " + " | ".join(f"{x['rate']}/s p50 / p99 ms" for x in res) + " |",
                 "|---|" + "---|" * len(res)]
    for k, (name, _, _) in enumerate(CONFIRM_HOPS):
        hop_table.append(f"| {name} | " + " | ".join(
            f"{x['hops'][k][0]:.0f} / {x['hops'][k][1]:.0f}" for x in res) + " |")
    names = []
    for x in res:
        for k, v in x["cpu"].items():
            if k not in names and (not k.startswith("postgres: ") or v >= 0.05):
                names.append(k)
    cpu_table = ["| process | " + " | ".join(
        f"{x['rate']}/s: CPU s (ms per payment)" for x in res) + " |",
        "|---|" + "---|" * len(res)]
    for k in names:
        cpu_table.append(f"| {k} | " + " | ".join(
            f"{x['cpu'].get(k, 0.0):.1f} ({x['cpu'].get(k, 0.0) * 1000.0 / x['n']:.2f})"
            for x in res) + " |")
    tot = [sum(v for v in x["cpu"].values() if v == v) for x in res]
    cpu_table.append("| **all** | " + " | ".join(
        f"{t:.1f} ({t * 1000.0 / x['n']:.2f}) of {os.cpu_count() * x['wall']:.0f} available"
        for t, x in zip(tot, res)) + " |")
    wal_table = ["| per payment | " + " | ".join(f"{x['rate']}/s" for x in res) + " |",
                 "|---|" + "---|" * len(res)]
    for k, name in enumerate(("transactions committed (read-only ones too)",
                              "WAL flushes (fsync)", "WAL bytes")):
        wal_table.append(f"| {name} | " + " | ".join(
            f"{x['wal'][k] / x['n']:.1f}" if k < 2 else f"{x['wal'][k] / x['n']:.0f}"
            for x in res) + " |")
    wal_table.append("| WAL flushes per second | " + " | ".join(
        f"{x['wal'][1] / x['wall']:.0f}" for x in res) + " |")
    table, hop_table, cpu_table, wal_table = ("\n".join(t) for t in (
        table, hop_table, cpu_table, wal_table))
    fp_table = fastpath_table(res)
    print(table)
    print(hop_table)
    print(cpu_table)
    print(wal_table)
    print(fp_table)
    uptimes = "; ".join(f"{x['rate']}/s: `{x['uptime']}`" for x in res)
    md = header(args) + f"""- `uptime` before each point: {uptimes}
- Per point: `rate x {args.seconds}` orders (PENDING, inserted with SQL) are
  first paid at the fake (its truth says settlement, so the Status API
  agrees; no notification sent); then, after a CHECKPOINT and a sync (so
  that no point inherits the writeback of its set-up or of the point
  before), their signed settlement notifications are sent **open loop** for {args.seconds} s by `kasir-loadgen`
  (bench/loadgen, C) over {args.clients} keep-alive connections: each
  payment has an intended send time t0 + i/rate, a due request waits for
  the next free connection, and its latency still counts from the
  intended time.  {", ".join(services)} run (+ the
  fakes){" (the notifier left out: receipts are not on the path to PAID, and here they take CPU from it)" if args.without_notifier else ""}; kasir-order holds each notification until the reconciler's Status
  API answer confirms it.  The fake's Status API answers in a fixed
  {args.status_latency_ms} ms (`latency_ms`); the reconciler runs with a window
  (`schedule.batch`) of 64 and `midtrans.concurrency` 64, rps cap 1000,
  shared by {args.lanes} scheduler lane(s) (`schedule.lanes`).
- Latency per payment: intended send time -> `orders.transitions.at` of its
  PAID transition (`now()` of kasir-order's transaction, which also grants
  access).  The fake's own latency is each check's `latency_ms` as the
  reconciler measured it (request sent -> answer read), same run.
  In flight: Status API requests open at once, from the stored checks
  (time-averaged over the point, and the peak).

{table}

Where the time goes (per payment, p50 / p99 of each hop; DB timestamps):

{hop_table}

CPU used from the first send until the last payment was PAID (of the CPU
seconds the {os.cpu_count()} cores offered meanwhile to everything on the
machine, other users' work included; PostgreSQL split by the backends'
`application_name`, those under 0.05 s left out):

{cpu_table}

What the database did for it, over the same interval (`pg_stat_database`
of the kasir database and `pg_stat_wal`, cluster-wide; each durable
COMMIT waits for a WAL flush, and one flush serves every COMMIT waiting
at that moment):

{wal_table}

The fast path during the point (each daemon's `/metrics`): frames the
producer sent live and frames its socket refused (push streams; a pub
socket drops without telling), and what the consumer saw: gaps, replay
requests, duplicates.  Whatever the fast path did not carry came by
replay (`docs/backbone.md`, "How much the fast path carries under load"):

{fp_table}

Target: notification -> PAID p99 at most 50 ms above the fake Status API's
own p99 in the same run:
{chr(10).join(verdicts)}
"""
    update_doc("f", "(f) Confirmation: notification -> PAID through the Status API", md)


# --------------------------------------------------------------------------
# (c) backlog drain


DRAIN_TARGET = 5000  # events/s, issue 17


def drain_once(args, live, n):
    """One drain of n settlements (one per order) stored by kasir-ingest
    while kasir-order was down.  live=False: order.signature_only (the
    notification is the evidence; the whole order path otherwise: decision,
    evidence row, transition, entitlement, order events).  live=True: the
    default mode with kasir-reconciler and the fake Midtrans (the orders
    paid there first): every notification is held, confirmed with the
    fake's Status API, and the answer makes the order PAID."""
    if live:
        st = make_stack(args, "drain-live", E2E_RECON)
        services = ["ingest", "order", "reconciler"]
    else:
        st = make_stack(args, "drain", {"ORDER_SIGNATURE_ONLY": "true"})
        services = ["ingest", "order"]
    with st:
        st.start_all(services=services)
        key = st.secret("midtrans-server-key")
        st.stop("order")
        ids = seed_orders(st, "drn", n)
        if live:
            pay_at_fake(st, ids)
        url = st.url("ingest")
        path = "/" + url.split("/", 3)[3]
        work = tempfile.mkdtemp(prefix="kbench-c-", dir=st.dir)
        lua = os.path.join(work, "fill.lua")
        t_fill = time.monotonic()
        missing = list(ids)
        while missing:
            # each order notified exactly once: a second pass sends only
            # what the first did not store
            write_lua(lua, [notification(oid, key) for oid in missing], path, 16,
                      once=True)
            run_wrk(url, lua, 5 + len(missing) // 2000, 16)
            stored = {r[0] for r in st.sql("SELECT order_id FROM ingest.payment_event"
                                           " WHERE order_id LIKE 'drn-%'")}
            missing = [oid for oid in missing if oid not in stored]
            if time.monotonic() - t_fill > 600:
                raise RuntimeError(f"only {n - len(missing)} of {n} stored after 10 min")
        backlog = st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id LIKE 'drn-%'")[0][0]
        head = st.sql("SELECT seq FROM ingest.stream_head WHERE stream = 'ingest'")[0][0]
        # a production database has statistics on its orders (not an
        # ANALYZE of the empty evidence tables: their plans would then stay
        # sequential scans while the drain fills them)
        st.sql("ANALYZE orders.orders")
        fill = time.monotonic() - t_fill
        settle(st)
        la = loadavg()
        up = os.popen("uptime").read().strip()
        pgdata = os.path.join(st.pg_dir(), "data")
        pg0, in0 = pg_cpu_seconds(pgdata), cpu_seconds(st.pid("ingest"))
        t0 = time.monotonic()
        if args.statements:
            st.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            st.sql("SELECT pg_stat_statements_reset()")
        st.start("order", wait=False)
        opid = st.pid("order")
        prof = None
        if args.profile and not live:
            prof_box = {}
            pth = threading.Thread(target=lambda: prof_box.update(
                text=perf_profile(opid, 4, os.path.join(work, "order-perf"))), daemon=True)
            time.sleep(1.0)  # past start-up and migrations
            pth.start()

        # the poll must not compete with the drain for PostgreSQL: a count
        # over the orders is a scan of 50,000 rows every 0.2 s; the
        # consumer's cursor is one row (live: the cursor reaches the head
        # long before the confirmations are answered, so count, rarely)
        def drained():
            if live:
                time.sleep(0.3)
                return st.sql("SELECT count(*) FROM orders.orders WHERE order_id LIKE 'drn-%'"
                              " AND status = 'PAID'")[0][0] >= n
            cur = st.sql("SELECT seq FROM orders.stream_cursor WHERE stream = 'ingest'")
            return bool(cur) and cur[0][0] >= head

        ready_at = None
        while not drained():
            if ready_at is None and kasirtest.probe_ok(st.ready_probe("order")):
                ready_at = time.monotonic() - t0
            if time.monotonic() - t0 > args.drain_timeout:
                break
            time.sleep(0.2)
        total = time.monotonic() - t0
        order_cpu = cpu_seconds(opid)
        pg_cpu = pg_cpu_seconds(pgdata) - pg0
        ingest_cpu = cpu_seconds(st.pid("ingest")) - in0
        if args.profile and not live:
            pth.join()
            prof = prof_box.get("text")
        paid = st.sql("SELECT count(*), extract(epoch FROM max(t.at) - min(t.at))"
                      " FROM orders.transitions t WHERE t.order_id LIKE 'drn-%'"
                      " AND t.to_status = 'PAID'")[0]
        granted = st.sql("SELECT count(*) FROM orders.entitlements"
                         " WHERE order_id LIKE 'drn-%' AND revoked_at IS NULL")[0][0]
        # the head once what was committed is numbered (head + unnumbered)
        events = st.sql(f"SELECT {kasirtest.stream_head_sql('orders', 'orders')}")[0][0]
        stmts = drain_statements(st) if args.statements else None
        proof = st.sql("SELECT count(*) FROM orders.transitions WHERE order_id LIKE 'drn-%'"
                       " AND to_status = 'PAID' AND evidence_source = 'recon'")[0][0]
    done, span = paid[0], float(paid[1] or 0)
    return {"n": backlog, "live": live, "fill": fill, "total": total, "ready": ready_at,
            "done": done, "span": span, "granted": granted, "events": events,
            "proof": proof, "la": la, "pg_cpu": pg_cpu, "ingest_cpu": ingest_cpu, "uptime": up, "cpu": order_cpu, "prof": prof,
            "stmts": stmts,
            "rate_total": done / total if total else 0,
            "rate_db": done / span if span else float("nan")}


def seqscan_snapshot(st):
    """Sequential scans and the rows they read, per table."""
    return {f"{r[0]}.{r[1]}": (int(r[2]), int(r[3])) for r in st.sql(
        "SELECT schemaname, relname, seq_scan, seq_tup_read"
        " FROM pg_stat_user_tables")}


def seqscan_diff(before, st):
    """The tables read sequentially since `before` (a statistics
    snapshot lags a backend's counters by up to a second)."""
    time.sleep(1.0)
    after = seqscan_snapshot(st)
    lines = []
    for t, (n, rows) in sorted(after.items()):
        n0, rows0 = before.get(t, (0, 0))
        if rows > rows0:
            lines.append(f"  {t}: {n - n0} scans, {rows - rows0} rows read")
    return "\n".join(lines) or "  (none read rows)"


def drain_statements(st, top=15):
    """The statements PostgreSQL spent the drain on (pg_stat_statements,
    --statements): the top 15 by total time, with their share."""
    rows = st.sql(
        "SELECT round(100 * total_exec_time / sum(total_exec_time) OVER ())::int,"
        " calls, round(total_exec_time::numeric, 0), rows,"
        " r.rolname || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 110)"
        " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
        " ORDER BY total_exec_time DESC LIMIT %s", (top,))
    # planning, when the cluster tracks it (KASIRTEST_PG_EXTRA=
    # "pg_stat_statements.track_planning = on"): per role, what a custom
    # plan at every execution costs
    plans = st.sql(
        "SELECT r.rolname, sum(s.plans)::bigint, round(sum(s.total_plan_time)::numeric, 0),"
        " sum(s.calls)::bigint, round(sum(s.total_exec_time)::numeric, 0)"
        " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
        " GROUP BY r.rolname HAVING sum(s.total_plan_time) > 0"
        " ORDER BY 3 DESC")
    rows = list(rows) + [(0, p[1], p[2], 0, f"{p[0]}: planning ({p[3]} calls,"
                          f" {p[4]} ms executing)") for p in plans]
    hot = st.sql("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                 " WHERE schemaname = 'orders' AND relname = 'orders'")
    return ("\n".join(f"{r[0]:3d}% {r[1]:8d} calls {r[2]:8} ms {r[3]:8d} rows  {r[4]}"
                      for r in rows)
            + (f"\norders.orders: {hot[0][0]} row updates, {hot[0][1]} of them HOT"
               if hot else ""))


def bench_drain(args):
    main = drain_once(args, False, args.events)
    live = drain_once(args, True, args.live_events) if args.live_events > 0 else None
    rate_db = main["rate_db"]
    per = lambda k: main[k] / main["done"] * 1e6 if main["done"] else float("nan")
    us_pg, us_order, us_ingest = per("pg_cpu"), per("cpu"), per("ingest_cpu")
    us_all = us_pg + us_order + us_ingest
    ceiling = 2e6 / us_all if us_all else float("nan")
    verdict = ("met" if rate_db >= DRAIN_TARGET else
               f"MISSED: {rate_db:.0f}/s = {rate_db / DRAIN_TARGET * 100:.0f}% of the target")
    rows = []
    for r in [main] + ([live] if live else []):
        mode = "live confirmation (fake Status API)" if r["live"] else "signature_only"
        rows.append(f"| {mode} | {r['n']} | {r['done']} | {r['granted']} | {r['total']:.1f} |"
                    f" {r['rate_total']:.0f} | {r['span']:.1f} | {r['rate_db']:.0f} |"
                    f" {r['cpu']:.1f} / {r['pg_cpu']:.1f} / {r['ingest_cpu']:.1f} | {r['la']} |")
        print(f"{mode}: {r['n']} events, PAID {r['done']}, granted {r['granted']},"
              f" orders stream {r['events']} events, PAID by a Status API answer {r['proof']};"
              f" start -> all PAID {r['total']:.1f} s ({r['rate_total']:.0f}/s);"
              f" first -> last PAID {r['span']:.1f} s = {r['rate_db']:.0f}/s;"
              f" CPU s: kasir-order {r['cpu']:.1f}, PostgreSQL {r['pg_cpu']:.1f},"
              f" kasir-ingest (replay) {r['ingest_cpu']:.1f}; {r['uptime']}")
    if main["prof"]:
        print("perf profile of kasir-order (self time, top symbols):\n" + main["prof"])
    if main["stmts"]:
        print("PostgreSQL statements during the drain (pg_stat_statements):\n"
              + main["stmts"])
    md = header(args) + f"""- `signature_only`: {main['n']} settlement notifications (one per order)
  stored by kasir-ingest while kasir-order was stopped; then, after a
  CHECKPOINT and a sync (the fill's writeback stays out of the drain),
  kasir-order started and drained them through the ingest stream (replay): the whole
  order path (decision, evidence row, transition, order row, entitlement,
  order events: `order.paid`, which also says what the notification
  said, and `access.granted`) with order.signature_only, so no Status
  API call is in the way.
- live confirmation: the same with the default mode, kasir-reconciler
  (concurrency {E2E_RECON['RECON_CONCURRENCY']}, rps {E2E_RECON['RECON_RPS']}) and the fake Midtrans (each order
  paid there first): each notification is held, kasir-reconciler asks the
  fake's Status API, and its answer makes the order PAID.  A smaller
  backlog: its rate is the reconciler's and the fake's, not kasir-order's.
- `uptime` before the drain: {main['uptime']}

| mode | events | PAID | entitlements | start -> drained s | events/s incl. start | first->last PAID s (DB) | events/s (DB) | CPU s: order / PostgreSQL / ingest | load avg |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

- Target: drain >= {DRAIN_TARGET:,} events/s (signature_only, DB): {verdict}.
- CPU per drained event (signature_only): PostgreSQL {us_pg:.0f} µs,
  kasir-order {us_order:.0f} µs, kasir-ingest's replay {us_ingest:.0f} µs: {us_all:.0f} µs, so
  two idle cores would drain at most about {ceiling:,.0f} events/s.  The
  wall time beyond that CPU is the other work on the shared cores.
- Where PostgreSQL's time goes (run with `--statements` for this run's
  own list below; measured 2026-12-07 12:33 on 50,000 events): the
  orders stream's sequencer pass (`stream_pending` -> `stream_out`, its
  own connection) about a quarter, kasir-ingest's replay reads, the order
  row's UPDATE and the grant (entitlement event + entitlement, their
  references checked once per statement since kasir-order's migration
  0013) about an eighth each, the transition, the evidence rows and the
  `stream_pending` inserts about a tenth each, then the evidence read.
  About half the UPDATEs are HOT (no indexed column changes, fillfactor
  80; the rest find their page full in a drain, which updates every order
  of a page in one transaction).  The backbone's share: two order events
  per payment, each inserted into `stream_pending` and moved into
  `stream_out` by the sequencer, about a third of the statements' time.
  kasir-order sends one array statement per kind of write and round (5
  per batch of 256 plus the lock, the ids, the deferred appends and
  COMMIT): round trips no longer bound it.  The bench polls the
  consumer's cursor, not a count over the orders.
- What would raise it further: smaller order events (each carries the
  order's snapshot; notifier and reconciler read `order.paid` and
  `access.granted`; `order.evidence` is no longer sent for evidence that
  made a transition), kasir-order
  preparing its next batch while PostgreSQL writes the current one (one
  consumer thread alternates: CPU of both processes is well under the
  two cores during the drain), and two cores the drain does not share.
"""
    if main["prof"]:
        md += ("\nperf profile of kasir-order during the drain (4 s, self time):\n\n```\n"
               + main["prof"] + "\n```\n")
    if main["stmts"]:
        md += ("\nPostgreSQL's statements during the drain (pg_stat_statements,"
               " `--statements`; share of their time, calls, total ms, rows):\n\n```\n"
               + main["stmts"] + "\n```\n")
    update_doc("c", "(c) Recovery: backlog drain after kasir-order was down", md)


# --------------------------------------------------------------------------
# (d) reconciler


def bench_reconciler(args):
    st = make_stack(args, "recon", {"RECON_RPS": "1000",
                                    "RECON_CONCURRENCY": str(args.concurrency),
                                    "RECON_BATCH": "16", "RECON_POLL": "100ms"})
    with st:
        st.start("fake-midtrans")
        n = args.orders
        ids = [f"rec-{i:06d}" for i in range(1, n + 1)]
        for oid in ids:  # orders the fake knows, paid, notification dropped
            r = st.fake("POST", f"/_fake/orders/{oid}/pay",
                        {"amount": AMOUNT, "payment_type": "bank_transfer",
                         "notify": "drop"})
            if r.status >= 300:
                raise RuntimeError(f"fake refused {oid}: {r}")
        st.start("reconciler")
        la = loadavg()
        t0 = time.time()
        with st.pg.connect() as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO recon.watch (order_id, created_at, expires_at,"
                            " next_check_at, orders_seq) SELECT unnest(%s::text[]),"
                            " now() - interval '1 hour', now() + interval '1 day',"
                            " now(), 0", (ids,))

        def checked():
            return st.sql("SELECT count(DISTINCT order_id) FROM recon.status_check")[0][0] >= n

        try:
            kasirtest.wait_until(checked, timeout=args.drain_timeout,
                                 what="every order checked", interval=0.2)
        except kasirtest.WaitTimeout:
            pass
        wall = time.time() - t0
        row = st.sql("SELECT count(*), count(*) FILTER (WHERE verdict = 'status'),"
                     " extract(epoch FROM max(checked_at) - min(checked_at)),"
                     " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                     " percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)"
                     " FROM recon.status_check")[0]
    cnt, ok, span = row[0], row[1], float(row[2] or 0)
    rate = cnt / span if span else float("nan")
    text = (f"{cnt} status checks ({ok} answered 'status') in {span:.1f} s (DB) = {rate:.0f}/s;"
            f" concurrency {args.concurrency}; wall {wall:.1f} s;"
            f" Status API latency p50 {row[3]:.0f} ms p99 {row[4]:.0f} ms; load avg {la}")
    print(text)
    md = header(args) + f"""- {n} orders paid at the fake (notification dropped), put in
  recon.watch due now; kasir-reconciler (concurrency {args.concurrency}, rps cap
  = 1000 (its maximum), batch 16, poll 100 ms) checks each once against
  kasir-fake-midtrans (a single-threaded-per-request Python server).

| checks | answered | first->last s (DB) | checks/s | concurrency | API p50 ms | API p99 ms | load avg |
|---|---|---|---|---|---|---|---|
| {cnt} | {ok} | {span:.1f} | {rate:.0f} | {args.concurrency} | {row[3]:.0f} | {row[4]:.0f} | {la} |

- No target in issue 8; production is capped by `rps` (default 10/s) far
  below this.  What limits it: see the analysis at the top (the Python
  fake's latency and the reconciler's claim/check/record cycle).
"""
    update_doc("d", "(d) Reconciler: status checks per second against the fake", md)


# --------------------------------------------------------------------------
# (e) RSS


def cpu_seconds(pid):
    """user+system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_cpu_seconds(datadir):
    """CPU seconds of a PostgreSQL cluster: its postmaster (with the
    children it reaped) and its live children."""
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            pm = int(f.readline())
    except (OSError, ValueError):
        return float("nan")
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == pm:
            total += sum(int(x) for x in fields[11:15])
        elif int(fields[1]) == pm:
            total += int(fields[11]) + int(fields[12])
    return total / tck


def perf_profile(pid, seconds, out):
    """perf record -g on pid for `seconds`; returns the top of the flat
    profile (self time) as text, or why there is none."""
    perf = shutil.which("perf")
    if not perf:
        return "(perf not installed)"
    data = out + ".data"
    r = subprocess.run([perf, "record", "-q", "-g", "-o", data, "-p", str(pid),
                        "--", "sleep", str(seconds)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"(perf record failed: {r.stderr.strip()[:200]})"
    r = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children",
                        "--sort", "dso,sym", "-g", "none", "--percent-limit", "2"],
                       capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return "\n".join(lines[:15])


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def bench_rss(args):
    st = make_stack(args, "rss", E2E_RECON)
    daemons = list(kasirtest.DAEMONS)
    samples = {d: [] for d in daemons}
    with st:
        st.start_all(services=daemons)
        key = st.secret("midtrans-server-key")
        n = min(200000, max(1000, int(args.rate * args.seconds)))
        pay_at_fake(st, seed_orders(st, "rss", n))
        bodies = [notification(f"rss-{i:06d}", key) for i in range(1, n + 1)]
        url = st.url("ingest")
        path = "/" + url.split("/", 3)[3]
        work = tempfile.mkdtemp(prefix="kbench-e-", dir=st.dir)
        lua = os.path.join(work, "load.lua")
        write_lua(lua, bodies, path, 8, rate=args.rate, once=True)
        time.sleep(args.idle)
        idle = {d: rss_kib(st.pid(d)) for d in daemons}
        la0 = loadavg()
        stop = threading.Event()

        def sampler():
            t0 = time.monotonic()
            while not stop.is_set():
                t = time.monotonic() - t0
                for d in daemons:
                    samples[d].append((t, rss_kib(st.pid(d))))
                stop.wait(1.0)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        res = run_wrk(url, lua, args.seconds, 8)
        stop.set()
        th.join()
        la1 = loadavg()
        paid = st.sql("SELECT count(*) FROM orders.orders WHERE order_id LIKE 'rss-%%'"
                      " AND status = 'PAID'")[0][0]
    lines = ["| daemon | idle KiB | warm-up KiB (at 20% of run) | max KiB | end KiB | "
             "growth after warm-up | verdict over this run (<= +10%) |", "|---|---|---|---|---|---|---|"]
    for d in daemons:
        s = [v for _, v in samples[d] if v]
        if not s:
            lines.append(f"| {d} | {idle[d]} | - | - | - | - | no samples |")
            continue
        warm = s[max(0, len(s) // 5)]
        mx_after = max(s[len(s) // 5:])
        growth = (mx_after - warm) / warm * 100.0
        lines.append(f"| {d} | {idle[d]} | {warm} | {max(s)} | {s[-1]} | "
                     f"{growth:+.1f}% | {'flat' if growth <= 10 else 'GROWS'}{'' if args.seconds >= 600 else ' (short run: not the 10-min verdict)'} |")
    table = "\n".join(lines)
    print(table)
    print(f"{paid} orders PAID by the end of the run")
    md = header(args) + f"""- All four daemons (+ fakes) idle for {args.idle} s, then {args.seconds} s
  of settlement notifications offered at {args.rate}/s by wrk
  (achieved {res['rate']:.0f}/s, each order once, each first paid at the
  fake so the reconciler's Status API confirmation agrees) through ingest ->
  order -> reconciler -> order -> notifier (receipts sent to the fakes);
  VmRSS sampled every second; {paid} orders PAID by the end of the run.
  Load average at the start {la0}, at the end {la1}.

{table}

- Issue 8 asks for a 10-minute run:
  `cd {SRC} && bench/e-rss --build-dir build-release --seconds 600 --rate 200`
  (offer a rate the whole pipeline sustains, or kasir-order's growing
  backlog of work in flight is measured instead of a leak).
"""
    update_doc("e", "(e) Memory: RSS idle and under load", md)


def bench_ingest(args):
    import kbench_ingest
    kbench_ingest.run(args, sys.modules[__name__])


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", choices=["ingest", "e2e", "drain", "reconciler", "rss",
                                      "confirm"])
    ap.add_argument("--build-dir", default=os.environ.get("KASIR_BUILD_DIR",
                                                          os.path.join(SRC, "build")))
    ap.add_argument("--seconds", type=int, default=None)
    ap.add_argument("--clients", type=int, default=None,
                    help="connections (ingest: 32, others: 16)")
    ap.add_argument("--pool", type=int, default=400000,
                    help="ingest: pre-generated notifications (distinct orders)")
    ap.add_argument("--committers", type=int, default=None,
                    help="ingest: its committer count, when its config has one")
    ap.add_argument("--open-rate", type=float, default=0,
                    help="(a): the open-loop phase at this rate instead of "
                         "half the measured maximum (an A/B of two builds "
                         "at one rate)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="ingest: ingest max and pgbench alternate this often")
    ap.add_argument("--no-peer", action="store_true",
                    help="ingest: skip the naive peer (no node/npm)")
    ap.add_argument("--no-pair", action="store_true",
                    help="ingest: skip the two-process run")
    ap.add_argument("--no-consumer", action="store_true",
                    help="ingest: no consumer on the publish socket (the"
                         " publisher then reads nothing)")
    ap.add_argument("--rates", default="100,500")
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--idle", type=int, default=5)
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--live-events", type=int, default=0,
                    help="drain: also drain this many with live confirmation")
    ap.add_argument("--orders", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--drain-timeout", type=int, default=300)
    ap.add_argument("--status-latency-ms", type=int, default=50,
                    help="e2e: the fake Status API's fixed latency")
    ap.add_argument("--lanes", type=int, default=4,
                    help="confirm: the reconciler's schedule.lanes")
    ap.add_argument("--statements-top", type=int, default=25,
                    help="confirm --statements: how many statements to print")
    ap.add_argument("--without-notifier", action="store_true",
                    help="confirm: do not run kasir-notifier (receipts)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--statements", action="store_true",
                    help="drain, confirm: load pg_stat_statements and print"
                    " where PostgreSQL spent its time")
    ap.add_argument("--profile", action="store_true",
                    help="drain: perf record kasir-order for 8 s during the drain;"
                    " ingest: perf record kasir-ingest during its max run")
    args = ap.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    if args.statements:
        os.environ["KASIRTEST_PG_STATEMENTS"] = "1"  # shared_preload_libraries
    if args.seconds is None:
        args.seconds = {"ingest": 10, "e2e": 10, "rss": 60,
                        "confirm": 20}.get(args.bench, 15)
    if args.clients is None and args.bench != "ingest":
        args.clients = 16
    for b in ("kasir-ingest", "kasir-order", "kasir-notifier", "kasir-reconciler"):
        if not os.access(os.path.join(args.build_dir, "bin", b), os.X_OK):
            sys.exit(f"{args.build_dir}/bin/{b} missing: build first (see docs/performance.md)")
    args.load_before = loadavg()
    print(f"[kbench] {args.bench}: load average {args.load_before}; {machine()}")
    {"ingest": bench_ingest, "e2e": bench_e2e, "drain": bench_drain,
     "reconciler": bench_reconciler, "rss": bench_rss,
     "confirm": bench_confirm}[args.bench](args)


if __name__ == "__main__":
    main()
