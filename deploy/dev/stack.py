"""deploy/dev/stack.py - the dev stack behind deploy/dev/up, down and status.

    /usr/bin/python3 deploy/dev/stack.py up|down|status
    /usr/bin/python3 deploy/dev/stack.py stop|start NAME

Uses tests/lib/kasirtest.py (the same PostgreSQL cluster, secrets, config
rendering and fakes as the integration tests), with a persistent layout:

    var/            0700: nobody else reads the mail, logs or secrets in it
    var/pg/         PostgreSQL cluster (as root: runs as user kasirpg, and
                    var/pg is a symlink to /var/tmp/kasir-pg-<hash>, 0700,
                    kasirpg's, since kasirpg cannot enter var/)
    var/secrets/    generated once (0700, files 0600)
    var/etc/        rendered configs (<svc>.yaml)
    var/run/        admin sockets, <program>.pid, supervise.pid, supervise.json,
                    <program>.stopped (held by deploy/dev/stop)
    var/log/        one log per program + supervise.log
    var/mail/       messages received by the SMTP sink
    var/whatsapp/   messages.jsonl of the fake WhatsApp API
    var/fake-midtrans/state.json  the fake Midtrans's transactions (kept
                    across down/up, as Midtrans keeps them)
    var/dev.env     shell KEY=value lines (source it)
    var/ports.json  port allocation (kept between runs)

Environment: KASIR_DEV_VAR (default <src>/var), KASIR_DEV_BUILD_DIR (default
<src>/build), KASIR_DEV_READY_TIMEOUT (seconds, default 60).

`up` is idempotent: it reuses the cluster, secrets and ports; if the
supervisor already runs the same programs it leaves them alone, otherwise it
restarts the supervisor with the new set (e.g. after a daemon got built);
either way it starts whatever is down, programs held by `stop` included.

The supervisor restarts any exit nobody asked for (Restart=always).  `stop
NAME` (kasir-order or order, ...) stops one program on purpose and it stays
stopped (a drill: "kasir-notifier is down") until `start NAME` or `up`.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))

import kasirtest  # noqa: E402

VAR = os.path.abspath(os.environ.get("KASIR_DEV_VAR") or os.path.join(SRC, "var"))
BUILD = os.path.abspath(os.environ.get("KASIR_DEV_BUILD_DIR") or os.path.join(SRC, "build"))
READY_TIMEOUT = float(os.environ.get("KASIR_DEV_READY_TIMEOUT", "60"))
RUN = os.path.join(VAR, "run")
SUPERVISE_PID = os.path.join(RUN, "supervise.pid")
SUPERVISE_CONF = os.path.join(RUN, "supervise.json")
MIDTRANS_STATE = os.path.join(VAR, "fake-midtrans", "state.json")
STOP_WAIT = 20.0  # the supervisor's SIGTERM..SIGKILL is 10 s

PROGRAM_NAMES = {
    "ingest": "kasir-ingest", "order": "kasir-order", "notifier": "kasir-notifier",
    "reconciler": "kasir-reconciler", "fake-midtrans": "kasir-fake-midtrans",
    "smtp-sink": "smtp-sink", "whatsapp-fake": "whatsapp-fake",
}


def say(msg):
    print(f"dev: {msg}", flush=True)


def make_stack():
    return kasirtest.Stack(VAR, log_dir="log", etc_dir="etc", build=BUILD, src=SRC,
                           strict_exit=False, remove_on_success=False, watchdog=False,
                           private=True)


def pid_alive(pid, needle=None):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if needle:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle.encode() not in f.read():
                    return False
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except OSError:
            return False
    return True


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def supervisor_pid():
    pid = read_pid(SUPERVISE_PID)
    if pid and pid_alive(pid, "supervise.py"):
        return pid
    return None


def programs(st):
    """(key, program spec) for every daemon that is built and every fake."""
    out = []
    for f in kasirtest.FAKES:
        if os.path.exists(st.fake_path(f)):
            out.append(f)
        else:
            say(f"{f}: {st.fake_path(f)} missing, not started")
    for d in kasirtest.DAEMONS:
        if st.available(d):
            out.append(d)
        else:
            say(f"{d}: not built or no config template yet ({st.binary(d)}), not started")
    specs = []
    for key in out:
        name = PROGRAM_NAMES[key]
        argv = st.command(key)
        if key == "fake-midtrans":
            # Midtrans remembers its transactions across our restarts
            os.makedirs(os.path.dirname(MIDTRANS_STATE), exist_ok=True)
            argv = argv + ["--state-file", MIDTRANS_STATE]
        specs.append({"key": key, "name": name, "argv": argv, "cwd": VAR,
                      "log": os.path.join(st.log_dir, f"{name}.log"),
                      "pidfile": os.path.join(RUN, f"{name}.pid"),
                      "hold": hold_path(name)})
    return specs


def hold_path(name):
    return os.path.join(RUN, f"{name}.stopped")


def program_name(arg):
    """kasir-order, order -> kasir-order; None when unknown."""
    if arg in PROGRAM_NAMES:
        return PROGRAM_NAMES[arg]
    return arg if arg in PROGRAM_NAMES.values() else None


def supervised():
    """The program specs the running supervisor was started with."""
    try:
        with open(SUPERVISE_CONF) as f:
            return json.load(f).get("programs") or []
    except (OSError, ValueError):
        return []


def write_env(st):
    env = {
        "KASIR_VAR": VAR,
        "KASIR_DATABASE_URL": st.pg.superuser_url(),
        "KASIR_INGEST_URL": st.url("ingest"),
        "KASIR_API_URL": st.url("api"),
        "KASIR_API_TOKEN": st.secret("api-token"),
        "KASIR_FAKE_MIDTRANS_URL": st.url("fake_midtrans"),
        "MIDTRANS_SERVER_KEY_FILE": st.secret_path("midtrans-server-key"),
        "KASIR_SMTP_MAILDIR": st.mail_dir,
        "KASIR_SMTP_CONTROL_URL": st.url("smtp_control"),
        "KASIR_WHATSAPP_LOG": st.whatsapp_log,
        "KASIR_WHATSAPP_URL": st.url("whatsapp"),
        "KASIR_CONFIG_DIR": st.etc_dir,
        "KASIR_LOG_DIR": st.log_dir,
    }
    for d in kasirtest.DAEMONS:
        if not os.path.exists(st.template_path(d)):
            continue
        listen = st.config_value(d, "admin.listen")
        sock = st.config_value(d, "admin.socket")
        if listen:
            env[f"KASIR_{d.upper()}_ADMIN_URL"] = f"http://{listen}"
        if sock:
            env[f"KASIR_{d.upper()}_SOCKET"] = sock
    if os.path.exists(st.template_path("kasirctl")):
        env["KASIRCTL_CONFIG"] = st.render("kasirctl")
    path = os.path.join(VAR, "dev.env")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# written by deploy/dev/up; source it: . var/dev.env\n")
        for k, v in env.items():
            f.write(f"{k}={shlex.quote(str(v))}\n")
    os.replace(path + ".tmp", path)
    return path


def start_supervisor(st, specs):
    conf = {"pidfile": SUPERVISE_PID,
            "programs": [{k: v for k, v in s.items() if k != "key"} for s in specs]}
    with open(SUPERVISE_CONF, "w") as f:
        json.dump(conf, f, indent=1)
    log = open(os.path.join(st.log_dir, "supervise.log"), "ab")
    subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "supervise.py"), SUPERVISE_CONF],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                     cwd=VAR, start_new_session=True)
    log.close()
    kasirtest.wait_until(supervisor_pid, 10, "the supervisor's pid file")


def stop_supervisor(timeout=40):
    pid = supervisor_pid()
    if not pid:
        return
    say(f"stopping supervisor (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, "supervise.py") and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid, "supervise.py"):
        say("supervisor did not stop: SIGKILL")
        os.kill(pid, signal.SIGKILL)


def kill_leftovers():
    """Programs whose pid file survived (supervisor killed hard)."""
    if not os.path.isdir(RUN):
        return
    for n in os.listdir(RUN):
        if not n.endswith(".pid") or n == "supervise.pid":
            continue
        path = os.path.join(RUN, n)
        pid = read_pid(path)
        name = n[:-4]
        if pid and pid_alive(pid, name):
            say(f"{name}: still running (pid {pid}), SIGKILL")
            os.kill(pid, signal.SIGKILL)
        os.unlink(path)


def wait_ready(st, specs):
    bad = []
    deadline = time.monotonic() + READY_TIMEOUT
    for s in specs:
        probes = st.ready_probe(s["key"])

        def ready():
            return kasirtest.probe_ok(probes)
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        if ready():
            say(f"{s['name']}: ready (pid {read_pid(s['pidfile'])})")
        else:
            bad.append(s)
            say(f"{s['name']}: NOT ready ({probes}); tail of {s['log']}:\n"
                + kasirtest._tail(s["log"], 20))
    return bad


def up():
    # var/ holds mail, logs and secrets: nobody else's (kasirtest private)
    os.makedirs(VAR, mode=0o700, exist_ok=True)
    os.chmod(VAR, 0o700)
    os.makedirs(RUN, exist_ok=True)
    st = make_stack()
    running = supervisor_pid()
    if not running:
        busy = st.release_busy_ports()
        if busy:
            say(f"ports taken by something else, re-allocated: {', '.join(busy)}")
    st.setup()  # secrets, PostgreSQL (reused when running), bootstrap
    say(f"PostgreSQL: {st.pg.superuser_url()}")
    specs = programs(st)
    for s in specs:  # up starts what is down, held programs included
        if os.path.exists(s["hold"]):
            say(f"{s['name']}: was stopped with deploy/dev/stop, starting it")
            os.unlink(s["hold"])
    want = [{k: v for k, v in s.items() if k != "key"} for s in specs]
    if running:
        try:
            with open(SUPERVISE_CONF) as f:
                have = json.load(f).get("programs")
        except (OSError, ValueError):
            have = None
        if have == want:
            say(f"supervisor already running (pid {running}) with the same programs")
        else:
            say("program set changed: restarting the supervisor")
            stop_supervisor()
            running = None
    if not running:
        start_supervisor(st, specs)
        say(f"supervisor started (pid {supervisor_pid()})")
    bad = wait_ready(st, specs)
    env = write_env(st)
    say(f"environment: {env}  (source it: . {env})")
    if bad:
        say("some programs are not ready: " + ", ".join(s["name"] for s in bad))
        return 1
    say("up")
    return 0


def down():
    stop_supervisor()
    kill_leftovers()
    pg = kasirtest.PgCluster(os.path.realpath(os.path.join(VAR, "pg")))
    if pg.is_running():
        say("stopping PostgreSQL")
        pg.stop("fast")
    say("down")
    return 0


def stop_one(arg):
    """Stops one program on purpose; it stays stopped until start/up."""
    name = program_name(arg)
    if name is None:
        say(f"unknown program {arg!r}: one of {', '.join(sorted(PROGRAM_NAMES.values()))}")
        return 2
    if not supervisor_pid():
        say("the supervisor is not running (deploy/dev/up first)")
        return 1
    spec = next((s for s in supervised() if s["name"] == name), None)
    if spec is None or not spec.get("hold"):
        say(f"{name} is not supervised in this stack")
        return 1
    pid = read_pid(spec["pidfile"])
    with open(spec["hold"], "w") as f:
        f.write(f"stopped by deploy/dev/stop at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline and (
            os.path.exists(spec["pidfile"]) or (pid and pid_alive(pid, name))):
        time.sleep(0.1)
    if os.path.exists(spec["pidfile"]) or (pid and pid_alive(pid, name)):
        say(f"{name}: still running after {STOP_WAIT:.0f}s (see var/log/supervise.log)")
        return 1
    say(f"{name}: stopped; stays stopped until deploy/dev/start {name} (or deploy/dev/up)")
    return 0


def start_one(arg):
    name = program_name(arg)
    if name is None:
        say(f"unknown program {arg!r}: one of {', '.join(sorted(PROGRAM_NAMES.values()))}")
        return 2
    if not supervisor_pid():
        say("the supervisor is not running: deploy/dev/up starts everything")
        return 1
    spec = next((s for s in supervised() if s["name"] == name), None)
    if spec is None:
        say(f"{name} is not supervised in this stack")
        return 1
    unlink_quiet(spec["hold"])
    key = next(k for k, v in PROGRAM_NAMES.items() if v == name)
    st = make_stack()
    bad = wait_ready(st, [dict(spec, key=key)])
    return 1 if bad else 0


def unlink_quiet(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def status():
    rc = 0
    pid = supervisor_pid()
    say(f"supervisor: {'pid %d' % pid if pid else 'not running'}")
    if not pid:
        rc = 1
    for s in supervised():
        p = read_pid(s["pidfile"])
        if s.get("hold") and os.path.exists(s["hold"]):
            say(f"{s['name']}: stopped (deploy/dev/stop; deploy/dev/start {s['name']})")
        elif p and pid_alive(p):
            say(f"{s['name']}: pid {p} running")
        else:
            say(f"{s['name']}: DOWN")
    pg = kasirtest.PgCluster(os.path.realpath(os.path.join(VAR, "pg")))
    run = pg.is_running()
    say(f"PostgreSQL: {'running on port %s' % pg.port if run else 'not running'}")
    return rc if run else 1


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "up":
        return up()
    if cmd == "down":
        return down()
    if cmd == "status":
        return status()
    if cmd in ("stop", "start") and len(sys.argv) == 3:
        return stop_one(sys.argv[2]) if cmd == "stop" else start_one(sys.argv[2])
    print("usage: stack.py up|down|status, stack.py stop|start NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except kasirtest.HarnessError as e:
        print(f"dev: error: {e}", file=sys.stderr)
        sys.exit(1)
