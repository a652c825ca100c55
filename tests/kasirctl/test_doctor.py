"""kasirctl doctor speaks the SOP (issue 15), on the real stack:

- the findings table of the code (`doctor --table`) is the one in
  docs/kasirctl.md;
- bad signatures -> P1 signature_failures (SOP 6.3) naming the source,
  and KasirWebhookRefused fires on the counter ingest exported;
- a quiet shop, one Snap failure -> P0 snap_outage (SOP 6.1), exit 1, and
  KasirSnapFailing fires on the counters kasir-order exported; Snap back:
  the finding clears;
- a quiet shop, one SMTP 451 -> P2 provider_failing (SOP 6.4), and
  KasirNotifierProviderFailing fires on the age the notifier exported;
  provider back, the printed command (notify requeue) resolves it and
  ops.audit shows it;
- PostgreSQL down -> ONE P0 root finding (database_down) with the others
  under it, exit 1; `status` exits 3; PostgreSQL back: clean again.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kasirtest  # noqa: E402
import promrules  # noqa: E402
from ctlstack import DAEMONS, Ctl, create_order  # noqa: E402


def forged_notification(order_id):
    """A well-formed Midtrans notification whose signature is not ours."""
    return {"transaction_time": "2026-12-06 09:00:00", "transaction_status": "settlement",
            "transaction_id": "tx-" + order_id, "status_message": "midtrans payment notification",
            "status_code": "200", "order_id": order_id, "gross_amount": "150000.00",
            "payment_type": "bank_transfer", "currency": "IDR", "fraud_status": "accept",
            "signature_key": "ab" * 64}


def doctor_json(ctl):
    """doctor --json whatever its exit status."""
    _, out, _ = ctl.run("--json", "doctor")
    return json.loads(out)


def findings(doc, check=None):
    return [f for f in doc["result"]["findings"] if check is None or f["check"] == check]


def docs_table():
    """{check: (severity, scenario)} from docs/kasirctl.md's findings table."""
    path = os.path.join(kasirtest.source_dir(), "docs", "kasirctl.md")
    rows = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\|\s*`([a-z_]+)`\s*\|\s*(P[0-3])\s*\|\s*([0-9.]+)\s*\|", line)
            if m:
                rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def main():
    promrules.promtool()
    with kasirtest.Stack.for_test(name="kasirctl_doctor") as st:
        st.start_all(services=DAEMONS)
        ctl = Ctl(st)

        # ---- the table: code and docs agree --------------------------------
        t = ctl.json("doctor", "--table")["result"]["findings"]
        code = {r["check"]: (r["severity"], r["scenario"]) for r in t}
        assert code == docs_table(), (code, docs_table())
        assert len(code) == len(t), "check names are unique"
        for r in t:
            assert r["step"] and r["command"], r
            assert r["severity"] in ("P0", "P1", "P2", "P3"), r
            assert r["scenario"] in ("6.1", "6.2", "6.3", "6.4", "6.5", "7"), r
        assert [r["check"] for r in t if r["root_cause"]] == ["database_down"], t

        doc = ctl.json("doctor")
        assert doc["result"]["healthy"] and doc["result"]["findings"] == [], doc

        # ---- bad signatures (SOP 6.3 step 2) ----------------------------------
        for i in range(12):
            r = st.notify(forged_notification(f"KSR-FORGED-{i}"))
            assert r.status == 403, r
        st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.quarantine")[0][0] >= 1,
                      timeout=20, what="quarantined bodies")
        # an id only a refused notification names: not found (exit 1), with
        # what kasir-ingest holds (it printed an empty order and exited 0)
        st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.quarantine WHERE"
                                     " order_id = 'KSR-FORGED-0'")[0][0] >= 1,
                      timeout=20, what="KSR-FORGED-0 quarantined")
        rc, out, err = ctl.run("order", "show", "KSR-FORGED-0")
        assert rc == 1 and "NOT FOUND" in out and "notification REFUSED" in out \
            and "unknown order KSR-FORGED-0" in err, (rc, out, err)
        nf = ctl.json("order", "show", "KSR-FORGED-0", expect=1)
        assert nf["ok"] is False and nf["error"]["code"] == "order_not_found" \
            and nf["result"]["timeline"], nf
        doc = ctl.json("doctor", expect=1)
        sig = findings(doc, "signature_failures")
        assert len(sig) == 1, doc
        f = sig[0]
        assert (f["severity"], f["scenario"], f["alert"]) == ("P1", "6.3", "KasirWebhookRefused"), f
        assert "127.0.0.1" in f["title"] and "12 since kasir-ingest started" in f["title"], f
        assert "signature" in f["step"] and f["command"].startswith("kasirctl "), f
        out, _ = ctl.text("doctor", expect=1)
        assert re.search(r"P1\s+signature_failures", out) and "SOP 6.3:" in out \
            and "run: kasirctl" in out, out
        # the alert, on the counter kasir-ingest exported
        (sel, v), = promrules.scraped(st, "ingest", "kasir_ingest_signature_failures_total")
        assert v == 12, v
        series = [(sel, f"0x5 {v:.0f}x30")]
        assert promrules.fired("KasirWebhookRefused", series, "15m")
        assert not promrules.fired("KasirWebhookRefused", [(sel, "0x35")], "15m")

        # ---- quiet shop: one Snap failure (SOP 6.1) ---------------------------
        assert st.fake("POST", "/_fake/snap", {"mode": "5xx"}).status == 200
        r = st.api("POST", "/v1/orders", {"course_id": "bikin-film-pendek",
                                          "customer": {"name": "Sari", "email": "sari@example.com",
                                                       "phone": "+6281200000001"}})
        assert r.status == 502, r
        doc = ctl.json("doctor", expect=1)
        out = findings(doc, "snap_outage")
        assert len(out) == 1 and (out[0]["severity"], out[0]["scenario"]) == ("P0", "6.1"), doc
        assert "(1 of 1)" in out[0]["title"] and out[0]["alert"] == "KasirSnapFailing", out
        assert findings(doc, "snap_failures") == [], "the P0 says it once"
        assert doc["result"]["P0"] >= 1 and not doc["result"]["healthy"]
        # the alert: the counters as exported, one more failure every 10 min
        (esel, ev), = promrules.scraped(st, "order", "kasir_snap_errors_total")
        (osel, ov), = promrules.scraped(st, "order", "kasir_snap_ok_total")
        assert ev >= 1 and ov == 0, (ev, ov)
        quiet_shop = [(esel, f"{ev - 1:.0f}x5 {ev:.0f}+0.1x60"), (osel, f"{ov:.0f}x65")]
        assert promrules.fired("KasirSnapFailing", quiet_shop, "30m")
        healthy = [(esel, f"{ev:.0f}x65"), (osel, f"{ov:.0f}+0.1x65")]
        assert not promrules.fired("KasirSnapFailing", healthy, "30m")
        # Snap answers again: the next order pays, the P0 clears
        assert st.fake("POST", "/_fake/snap", {"mode": "normal"}).status == 200

        # ---- quiet shop: one SMTP 451 (SOP 6.4) --------------------------------
        r = kasirtest.http("POST", st.url("smtp_control") + "/_fake/mode", {"mode": "4xx"})
        assert r.status == 200, r
        oid = create_order(st)
        st.wait_until(lambda: st.sql(
            "SELECT count(*) FROM notify.job WHERE order_id = %s AND channel = 'email'"
            " AND state = 'retry'", (oid,))[0][0] >= 1, timeout=40, what="email refused 451")
        doc = ctl.json("doctor", expect=1)  # the signatures are still P1
        assert findings(doc, "snap_outage") == [], doc
        pf = findings(doc, "provider_failing")
        assert len(pf) == 1, doc
        f = pf[0]
        assert (f["severity"], f["scenario"], f["alert"]) == \
            ("P2", "6.4", "KasirNotifierProviderFailing"), f
        assert "451" in f["title"] and "email" in f["title"], f
        out, _ = ctl.text("status")
        assert re.search(r"waiting to go out: \d+ job\(s\).*after a provider failure.*451",
                         out), out
        (wsel, age), = promrules.scraped(st, "notifier", "kasir_notifier_oldest_failing_seconds")
        assert age > 0, age
        # the failure keeps ageing, one minute per minute
        assert promrules.fired("KasirNotifierProviderFailing",
                               [(wsel, f"{age:.0f}+60x30")], "15m")
        assert not promrules.fired("KasirNotifierProviderFailing", [(wsel, "0x30")], "15m")
        # the provider is fixed; the printed command resolves it
        r = kasirtest.http("POST", st.url("smtp_control") + "/_fake/mode", {"mode": "normal"})
        assert r.status == 200, r
        assert f["command"] == 'kasirctl notify requeue --reason "..."', f
        ctl.json("notify", "requeue", "--reason", "smtp provider fixed")
        st.wait_until(lambda: st.sql(
            "SELECT count(*) FROM notify.job WHERE order_id = %s AND channel = 'email'"
            " AND kind = 'instructions' AND state <> 'sent'", (oid,))[0][0] == 0,
            timeout=30, what="payment instructions e-mailed")
        doc = ctl.json("doctor", expect=1)
        assert findings(doc, "provider_failing") == [], doc
        assert st.sql("SELECT result FROM ops.audit WHERE command = 'notify requeue'"
                      " AND reason = 'smtp provider fixed'") == [("ok",)]

        # ---- PostgreSQL down: the root cause, the rest under it ---------------
        st.pg.stop()
        try:
            rc, out, _ = ctl.run("doctor")
            assert rc == 1, out
            assert re.search(r"^P0\s+database_down\s+PostgreSQL unreachable", out, re.M), out
            assert "caused by it" in out and "restart it" not in out, out
            for svc in ("kasir-order", "kasir-notifier", "kasir-reconciler"):
                assert f"      {svc}: " in out, (svc, out)
            doc = ctl.json("doctor", expect=1)
            top = doc["result"]["findings"]
            assert [f["check"] for f in top] == ["database_down"], top
            assert top[0]["severity"] == "P0" and doc["result"]["P1"] == 0, doc
            names = {i["service"] for i in top[0]["items"]}
            assert names == {"kasir-order", "kasir-notifier", "kasir-reconciler"}, top
            under = {f["check"] for f in top[0]["under"]}
            assert "facts" in under or "signature_failures" in under, top
            rc, out, _ = ctl.run("status")
            assert rc == 3 and re.search(r"kasir-order\s+DOWN", out), (rc, out)
        finally:
            st.pg.start()
        st.wait_until(lambda: not findings(doctor_json(ctl), "database_down"),
                      timeout=60, what="doctor without database_down after PostgreSQL is back")
    print("kasirctl doctor test passed")


if __name__ == "__main__":
    main()
