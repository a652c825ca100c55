"""The Debian package (CPack DEB): configured in its own build tree with
prefix /usr (the units name /usr/sbin, the configs /usr/share/kasir), built
with -j2, packaged, then checked:
  - contents: binaries, units, sysusers, configs in /etc/kasir, migrations
    under /usr/share/kasir/migrations/<svc>, alert rules, nginx sample,
    smoke, rollback, docs;
  - control: conffiles list every /etc/kasir/*.yaml; Depends from shlibdeps;
  - maintainer scripts: valid sh, and run with every external command
    stubbed (fresh install, upgrade, remove, purge) they exit 0 and never
    run anything that touches the database or deletes credentials/users.
"""
import os
import re
import subprocess
import sys
import tempfile

import kasirtest

SRC = kasirtest.source_dir()
BUILD = kasirtest.build_dir()
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(argv, cwd=None, timeout=1200, env=None):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    tail = (r.stdout + r.stderr)[-3000:]
    print(f"$ {' '.join(argv)} -> {r.returncode}\n{tail}", flush=True)
    return r


def cache_value(build, key):
    """KEY's value in BUILD's CMakeCache.txt, or None."""
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


def main():
    for tool in ("dpkg-deb", "cpack", "dpkg-shlibdeps"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            kasirtest.skip(f"{tool} is not installed (dpkg-dev, cmake)")
    # A tree under test that is already a package tree (prefix /usr, no
    # sanitizer, no fuzzer; tests/run-all configures build/ so) is packaged
    # where it is: a tree of its own would compile the same code a third
    # time.  Tests install nothing, so the package is the same.
    in_place = (cache_value(BUILD, "CMAKE_INSTALL_PREFIX") == "/usr"
                and cache_value(BUILD, "KASIR_SANITIZE") in (None, "OFF")
                and cache_value(BUILD, "KASIR_FUZZ") in (None, "OFF"))
    if in_place:
        pkg = BUILD
        print(f"packaging the tree under test {BUILD} (prefix /usr)", flush=True)
    else:
        pkg = os.path.join(BUILD, "ops-deb-build")
        r = run(["cmake", "-S", SRC, "-B", pkg, "-DCMAKE_INSTALL_PREFIX=/usr",
                 "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DKASIR_TESTS=OFF"])
        check(r.returncode == 0, "configure with prefix /usr")
    # In place: a no-op when the tree is built, as ctest expects.
    r = run(["cmake", "--build", pkg, "-j2"])
    check(r.returncode == 0, "build")
    for f in os.listdir(pkg):
        if f.endswith(".deb"):
            os.unlink(os.path.join(pkg, f))
    r = run(["cpack", "-G", "DEB"], cwd=pkg)
    debs = [f for f in os.listdir(pkg) if f.endswith(".deb")]
    check(r.returncode == 0 and len(debs) == 1, f"cpack -G DEB -> {debs}")
    if failures:
        return 1
    deb = os.path.join(pkg, debs[0])

    listing = run(["dpkg-deb", "-c", deb]).stdout
    files = set(re.findall(r"\s\.(/\S+)", listing))
    for want in ("/usr/sbin/kasir-ingest", "/usr/sbin/kasir-order", "/usr/sbin/kasir-notifier",
                 "/usr/sbin/kasir-reconciler", "/usr/bin/kasirctl",
                 "/usr/lib/systemd/system/kasir-ingest.service",
                 "/usr/lib/systemd/system/kasir.target", "/usr/lib/sysusers.d/kasir.conf",
                 "/etc/kasir/ingest.yaml", "/etc/kasir/kasirctl.yaml",
                 "/usr/share/kasir/migrations/order/0001_orders.sql",
                 "/usr/share/kasir/migrations/ops/0001_ops.sql",
                 "/usr/share/kasir/sql/bootstrap.sql",
                 "/usr/share/kasir/prometheus/kasir-alerts.yml",
                 "/usr/share/kasir/nginx/kasir.conf", "/usr/share/kasir/smoke",
                 "/usr/share/kasir/rollback", "/usr/share/doc/kasir/runbook.md",
                 "/usr/share/doc/kasir/operations.md"):
        check(want in files, f"package contains {want}")
    check(not any(f.startswith("/usr/local") for f in files), "nothing under /usr/local")
    check(not any("credentials/" in f for f in files), "no credential shipped")

    with tempfile.TemporaryDirectory(prefix="kasir-deb-") as tmp:
        ctl = os.path.join(tmp, "DEBIAN")
        run(["dpkg-deb", "-e", deb, ctl])
        with open(os.path.join(ctl, "conffiles")) as f:
            conff = f.read().split()
        check(sorted(conff) == sorted(f"/etc/kasir/{c}.yaml" for c in
                                      ("ingest", "order", "notifier", "reconciler", "kasirctl")),
              f"conffiles: {conff}")
        fields = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
        check("libpq" in fields and "libnng" in fields and "systemd" in fields,
              f"Depends from shlibdeps + systemd: {fields.strip()}")

        stubs = os.path.join(tmp, "stubs")
        os.makedirs(stubs)
        calls = os.path.join(tmp, "calls.log")
        for cmd in ("systemd-sysusers", "systemctl", "install", "chgrp", "chmod", "stat",
                    "psql", "pg_dump", "dropdb", "rm", "userdel", "groupdel", "deluser"):
            p = os.path.join(stubs, cmd)
            with open(p, "w") as f:
                f.write(f"#!/bin/sh\necho \"{cmd} $*\" >> {calls}\n"
                        + ("echo root\n" if cmd == "stat" else "") + "exit 0\n")
            os.chmod(p, 0o755)
        env = {"PATH": stubs + ":/bin:/usr/bin"}
        for script, args in (("postinst", ["configure", ""]), ("postinst", ["configure", "0.0.9"]),
                             ("prerm", ["upgrade", "0.2.0"]), ("prerm", ["remove"]),
                             ("postrm", ["remove"]), ("postrm", ["purge"])):
            path = os.path.join(ctl, script)
            check(os.access(path, os.X_OK), f"{script} is executable")
            check(subprocess.run(["sh", "-n", path]).returncode == 0, f"{script}: sh -n")
            r = subprocess.run([path, *args], env=env, capture_output=True, text=True, timeout=30)
            check(r.returncode == 0, f"{script} {' '.join(args)} exits 0 ({r.stderr.strip()})")
        log = open(calls).read() if os.path.exists(calls) else ""
        print("calls:\n" + log, flush=True)
        check("systemd-sysusers kasir.conf" in log, "postinst creates the users (systemd-sysusers)")
        for bad in ("psql", "pg_dump", "dropdb", "rm ", "userdel", "groupdel", "deluser"):
            check(bad not in log, f"maintainer scripts never run {bad.strip()}")
    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nDebian package ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
