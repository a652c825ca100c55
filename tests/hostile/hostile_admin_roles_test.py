"""Roles on the admin socket of every daemon (issue 13 item 3, issue 14
item 3).

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

Each command's minimum role (from the daemon's command table, listed by
admin.commands) must be the one written below: a command that changes
or exports must need the engineer role.  Support is refused
("role_required", no result) for exactly those; every refusal of such an
(audited) command is then found by the daemon's own "audit.list" (support
role, newest first, bounded, filtered by order id and since).
So is a changing command refused for its arguments, and every read of
customer data (order.show, orders.find, the order's doctor.facts, the
notifier's jobs.list and evidence.order) is audited "ok" before the
daemon answers, whoever asks.
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
        "order": {"status", "order.show", "orders.find", "orders.pending", "doctor.facts",
                  "orders.unknown_notifications", "access.grant", "export.orders"},
        "notifier": {"status", "doctor.facts", "jobs.list", "evidence.order", "receipt.resend",
                     "jobs.requeue", "jobs.decide", "reminders.pause", "reminders.resume"},
        "reconciler": {"status", "doctor.facts", "checks.list", "reconcile.order",
                       "reconcile.pending", "mode.set", "evidence.order",
                       "refund.order"}}
for _svc in MUST:
    MUST[_svc].add("audit.list")
# The commands that need the engineer role; every other one needs support.
ENGINEER = {"ingest": {"export.events"},
            "order": {"access.grant", "drill.revoke_access", "export.orders"},
            "notifier": {"receipt.resend", "jobs.requeue", "jobs.decide",
                         "reminders.pause", "reminders.resume"},
            "reconciler": {"reconcile.order", "reconcile.pending", "mode.set",
                           "refund.order"}}
# The changing commands: without a reason the admin socket refuses them
# (reason_required, audited) before their handler runs.  Every engineer
# command but the exports.
NEEDS_REASON = {svc: {c for c in cmds if not c.startswith("export.")}
                for svc, cmds in ENGINEER.items()}
# The reads whose answers carry customer data: the daemon audits each one
# ("ok") before answering, whoever asks (an outside attack, 2026-12-07: a
# support user on the socket read names and emails unrecorded).
PERSONAL = {"ingest": set(), "order": {"order.show", "orders.find", "doctor.facts"},
            "notifier": {"jobs.list", "evidence.order"}, "reconciler": set()}
# A changing command refused for its arguments is audited too (the same
# attack: a refund of -5 left no row).
BAD_ARGS = {"ingest": [("export.events", {"from": "bogus"})],
            "order": [("access.grant", {"order_id": "x" * 5000})],
            "notifier": [("jobs.decide", {"job_id": -1, "decision": "resend"})],
            "reconciler": [("refund.order", {"order_id": "ORD-ROLE-1", "amount": -5}),
                           ("mode.set", {"mode": "sometimes"})]}
# Arguments that would be enough for the read commands to answer data.
ARGS = {"order_id": "ORD-ROLE-1", "from": "2000-01-01", "to": "2100-01-01"}


def admin(st, svc, cmd, as_role=None, args=None, reason="role test"):
    req = {"v": 1, "cmd": cmd, "args": ARGS if args is None else args}
    if reason is not None:
        req["reason"] = reason
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
            table = {row["name"]: row for row in listed["result"]["table"]}
            check(set(table) == set(cmds), f"{svc}: the table lists every command")
            for cmd in cmds:
                want = "engineer" if cmd in ENGINEER[svc] else "support"
                check(table[cmd]["min_role"] == want,
                      f"{svc} {cmd}: minimum role {want} ({table[cmd]})")
                r = admin(st, svc, cmd, as_role="support")
                code = r.get("error", {}).get("code")
                check(code != "unknown_command",
                      f"{svc} {cmd}: reaches the dispatch as support ({code})")
                if want == "engineer":
                    check(r.get("ok") is False and code == "role_required"
                          and "result" not in r,
                          f"{svc} {cmd}: support refused ({r})")
                else:
                    check(code != "role_required",
                          f"{svc} {cmd}: support allowed ({code})")
            listed_personal = {c for c in cmds if table[c].get("personal")}
            check(listed_personal == PERSONAL[svc],
                  f"{svc}: the reads of customer data are marked personal "
                  f"({sorted(listed_personal)})")
            listed_reason = {c for c in cmds if table[c].get("needs_reason")}
            check(listed_reason == NEEDS_REASON[svc],
                  f"{svc}: the changing commands need a reason "
                  f"({sorted(listed_reason)})")
            for cmd in sorted(NEEDS_REASON[svc]):
                for reason in (None, ""):
                    r = admin(st, svc, cmd, reason=reason)
                    check(r.get("ok") is False and "result" not in r and
                          r["error"]["code"] == "reason_required",
                          f"{svc} {cmd}: refused without a reason ({r})")
            r = admin(st, svc, "no.such.command", as_role="support")
            check(r["error"]["code"] == "unknown_command",
                  f"{svc}: an unregistered name is unknown_command")
            for cmd, args in BAD_ARGS[svc]:
                r = admin(st, svc, cmd, args=args)
                check(r.get("ok") is False and r["error"]["code"] == "invalid_args",
                      f"{svc} {cmd} {str(args)[:60]}: invalid_args ({str(r)[:200]})")
            audit_list(st, svc)


def audit_list(st, svc):
    """The support refusals above are in the daemon's audit.list."""
    r = admin(st, svc, "audit.list", as_role="support", args={})
    check(r.get("ok") is True, f"{svc}: audit.list answers support ({r})")
    rows = r["result"]["audit"]
    refused = {x["command"] for x in rows
               if x["result"] == "refused" and x["role"] == "support"}
    check(ENGINEER[svc] <= refused,
          f"{svc}: audit.list has every refused engineer command ({sorted(refused)})")
    no_reason = {x["command"] for x in rows
                 if x["result"] == "refused" and x["role"] == "engineer"}
    check(NEEDS_REASON[svc] <= no_reason,
          f"{svc}: audit.list has every command refused for its missing "
          f"reason ({sorted(no_reason)})")
    read = {x["command"] for x in rows if x["result"] == "ok" and x["role"] == "support"}
    check(PERSONAL[svc] <= read,
          f"{svc}: audit.list has every read of customer data ({sorted(read)})")
    check(not (read - PERSONAL[svc] - {"audit.list"}),
          f"{svc}: and no other read ({sorted(read - PERSONAL[svc])})")
    bad = [(x["command"], x["error"]) for x in rows
           if x["result"] == "refused" and x["role"] == "engineer"
           and "invalid_args" in (x["error"] or "")]
    check({c for c, _ in bad} == {c for c, _ in BAD_ARGS[svc]},
          f"{svc}: audit.list has every refusal for bad arguments ({bad})")
    ids = [int(x["id"]) for x in rows]
    check(ids == sorted(ids, reverse=True), f"{svc}: audit.list newest first {ids}")
    check(all(set(x) >= {"at", "actor", "role", "command", "args", "reason",
                         "incident", "order_id", "before", "after", "result"}
              for x in rows), f"{svc}: audit.list rows have the common shape")
    r = admin(st, svc, "audit.list", as_role="support", args={"limit": 1})
    check(len(r["result"]["audit"]) == 1 and r["result"]["audit"][0]["id"] == rows[0]["id"],
          f"{svc}: audit.list limit 1 is the newest row")
    r = admin(st, svc, "audit.list", as_role="support",
              args={"since": "2999-01-01T00:00:00Z"})
    check(r.get("ok") is True and r["result"]["audit"] == [],
          f"{svc}: audit.list since the future is empty")
    r = admin(st, svc, "audit.list", as_role="support",
              args={"order_id": "ORD-NOBODY-1"})
    check(r.get("ok") is True and r["result"]["audit"] == [],
          f"{svc}: audit.list for another order is empty")
    for bad in ({"limit": 0}, {"limit": 501}, {"since": "yesterday-ish"},
                {"order_id": "bad id!"}):
        r = admin(st, svc, "audit.list", as_role="support", args=bad)
        check(r.get("ok") is False and r["error"]["code"] == "invalid_args",
              f"{svc}: audit.list {bad} refused as invalid_args ({r})")
    if svc == "order":
        # what a search named is kept by its first two characters only:
        # audit.list shows every row to every support user (an attack)
        r = admin(st, svc, "orders.find", as_role="support",
                  args={"email": "siti@example.co.id", "phone": "081234567890"})
        check(r.get("ok") is True, f"order: orders.find answers support ({str(r)[:120]})")
        r = admin(st, svc, "audit.list", as_role="support", args={"limit": 1})
        row = r["result"]["audit"][0]
        text = json.dumps(row)
        check(row["command"] == "orders.find" and "siti@example.co.id" not in text
              and "081234567890" not in text and "si... (18)" in text,
              f"order: the read's row keeps the search masked ({row['args']})")

if __name__ == "__main__":
    main()
