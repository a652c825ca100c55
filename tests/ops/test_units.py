"""deploy/systemd: every unit passes `systemd-analyze verify` with no
warning at all, has the directives issue 7 requires, loads (LoadCredential=)
every credential its production config names, and its `systemd-analyze
security` exposure score is the one recorded in docs/operations.md (and at
most MAX_EXPOSURE).

The units are copied to a temp dir with ExecStart= pointed at the built
binaries (verify checks that the command exists and is executable).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import kasirtest

SRC = kasirtest.source_dir()
BUILD = kasirtest.build_dir()
UNIT_DIR = os.path.join(SRC, "deploy", "systemd")
ETC_DIR = os.path.join(SRC, "deploy", "etc")
DAEMONS = ("ingest", "order", "notifier", "reconciler")
MAX_EXPOSURE = 2.0

REQUIRED = [
    ("Type", "notify"), ("NotifyAccess", "main"), ("Restart", "on-failure"),
    ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""),
    ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"), ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("SystemCallFilter", "@system-service"), ("RestrictNamespaces", "yes"),
    ("MemoryDenyWriteExecute", "yes"), ("LockPersonality", "yes"),
    ("LimitCORE", "0"),
]

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def directives(text):
    """[(section, key, value)] of a unit file."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.append((section, k.strip(), v.strip()))
    return out


def config_credentials(svc):
    """Credential names (secret values without a slash) in deploy/etc/<svc>.yaml."""
    names = set()
    with open(os.path.join(ETC_DIR, f"{svc}.yaml")) as f:
        for line in f:
            line = line.split("#", 1)[0]
            m = re.match(r"\s*-?\s*(\w*(?:password_file|token_file|server_key_file|secret))"
                         r"\s*:\s*(\S+)\s*$", line)
            if m and "/" not in m.group(2):
                names.add(m.group(2).strip("\"'"))
    return names


def recorded_scores():
    """{unit: score} from the table in docs/operations.md."""
    path = os.path.join(SRC, "docs", "operations.md")
    scores = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = re.match(r"\|\s*`?(kasir-[a-z]+\.service)`?\s*\|\s*([0-9.]+)\s*\|", line)
                if m:
                    scores[m.group(1)] = float(m.group(2))
    return scores


def main():
    sa = shutil.which("systemd-analyze")
    if not sa:
        kasirtest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = sorted(n for n in os.listdir(UNIT_DIR) if n.endswith((".service", ".target")))
    check(set(units) == {f"kasir-{d}.service" for d in DAEMONS} | {"kasir.target"},
          f"deploy/systemd holds one unit per daemon and kasir.target: {units}")

    with tempfile.TemporaryDirectory(prefix="kasir-units-") as tmp:
        for n in units:
            with open(os.path.join(UNIT_DIR, n)) as f:
                text = f.read()
            m = re.search(r"^ExecStart=(/usr/sbin/(kasir-[a-z]+))\s", text, re.M)
            if n.endswith(".service"):
                check(m is not None, f"{n}: ExecStart=/usr/sbin/kasir-*")
                if m:
                    exe = os.path.join(BUILD, "bin", m.group(2))
                    if not os.access(exe, os.X_OK):
                        kasirtest.skip(f"{exe} is not built")
                    text = text.replace(m.group(1), exe, 1)
            with open(os.path.join(tmp, n), "w") as f:
                f.write(text)

        paths = [os.path.join(tmp, n) for n in units]
        r = subprocess.run([sa, "verify", "--man=no", *paths], capture_output=True,
                           text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        print(f"$ systemd-analyze verify ... -> {r.returncode}\n{out}", flush=True)
        check(r.returncode == 0 and out == "",
              "systemd-analyze verify: exit 0 and not a single warning")

        # The test itself must be able to fail: a broken copy is reported.
        bad = os.path.join(tmp, "kasir-broken.service")
        with open(os.path.join(tmp, "kasir-order.service")) as f:
            text = f.read()
        with open(bad, "w") as f:
            f.write(text.replace("ProtectSystem=strict", "ProtectSystem=stricter"))
        r = subprocess.run([sa, "verify", "--man=no", bad], capture_output=True,
                           text=True, timeout=60)
        print(f"     broken copy: {(r.stdout + r.stderr).strip()}", flush=True)
        check("stricter" in r.stdout + r.stderr,
              "a unit with a bad value produces a verify warning (the check works)")
        os.unlink(bad)

        recorded = recorded_scores()
        for d in DAEMONS:
            n = f"kasir-{d}.service"
            path = os.path.join(tmp, n)
            with open(path) as f:
                dirs = directives(f.read())
            svc = {(k): v for s, k, v in dirs if s == "Service"}
            allv = {}
            for s, k, v in dirs:
                allv.setdefault(k, []).append(v)
            for k, v in REQUIRED:
                check(v in allv.get(k, []), f"{n}: {k}={v}")
            check(svc.get("User") == n[:-len(".service")], f"{n}: User={n[:-8]}")
            wd = svc.get("WatchdogSec", "")
            check(re.fullmatch(r"\d+s", wd) is not None and 5 <= int(wd[:-1]) <= 120,
                  f"{n}: WatchdogSec= between 5s and 120s ({wd!r})")
            unit_deps = " ".join(allv.get("After", []) + allv.get("Wants", []))
            check("postgresql.service" in unit_deps and "network-online.target" in unit_deps,
                  f"{n}: After=/Wants= PostgreSQL and network-online.target")
            check("kasir.target" in allv.get("WantedBy", []) and
                  "kasir.target" in allv.get("PartOf", []),
                  f"{n}: PartOf= and WantedBy=kasir.target")
            check(not any(k == "Environment" and re.search(r"(?i)key|secret|password|token", v)
                          for _, k, v in dirs),
                  f"{n}: no secret in Environment=")
            loaded = {v.split(":", 1)[0] for v in allv.get("LoadCredential", [])}
            for v in allv.get("LoadCredential", []):
                check(re.fullmatch(r"[a-z0-9_-]+:/etc/kasir/credentials/[a-z0-9_-]+", v)
                      is not None, f"{n}: LoadCredential={v} reads /etc/kasir/credentials")
            need = config_credentials(d)
            check(need and need <= loaded,
                  f"{n}: loads every credential deploy/etc/{d}.yaml names "
                  f"(needs {sorted(need)}, loads {sorted(loaded)})")
            check(loaded <= need,
                  f"{n}: loads no credential its config does not use "
                  f"(extra: {sorted(loaded - need)})")

            r = subprocess.run([sa, "security", "--offline=yes", "--no-pager", path],
                               capture_output=True, text=True, timeout=60)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
            score = float(m.group(1)) if m else None
            print(f"     {n}: exposure {score}", flush=True)
            check(score is not None and score <= MAX_EXPOSURE,
                  f"{n}: systemd-analyze security exposure {score} <= {MAX_EXPOSURE}")
            check(recorded.get(n) == score,
                  f"{n}: docs/operations.md records exposure {recorded.get(n)}, "
                  f"measured {score}")

    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall unit checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
