"""shutdown_sigterm: every daemon stops cleanly on SIGTERM, under load.

The whole stack (kasirtest.Stack: PostgreSQL, the fakes, kasir-ingest,
kasir-order, kasir-notifier, kasir-reconciler) runs with
libkasir_nng_guard.so preloaded (nng_guard.c): it aborts a daemon that
nng_close()s a socket while another of its threads has a receive or send
pending on it -- the teardown pattern behind libnng 1.5.2's
"panic: pthread_mutex_lock: Invalid argument" (SIGABRT) at exit, which a
plain stress loop only hits now and then.  While orders are created and
paid (streams ingest -> order -> notifier/reconciler busy, consumers in
live receives and replays), daemons are SIGTERMed again and again, in the
orders that matter: kasir-order with its producers up, and with
kasir-reconciler already gone (its recon consumer then waits on a dead
peer, as at the end of a chaos run).  Each stop must exit 0 and log
"stopping on SIGTERM" then "<daemon> stopped", with the guard active and
silent.

The traffic pauses for QUIESCE_S before each SIGTERM (the consumers keep
their timed receives going, which is what the panic needs): libnng 1.5.2
has a second, separate shutdown bug -- nng_close() of a tcp socket that is
in the middle of receiving a message can wait forever (the transport drops
the body read after the close, and pipe_stop() waits for it).  The
rounds quiesce so that they test the ordinary stop, nng_fini() included;
a stop that meets that bug takes the other path, which the last phase
tests on purpose.  The daemons bound each close (common/sock_close.c: a warning after
1 s, later closes not waited for), and daemon_fini() must not wait for
nng either: the last phase makes that bug happen on demand in each daemon
(failpoint "nng.close_reap" stops nng's reaper thread in the first pipe
removal of a close, which is where the real bug leaves it) and requires
exit status 0 within CLOSE_WEDGE_MAX_S: once in a backbone socket, and
in kasir-order once more in its admin socket, with an idle admin client
connected (the admin socket is closed first).  Without the check in
daemon_fini(), nng_fini() waited for the reaper until SIGKILL (a CI run
of order_kill: "kasir-order ignored SIGTERM"); without the bounded
close of the admin socket, so did admin_socket_stop().
"""
import glob
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time

import kasirtest

KEY = "askvnoibnosifnboseofinbofinfgbiufglnbfg"  # the docs' example key
DAEMONS = ["ingest", "order", "notifier", "reconciler"]
ROUNDS = int(os.environ.get("KASIR_SHUTDOWN_ROUNDS", "2"))
START_MARK = "=== kasirtest: start"
STOP_TIMEOUT = 30     # SIGKILL after this (kasirtest.Stack.stop)
STOP_DUMP_AFTER = 15  # a daemon still running then: its threads are dumped
CLOSE_WEDGE_MAX_S = 8  # 1 s bounded close + the other closes + margin
QUIESCE_S = float(os.environ.get("KASIR_SHUTDOWN_QUIESCE_S", "0.4"))  # traffic pause before each SIGTERM
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def guard_path():
    p = os.path.join(kasirtest.build_dir(), "tests", "libkasir_nng_guard.so")
    if not os.path.exists(p):
        raise AssertionError(f"{p} missing: build the kasir_nng_guard target")
    return p


def guard_env():
    asan = os.environ.get("ASAN_OPTIONS", "")
    # the guard is preloaded ahead of the ASan runtime in sanitizer builds
    asan = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return {"LD_PRELOAD": guard_path(), "ASAN_OPTIONS": asan}


def last_incarnation(st, d):
    text = st.log_text(d)
    i = text.rfind(START_MARK)
    return text[i:] if i >= 0 else text


class Traffic:
    """Creates orders through the API and pays them through kasir-ingest
    (signed like Midtrans), so every stream carries messages while the
    daemons are stopped and started."""

    def __init__(self, st):
        self.st = st
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.sent = 0
        self.last_error = None
        self.t = threading.Thread(target=self.run, daemon=True)

    def pay(self, oid):
        sc, amt = "200", "150000.00"
        body = {"order_id": oid, "status_code": sc, "gross_amount": amt,
                "transaction_status": "settlement", "fraud_status": "accept",
                "payment_type": "bank_transfer", "currency": "IDR",
                "transaction_id": "tx-" + oid,
                "transaction_time": "2026-11-23 10:00:00",
                "settlement_time": "2026-11-23 10:00:05",
                "signature_key": hashlib.sha512(
                    (oid + sc + amt + KEY).encode()).hexdigest()}
        self.st.notify(body, timeout=5)
        self.sent += 1

    def run(self):
        n = 0
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.02)
                continue
            n += 1
            try:
                r = self.st.api("POST", "/v1/orders", {
                    "course_id": "bikin-film-pendek",
                    "customer": {"name": "Budi Santoso",
                                 "email": f"budi+sd{n}@example.com",
                                 "phone": "+6281234567890"}},
                    headers={"Idempotency-Key": f"shutdown-{os.getpid()}-{n}"},
                    timeout=5)
                oid = (r.body.get("order_id") if r.status in (200, 201)
                       and isinstance(r.body, dict) else None)
                # unknown ids too: ingest stores them, kasir-order keeps them
                self.pay(oid or f"SHUTDOWN-UNKNOWN-{n}")
            except Exception as e:  # a daemon restarting: retry
                self.last_error = repr(e)
                time.sleep(0.05)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(15)
        return False


def dump_stacks(pid, label):
    """The threads of a daemon that does not stop (gdb, when installed)."""
    try:
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
                            "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=60)
        print(f"----- {label}: threads of pid {pid} still running -----\n"
              f"{r.stdout[-20000:]}", file=sys.stderr, flush=True)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"{label}: no stack dump ({e})", file=sys.stderr)


def quiesce(traffic):
    """Pauses the traffic and lets what is in flight land, so that a stop
    takes the ordinary path (the module docstring: a close that meets
    libnng 1.5.2's close bug takes the other one)."""
    if traffic is not None:
        traffic.paused.set()
        time.sleep(QUIESCE_S)


def stop_and_check(st, d, why):
    label = f"kasir-{d} ({why})"
    pid = st.pid(d)
    done = threading.Event()

    def watch():
        if not done.wait(STOP_DUMP_AFTER) and pid:
            dump_stacks(pid, label)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    code = st.stop(d, timeout=STOP_TIMEOUT)
    done.set()
    w.join()
    text = last_incarnation(st, d)
    check(code == 0, f"{label}: exit status 0 after SIGTERM (got {code})")
    check("nng-guard: active" in text, f"{label}: nng guard was loaded")
    check("nng-guard: VIOLATION" not in text,
          f"{label}: no nng socket closed under a pending operation")
    marks = [m for m in kasirtest.SANITIZER_MARKS if m in text]
    check(not marks, f"{label}: no sanitizer report {marks}")
    i = text.rfind("stopping on SIGTERM")
    check(i >= 0 and f"kasir-{d} stopped" in text[i:],
          f"{label}: 'stopping on SIGTERM' then 'kasir-{d} stopped' logged")
    if failures and failures[-1].startswith(label):
        print(kasirtest._tail(st.log_path(d), 15), file=sys.stderr)


def admin_peer(st, d):
    """An idle client of d's admin socket (nng ipc): the SP header of a
    REQ socket, and the daemon's header back, make a pipe, which closing
    the admin socket then removes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(os.path.join(st.run_path, f"{d}.sock"))
    s.sendall(b"\x00SP\x00\x00\x30\x00\x00")  # SP v0, protocol REQ (48)
    hdr = s.recv(8)
    if hdr[:4] != b"\x00SP\x00":
        raise AssertionError(f"kasir-{d}'s admin socket answered {hdr!r}")
    return s


def wedged_close(st, d, env, traffic, admin=False):
    """SIGTERM while a close of d never finishes (module docstring): the
    admin socket's when admin, else the first backbone socket's."""
    which = "admin" if admin else "backbone"
    fpdir = os.path.join(st.dir, f"wedge-{d}-{which}")
    os.makedirs(fpdir, exist_ok=True)
    wenv = dict(env, KASIR_FAILPOINTS="nng.close_reap=pause",
                KASIR_FAILPOINT_DIR=fpdir)
    quiesce(traffic)
    stop_and_check(st, d, f"before the wedged {which} close")
    traffic.paused.clear()
    st.start(d, env=wenv)
    time.sleep(1.5)  # traffic through d: its peers' pipes are up
    peer = admin_peer(st, d) if admin else None
    quiesce(traffic)
    t0 = time.monotonic()
    stop_and_check(st, d, f"{'an' if admin else 'a'} {which} close that"
                          " never finishes")
    took = time.monotonic() - t0
    if peer is not None:
        peer.close()
    paused = glob.glob(os.path.join(fpdir, "pause.*"))
    text = last_incarnation(st, d)
    check(bool(paused), f"kasir-{d}: nng's reaper was stopped in a close "
          f"(failpoint nng.close_reap fired)")
    check(("closing the admin socket did not finish" in text) == admin,
          f"kasir-{d}: the admin socket's close was "
          f"{'the' if admin else 'not the'} one left unfinished")
    check("did not finish" in text and "exits without waiting" in text,
          f"kasir-{d}: the unfinished close and the exit without nng_fini "
          f"logged")
    check(took < CLOSE_WEDGE_MAX_S,
          f"kasir-{d}: stopped {took:.1f} s after SIGTERM "
          f"(at most {CLOSE_WEDGE_MAX_S} s)")
    for f in paused:
        os.unlink(f)
    traffic.paused.clear()
    st.start(d, env=env)


def main():
    rng = random.Random(int(os.environ.get("KASIR_SHUTDOWN_SEED", "8")))
    env = guard_env()
    t0 = time.monotonic()
    with kasirtest.Stack.for_test("shutdown", server_key=KEY) as st:
        missing = [d for d in DAEMONS if not st.available(d)]
        if missing:
            raise AssertionError(f"daemons not built: {missing}")
        st.start_fakes()
        for d in DAEMONS:
            st.start(d, wait=False, env=env)
        for d in DAEMONS:
            st.wait_ready(d)
        with Traffic(st) as traffic:
            try:
                kasirtest.wait_until(lambda: traffic.sent >= 20, 60, "first payments")
            except kasirtest.WaitTimeout as e:
                raise AssertionError(f"{e}; last traffic error: {traffic.last_error}")
            for r in range(ROUNDS):
                # every daemon, in a shuffled order, under load
                order = DAEMONS[:]
                rng.shuffle(order)
                for d in order:
                    time.sleep(rng.uniform(0.2, 1.0))
                    quiesce(traffic)
                    stop_and_check(st, d, f"round {r + 1}")
                    traffic.paused.clear()
                    st.start(d, env=env)
                # kasir-order right after its producers went away (the end
                # of a chaos run: reconciler, notifier, then order)
                quiesce(traffic)
                stop_and_check(st, "reconciler", f"round {r + 1}, before order")
                time.sleep(rng.uniform(0.0, 1.5))
                stop_and_check(st, "order", f"round {r + 1}, reconciler gone")
                traffic.paused.clear()
                st.start("reconciler", wait=False, env=env)
                st.start("order", env=env)
                st.wait_ready("reconciler")
            for d in DAEMONS:
                wedged_close(st, d, env, traffic)
            wedged_close(st, "order", env, traffic, admin=True)
            sent = traffic.sent
        check(sent > 0, f"payments sent during the stops ({sent})")
        for d in ["reconciler", "notifier", "order", "ingest"]:
            stop_and_check(st, d, "final")
        print(f"{len(failures)} failure(s), {time.monotonic() - t0:.0f}s", flush=True)
        if failures:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
