"""kasirtest's port claims (free_port): a process's claims are removed when it
exits, and a stale claim another user left (root's, in the shared sticky
directory) does not make a port unusable for a normal user.  After a day of
root's runs on one machine 11,968 of the 12,001 ports were claimed and the
dev stack could not start as a normal user."""

import os
import pwd
import subprocess
import tempfile
import textwrap

import kasirtest

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "lib")
PY = "/usr/bin/python3"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def child(claims, lo, hi, code, user=None):
    """Runs code with kasirtest's claim directory and port range set."""
    script = textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {LIB!r})
        import kasirtest
        kasirtest._PORT_CLAIMS = {claims!r}
        kasirtest._PORT_RANGE = ({lo}, {hi})
        """) + textwrap.dedent(code)
    argv = [PY, "-c", script]
    if user is not None:
        argv = ["runuser", "-u", user, "--"] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def dead_pid():
    """A pid no process has now."""
    pid = 4194000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


with tempfile.TemporaryDirectory(prefix="kasir-ports-") as top:
    claims = os.path.join(top, "claims")
    os.mkdir(claims)
    os.chmod(top, 0o755)
    os.chmod(claims, 0o1777)  # as /tmp/kasirtest-ports: shared, sticky

    # a claim lives while its process does and is gone after it exits
    r = child(claims, 20000, 32000, """\
        import os
        p = kasirtest.free_port()
        print(p, os.path.exists(os.path.join(kasirtest._PORT_CLAIMS, str(p))))
        """)
    out = r.stdout.split()
    check(r.returncode == 0 and len(out) == 2 and out[1] == "True",
          f"free_port claims its port while the process runs ({r.stdout.strip()}{r.stderr.strip()})")
    if r.returncode == 0 and out:
        check(not os.path.exists(os.path.join(claims, out[0])),
              "the claim is removed when the process exits")
    check(os.listdir(claims) == [], "no claim is left behind")

    # a process never gets a port it already has: a range of two ports
    # gives two different ones, and a third call finds none
    r = child(claims, 31897, 31898, """\
        a, b = kasirtest.free_port(), kasirtest.free_port()
        print(a, b)
        try:
            print(kasirtest.free_port())
        except kasirtest.HarnessError as e:
            print("none:", e)
        """)
    out = r.stdout.split()
    check(r.returncode == 0 and len(out) >= 3 and out[0] != out[1] and out[2] == "none:",
          f"one process gets each port once ({r.stdout.strip()}{r.stderr.strip()[-200:]})")

    # another process's live claim is respected: the only port of the
    # range is claimed by this (live) process
    with open(os.path.join(claims, "31899"), "w") as f:
        f.write(str(os.getpid()))
    r = child(claims, 31899, 31899, "print(kasirtest.free_port())")
    check(r.returncode != 0 and "no free TCP port" in r.stderr,
          "a port claimed by a live process is not handed out again")
    os.unlink(os.path.join(claims, "31899"))

    # stale claims of another user: every port of a small range claimed by
    # root for a process that has exited; a normal user still gets a port
    if os.geteuid() == 0:
        user = "nobody"
        pwd.getpwnam(user)
        kasirtest._make_traversable(LIB)  # the child imports kasirtest
        lo, hi = 31900, 31999
        stale = str(dead_pid())
        for port in range(lo, hi + 1):
            with open(os.path.join(claims, str(port)), "w") as f:
                f.write(stale)
        r = child(claims, lo, hi, "print(kasirtest.free_port())", user=user)
        check(r.returncode == 0 and r.stdout.strip().isdigit(),
              "a normal user gets a port where root's stale claims fill the range "
              f"({r.stdout.strip()}{r.stderr.strip()[-200:]})")
        # root takes its own stale claims over
        r = child(claims, lo, hi, "print(kasirtest.free_port())")
        check(r.returncode == 0 and r.stdout.strip().isdigit(),
              f"root takes a stale claim over ({r.stdout.strip()}{r.stderr.strip()[-200:]})")
    else:
        print("note: the other-user case needs root to write root's claims; "
              "tests/run-all runs as root")

if failures:
    print(f"{len(failures)} failure(s)")
    raise SystemExit(1)
print("all port-claim checks passed")
