#!/usr/bin/python3
"""On demand over the admin socket (reconcile one order now, reconcile all
pending now; engineer role + reason, audited), what operators read
(status, checks.list, doctor.facts, /metrics), and the wrong server key:
a 401 is an alert (logged once, kasir_reconciler_auth_broken = 1), checks
stop hammering the API, and resume when the key is right again."""
import os
import time

import rstack
from rstack import log


def main():
    # nothing is checked on its own for an hour: only operators ask
    with rstack.stack({"RECON_FIRST_CHECK": "1h", "RECON_BACKOFF": "1h",
                       "RECON_AUTH_PAUSE": "4s"}) as st:
        rstack.start(st)
        a = rstack.create_order(st, "a@example.com")
        b = rstack.create_order(st, "b@example.com")
        c = rstack.create_order(st, "c@example.com")
        for oid in (a, b):
            rstack.pay(st, oid, notify="drop")
        st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.watch")[0][0] == 3,
                      timeout=10, what="three watched orders")
        time.sleep(2)
        assert rstack.checks(st, a) == []

        # refused without a reason; audited
        r = rstack.admin(st, "reconcile.order", {"order_id": a})
        assert not r["ok"] and r["error"]["code"] == "reason_required", r
        r = rstack.admin(st, "reconcile.order", {"order_id": "nope"}, reason="x")
        assert not r["ok"] and r["error"]["code"] == "order_not_found", r
        r = rstack.admin(st, "reconcile.order", {"order_id": a},
                         reason="customer says paid, INC-3")
        assert r["ok"] and r["result"]["queued"], r
        st.wait_until(lambda: rstack.order_status(st, a) == "PAID", timeout=15,
                      what="order a PAID on demand")
        assert rstack.order_status(st, b) == "PENDING"

        r = rstack.admin(st, "reconcile.pending", reason="sweep after INC-3")
        assert r["ok"] and r["result"]["queued"] == 2, r  # b and c
        st.wait_until(lambda: rstack.order_status(st, b) == "PAID", timeout=15,
                      what="order b PAID by reconcile.pending")
        st.wait_until(lambda: len(rstack.checks(st, c)) == 1, timeout=15,
                      what="order c checked")
        assert rstack.order_status(st, c) == "PENDING"

        # a forced check of a final order is allowed (refund detection)
        n = len(rstack.checks(st, a))
        n_ev = st.sql("SELECT count(*) FROM orders.evidence WHERE order_id = %s"
                      " AND source = 'recon'", (a,))[0][0]
        r = rstack.admin(st, "reconcile.order", {"order_id": a}, reason="recheck")
        assert r["ok"] and r["result"]["final"] is True, r
        st.wait_until(lambda: len(rstack.checks(st, a)) == n + 1, timeout=15,
                      what="forced check of a final order")
        # ... and is sent to kasir-order although it says nothing new (an
        # operator's check decides: a flagged reversal's deny once stayed
        # unsent), where it changes nothing
        assert rstack.checks(st, a)[-1][4] is True
        st.wait_until(lambda: st.sql("SELECT count(*) FROM orders.evidence WHERE"
                                     " order_id = %s AND source = 'recon'", (a,))[0][0] == n_ev + 1,
                      timeout=15, what="the forced check's answer recorded by kasir-order")
        assert rstack.order_status(st, a) == "PAID"
        assert len(rstack.transitions(st, a, "PAID")) == 1

        audit = st.sql("SELECT command, result FROM recon.audit ORDER BY id")
        assert audit == [("reconcile.order", "refused"),
                         ("reconcile.order", "refused"),
                         ("reconcile.order", "ok"),
                         ("reconcile.pending", "ok"),
                         ("reconcile.order", "ok")], audit

        # what operators read
        s = rstack.admin(st, "status")
        assert s["ok"], s
        s = s["result"]
        assert s["mode"] == "normal" and s["auth_broken"] is False, s
        assert s["pending"]["pending"] == 1 and s["pending"]["lt_10m"] == 1, s
        assert s["pending"]["past_expiry_unchecked"] == 0, s
        assert s["checks"]["checks_last_hour"] >= 4 and "last_answer_at" in s, s
        cl = rstack.admin(st, "checks.list", {"order_id": a})["result"]
        assert cl["watch"]["final"] is True and cl["watch"]["status"] == "PAID"
        assert [x["verdict"] for x in cl["checks"]] == ["status"] * (n + 1), cl
        assert any(x["published"] for x in cl["checks"]), cl
        d = rstack.admin(st, "doctor.facts")["result"]
        assert d["pending_past_expiry_unchecked"] == 0 and not d["auth_broken"], d
        r = rstack.admin(st, "checks.list", {"order_id": "bad id!"})
        assert not r["ok"] and r["error"]["code"] == "invalid_args", r
        r = rstack.admin(st, "frobnicate")
        assert not r["ok"] and r["error"]["code"] == "unknown_command", r
        assert st.metric("reconciler", "kasir_reconciler_pending_orders") == 1
        assert st.metric("reconciler", "kasir_reconciler_pending_orders",
                         age="lt_10m") == 1
        assert st.metric("reconciler", "kasir_reconciler_api_seconds_count") >= 4
        assert st.metric("reconciler", "kasir_reconciler_auth_broken") == 0

        # wrong server key: 401 -> alert, pause, one probe at a time
        key_path = st.secret_path("midtrans-server-key")
        good = st.secret("midtrans-server-key")
        with open(key_path, "w") as f:
            f.write("wrong-test-server-key-000000")
        st.restart("reconciler")
        d1 = rstack.create_order(st, "d1@example.com")
        d2 = rstack.create_order(st, "d2@example.com")
        st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.watch")[0][0] == 5,
                      timeout=10, what="five watched orders")
        before = st.fake("GET", "/_fake/stats").body["status_api"]["requests"]
        r = rstack.admin(st, "reconcile.pending", reason="INC-4 check all")
        assert r["ok"] and r["result"]["queued"] == 3, r
        st.wait_until(lambda: st.metric("reconciler",
                                        "kasir_reconciler_auth_broken") == 1,
                      timeout=15, what="auth_broken alert")
        time.sleep(6)  # more than one pause
        sent = st.fake("GET", "/_fake/stats").body["status_api"]["requests"] - before
        # 3 orders due: one 401 stops the batch; after each 4s pause one
        # probe.  Without the pause it would be dozens of requests.
        log("requests with the wrong key in ~7s: %d" % sent)
        assert 1 <= sent <= 6, sent
        assert st.metric("reconciler", "kasir_reconciler_auth_failures_total") >= 1
        assert rstack.admin(st, "status")["result"]["auth_broken"] is True
        assert rstack.admin(st, "doctor.facts")["result"]["auth_broken"] is True
        logtext = st.log_text("reconciler")
        assert logtext.count("refuses the server key") == 1, "alert logged once"
        assert "wrong-key" not in logtext and good not in logtext
        auth_rows = st.sql("SELECT http_status, published FROM recon.status_check"
                           " WHERE verdict = 'auth'")
        assert auth_rows and all(x == (401, False) for x in auth_rows), auth_rows
        for oid in (c, d1, d2):
            assert rstack.order_status(st, oid) == "PENDING"

        # key fixed: checks resume (the forced rows are still due)
        with open(key_path, "w") as f:
            f.write(good)
        st.restart("reconciler")
        st.wait_until(lambda: st.sql(
            "SELECT count(*) FROM recon.status_check WHERE order_id = ANY(%s)"
            " AND verdict = 'not_found'", ([d1, d2],))[0][0] >= 2, timeout=20,
            what="checks resume with the right key")
        assert st.metric("reconciler", "kasir_reconciler_auth_broken") == 0
        assert os.path.exists(key_path)
        log("ok")


if __name__ == "__main__":
    main()
