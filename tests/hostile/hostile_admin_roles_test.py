"""Role "none" on the admin socket of every daemon (issue 13, item 3).

For each of the four daemons the test asks the daemon itself which
commands it registers (the built-in "admin.commands", over the real ipc
socket as root, i.e. engineer), then sends every one of them, the
built-in and a name nobody registers, with as_role "none": each must be
refused with "role_required" and nothing else in the reply (no result).
The same commands with as_role "support" must reach the daemon's own
dispatch (anything but "unknown_command"), which proves the registered
table and the dispatch agree.  common/admin_socket.c is the one place
that refuses role none; the ipc peer-credential path to role none (a
user in neither group) is covered by tests/unit_net/test_admin.c.
"""

import json
import os
import subprocess

import kasirtest
from hostile_util import check

DAEMONS = ("ingest", "order", "notifier", "reconciler")
# What each daemon must at least register: a command dropped from the
# table (and so unreachable) is caught here.
MUST = {"ingest": {"status", "events.list", "quarantine.list", "export.events",
                   "evidence.order"},
        "order": {"status", "order.show", "orders.pending", "doctor.facts",
                  "orders.unknown_notifications", "access.grant", "export.orders"},
        "notifier": {"status", "doctor.facts", "jobs.list", "evidence.order", "receipt.resend",
                     "jobs.requeue", "jobs.decide", "reminders.pause", "reminders.resume"},
        "reconciler": {"status", "doctor.facts", "checks.list", "reconcile.order",
                       "reconcile.pending", "mode.set", "evidence.order",
                       "refund.order"}}
# Arguments that would be enough for the read commands to answer data.
ARGS = {"order_id": "ORD-ROLE-1", "from": "2000-01-01", "to": "2100-01-01"}


def admin(st, svc, cmd, as_role=None):
    req = {"v": 1, "cmd": cmd, "args": ARGS, "reason": "role test"}
    if as_role is not None:
        req["as_role"] = as_role
    tool = os.path.join(kasirtest.build_dir(), "tests", "admin-call")
    url = st.config_value(svc, "admin.socket")
    r = subprocess.run([tool, url, json.dumps(req)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, f"admin-call {svc} {cmd}: {r.stderr}"
    return json.loads(r.stdout)


def main():
    with kasirtest.Stack.for_test(name="hostile_admin_roles") as st:
        st.start_all(services=list(DAEMONS))
        for svc in DAEMONS:
            listed = admin(st, svc, "admin.commands")
            check(listed.get("ok") is True, f"{svc}: admin.commands answers engineer")
            cmds = listed["result"]["commands"]
            check(MUST[svc] <= set(cmds),
                  f"{svc}: registers {sorted(MUST[svc])} (got {cmds})")
            for cmd in cmds + ["admin.commands", "no.such.command"]:
                r = admin(st, svc, cmd, as_role="none")
                check(r.get("ok") is False and r["error"]["code"] == "role_required"
                      and "result" not in r,
                      f"{svc} {cmd}: role none refused ({r})")
            st.wait_log(svc, r"admin: no\.such\.command by \S+ \(role none\) "
                             r"refused: role_required", timeout=10)
            check(True, f"{svc}: the refusals are in its log")
            for cmd in cmds:
                r = admin(st, svc, cmd, as_role="support")
                code = r.get("error", {}).get("code")
                check(code != "unknown_command",
                      f"{svc} {cmd}: reaches the dispatch as support ({code})")
            r = admin(st, svc, "no.such.command", as_role="support")
            check(r["error"]["code"] == "unknown_command",
                  f"{svc}: an unregistered name is unknown_command")


if __name__ == "__main__":
    main()
