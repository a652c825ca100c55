"""kasirtest.PgCluster: a throwaway PostgreSQL 15 cluster, run as the
unprivileged user kasirpg when we are root; start/stop/restart, auth rules."""

import os
import pwd
import shutil
import sys

import psycopg2

import kasirtest
from kasirtest import PgCluster

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


if not os.path.exists(f"{kasirtest.PG_BIN}/initdb"):
    kasirtest.skip(f"PostgreSQL 15 is not installed ({kasirtest.PG_BIN})")

base = os.path.join(kasirtest.build_dir(), "test-runs", f"harness_pg_cluster-{os.getpid()}")
shutil.rmtree(base, ignore_errors=True)
pg = PgCluster(base)
try:
    check(not pg.is_running(), "a new cluster is not running")
    pg.start()
    check(pg.is_running(), "running after start()")
    check(pg.psql("SELECT 1", db="postgres") == [(1,)], "superuser query over the unix socket")
    check(pg.psql("SHOW listen_addresses", db="postgres") == [("127.0.0.1",)], "listens on 127.0.0.1 only")
    check(pg.psql("SHOW max_connections", db="postgres") == [("200",)], "max_connections = 200")
    check(pg.psql("SHOW shared_buffers", db="postgres") == [("128MB",)], "shared_buffers = 128MB")
    check(pg.psql("SHOW synchronous_commit", db="postgres") == [("on",)], "synchronous_commit = on")
    check(pg.psql("SHOW fsync", db="postgres") == [("on",)], "fsync = on by default (durable)")

    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        pm_pid = int(f.readline())
    pm_uid = os.stat(f"/proc/{pm_pid}").st_uid
    if os.geteuid() == 0:
        kpg = pwd.getpwnam(kasirtest.PG_OS_USER)
        check(pm_uid == kpg.pw_uid, f"as root the postmaster runs as {kasirtest.PG_OS_USER} (uid {pm_uid})")
        check(os.stat(pg.data).st_uid == kpg.pw_uid, "data dir owned by kasirpg")
    else:
        check(pm_uid == os.geteuid(), "as a normal user the postmaster runs as that user")
    check(oct(os.stat(pg.data).st_mode & 0o777) == "0o700", "data dir is 0700")
    check(oct(os.stat(pg.sockdir).st_mode & 0o777) == "0o700", "socket dir is 0700")

    # TCP needs a password, even for the superuser
    try:
        psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                         connect_timeout=5).close()
        check(False, "superuser over TCP without password refused")
    except psycopg2.OperationalError as e:
        check("password" in str(e), f"superuser over TCP without password refused ({str(e).strip()})")

    # stop / restart modes; data survives
    pg.psql("CREATE TABLE keep(x int); INSERT INTO keep VALUES (42)", db="postgres")
    port = pg.port
    pg.restart("immediate")
    check(pg.psql("SELECT x FROM keep", db="postgres") == [(42,)], "data survives an immediate restart")
    pg.stop("fast")
    check(not pg.is_running(), "stopped after stop('fast')")
    try:
        pg.psql("SELECT 1", db="postgres")
        check(False, "no connection while stopped")
    except psycopg2.OperationalError:
        check(True, "no connection while stopped")

    # a second PgCluster over the same dir reuses the cluster and its port
    pg2 = PgCluster(base)
    check(pg2.port == port and pg2.sockdir == pg.sockdir, "state (port, socket dir) reused")
    pg2.start()
    check(pg2.psql("SELECT x FROM keep", db="postgres") == [(42,)], "restarted cluster keeps its data")
    pg2.stop("smart")
    check(not pg2.is_running(), "stopped after stop('smart')")
finally:
    if pg.is_running():
        pg.stop("immediate")

# clusters copied from a template (what Stack.for_test uses): the template
# is made once, every copy is a cluster of its own, fsync = off unless
# durable=True
tdir = os.path.join(base, "template")
copies = []
try:
    a = PgCluster(os.path.join(base, "a"), durable=False, template=tdir)
    copies.append(a)
    a.start()
    stamp = os.stat(os.path.join(tdir, "stamp")).st_mtime_ns
    check(a.psql("SHOW fsync", db="postgres") == [("off",)], "durable=False: fsync = off")
    check(a.psql("SHOW synchronous_commit", db="postgres") == [("on",)],
          "durable=False: synchronous_commit stays on")
    a.psql("CREATE TABLE only_in_a(x int)", db="postgres")
    b = PgCluster(os.path.join(base, "b"), durable=True, template=tdir)
    copies.append(b)
    b.start()
    check(os.stat(os.path.join(tdir, "stamp")).st_mtime_ns == stamp,
          "the second cluster copies the template (not made again)")
    check(b.psql("SHOW fsync", db="postgres") == [("on",)], "durable=True: fsync = on")
    check(b.psql("SELECT to_regclass('only_in_a') IS NULL", db="postgres") == [(True,)],
          "a copy does not see another copy's tables")
    check(not os.path.exists(os.path.join(tdir, "data", "postmaster.pid")),
          "the template itself never runs")
    if os.geteuid() == 0:
        kpg = pwd.getpwnam(kasirtest.PG_OS_USER)
        check(os.stat(b.data).st_uid == kpg.pw_uid, "a copy is owned by kasirpg")
    check(oct(os.stat(b.data).st_mode & 0o777) == "0o700", "a copy's data dir is 0700")
finally:
    for c in copies:
        if c.is_running():
            c.stop("immediate")

if failures:
    print(f"{len(failures)} failure(s); kept {base}")
    sys.exit(1)
shutil.rmtree(base)
print("all ok")
