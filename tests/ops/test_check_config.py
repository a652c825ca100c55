"""--check-config runs exactly the checks a start runs (issue 14 item 4).

For each daemon (kasir-ingest, kasir-order, kasir-notifier,
kasir-reconciler) and kasirctl, starting from a configuration that passes
(deploy/etc/<svc>.yaml with dummy credentials; a small kasirctl.yaml):

  - the good file passes `--check-config FILE` and `--check-config=FILE`;
  - one change that only the cross-field check (the table's finish hook)
    rejects makes both spellings exit non-zero with the same
    "file:line: message", and a start with it (`--config FILE`,
    `--config=FILE`, `-c FILE`; kasirctl: `--config FILE status`) fails
    with that same message before touching the database or the network.

Two more cases check the listen addresses (kasir-ingest's admin.listen,
through the shared keys' hook; kasir-order's http.listen), which a start
would otherwise refuse only when it opens the listener.

No database: a start that wrongly accepted the file would go on to wait
for PostgreSQL, so a start still running after START_LIMIT seconds fails
the test (it is killed, never waited on again).
"""
import os
import re
import subprocess
import sys
import tempfile

import kasirtest

SRC = kasirtest.source_dir()
BUILD = kasirtest.build_dir()
ETC = os.path.join(SRC, "deploy", "etc")
START_LIMIT = 20  # seconds; a refused start exits at once
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def replace_once(text, old, new):
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


# daemon -> (edit of the good file, the message the finish hook gives)
BROKEN = {
    # a listen address the listener cannot use (no port): refused by the
    # shared keys' hook, before a start opens anything
    "ingest-admin": (lambda t: replace_once(t, "  listen: 127.0.0.1:9101 ", "  listen: 127.0.0.1 "),
                     r":\d+: 'admin.listen': want HOST:PORT, \[V6\]:PORT or :PORT"),
    "order-http": (lambda t: replace_once(t, "  listen: 127.0.0.1:8102", "  listen: \"[::1]8102\""),
                   r":\d+: 'http.listen': want HOST:PORT, \[V6\]:PORT or :PORT"),
    # kasir-order consumes the ingest stream: ingest must publish it
    "ingest": (lambda t: replace_once(t, "  publish: tcp://127.0.0.1:7101\n", ""),
               r":\d+: missing 'stream.publish': kasir-ingest publishes the ingest stream"),
    "order": (lambda t: replace_once(t, "  replay: tcp://127.0.0.1:7202\n", ""),
              r":\d+: missing 'stream.replay': kasir-order serves replays of the orders stream"),
    # a lease shorter than twice the longest provider timeout (10 s)
    "notifier": (lambda t: replace_once(t, "  lease: 60s\n", "  lease: 15s\n"),
                 r":\d+: jobs.lease must be at least twice the longest provider timeout"),
    "reconciler": (lambda t: replace_once(t, "  retry_max: 10m\n", "  retry_max: 10s\n"),
                   r":\d+: schedule.retry_max must not be below schedule.retry"),
    "kasirctl": (lambda t: replace_once(t, "  url: \"host=127.0.0.1 dbname=kasir user=kasir_ctl\"\n",
                                        "  migrate_url: \"host=127.0.0.1 dbname=kasir\"\n"),
                 r":\d+: database.migrate_url without database.url"),
}

KASIRCTL_GOOD = """\
sockets:
  order: ipc:///run/kasir/order/order.sock
database:
  url: "host=127.0.0.1 dbname=kasir user=kasir_ctl"
  password_file: {cred}/db-kasir_ctl
"""


def exe(svc):
    svc = svc.split("-")[0]
    return os.path.join(BUILD, "bin", "kasirctl" if svc == "kasirctl" else f"kasir-{svc}")


def run(args, cred):
    env = dict(os.environ, CREDENTIALS_DIRECTORY=cred)
    env.pop("KASIRCTL_CONFIG", None)
    env.pop("KASIR_DEV_ENV", None)
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=START_LIMIT)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, err = p.communicate()
        return None, out, err  # still running: the file was accepted


def spellings(svc, path):
    """(name, argv) of every way to check, and of every way to start."""
    x = exe(svc)
    checks = [("--check-config FILE", [x, "--check-config", path]),
              ("--check-config=FILE", [x, f"--check-config={path}"])]
    if svc == "kasirctl":
        starts = [("--config FILE status", [x, "--config", path, "status"]),
                  ("--config=FILE status", [x, f"--config={path}", "status"])]
    else:
        starts = [("--config FILE", [x, "--config", path]),
                  ("--config=FILE", [x, f"--config={path}"]),
                  ("-c FILE", [x, "-c", path])]
    return checks, starts


def credential_names(path):
    names = set()
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*-?\s*\w*(?:password_file|token_file|server_key_file|secret)"
                         r"\s*:\s*(\S+)", line.split(" #", 1)[0])
            if m:
                names.add(m.group(1).strip("\"'"))
    return names


def main():
    for svc in BROKEN:  # "ingest-admin": kasir-ingest, another case
        if not os.access(exe(svc), os.X_OK):
            raise kasirtest.HarnessError(f"{exe(svc)} is not built")
    with tempfile.TemporaryDirectory(prefix="kasir-checkcfg-") as tmp:
        cred = os.path.join(tmp, "cred")
        os.mkdir(cred, 0o700)
        names = {"db-kasir_ctl"}
        for svc in BROKEN:
            if svc != "kasirctl":
                names |= credential_names(os.path.join(ETC, f"{svc.split('-')[0]}.yaml"))
        for n in names:
            with open(os.path.join(cred, n), "w") as f:
                f.write(os.urandom(32).hex() + "\n")
            os.chmod(os.path.join(cred, n), 0o600)

        for svc, (edit, message) in BROKEN.items():
            if svc == "kasirctl":
                good_text = KASIRCTL_GOOD.format(cred=cred)
            else:
                with open(os.path.join(ETC, f"{svc.split('-')[0]}.yaml")) as f:
                    good_text = f.read()
            good = os.path.join(tmp, f"{svc}-good.yaml")
            bad = os.path.join(tmp, f"{svc}-bad.yaml")
            with open(good, "w") as f:
                f.write(good_text)
            with open(bad, "w") as f:
                f.write(edit(good_text))

            checks, _ = spellings(svc, good)
            for name, argv in checks:
                rc, out, err = run(argv, cred)
                check(rc == 0 and "configuration OK" in out,
                      f"{svc} {name}: the good file passes ({err.strip()[:200]})")

            checks, starts = spellings(svc, bad)
            want = re.escape(bad) + message
            said = None
            for name, argv in checks:
                rc, out, err = run(argv, cred)
                m = re.search(want, err)
                check(rc not in (0, None) and m is not None and "configuration OK" not in out,
                      f"{svc} {name}: refused, \"file:line: message\" "
                      f"(rc {rc}: {(out + err).strip()[:200]})")
                if m is not None:
                    line = err[m.start():].splitlines()[0]
                    check(said is None or said == line,
                          f"{svc} {name}: the same message as the other spelling ({line})")
                    said = line
            for name, argv in starts:
                rc, out, err = run(argv, cred)
                check(rc is not None,
                      f"{svc} {name}: the start ends at once (not waiting for a database)")
                check(rc not in (0, None) and said is not None and said in err,
                      f"{svc} {name}: the start fails with the check's message "
                      f"(rc {rc}: {err.strip()[:200]})")

    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
