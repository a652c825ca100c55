"""kasirtest - the integration harness of kasir (also used by deploy/dev/up).

Standard library + psycopg2 only; run with Debian's /usr/bin/python3.

Typical integration test (registered with kasir_py_test(), which sets
KASIR_BUILD_DIR, KASIR_SOURCE_DIR, KASIR_TEST_DATA_DIR and PYTHONPATH)::

    import kasirtest

    with kasirtest.Stack.for_test(overrides={"ORDER_EXPIRY": "15m"}) as st:
        st.start_all(services=["ingest", "order"])     # + the three fakes
        r = st.api("POST", "/v1/orders", {"course_id": "c1", "customer": {...}})
        assert r.status == 201, r
        oid = r.body["order_id"]
        st.fake("POST", f"/_fake/orders/{oid}/pay")
        st.wait_until(lambda: st.sql("SELECT status FROM orders.orders "
                                     "WHERE order_id = %s", (oid,)) == [("PAID",)],
                      timeout=20, what="order PAID")

Run directories live in $KASIR_BUILD_DIR/test-runs/<name>-<pid> (not /tmp,
so they survive for inspection).  On success the run directory is removed; on failure (any exception, or
exit status other than 0/77) it is kept, every process is stopped and the
tail of every log is printed.  kasirtest.skip(msg) exits 77 (ctest: skipped)
-- use it only when something outside the repository is missing.

Module level
------------
PG_BIN                       /usr/lib/postgresql/15/bin
SERVICES                     {svc: schema} incl. "ctl" -> "ops"
DAEMONS                      ("ingest", "order", "notifier", "reconciler")
FAKES                        ("fake-midtrans", "smtp-sink", "whatsapp-fake")
db_roles()                   the ten role names (runtime + owner per service)
source_dir(), build_dir()    from $KASIR_SOURCE_DIR / $KASIR_BUILD_DIR
skip(msg)                    print msg, exit 77
http(method, url, body=None, headers=None, token=None, timeout=10)
                             -> Response(status, headers, body, raw); never
                             raises on 4xx/5xx, never follows redirects.
                             body: dict/list is sent as JSON (with
                             Content-Type: application/json), bytes/str raw
                             (pass the Content-Type in headers: urllib
                             otherwise sends x-www-form-urlencoded).
                             Response.body is the parsed JSON when the answer
                             parses as JSON, else the text.
wait_until(pred, timeout=30, what="...", interval=0.1)
                             polls pred() until truthy and returns its value;
                             raises WaitTimeout naming `what` and the last value.
wait_sequenced(sql, schema, timeout=20)
                             waits until <schema>.stream_pending is empty: every
                             message that producer committed has its seq
                             (then read stream_out, or <schema>.stream_messages
                             for a schema with a source stream)
stream_head_sql(schema, stream)
                             SQL expression: the stream's head once what was
                             committed is sequenced (stream_head + pending)
test_template_dir()          $KASIR_BUILD_DIR/test-runs/.pg-template: the
                             initdb'd data directory every test cluster of
                             this build tree is copied from
free_port(avoid=())          a free TCP port on 127.0.0.1 outside the
                             ephemeral range.
render_template(text, values, origin="<text>", overrides=None, port=None)
                             the placeholder engine (see below).
probe_ok(probes)             ("http", url) / ("tcp", port) or a list: all pass
parse_metrics(text)          Prometheus text -> {(name, frozenset(labels)): value}

PgCluster(dir, port=None, secrets_dir=None, durable=True, template=None)
-------------------------------------------------------------------------
A throwaway (or, for the dev stack, persistent) PostgreSQL 15 cluster under
dir: dir/data, dir/postgresql.log, unix socket in dir/sock (or a short /tmp
dir when the path would be too long for sun_path), state in dir/cluster.json
(port and socket dir, so a second PgCluster(dir) reuses them).  Listens on
127.0.0.1 only.  Auth: trust for the superuser "postgres" on the unix socket
(the socket dir is mode 0700: only the cluster's OS user and root reach it),
scram-sha-256 for every role over TCP.  As root, initdb/postgres run as the
system user "kasirpg" (created with useradd if missing) through runuser; as a
normal user, as that user.
$KASIRTEST_PG_STATEMENTS set (bench/kbench.py --statements): the cluster
loads pg_stat_statements (shared_preload_libraries).
durable=False writes fsync = off (tests whose subject is not durability:
a PostgreSQL crash -- pg_ctl stop -m immediate, SIGKILL -- loses nothing
either way, commits still wait for their WAL write; only an OS crash would).
template: a directory where one initdb'd data directory is kept and copied
for every new cluster (created under a lock by the first cluster that needs
it; test_template_dir() is the one per build tree): cp -a takes about 0.2 s,
initdb 2.5-5 s.
  init()                  initdb (or a copy of the template) when dir/data
                          does not exist yet
  start()                 init if needed, (re)write settings, pg_ctl start -w
  stop(mode="fast")       "fast" | "immediate" | "smart"
  restart(mode="fast")
  is_running()            pg_ctl status
  wait_ready(timeout=30)  until the superuser can run SELECT 1
  superuser_dsn(db)       libpq key=value DSN over the unix socket
  superuser_url(db)       the same as a postgresql:// URI
  dsn(role, db="kasir")   TCP DSN with the password from secrets_dir/db-<role>
  connect(role=None, db="kasir")     autocommit psycopg2 connection
  psql(sql, params=None, role=None, db="kasir") -> list of row tuples ([]
                          for statements without a result)
  bootstrap(secrets_dir)  runs deploy/sql/bootstrap.sql with psql as the
                          superuser and sets every role's password from
                          secrets_dir/db-<role> (idempotent)
  secrets_dir             where dsn() reads passwords (set by bootstrap())

Stack(dir, overrides=None, server_key=None, *, log_dir="logs", etc_dir="etc",
      build=None, src=None, strict_exit=True, remove_on_success=False,
      watchdog=False, with_pg=True, private=False, durable=True,
      pg_template=None)
-------------------------------------------------------------------------------
The whole system under dir: secrets/ (0700; files 0600: msg-k1, db-<role>,
midtrans-server-key, api-token, smtp-password, whatsapp-token), etc/<svc>.yaml
(rendered configs), run/ (admin sockets), logs/<name>.log, pg/, mail/,
whatsapp/messages.jsonl, ports.json (port allocation, reused on the next run).
Everything is created lazily and idempotently (existing secrets and ports
are kept), which is what makes `deploy/dev/up` safe to run twice.

Templates: services/<svc>/config.example.yaml with the placeholders of
docs/hacking.md: @VAR@ @SECRETS@ @RUN@ @SRC@ @DB_HOST@ @DB_PORT@
@PORT_<NAME>@ (one port per NAME across all templates) and @NAME=default@
(tunable: overrides["NAME"] or the default).  overrides may also replace a
built-in name.  Any other @NAME@ is an error naming file:line.  A default
cannot contain "@" or a newline.

  Stack.for_test(name=None, overrides=None, server_key=None, durable=False)
                          a Stack in $KASIR_BUILD_DIR/test-runs/<name>-<pid>,
                          cleaned up on success, with a watchdog process that
                          kills everything if the test process dies (even by
                          SIGKILL, e.g. a ctest timeout); its cluster is a
                          copy of test_template_dir() and runs with fsync =
                          off unless the test passes durable=True (the
                          tests whose subject is durability: kill, chaos,
                          outage, backbone)
  with Stack(...) as st   setup on enter, close(success) on exit
  setup()                 dirs, secrets, PostgreSQL started + bootstrapped
  port(name)              "PORT_ORDER_HTTP" or "ORDER_HTTP" -> int
  secret(name), secret_path(name)
  template_path(svc), config_path(svc), render(svc) -> rendered path
  render_text(text, origin)  the engine with this stack's values
  values()                built-in placeholder values
  release_busy_ports()    forget persisted ports something else now holds
  binary(svc)             build_dir/bin/kasir-<svc> (kasirctl: bin/kasirctl)
  available(svc)          binary and template both exist
  config_value(svc, "admin.listen")  from the rendered YAML (simple mappings)
  command(name)           argv that runs a daemon or fake (fake-midtrans
                          gets --retry-schedule from
                          overrides["FAKE_MIDTRANS_RETRY_SCHEDULE"])
  ready_probe(name)       list of probes: daemons [("http", admin /readyz),
                          ("tcp", public port) for ingest/order]; fakes
                          [("tcp", port)]
  start(name, wait=True)  daemon (ingest|order|notifier|reconciler) or fake
  spawn(name, argv, ready=None, env=None, wait=True, strict=True)
                          any other program (test producers/consumers...),
                          tracked, logged and cleaned up like a daemon;
                          ready: ("http", url) | ("tcp", port) | a list
                          of those (all must pass) | None
  start_fakes()           the three fakes
  start_all(services=None) fakes, then the listed daemons (None: every
                          daemon whose binary and template exist; the others
                          are reported as skipped).  Listed but unavailable
                          daemons are an error.
  wait_ready(name, timeout=60)  daemon: GET /readyz on admin.listen == 200;
                          fake: its port accepts connections.  Fails early
                          with the log tail if the process died.
  pid(name), running(name), kill(name, sig=SIGKILL), restart(name),
  stop(name, timeout=10) -> exit status (SIGTERM, SIGKILL after timeout;
                             before the SIGKILL every thread's stack, by gdb
                             when installed, else the threads' names and
                             states, goes to the end of the process's log)
  stop_all()
  run_ctl(*args, check=False) -> CompletedProcess of kasirctl --config ...
  url(what)               "ingest" (notification URL), "api", "fake_midtrans",
                          "smtp_control", "whatsapp", "<svc>_admin"
  api(method, path, body=None, token=<api-token>, headers=None)
  fake(method, path, body=None)        fake Midtrans (control + wire API)
  notify(body, headers=None)           POST a notification to kasir-ingest
  admin(svc, path)        GET on the admin listener
  metrics(svc)            parsed /metrics; metric(svc, name, **labels) sums
  sql(query, params=None, role=None, db="kasir")
  log_path(name), log_text(name), wait_log(name, regex, timeout=30)
  mail_messages()         files in mail/ (sorted), whatsapp_messages() list
  wait_until(...)         as the module function
  dump_logs(lines=60)     prints the tail of every log
  close(success=True)     stops everything; on success removes a test dir

Process hygiene: every child runs in its own session with stdin from
/dev/null and stdout+stderr appended to its log.  At close, a daemon that
died without being told to, that exited non-zero after SIGTERM, or whose log
holds a sanitizer report (AddressSanitizer, LeakSanitizer, UBSan "runtime
error:") fails the test (Stack(strict_exit=False) turns that off).
"""

import atexit
import contextlib
import json
import os
import pwd
import random
import re
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_INITDB_ARGS = ("-U", "postgres", "-E", "UTF8", "--locale=C", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-instructions")
PG_SUPERUSER = "postgres"
PG_OS_USER = "kasirpg"  # who runs PostgreSQL when we are root
PG_OUTSIDE_DIR = "/var/tmp"  # private stacks as root: clusters live here

SERVICES = {
    "ingest": "ingest",
    "order": "orders",
    "notifier": "notify",
    "reconciler": "recon",
    "ctl": "ops",
}
DAEMONS = ("ingest", "order", "notifier", "reconciler")
FAKES = ("fake-midtrans", "smtp-sink", "whatsapp-fake")
SECRET_FILES = ("msg-k1", "midtrans-server-key", "api-token", "smtp-password",
                "whatsapp-token")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")

# sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN" / "/reconciler.sock".
_MAX_SOCKET_DIR = 88
_PORT_RANGE = (20000, 32000)  # below Linux' ephemeral range (32768-60999)


class HarnessError(Exception):
    """A precondition of the harness failed (with a message that says why)."""


class WaitTimeout(AssertionError):
    """wait_until() gave up."""


def source_dir():
    d = os.environ.get("KASIR_SOURCE_DIR")
    if d:
        return os.path.abspath(d)
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def build_dir():
    d = os.environ.get("KASIR_BUILD_DIR")
    if d:
        return os.path.abspath(d)
    return os.path.join(source_dir(), "build")


def skip(msg):
    """Exit 77 (ctest SKIP_RETURN_CODE) with a clear message."""
    print(f"SKIP: {msg}", flush=True)
    sys.exit(77)


def db_roles():
    roles = []
    for svc in SERVICES:
        roles += [f"kasir_{svc}", f"kasir_{svc}_owner"]
    return roles


def _dump_threads(pid, log_path):
    """Where a process that does not stop is stuck: every thread's stack
    (gdb, when installed and allowed to attach), else each thread's name
    and state from /proc, appended to its log (the test prints the log's
    tail).  Best effort: diagnostics, never a test result."""
    out = ""
    gdb = shutil.which("gdb")
    if gdb:
        try:
            r = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx",
                                "-ex", "thread apply all bt 30"],
                               capture_output=True, text=True, timeout=30)
            if "#0" in r.stdout:
                out = r.stdout
            else:
                out = f"gdb could not attach: {r.stderr.strip()[-300:]}\n"
        except (OSError, subprocess.TimeoutExpired) as e:
            out = f"gdb failed: {e}\n"
    if not out.startswith("Thread") and "#0" not in out:
        try:
            for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                out += f"thread {tid} {comm} state {state}\n"
        except OSError as e:
            out += f"/proc/{pid}: {e}\n"
    with contextlib.suppress(OSError):
        with open(log_path, "a") as f:
            f.write(f"=== kasirtest: pid {pid} did not stop; its threads:\n"
                    + out)


def _log(msg):
    print(f"[kasirtest] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# waiting, ports, http


# Streams whose messages are rows of a table of the service (a producer's
# source, docs/backbone.md "A table as the source"): schema -> (stream,
# source function).  Their unsequenced messages are the rows the function's
# <source>_ids still gives, never stream_pending rows; their numbered
# messages are in <schema>.stream_messages (stream_out and the rendered
# stream_tick ranges).
STREAM_SOURCES = {"ingest": ("ingest", "stream_source_ingest")}


def unsequenced_sql(schema, stream_sql=None):
    """SQL counting <schema>'s committed messages that have no seq yet: of
    every stream, or of the stream the SQL expression stream_sql names
    ("'orders'", "h.stream"): its stream_pending rows, its stream_log rows
    committed since its sequencer's last pass (the backbone's log, where
    appends go), plus a source stream's rows committed since that pass."""
    where = f" WHERE stream = {stream_sql}" if stream_sql else ""
    q = f"(SELECT count(*) FROM {schema}.stream_pending{where})"
    streams = (f"(SELECT {stream_sql} AS stream)" if stream_sql else
               f"(SELECT DISTINCT stream FROM {schema}.stream_log)")
    q += (f" + (SELECT count(*) FROM {streams} s, LATERAL {schema}.stream_log_ids("
          f"s.stream, (SELECT snap FROM {schema}.stream_head h2 WHERE h2.stream = s.stream),"
          f" pg_current_snapshot()))")
    src = STREAM_SOURCES.get(schema)
    if src:
        count = (f"(SELECT count(*) FROM {schema}.{src[1]}_ids("
                 f"(SELECT snap FROM {schema}.stream_head WHERE stream = '{src[0]}'),"
                 f" pg_current_snapshot()))")
        q += (f" + CASE WHEN {stream_sql} = '{src[0]}' THEN {count} ELSE 0 END"
              if stream_sql else f" + {count}")
    return q


def wait_sequenced(sql, schema, timeout=20):
    """Waits until every message the producers of <schema> committed has
    its seq (stream_pending empty, and nothing new in a source table).
    The sequencer gives seqs right after each COMMIT (docs/backbone.md),
    so a test that reads messages after seeing a state change waits for
    it first.
    sql: a function (query) -> rows, e.g. Stack.sql."""
    wait_until(lambda: sql(f"SELECT {unsequenced_sql(schema)}")[0][0] == 0,
               timeout, f"{schema}: every committed message sequenced", interval=0.02)


def stream_head_sql(schema, stream):
    """SQL for the head a producer's stream will have once what it has
    committed is sequenced: the head its sequencer stored plus the messages
    still without a seq (each gets the next one)."""
    return (f"((SELECT coalesce(max(seq), 0) FROM {schema}.stream_head WHERE stream = '{stream}')"
            f" + {unsequenced_sql(schema, repr(stream))})")


def wait_until(pred, timeout=30, what="condition", interval=0.1):
    """Polls pred() until it returns something truthy and returns it."""
    deadline = time.monotonic() + timeout
    last = None
    last_exc = None
    while True:
        try:
            last = pred()
            last_exc = None
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"last error: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; {detail}")
        time.sleep(interval)


def _port_free(port, host="127.0.0.1"):
    """True when a listener could bind port now.  SO_REUSEADDR, like the
    servers we start, so connections in TIME_WAIT do not count as busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_PORT_CLAIMS = os.path.join(tempfile.gettempdir(), "kasirtest-ports")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_port(port):
    """Claims port for this process across the tests ctest runs in
    parallel: a port picked now is bound by a daemon only seconds later
    (after PostgreSQL is up), and another test must not pick it meanwhile;
    nor may this process hand it out a second time (a stack once got the
    same port for its /metrics listener and its stream's replay socket,
    and kasir-order failed with "Address already in use").  A claim whose
    process has exited is stale and taken over; one this
    user may not remove (another user's, in the sticky directory) leaves
    the port to the bind test.  Claims are removed at exit
    (_release_ports): a day of root's runs had left 11,968 of the 12,001
    ports claimed, and a normal user then found none."""
    os.makedirs(_PORT_CLAIMS, mode=0o1777, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(_PORT_CLAIMS, 0o1777)
    path = os.path.join(_PORT_CLAIMS, str(port))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and (owner == os.getpid() or _pid_alive(owner)):
                return False  # ours already (given for another name) or live
            try:
                os.unlink(path)  # stale: its test has exited
            except FileNotFoundError:
                pass
            except OSError:
                return True  # not ours to remove: the bind test decides
            continue
        except OSError:
            return True  # no claim directory: fall back to the bind test
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _claimed_ports.add(path)
        return True
    return False


_claimed_ports = set()


@atexit.register
def _release_ports():
    """Removes this process's claims (a claim another process took over
    after a fork is left to it)."""
    for path in _claimed_ports:
        try:
            with open(path) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(path)
        except (OSError, ValueError):
            pass
    _claimed_ports.clear()


def free_port(avoid=()):
    """A TCP port on 127.0.0.1 that can be bound now, outside the ephemeral
    range (so outgoing connections do not grab it before the daemon binds),
    and not claimed by another test process running in parallel."""
    avoid = set(avoid)
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randint(*_PORT_RANGE)
        if port not in avoid and _port_free(port) and _claim_port(port):
            return port
    raise HarnessError("no free TCP port found in %d-%d" % _PORT_RANGE)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # never follow
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class Response:
    """status (int), headers (case-insensitive Message), body (parsed JSON,
    or text), raw (bytes)."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.body = json.loads(raw) if raw else None
        except ValueError:
            self.body = raw.decode("utf-8", "replace")

    @property
    def json(self):
        return self.body

    def __repr__(self):
        text = self.raw[:500].decode("utf-8", "replace")
        return f"<Response {self.status} {text!r}>"


def http(method, url, body=None, headers=None, token=None, timeout=10):
    """One HTTP request; returns a Response whatever the status code.
    Connection errors raise (URLError/OSError)."""
    hdrs = {}
    data = None
    if body is not None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        raw = e.read() if e.fp else b""
        return Response(e.code, e.headers, raw)


def probe_ok(probes):
    """True when every probe passes: ("http", url) answers 200, ("tcp", port)
    accepts a connection on 127.0.0.1.  probes: one tuple or a list."""
    if isinstance(probes, tuple):
        probes = [probes]
    for kind, target in probes:
        if kind == "http":
            try:
                if http("GET", target, timeout=2).status != 200:
                    return False
            except OSError:
                return False
        elif kind == "tcp":
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", target)) != 0:
                    return False
        else:
            raise ValueError(f"unknown probe {kind!r}")
    return True


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(label items)): float}."""
    out = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            continue
        labels = frozenset(label_re.findall(m.group(3) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------
# templates

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)(?:=([^@\n]*))?@")


def render_template(text, values, origin="<text>", overrides=None, port=None):
    """Replaces every placeholder in text.

    values: built-in names (VAR, SECRETS, ...); overrides: tunables (and may
    replace built-ins); port(NAME) returns the port for PORT_<NAME>.  Raises
    HarnessError listing every unknown placeholder as origin:line."""
    overrides = overrides or {}
    errors = []
    out_lines = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        def sub(m, lineno=lineno):
            name, default = m.group(1), m.group(2)
            if name in overrides:
                return str(overrides[name])
            if name in values:
                return str(values[name])
            if name.startswith("PORT_") and port is not None:
                return str(port(name))
            if default is not None:
                return default
            errors.append(f"{origin}:{lineno}: unknown placeholder @{name}@")
            return m.group(0)
        out_lines.append(_PLACEHOLDER.sub(sub, line))
    if errors:
        raise HarnessError("\n".join(errors))
    return "".join(out_lines)


def template_names(text):
    """Names of the placeholders used in text (for checking overrides)."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(text)}


def yaml_lookup(text, dotted):
    """Value of a scalar at a dotted path in a simple block-mapping YAML
    document (what our config templates are); None when absent."""
    want = dotted.split(".")
    stack = []  # (indent, key)
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip() or line.lstrip().startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*:(.*)$", line)
        if not m:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, val = m.group(1), m.group(2).strip()
        path = [k for _, k in stack] + [key]
        if path == want and val:
            if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
                val = val[1:-1]
            return val
        if not val:
            stack.append((indent, key))
    return None


# --------------------------------------------------------------------------
# running things as the PostgreSQL user


def _is_root():
    return os.geteuid() == 0


def _ensure_pg_user():
    """As root: the unprivileged system user PostgreSQL runs as."""
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        PG_OS_USER], check=True)
        return pwd.getpwnam(PG_OS_USER)


def _make_traversable(path):
    """Every ancestor of path must be searchable by the PostgreSQL user."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    while parent and parent != "/":
        st = os.stat(parent)
        if not st.st_mode & 0o001:
            _log(f"chmod o+x {parent} (so {PG_OS_USER} can reach its cluster)")
            os.chmod(parent, st.st_mode | 0o001)
        parent = os.path.dirname(parent)


def _chown_tree(path, uid, gid):
    for root, dirs, files in os.walk(path):
        os.lchown(root, uid, gid)
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, gid)


def _run_as_pg(argv, root, cwd, check=True, capture=True, timeout=120):
    """Runs a PostgreSQL program as the clusters' OS user."""
    if root:
        argv = ["runuser", "-u", PG_OS_USER, "--"] + argv
    r = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({r.returncode}):\n"
                           f"{r.stdout or ''}{r.stderr or ''}")
    return r


def _write_pg_file(path, text, root):
    """A file of a data directory: mode 0600, owned by the PostgreSQL user."""
    with open(path, "w") as f:
        f.write(text)
    if root:
        pw = pwd.getpwnam(PG_OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, 0o600)


_PG_HBA = (
    "# written by kasirtest: superuser over the (0700) unix socket,\n"
    "# scram-sha-256 for everything else\n"
    f"local all {PG_SUPERUSER} trust\n"
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n")
_PG_CONF_INCLUDE = "\ninclude_if_exists = 'kasir.conf'\n"


def _initdb(data, root, cwd):
    """initdb + kasirtest's pg_hba.conf + the include of kasir.conf (the
    settings written at every start)."""
    _run_as_pg([f"{PG_BIN}/initdb", "-D", data, *PG_INITDB_ARGS], root, cwd)
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(_PG_CONF_INCLUDE)
    _write_pg_file(os.path.join(data, "pg_hba.conf"), _PG_HBA, root)


def test_template_dir():
    """Where the tests of this build tree keep their initdb'd template."""
    return os.path.join(build_dir(), "test-runs", ".pg-template")


def _template_stamp():
    """What the template is made from (PG_BIN names the major version): a
    change re-makes it."""
    return json.dumps([PG_BIN, PG_INITDB_ARGS, _PG_HBA, _PG_CONF_INCLUDE])


@contextlib.contextmanager
def _template_locked(tdir, root):
    """Yields the template's data directory, made first if needed, under a
    shared lock (an exclusive one while it is made) so that no copy reads a
    half-made or half-removed template."""
    import fcntl
    os.makedirs(tdir, exist_ok=True)
    data = os.path.join(tdir, "data")
    stamp_path = os.path.join(tdir, "stamp")
    want = _template_stamp()

    def ready():
        try:
            with open(stamp_path) as f:
                return f.read() == want and os.path.exists(os.path.join(data, "PG_VERSION"))
        except OSError:
            return False

    with open(os.path.join(tdir, "lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_SH)
        if not ready():
            fcntl.flock(lk, fcntl.LOCK_EX)
            if not ready():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stamp_path)
                shutil.rmtree(data, ignore_errors=True)
                tmp = os.path.join(tdir, f"data.{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                if root:
                    pw = _ensure_pg_user()
                    _make_traversable(tdir)
                    os.chown(tdir, pw.pw_uid, pw.pw_gid)
                t0 = time.monotonic()
                _initdb(tmp, root, tdir)
                os.rename(tmp, data)
                with open(stamp_path, "w") as f:
                    f.write(want)
                _log(f"PostgreSQL template made in {time.monotonic() - t0:.1f}s: {data}")
            fcntl.flock(lk, fcntl.LOCK_SH)
        yield data


def _copy_data_dir(tdir, data, root):
    """data := a copy of the template in tdir (owner and modes kept)."""
    with _template_locked(tdir, root) as src:
        r = subprocess.run(["cp", "-a", "--reflink=auto", src, data],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise HarnessError(f"copying the PostgreSQL template {src} failed: {r.stderr}")


class PgCluster:
    """A PostgreSQL 15 cluster under dir (see the module docstring)."""

    def __init__(self, dir, port=None, secrets_dir=None, durable=True, template=None):
        self.dir = os.path.abspath(dir)
        self.durable = durable
        self.template = template
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgresql.log")
        self.secrets_dir = secrets_dir
        self._state_path = os.path.join(self.dir, "cluster.json")
        self._short_sock = None
        state = {}
        if os.path.exists(self._state_path):
            with open(self._state_path) as f:
                state = json.load(f)
        self.port = port or state.get("port")
        self.sockdir = state.get("sockdir")
        self.root = _is_root()

    # -- helpers -----------------------------------------------------------
    def _save_state(self):
        tmp = self._state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": self.port, "sockdir": self.sockdir}, f)
        os.replace(tmp, self._state_path)

    def _run_pg(self, argv, check=True, capture=True, timeout=120):
        """Runs a PostgreSQL program as the cluster's OS user."""
        return _run_as_pg(argv, self.root, self.dir, check, capture, timeout)

    def _prepare_dirs(self):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)  # its log: no one else's
        if self.sockdir is None:
            cand = os.path.join(self.dir, "sock")
            if len(cand) > _MAX_SOCKET_DIR:
                cand = tempfile.mkdtemp(prefix="kasirpg-")
            self.sockdir = cand
        os.makedirs(self.sockdir, mode=0o700, exist_ok=True)
        os.chmod(self.sockdir, 0o700)
        if self.port is not None and not self.is_running():
            # Keep an existing cluster on its port: daemons' DSNs point at
            # it.  Give a port still held by a dying process a moment.
            deadline = time.monotonic() + 10
            while not _port_free(self.port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _port_free(self.port):
                raise HarnessError(f"PostgreSQL port {self.port} is taken "
                                   "by another process")
        if self.port is None:
            self.port = free_port()
        self._save_state()
        if self.root:
            pw = _ensure_pg_user()
            _make_traversable(self.dir)
            _chown_tree(self.dir, pw.pw_uid, pw.pw_gid)
            os.chown(self.sockdir, pw.pw_uid, pw.pw_gid)

    # -- lifecycle ---------------------------------------------------------
    def init(self):
        self._prepare_dirs()
        if os.path.exists(os.path.join(self.data, "PG_VERSION")):
            return
        if self.template:
            _copy_data_dir(self.template, self.data, self.root)
        else:
            _initdb(self.data, self.root, cwd=self.dir)

    def _write_data_file(self, name, text):
        _write_pg_file(os.path.join(self.data, name), text, self.root)

    def _write_settings(self):
        conf = (
            "# written by kasirtest at every start\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.sockdir}'\n"
            "unix_socket_permissions = 0700\n"
            "password_encryption = 'scram-sha-256'\n"
            "shared_buffers = 128MB\n"
            "max_connections = 200\n"
            "synchronous_commit = on\n"
            + ("fsync = on\n" if self.durable else
               "fsync = off  # kasirtest durable=False: no OS crash in this test\n")
            + ("shared_preload_libraries = 'pg_stat_statements'\n"
               if os.environ.get("KASIRTEST_PG_STATEMENTS") else "") +
            "log_min_messages = warning\n"
            # settings for one profiling run (auto_explain, say); not set
            # by any test
            + os.environ.get("KASIRTEST_PG_EXTRA", "").replace(";", "\n")
            + "\n"
            "log_line_prefix = '%m [%p] %q%u@%d '\n"
            "timezone = 'UTC'\n")
        self._write_data_file("kasir.conf", conf)

    def start(self):
        self.init()
        if self.is_running():
            return
        self._write_settings()
        self._run_pg([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.logfile,
                      "-w", "-t", "60", "start"])
        self.wait_ready()

    def stop(self, mode="fast"):
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(mode)
        if not self.is_running():
            return
        self._run_pg([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w",
                      "-t", "60", "stop"])

    def restart(self, mode="fast"):
        self.stop(mode)
        self.start()

    def is_running(self):
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            return False
        r = self._run_pg([f"{PG_BIN}/pg_ctl", "-D", self.data, "status"], check=False)
        return r.returncode == 0

    def wait_ready(self, timeout=30):
        def ok():
            with contextlib.closing(self.connect(db="postgres")) as c:
                with c.cursor() as cur:
                    cur.execute("SELECT 1")
                    return cur.fetchone() == (1,)
        wait_until(ok, timeout, f"PostgreSQL on port {self.port}", interval=0.2)

    # -- connections ---------------------------------------------------------
    def superuser_dsn(self, db="kasir"):
        return f"host={self.sockdir} port={self.port} user={PG_SUPERUSER} dbname={db}"

    def superuser_url(self, db="kasir"):
        q = urllib.parse.urlencode({"host": self.sockdir, "port": self.port})
        return f"postgresql://{PG_SUPERUSER}@/{db}?{q}"

    def password(self, role):
        if not self.secrets_dir:
            raise HarnessError("PgCluster.secrets_dir is not set (call bootstrap())")
        with open(os.path.join(self.secrets_dir, f"db-{role}")) as f:
            return f.read().strip()

    def dsn(self, role, db="kasir"):
        return (f"host=127.0.0.1 port={self.port} dbname={db} user={role} "
                f"password={self.password(role)}")

    def connect(self, role=None, db="kasir"):
        import psycopg2
        if role is None:
            conn = psycopg2.connect(host=self.sockdir, port=self.port,
                                    user=PG_SUPERUSER, dbname=db, connect_timeout=5)
        else:
            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=role,
                                    password=self.password(role), dbname=db,
                                    connect_timeout=5)
        conn.autocommit = True
        return conn

    def psql(self, sql, params=None, role=None, db="kasir"):
        with contextlib.closing(self.connect(role, db)) as c:
            with c.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []

    def bootstrap(self, secrets_dir, sql_file=None):
        """deploy/sql/bootstrap.sql + passwords from secrets_dir/db-<role>."""
        from psycopg2 import sql as pgsql
        self.secrets_dir = secrets_dir
        sql_file = sql_file or os.path.join(source_dir(), "deploy", "sql", "bootstrap.sql")
        with open(sql_file) as f:
            script = f.read()
        # psql reads the script on stdin: the PostgreSQL user may not be
        # able to read the source tree, and psql runs as us anyway.
        r = subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                            "-d", self.superuser_dsn("postgres")],
                           input=script, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise HarnessError(f"bootstrap.sql failed:\n{r.stdout}{r.stderr}")
        with contextlib.closing(self.connect(db="postgres")) as c:
            with c.cursor() as cur:
                for role in db_roles():
                    cur.execute(pgsql.SQL("ALTER ROLE {} PASSWORD %s").format(
                        pgsql.Identifier(role)), (self.password(role),))


# --------------------------------------------------------------------------
# processes


class _Proc:
    def __init__(self, name, argv, popen, log):
        self.name = name
        self.argv = argv
        self.popen = popen
        self.log = log
        self.signalled = None  # the signal we sent, if any
        self.died_unexpectedly = False
        self.ready = None  # ("http", url) | ("tcp", port) | None
        self.strict = True  # exit status / sanitizer output checked at close

    @property
    def pid(self):
        return self.popen.pid


_WATCHDOG = r"""
import json, os, signal, subprocess, sys, time
piddir = sys.argv[1]
try:
    sys.stdin.buffer.read()          # EOF: the test process is gone or done
except Exception:
    pass
if not os.path.isdir(piddir):
    sys.exit(0)
for n in sorted(os.listdir(piddir)):
    p = os.path.join(piddir, n)
    try:
        with open(p) as f:
            info = json.load(f)
    except Exception:
        continue
    if n.endswith(".proc"):
        pid = info["pid"]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if info["argv0"].encode() in cmd:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    elif n.endswith(".pg"):
        subprocess.run(info["stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""


class Stack:
    """Secrets, PostgreSQL, configs, daemons and fakes (module docstring)."""

    def __init__(self, dir, overrides=None, server_key=None, *, log_dir="logs",
                 etc_dir="etc", build=None, src=None, strict_exit=True,
                 remove_on_success=False, watchdog=False, with_pg=True,
                 private=False, durable=True, pg_template=None):
        self.dir = os.path.abspath(dir)
        # private (the dev stack's var/): dir is 0700, it holds mail, logs
        # and secrets; see pg_dir() for PostgreSQL when we are root
        self.private = private
        self.durable = durable  # False: the cluster runs with fsync = off
        self.pg_template = pg_template  # PgCluster(template=...)
        self.overrides = dict(overrides or {})
        self.server_key = server_key
        self.src = os.path.abspath(src or source_dir())
        self.build = os.path.abspath(build or build_dir())
        self.log_dir = os.path.join(self.dir, log_dir)
        self.etc_dir = os.path.join(self.dir, etc_dir)
        self.secrets_dir = os.path.join(self.dir, "secrets")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.whatsapp_dir = os.path.join(self.dir, "whatsapp")
        self.whatsapp_log = os.path.join(self.whatsapp_dir, "messages.jsonl")
        self.run_dir = os.path.join(self.dir, "run")
        self._ports_path = os.path.join(self.dir, "ports.json")
        self.strict_exit = strict_exit
        self.remove_on_success = remove_on_success
        self.use_watchdog = watchdog
        self.with_pg = with_pg  # False: no PostgreSQL (fakes-only tests)
        self.procs = {}
        self.pg = None
        self._ports = None
        self._setup_done = False
        self._closed = False
        self._watchdog = None
        self._short_run = None
        self._piddir = os.path.join(self.dir, ".pids")
        atexit.register(self._atexit)

    # -- construction for tests ---------------------------------------------
    @classmethod
    def for_test(cls, name=None, overrides=None, server_key=None, durable=False, **kw):
        name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0] or "test"
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        d = os.path.join(build_dir(), "test-runs", f"{name}-{os.getpid()}")
        if os.path.exists(d):
            shutil.rmtree(d)
        kw.setdefault("remove_on_success", True)
        kw.setdefault("watchdog", True)
        kw.setdefault("pg_template", test_template_dir())
        kw["durable"] = durable
        st = cls(d, overrides, server_key, **kw)
        _install_signal_handlers()
        return st

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, etype, exc, tb):
        success = etype is None or (
            etype is SystemExit and exc.code in (0, 77, None))
        try:
            self.close(success)
        except Exception as e:  # a failed close fails the test
            if success:
                raise
            _log(f"while cleaning up: {e}")
        return False

    # -- setup -------------------------------------------------------------
    def setup(self):
        """Directories, secrets, PostgreSQL started and bootstrapped."""
        if self._setup_done:
            return
        os.makedirs(self.dir, mode=0o700 if self.private else 0o777, exist_ok=True)
        if self.private:
            os.chmod(self.dir, 0o700)
        for d in (self.log_dir, self.etc_dir, self.mail_dir, self.whatsapp_dir):
            os.makedirs(d, exist_ok=True)
        self._setup_run_dir()
        self._write_secrets()
        if self.use_watchdog:
            self._start_watchdog()
        if self.with_pg:
            self.pg = PgCluster(self.pg_dir(), secrets_dir=self.secrets_dir,
                                durable=self.durable, template=self.pg_template)
            if self.use_watchdog:
                self._register_pg()
            self.pg.start()
            self.pg.bootstrap(self.secrets_dir)
        self._setup_done = True

    def pg_dir(self):
        """Where the PostgreSQL cluster lives: dir/pg.  For a private dir
        as root, PostgreSQL runs as kasirpg, which cannot enter a 0700 dir
        of root's, so dir/pg is a symlink to a kasirpg-owned 0700 directory
        /var/tmp/kasir-pg-<hash of dir> (the cluster's own files never
        need dir).  A cluster made before inside dir is kept there, and
        dir then stays searchable (o+x) for kasirpg."""
        link = os.path.join(self.dir, "pg")
        if not (self.private and _is_root()):
            return link
        if os.path.islink(link):
            return os.path.realpath(link)
        if os.path.isdir(link):
            _log(f"{link}: a cluster inside the 0700 dir (made before); "
                 f"{self.dir} stays o+x for {PG_OS_USER}: down, remove it "
                 "and up again to move it out")
            return link
        import hashlib
        target = os.path.join(PG_OUTSIDE_DIR, "kasir-pg-" +
                              hashlib.sha256(self.dir.encode()).hexdigest()[:16])
        os.makedirs(target, mode=0o700, exist_ok=True)
        os.chmod(target, 0o700)
        os.symlink(target, link)
        return target

    def _setup_run_dir(self):
        if os.path.islink(self.run_dir):
            if os.path.isdir(self.run_dir):
                return
            os.unlink(self.run_dir)  # its short /tmp target is gone
        if len(self.run_dir) + len("/reconciler.sock") > _MAX_SOCKET_DIR + 10:
            self._short_run = tempfile.mkdtemp(prefix="kasir-run-")
            os.symlink(self._short_run, self.run_dir)
            # the configs get the short path: ipc:// paths must fit sun_path
        else:
            os.makedirs(self.run_dir, exist_ok=True)

    @property
    def run_path(self):
        """The run directory as written into configs (short if needed)."""
        return os.path.realpath(self.run_dir)

    def _write_secrets(self):
        os.makedirs(self.secrets_dir, mode=0o700, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        gen = {
            "msg-k1": lambda: _secrets.token_hex(32),
            "midtrans-server-key": lambda: "SB-Mid-server-" + _secrets.token_urlsafe(18),
            "api-token": lambda: _secrets.token_hex(32),
            "smtp-password": lambda: _secrets.token_hex(16),
            "whatsapp-token": lambda: _secrets.token_hex(24),
            "evidence-key": lambda: _secrets.token_hex(32),
        }
        for role in db_roles():
            gen[f"db-{role}"] = lambda: _secrets.token_hex(24)
        for name, make in gen.items():
            path = os.path.join(self.secrets_dir, name)
            value = None
            if name == "midtrans-server-key" and self.server_key is not None:
                value = self.server_key
            if value is None and os.path.exists(path):
                os.chmod(path, 0o600)
                continue
            if value is None:
                value = make()
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            os.replace(path + ".tmp", path)

    def secret_path(self, name):
        return os.path.join(self.secrets_dir, name)

    def secret(self, name):
        with open(self.secret_path(name)) as f:
            return f.read().strip()

    # -- watchdog ------------------------------------------------------------
    def _start_watchdog(self):
        os.makedirs(self._piddir, exist_ok=True)
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, self._piddir], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _register_pg(self):
        argv = [f"{PG_BIN}/pg_ctl", "-D", self.pg.data, "-m", "immediate", "-w", "stop"]
        if self.pg.root:
            argv = ["runuser", "-u", PG_OS_USER, "--"] + argv
        with open(os.path.join(self._piddir, "postgres.pg"), "w") as f:
            json.dump({"stop": argv}, f)

    def _register_proc(self, p):
        if not self.use_watchdog:
            return
        with open(os.path.join(self._piddir, f"{p.name}.proc"), "w") as f:
            json.dump({"pid": p.pid, "argv0": p.argv[0]}, f)

    def _unregister_proc(self, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._piddir, f"{name}.proc"))

    # -- ports and templates ---------------------------------------------------
    def _load_ports(self):
        if self._ports is None:
            self._ports = {}
            if os.path.exists(self._ports_path):
                with open(self._ports_path) as f:
                    self._ports = json.load(f)

    def port(self, name):
        """The TCP port for PORT_<NAME> (allocated once, kept in ports.json)."""
        if not name.startswith("PORT_"):
            name = "PORT_" + name
        if name in self.overrides:
            return int(self.overrides[name])
        self._load_ports()
        if name not in self._ports:
            avoid = set(self._ports.values())
            if self.pg and self.pg.port:
                avoid.add(self.pg.port)
            self._ports[name] = free_port(avoid)
            tmp = self._ports_path + ".tmp"
            os.makedirs(self.dir, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(self._ports, f, indent=1, sort_keys=True)
            os.replace(tmp, self._ports_path)
        return self._ports[name]

    def release_busy_ports(self):
        """Forgets allocated ports that something else now holds (for a
        persistent stack that is not running)."""
        self._load_ports()
        busy = [n for n, p in self._ports.items() if not _port_free(p)]
        for n in busy:
            del self._ports[n]
        if busy:
            with open(self._ports_path, "w") as f:
                json.dump(self._ports, f, indent=1, sort_keys=True)
        return busy

    def values(self):
        """Built-in placeholder values."""
        return {
            "VAR": self.dir,
            "SECRETS": self.secrets_dir,
            "RUN": self.run_path,
            "SRC": self.src,
            "DB_HOST": "127.0.0.1",
            "DB_PORT": self.pg.port if self.pg else "",
        }

    def template_path(self, svc):
        return os.path.join(self.src, "services", svc, "config.example.yaml")

    def config_path(self, svc):
        return os.path.join(self.etc_dir, f"{svc}.yaml")

    def render_text(self, text, origin="<text>"):
        return render_template(text, self.values(), origin, self.overrides, self.port)

    def render(self, svc):
        """Renders services/<svc>/config.example.yaml to etc/<svc>.yaml."""
        src = self.template_path(svc)
        with open(src) as f:
            text = f.read()
        out = self.render_text(text, src)
        path = self.config_path(svc)
        os.makedirs(self.etc_dir, exist_ok=True)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as f:
            f.write(out)
        os.replace(path + ".tmp", path)
        return path

    def unused_overrides(self, svcs):
        used = set()
        for svc in svcs:
            if os.path.exists(self.template_path(svc)):
                with open(self.template_path(svc)) as f:
                    used |= template_names(f.read())
        return sorted(k for k in self.overrides
                      if k not in used and not k.startswith("FAKE_"))

    def config_value(self, svc, dotted):
        path = self.config_path(svc)
        if not os.path.exists(path):
            self.render(svc)
        with open(path) as f:
            return yaml_lookup(f.read(), dotted)

    # -- binaries and commands ---------------------------------------------------
    def binary(self, svc):
        name = "kasirctl" if svc in ("kasirctl", "ctl") else f"kasir-{svc}"
        return os.path.join(self.build, "bin", name)

    def available(self, svc):
        return os.access(self.binary(svc), os.X_OK) and os.path.exists(self.template_path(svc))

    def fake_path(self, name):
        return os.path.join(self.src, "tests", "fakes",
                            "kasir-fake-midtrans" if name == "fake-midtrans" else name)

    def url(self, what):
        p = self.port
        if what == "ingest":
            path = None
            if os.path.exists(self.template_path("ingest")):
                path = self.config_value("ingest", "ingest.path")
            path = path or "/midtrans/notification"
            return f"http://127.0.0.1:{p('INGEST_HTTP')}{path}"
        if what == "api":
            return f"http://127.0.0.1:{p('ORDER_HTTP')}"
        if what == "fake_midtrans":
            return f"http://127.0.0.1:{p('FAKE_MIDTRANS')}"
        if what == "smtp_control":
            return f"http://127.0.0.1:{p('SMTP_CONTROL')}"
        if what == "whatsapp":
            return f"http://127.0.0.1:{p('WHATSAPP')}"
        if what.endswith("_admin"):
            listen = self.config_value(what[:-6], "admin.listen")
            if not listen:
                raise HarnessError(f"{what[:-6]}: no admin.listen in its config")
            return f"http://{listen}"
        raise KeyError(what)

    def command(self, name):
        """argv that runs daemon or fake `name` (renders its config)."""
        py = "/usr/bin/python3"
        if name in DAEMONS:
            return [self.binary(name), "--config", self.render(name)]
        if name == "fake-midtrans":
            argv = [py, self.fake_path(name),
                    "--listen", f"127.0.0.1:{self.port('FAKE_MIDTRANS')}",
                    "--server-key-file", self.secret_path("midtrans-server-key"),
                    "--notify-url", self.url("ingest")]
            sched = self.overrides.get("FAKE_MIDTRANS_RETRY_SCHEDULE")
            if sched:
                argv += ["--retry-schedule", str(sched)]
            if self.overrides.get("FAKE_MIDTRANS_NO_AUTO_EXPIRE"):
                argv += ["--no-auto-expire"]
            return argv
        if name == "smtp-sink":
            return [py, self.fake_path(name),
                    "--listen", f"127.0.0.1:{self.port('SMTP')}",
                    "--control", f"127.0.0.1:{self.port('SMTP_CONTROL')}",
                    "--maildir", self.mail_dir]
        if name == "whatsapp-fake":
            return [py, self.fake_path(name),
                    "--listen", f"127.0.0.1:{self.port('WHATSAPP')}",
                    "--out", self.whatsapp_log,
                    "--token-file", self.secret_path("whatsapp-token"),
                    # the templates registered with Meta (docs/whatsapp.md)
                    "--templates", os.path.join(self.src, "deploy", "whatsapp",
                                                "templates.json")]
        raise KeyError(f"unknown daemon or fake {name!r}")

    _PUBLIC_PORTS = {"ingest": "PORT_INGEST_HTTP", "order": "PORT_ORDER_HTTP"}

    def ready_probe(self, name):
        """Daemons: [("http", admin /readyz URL)] plus ("tcp", public port)
        for the ones with a public listener (so a test never races the
        listener); fakes: [("tcp", port)]."""
        if name in DAEMONS:
            probes = [("http", self.url(f"{name}_admin") + "/readyz")]
            pub = self._PUBLIC_PORTS.get(name)
            if pub and os.path.exists(self.template_path(name)):
                with open(self.template_path(name)) as f:
                    if pub in template_names(f.read()):
                        probes.append(("tcp", self.port(pub)))
            return probes
        port = {"fake-midtrans": "FAKE_MIDTRANS", "smtp-sink": "SMTP",
                "whatsapp-fake": "WHATSAPP"}[name]
        return [("tcp", self.port(port))]

    # -- processes ---------------------------------------------------------------
    def log_path(self, name):
        return os.path.join(self.log_dir, f"{name}.log")

    def start(self, name, wait=True, env=None):
        """Starts daemon or fake `name` (see command()); waits until ready."""
        self.setup()
        argv = self.command(name)
        if name in DAEMONS and not os.access(argv[0], os.X_OK):
            raise HarnessError(f"{argv[0]} does not exist: build it first")
        if name in FAKES and not os.path.exists(argv[1]):
            raise HarnessError(f"{argv[1]} does not exist")
        return self.spawn(name, argv, self.ready_probe(name), env=env, wait=wait,
                          strict=name in DAEMONS)

    def spawn(self, name, argv, ready=None, env=None, wait=True, strict=True):
        """Runs any program under the harness (test producers, consumers...):
        log in log_dir/<name>.log, own session, tracked like a daemon.
        ready: ("http", url) answering 200, ("tcp", port) accepting, or None.
        strict: its exit status and sanitizer reports are checked at close.
        Returns the pid."""
        if name in self.procs and self.procs[name].popen.poll() is None:
            raise HarnessError(f"{name} is already running (pid {self.procs[name].pid})")
        os.makedirs(self.log_dir, exist_ok=True)
        log = open(self.log_path(name), "ab")
        log.write(f"=== kasirtest: start {time.strftime('%H:%M:%S')} {' '.join(argv)}\n"
                  .encode())
        log.flush()
        penv = dict(os.environ)
        penv.update(env or {})
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.dir,
                                     start_new_session=True, env=penv)
        finally:
            log.close()
        p = _Proc(name, list(argv), popen, self.log_path(name))
        p.ready = ready
        p.strict = strict
        self.procs[name] = p
        self._register_proc(p)
        if wait and ready:
            self.wait_ready(name)
        return p.pid

    def start_fakes(self):
        for f in FAKES:
            self.start(f, wait=False)
        for f in FAKES:
            self.wait_ready(f)

    def start_all(self, services=None):
        """Fakes, then daemons.  services=None: every available daemon."""
        self.setup()
        if services is None:
            services = [s for s in DAEMONS if self.available(s)]
            skipped = [s for s in DAEMONS if s not in services]
            if skipped:
                _log(f"not started (binary or config template missing): {', '.join(skipped)}")
        else:
            missing = [s for s in services if not self.available(s)]
            if missing:
                raise HarnessError(
                    "needed but not built or without config.example.yaml: "
                    + ", ".join(f"{s} ({self.binary(s)})" for s in missing))
        unused = self.unused_overrides(services)
        if unused:
            _log(f"warning: overrides not used by any started template: {unused}")
        self.start_fakes()
        for s in services:
            self.start(s, wait=False)
        for s in services:
            self.wait_ready(s)
        return services

    def wait_ready(self, name, timeout=60):
        p = self.procs.get(name)
        if p is not None and p.ready is None:
            raise HarnessError(f"{name} was spawned without a readiness probe")
        probes = p.ready if p is not None else self.ready_probe(name)

        def ready():
            if p is not None and p.popen.poll() is not None:
                raise HarnessError(
                    f"{name} exited with status {p.popen.returncode} before it was "
                    f"ready; log {p.log}:\n{_tail(p.log, 40)}")
            return probe_ok(probes)

        deadline = time.monotonic() + timeout
        while True:
            if ready():  # HarnessError propagates at once
                return
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{name} not ready after {timeout}s ({probes}); "
                                  f"log tail:\n{_tail(self.log_path(name), 40)}")
            time.sleep(0.1)

    def pid(self, name):
        p = self.procs.get(name)
        return p.pid if p and p.popen.poll() is None else None

    def running(self, name):
        return self.pid(name) is not None

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs[name]
        p.signalled = sig
        with contextlib.suppress(ProcessLookupError):
            p.popen.send_signal(sig)
        if sig in (signal.SIGKILL,):
            p.popen.wait(10)
            self._unregister_proc(name)

    def stop(self, name, timeout=10):
        """SIGTERM, SIGKILL after timeout; returns the exit status (negative:
        killed by that signal)."""
        p = self.procs.get(name)
        if p is None:
            return None
        if p.popen.poll() is not None:
            if p.signalled is None:
                p.died_unexpectedly = True
            self._unregister_proc(name)
            return p.popen.returncode
        p.signalled = signal.SIGTERM
        p.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            p.popen.send_signal(signal.SIGCONT)  # in case a test stopped it
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            _log(f"{name} ignored SIGTERM for {timeout}s: SIGKILL")
            _dump_threads(p.popen.pid, p.log)
            p.signalled = signal.SIGKILL
            p.popen.kill()
            p.popen.wait(10)
        self._unregister_proc(name)
        return p.popen.returncode

    def restart(self, name, wait=True):
        self.stop(name)
        return self.start(name, wait=wait)

    def stop_all(self):
        codes = {}
        for name in [n for n in reversed(list(self.procs)) if n not in FAKES]:
            codes[name] = self.stop(name)
        for name in list(self.procs):
            if name not in codes:
                codes[name] = self.stop(name)
        return codes

    def run_ctl(self, *args, check=False, timeout=60, input=None):
        argv = [self.binary("kasirctl"), "--config", self.render("kasirctl"), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           input=input, cwd=self.dir)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    # -- talking to the system -------------------------------------------------
    def api(self, method, path, body=None, token=None, headers=None, timeout=10):
        if token is None:
            token = self.secret("api-token")
        return http(method, self.url("api") + path, body, headers, token or None, timeout)

    def fake(self, method, path, body=None, timeout=10):
        return http(method, self.url("fake_midtrans") + path, body, timeout=timeout)

    def notify(self, body, headers=None, timeout=10):
        return http("POST", self.url("ingest"), body, headers, timeout=timeout)

    def admin(self, svc, path, timeout=5):
        return http("GET", self.url(f"{svc}_admin") + path, timeout=timeout)

    def metrics(self, svc):
        r = self.admin(svc, "/metrics")
        if r.status != 200:
            raise HarnessError(f"{svc} /metrics -> {r}")
        return parse_metrics(r.raw.decode())

    def metric(self, svc, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        want = set((k, str(v)) for k, v in labels.items())
        return sum(v for (n, ls), v in self.metrics(svc).items()
                   if n == name and want <= set(ls))

    def sql(self, query, params=None, role=None, db="kasir"):
        self.setup()
        if self.pg is None:
            raise HarnessError("this Stack was made with with_pg=False")
        return self.pg.psql(query, params, role, db)

    def log_text(self, name):
        try:
            with open(self.log_path(name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, name, regex, timeout=30):
        rx = re.compile(regex)
        return wait_until(lambda: rx.search(self.log_text(name)), timeout,
                          f"/{regex}/ in {self.log_path(name)}")

    def mail_messages(self):
        try:
            names = sorted(os.listdir(self.mail_dir))
        except FileNotFoundError:
            return []
        return [os.path.join(self.mail_dir, n) for n in names
                if not n.startswith(".") and os.path.isfile(os.path.join(self.mail_dir, n))]

    def whatsapp_messages(self):
        try:
            with open(self.whatsapp_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    wait_until = staticmethod(wait_until)

    # -- teardown -------------------------------------------------------------------
    def dump_logs(self, lines=60):
        paths = []
        if os.path.isdir(self.log_dir):
            paths += [os.path.join(self.log_dir, n) for n in sorted(os.listdir(self.log_dir))]
        if self.pg:
            paths.append(self.pg.logfile)
        for p in paths:
            if os.path.isfile(p):
                print(f"----- tail of {p} -----\n{_tail(p, lines)}", file=sys.stderr)
        sys.stderr.flush()

    def _exit_problems(self, codes):
        problems = []
        for name, p in self.procs.items():
            if not p.strict:
                continue
            code = codes.get(name)
            if p.died_unexpectedly:
                problems.append(f"{name} died on its own (status {code})")
            elif p.signalled == signal.SIGTERM and code not in (0, None):
                problems.append(f"{name} exited with status {code} after SIGTERM")
            text = self.log_text(name)
            for mark in SANITIZER_MARKS:
                if mark in text:
                    problems.append(f"{name}: sanitizer report in {p.log} ({mark!r})")
                    break
        return problems

    def close(self, success=True):
        """Stops every process and PostgreSQL.  On success removes the
        directory (test stacks); on failure keeps it and prints log tails.
        Raises AssertionError when a daemon misbehaved (see strict_exit)."""
        if self._closed:
            return
        self._closed = True
        codes = {}
        try:
            codes = self.stop_all()
        finally:
            if self.pg:
                try:
                    self.pg.stop("fast")
                except Exception as e:  # noqa: BLE001
                    _log(f"stopping PostgreSQL: {e}")
                    with contextlib.suppress(Exception):
                        self.pg.stop("immediate")
            if self._watchdog:
                with contextlib.suppress(Exception):
                    for n in os.listdir(self._piddir):
                        os.unlink(os.path.join(self._piddir, n))
                    self._watchdog.stdin.close()
                    self._watchdog.wait(10)
        problems = self._exit_problems(codes) if self.strict_exit else []
        if problems:
            success = False
        if not success:
            self.dump_logs()
            _log(f"kept {self.dir} for inspection")
        elif self.remove_on_success:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.pg and self.pg.sockdir and not self.pg.sockdir.startswith(self.dir):
                shutil.rmtree(self.pg.sockdir, ignore_errors=True)
            if self._short_run:
                shutil.rmtree(self._short_run, ignore_errors=True)
        if problems:
            raise AssertionError("daemon problems:\n  " + "\n  ".join(problems))

    def _atexit(self):
        if not self._closed and (self.procs or self._setup_done) and self.remove_on_success:
            # the test never reached close(): treat as a failure
            with contextlib.suppress(Exception):
                self.close(success=False)


def _tail(path, lines):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"({e.strerror})"
    return "\n".join(data.splitlines()[-lines:])


def _install_signal_handlers():
    """SIGTERM/SIGHUP become SystemExit so that context managers clean up."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) in (signal.SIG_DFL, None):
            signal.signal(s, handler)


__all__ = ["PgCluster", "Stack", "Response", "HarnessError", "WaitTimeout",
           "http", "probe_ok", "wait_until", "free_port", "render_template", "yaml_lookup",
           "parse_metrics", "skip", "db_roles", "source_dir", "build_dir",
           "SERVICES", "DAEMONS", "FAKES", "PG_BIN"]

