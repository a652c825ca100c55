"""supervise.py - the dev stack's tiny process supervisor (what systemd's
Restart=always would do; the production units keep their own policy).

    /usr/bin/python3 supervise.py CONFIG.json

CONFIG.json:
    {"pidfile": "var/run/supervise.pid",
     "programs": [{"name": "kasir-order", "argv": [...], "cwd": "...",
                   "log": "var/log/kasir-order.log",
                   "pidfile": "var/run/kasir-order.pid",
                   "hold": "var/run/kasir-order.stopped"}, ...]}

Starts every program (stdin /dev/null, stdout+stderr appended to its log,
its own session), writes its pid file, and restarts a program whenever it
exits, a clean exit (status 0) included: an exit nobody asked for is a
crash in the dev stack, and a drill must see the daemon come back.
Backoff: 0.5 s doubling to 30 s, reset after 30 s of uptime.

A program is stopped on purpose by creating its hold file
(`deploy/dev/stop NAME`): the supervisor sends SIGTERM (SIGKILL after
10 s), removes the pid file and leaves it stopped while the file exists;
removing it (`deploy/dev/start NAME`, `deploy/dev/up`) starts it at once.
The hold files are looked at on every pass (5 per second).

SIGTERM/SIGINT: SIGTERM to every program in reverse order, SIGKILL after
10 s, remove the pid files, exit 0.  deploy/dev/stack.py starts it in its
own session and `deploy/dev/down` stops it.
"""

import json
import os
import signal
import subprocess
import sys
import time

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
STOP_TIMEOUT = 10.0


def log(msg):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervise: {msg}", flush=True)


def write_pidfile(path, pid):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Program:
    def __init__(self, spec):
        self.name = spec["name"]
        self.argv = spec["argv"]
        self.cwd = spec.get("cwd")
        self.log = spec["log"]
        self.pidfile = spec["pidfile"]
        self.hold = spec.get("hold")
        self.proc = None
        self.started = 0.0
        self.backoff = BACKOFF_MIN
        self.next_start = 0.0
        self.held = False  # stopped on purpose (hold file present)

    def start(self):
        with open(self.log, "ab") as out:
            out.write(f"=== supervise: start {time.strftime('%H:%M:%S')} "
                      f"{' '.join(self.argv)}\n".encode())
            out.flush()
            try:
                self.proc = subprocess.Popen(self.argv, cwd=self.cwd,
                                             stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT,
                                             start_new_session=True)
            except OSError as e:
                log(f"{self.name}: cannot start: {e}")
                self.proc = None
                self._schedule()
                return
        self.started = time.monotonic()
        write_pidfile(self.pidfile, self.proc.pid)
        log(f"{self.name}: started, pid {self.proc.pid}")

    def _schedule(self):
        self.next_start = time.monotonic() + self.backoff
        log(f"{self.name}: restarting in {self.backoff:.1f}s")
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def poll(self):
        now = time.monotonic()
        if self.hold and os.path.exists(self.hold):
            if not self.held:
                log(f"{self.name}: stop requested ({self.hold})")
                self.stop()
                self.proc = None
                self.held = True
            return
        if self.held:
            log(f"{self.name}: start requested")
            self.held = False
            self.backoff = BACKOFF_MIN
            self.start()
            return
        if self.proc is None:
            if now >= self.next_start:
                self.start()
            return
        rc = self.proc.poll()
        if rc is None:
            if now - self.started > STABLE_AFTER:
                self.backoff = BACKOFF_MIN
            return
        unlink(self.pidfile)
        self.proc = None
        # Restart=always: a clean exit nobody asked for is restarted too
        log(f"{self.name}: exited with status {rc}"
            f"{' (clean, but not asked for)' if rc == 0 else ''}")
        self._schedule()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            unlink(self.pidfile)
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: still running {STOP_TIMEOUT:.0f}s after SIGTERM, SIGKILL")
            self.proc.kill()
            self.proc.wait()
        log(f"{self.name}: stopped (status {self.proc.returncode})")
        unlink(self.pidfile)


stopping = False


def on_signal(signum, frame):
    global stopping
    stopping = True


def main():
    if len(sys.argv) != 2:
        print("usage: supervise.py CONFIG.json", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        conf = json.load(f)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    programs = [Program(p) for p in conf["programs"]]
    write_pidfile(conf["pidfile"], os.getpid())
    log(f"pid {os.getpid()}, {len(programs)} programs")
    for p in programs:
        if p.hold and os.path.exists(p.hold):
            log(f"{p.name}: held ({p.hold}), not started")
            p.held = True
        else:
            p.start()
    while not stopping:
        for p in programs:
            p.poll()
        time.sleep(0.2)
    log("stopping")
    for p in reversed(programs):
        p.stop()
    unlink(conf["pidfile"])
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
