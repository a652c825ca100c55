"""`cmake --install` of the build tree into a DESTDIR: the layout issue 7
asks for (binaries, units, sysusers, default configs in <sysconfdir>/kasir,
migrations per service, alert rules, nginx sample, smoke and rollback,
docs), configs not world-readable, and the installed units name the
installed binaries.  The Debian package itself: tests/ops/test_deb.py.
"""
import os
import re
import stat
import subprocess
import sys
import tempfile

import kasirtest

BUILD = kasirtest.build_dir()
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def cache_value(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split("=", 1)[1].strip()
    return None


def main():
    prefix = cache_value("CMAKE_INSTALL_PREFIX") or "/usr/local"
    etc = "/etc" if prefix == "/usr" else prefix + "/etc"
    with tempfile.TemporaryDirectory(prefix="kasir-install-") as dest:
        r = subprocess.run(["cmake", "--install", BUILD], env=dict(os.environ, DESTDIR=dest),
                           capture_output=True, text=True, timeout=120)
        print(r.stdout[-2000:] + r.stderr[-2000:], flush=True)
        check(r.returncode == 0, "cmake --install (DESTDIR)")
        root = dest + prefix
        want = ["sbin/kasir-ingest", "sbin/kasir-order", "sbin/kasir-notifier",
                "sbin/kasir-reconciler", "bin/kasirctl",
                "lib/systemd/system/kasir-ingest.service", "lib/systemd/system/kasir.target",
                "lib/sysusers.d/kasir.conf",
                "share/kasir/sql/bootstrap.sql",
                "share/kasir/prometheus/kasir-alerts.yml",
                "share/kasir/prometheus/kasir-dashboard.json",
                "share/kasir/nginx/kasir.conf", "share/kasir/nginx/kasir-notification.inc",
                "share/kasir/smoke", "share/kasir/rollback",
                "share/doc/kasir/runbook.md", "share/doc/kasir/operations.md",
                "share/doc/kasir/kasirctl.md"]
        for svc in ("ingest", "order", "notifier", "reconciler", "ops"):
            d = os.path.join(root, "share/kasir/migrations", svc)
            check(os.path.isdir(d) and any(n.endswith(".sql") for n in os.listdir(d)),
                  f"migrations for {svc} in share/kasir/migrations/{svc}")
        for w in want:
            check(os.path.exists(os.path.join(root, w)), f"{prefix}/{w}")
        # the installed docs link to each other: every link to a .md file
        # names one installed next to it (the runbook linked kasirctl.md,
        # which was not installed)
        docdir = os.path.join(root, "share/doc/kasir")
        for name in sorted(os.listdir(docdir)) if os.path.isdir(docdir) else []:
            if not name.endswith(".md"):
                continue
            with open(os.path.join(docdir, name)) as f:
                links = set(re.findall(r"\]\(([\w.-]+\.md)(?:#[^)]*)?\)", f.read()))
            for link in sorted(links):
                check(os.path.exists(os.path.join(docdir, link)),
                      f"{prefix}/share/doc/kasir/{name} links {link}: installed")
        for exe in ("share/kasir/smoke", "share/kasir/rollback", "sbin/kasir-order"):
            p = os.path.join(root, exe)
            check(os.path.exists(p) and os.stat(p).st_mode & stat.S_IXUSR, f"{exe} executable")
        for c in ("ingest", "order", "notifier", "reconciler", "kasirctl"):
            p = dest + f"{etc}/kasir/{c}.yaml"
            ok = os.path.exists(p)
            check(ok, f"{etc}/kasir/{c}.yaml")
            if ok:
                check(os.stat(p).st_mode & 0o007 == 0, f"{c}.yaml not readable by others")
        if prefix == "/usr":
            with open(os.path.join(root, "lib/systemd/system/kasir-order.service")) as f:
                check("ExecStart=/usr/sbin/kasir-order " in f.read(),
                      "the unit runs the installed binary")
    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\ninstall layout ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
