"""kasirctl drill (SOP section 9) against the test stack, every drill (SOP
6.1 to 6.5) with --auto (6.2 without, by hand, its text output piped and
read while it runs): each must detect (alert expression on the scraped
metrics, doctor naming the finding with its SOP severity), resolve, get
healthy again and keep every drill payment (PAID, access, receipt); each
run is an incident record that `incident report` renders.  Also: refusal
in production and for the support role, `drill history` flagging a run
older than 90 days (faked by an insert), and finance exports leaving the
drill orders out.

The test stack's daemons are the harness's children, so drill.stop_command
and start_command ask this test (a file in ctl/, served by a thread) to
stop or start the daemon through the harness, as deploy/dev/stop and start
ask the dev stack's supervisor; staging uses systemctl.
"""
import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kasirtest  # noqa: E402
import yaml  # noqa: E402
from ctlstack import DAEMONS, Ctl, create_order, pay  # noqa: E402

FIRST = ["6.5", "6.4", "6.2", "6.1"]  # then history, then 6.3


class Supervisor(threading.Thread):
    """Serves the drill's stop/start commands: a file ctl/ACTION.SERVICE
    ("stop.kasir-notifier") is done through the harness, then removed."""

    def __init__(self, st):
        super().__init__(daemon=True)
        self.st = st
        self.dir = os.path.join(st.dir, "ctl")
        os.makedirs(self.dir, exist_ok=True)
        self.done = threading.Event()
        self.actions = []

    def command(self, action):
        f = os.path.join(self.dir, f"{action}.{{service}}")
        return f"touch {f} && while [ -e {f} ]; do sleep 0.1; done"

    def run(self):
        while not self.done.is_set():
            for name in sorted(os.listdir(self.dir)):
                action, svc = name.split(".", 1)
                daemon = svc.removeprefix("kasir-")
                if action == "stop":
                    self.st.stop(daemon)
                else:
                    self.st.start(daemon)
                self.actions.append((action, daemon))
                os.remove(os.path.join(self.dir, name))
            time.sleep(0.1)


def drill_config(st, ctl, sup, deployment="dev"):
    """The rendered kasirctl.yaml with the harness's stop/start commands."""
    with open(ctl.config) as f:
        text = f.read()
    text = re.sub(r"(?m)^deployment: \S+", f"deployment: {deployment}", text)
    text = re.sub(r'(?m)^  stop_command: .*$',
                  f'  stop_command: "{sup.command("stop")}"', text)
    text = re.sub(r'(?m)^  start_command: .*$',
                  f'  start_command: "{sup.command("start")}"', text)
    path = os.path.join(st.dir, f"kasirctl-{deployment}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def drill(ctl, config, scenario, *extra, role=None, expect=0):
    rc, out, err = ctl.run("--config", config, "--json", "drill", "run", scenario, *extra,
                           "--reason", f"quarterly drill {scenario}", role=role,
                           config=False, timeout=400)
    assert rc == expect, (scenario, rc, out, err)
    return json.loads(out)



def check_alerts_exist(rows):
    path = os.path.join(kasirtest.source_dir(), "deploy", "prometheus", "kasir-alerts.yml")
    with open(path) as f:
        rules = {r["alert"]: r for g in yaml.safe_load(f)["groups"]
                 for r in g["rules"] if "alert" in r}
    unit = {"s": 1000, "m": 60000, "h": 3600000}
    for r in rows:
        rule = rules.get(r["alert"])
        assert rule is not None, f"drill {r['scenario']}: no alert rule {r['alert']}"
        m = re.fullmatch(r"(\d+)([smh])", str(rule.get("for", "0s")))
        assert m, rule.get("for")
        want = int(m.group(1)) * unit[m.group(2)]
        assert want == r["alert_for_ms"], \
            f"drill {r['scenario']}: {r['alert']} has for: {rule.get('for')}, the drill says {r['alert_for_ms']} ms"

def main():
    with kasirtest.Stack.for_test(name="kasirctl_drill",
                                  overrides={"CTL_TIMEOUT": "2s",
                                             "CTL_DRILL_TIMEOUT": "60s",
                                             # 6.3: doctor's webhook silence
                                             # after 2 s, no automatic switch
                                             "RECON_AUTO_SILENCE": "2s",
                                             "RECON_AUTO_MODE": "false",
                                             "RECON_MODE_INTERVAL": "1s"}) as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        sup = Supervisor(st)
        sup.start()
        dev = drill_config(st, ctl, sup, "dev")
        prod = drill_config(st, ctl, sup, "production")

        # a deployment kasirctl does not know is a configuration error
        bad = drill_config(st, ctl, sup, "prod")
        rc, out, err = ctl.run("--config", bad, "drill", "list", config=False)
        assert rc == 2 and "deployment: want dev, staging or production" in err, (rc, err)

        # drill list: the five SOP scenarios
        rc, out, _ = ctl.run("--config", dev, "--json", "drill", "list", config=False)
        rows = json.loads(out)["result"]
        assert [r["scenario"] for r in rows] == ["6.1", "6.2", "6.3", "6.4", "6.5"], rows
        assert all(r["implemented"] for r in rows), rows
        # each drill's alert is a rule of deploy/prometheus with the same
        # for: (the drill evaluates a copy of its expression in drill.c;
        # this keeps at least the rule and its window from drifting)
        check_alerts_exist(rows)

        # never drilled: every scenario overdue
        rc, out, _ = ctl.run("--config", dev, "drill", "history", config=False)
        assert rc == 1 and out.count("never") == 5 and out.count("OVERDUE") == 5, out

        # production: refused before anything is touched
        r = drill(ctl, prod, "6.5", "--auto", expect=1)
        assert r["error"]["code"] == "drill_refused", r
        assert st.running("notifier") and st.admin("notifier", "/readyz").status == 200
        # support role: refused (a drill changes things)
        r = drill(ctl, dev, "6.5", "--auto", role="support", expect=1)
        assert r["error"]["code"] == "role_required", r

        reports = {}

        def run_drill(sc):
            res = drill(ctl, dev, sc, "--auto")["result"]
            print(f"drill {sc}: alert {res['alert_condition_ms']} ms, doctor "
                  f"{res['doctor_ms']} ms, healthy {res['healthy_ms']} ms, would fire "
                  f"{res['alert_would_fire']}", flush=True)
            assert res["passed"] is True, res
            assert res["alert_condition_ms"] is not None and res["doctor_ms"] is not None
            assert res["healthy_ms"] is not None and res["lost"] == 0, res
            assert res["drill_orders"] >= 2, res
            reports[sc] = res

        def run_drill_by_hand(sc, resolve):
            """Without --auto, text output into a pipe (as `| tee`): every
            line must arrive while the drill runs, RESOLVE IT NOW before it
            waits for the operator (stdout was fully buffered into a pipe:
            nothing arrived until the drill had ended, so nobody could
            resolve it in time); resolve(incident) is the operator."""
            e = {k: v for k, v in os.environ.items()
                 if k not in ("KASIR_ROLE", "KASIRCTL_CONFIG", "KASIR_DEV_ENV")}
            p = subprocess.Popen([ctl.binary, "--config", dev, "drill", "run", sc,
                                  "--reason", f"quarterly drill {sc} by hand"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=e, cwd=st.dir)
            lines, inc = [], None
            for line in p.stdout:
                print(f"drill {sc} | {line}", end="", flush=True)
                lines.append(line)
                m = re.match(rf"drill {re.escape(sc)} \(.*\): (INC-\d+)$", line.strip())
                if m:
                    inc = m.group(1)
                if "RESOLVE IT NOW" in line:
                    break
            assert p.poll() is None, ("the drill ended before its output arrived", lines)
            assert inc and any("drill T+" in x for x in lines), lines
            resolve(inc)
            rest = p.stdout.read()
            print(rest, flush=True)
            assert p.wait(timeout=300) == 0, (lines, rest)
            sev = st.sql("SELECT severity FROM ops.incident WHERE id = %s",
                         (int(inc[4:]),))[0][0]
            reports[sc] = {"severity": sev, "incident": inc}

        def grant_lost_access(inc):
            doc = ctl.json("doctor", expect=1)
            lost = [i["order_id"] for f in doc["result"]["findings"]
                    if f["check"] == "paid_without_access" for i in f["items"]]
            assert len(lost) == 1, doc
            rc, out, err = ctl.run("--config", dev, "access", "grant", lost[0],
                                   "--incident", inc, "--reason", "drill 6.2 by hand",
                                   config=False)
            assert rc == 0, (out, err)

        for sc in FIRST:
            if sc == "6.1":
                # a shop with recent sales: 12 Snap successes in the window
                # (the drill stopped after 8 refused checkouts, so doctor's
                # failure ratio never got past half and 6.1 always failed)
                for _ in range(12):
                    pay(st, create_order(st))
            if sc == "6.2":
                run_drill_by_hand(sc, grant_lost_access)
            else:
                run_drill(sc)
        assert reports["6.1"]["drill_orders"] >= 2, reports["6.1"]
        # 6.4's condition is an age starting to count, not "= 0 (> 600 ...)"
        held = [e["text"] for e in reports["6.4"]["timeline"]
                if "KasirNotifierProviderFailing: condition holds" in e["text"]]
        assert len(held) == 1 and "started counting" in held[0] \
            and "seconds = 0" not in held[0], held
        # the drill's refused checkouts are no customers who could not pay:
        # doctor does not list them (snap_failures, P2, for 24 h)
        doc = ctl.json("doctor", expect=None)["result"]
        drilled = {r[0] for r in st.sql("SELECT order_id FROM orders.orders WHERE drill")}
        listed = {i.get("order_id") for f in doc["findings"]
                  if f["check"] == "snap_failures" for i in f["items"]}
        assert not listed & drilled, (listed & drilled, doc)
        assert sup.actions == [("stop", "notifier"), ("start", "notifier")], sup.actions
        assert [reports[s]["severity"] for s in ("6.5", "6.4", "6.2", "6.1")] == \
            ["P1", "P2", "P1", "P0"], reports
        assert reports["6.5"]["alert_would_fire"].endswith("(for: 120s)"), reports["6.5"]

        # every run is an incident: severity, detected by drill, timeline, times
        inc = reports["6.5"]["incident"]
        rc, out, _ = ctl.run("--config", dev, "--json", "incident", "report", inc,
                             config=False)
        rep = json.loads(out)["result"]
        text = json.dumps(rep)
        assert "drill" in text and "measured: alert condition" in text, rep
        rc, out, _ = ctl.run("--config", dev, "incident", "report", inc, config=False)
        assert rc == 0 and "| Detected by | drill |" in out and "measured: alert condition" in out, out
        rows = st.sql("SELECT severity, detected_by, closed_at IS NOT NULL FROM ops.incident"
                      " WHERE title LIKE 'drill 6.%' ORDER BY id")
        assert rows == [("P1", "drill", True), ("P2", "drill", True), ("P1", "drill", True),
                        ("P0", "drill", True)], rows
        # 6.2: the revocation and the grant are kasir-order's audited changes,
        # under the drill's incident
        inc62 = reports["6.2"]["incident"]
        audit = st.sql("SELECT cmd, result, incident FROM orders.audit"
                       " WHERE cmd IN ('drill.revoke_access', 'access.grant') ORDER BY id")
        assert audit == [("drill.revoke_access", "ok", inc62),
                         ("access.grant", "ok", inc62)], audit

        # drill orders are marked and left out of finance exports
        drill_orders = [r[0] for r in st.sql(
            "SELECT order_id FROM orders.orders WHERE drill ORDER BY created_at")]
        assert len(drill_orders) >= 6, drill_orders
        assert st.sql("SELECT count(*) FROM orders.orders WHERE course_id = 'drill'"
                      " AND NOT drill")[0][0] == 0
        sale = create_order(st)
        pay(st, sale)
        rc, out, err = ctl.run("--config", dev, "export", "orders", "--from", "2000-01-01",
                               "--to", "2100-01-01", "--format", "csv", "--reason", "finance",
                               config=False)
        assert rc == 0, err
        ids = [r["order_id"] for r in csv.DictReader(io.StringIO(out, newline=""))]
        assert sale in ids and not set(drill_orders) & set(ids), (ids, drill_orders)

        # history: 6.3 drilled 120 days ago (faked), and 6.2's run today
        # counts, not an older one (faked 200 days ago)
        # (passed drills: closed with their post-mortem fields), and a 6.3
        # drill 10 days ago that FAILED: no drill done, 6.3 stays overdue
        closed = ("'drill: test', %s, 'test', 'drill again within 90 days', 'test',"
                  " 'test', now() - interval '{d} days', now() - interval '{d} days'")
        st.sql("INSERT INTO ops.incident (severity, title, opened_by, detected_by,"
               " root_cause, impact, resolution, preventive, owner, closed_by, closed_at,"
               " opened_at) VALUES"
               " ('P1', 'drill 6.3: webhook not arriving', 'test', 'drill', "
               + closed.format(d=120) % "'drill orders only: 3 paid, 0 lost'" + "),"
               " ('P1', 'drill 6.2: paid without access', 'test', 'drill', "
               + closed.format(d=200) % "'drill orders only: 2 paid, 0 lost'" + "),"
               " ('P1', 'drill 6.3: webhook not arriving', 'test', 'drill', "
               + closed.format(d=10) % "'drill orders only: 3 paid, 0 lost; THE DRILL FAILED'"
               + ")")
        rc, out, _ = ctl.run("--config", dev, "--json", "drill", "history", config=False)
        assert rc == 1, out
        hist = {r["scenario"]: r for r in json.loads(out)["result"]}
        assert [s for s in hist if hist[s]["overdue"]] == ["6.3"], hist
        assert hist["6.3"]["age_days"] == 10 and hist["6.3"]["passed"] is False, hist
        assert hist["6.2"]["incident"] == inc62 and hist["6.2"]["passed"] is True, hist
        assert hist["6.5"]["incident"] == inc, hist
        rc, out, _ = ctl.run("--config", dev, "drill", "history", config=False)
        assert re.search(r"(?m)^6\.3 .* FAILED \(last passed: INC-\d+, .*OVERDUE", out), out

        # 6.3: the drill payments' notifications dropped; reconciliation
        # mode gets them PAID, then the webhook works again and the mode
        # goes back to normal; history has nothing overdue any more
        run_drill("6.3")
        assert reports["6.3"]["severity"] == "P1", reports["6.3"]
        assert st.sql("SELECT count(*) FROM orders.orders o WHERE drill AND status = 'PAID'"
                      " AND NOT EXISTS (SELECT 1 FROM ingest.payment_event e"
                      " WHERE e.order_id = o.order_id)")[0][0] == 3
        inc63 = reports["6.3"]["incident"]
        assert st.sql("SELECT result, incident FROM recon.audit WHERE command = 'mode.set'"
                      " ORDER BY id") == [("ok", inc63), ("ok", inc63)]
        rc, out, _ = ctl.run("--config", dev, "--json", "drill", "history", config=False)
        assert rc == 0, out
        assert not [r for r in json.loads(out)["result"] if r["overdue"]], out

        # 6.3 by hand: the drill waits for the operator before anything of
        # its own clears the finding (it paid two orders whose notifications
        # cleared webhook_silence within 50 ms of naming it, and switched
        # reconciliation off itself although --auto was not given)
        def reconcile_by_hand(inc):
            time.sleep(2)
            doc = ctl.json("doctor", expect=None)["result"]
            assert [f for f in doc["findings"] if f["check"] == "webhook_silence"], \
                ("webhook_silence gone before the operator resolved it", doc)
            assert st.sql("SELECT count(*) FROM recon.audit WHERE command = 'mode.set'"
                          " AND incident = %s", (inc,))[0][0] == 0
            rc, out, err = ctl.run("--config", dev, "reconcile-mode", "on", "--incident", inc,
                                   "--reason", "drill 6.3 by hand", config=False)
            assert rc == 0, (out, err)

        run_drill_by_hand("6.3", reconcile_by_hand)
        inc63h = reports["6.3"]["incident"]
        # only the operator's switch: the drill did not switch it back
        assert st.sql("SELECT args->>'mode', result FROM recon.audit"
                      " WHERE command = 'mode.set' AND incident = %s ORDER BY id",
                      (inc63h,)) == [("reconcile", "ok")], inc63h
        ctl.text("reconcile-mode", "off", "--reason", "drill 6.3 over")

        # a resolution that does not resolve: the drill fails, its
        # payments are reported lost (no receipt), the incident says so
        with open(dev) as f:
            text = f.read()
        text = re.sub(r'(?m)^  start_command: .*$', '  start_command: "true"', text)
        text = re.sub(r'(?m)^  timeout: .*$', '  timeout: 5s', text)
        broken = os.path.join(st.dir, "kasirctl-broken.yaml")
        with open(broken, "w") as f:
            f.write(text)
        r = drill(ctl, broken, "6.5", "--auto", expect=1)["result"]
        assert r["passed"] is False and r["healthy_ms"] is None and r["lost"] == 2, r
        assert all("receipt not sent" in x for x in r["lost_orders"]), r
        assert st.sql("SELECT impact FROM ops.incident WHERE title LIKE 'drill 6.5%%'"
                      " ORDER BY id DESC LIMIT 1")[0][0] == \
            "drill orders only: 2 paid, 2 lost; THE DRILL FAILED"
        # history shows the failed drill as failed (it showed "ok", exit 0)
        # and names the last one that passed (exit 1: a drill failed)
        rc, out, _ = ctl.run("--config", dev, "--json", "drill", "history", config=False)
        hist = {r["scenario"]: r for r in json.loads(out)["result"]}
        assert rc == 1 and hist["6.5"]["passed"] is False, (rc, hist)
        assert hist["6.5"]["last_passed"] == inc and not hist["6.5"]["overdue"], hist
        rc, out, _ = ctl.run("--config", dev, "drill", "history", config=False)
        assert rc == 1 and re.search(rf"(?m)^6\.5 .* FAILED \(last passed: {inc}, ", out), out
        sup.done.set()
        st.start("notifier")

        # drill.revoke_access takes nothing from a real order: a drill whose
        # course is a course for sale fails at the fault, refused and audited
        text = re.sub(r'(?m)^  course: .*$', '  course: bikin-film-pendek', text)
        text = re.sub(r'(?m)^  timeout: .*$', '  timeout: 30s', text)
        with open(broken, "w") as f:
            f.write(text)
        r = drill(ctl, broken, "6.2", "--auto", expect=1)["result"]
        assert r["passed"] is False and r["alert_condition_ms"] is None, r
        refused = st.sql("SELECT order_id, error FROM orders.audit"
                         " WHERE cmd = 'drill.revoke_access' AND result = 'refused'")
        assert len(refused) == 1 and "not_a_drill_order" in refused[0][1], refused
        assert st.sql("SELECT count(*) FROM orders.entitlements WHERE order_id = %s"
                      " AND revoked_at IS NULL", (refused[0][0],))[0][0] == 1
    print("kasirctl drill test passed")


if __name__ == "__main__":
    main()
