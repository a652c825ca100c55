"""deploy/smoke and deploy/rollback against a dev stack (deploy/dev/up in a
private var dir, so a developer's own var/ is never touched).

smoke:
  - passes against the running dev stack (every daemon healthy and ready,
    one order paid through the fake Midtrans, access active);
  - fails loudly (exit 1, the daemon named) when a daemon is stopped;
  - fails when the database is gone; exits 2 without an env file.
rollback (release directories):
  - PREFIX/releases/1.0.0 (the built binaries) and 1.1.0-bad (a kasir-order
    that dies at start: a broken upgrade), current -> 1.1.0-bad, the dev
    stack runs PREFIX/current/bin/*: smoke fails;
  - deploy/rollback --prefix PREFIX (no --to: the previous version) with
    the dev stack's restart switches current -> 1.0.0, restarts, and its
    smoke passes; rollback.log records it; a second rollback finds nothing
    older and refuses; --to a release whose binaries do not run is refused
    before switching.
"""
import os
import shlex
import shutil
import signal
import subprocess
import sys

import kasirtest

SRC = kasirtest.source_dir()
BUILD = kasirtest.build_dir()
SMOKE = os.path.join(SRC, "deploy", "smoke")
ROLLBACK = os.path.join(SRC, "deploy", "rollback")
DAEMONS = ("kasir-ingest", "kasir-order", "kasir-notifier", "kasir-reconciler")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(argv, env=None, timeout=300):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    out = "".join(f"  | {line}\n" for line in (r.stdout + r.stderr).splitlines())
    print(f"$ {' '.join(shlex.quote(a) for a in argv)} -> {r.returncode}\n{out}", flush=True)
    return r


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Dev:
    """deploy/dev/{up,down} with a private var dir and build dir."""

    def __init__(self, var, build):
        self.var, self.build = var, build
        self.env = dict(os.environ, KASIR_DEV_VAR=var, KASIR_DEV_BUILD_DIR=build,
                        KASIR_DEV_NO_BUILD="1")

    def cmd(self, what, **env):
        return run([os.path.join(SRC, "deploy", "dev", what)], env=dict(self.env, **env))

    def restart_cmd(self):
        """A shell command for rollback --restart: down, then up."""
        e = " ".join(f"{k}={shlex.quote(self.env[k])}"
                     for k in ("KASIR_DEV_VAR", "KASIR_DEV_BUILD_DIR", "KASIR_DEV_NO_BUILD"))
        dev = os.path.join(SRC, "deploy", "dev")
        return f"env {e} {shlex.quote(dev)}/down && env {e} {shlex.quote(dev)}/up"

    def envfile(self):
        return os.path.join(self.var, "dev.env")

    def pid(self, name):
        return read_pid(os.path.join(self.var, "run", f"{name}.pid"))


def smoke(envfile, *extra):
    return run([SMOKE, "--env", envfile, "--timeout", "30", *extra], timeout=120)


def test_smoke(base):
    dev = Dev(os.path.join(base, "var-smoke"), BUILD)
    try:
        r = dev.cmd("up")
        check(r.returncode == 0, "deploy/dev/up")
        if r.returncode != 0:
            return
        r = smoke(dev.envfile())
        check(r.returncode == 0 and "smoke: PASSED" in r.stdout, "smoke passes on the dev stack")
        check(r.stdout.count("\nok   ") >= 16, "smoke ran every check (health x4, public URL, order)")

        # A stopped daemon (SIGTERM: exit 0, the dev supervisor leaves it down).
        pid = dev.pid("kasir-notifier")
        check(pid is not None, "kasir-notifier pid file")
        if pid:
            os.kill(pid, signal.SIGTERM)
            kasirtest.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 20,
                                 "kasir-notifier stopped")
            r = smoke(dev.envfile())
            check(r.returncode == 1, f"smoke exits 1 with kasir-notifier stopped ({r.returncode})")
            check("FAIL notifier /healthz" in r.stdout and "smoke: FAILED" in r.stdout,
                  "smoke names the stopped daemon and says FAILED")
            check("smoke: FAIL notifier" in r.stderr, "the failure is on stderr too")

        # No env file at all.
        r = run([SMOKE, "--env", os.path.join(base, "nope.env")], timeout=30)
        check(r.returncode == 2, "smoke exits 2 when the env file is missing")
    finally:
        dev.cmd("down")

    # Everything down (database included): smoke fails.
    r = smoke(dev.envfile(), "--no-order")
    check(r.returncode == 1, "smoke fails when the whole stack is down")


def make_release(prefix, version, bad_order=False):
    rel = os.path.join(prefix, "releases", version, "bin")
    os.makedirs(rel)
    for d in DAEMONS + ("kasirctl",):
        src = os.path.join(BUILD, "bin", d)
        if os.path.exists(src):
            shutil.copy2(src, os.path.join(rel, d))
    if bad_order:
        path = os.path.join(rel, "kasir-order")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n"
                    "# a broken release: kasir-order dies at start\n"
                    "case \"$1\" in --version) echo 'kasir-order 1.1.0-bad'; exit 0;; esac\n"
                    "echo 'kasir-order 1.1.0-bad: simulated broken release' >&2\n"
                    "exit 1\n")
        os.chmod(path, 0o755)


def test_rollback(base):
    prefix = os.path.join(base, "opt-kasir")
    make_release(prefix, "1.0.0")
    make_release(prefix, "1.1.0-bad", bad_order=True)
    make_release(prefix, "0.9.0")
    os.unlink(os.path.join(prefix, "releases", "0.9.0", "bin", "kasir-ingest"))
    os.symlink("releases/1.1.0-bad", os.path.join(prefix, "current"))
    dev = Dev(os.path.join(base, "var-rollback"), os.path.join(prefix, "current"))
    try:
        # kasir-order never gets ready here: up waits KASIR_DEV_READY_TIMEOUT
        # (60 s by default) for nothing; 20 s is still ten times what the
        # other daemons need under ASan.
        r = dev.cmd("up", KASIR_DEV_READY_TIMEOUT="20")
        check(r.returncode != 0 and "kasir-order: NOT ready" in r.stdout + r.stderr,
              "the broken release does not come up (kasir-order not ready)")
        r = smoke(dev.envfile())
        check(r.returncode == 1 and "FAIL order" in r.stdout,
              "smoke fails on the broken release, naming kasir-order")

        r = run([ROLLBACK, "--list", "--prefix", prefix], timeout=30)
        check(r.returncode == 0 and "* 1.1.0-bad" in r.stdout, "--list marks the current release")

        # A target whose binaries are incomplete is refused before switching.
        r = run([ROLLBACK, "--prefix", prefix, "--to", "0.9.0", "--no-smoke",
                 "--restart", "true"], timeout=60)
        check(r.returncode != 0 and "kasir-ingest" in r.stderr,
              "rollback to an incomplete release is refused")
        check(os.readlink(os.path.join(prefix, "current")) == "releases/1.1.0-bad",
              "... and current was not touched")

        r = run([ROLLBACK, "--prefix", prefix, "--restart", dev.restart_cmd(),
                 "--smoke-env", dev.envfile()], timeout=400)
        check(r.returncode == 0 and "smoke: PASSED" in r.stdout,
              "rollback (to the previous version) restarts and its smoke test passes")
        check(os.readlink(os.path.join(prefix, "current")) == "releases/1.0.0",
              "current -> releases/1.0.0")
        pid = dev.pid("kasir-order")
        exe = os.readlink(f"/proc/{pid}/exe") if pid else ""
        check(exe == os.path.join(prefix, "releases", "1.0.0", "bin", "kasir-order"),
              f"kasir-order runs the 1.0.0 binary ({exe})")
        with open(os.path.join(prefix, "rollback.log")) as f:
            log = f.read()
        check("1.1.0-bad -> 1.0.0" in log, f"rollback.log records the switch ({log.strip()})")

        r = run([ROLLBACK, "--prefix", prefix, "--no-smoke", "--restart", "true"], timeout=60)
        check(r.returncode != 0 and "release 0.9.0 has no executable bin/kasir-ingest" in r.stderr
              and os.readlink(os.path.join(prefix, "current")) == "releases/1.0.0",
              "older than 1.0.0 there is only the incomplete 0.9.0: refused, nothing changed")
    finally:
        dev.cmd("down")


def main():
    for d in DAEMONS:
        if not os.access(os.path.join(BUILD, "bin", d), os.X_OK):
            raise kasirtest.HarnessError(f"{d} is not built in {BUILD}")
    base = os.path.join(BUILD, "test-runs", f"ops-smoke-{os.getpid()}")
    os.makedirs(base)
    # Release dirs must be traversable by the unprivileged PostgreSQL user
    # and by a dev stack run as root alike.
    os.chmod(base, 0o755)
    test_smoke(base)
    test_rollback(base)
    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        print(f"(kept {base})")
        return 1
    shutil.rmtree(base, ignore_errors=True)
    print("\nsmoke and rollback: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
