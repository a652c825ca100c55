"""common/db.c against a real PostgreSQL 15 (issue 2: db survives restarts).

Drives build/tests/db-driver (db_driver.c) line by line while the cluster
is restarted, stopped and started underneath it:
  - a query fails with KASIR_EDB during an outage and succeeds after it,
    with its prepared statement re-prepared on the new connection;
  - db_ensure() never sleeps: back-to-back calls while the server is down
    return at once (backoff, not sleep);
  - a transaction open across a restart is reported failed, stays failed
    after the server is back (no statement of it runs in autocommit), and
    nothing of it is committed;
  - a connection killed while COMMIT is in flight gives KASIR_EDBUNKNOWN;
  - SQL errors give KASIR_ESQL with the SQLSTATE; statement_timeout applies;
  - the handle's state machine (docs/failure-model.md): every transition,
    with the backend killed (pg_terminate_backend) or the server stopped
    at each point: the break first seen by a statement, by ROLLBACK, by
    COMMIT, by a pipeline, and every way out of TX_LOST; no state refuses
    to reconnect once the server is back;
  - migrations: applied once, recorded (0000_stream, 0001_stream_pending,
    0002_stream_source, 0003_stream_tick, 0004_stream_log +
    files in name order),
    a failing file is rolled back with its record and reported; two
    migrators racing are serialised by the advisory lock.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

import kasirtest

EDB, EDBUNKNOWN, ESQL = -1001, -1002, -1003


class Driver:
    def __init__(self, dsn, password=None, stmt_timeout_ms=None, generic_plans=False,
                 index_scans=False):
        exe = os.path.join(kasirtest.build_dir(), "tests", "db-driver")
        env = dict(os.environ, KASIR_TEST_DSN=dsn)
        if password is not None:
            env["KASIR_TEST_PASSWORD"] = password
        if stmt_timeout_ms is not None:
            env["KASIR_TEST_STMT_TIMEOUT_MS"] = str(stmt_timeout_ms)
        if generic_plans:
            env["KASIR_TEST_GENERIC_PLANS"] = "1"
        if index_scans:
            env["KASIR_TEST_INDEX_SCANS"] = "1"
        self.p = subprocess.Popen([exe], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=env, text=True)
        self.first = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError("db-driver died")
        out = {}
        for tok in line.split():
            k, _, v = tok.partition("=")
            out[k] = v
        out["rc"] = int(out["rc"])
        out["_line"] = line.strip()
        return out

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(timeout=10) == 0


def expect(r, rc, what):
    if r["rc"] != rc:
        raise AssertionError(f"{what}: expected rc={rc}, got {r['_line']}")
    return r


def wait_rc(d, line, rc, timeout, what):
    t0 = time.monotonic()
    while True:
        r = d.cmd(line)
        if r["rc"] == rc:
            return r, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: still {r['_line']} after {timeout}s")
        time.sleep(0.05)


def test_reconnect(pg, dsn, pw):
    d = Driver(dsn, pw)
    assert d.first["up"] == "1", d.first
    expect(d.cmd("q one|SELECT 1"), 0, "first query")
    expect(d.cmd("p echo|SELECT $1::text|hello"), 0, "parameterized")
    r = d.cmd("p echo|SELECT $1::text|hello")
    assert r["v"] == "hello", r

    # restart: the old session is gone; the first query reports it
    port = pg.port
    pg.restart("fast")
    assert pg.port == port, "the cluster moved to another port"
    expect(d.cmd("q one|SELECT 1"), EDB, "first query after restart")
    r, _ = wait_rc(d, "q one|SELECT 1", 0, 10, "query after restart")
    # the named statement was re-prepared on the new connection
    r = expect(d.cmd("p echo|SELECT $1::text|again"), 0, "prepared after reconnect")
    assert r["v"] == "again", r

    # outage: fails fast with EDB, never sleeps in the caller
    pg.stop("immediate")
    expect(d.cmd("q one|SELECT 1"), EDB, "query during outage")
    r = d.cmd("ensure_loop 200")
    assert int(r["fails"]) == 200, r
    assert int(r["ms"]) < 1500, f"db_ensure slept: {r}"
    expect(d.cmd("up"), 0, "up")
    assert d.cmd("up")["up"] == "0"
    pg.start()
    r, took = wait_rc(d, "q one|SELECT 1", 0, 15, "query after outage")
    assert took <= 12, took
    assert d.cmd("up")["up"] == "1"
    r = expect(d.cmd("p echo|SELECT $1::text|back"), 0, "prepared after outage")
    assert r["v"] == "back"
    d.close()


def test_transactions(pg, dsn, pw):
    pg.psql("CREATE TABLE IF NOT EXISTS public.dbt (k int PRIMARY KEY)")
    pg.psql("GRANT SELECT, INSERT ON public.dbt TO kasir_ingest_owner")
    d = Driver(dsn, pw)

    # a normal transaction commits
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|1"), 0, "insert 1")
    expect(d.cmd("commit"), 0, "commit")
    assert pg.psql("SELECT k FROM public.dbt ORDER BY k") == [(1,)]

    # SQL error: ESQL + SQLSTATE; the transaction is then refused at COMMIT
    expect(d.cmd("begin"), 0, "begin")
    r = expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|1"), ESQL, "dup")
    assert r["state"] == "23505", r
    expect(d.cmd("commit"), ESQL, "commit of an aborted transaction")
    expect(d.cmd("q one|SELECT 1"), 0, "usable after")

    # transaction open across a restart: failed, and stays failed
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|2"), 0, "insert 2")
    pg.restart("fast")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|3"), EDB,
           "insert after restart")
    time.sleep(0.3)
    # the server is back, but the lost transaction must not continue in
    # autocommit on a new connection
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|4"), EDB,
           "insert in lost transaction")
    expect(d.cmd("commit"), EDB, "commit of a lost transaction")
    expect(d.cmd("rollback"), 0, "rollback")
    r, _ = wait_rc(d, "q one|SELECT 1", 0, 10, "after the lost transaction")
    assert pg.psql("SELECT k FROM public.dbt ORDER BY k") == [(1,)], \
        "rows of the lost transaction were committed"

    # connection killed while COMMIT is in flight: outcome unknown
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|5"), 0, "insert 5")
    pid = expect(d.cmd("q pid|SELECT pg_backend_pid()"), 0, "pid")["v"]
    pg.psql("SELECT pg_terminate_backend(%s)", (int(pid),))
    time.sleep(0.2)
    expect(d.cmd("commit"), EDBUNKNOWN, "commit on a killed connection")
    r, _ = wait_rc(d, "q one|SELECT 1", 0, 10, "after unknown commit")

    # db_begin_with / db_commit_with: a transaction's ends in one round
    # trip each, with db_begin()'s and db_commit()'s outcomes
    r = state(expect(d.cmd("beginw bw|SELECT $1::int + 1|41"), 0, "beginw"),
              "in_tx", "beginw")
    assert r["v"] == "42", r
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|7"), 0, "insert 7")
    state(expect(d.cmd("commitw cw|INSERT INTO public.dbt VALUES ($1::int)|8"),
                 0, "commitw"), "idle", "commitw")
    assert {(7,), (8,)} <= set(pg.psql("SELECT k FROM public.dbt")), \
        "db_commit_with did not commit"
    # its statement refused: no transaction is left open
    r = state(expect(d.cmd("beginw bwi|INSERT INTO public.dbt VALUES ($1::int)|7"),
                     ESQL, "beginw refused"), "idle", "beginw refused")
    assert r["state"] == "23505", r
    # the last statement refused: everything rolled back
    expect(d.cmd("beginw bw|SELECT $1::int + 1|0"), 0, "beginw")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|9"), 0, "insert 9")
    state(expect(d.cmd("commitw cw|INSERT INTO public.dbt VALUES ($1::int)|8"),
                 ESQL, "commitw refused"), "idle", "commitw refused")
    assert (9,) not in pg.psql("SELECT k FROM public.dbt"), \
        "a refused db_commit_with committed"
    # db_tx_once: BEGIN, the statement, COMMIT in one pipeline
    r = state(expect(d.cmd("txonce tx|INSERT INTO public.dbt VALUES ($1::int)"
                           " RETURNING k|12"), 0, "txonce"), "idle", "txonce")
    assert r["v"] == "12", r
    assert (12,) in pg.psql("SELECT k FROM public.dbt"), "txonce did not commit"
    r = state(expect(d.cmd("txonce tx|INSERT INTO public.dbt VALUES ($1::int)"
                           " RETURNING k|12"), ESQL, "txonce refused"),
              "idle", "txonce refused")
    assert r["state"] == "23505", r
    # the connection killed under it: outcome unknown, never "refused"
    expect(d.cmd("beginw bw|SELECT $1::int + 1|0"), 0, "beginw")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|10"), 0, "insert 10")
    pid = expect(d.cmd("q pid|SELECT pg_backend_pid()"), 0, "pid")["v"]
    pg.psql("SELECT pg_terminate_backend(%s)", (int(pid),))
    time.sleep(0.2)
    expect(d.cmd("commitw cw|INSERT INTO public.dbt VALUES ($1::int)|11"),
           EDBUNKNOWN, "commitw on a killed connection")
    r, _ = wait_rc(d, "q one|SELECT 1", 0, 10, "after unknown commitw")

    # savepoints
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd("sql SAVEPOINT sp1"), 0, "savepoint")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|1"), ESQL, "dup in sp")
    expect(d.cmd("sql ROLLBACK TO SAVEPOINT sp1"), 0, "rollback to")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|6"), 0, "insert 6")
    expect(d.cmd("commit"), 0, "commit after savepoint")
    assert (6,) in pg.psql("SELECT k FROM public.dbt ORDER BY k")
    d.close()

    # statement_timeout from the conf
    d = Driver(dsn, pw, stmt_timeout_ms=200)
    r = expect(d.cmd("q slow|SELECT pg_sleep(2)"), ESQL, "statement timeout")
    assert r["state"] == "57014", r
    expect(d.cmd("q one|SELECT 1"), 0, "after timeout")
    r = expect(d.cmd("q pcm|SHOW plan_cache_mode"), 0, "plan_cache_mode")
    assert r["v"] == "auto", r
    r = expect(d.cmd("q ss|SHOW enable_seqscan"), 0, "enable_seqscan")
    assert r["v"] == "on", r
    # never JIT (db.c): every connection, whatever else its conf sets
    r = expect(d.cmd("q jit|SHOW jit"), 0, "jit")
    assert r["v"] == "off", r
    d.close()

    # generic_plans (the hot loops: db.h), with the timeout beside it and
    # kept across a reconnect
    d = Driver(dsn, pw, stmt_timeout_ms=200, generic_plans=True)
    r = expect(d.cmd("q pcm|SHOW plan_cache_mode"), 0, "generic plans")
    assert r["v"] == "force_generic_plan", r
    r = expect(d.cmd("q slow|SELECT pg_sleep(2)"), ESQL, "timeout with generic plans")
    assert r["state"] == "57014", r
    kill_backend(pg, d)
    r, _ = wait_rc(d, "q pcm|SHOW plan_cache_mode", 0, 10, "generic plans after reconnect")
    assert r["v"] == "force_generic_plan", r
    d.close()

    # index_scans (the reconciler's lanes: db.h), beside generic plans and
    # the timeout, kept across a reconnect
    d = Driver(dsn, pw, stmt_timeout_ms=200, generic_plans=True, index_scans=True)
    for name, q, v in (("ss", "SHOW enable_seqscan", "off"),
                       ("jit", "SHOW jit", "off"),
                       ("pcm", "SHOW plan_cache_mode", "force_generic_plan"),
                       ("st", "SHOW statement_timeout", "200ms")):
        r = expect(d.cmd("q %s|%s" % (name, q)), 0, q)
        assert r["v"] == v, (q, r)
    kill_backend(pg, d)
    r, _ = wait_rc(d, "q ss|SHOW enable_seqscan", 0, 10, "index scans after reconnect")
    assert r["v"] == "off", r
    d.close()

    # wrong password: db_open still succeeds, the handle stays down
    d = Driver(dsn, "not-the-password")
    assert d.first["up"] == "0", d.first
    expect(d.cmd("q one|SELECT 1"), EDB, "bad password")
    d.close()


def kill_backend(pg, d):
    """Terminates d's server session from outside; d does not know yet."""
    pid = expect(d.cmd("q pid|SELECT pg_backend_pid()"), 0, "pid")["v"]
    pg.psql("SELECT pg_terminate_backend(%s)", (int(pid),))
    # the backend is gone once the server no longer lists it
    deadline = time.monotonic() + 10
    while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                  (int(pid),))[0][0] != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"backend {pid} still alive")
        time.sleep(0.02)


def state(r, want, what):
    if r.get("db") != want:
        raise AssertionError(f"{what}: handle should be {want}: {r['_line']}")
    return r


INS = "p ins|INSERT INTO public.dbt VALUES ($1::int)|"


def test_state_machine(pg, dsn, pw):
    """Every transition of the handle (db.c, docs/failure-model.md).  The
    bound for coming back is one reconnect: the first attempt after a break
    is immediate, so a healthy server answers the next call."""
    pg.psql("CREATE TABLE IF NOT EXISTS public.dbt (k int PRIMARY KEY)")
    pg.psql("GRANT SELECT, INSERT ON public.dbt TO kasir_ingest_owner")
    d = Driver(dsn, pw)
    state(d.cmd("state"), "idle", "after open")
    state(expect(d.cmd("begin"), 0, "begin"), "in_tx", "BEGIN")
    state(expect(d.cmd("commit"), 0, "commit"), "idle", "COMMIT")

    # IDLE, break seen by an autocommit statement -> BROKEN -> IDLE
    kill_backend(pg, d)
    state(expect(d.cmd("q one|SELECT 1"), EDB, "idle break"), "broken",
          "break seen in autocommit")
    state(expect(d.cmd("q one|SELECT 1"), 0, "reconnect"), "idle",
          "next statement reconnects")

    # IN_TX, break seen by a statement -> TX_LOST; statements of the lost
    # transaction fail without I/O; ROLLBACK -> BROKEN -> next call IDLE
    expect(d.cmd("begin"), 0, "begin")
    kill_backend(pg, d)
    state(expect(d.cmd(INS + "100"), EDB, "in-tx break"), "tx_lost",
          "break seen by a statement in a transaction")
    state(expect(d.cmd(INS + "101"), EDB, "lost tx statement"), "tx_lost",
          "a statement of the lost transaction")
    state(expect(d.cmd("sql SAVEPOINT x"), EDB, "lost tx savepoint"),
          "tx_lost", "a savepoint of the lost transaction")
    state(expect(d.cmd("rollback"), 0, "rollback"), "broken",
          "ROLLBACK ends a lost transaction")
    state(expect(d.cmd("q one|SELECT 1"), 0, "after lost tx"), "idle",
          "autocommit after the lost transaction")

    # TX_LOST -> db_ensure() (loops that ensure before BEGIN) -> IDLE
    expect(d.cmd("begin"), 0, "begin")
    kill_backend(pg, d)
    state(expect(d.cmd(INS + "102"), EDB, "in-tx break"), "tx_lost", "lost")
    state(expect(d.cmd("ensure"), 0, "ensure after a lost tx"), "idle",
          "db_ensure ends a lost transaction and reconnects")

    # TX_LOST -> db_begin() -> IN_TX (a new transaction)
    expect(d.cmd("begin"), 0, "begin")
    kill_backend(pg, d)
    expect(d.cmd(INS + "103"), EDB, "in-tx break")
    state(expect(d.cmd("begin"), 0, "begin after a lost tx"), "in_tx",
          "db_begin ends a lost transaction")
    expect(d.cmd("rollback"), 0, "rollback")

    # TX_LOST -> db_commit() -> KASIR_EDB (nothing was sent) -> BROKEN
    expect(d.cmd("begin"), 0, "begin")
    kill_backend(pg, d)
    expect(d.cmd(INS + "104"), EDB, "in-tx break")
    state(expect(d.cmd("commit"), EDB, "commit of a lost tx"), "broken",
          "COMMIT of a lost transaction")
    state(expect(d.cmd("q one|SELECT 1"), 0, "after"), "idle", "after")

    # IN_TX, break first seen by ROLLBACK -> BROKEN (never TX_LOST): the
    # regression of issue 12, where every later call was refused forever
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd(INS + "105"), 0, "insert")
    kill_backend(pg, d)
    state(expect(d.cmd("rollback"), 0, "rollback on a dead session"),
          "broken", "break seen by ROLLBACK")
    state(expect(d.cmd("ensure"), 0, "ensure after"), "idle",
          "db_ensure after a break seen by ROLLBACK")
    expect(d.cmd("begin"), 0, "begin")
    kill_backend(pg, d)
    expect(d.cmd("rollback"), 0, "rollback on a dead session")
    state(expect(d.cmd("q one|SELECT 1"), 0, "autocommit after"), "idle",
          "autocommit after a break seen by ROLLBACK")

    # IN_TX, break first seen by COMMIT -> EDBUNKNOWN, BROKEN
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd(INS + "106"), 0, "insert")
    kill_backend(pg, d)
    state(expect(d.cmd("commit"), EDBUNKNOWN, "commit on a dead session"),
          "broken", "break seen by COMMIT")
    state(expect(d.cmd("q one|SELECT 1"), 0, "after"), "idle", "after")

    # IN_TX, break first seen by a pipeline -> TX_LOST -> ROLLBACK
    expect(d.cmd("begin"), 0, "begin")
    kill_backend(pg, d)
    state(expect(d.cmd("pipe pins|INSERT INTO public.dbt VALUES ($1::int)|107"),
                 EDB, "pipeline on a dead session"), "tx_lost",
          "break seen by a pipeline")
    state(expect(d.cmd("rollback"), 0, "rollback"), "broken", "rollback")
    state(expect(d.cmd("pipe pins|INSERT INTO public.dbt VALUES ($1::int)|108"),
                 0, "pipeline after"), "idle", "autocommit pipeline after")
    assert (108,) in pg.psql("SELECT k FROM public.dbt ORDER BY k")
    for k in range(100, 108):
        assert (k,) not in pg.psql("SELECT k FROM public.dbt"), \
            f"row {k} of a lost transaction was committed"

    # the server stopped (-m immediate) while the handle sits in a
    # transaction whose next call is ROLLBACK, then started again: the
    # reproduction of issue 12.  While down: BROKEN, fast failures; once
    # up: back within the backoff (at most 5 s) plus connect time.
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd(INS + "109"), 0, "insert")
    pg.stop("immediate")
    state(expect(d.cmd("rollback"), 0, "rollback, server down"), "broken",
          "ROLLBACK with the server down")
    for _ in range(3):
        state(expect(d.cmd("ensure"), EDB, "ensure, server down"), "broken",
              "down")
        state(expect(d.cmd("rollback"), 0, "rollback while broken"),
              "broken", "rollback while broken")
    # rollback while broken must not reset the backoff: 200 ensures with
    # rollbacks in between still fail fast
    r = d.cmd("ensure_loop 200")
    assert int(r["ms"]) < 1500, f"db_ensure slept: {r}"
    pg.start()
    r, took = wait_rc(d, "ensure", 0, 5 + 2 + 1, "ensure after the restart")
    state(r, "idle", "after the restart")
    expect(d.cmd("q one|SELECT 1"), 0, "autocommit after the restart")
    # same with a statement as the first to see it
    expect(d.cmd("begin"), 0, "begin")
    pg.stop("immediate")
    state(expect(d.cmd(INS + "110"), EDB, "statement, server down"),
          "tx_lost", "statement with the server down")
    pg.start()
    r, _ = wait_rc(d, "begin", 0, 5 + 2 + 1, "begin after the restart")
    state(r, "in_tx", "begin after the restart")
    expect(d.cmd("rollback"), 0, "rollback")
    d.close()


def write(dirpath, name, text):
    with open(os.path.join(dirpath, name), "w") as f:
        f.write(text)


def test_migrations(pg, dsn, pw, tmp):
    mdir = os.path.join(tmp, "mig")
    os.makedirs(mdir)
    # name order is strcmp order: 0002 depends on 0001
    write(mdir, "0002_more.sql",
          "ALTER TABLE ingest.t1 ADD COLUMN note text;\n"
          "INSERT INTO ingest.t1 (id, note) VALUES (2, 'two');\n")
    write(mdir, "0001_first.sql",
          "CREATE TABLE ingest.t1 (id int PRIMARY KEY);\n"
          "INSERT INTO ingest.t1 VALUES (1);\n"
          "GRANT SELECT ON ingest.t1 TO kasir_ingest;\n")
    write(mdir, "README", "not a migration")

    d = Driver(dsn, pw)
    r = d.cmd("applied ingest " + mdir)
    assert r["applied"] == "0", r
    r = expect(d.cmd(f"migrate ingest kasir_ingest {mdir}"), 0, "migrate")
    rows = pg.psql("SELECT version FROM ingest.schema_migrations ORDER BY version")
    # the backbone's migrations (0000_stream, 0001_stream_pending,
    # 0002_stream_source, 0003_stream_tick, 0004_stream_log) first, then the directory's;
    # listed here in name order
    assert rows == [("0000_stream",), ("0001_first",), ("0001_stream_pending",),
                    ("0002_more",), ("0002_stream_source",), ("0003_stream_tick",), ("0004_stream_log",)], rows
    assert pg.psql("SELECT id, note FROM ingest.t1 ORDER BY id") == \
        [(1, None), (2, "two")]
    # the backbone tables exist
    assert pg.psql("SELECT to_regclass('ingest.stream_out') IS NOT NULL")[0][0]
    assert d.cmd("applied ingest " + mdir)["applied"] == "1"

    # applied once: running again changes nothing
    expect(d.cmd(f"migrate ingest kasir_ingest {mdir}"), 0, "migrate again")
    assert pg.psql("SELECT count(*) FROM ingest.t1")[0][0] == 2

    # a new file is missing until applied
    write(mdir, "0003_bad.sql",
          "CREATE TABLE ingest.t3 (id int);\n"
          "INSERT INTO ingest.nope VALUES (1);\n")
    assert d.cmd("applied ingest " + mdir)["applied"] == "0"
    r = d.cmd(f"migrate ingest kasir_ingest {mdir}")
    assert r["rc"] == ESQL, r
    assert "0003_bad" in r["_line"] and "nope" in r["_line"], r
    # rolled back whole: neither the table nor the record
    assert pg.psql("SELECT to_regclass('ingest.t3')")[0][0] is None
    assert pg.psql("SELECT count(*) FROM ingest.schema_migrations "
                   "WHERE version = '0003_bad'")[0][0] == 0
    os.unlink(os.path.join(mdir, "0003_bad.sql"))
    d.close()


def test_concurrent_migrators(pg, dsn, pw, tmp):
    """Two migrators at once: the advisory lock serialises them.  Without
    it the second would fail on CREATE TABLE / the duplicate record."""
    mdir = os.path.join(tmp, "mig2")
    os.makedirs(mdir)
    write(mdir, "0001_slow.sql",
          "CREATE TABLE orders.slow (id int);\n"
          "SELECT pg_sleep(1.5);\n"
          "INSERT INTO orders.slow VALUES (1);\n")
    odsn = dsn.replace("user=kasir_ingest_owner", "user=kasir_order_owner")
    opw = pg.password("kasir_order_owner")
    drivers = [Driver(odsn, opw) for _ in range(2)]
    results = [None, None]

    def run(i):
        results[i] = drivers[i].cmd(f"migrate orders kasir_order {mdir}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.monotonic() - t0
    for i, r in enumerate(results):
        assert r is not None and r["rc"] == 0, f"migrator {i}: {r}"
    assert took >= 1.4, took
    assert pg.psql("SELECT count(*) FROM orders.slow")[0][0] == 1
    assert pg.psql("SELECT version FROM orders.schema_migrations ORDER BY 1") == \
        [("0000_stream",), ("0001_slow",), ("0001_stream_pending",),
         ("0002_stream_source",), ("0003_stream_tick",), ("0004_stream_log",)]
    for d in drivers:
        d.close()


def test_liveness(pg, dsn, pw):
    """A loop's liveness (liveness.h) follows work done: a server that
    refuses every write (read-only after a failover; disk full; a
    privilege revoked; a statement timeout) must not keep the loop alive
    through its BEGIN, its SELECTs and its ROLLBACK, which still succeed;
    a committed transaction brings it back.  And the client socket keeps
    TCP keepalives and an unacknowledged-data timeout, so a server that
    vanishes without a FIN ends the wait (db_pg_connect)."""
    pg.psql("CREATE TABLE IF NOT EXISTS public.dbt (k int PRIMARY KEY)")
    pg.psql("GRANT SELECT, INSERT, UPDATE ON public.dbt TO kasir_ingest_owner")
    d = Driver(dsn, pw)
    r = expect(d.cmd("sockopt"), 0, "socket options")
    assert (r["keepalive"], r["idle"], r["intvl"], r["cnt"], r["user_timeout"]) == \
        ("1", "10", "5", "3", "20000"), r
    expect(d.cmd("loop"), 0, "loop")
    expect(d.cmd("q one|SELECT 1"), 0, "select")
    assert int(expect(d.cmd("live"), 0, "live")["ok_age_ms"]) < 500
    # the whole server read-only, as after a failover to a standby: the
    # session's own commands cannot change it back
    pg.psql("ALTER SYSTEM SET default_transaction_read_only = on")
    pg.psql("SELECT pg_reload_conf()")
    try:
        time.sleep(1.0)
        for k in (9100, 9101, 9102):
            if k == 9101:
                time.sleep(1.0)  # the first refusal is 1 s old
            expect(d.cmd("begin"), 0, "begin")
            expect(d.cmd("q one|SELECT 1"), 0, "a select inside")
            r = expect(d.cmd(f"p ins|INSERT INTO public.dbt VALUES ($1::int)|{k}"), ESQL,
                       "insert refused")
            assert r["state"] == "25006", r
            expect(d.cmd("rollback"), 0, "rollback")
        expect(d.cmd("begin"), 0, "begin")
        age = int(expect(d.cmd("live"), 0, "live")["ok_age_ms"])
        assert age >= 1000, f"a refused loop counted alive by BEGIN/SELECT/ROLLBACK ({age} ms)"
        expect(d.cmd("rollback"), 0, "rollback")
    finally:
        pg.psql("ALTER SYSTEM RESET default_transaction_read_only")
        pg.psql("SELECT pg_reload_conf()")
    time.sleep(1.0)
    # an idle pass (a claim that finds nothing, then ROLLBACK) brings it
    # back once the server takes writes again
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd("q upd|UPDATE public.dbt SET k = k WHERE k = -1"), 0, "an update of no row")
    expect(d.cmd("rollback"), 0, "rollback")
    assert int(expect(d.cmd("live"), 0, "live")["ok_age_ms"]) < 500, "alive after an idle pass"
    expect(d.cmd("begin"), 0, "begin")
    expect(d.cmd("p ins|INSERT INTO public.dbt VALUES ($1::int)|9103"), 0, "insert")
    expect(d.cmd("commit"), 0, "commit")
    assert int(expect(d.cmd("live"), 0, "live")["ok_age_ms"]) < 500, "alive after a commit"
    d.close()


def main():
    if not os.path.exists(os.path.join(kasirtest.build_dir(), "tests", "db-driver")):
        raise AssertionError("db-driver not built")
    with kasirtest.Stack.for_test() as st:
        pg = st.pg
        dsn = f"host=127.0.0.1 port={pg.port} dbname=kasir user=kasir_ingest_owner"
        pw = pg.password("kasir_ingest_owner")
        with tempfile.TemporaryDirectory() as tmp:
            for name, fn in (("reconnect", lambda: test_reconnect(pg, dsn, pw)),
                             ("transactions", lambda: test_transactions(pg, dsn, pw)),
                             ("liveness", lambda: test_liveness(pg, dsn, pw)),
                             ("state machine", lambda: test_state_machine(pg, dsn, pw)),
                             ("migrations", lambda: test_migrations(pg, dsn, pw, tmp)),
                             ("concurrent migrators",
                              lambda: test_concurrent_migrators(pg, dsn, pw, tmp))):
                print(f"--- {name}", flush=True)
                fn()
                print(f"ok  {name}", flush=True)


if __name__ == "__main__":
    main()
