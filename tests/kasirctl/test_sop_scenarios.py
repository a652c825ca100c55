"""One drill per SOP scenario (6.1 to 6.5), each on its own test stack:
cause it, `kasirctl doctor --json` reports the SOP severity and scenario,
the command the finding prints resolves it, ops.audit shows what was run,
and the matching alert fires in promtool on the values the daemons
exported (and stays quiet on the healthy values).

  6.1 orders created, none PAID (notifications lost)   P0 no_payments
  6.1 the Status API refuses the server key             P0 status_api_auth
  6.2 PAID without access                              P1 paid_without_access
  6.3 notifications refused for a bad signature        P1 signature_failures
  6.3 no notification at all                           P1 webhook_silence
  6.4 one SMTP 451 at a quiet shop                     P2 provider_failing
                                                          (tests/kasirctl/test_doctor.py)
  6.5 kasir-reconciler stops                           P1 reconciler_answers
  6.5 its scheduler loop is stuck, the daemon answers  P1 loop_silent
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kasirtest  # noqa: E402
import promrules  # noqa: E402
from ctlstack import DAEMONS, Ctl, active_entitlements, create_order, ops_audit  # noqa: E402


def doctor(ctl):
    """doctor --json whatever its exit status: (exit, result)."""
    rc, out, _ = ctl.run("--json", "doctor")
    return rc, json.loads(out)["result"]


def finding(result, check):
    fs = [f for f in result["findings"] if f["check"] == check]
    assert len(fs) == 1, (check, result["findings"])
    return fs[0]


def assert_sop(f, severity, scenario, alert):
    assert (f["severity"], f["scenario"], f["alert"]) == (severity, scenario, alert), f
    assert f["step"] and f["command"], f


def wait_watched(st, orders):
    """kasir-reconciler has the orders (from the orders stream): only then
    does `reconcile --pending` see them."""
    st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.watch WHERE order_id = ANY(%s)",
                                 (list(orders),))[0][0] == len(orders),
                  timeout=30, what="the reconciler watches the orders")


def pay_silently(st, order_id):
    """Paid at Midtrans, the notification lost on the way."""
    r = st.fake("POST", f"/_fake/orders/{order_id}/pay", {"notify": "drop"})
    assert r.status in (200, 202), r


def scenario_6_1():
    with kasirtest.Stack.for_test(name="sop_6_1") as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        orders = [create_order(st) for _ in range(3)]
        for o in orders:
            pay_silently(st, o)
        rc, res = doctor(ctl)
        assert rc == 1, res
        f = finding(res, "no_payments")
        assert_sop(f, "P0", "6.1", "KasirNoPayments")
        assert "3 orders created in the last hour, none PAID" in f["title"], f
        # the alert on what kasir-order exported, as the hour goes on
        (csel, created), = promrules.scraped(st, "order", "kasir_orders_created_total")
        paid = [s for s in promrules.scraped(st, "order", "kasir_order_transitions_total")
                if 'to="PAID"' in s[0]]
        assert created == 3 and paid and paid[0][1] == 0, (created, paid)
        psel = paid[0][0]
        assert promrules.fired("KasirNoPayments", [(csel, f"0x5 {created:.0f}x60"),
                                                   (psel, "0x65")], "40m")
        assert not promrules.fired("KasirNoPayments", [(csel, f"0x5 {created:.0f}x60"),
                                                       (psel, "0x5 1x60")], "40m")
        # the printed command resolves it: ask Midtrans
        assert "kasirctl reconcile --pending" in f["command"], f
        wait_watched(st, orders)
        ctl.json("reconcile", "--pending", "--reason", "drill 6.1: no payment for an hour")
        st.wait_until(lambda: st.sql("SELECT count(*) FROM orders.orders WHERE status = 'PAID'")
                      [0][0] == 3, timeout=60, what="the three orders PAID by reconciliation")
        st.wait_until(lambda: doctor(ctl)[0] == 0, timeout=30, what="doctor clean")
        assert [r[2] for r in ops_audit(st, "reconcile")] == ["ok"]
        print("6.1 ok", flush=True)


def scenario_6_1_server_key():
    """SOP 6.1 step 3: the Status API refuses kasir-reconciler's server key."""
    with kasirtest.Stack.for_test(name="sop_6_1_key") as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        key_path = st.secret_path("midtrans-server-key")
        good = st.secret("midtrans-server-key")
        with open(key_path, "w") as f:
            f.write("wrong-test-server-key-000000")
        st.restart("reconciler")
        a = create_order(st)
        pay_silently(st, a)
        wait_watched(st, [a])
        ctl.json("reconcile", "--pending", "--reason", "drill 6.1: is it paid?")
        st.wait_until(lambda: doctor(ctl)[0] == 1, timeout=30, what="doctor sees the key")
        rc, res = doctor(ctl)
        f = finding(res, "status_api_auth")
        assert_sop(f, "P0", "6.1", "KasirStatusApiAuthBroken")
        (sel, v), = promrules.scraped(st, "reconciler", "kasir_reconciler_auth_broken")
        assert v == 1, v
        assert promrules.fired("KasirStatusApiAuthBroken", [(sel, f"0x2 {v:.0f}x15")], "10m")
        assert not promrules.fired("KasirStatusApiAuthBroken", [(sel, "0x17")], "10m")
        # what it prints: replace the credential, restart, reconcile
        assert "systemctl restart kasir-reconciler" in f["command"] and \
            "kasirctl reconcile --pending" in f["command"], f
        with open(key_path, "w") as fh:
            fh.write(good)
        st.restart("reconciler")
        ctl.json("reconcile", "--pending", "--reason", "drill 6.1: key replaced")
        st.wait_until(lambda: active_entitlements(st, a) == 1, timeout=60,
                      what="paid and granted once the key is right")
        st.wait_until(lambda: doctor(ctl)[0] == 0, timeout=30, what="doctor clean")
        assert [r[3] for r in ops_audit(st, "reconcile")] == [
            "drill 6.1: is it paid?", "drill 6.1: key replaced"]
        print("6.1 (server key) ok", flush=True)


def scenario_6_2():
    with kasirtest.Stack.for_test(name="sop_6_2") as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        a = create_order(st)
        r = st.fake("POST", f"/_fake/orders/{a}/pay")
        assert r.status in (200, 202), r
        st.wait_until(lambda: active_entitlements(st, a) == 1, timeout=30, what="access")
        # the entitlement lost behind kasir-order's back
        st.sql("ALTER TABLE orders.entitlements DISABLE TRIGGER USER;"
               " DELETE FROM orders.entitlements WHERE order_id = %s;"
               " ALTER TABLE orders.entitlements ENABLE TRIGGER USER;", (a,))
        rc, res = doctor(ctl)
        assert rc == 1, res
        f = finding(res, "paid_without_access")
        assert_sop(f, "P1", "6.2", "KasirPaidWithoutAccess")
        assert [i["order_id"] for i in f["items"]] == [a], f
        # kasir-order recounts every 15 s
        st.wait_until(lambda: promrules.scraped(st, "order", "kasir_order_paid_without_access")
                      [0][1] == 1, timeout=40, what="kasir_order_paid_without_access 1")
        (sel, v), = promrules.scraped(st, "order", "kasir_order_paid_without_access")
        assert promrules.fired("KasirPaidWithoutAccess", [(sel, f"0x2 {v:.0f}x20")], "10m")
        assert not promrules.fired("KasirPaidWithoutAccess", [(sel, "0x22")], "10m")
        inc = ctl.json("incident", "open", "--severity", "P1", "--title",
                       "drill 6.2: paid without access")["result"]["id"]
        assert f["command"].startswith("kasirctl access grant ORDER_ID"), f
        ctl.json("access", "grant", a, "--reason", "drill 6.2", "--incident", inc)
        assert active_entitlements(st, a) == 1
        rc, res = doctor(ctl)
        assert rc == 0 and res["findings"] == [], res
        rows = ops_audit(st, "access grant", a)
        assert [(x[2], x[3]) for x in rows] == [("ok", "drill 6.2")], rows
        print("6.2 ok", flush=True)


def forged(order_id):
    return {"transaction_time": "2026-12-06 09:00:00", "transaction_status": "settlement",
            "transaction_id": "tx-" + order_id, "status_message": "midtrans payment notification",
            "status_code": "200", "order_id": order_id, "gross_amount": "150000.00",
            "payment_type": "bank_transfer", "currency": "IDR", "fraud_status": "accept",
            "signature_key": "cd" * 64}


def scenario_6_3():
    with kasirtest.Stack.for_test(name="sop_6_3") as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        # the customer paid; what reaches kasir-ingest does not verify (as
        # after a server key rotation done on one side only)
        a = create_order(st)
        pay_silently(st, a)
        for _ in range(6):
            assert st.notify(forged(a)).status == 403
        st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.quarantine")[0][0] >= 1,
                      timeout=20, what="quarantined")
        rc, res = doctor(ctl)
        assert rc == 1, res
        f = finding(res, "signature_failures")
        assert_sop(f, "P1", "6.3", "KasirWebhookRefused")
        assert "claiming order " + a in f["title"] and "127.0.0.1" in f["title"], f
        (sel, v), = promrules.scraped(st, "ingest", "kasir_ingest_signature_failures_total")
        assert v == 6, v
        assert promrules.fired("KasirWebhookRefused", [(sel, f"0x3 {v:.0f}x30")], "12m")
        assert not promrules.fired("KasirWebhookRefused", [(sel, "0x33")], "12m")
        # the printed command gets the payment through by reconciliation
        assert "kasirctl reconcile --pending" in f["command"], f
        wait_watched(st, [a])
        ctl.json("reconcile", "--pending", "--reason", "drill 6.3: notifications refused")
        st.wait_until(lambda: active_entitlements(st, a) == 1, timeout=60,
                      what="paid and granted through reconciliation")
        assert [r[2] for r in ops_audit(st, "reconcile")] == ["ok"]
        print("6.3 ok", flush=True)


def scenario_6_3_silence():
    """SOP 6.3: Midtrans delivers nothing at all (wrong notification URL)."""
    with kasirtest.Stack.for_test(name="sop_6_3_silence",
                                  overrides={"RECON_AUTO_SILENCE": "2s",
                                             "RECON_AUTO_MODE": "false",
                                             "RECON_MODE_INTERVAL": "1s"}) as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        orders = [create_order(st) for _ in range(3)]
        for o in orders:
            pay_silently(st, o)
        st.wait_until(lambda: any(f["check"] == "webhook_silence"
                                  for f in doctor(ctl)[1]["findings"]),
                      timeout=30, what="doctor sees the silence")
        rc, res = doctor(ctl)
        assert rc == 1, res
        f = finding(res, "webhook_silence")
        assert_sop(f, "P1", "6.3", "KasirWebhookSilence")
        assert "3 order(s) created" in f["title"], f
        (csel, created), = promrules.scraped(st, "order", "kasir_orders_created_total")
        (ssel, stored), = promrules.scraped(st, "ingest", "kasir_ingest_stored_total")
        assert (created, stored) == (3, 0), (created, stored)
        assert promrules.fired("KasirWebhookSilence",
                               [(csel, f"0x5 {created:.0f}x90"), (ssel, "0x95")], "40m")
        assert not promrules.fired("KasirWebhookSilence",
                                   [(csel, f"0x5 {created:.0f}x90"), (ssel, "0x5 3x90")], "40m")
        # step 4: switch to reconciliation; the payments complete without
        # a single notification
        assert f["command"].startswith("kasirctl reconcile-mode on"), f
        ctl.json("reconcile-mode", "on", "--reason", "drill 6.3: no webhook")
        for o in orders:
            st.wait_until(lambda o=o: active_entitlements(st, o) == 1, timeout=60,
                          what=f"{o} paid by reconciliation")
        assert [r[2] for r in ops_audit(st, "reconcile-mode")] == ["ok"]
        print("6.3 (silence) ok", flush=True)


def scenario_6_5():
    with kasirtest.Stack.for_test(name="sop_6_5") as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        st.stop("reconciler")
        rc, res = doctor(ctl)
        assert rc == 1, res
        f = finding(res, "reconciler_answers")
        assert_sop(f, "P1", "6.5", "KasirDaemonDown")
        rc, out, _ = ctl.run("status")
        assert rc == 3 and "DOWN" in out, (rc, out)
        # what Prometheus records: its scrape fails, up = 0
        try:
            st.metrics("reconciler")
            raise AssertionError("a stopped reconciler still serves /metrics")
        except (OSError, kasirtest.HarnessError):
            pass
        up = 'up{instance="reconciler:9100",job="kasir-reconciler"}'
        assert promrules.fired("KasirDaemonDown", [(up, "1x2 0x10")], "8m")
        assert not promrules.fired("KasirDaemonDown", [(up, "1x12")], "8m")
        # step 1: restart the service (systemctl in production)
        assert f["command"].startswith("systemctl restart kasir-reconciler"), f
        st.start("reconciler")
        rc, _, _ = ctl.run("status")
        assert rc == 0
        assert doctor(ctl)[0] == 0
        results = [r[2] for r in ops_audit(st, "status")]
        assert len(results) == 2, results
        print("6.5 ok", flush=True)


def scenario_6_5_loop():
    """SOP 6.5: kasir-reconciler answers, its scheduler loop is stuck."""
    # the scheduler's bound follows its Status API timeouts: keep it short
    with kasirtest.Stack.for_test(name="sop_6_5_loop",
                                  overrides={"RECON_TIMEOUT": "1s",
                                             "RECON_RETRIES": "0"}) as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)
        # the scheduler waits at a database command (a failpoint holds it,
        # as a stuck lock would) while the daemon goes on answering
        fpdir = os.path.join(st.dir, "failpoints")
        os.makedirs(fpdir, exist_ok=True)
        st.stop("reconciler")
        st.start("reconciler", env={"KASIR_FAILPOINTS": "reconciler.scheduler:*=pause@3",
                                    "KASIR_FAILPOINT_DIR": fpdir})
        st.wait_until(lambda: any(f["check"] == "loop_silent"
                                  for f in doctor(ctl)[1]["findings"]),
                      timeout=90, what="doctor names the silent loop")
        rc, res = doctor(ctl)
        assert rc == 1, res
        f = finding(res, "loop_silent")
        assert_sop(f, "P1", "6.5", "KasirLoopSilent")
        assert f["service"] == "kasir-reconciler" and \
            [i["loop"] for i in f["items"]] == ["reconciler.scheduler"], f
        assert not [x for x in res["findings"] if x["check"] == "reconciler_answers"], res
        (sel, v), = [s for s in promrules.scraped(st, "reconciler", "kasir_loop_silent")
                     if 'loop="reconciler.scheduler"' in s[0]]
        assert v == 1, v
        assert promrules.fired("KasirLoopSilent", [(sel, f"0x2 {v:.0f}x10")], "8m")
        assert not promrules.fired("KasirLoopSilent", [(sel, "0x12")], "8m")
        # step 1: restart the service (systemd stops what does not stop)
        assert f["command"].startswith("systemctl restart"), f
        st.kill("reconciler")
        st.start("reconciler")
        st.wait_until(lambda: doctor(ctl)[0] == 0, timeout=60, what="doctor clean")
        print("6.5 (silent loop) ok", flush=True)


def main():
    promrules.promtool()
    scenario_6_1()
    scenario_6_1_server_key()
    scenario_6_2()
    scenario_6_3()
    scenario_6_3_silence()
    scenario_6_5()
    scenario_6_5_loop()
    print("SOP scenario drills passed (6.4: kasirctl_doctor)")


if __name__ == "__main__":
    main()
