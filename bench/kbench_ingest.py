"""bench/a-ingest: kasir-ingest beside the physical limit and a naive peer.

One run, one PostgreSQL cluster (tests/lib/kasirtest.py, fsync=on,
synchronous_commit=on), the same client count (32 by default) for all:

1. kasir-ingest, closed loop (bench/loadgen, K keep-alive connections as
   fast as they go): its maximum rate.
2. pgbench, K clients: one durable INSERT of the same notification into a
   plain copy of ingest.payment_event (no stream_head, no trigger), one
   transaction each: the physical limit of "store one notification
   durably, then answer" on this cluster.
3. The naive peer (bench/peers/express-pg: Node, Express, pg): signature
   check, INSERT, UPDATE of the order row, 200 after COMMIT; closed loop.
4. kasir-ingest, open loop at half its maximum: p50/p99/p99.9 measured
   from each request's intended send time.
5. Two kasir-ingest processes on the one database (as behind nginx), the
   connections split between them, closed loop: does the rate add up?

Every answer must be 2xx; anything else is counted and reported, and the
rows stored by ingest are counted against its 2xx answers.  Requests carry
X-Forwarded-For with one of 50,000 addresses (the generator's 127.0.0.1 is
ingest's trusted proxy), so ingest's per-source rate limit stays at its
defaults and is measured with the rest.
"""

import atexit
import hashlib
import json
import os
import resource
import shutil
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SRC = os.path.join(HERE, "peers", "express-pg")
PEER_FILES = ("package.json", "package-lock.json", "server.js")
SOURCES = 50000  # distinct X-Forwarded-For addresses (ingest tracks 65,536)
WARMUP_S = 2

# The physical limit: one notification, one durable INSERT, one COMMIT.
# A copy of ingest.payment_event without what only kasir's stream needs:
# the txid column (the stream's source, migration 0004_stream_source)
# goes, and with it its index and the CHECK that the row renders, so the
# baseline carries none of kasir's design.
PLAIN_TABLE_SQL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE SEQUENCE bench.payment_event_id_seq;
CREATE TABLE bench.payment_event (LIKE ingest.payment_event INCLUDING ALL);
ALTER TABLE bench.payment_event DROP COLUMN txid;
ALTER TABLE bench.payment_event
  ALTER COLUMN id SET DEFAULT nextval('bench.payment_event_id_seq');
"""

PGBENCH_SCRIPT = r"""
\set n random(1, {norders})
INSERT INTO bench.payment_event (received_at, source_addr, order_id,
  transaction_status, status_code, gross_amount, fraud_status, payment_type,
  transaction_id, currency, signature_key_id, raw)
  VALUES (now(), '10.0.0.1', 'ing-' || lpad(:n::text, 7, '0'), 'settlement',
  '200', '150000.00', 'accept', 'bank_transfer', gen_random_uuid()::text,
  'IDR', 'primary', convert_to(repeat('x', {rawlen}), 'UTF8'));
"""

PEER_SQL = """
CREATE SCHEMA peer;
CREATE TABLE peer.orders (
  order_id   text PRIMARY KEY,
  amount     bigint NOT NULL,
  status     text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE peer.notification (
  id                 bigserial PRIMARY KEY,
  received_at        timestamptz NOT NULL DEFAULT now(),
  order_id           text NOT NULL,
  transaction_status text NOT NULL,
  status_code        text NOT NULL,
  gross_amount       text NOT NULL,
  transaction_id     text,
  payment_type       text,
  raw                jsonb NOT NULL);
CREATE INDEX ON peer.notification (order_id);
INSERT INTO peer.orders (order_id, amount, status)
  SELECT 'ing-' || lpad(g::text, 7, '0'), 150000, 'pending'
  FROM generate_series(1, %(n)s) g;
GRANT CONNECT ON DATABASE kasir TO bench_peer;
GRANT USAGE ON SCHEMA peer TO bench_peer;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA peer TO bench_peer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA peer TO bench_peer;
"""


# --------------------------------------------------------------------------
# tools: the load generator, the peer


def loadgen_binary(build_dir):
    """<build>/bin/kasir-loadgen, built on demand (bench/loadgen)."""
    path = os.path.join(build_dir, "bin", "kasir-loadgen")
    if not os.access(path, os.X_OK):
        r = subprocess.run(["cmake", "--build", build_dir, "--target",
                            "kasir-loadgen"], capture_output=True, text=True)
        if r.returncode != 0 or not os.access(path, os.X_OK):
            raise SystemExit(f"kasir-loadgen: build failed:\n{r.stdout}{r.stderr}")
    return path


def peer_install(build_dir):
    """Copies bench/peers/express-pg to <build>/bench-peers/express-pg and
    runs `npm ci` there when its lock file changed.  Returns the directory,
    or a string starting with "not measured" saying why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "not measured: node/npm not installed (apt-get install nodejs npm)"
    dest = os.path.join(build_dir, "bench-peers", "express-pg")
    os.makedirs(dest, exist_ok=True)
    h = hashlib.sha256()
    for name in PEER_FILES:
        shutil.copy2(os.path.join(PEER_SRC, name), os.path.join(dest, name))
        with open(os.path.join(PEER_SRC, name), "rb") as f:
            h.update(f.read())
    stamp = os.path.join(dest, "node_modules", ".kbench-stamp")
    try:
        with open(stamp) as f:
            if f.read().strip() == h.hexdigest():
                return dest
    except OSError:
        pass
    print("[kbench] npm ci (bench/peers/express-pg)", flush=True)
    r = subprocess.run([npm, "ci", "--omit=dev", "--no-audit", "--no-fund"],
                       cwd=dest, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return f"not measured: npm ci failed: {(r.stderr or r.stdout).strip()[-300:]}"
    with open(stamp, "w") as f:
        f.write(h.hexdigest() + "\n")
    return dest


def run_loadgen(binary, urls, bodies, conns, seconds, offset, rate=None,
                sources=SOURCES):
    """One kasir-loadgen run; returns its JSON plus "cpu_s" (its CPU)."""
    argv = [binary, "--bodies", bodies, "--connections", str(conns),
            "--duration", str(seconds), "--offset", str(offset),
            "--sources", str(sources), "--timeout", "15"]
    for u in urls:
        argv += ["--url", u]
    if rate:
        argv += ["--rate", f"{rate:.0f}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"kasir-loadgen failed ({r.returncode}): {r.stderr}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    res["argv"] = " ".join(argv)
    return res


# --------------------------------------------------------------------------
# what the machine did during a phase


def postgres_pids(st):
    """The postmaster and its children (backends, walwriter, ...)."""
    with open(os.path.join(st.pg.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    pids = [pm]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pm:
                        pids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def machine_ticks():
    """(busy, total) clock ticks of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


class Usage(threading.Thread):
    """CPU of named process groups over a phase, sampled every 200 ms so
    that processes which come and go (pgbench's backends) count too: a pid
    seen first during the phase counts from 0.  Also the whole machine's
    busy share of all its cores (other people's work included)."""

    def __init__(self, kb, groups):
        super().__init__(daemon=True)
        self.kb, self.groups = kb, groups  # name -> callable returning pids
        self.first = {n: {} for n in groups}  # name -> pid -> CPU s
        self.last = {n: {} for n in groups}
        self.done = threading.Event()
        self._sample(initial=True)
        self.t0 = time.monotonic()
        self.m0 = machine_ticks()
        self.start()

    def _sample(self, initial=False):
        for n, f in self.groups.items():
            for pid in f():
                v = self.kb.cpu_seconds(pid)
                if v != v:  # gone
                    continue
                self.first[n].setdefault(pid, v if initial else 0.0)
                self.last[n][pid] = v

    def run(self):
        while not self.done.wait(0.2):
            self._sample()

    def stop(self):
        """({name: % of one core}, {name: CPU seconds}) of the phase."""
        self.done.set()
        self.join(5)
        self._sample()
        wall = time.monotonic() - self.t0
        m1 = machine_ticks()
        secs = {n: sum(self.last[n][p] - self.first[n][p] for p in self.last[n])
                for n in self.groups}
        pct = {n: 100.0 * v / wall for n, v in secs.items()}
        busy = (m1[0] - self.m0[0]) / max(m1[1] - self.m0[1], 1)
        pct[f"machine ({os.cpu_count()} cores)"] = 100.0 * busy
        return pct, secs


class WaitSampler(threading.Thread):
    """Samples pg_stat_activity every 50 ms: what the sessions of `user`
    are doing (running, idle = waiting for the daemon, or which wait
    event), per application_name (several committers count as one)."""

    def __init__(self, st, user):
        super().__init__(daemon=True)
        self.st, self.user = st, user
        self.counts = {}  # app -> {what: samples}
        self.done = threading.Event()

    def run(self):
        import re
        conn = self.st.pg.connect()
        try:
            with conn.cursor() as cur:
                while not self.done.is_set():
                    cur.execute(
                        "SELECT application_name, state, wait_event_type,"
                        " wait_event FROM pg_stat_activity WHERE usename = %s"
                        " AND pid <> pg_backend_pid()", (self.user,))
                    for app, state, wtype, wev in cur.fetchall():
                        app = re.sub(r"[-#_]?\d+$", "", app or "?")
                        if state == "idle":
                            what = "idle"
                        elif wev and wtype == "Client":
                            what = f"{state} (waiting for the daemon)"
                        elif wev:
                            what = f"{wtype}/{wev}"
                        else:
                            what = "on CPU"
                        c = self.counts.setdefault(app, {})
                        c[what] = c.get(what, 0) + 1
                    self.done.wait(0.05)
        finally:
            conn.close()

    def summary(self):
        """'app: what N%, ...; app2: ...' for the sessions not always idle."""
        self.done.set()
        self.join(5)
        parts = []
        for app, c in sorted(self.counts.items()):
            total = sum(c.values())
            if c.get("idle", 0) == total:
                continue
            top = sorted(c.items(), key=lambda kv: -kv[1])[:5]
            parts.append(f"`{app}` " + ", ".join(
                f"{k} {100.0 * v / total:.0f}%" for k, v in top))
        return "; ".join(parts) or "(no samples)"


# --------------------------------------------------------------------------
# the stack pieces


def ingest_pids(st, names):
    return lambda: [p for p in (st.pid(n) for n in names if st.running(n)) if p]


def sequencer_counts(st, names):
    """{process: (passes, rows)} of each kasir-ingest's sequencer so far
    (`kasir_stream_sequencer_passes_total`, `..._sequenced_total`)."""
    import kasirtest
    out = {}
    for n in names:
        port = st.port("INGEST_ADMIN" if n == "ingest" else "INGEST_ADMIN_2")
        r = kasirtest.http("GET", f"http://127.0.0.1:{port}/metrics")
        m = kasirtest.parse_metrics(r.raw.decode()) if r.status == 200 else {}
        out[n] = tuple(sum(v for (k, _), v in m.items() if k == name)
                       for name in ("kasir_stream_sequencer_passes_total",
                                    "kasir_stream_sequenced_total"))
    return out


def sequencer_text(seq, secs):
    """One phase's sequencer passes, as words for the page."""
    return "; ".join(f"{n}: {p:.0f} passes ({p / max(secs, 1e-3):.0f}/s),"
                     f" {r / max(p, 1):.1f} rows each"
                     for n, (p, r) in seq.items())


def committers_key(st):
    """The ingest config placeholder for its number of committers, when
    this build's template has one (the parallel-writer backbone)."""
    import kasirtest
    with open(st.template_path("ingest")) as f:
        names = kasirtest.template_names(f.read())
    keys = sorted(n for n in names if "COMMITTER" in n)
    return keys[0] if keys else None


def start_second_ingest(st):
    """A second kasir-ingest on the same database: the first one's
    rendered config with its own ports and admin socket.  Returns its
    notification URL."""
    with open(st.config_path("ingest")) as f:
        text = f.read()
    for name in ("INGEST_HTTP", "INGEST_ADMIN", "INGEST_PUB", "INGEST_REPLAY"):
        old = f"127.0.0.1:{st.port(name)}"
        if old not in text:
            raise RuntimeError(f"second ingest: {old} ({name}) not in the config")
        text = text.replace(old, f"127.0.0.1:{st.port(name + '_2')}")
    text = text.replace("/ingest.sock", "/ingest2.sock")
    path = os.path.join(st.etc_dir, "ingest2.yaml")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o640)
    st.spawn("ingest2", [st.binary("ingest"), "--config", path],
             ready=[("http", f"http://127.0.0.1:{st.port('INGEST_ADMIN_2')}/readyz"),
                    ("tcp", st.port("INGEST_HTTP_2"))])
    return st.url("ingest").replace(f":{st.port('INGEST_HTTP')}/",
                                    f":{st.port('INGEST_HTTP_2')}/")


def start_peer(st, peer_dir, conns, path, norders):
    """Its role and tables (norders orders seeded), then node server.js on
    a free port.  Returns its notification URL."""
    import secrets as _secrets
    pw = _secrets.token_hex(16)
    with st.pg.connect() as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE ROLE bench_peer LOGIN PASSWORD %s", (pw,))
            cur.execute(PEER_SQL, {"n": norders})
    port = st.port("BENCH_PEER")
    env = {"PEER_LISTEN": f"127.0.0.1:{port}", "PEER_PATH": path,
           "PEER_KEY_FILE": st.secret_path("midtrans-server-key"),
           "PEER_POOL": str(conns), "PGHOST": "127.0.0.1",
           "PGPORT": str(st.pg.port), "PGUSER": "bench_peer",
           "PGPASSWORD": pw, "PGDATABASE": "kasir",
           "NODE_ENV": "production"}
    st.spawn("peer", [shutil.which("node"), os.path.join(peer_dir, "server.js")],
             ready=("tcp", port), env=env, strict=False)
    return f"http://127.0.0.1:{port}{path}"


def background_work(st):
    """Checkpoints finished (timed or requested) and autovacuums (vacuum or
    analyze) of ingest.payment_event so far: PostgreSQL's own work that
    competes with the requests of a phase."""
    r = st.sql("SELECT (SELECT checkpoints_timed + checkpoints_req FROM"
               " pg_stat_bgwriter), (SELECT autovacuum_count + autoanalyze_count"
               " FROM pg_stat_user_tables WHERE relid ="
               " 'ingest.payment_event'::regclass)")[0]
    return [float(v or 0) for v in r]


def disk_written_mb():
    """MB written by the machine's whole disks so far (/proc/diskstats,
    sectors of 512 bytes; partitions and virtual devices left out)."""
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            p = line.split()
            name = p[2]
            if os.path.exists(f"/sys/block/{name}/device"):
                total += int(p[9])
    return total * 512 / 1e6


def stored(st):
    return st.sql("SELECT count(*) FROM ingest.payment_event")[0][0]


def run_pgbench(kb, st, clients, seconds, norders, rawlen, workdir):
    script = os.path.join(workdir, "plain_insert.sql")
    with open(script, "w") as f:
        f.write(PGBENCH_SCRIPT.format(norders=norders, rawlen=rawlen))
    argv = [kb.PGBENCH, "-n", "-M", "prepared", "-h", st.pg.sockdir,
            "-p", str(st.pg.port), "-U", "postgres", "-c", str(clients),
            "-j", "2", "-T", str(seconds), "-f", script, "kasir"]
    r = subprocess.run(argv, capture_output=True, text=True,
                       timeout=seconds + 120, cwd=workdir)
    if r.returncode != 0:
        raise RuntimeError(f"pgbench failed: {r.stdout}\n{r.stderr}")
    import re
    m = re.search(r"tps = ([0-9.]+) \(without initial", r.stdout)
    lat = re.search(r"latency average = ([0-9.]+) ms", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    done = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    return {"tps": float(m.group(1)) if m else float("nan"),
            "lat_ms": float(lat.group(1)) if lat else float("nan"),
            "failed": int(failed.group(1)) if failed else 0,
            "n": int(done.group(1)) if done else 0,
            "cmd": " ".join(argv[:-2] + ["plain_insert.sql", "kasir"]).replace(
                st.pg.sockdir, "SOCKDIR").replace(f"-p {st.pg.port} ", "-p PORT ")}


# --------------------------------------------------------------------------
# the benchmark


# the consumer on the publish socket during ingest's phases (start_sink)
SINK = "consumer (sink)"
# the idle kasir-ingest beside pgbench's phases (pgbench_phase)
IDLE_SESSIONS = "of which kasir-ingest's sessions (idle)"
IDLE_INGEST = "kasir-ingest (idle)"
IDLE_LIMIT_PCT = 5.0


def cpu_per_request(server_s, client_s, n):
    """(server, client) CPU microseconds per answered request."""
    n = max(n, 1)
    return (1e6 * sum(server_s.values()) / n, 1e6 * client_s / n)


def mean_pair(pairs):
    return (sum(p[0] for p in pairs) / len(pairs),
            sum(p[1] for p in pairs) / len(pairs))


def fmt_cpu_us(c):
    return f"{c[0]:.0f} + {c[1]:.0f}"


def phase_row(label, res, la, cpu, cpu_us):
    lat = res["latency_ms"]
    errs = sum(res["errors"].values())
    order = sorted(cpu, key=lambda k: k.startswith("machine"))
    cpu_txt = ", ".join(f"{k} {cpu[k]:.0f}%" for k in order)
    return (f"| {label} | {res['connections']} | {res['rate']:.0f} | "
            f"{res['answered']} | {res['non_2xx'] + errs + res['unsent']} | "
            f"{lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | "
            f"{lat['p999']:.1f} | {lat['max']:.1f} | {cpu_txt} | "
            f"{fmt_cpu_us(cpu_us)} | {la} |")


def bad_answers(res):
    """Why a run's answers are not all 2xx ('' when they are)."""
    parts = [f"{k} {v}" for k, v in res["status"].items() if k != "2xx" and v]
    parts += [f"{k} errors {v}" for k, v in res["errors"].items() if v]
    if res["unsent"]:
        parts.append(f"unsent {res['unsent']}")
    return ", ".join(parts)


def run(args, kb):
    conns = args.clients or 32
    secs = args.seconds
    loadgen = loadgen_binary(args.build_dir)
    peer_dir = None if args.no_peer else peer_install(args.build_dir)
    overrides = {"INGEST_LOG_LEVEL": "warning", "LOG_LEVEL": "warning"}
    # base=False: ingest's rate limits stay at their defaults
    st = kb.make_stack(args, "ingest", overrides, base=False)
    ckey = committers_key(st)
    if ckey and args.committers:
        st.overrides[ckey] = str(args.committers)
    uptime0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows, notes, checks = [], [], []
    offset = 0
    with st:
        st.start("ingest")
        url = st.url("ingest")
        path = "/" + url.split("/", 3)[3]
        key = st.secret("midtrans-server-key")
        work = os.path.join(st.dir, "kbench-a")
        os.makedirs(work, exist_ok=True)
        bodies = os.path.join(work, "bodies.jsonl")
        t = time.monotonic()
        with open(bodies, "w") as f:
            for i in range(1, args.pool + 1):
                f.write(kb.notification(f"ing-{i:07d}", key) + "\n")
        print(f"[kbench] {args.pool} signed notifications in "
              f"{time.monotonic() - t:.1f} s", flush=True)
        with open(bodies) as f:
            rawlen = len(f.readline()) - 1
        with st.pg.connect() as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(PLAIN_TABLE_SQL)
        r = st.notify(kb.notification("ing-0000000", key),
                      headers={"Content-Type": "application/json",
                               "X-Forwarded-For": "10.255.255.254"})
        if r.status != 200:
            raise RuntimeError(f"ingest refused a signed notification: {r}")
        sink = None if args.no_consumer else start_sink(args, st)

        def ingest_phase(label, urls, names, rate=None, waits=False):
            nonlocal offset
            kb.settle(st)
            bg0 = background_work(st)
            n0 = stored(st)
            mb0 = disk_written_mb()
            groups = {n: ingest_pids(st, [n]) for n in names}
            groups["postgres"] = lambda: postgres_pids(st)
            groups[SINK] = lambda: [sink.pid] if sink else []
            la = kb.loadavg()
            seq0 = sequencer_counts(st, names)
            use = Usage(kb, groups)
            sampler = WaitSampler(st, "kasir_ingest") if waits else None
            if sampler:
                sampler.start()
            prof = {}
            if waits and args.profile:
                pid = st.pid(names[0])
                pth = threading.Thread(target=lambda: prof.update(text=kb.perf_profile(
                    pid, max(1, secs - 2), os.path.join(work, "ingest-perf"))))
                pth.start()
            if waits and args.statements:
                st.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                st.sql("SELECT pg_stat_statements_reset()")
            res = run_loadgen(loadgen, urls, bodies, conns, secs, offset, rate)
            if waits and args.statements:
                print(f"[kbench] {label}: PostgreSQL statements"
                      " (pg_stat_statements):\n" + kb.drain_statements(st, 12),
                      flush=True)
            if waits and args.profile:
                pth.join()
                res["perf"] = prof.get("text", "")
            cpu, cpu_s = use.stop()
            seq1 = sequencer_counts(st, names)
            res["seq"] = {n: tuple(b - a for a, b in zip(seq0[n], seq1[n]))
                          for n in names}
            cpu["loadgen"] = 100.0 * res["cpu_s"] / max(res["elapsed_s"], 1e-3)
            if not sink:
                del cpu[SINK]
            del cpu_s[SINK]  # the consumer's work is not ingest's
            res["cpu_us"] = cpu_per_request(cpu_s, res["cpu_s"], res["answered"])
            offset += res["sent"]
            res["disk_mb"] = disk_written_mb() - mb0
            res["background"] = [b - a for a, b in zip(bg0, background_work(st))]
            n1 = stored(st)
            res["stored"] = n1 - n0
            if sampler:
                res["waits"] = sampler.summary()
            rows.append(phase_row(label, res, la, cpu, res["cpu_us"]))
            bad = bad_answers(res)
            if bad:
                notes.append(f"{label}: answers not 2xx: {bad}")
            if res["stored"] != res["status"]["2xx"]:
                checks.append(f"{label}: {res['status']['2xx']} answered 2xx, "
                              f"{res['stored']} rows stored")
            print(rows[-1], flush=True)
            return res

        def pgbench_phase(label):
            # kasir-ingest keeps running beside the baseline, idle: what
            # it and its sessions use meanwhile is shown and left out of
            # pgbench's server CPU.  An idle probe that scanned the whole
            # table every 50 ms once made the baseline 30-40% slower.
            kb.settle(st)
            la = kb.loadavg()
            sessions = [r[0] for r in st.sql(
                "SELECT pid FROM pg_stat_activity WHERE usename = 'kasir_ingest'")]
            use = Usage(kb, {"postgres": lambda: postgres_pids(st),
                             IDLE_SESSIONS: lambda: sessions,
                             IDLE_INGEST: ingest_pids(st, ["ingest"])})
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            pgb = run_pgbench(kb, st, conns, secs, args.pool, rawlen, work)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu, cpu_s = use.stop()
            client_s = ((after.ru_utime + after.ru_stime)
                        - (before.ru_utime + before.ru_stime))
            cpu["pgbench"] = 100.0 * client_s / secs
            pgb["idle_pct"] = cpu[IDLE_SESSIONS] + cpu[IDLE_INGEST]
            pgb["cpu_us"] = cpu_per_request(
                {"postgres": cpu_s["postgres"] - cpu_s[IDLE_SESSIONS]},
                client_s, pgb["n"])
            order = sorted(cpu, key=lambda k: k.startswith("machine"))
            cpu_txt = ", ".join(f"{k} {cpu[k]:.0f}%" for k in order)
            rows.append(f"| {label} | {conns} | {pgb['tps']:.0f} | "
                        f"{pgb['n']} | {pgb['failed']} | "
                        f"{pgb['lat_ms']:.1f} (mean) | | | | | {cpu_txt} | "
                        f"{fmt_cpu_us(pgb['cpu_us'])} | {la} |")
            print(rows[-1], flush=True)
            return pgb

        # 1 + 2. ingest's maximum (closed loop, after a warm-up) and the
        # physical limit, alternated for --rounds rounds so that a change
        # in other people's load hits both alike
        w = run_loadgen(loadgen, [url], bodies, conns, WARMUP_S, offset)
        offset += w["sent"]
        mxs, pgbs = [], []
        for rnd in range(1, args.rounds + 1):
            tag = f", round {rnd}" if args.rounds > 1 else ""
            mxs.append(ingest_phase(f"kasir-ingest, closed loop (max){tag}",
                                    [url], ["ingest"], waits=rnd == 1))
            pgbs.append(pgbench_phase(
                "pgbench: 1 durable INSERT of a notification per transaction,"
                f" plain table{tag}"))
        mx = dict(mxs[0])
        mx["rate"] = sum(m["rate"] for m in mxs) / len(mxs)
        mx["cpu_us"] = mean_pair([m["cpu_us"] for m in mxs])
        mx["round_ratios"] = [m["rate"] / p["tps"] for m, p in zip(mxs, pgbs)]
        pgb = dict(pgbs[0])
        pgb["tps"] = sum(p["tps"] for p in pgbs) / len(pgbs)
        pgb["cpu_us"] = mean_pair([p["cpu_us"] for p in pgbs])
        pgb["idle_pcts"] = [p["idle_pct"] for p in pgbs]

        # 3. the naive peer
        peer = None
        if isinstance(peer_dir, str) and peer_dir.startswith("not measured"):
            notes.append(f"naive peer {peer_dir}")
        elif peer_dir:
            peer_url = start_peer(st, peer_dir, conns, path, args.pool)
            w = run_loadgen(loadgen, [peer_url], bodies, conns, WARMUP_S, offset)
            offset += w["sent"]
            la = kb.loadavg()
            use = Usage(kb, {"node": lambda: [st.pid("peer")],
                             "postgres": lambda: postgres_pids(st)})
            peer = run_loadgen(loadgen, [peer_url], bodies, conns, secs, offset)
            cpu, cpu_s = use.stop()
            cpu["loadgen"] = 100.0 * peer["cpu_s"] / max(peer["elapsed_s"], 1e-3)
            peer["cpu_us"] = cpu_per_request(cpu_s, peer["cpu_s"], peer["answered"])
            offset += peer["sent"]
            rows.append(phase_row("naive peer (Express + pg), closed loop (max)",
                                  peer, la, cpu, peer["cpu_us"]))
            bad = bad_answers(peer)
            if bad:
                notes.append(f"naive peer: answers not 2xx: {bad}")
            print(rows[-1], flush=True)
            st.stop("peer")

        # 4. ingest open loop at half its maximum
        half_rate = args.open_rate or max(1.0, mx["rate"] / 2)
        half = ingest_phase(f"kasir-ingest, open loop at {half_rate:.0f}/s "
                            + ("(--open-rate)" if args.open_rate else "(half the max)"),
                            [url], ["ingest"], rate=half_rate)

        # 5. two ingest processes, one database
        pair = None
        if not args.no_pair:
            url2 = start_second_ingest(st)
            pair = ingest_phase("two kasir-ingest processes, connections split,"
                                " closed loop", [url, url2],
                                ["ingest", "ingest2"])
            st.stop("ingest2")
        consumer = stop_sink(sink, st)
        if offset > args.pool:
            # not an error (a repeated notification is stored as evidence
            # like any other), but the bodies were meant to be distinct
            print(f"[kbench] {offset} requests from a pool of {args.pool}"
                  " bodies: some order ids were sent twice (raise --pool)",
                  flush=True)
    uptime1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    write_section(args, kb, conns, secs, rows, notes, checks, mx, pgb, peer,
                  half, pair, uptime0, uptime1, ckey, consumer)


def start_sink(args, st):
    """kasir-stream-sink on kasir-ingest's publish socket (the ingest
    stream is push/pull, as kasir-order takes it), once the publisher
    counts it as a consumer."""
    sink = subprocess.Popen([os.path.join(args.build_dir, "bin", "kasir-stream-sink"),
                             "--url", f"tcp://127.0.0.1:{st.port('INGEST_PUB')}"],
                            stdout=subprocess.PIPE, text=True)
    atexit.register(sink.kill)  # whatever happens to the run
    st.wait_until(lambda: st.metric("ingest", "kasir_stream_consumers") >= 1,
                  timeout=15, what="the sink connected to kasir-ingest's publisher")
    return sink


def stop_sink(sink, st):
    """What the consumer took and what the publisher did for it, as a
    sentence for the page."""
    if sink is None:
        return ("none (`--no-consumer`): the publisher read nothing"
                f" ({st.metric('ingest', 'kasir_stream_unsent_total'):.0f}"
                " messages counted as unsent)")
    sink.terminate()
    out, _ = sink.communicate(timeout=10)
    got = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    sent = st.metric("ingest", "kasir_stream_sent_total")
    failed = st.metric("ingest", "kasir_stream_send_failed_total")
    unsent = st.metric("ingest", "kasir_stream_unsent_total")
    return (f"`kasir-stream-sink` on the first process's publish socket took"
            f" {got.get('frames', 0)} frames live (heartbeats included); over"
            f" all phases the publisher read and sent {sent:.0f} messages,"
            f" {failed:.0f} sends were refused, and {unsent:.0f} messages it"
            " never read: while the sink's pull socket still held a frame"
            " (it holds one, as kasir-order's does) and more than a few were"
            " waiting, a pass skipped to the head (docs/backbone.md).  A real"
            " consumer replays those at its own pace, and that reading is"
            " measured in (c), not here; the sink does not replay.  The"
            " sink's own CPU is shown and not counted as ingest's")


def verdict(ok, missed):
    return "met" if ok else f"MISSED: {missed}"


def write_section(args, kb, conns, secs, rows, notes, checks, mx, pgb, peer,
                  half, pair, uptime0, uptime1, ckey, consumer):
    commit = subprocess.run(["git", "-C", kb.SRC, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", kb.SRC, "status", "--porcelain",
                            "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    r_pg = mx["rate"] / pgb["tps"] if pgb["tps"] else float("nan")
    r_peer = mx["rate"] / peer["rate"] if peer and peer["rate"] else float("nan")
    p99 = half["latency_ms"]["p99"]
    lines = [
        "| run | connections | achieved /s | answered | not 2xx / errors | "
        "p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU (% of one core) | "
        "CPU us per request (server + client) | load avg before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + rows
    table = "\n".join(lines)
    print(table)
    rounds = ""
    rr = mx["round_ratios"]
    if len(rr) > 1:
        rounds = (" (mean rates of the rounds; per round "
                  + ", ".join(f"{x:.2f}x" for x in rr))
        if len(rr) > 2:
            import statistics
            rounds += (f"; median {statistics.median(rr):.2f}x, standard"
                       f" deviation {statistics.stdev(rr):.2f},"
                       f" {sum(x >= 1.0 for x in rr)} of {len(rr)} rounds"
                       " at or above 1.0x")
        rounds += ")"
    res = [
        f"- ingest / pgbench plain insert = **{r_pg:.2f}x**{rounds} (target"
        " >= 1.0x: " + verdict(r_pg >= 1.0, f"{(1 - r_pg) * 100:.0f}% short, "
                               f"{pgb['tps'] - mx['rate']:.0f}/s below") + ").",
    ]
    if peer:
        res.append(f"- ingest / naive peer = **{r_peer:.2f}x** (target >= 3x: "
                   + verdict(r_peer >= 3.0, f"{r_peer / 3.0 * 100:.0f}% of it")
                   + ").")
    else:
        res.append("- ingest / naive peer: not measured (see the notes).")
    res.append(f"- p99 at half the maximum, open loop: **{p99:.1f} ms** "
               f"(p50 {half['latency_ms']['p50']:.1f}, p99.9 "
               f"{half['latency_ms']['p999']:.1f}; target p99 <= 20 ms: "
               + verdict(p99 <= 20.0, f"{p99 / 20.0:.1f}x the limit") + ").")
    bg = half.get("background")
    if bg:
        res.append(f"  During that phase PostgreSQL finished {bg[0]:.0f}"
                   f" checkpoint(s), and autovacuum finished {bg[1]:.0f} pass(es)"
                   " over ingest.payment_event (`pg_stat_bgwriter`,"
                   " `pg_stat_user_tables`; both are counted when they end);"
                   f" the disk wrote {half.get('disk_mb', 0):.0f} MB (each phase"
                   " starts after a CHECKPOINT and a sync, so no phase inherits"
                   " the writeback of the one before).")
    win = half.get("windows")
    if win and win.get("with_answers"):
        worst = "; ".join(f"{w[0]:.1f} s: {w[2]} of {w[1]}, max {w[3]:.0f} ms"
                          for w in win["worst"][:3])
        res.append(f"  Where the slow answers were (over {win['slow_over_ms']} ms,"
                   f" by intended send time in {win['ms']} ms windows):"
                   f" {win['slow']} answers in {win['with_slow']} of"
                   f" {win['with_answers']} windows; the worst windows: {worst}."
                   "  A few windows holding most of them is a stall that every"
                   " request in it waited through (the machine, or one loop);"
                   " many windows with a few each is queueing.")
    cpu_line = (f"- CPU per request (server side: daemon or node + PostgreSQL;"
                f" client: generator or pgbench), microseconds: ingest "
                f"{fmt_cpu_us(mx['cpu_us'])}, pgbench {fmt_cpu_us(pgb['cpu_us'])}")
    if peer:
        cpu_line += f", peer {fmt_cpu_us(peer['cpu_us'])}"
    cpu_line += (f".  Server CPU of ingest / of the plain insert = "
                 f"{mx['cpu_us'][0] / max(pgb['cpu_us'][0], 1e-9):.2f}x: on 2 busy"
                 " cores the rates follow the CPU each request costs.")
    res.append(cpu_line)
    res.append(f"- Consumer: {consumer}.")
    idle = max(pgb["idle_pcts"])
    res.append("- Beside pgbench's phases the idle kasir-ingest and its sessions"
               " used " + ", ".join(f"{x:.1f}%" for x in pgb["idle_pcts"])
               + " of one core (left out of pgbench's server CPU; above"
               f" {IDLE_LIMIT_PCT:.0f}% the baseline was disturbed: "
               + ("no" if idle <= IDLE_LIMIT_PCT else "**YES**") + ").")
    if pair:
        res.append(f"- Two ingest processes: **{pair['rate']:.0f}/s** together vs "
                   f"{mx['rate']:.0f}/s for one ({pair['rate'] / mx['rate']:.2f}x)."
                   "  Sequencer passes of the ingest stream (each one"
                   " transaction with a durable COMMIT; whichever process"
                   " holds the stream's lock numbers both processes' rows):"
                   f" one process, first round: {sequencer_text(mx['seq'], secs)};"
                   f" two processes: {sequencer_text(pair['seq'], secs)}.")
    res.append(f"- Where ingest's database sessions were during its max run "
               f"(pg_stat_activity every 50 ms): {mx.get('waits', '?')}.")
    if mx.get("perf"):
        res.append("- `perf` of kasir-ingest during its max run (self time, "
                   "`--profile`):\n\n```\n" + mx["perf"] + "\n```\n")
    if ckey:
        res.append(f"- Ingest committers: `{ckey}` = "
                   f"{args.committers or 'the template default'}.")
    else:
        res.append("- This ingest has no setting for several committers "
                   "(one committer thread)"
                   + (f"; `--committers {args.committers}` was ignored."
                      if args.committers else "."))
    all_ok = not notes and not checks
    md = kb.header(args) + f"""- Commit: `{commit}`{' (with uncommitted changes)' if dirty else ''}
- `uptime` before: `{uptime0}`; after: `{uptime1}`
- {secs} s per phase (+ {WARMUP_S} s closed-loop warm-up before ingest's and the
  peer's maximum; ingest's maximum and pgbench alternate for
  {args.rounds} round(s)), {conns} connections or clients everywhere, one
  PostgreSQL cluster for all phases.  Load from `bench/loadgen`
  (`kasir-loadgen`), one request per signed settlement notification
  (distinct order ids, {args.pool} pre-generated), each with
  X-Forwarded-For naming one of {SOURCES} client addresses so that
  ingest's per-source limits stay at their defaults.

{table}

{chr(10).join(res)}
- Every answer 2xx and every 2xx stored: {"yes" if all_ok else "NO: " + "; ".join(notes + checks)}.

What each line contains:
- **kasir-ingest**: HTTP parse, signature check (SHA-512), per-source rate
  limit, group commit of `ingest.payment_event` rows, 200 after COMMIT
  (`services/ingest/store.c`); the row is the ingest stream's message,
  which the sequencer numbers (a range per pass, `stream_tick`) and the
  publisher renders, signs and sends to a connected consumer
  (docs/backbone.md, "A table as the source").  kasir-order is not
  running; in its place `kasir-stream-sink` (`bench/sink/`) takes the
  frames from the publish socket and drops them, so the publisher works
  as it does for kasir-order: it reads, renders and sends what the
  consumer's socket takes, and while that socket still holds a frame and
  more than a few messages wait it skips ahead unread (see "Consumer"
  above: at the maximum rate it reads few; kasir-order would replay the
  rest at its own pace, which (c) measures).  The sink's CPU is not
  counted as ingest's.  With
  `--no-consumer` the publisher reads nothing (a publisher with no
  consumer connected skips the reading since f2756c3; before it, it read
  and rendered every message for nobody).
- **pgbench** (the physical limit): `{pgb['cmd']}` running one
  `INSERT INTO bench.payment_event ... VALUES (...)` per transaction
  (`PGBENCH_SCRIPT` in `bench/kbench_ingest.py`): a copy of
  `ingest.payment_event` (same columns, checks, primary key and indexes,
  no trigger, no stream table, no `stream_head`, and without the `txid`
  column, its index and its CHECK, which only the stream needs), a row of the same size
  as a notification.  Storing a notification durably before answering
  takes at least one row insert and one WAL flush it waits for; with
  {conns} clients each waiting for its own COMMIT, this is what this
  PostgreSQL on this disk does with nothing else in the way.  A receiver
  that stores every notification before answering beats it only by
  putting several notifications into one COMMIT.
- **naive peer** (`bench/peers/express-pg/server.js`): one Node process,
  Express, `express.json()`, the same signature check, then BEGIN, INSERT
  of the notification (jsonb), UPDATE of its (seeded) order row, COMMIT,
  200; a pg pool of {conns}.
- **open loop**: `kasir-loadgen --rate R` sends request i at t0 + i/R over
  the {conns} connections whatever happened before; latency counts from
  that intended time (a request queued behind a slow answer carries the
  wait), so the percentiles have no coordinated omission.
- **two processes**: a second kasir-ingest with the same configuration
  but its own ports, on the same database; the connections alternate
  between the two (as nginx round-robin would).
- The generator, pgbench, node, the daemons and PostgreSQL share the same
  2 cores (and, on a shared machine, other people's work: the `machine`
  figure).  CPU is sampled from /proc every 200 ms per process, PostgreSQL
  as the postmaster and all its children (a backend that starts during the
  phase counts from zero); "CPU us per request" divides the phase's CPU by
  its answered requests.  It moves less with other people's load than the
  rates do (it still rises on a crowded machine: caches, lock waits), so
  compare it within one run.
"""
    kb.update_doc("a", "(a) Ingest vs the physical limit and a naive peer", md)
