"""kasirtest.Stack process management: spawn/readiness, kill, restart,
SIGTERM->SIGKILL escalation, strict exit checks, the watchdog that cleans up
after a SIGKILLed test, and log tails printed on failure."""

import os
import signal
import subprocess
import textwrap
import time

import kasirtest
from kasirtest import Stack, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
DUMMY = os.path.join(HERE, "dummy_daemon.py")
PY = "/usr/bin/python3"
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


def dummy(st, name, *args):
    port = free_port()
    st.spawn(name, [PY, DUMMY, str(port), *args], ready=("http", f"http://127.0.0.1:{port}/readyz"))
    return port


def child(code):
    """Runs code (with `st` a for_test Stack) in a separate test process."""
    script = "import kasirtest, os, sys, time, signal\n" + textwrap.dedent(code)
    env = dict(os.environ)
    return subprocess.run([PY, "-c", script], env=env, capture_output=True, text=True,
                           timeout=120)


with Stack.for_test() as st:
    # spawn + readiness + kill + restart
    port = dummy(st, "d1")
    pid1 = st.pid("d1")
    check(alive(pid1) and st.running("d1"), "spawned process is running and ready")
    check(kasirtest.http("GET", f"http://127.0.0.1:{port}/readyz").status == 200, "http helper GET")
    st.kill("d1", signal.SIGKILL)
    check(not alive(pid1) and not st.running("d1"), "kill(SIGKILL) ends it")
    st.spawn("d1", st.procs["d1"].argv, ready=st.procs["d1"].ready)
    pid2 = st.pid("d1")
    check(pid2 != pid1 and alive(pid2), "started again after kill")
    st.stop("d1")
    st.procs["d1"].signalled = None  # reuse below via restart
    st.spawn("d1", st.procs["d1"].argv, ready=st.procs["d1"].ready, wait=False)
    st.wait_ready("d1")
    code = st.stop("d1")
    check(code == 0, f"stop(): SIGTERM, clean exit status {code}")

    # SIGTERM ignored -> SIGKILL after the timeout
    dummy(st, "stubborn", "--ignore-term")
    t0 = time.monotonic()
    code = st.stop("stubborn", timeout=1)
    check(code == -signal.SIGKILL and time.monotonic() - t0 < 5,
          f"SIGTERM ignored -> SIGKILL after the timeout (status {code})")

    # a process that dies before it is ready: wait_ready fails at once with its log
    try:
        st.spawn("early", [PY, "-c", "import sys; print('boom on start'); sys.exit(5)"],
                 ready=("tcp", free_port()))
        check(False, "early death detected")
    except kasirtest.HarnessError as e:
        check("status 5" in str(e) and "boom on start" in str(e),
              "a process dying before ready fails wait_ready with its status and log")
    st.procs.pop("early")

    # wait_until names what it waited for
    try:
        st.wait_until(lambda: False, timeout=0.3, what="the moon")
        check(False, "wait_until times out")
    except kasirtest.WaitTimeout as e:
        check("the moon" in str(e), f"wait_until error names what: {e}")

    # strict exit checks (in a separate Stack so this one stays clean)
    r = child("""
        with kasirtest.Stack.for_test("strict_child", with_pg=False) as s:
            s.spawn("dies", ["/usr/bin/python3", "-c", "import time; time.sleep(0.5); raise SystemExit(3)"])
            time.sleep(1.5)
    """)
    check(r.returncode != 0 and "dies died on its own" in r.stderr,
          "a process that died on its own fails the test at close")
    check("----- tail of" in r.stderr and "kept " in r.stderr,
          "on failure: log tails printed and the run dir kept")
    r = child(f"""
        with kasirtest.Stack.for_test("asan_child", with_pg=False) as s:
            p = kasirtest.free_port()
            s.spawn("leaky", ["/usr/bin/python3", {DUMMY!r}, str(p), "--print",
                    "==1==ERROR: AddressSanitizer: heap-use-after-free"],
                    ready=("http", f"http://127.0.0.1:{{p}}/readyz"))
    """)
    check(r.returncode != 0 and "sanitizer report" in r.stderr, "a sanitizer report in a log fails the test")
    r = child(f"""
        with kasirtest.Stack.for_test("ok_child", with_pg=False) as s:
            p = kasirtest.free_port()
            s.spawn("fine", ["/usr/bin/python3", {DUMMY!r}, str(p)],
                    ready=("http", f"http://127.0.0.1:{{p}}/readyz"))
            print("DIR", s.dir)
    """)
    okdir = [l.split(" ", 1)[1] for l in r.stdout.splitlines() if l.startswith("DIR ")]
    check(r.returncode == 0 and okdir and not os.path.exists(okdir[0]),
          f"a passing test removes its run dir ({r.returncode} {r.stderr[-300:]})")
    r = child("""
        with kasirtest.Stack.for_test("skip_child", with_pg=False) as s:
            kasirtest.skip("nothing to see")
    """)
    check(r.returncode == 77, "skip() exits 77 through the context manager")

    # the watchdog: a test process killed with SIGKILL leaves nothing behind
    r = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import kasirtest, os, time, sys
        s = kasirtest.Stack.for_test("killed_child")
        s.setup()
        p = kasirtest.free_port()
        s.spawn("orphan", ["/usr/bin/python3", {DUMMY!r}, str(p)],
                ready=("http", f"http://127.0.0.1:{{p}}/readyz"))
        with open(os.path.join(s.pg.data, "postmaster.pid")) as f:
            pm = f.readline().strip()
        print(s.pid("orphan"), pm, s.dir, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    line = r.stdout.readline().split()
    check(len(line) == 3, f"killed child reported its pids: {line}")
    if len(line) == 3:
        orphan, pm, cdir = int(line[0]), int(line[1]), line[2]
        check(alive(orphan) and alive(pm), "child's process and PostgreSQL are running")
        r.kill()
        r.wait()
        try:
            kasirtest.wait_until(lambda: not alive(orphan) and not alive(pm), 30,
                                 "the watchdog to kill the orphans")
            check(True, "after SIGKILL of the test, the watchdog killed its process and PostgreSQL")
        except kasirtest.WaitTimeout as e:
            check(False, str(e))
            for pid in (orphan, pm):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        import shutil
        shutil.rmtree(cdir, ignore_errors=True)

    # the failing children kept their run dirs on purpose: remove them
    import glob
    import shutil
    runs = os.path.join(kasirtest.build_dir(), "test-runs")
    for n in ("strict_child", "asan_child"):
        for d in glob.glob(os.path.join(runs, f"{n}-*")):
            shutil.rmtree(d, ignore_errors=True)

    if failures:
        raise AssertionError(f"{len(failures)} failure(s): {failures}")
print("all ok")
