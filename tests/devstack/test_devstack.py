"""deploy/dev/up, status, down: the dev stack in a private var dir.

- up: PostgreSQL + secrets + configs + every built daemon and the fakes
  under the supervisor; dev.env complete and usable; pid files alive;
  daemons ready
- the supervisor restarts a SIGKILLed program (new pid, pid file updated)
  and, like systemd's Restart=always, one that exited cleanly (SIGTERM ->
  status 0) without being asked to
- stop NAME: the program stays stopped (while the supervisor restarts
  others) and status says so; start NAME brings it back ready; up starts a
  stopped program too
- up twice is safe: same supervisor, same pids, same secrets, same port
- down stops everything (supervisor, programs, PostgreSQL); down twice is safe
- up after down reuses the stack, and the fake Midtrans still knows the
  demo's transaction (its state file in var/)
- as root, the same again as a normal user (PostgreSQL then runs as that user)

Daemons that are not built yet are simply not started (up says so).
"""

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys

import psycopg2

import kasirtest

SRC = kasirtest.source_dir()
BUILD = kasirtest.build_dir()
DEV_USER = "kasirdev"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ready(admin_url):
    try:
        return kasirtest.http("GET", admin_url + "/readyz").status == 200
    except OSError:  # not listening yet
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Dev:
    def __init__(self, var, user=None):
        self.var = var
        self.user = user
        self.run_dir = os.path.join(var, "run")
        self.outside = set()  # cluster directories outside var/ to remove

    def cmd(self, what, *args, timeout=300):
        env = dict(os.environ, KASIR_DEV_VAR=self.var, KASIR_DEV_BUILD_DIR=BUILD,
                   KASIR_DEV_NO_BUILD="1")
        argv = [os.path.join(SRC, "deploy", "dev", what)]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", "env",
                    *[f"{k}={env[k]}" for k in ("KASIR_DEV_VAR", "KASIR_DEV_BUILD_DIR",
                                                "KASIR_DEV_NO_BUILD", "PATH")]] + argv
        argv = argv + list(args)
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd="/")
        print(f"$ {what} {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}",
              flush=True)
        return r

    def env(self):
        out = {}
        with open(os.path.join(self.var, "dev.env")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    import shlex
                    k, v = line.rstrip("\n").split("=", 1)
                    out[k] = shlex.split(v)[0]
        return out

    def programs(self):
        with open(os.path.join(self.run_dir, "supervise.json")) as f:
            return json.load(f)["programs"]

    def pids(self):
        return {p["name"]: read_pid(p["pidfile"]) for p in self.programs()}

    def supervisor(self):
        return read_pid(os.path.join(self.run_dir, "supervise.pid"))

    def postmaster(self):
        path = os.path.join(self.var, "pg", "data", "postmaster.pid")
        return read_pid_first(path)

    def dump(self):
        logdir = os.path.join(self.var, "log")
        if os.path.isdir(logdir):
            for n in sorted(os.listdir(logdir)):
                print(f"----- {n}\n{kasirtest._tail(os.path.join(logdir, n), 30)}")


def read_pid_first(path):
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def modes(dev, label):
    """var/ is 0700 (mail, logs, secrets: issue 13, item 7) and so is the
    cluster's directory; as root the cluster lives outside var/ (kasirpg
    cannot enter it) and var/ must not have been opened to it."""
    st = os.stat(dev.var)
    check(stat.S_IMODE(st.st_mode) == 0o700,
          f"[{label}] var/ is 0700 ({oct(stat.S_IMODE(st.st_mode))})")
    for d in ("mail", "log", "secrets", "etc", "run"):
        check(os.path.isdir(os.path.join(dev.var, d)), f"[{label}] var/{d} exists")
    pg = os.path.realpath(os.path.join(dev.var, "pg"))
    check(stat.S_IMODE(os.stat(pg).st_mode) == 0o700,
          f"[{label}] the cluster's directory {pg} is 0700")
    if os.geteuid() == 0 and not dev.user:
        check(not pg.startswith(os.path.realpath(dev.var) + "/"),
              f"[{label}] as root the cluster is outside var/ ({pg})")
        dev.outside.add(pg)


def exercise(dev, label):
    r = dev.cmd("up")
    check(r.returncode == 0, f"[{label}] up succeeds")
    if r.returncode != 0:
        return
    env = dev.env()
    need = ["KASIR_DATABASE_URL", "KASIR_INGEST_URL", "KASIR_API_URL", "KASIR_API_TOKEN",
            "KASIR_FAKE_MIDTRANS_URL", "MIDTRANS_SERVER_KEY_FILE", "KASIR_SMTP_MAILDIR",
            "KASIR_WHATSAPP_LOG", "KASIR_CONFIG_DIR"]
    check(all(env.get(k) for k in need), f"[{label}] dev.env has {', '.join(need)}")
    check(env.get("KASIR_INGEST_URL", "").endswith("/midtrans/notification"),
          f"[{label}] KASIR_INGEST_URL is the full notification URL")
    check(stat.S_IMODE(os.stat(os.path.join(dev.var, "dev.env")).st_mode) == 0o600,
          f"[{label}] dev.env is 0600 (it holds the API token)")
    modes(dev, label)
    sd = os.path.join(dev.var, "secrets")
    check(stat.S_IMODE(os.stat(sd).st_mode) == 0o700 and
          all(stat.S_IMODE(os.stat(os.path.join(sd, n)).st_mode) == 0o600 for n in os.listdir(sd)),
          f"[{label}] secrets 0700/0600")
    with open(env["MIDTRANS_SERVER_KEY_FILE"]) as f:
        check(f.read().strip() != "", f"[{label}] MIDTRANS_SERVER_KEY_FILE readable")
    try:
        with psycopg2.connect(env["KASIR_DATABASE_URL"], connect_timeout=5) as c:
            with c.cursor() as cur:
                cur.execute("SELECT current_database(), array_agg(nspname ORDER BY nspname) "
                            "FROM pg_namespace WHERE nspname IN "
                            "('ingest','orders','notify','recon','ops')")
                db, schemas = cur.fetchone()
        c.close()
        check(db == "kasir" and schemas == ["ingest", "notify", "ops", "orders", "recon"],
              f"[{label}] KASIR_DATABASE_URL reaches database kasir with the five schemas")
    except psycopg2.Error as e:
        check(False, f"[{label}] KASIR_DATABASE_URL usable: {e}")

    if dev.user:
        uid = pwd.getpwnam(dev.user).pw_uid
        pm = dev.postmaster()
        check(pm is not None and os.stat(f"/proc/{pm}").st_uid == uid,
              f"[{label}] PostgreSQL runs as {dev.user}")

    sup = dev.supervisor()
    check(sup is not None and alive(sup), f"[{label}] supervisor running (pid {sup})")
    pids = dev.pids()
    names = sorted(pids)
    print(f"programs: {names}")
    check(all(p and alive(p) for p in pids.values()), f"[{label}] every program's pid file is alive")
    for d in kasirtest.DAEMONS:
        if f"kasir-{d}" in pids:
            url = env.get(f"KASIR_{d.upper()}_ADMIN_URL")
            ok = url and kasirtest.http("GET", url + "/readyz").status == 200
            check(ok, f"[{label}] kasir-{d} ready at {url}/readyz")
    r = dev.cmd("status")
    check(r.returncode == 0, f"[{label}] status says up")

    # the main job: one purchase, when the payment path is built
    if "kasir-order" in pids and "kasir-ingest" in pids:
        r = dev.cmd("demo", timeout=120)
        check(r.returncode == 0 and "PAID" in r.stdout and "access granted" in r.stdout,
              f"[{label}] demo: order PAID and access granted")
    else:
        print(f"note [{label}]: kasir-order/kasir-ingest not built: demo not run")

    # the supervisor restarts a program that dies
    victim = next((n for n in names if n.startswith("kasir-") and n != "kasir-fake-midtrans"),
                  names[0] if names else None)
    if victim:
        old = pids[victim]
        os.kill(old, signal.SIGKILL)
        try:
            new = kasirtest.wait_until(
                lambda: (lambda p: p if p and p != old and alive(p) else None)(dev.pids()[victim]),
                20, f"{victim} restarted by the supervisor")
            check(True, f"[{label}] {victim} SIGKILLed -> restarted (pid {old} -> {new})")
        except kasirtest.WaitTimeout as e:
            check(False, f"[{label}] {e}")

    # Restart=always: a clean exit nobody asked for is restarted too
    if victim:
        # only a daemon that got to its signal handlers exits 0 on SIGTERM:
        # wait until the restarted one is ready
        url = env.get(f"KASIR_{victim[len('kasir-'):].upper()}_ADMIN_URL")
        if url:
            try:
                kasirtest.wait_until(lambda: ready(url), 30, f"{victim} ready again")
            except kasirtest.WaitTimeout as e:
                check(False, f"[{label}] {e}")
        old = dev.pids()[victim]
        os.kill(old, signal.SIGTERM)  # the daemons exit 0 on SIGTERM
        try:
            new = kasirtest.wait_until(
                lambda: (lambda p: p if p and p != old and alive(p) else None)(dev.pids()[victim]),
                30, f"{victim} restarted after a clean exit")
            check(True, f"[{label}] {victim} exited cleanly -> restarted (pid {old} -> {new})")
            with open(os.path.join(dev.var, "log", "supervise.log")) as f:
                check(f"{victim}: exited with status 0 (clean, but not asked for)" in f.read(),
                      f"[{label}] supervise.log says the clean exit was not asked for")
        except kasirtest.WaitTimeout as e:
            check(False, f"[{label}] {e}")

    # stop NAME: stopped on purpose stays stopped until start NAME
    held = "kasir-notifier" if "kasir-notifier" in names else victim
    other = next((n for n in names if n not in (held, "kasir-fake-midtrans")), None)
    if held and other:
        old = dev.pids()[held]
        r = dev.cmd("stop", held)
        check(r.returncode == 0 and not alive(old) and dev.pids()[held] is None,
              f"[{label}] stop {held}: process gone, no pid file")
        # the supervisor goes on working (it restarts another program)
        # and still leaves the held one alone
        o_old = dev.pids()[other]
        os.kill(o_old, signal.SIGKILL)
        try:
            kasirtest.wait_until(
                lambda: (lambda p: p if p and p != o_old and alive(p) else None)(dev.pids()[other]),
                20, f"{other} restarted while {held} is held")
            check(dev.pids()[held] is None,
                  f"[{label}] {held} stays stopped while the supervisor restarts {other}")
        except kasirtest.WaitTimeout as e:
            check(False, f"[{label}] {e}")
        r = dev.cmd("status")
        check(f"{held}: stopped (deploy/dev/stop" in r.stdout,
              f"[{label}] status says {held} was stopped on purpose")
        r = dev.cmd("start", held)
        p = dev.pids()[held]
        check(r.returncode == 0 and p and alive(p) and "ready" in r.stdout,
              f"[{label}] start {held}: running and ready again (pid {p})")
        r = dev.cmd("stop", "no-such-program")
        check(r.returncode == 2, f"[{label}] stop of an unknown program is a usage error")

    # up twice is safe
    before_secrets = {n: open(os.path.join(sd, n)).read() for n in os.listdir(sd)}
    before_pids = dev.pids()
    port = json.load(open(os.path.join(dev.var, "pg", "cluster.json")))["port"]
    r = dev.cmd("up")
    check(r.returncode == 0, f"[{label}] second up succeeds")
    check(dev.supervisor() == sup and alive(sup), f"[{label}] second up keeps the supervisor")
    check(dev.pids() == before_pids, f"[{label}] second up keeps every program running")
    check({n: open(os.path.join(sd, n)).read() for n in os.listdir(sd)} == before_secrets,
          f"[{label}] second up keeps the secrets")
    check(json.load(open(os.path.join(dev.var, "pg", "cluster.json")))["port"] == port,
          f"[{label}] second up keeps the cluster")
    # up starts what is down: a program stopped on purpose included
    if held:
        dev.cmd("stop", held)
        r = dev.cmd("up")
        p = dev.pids()[held]
        check(r.returncode == 0 and p and alive(p) and dev.supervisor() == sup,
              f"[{label}] up starts {held}, stopped before (pid {p})")

    # the demo's transaction, to find in the fake Midtrans after down/up
    demo_order = None
    if "kasir-order" in pids:
        with psycopg2.connect(env["KASIR_DATABASE_URL"], connect_timeout=5) as c:
            with c.cursor() as cur:
                cur.execute("SELECT order_id FROM orders.orders WHERE status = 'PAID'"
                            " ORDER BY created_at LIMIT 1")
                row = cur.fetchone()
        c.close()
        demo_order = row[0] if row else None

    # down
    pm = dev.postmaster()
    all_pids = [sup, pm] + list(dev.pids().values())
    r = dev.cmd("down")
    check(r.returncode == 0, f"[{label}] down succeeds")
    try:
        kasirtest.wait_until(lambda: not any(p and alive(p) for p in all_pids), 15,
                             "every process gone")
        check(True, f"[{label}] down stopped supervisor, programs and PostgreSQL")
    except kasirtest.WaitTimeout:
        check(False, f"[{label}] still alive after down: "
              f"{[p for p in all_pids if p and alive(p)]}")
    check(not [n for n in os.listdir(dev.run_dir) if n.endswith(".pid")],
          f"[{label}] no pid file left after down")
    r = dev.cmd("down")
    check(r.returncode == 0, f"[{label}] down twice is safe")
    r = dev.cmd("status")
    check(r.returncode != 0, f"[{label}] status says down")

    # up after down reuses everything
    r = dev.cmd("up")
    check(r.returncode == 0, f"[{label}] up after down succeeds")
    check({n: open(os.path.join(sd, n)).read() for n in os.listdir(sd)} == before_secrets,
          f"[{label}] up after down reuses the secrets")
    if demo_order:
        r = kasirtest.http("GET", f"{env['KASIR_FAKE_MIDTRANS_URL']}/_fake/orders/{demo_order}")
        check(r.status == 200 and r.json.get("status") == "PAID",
              f"[{label}] the fake Midtrans still knows {demo_order} after down/up "
              f"({r.status})")
        check(os.path.exists(os.path.join(dev.var, "fake-midtrans", "state.json")),
              f"[{label}] its state is in var/fake-midtrans/state.json")
    r = dev.cmd("down")
    check(r.returncode == 0, f"[{label}] final down")


base = os.path.join(BUILD, "test-runs", f"devstack-{os.getpid()}")
shutil.rmtree(base, ignore_errors=True)
os.makedirs(base)
os.chmod(base, 0o755)
devs = [Dev(os.path.join(base, "var"))]
os.makedirs(devs[0].var, mode=0o755)  # as an older up left it: up must close it
os.chmod(devs[0].var, 0o755)
if os.geteuid() == 0:
    try:
        pwd.getpwnam(DEV_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/bash",
                        DEV_USER], check=True)
    uvar = os.path.join(base, "uservar")
    os.makedirs(uvar)
    pw = pwd.getpwnam(DEV_USER)
    os.chown(uvar, pw.pw_uid, pw.pw_gid)
    kasirtest._make_traversable(uvar)
    devs.append(Dev(uvar, user=DEV_USER))

try:
    for dev in devs:
        exercise(dev, dev.user or ("root" if os.geteuid() == 0 else "user"))
finally:
    for dev in devs:
        if dev.supervisor() and alive(dev.supervisor()) or (dev.postmaster() and alive(dev.postmaster())):
            dev.cmd("down")
    if failures:
        for dev in devs:
            dev.dump()

if failures:
    print(f"{len(failures)} failure(s); kept {base}")
    sys.exit(1)
shutil.rmtree(base, ignore_errors=True)
for dev in devs:
    for d in dev.outside:
        shutil.rmtree(d, ignore_errors=True)
print("all ok")
