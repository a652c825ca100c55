"""deploy/etc: the production default configs.

  - each daemon's /etc/kasir/<svc>.yaml passes `kasir-<svc> --check-config`
    with its secrets given as credential names resolved from
    $CREDENTIALS_DIRECTORY (a temp dir with dummy secrets, mode 0600);
  - without $CREDENTIALS_DIRECTORY, or with one credential missing, the
    check fails and names the credential (proves the names are resolved
    there, not paths);
  - no secret value, path under the source tree or dev placeholder (@...@)
    in any production config; secrets never as absolute paths, except
    kasirctl's (an operator's tool: not run by systemd);
  - kasirctl.yaml uses only keys of kasirctl's config table;
  - the config key tables of docs/operations.md are up to date
    (tests/ops/config_keys.py --update regenerates them).
"""
import os
import re
import subprocess
import sys
import tempfile

import kasirtest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config_keys  # noqa: E402

SRC = kasirtest.source_dir()
BUILD = kasirtest.build_dir()
ETC = os.path.join(SRC, "deploy", "etc")
DAEMONS = ("ingest", "order", "notifier", "reconciler")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def credential_names(path):
    names = set()
    with open(path) as f:
        for line in f:
            line = line.split(" #", 1)[0]
            m = re.match(r"\s*-?\s*\w*(?:password_file|token_file|server_key_file|secret)"
                         r"\s*:\s*(\S+)\s*$", line)
            if m:
                names.add(m.group(1).strip("\"'"))
    return names


def check_config(svc, path, credir):
    env = dict(os.environ)
    env.pop("CREDENTIALS_DIRECTORY", None)
    if credir:
        env["CREDENTIALS_DIRECTORY"] = credir
    exe = os.path.join(BUILD, "bin", f"kasir-{svc}")
    r = subprocess.run([exe, "--check-config", path], env=env, capture_output=True,
                       text=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).strip()


def main():
    for d in DAEMONS:
        if not os.access(os.path.join(BUILD, "bin", f"kasir-{d}"), os.X_OK):
            raise kasirtest.HarnessError(f"kasir-{d} is not built in {BUILD}")
    check(sorted(os.listdir(ETC)) == sorted([f"{d}.yaml" for d in DAEMONS] + ["kasirctl.yaml"]),
          f"deploy/etc holds one config per daemon and kasirctl.yaml ({sorted(os.listdir(ETC))})")

    for name in sorted(os.listdir(ETC)):
        with open(os.path.join(ETC, name)) as f:
            text = f.read()
        check("@" not in re.sub(r"#.*", "", text).replace("pembayaran@", ""),
              f"{name}: no dev placeholders")
        check("/work/" not in text and "services/" not in re.sub(r"#.*", "", text),
              f"{name}: no source-tree paths")
        check(not re.search(r"(?i)(server_key|password|token)\s*:\s*\S", text),
              f"{name}: no inline secret values")

    with tempfile.TemporaryDirectory(prefix="kasir-cred-") as cred:
        os.chmod(cred, 0o700)
        all_names = set()
        for d in DAEMONS:
            all_names |= credential_names(os.path.join(ETC, f"{d}.yaml"))
        for n in all_names:
            check("/" not in n, f"credential {n!r} is a name, not a path")
            with open(os.path.join(cred, n), "w") as f:
                f.write(os.urandom(32).hex() + "\n")
            os.chmod(os.path.join(cred, n), 0o600)
        for d in DAEMONS:
            path = os.path.join(ETC, f"{d}.yaml")
            rc, out = check_config(d, path, cred)
            check(rc == 0 and "configuration OK" in out,
                  f"kasir-{d} --check-config deploy/etc/{d}.yaml with credentials ({out[:300]})")
            rc, out = check_config(d, path, None)
            check(rc != 0 and "CREDENTIALS_DIRECTORY" in out,
                  f"kasir-{d}: without $CREDENTIALS_DIRECTORY the check fails and says why")
            victim = sorted(credential_names(path))[0]
            os.rename(os.path.join(cred, victim), os.path.join(cred, victim + ".away"))
            rc, out = check_config(d, path, cred)
            os.rename(os.path.join(cred, victim + ".away"), os.path.join(cred, victim))
            check(rc != 0 and victim in out,
                  f"kasir-{d}: a missing credential ({victim}) fails the check, named")

    # kasirctl.yaml: only keys its table knows.
    table = set(config_keys.table_keys("kasirctl"))
    ex = config_keys.example_keys("kasirctl")
    with tempfile.TemporaryDirectory() as tmp:
        # reuse the example parser on the production file
        src = os.path.join(tmp, "services", "kasirctl")
        os.makedirs(src)
        with open(os.path.join(ETC, "kasirctl.yaml")) as f, \
                open(os.path.join(src, "config.example.yaml"), "w") as g:
            g.write(f.read())
        saved = config_keys.SRC
        config_keys.SRC = tmp
        try:
            prod = config_keys.example_keys("kasirctl")
        finally:
            config_keys.SRC = saved
    unknown = [k for k, _, _ in prod if k not in table]
    check(ex and prod and not unknown, f"kasirctl.yaml: every key is in kasirctl's table "
          f"(unknown: {unknown})")

    # docs/operations.md: the generated key tables are current.
    with open(os.path.join(SRC, "docs", "operations.md")) as f:
        doc = f.read()
    check(config_keys.section() in doc,
          "docs/operations.md config key tables are current "
          "(run /usr/bin/python3 tests/ops/config_keys.py --update)")
    for d in DAEMONS + ("kasirctl",):
        for k in config_keys.table_keys(d):
            if "." in k:
                check(f"`{k}" in doc, f"docs/operations.md documents {d} key {k}")

    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall config checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
