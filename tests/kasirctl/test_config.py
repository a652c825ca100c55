"""How kasirctl finds its configuration (--config, $KASIRCTL_CONFIG,
$KASIR_DEV_ENV, var/dev.env walking up from the cwd) and how it refuses
bad input: broken config, unknown command, KASIR_ROLE that is not a role,
an --incident that does not exist, no configuration at all."""

import json
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kasirtest  # noqa: E402
from ctlstack import Ctl  # noqa: E402


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def main():
    with kasirtest.Stack.for_test(name="kasirctl_config") as st:
        st.start_all(services=["ingest", "order"])
        ctl = Ctl(st)
        base = os.path.join(st.dir, "devenv")

        # var/dev.env naming the rendered kasirctl.yaml, found from a subdir
        write(os.path.join(base, "var", "dev.env"),
              "# written by deploy/dev/up\n"
              f"KASIRCTL_CONFIG={shlex.quote(ctl.config)}\n")
        sub = os.path.join(base, "services", "order")
        os.makedirs(sub, exist_ok=True)
        # (the notifier and reconciler are configured but not started:
        # status prints everything and exits 3)
        rc, out, err = ctl.run("--json", "status", config=False, cwd=sub)
        assert rc == 3 and '"state":\t"up"' in out, (rc, out, err)
        # ... and kasirctl's own record was written through it
        n = st.sql("SELECT count(*) FROM ops.audit WHERE command = 'status'")[0][0]
        assert n == 1, n

        # a dev.env with socket lines only (shell-quoted, one with a quote
        # in a comment-free value): status works, the ops database is absent
        weird = os.path.join(base, "it's")
        write(os.path.join(weird, "dev.env"),
              "KASIR_VAR=" + shlex.quote(weird) + "\n"
              "KASIR_ORDER_SOCKET=" + shlex.quote(st.config_value("order", "admin.socket")) + "\n"
              "KASIR_INGEST_SOCKET=" + shlex.quote(st.config_value("ingest", "admin.socket"))
              + "\n")
        env = {"KASIR_DEV_ENV": os.path.join(weird, "dev.env")}
        rc, out, err = ctl.run("status", config=False, env=env, cwd="/")
        assert rc == 0, (rc, out, err)
        assert "kasir-order" in out and "not configured" in out, out
        rc, out, err = ctl.run("incident", "list", config=False, env=env, cwd="/")
        assert rc == 2 and "no ops database" in err, (rc, err)
        rc, out, err = ctl.run("reminders", "pause", "--reason", "x", config=False, env=env,
                               cwd="/")
        assert rc == 2 and "kasir-notifier has no admin socket" in err, (rc, err)
        assert st.sql("SELECT count(*) FROM ops.audit WHERE command = 'status'")[0][0] == 1

        # $KASIRCTL_CONFIG
        rc, out, err = ctl.run("status", config=False, env={"KASIRCTL_CONFIG": ctl.config},
                               cwd="/")
        assert rc == 3 and ctl.config in out, (rc, out)

        # no access is not "down" (an outside check, 2026-12-08: every
        # daemon DOWN, exit 3, doctor P0 "systemctl restart"): role none
        # is refused by the daemons, a user outside the socket's group by
        # the socket; both say so, suggest no restart and exit 1
        only_up = os.path.join(base, "up-only.yaml")
        write(only_up, "sockets:\n"
              f"  ingest: {st.config_value('ingest', 'admin.socket')}\n"
              f"  order: {st.config_value('order', 'admin.socket')}\n"
              "roles:\n  engineer_group: kasir-engineer\n"
              "  support_group: kasir-support\n")
        os.chmod(base, 0o755)
        os.chmod(only_up, 0o644)
        for cmd in ("status", "doctor"):
            rc, out, err = ctl.run("--config", only_up, cmd, config=False, role="none")
            assert rc == 1, (cmd, rc, out, err)
            assert "role_required" in err and "no access" in err and "role none" in err, err
            assert "DOWN" not in out + err and "restart" not in out + err, (out, err)
            rc, out, err = ctl.run("--config", only_up, "--json", cmd, config=False,
                                   role="none")
            o = json.loads(out)
            assert rc == 1 and o["ok"] is False and o["error"]["code"] == "role_required", o
        # two daemons refuse, two are down (not started): DENIED is not DOWN
        rc, out, err = ctl.run("status", role="none")
        assert rc == 3 and re.search(r"kasir-order\s+DENIED", out) \
            and re.search(r"kasir-notifier\s+DOWN", out), (rc, out)
        doc = ctl.json("doctor", role="none", expect=1)
        checks = {f["check"] for f in doc["result"]["findings"]}
        assert "order_answers" not in checks and "ingest_answers" not in checks \
            and "notifier_answers" in checks, checks
        assert {x["service"] for x in doc["result"]["no_access"]} == \
            {"kasir-ingest", "kasir-order"}, doc["result"]["no_access"]
        # a user who may not open the socket (root is never refused: the
        # test runs as nobody; as another user it takes the socket's
        # permissions away)
        order_sock = st.config_value("order", "admin.socket")[len("ipc://"):]
        ingest_sock = st.config_value("ingest", "admin.socket")[len("ipc://"):]
        modes = {p: os.stat(p).st_mode for p in (order_sock, ingest_sock)}
        as_nobody = {}
        if os.geteuid() == 0:
            as_nobody = {"user": 65534, "group": 65534, "extra_groups": []}
        else:
            for p in modes:
                os.chmod(p, 0)
        try:
            for cmd in ("status", "doctor"):
                for js in ([], ["--json"]):
                    r = subprocess.run([ctl.binary, "--config", only_up] + js + [cmd],
                                       capture_output=True, text=True, cwd="/",
                                       env={"PATH": "/usr/bin:/bin"}, timeout=60,
                                       **as_nobody)
                    print(f"$ kasirctl {' '.join(js + [cmd])} (no socket access) -> "
                          f"{r.returncode}\n{r.stdout}{r.stderr}", flush=True)
                    assert r.returncode == 1, (cmd, r.returncode, r.stdout, r.stderr)
                    both = r.stdout + r.stderr
                    assert "DOWN" not in both and "restart" not in both \
                        and "not answering" not in both, both
                    # the socket and its group (text: every daemon's)
                    assert "permission denied" in both and ingest_sock in both \
                        and "group root" in both, both
                    assert js or order_sock in both, both
                    if js:
                        o = json.loads(r.stdout)
                        assert o["ok"] is False and \
                            o["error"]["code"] == "permission_denied", o
        finally:
            for p, m in modes.items():
                os.chmod(p, m)

        # a broken config: every error as file:line, nothing half-applied
        bad = os.path.join(base, "bad.yaml")
        write(bad, "sockets:\n  order: ipc:///x.sock\n  kitchen: tcp://1\n"
                   "timeout: forever\n")
        rc, out, err = ctl.run("--config", bad, "status", config=False)
        assert rc == 2 and f"{bad}:3:" in err and f"{bad}:4:" in err, err
        write(bad, "sockets:\n  order: http://x\n")
        rc, out, err = ctl.run("--config", bad, "status", config=False)
        assert rc == 2 and "sockets.order" in err, err

        # no configuration anywhere
        rc, out, err = ctl.run("status", config=False, cwd="/")
        assert rc == 2 and "no configuration" in err, err

        # usage errors
        rc, out, err = ctl.run("frobnicate")
        assert rc == 2 and "unknown command: frobnicate" in err and "usage:" in err, err
        rc, out, err = ctl.run("order", "show", "bad id!")
        assert rc == 2, err
        rc, out, err = ctl.run("status", role="wizard")
        assert rc == 2 and "KASIR_ROLE=wizard" in err, err
        # --json prints exactly one JSON object, also when the command line
        # or the environment is wrong (`--json foo` printed none)
        for args, role, want in ((["--json", "frobnicate"], None, "unknown command"),
                                 (["--json"], None, "no command"),
                                 (["--json", "status"], "wizard", "KASIR_ROLE=wizard"),
                                 (["--json", "--incident", "7x", "status"], None, "INC-")):
            rc, out, err = ctl.run(*args, role=role)
            o = json.loads(out)
            assert rc == 2 and o["ok"] is False and o["error"]["code"] == "usage" \
                and want in o["error"]["message"] and want in err, (args, rc, out, err)
        rc, out, err = ctl.run("access", "grant", "X1", "--reason", "bell\x07")
        assert rc == 2 and "--reason" in err, err
        rc, out, err = ctl.run("access", "grant", "X1", "--reason", "x", "--incident", "7x")
        assert rc == 2 and "INC-" in err, err
        r = ctl.json("access", "grant", "X1", "--reason", "x", "--incident", "INC-999",
                     expect=1)
        assert r["error"]["code"] == "incident_not_found", r
        rows = st.sql("SELECT result, reason, error FROM ops.audit"
                      " WHERE command = 'access grant' ORDER BY id")
        # the refused --reason is recorded, without its text (an outside
        # attack, 2026-12-07: it left no row)
        assert len(rows) == 2 and rows[0][:2] == ("failed", None) and \
            rows[0][2].startswith("kasirctl: usage: --reason"), rows
        assert rows[1] == ("refused", "x", "kasirctl: incident_not_found: there is no"
                           " incident INC-999 (kasirctl incident list)"), rows
        # support cannot open incidents; refused and recorded
        r = ctl.json("incident", "open", "--severity", "P1", "--title", "t", role="support",
                     expect=1)
        assert r["error"]["code"] == "role_required", r
        assert st.sql("SELECT role, result FROM ops.audit WHERE command = 'incident open'") \
            == [("support", "refused")]
        rc, out, err = ctl.run("incident", "open", "--severity", "P5", "--title", "t")
        assert rc == 2, err
        rc, out, err = ctl.run("--version")
        assert rc == 0 and out.startswith("kasirctl "), out
        # --help: "*" (needs --reason) only where --reason is needed; the
        # incident commands change the record without one ("+")
        rc, out, err = ctl.run("--help")
        marks = {" ".join(ln.split()[:2]): ln.rstrip()[-1] for ln in out.splitlines()
                 if ln.startswith("  ")}
        assert rc == 0 and marks["reconcile-mode on|off"] == "*", (out, marks)
        for cmd in ("incident open", "incident note", "incident close"):
            assert marks[cmd] == "+", (cmd, out)
        assert "+ changes the incident record" in out and marks["status"] != "*", out
    print("kasirctl config test passed")


if __name__ == "__main__":
    main()
