#!/usr/bin/python3
"""Reconciliation mode turns on after a simulated webhook silence (orders
created, notifications dropped) and every pending order is then checked at
the short mode interval; it turns off by itself when notifications resume.
An operator's mode change needs the engineer role and a reason, is
audited, and an operator's reconcile mode is not left automatically.
In signature_only mode a notification makes the PAID transition itself
(no order.evidence for it): the watch list learns from order.paid what
the notification said, and that webhooks arrive.  In the default mode the
notification is held: the watch list learns the same from the
confirm.request's "said" (no order.evidence for it either).
Only a notification that says something new for its order counts as
"webhooks flow": replaying an old genuine body neither keeps the mode
off nor ends it (an outside attack, 2026-12-07)."""
import json
import threading
import time

import rstack
from rstack import log


def mode(st):
    return st.sql("SELECT mode, mode_auto FROM recon.settings WHERE id = 1")[0]


def gauge(st):
    return st.metric("reconciler", "kasir_reconciler_mode")


def main():
    # the normal schedule would first look after 60s: only the mode can
    # explain a check within seconds
    with rstack.stack({"RECON_FIRST_CHECK": "60s", "RECON_BACKOFF": "60s",
                       "RECON_AUTO_SILENCE": "3s",
                       "RECON_MODE_INTERVAL": "1s"}) as st:
        rstack.start(st)
        assert mode(st) == ("normal", True) and gauge(st) == 0

        # someone replays a genuine notification body of a paid order
        # every 0.3 s through the whole outage: it is stored each time
        # (every delivery is evidence) but says nothing new
        noisy = rstack.create_order(st, "noisy@example.com")
        rstack.pay(st, noisy, notify="normal")
        st.wait_until(lambda: rstack.order_status(st, noisy) == "PAID",
                      timeout=20, what="noisy PAID through the webhook")
        raw = bytes(st.sql("SELECT raw FROM ingest.payment_event"
                           " WHERE order_id = %s ORDER BY id LIMIT 1",
                           (noisy,))[0][0])
        stop = threading.Event()
        # ...and, every 2.5 s (under the 3 s silence), the same body with
        # its unsigned transaction_status rewritten to another status its
        # signed status_code 200 allows: a new key each time, which used
        # to count as news and kept the mode off (an attack, 2026-12-07)
        variants = []
        for ts in ("capture", "refund", "partial_refund", "chargeback",
                   "partial_chargeback", "authorize", "capture"):
            b = json.loads(raw)
            b["transaction_status"] = ts
            variants.append(json.dumps(b).encode())

        def replay():
            n = 0
            while not stop.wait(0.3):
                n += 1
                body = raw
                if n % 8 == 0 and variants:
                    body = variants.pop(0)
                st.notify(body, {"Content-Type": "application/json"})
        replayer = threading.Thread(target=replay, daemon=True)
        replayer.start()

        try:
            silent = rstack.create_order(st, "silent@example.com")
            t0 = time.time()
            rstack.pay(st, silent, notify="drop")
            st.wait_until(lambda: mode(st)[0] == "reconcile", timeout=15,
                          what="automatic reconciliation mode (while an old"
                          " body is replayed)")
            log("reconcile mode after %.1fs of silence" % (time.time() - t0))
            assert mode(st) == ("reconcile", True)
            replays = rstack.ingest_events(st, noisy) - 1
            assert replays >= 5, replays
            # the replays do not end the mode either
            time.sleep(2.5)
            assert mode(st) == ("reconcile", True)
        finally:
            stop.set()
            replayer.join()
        replays = rstack.ingest_events(st, noisy) - 1
        log("%d replays of an old body: not news" % replays)
        heard = st.sql("SELECT heard FROM recon.watch WHERE order_id = %s", (noisy,))[0][0]
        assert heard[0] == "status:settlement" and len(heard) >= 2, heard
        log("the order heard %s: only the first was news" % heard)
        assert gauge(st) == 1
        st.wait_until(lambda: rstack.order_status(st, silent) == "PAID",
                      timeout=15, what="PAID through reconciliation mode")
        assert time.time() - t0 < 30, "not the mode interval"
        chk = st.sql("SELECT mode FROM recon.status_check WHERE order_id = %s"
                     " AND published", (silent,))
        assert chk == [("reconcile",)], chk
        assert st.sql("SELECT actor, role, command, after->>'mode'"
                      " FROM recon.audit ORDER BY id") == \
            [("kasir-reconciler", "auto", "mode.auto", "reconcile")]

        # notifications resume: one arrives -> back to normal
        loud = rstack.create_order(st, "loud@example.com")
        rstack.pay(st, loud, notify="normal")
        st.wait_until(lambda: rstack.order_status(st, loud) == "PAID",
                      timeout=20, what="PAID through the webhook")
        # the webhook arrived and asked for the confirmation; the Status
        # API's answer to it is the PAID transition's evidence
        assert rstack.ingest_events(st, loud) >= 1
        _, _, source, ref = rstack.transitions(st, loud, "PAID")[0]
        assert source == "recon" and st.sql(
            "SELECT confirm FROM recon.status_check WHERE id = %s",
            (ref,)) == [(True,)], (source, ref)
        st.wait_until(lambda: mode(st)[0] == "normal", timeout=15,
                      what="automatic return to normal mode")
        assert gauge(st) == 0
        assert st.metric("reconciler", "kasir_reconciler_mode_changes_total") == 2
        log("back to normal once notifications flow")
        assert "mode normal -> reconcile" in st.log_text("reconciler")
        assert "mode reconcile -> normal" in st.log_text("reconciler")

        # operator: a reason is required (refusal audited)
        r = rstack.admin(st, "mode.set", {"mode": "reconcile"})
        assert not r["ok"] and r["error"]["code"] == "reason_required", r
        r = rstack.admin(st, "mode.set", {"mode": "sometimes"}, reason="x")
        assert not r["ok"] and r["error"]["code"] == "invalid_args", r
        r = rstack.admin(st, "mode.set", {"mode": "reconcile"},
                         reason="INC-7 webhook outage at midtrans")
        assert r["ok"] and r["result"] == {"mode": "reconcile", "was": "normal"}, r
        assert mode(st) == ("reconcile", False) and gauge(st) == 1
        # a notification does not end an operator's reconcile mode
        third = rstack.create_order(st, "third@example.com")
        rstack.pay(st, third, notify="normal")
        st.wait_until(lambda: rstack.order_status(st, third) == "PAID",
                      timeout=20, what="PAID through the webhook")
        time.sleep(2)
        assert mode(st) == ("reconcile", False)
        r = rstack.admin(st, "mode.set", {"mode": "normal"}, reason="INC-7 over")
        assert r["ok"] and r["result"]["was"] == "reconcile", r
        assert mode(st) == ("normal", False) and gauge(st) == 0
        # the operator's "normal" restarts the silence count: no immediate
        # automatic re-entry
        time.sleep(1.5)
        assert mode(st)[0] == "normal"
        audit = st.sql("SELECT role, command, result, reason,"
                       " before->>'mode', after->>'mode' FROM recon.audit"
                       " WHERE command = 'mode.set' ORDER BY id")
        # the refusals: no reason, then a mode that does not exist
        assert [a[2] for a in audit] == ["refused", "refused", "ok", "ok"], audit
        assert audit[2][3] == "INC-7 webhook outage at midtrans", audit
        assert audit[2][4:] == ("normal", "reconcile"), audit
        assert audit[3][4:] == ("reconcile", "normal"), audit
        # the audit log is append-only
        try:
            st.sql("DELETE FROM recon.audit", role="kasir_reconciler")
        except Exception as e:
            assert "refused" in str(e) or "permission denied" in str(e), e
        else:
            raise AssertionError("audit rows deleted")
        log("ok")
    watch_learns(signature_only=True)
    watch_learns(signature_only=False)


def watch_learns(signature_only):
    """The watch list learns what a paying notification said, and that
    webhooks arrive, though no order.evidence is sent for it: from
    order.paid in signature_only (the notification made the transition),
    from the confirm.request's "said" in the default mode (it was held)."""
    with rstack.stack({"ORDER_SIGNATURE_ONLY": "true"} if signature_only else {},
                      name="reconciler_mode_" + ("sigonly" if signature_only else "default")) as st:
        rstack.start(st)
        before = st.sql("SELECT last_ingest_at FROM recon.settings WHERE id = 1")[0][0]
        oid = rstack.create_order(st, "learn@example.com")
        rstack.pay(st, oid, notify="normal", payment_type="qris")
        st.wait_until(lambda: rstack.order_status(st, oid) == "PAID",
                      timeout=20, what="PAID")
        _, _, source, _ = rstack.transitions(st, oid, "PAID")[0]
        assert source == ("ingest" if signature_only else "recon"), source
        if not signature_only:
            said = [json.loads(b)["data"].get("said") for (b,) in st.sql(
                "SELECT body FROM orders.stream_log_messages WHERE type = 'confirm.request'"
                " AND body::jsonb->'data'->>'order_id' = %s", (oid,))]
            assert len(said) == 1 and said[0]["transaction_status"] == "settlement" \
                and said[0]["payment_type"] == "qris" and said[0]["received_at"], said
        assert st.sql("SELECT count(*) FROM orders.stream_log_messages WHERE type ="
                      " 'order.evidence' AND body::jsonb->'data'->>'order_id' = %s",
                      (oid,)) == [(0,)]
        st.wait_until(lambda: st.sql("SELECT final FROM recon.watch WHERE order_id = %s",
                                     (oid,)) == [(True,)], what="watch final")
        w = st.sql("SELECT payment_type, 'status:settlement' = ANY (heard),"
                   " last_notification_at IS NOT NULL, news_at IS NOT NULL"
                   " FROM recon.watch WHERE order_id = %s", (oid,))
        assert w == [("qris", True, True, True)], w
        after = st.sql("SELECT last_ingest_at FROM recon.settings WHERE id = 1")[0][0]
        assert after is not None and (before is None or after > before), (before, after)
        log("the watch list learned from " +
            ("order.paid" if signature_only else "confirm.request"))


if __name__ == "__main__":
    main()
