"""kasirctl evidence and kasirctl refund against the real daemons, PostgreSQL
and the fake Midtrans.

Evidence: a bundle for a paid, a refunded and a reversed order; verify
passes; one byte changed in any member (every file, MANIFEST,
MANIFEST.sig), a file removed or added: verify fails.  Personal data only
with --include-personal; the support role may create bundles, audited.

Refund: refusals (support role, unpaid order, amount above what is left,
a payment type Midtrans cannot refund) each audited; a partial refund
keeps the order PAID with access and tells the customer once, by email and
WhatsApp, with the refunded amount (the receipt stays the only receipt); a
lost answer retried with the same key refunds once; the full refund makes
the order REFUNDED, revokes access and sends its own refund message -- only
once Midtrans's Status API confirms it.  A refund Midtrans applies after
the forced check, whose notification is lost, is still found: the
reconciler keeps asking until the Status API shows it.

Operator checks decide: a reversal kasir-order flagged (its deny carried
no settlement_time) ends REFUNDED on `kasirctl reconcile`'s answer, even
though it repeats what the flagged notification said; a payment partly
refunded before kasir ever saw it settle becomes PAID (with the partial
refund) on the Status API's answer."""

import email
import email.policy
import io
import os
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kasirtest  # noqa: E402
from ctlstack import CUSTOMER, Ctl, active_entitlements, create_order  # noqa: E402


def pay(st, oid, payment_type="gopay"):
    r = st.fake("POST", f"/_fake/orders/{oid}/pay", {"payment_type": payment_type})
    assert r.status in (200, 202), r
    st.wait_until(lambda: status(st, oid) == "PAID" and active_entitlements(st, oid) == 1,
                  timeout=30, what=f"{oid} PAID with access")
    # the reconciler decides refunds from what the orders stream told it
    st.wait_until(lambda: st.sql("SELECT status FROM recon.watch WHERE order_id = %s",
                                 (oid,)) == [("PAID",)],
                  timeout=30, what=f"{oid} PAID at the reconciler")


def prove(st, ctl, oid, tstatus="settlement"):
    """A Status API answer showing the payment (the test stack may run in
    signature-only mode, where PAID needs none): the reconciler refuses a
    refund without one."""
    ctl.json("reconcile", oid, "--reason", "payment proof before a refund")
    st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.status_check WHERE"
                                 " order_id = %s AND transaction_status = %s",
                                 (oid, tstatus))[0][0] >= 1,
                  timeout=30, what=f"{oid}: Status API answer {tstatus}")


def proof(st, oid, to):
    """[(evidence source, the Status API answer's transaction_status)] of
    the order's transition to `to`: what made it."""
    return st.sql("SELECT t.evidence_source, c.transaction_status FROM"
                  " orders.transitions t JOIN recon.status_check c"
                  " ON c.id = t.evidence_ref WHERE t.order_id = %s"
                  " AND t.to_status = %s", (oid, to))


def status(st, oid):
    rows = st.sql("SELECT status FROM orders.orders WHERE order_id = %s", (oid,))
    return rows[0][0] if rows else None


def amount(st, oid):
    return int(st.sql("SELECT amount FROM orders.orders WHERE order_id = %s", (oid,))[0][0])


def recon_audit(st, oid, result):
    return st.sql("SELECT count(*) FROM recon.audit WHERE command = 'refund.order'"
                  " AND args->>'order_id' = %s AND result = %s", (oid, result))[0][0]


def fake_refunds(st, oid):
    return st.fake("GET", f"/_fake/orders/{oid}").body["refunds"]


def rupiah(n):
    return "Rp" + f"{n:,}".replace(",", ".")


def mails(st, oid, subject):
    out = []
    for path in st.mail_messages():
        if not path.endswith(".eml"):
            continue
        with open(path, "rb") as f:
            m = email.message_from_bytes(f.read(), policy=email.policy.default)
        if m.get("X-Kasir-Order") == oid and subject in str(m["Subject"]):
            out.append(m.get_body(preferencelist=("plain",)).get_content())
    return out


def refund_mails(st, oid):
    return mails(st, oid, "Pengembalian dana")


def refund_was(st, oid):
    return [w["text"] for w in st.whatsapp_messages()
            if f"dana pesanan {oid}" in w["text"]]


def refund_jobs(st, oid):
    return st.sql("SELECT variant, channel, state FROM notify.job WHERE order_id = %s"
                  " AND kind = 'refund' ORDER BY variant, channel", (oid,))


def members(path):
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def data_offsets(path):
    """(name, offset of its data, size) of every member."""
    out = []
    with tarfile.open(path) as t:
        for m in t.getmembers():
            out.append((m.name, m.offset_data, m.size))
    return out


def bundle(ctl, oid, d, *extra, role=None):
    path = os.path.join(d, f"{oid}{'-'.join(extra)}.tar")
    r = ctl.json("evidence", oid, "--output", path, *extra, role=role)
    assert r["ok"] and r["result"]["file"] == path and not r["result"]["missing"], r
    v = ctl.json("evidence", "verify", path)
    assert v["result"]["verified"], v
    return path


def check_tampering(ctl, path, d):
    raw = open(path, "rb").read()
    n = 0
    for name, off, size in data_offsets(path):
        if size == 0:
            continue
        for pos in (off, off + size - 1):
            bad = bytearray(raw)
            bad[pos] ^= 0x01
            p = os.path.join(d, "bad.tar")
            open(p, "wb").write(bad)
            rc, out, err = ctl.run("evidence", "verify", p)
            assert rc == 1, f"{name}: byte {pos} changed, verify exit {rc}"
            assert "NOT VERIFIED" in err, err
            n += 1
    # a file removed, a file added (tar rewritten by Python's tarfile)
    files = members(path)
    # the added member's name is printed: an escape sequence in it must
    # not reach the terminal (an outside attack, 2026-12-07)
    for drop, add in ((sorted(k for k in files if k.startswith("ingest/"))[0], None),
                      (None, "extra.txt"), (None, "evil\x1b]0;PWNED\x07\x1b[2J.json")):
        p = os.path.join(d, "bad.tar")
        with tarfile.open(p, "w", format=tarfile.USTAR_FORMAT) as t:
            for k, v in files.items():
                if k == drop:
                    continue
                ti = tarfile.TarInfo(k)
                ti.size = len(v)
                t.addfile(ti, io.BytesIO(v))
            if add:
                ti = tarfile.TarInfo(add)
                ti.size = 1
                t.addfile(ti, io.BytesIO(b"x"))
        rc, out, err = ctl.run("evidence", "verify", p)
        assert rc == 1 and ("missing" in err or "not in the manifest" in err), err
        bad = [ch for ch in out + err if ord(ch) < 0x20 and ch not in "\n"]
        assert not bad, f"control characters reached the terminal: {bad} in {err!r}"
    return n


def main():
    # a failed check is retried after 1 s instead of 30 s, and an accepted
    # refund is asked about again 1 s, 2 s, 4 s... after the forced check
    with kasirtest.Stack.for_test(name="kasirctl_evidence_refund",
                                  overrides={"RECON_RETRY": "1s"}) as st:
        st.start_all()
        ctl = Ctl(st)
        d = tempfile.mkdtemp(dir=st.dir)

        # ---- refusals ---------------------------------------------------
        a = create_order(st)
        unpaid = create_order(st)
        pay(st, a)
        total = amount(st, a)
        # the receipt is counted below (a refund is not a second receipt):
        # wait for its delivery here, the sink may be slow to store it
        st.wait_until(lambda: len(mails(st, a, "Pembayaran diterima")) == 1,
                      timeout=60, what="receipt email")
        # the default mode: the order became PAID on the Status API's
        # answer (the confirmation), which is the refund's payment proof,
        # so "no_payment_proof" cannot happen for it; it still does in
        # order.signature_only mode (a PAID order without a status check)
        assert proof(st, a, "PAID") == [("recon", "settlement")]
        prove(st, ctl, a)
        r = ctl.json("refund", a, "--reason", "support tries", role="support", expect=1)
        assert r["error"]["code"] == "role_required", r
        st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.watch WHERE order_id = %s",
                                     (unpaid,))[0][0] == 1, what="unpaid order watched")
        r = ctl.json("refund", unpaid, "--reason", "not paid", expect=1)
        assert r["error"]["code"] == "not_paid", r
        r = ctl.json("refund", a, "--amount", str(total + 1), "--reason", "too much", expect=1)
        assert r["error"]["code"] == "amount_above_remaining", r
        assert recon_audit(st, a, "refused") == 2  # support, too much
        assert fake_refunds(st, a) == []

        # a payment type Midtrans cannot refund: its error, clearly
        bt = create_order(st)
        pay(st, bt, "bank_transfer")
        prove(st, ctl, bt)
        rc, out, err = ctl.run("refund", bt, "--reason", "customer asked")
        assert rc == 1 and "Midtrans refused" in err and "does not support refund" in err, err
        assert recon_audit(st, bt, "refused") == 1

        # ---- partial refund: stays PAID, access kept ----------------------
        part = total // 4
        r = ctl.json("refund", a, "--amount", str(part), "--reason", "half a course")
        assert r["result"]["amount"] == part and r["result"]["outcome"] == "accepted", r
        st.wait_until(lambda: st.sql("SELECT partial_refund FROM orders.orders WHERE"
                                     " order_id = %s", (a,))[0][0] is True,
                      what="partial refund applied")
        assert status(st, a) == "PAID" and active_entitlements(st, a) == 1
        # the customer is told, once per channel, with the refunded amount
        st.wait_until(lambda: len(refund_mails(st, a)) == 1 and len(refund_was(st, a)) == 1,
                      timeout=60, what="partial refund message by email and WhatsApp")
        assert rupiah(part) in refund_mails(st, a)[0], refund_mails(st, a)
        assert rupiah(part) in refund_was(st, a)[0], refund_was(st, a)
        assert rupiah(total) not in refund_mails(st, a)[0] + refund_was(st, a)[0]
        assert len(mails(st, a, "Pembayaran diterima")) == 1

        # ---- the answer lost: the retry reuses the key, refunds once -------
        st.fake("POST", "/_fake/refund_api", {"mode": "lost", "count": 1})
        rc, out, err = ctl.run("refund", a, "--amount", str(part), "--reason", "second part")
        assert rc in (1, 3) and "refund key" in err, (rc, err)
        refunds = fake_refunds(st, a)
        assert len(refunds) == 2, refunds  # Midtrans did refund
        # another amount while that one is unclear: refused, not guessed
        r = ctl.json("refund", a, "--amount", str(part + 1), "--reason", "other", expect=1)
        assert r["error"]["code"] == "refund_unclear", r
        r = ctl.json("refund", a, "--amount", str(part), "--reason", "second part, retry")
        assert r["result"]["retry"] is True and r["result"]["refund_key"] == refunds[1]["refund_key"], r
        assert len(fake_refunds(st, a)) == 2, "the retry refunded twice"
        assert st.fake("GET", "/_fake/stats").body["refund_api"]["replays"] == 1
        out, _ = ctl.text("order", "show", a)
        key = refunds[1]["refund_key"]
        assert f"Refund API (key {key}): uncertain" in out and \
            f"Refund API (key {key}): accepted" in out, out

        # ---- full refund: the order changes only on Midtrans's word ---------
        # Midtrans's notification cannot arrive (kasir-ingest stopped) and its
        # Status API fails: the accepted refund alone changes nothing
        st.stop("ingest")
        st.fake("POST", "/_fake/status_api", {"mode": "5xx", "count": -1})
        checks = st.sql("SELECT count(*) FROM recon.status_check WHERE order_id = %s", (a,))[0][0]
        inc = ctl.json("incident", "open", "--severity", "P3", "--title",
                       f"customer disputes {a}")["result"]["id"]
        r = ctl.json("refund", a, "--reason", "the rest", "--incident", inc)
        assert r["result"]["amount"] == total - 2 * part, r
        # the reconciler's forced check after the refund was answered 500...
        st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.status_check WHERE"
                                     " order_id = %s AND http_status = 500", (a,))[0][0] >= 1
                      and st.sql("SELECT count(*) FROM recon.status_check WHERE order_id = %s",
                                 (a,))[0][0] > checks, timeout=60, what="forced check failed")
        # ...so the order and its access stay as they were
        assert status(st, a) == "PAID" and active_entitlements(st, a) == 1
        st.fake("POST", "/_fake/status_api", {"mode": "normal"})
        st.start("ingest")  # Midtrans retries its notification
        st.wait_until(lambda: status(st, a) == "REFUNDED", timeout=60, what="REFUNDED")
        st.wait_until(lambda: active_entitlements(st, a) == 0, what="access revoked")
        st.wait_until(lambda: st.sql("SELECT count(DISTINCT channel) FROM notify.job WHERE"
                                     " order_id = %s AND kind = 'refund' AND state = 'sent'",
                                     (a,))[0][0] == 2,
                      timeout=60, what="refund message sent by email and WhatsApp")
        # the second partial refund said nothing more; the full refund its own
        st.wait_until(lambda: len(refund_mails(st, a)) == 2 and len(refund_was(st, a)) == 2,
                      timeout=60, what="full refund message after the partial one")
        assert refund_jobs(st, a) == [(0, "email", "sent"), (0, "whatsapp", "sent"),
                                      (1, "email", "sent"), (1, "whatsapp", "sent")], \
            refund_jobs(st, a)
        assert len(mails(st, a, "Pembayaran diterima")) == 1
        assert st.sql("SELECT count(*) FROM notify.job WHERE order_id = %s"
                      " AND kind = 'receipt'", (a,))[0][0] == 2  # email, WhatsApp
        r = ctl.json("refund", a, "--amount", "1", "--reason", "again", expect=1)
        assert r["error"]["code"] == "not_paid", r
        # the refund keys and answers are append-only, for everybody
        for q in ("UPDATE recon.refund SET amount = 1",
                  "UPDATE recon.refund_attempt SET outcome = 'accepted'",
                  "DELETE FROM recon.refund_attempt", "TRUNCATE recon.refund CASCADE"):
            for role in ("kasir_reconciler", None):
                try:
                    st.sql(q, role=role)
                except Exception as e:  # psycopg2 error
                    assert "refused" in str(e) or "permission denied" in str(e), e
                else:
                    raise AssertionError(f"{q} succeeded as {role}")

        # ---- a refund Midtrans applies late, its notification lost ---------
        # The forced check right after the refund still finds settlement; a
        # PAID order has left the schedule, but the refund is followed: the
        # order becomes REFUNDED on a later check's answer, without any
        # notification.
        late = create_order(st)
        pay(st, late)
        prove(st, ctl, late)
        settled = st.sql("SELECT count(*) FROM recon.status_check WHERE order_id = %s"
                         " AND transaction_status = 'settlement'", (late,))[0][0]
        st.fake("POST", "/_fake/refund_api", {"mode": "late", "count": 1})
        r = ctl.json("refund", late, "--reason", "applied late by Midtrans")
        assert r["result"]["outcome"] == "accepted", r
        st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.status_check WHERE"
                                     " order_id = %s AND transaction_status = 'settlement'",
                                     (late,))[0][0] >= settled + 2,
                      timeout=60, what="the forced check and a follow-up find settlement")
        assert status(st, late) == "PAID" and active_entitlements(st, late) == 1
        assert st.sql("SELECT refund_since IS NOT NULL, refund_expected FROM recon.watch"
                      " WHERE order_id = %s", (late,)) == [(True, amount(st, late))]
        r = st.fake("POST", f"/_fake/orders/{late}/refund", {"notify": "drop"})
        assert r.status in (200, 202), r
        st.wait_until(lambda: status(st, late) == "REFUNDED", timeout=60,
                      what="REFUNDED on a follow-up check's answer")
        st.wait_until(lambda: active_entitlements(st, late) == 0, what="access revoked")
        assert proof(st, late, "REFUNDED") == [("recon", "refund")]
        assert st.sql("SELECT count(*) FROM ingest.payment_event WHERE order_id = %s"
                      " AND transaction_status = 'refund'", (late,))[0][0] == 0
        # the follow-up ends with the answer that shows the refund
        st.wait_until(lambda: st.sql("SELECT refund_since FROM recon.watch WHERE"
                                     " order_id = %s", (late,)) == [(None,)],
                      what="refund no longer followed")

        # ---- a flagged reversal: kasirctl reconcile's answer decides ---------
        rv = create_order(st)
        pay(st, rv, "bank_transfer")
        t = st.fake("POST", f"/_fake/orders/{rv}/deny", {"notify": "drop"}).body
        assert t["status"] == "REVERSED", t
        body = dict(t["notifications"][-1]["body"])
        body.pop("settlement_time", None)
        body.pop("signature_key", None)
        st.fake("POST", "/_fake/notify_raw", {"body": body, "sign": True})
        st.wait_until(lambda: st.sql("SELECT count(*) FROM orders.evidence WHERE"
                                     " order_id = %s AND result = 'flagged'"
                                     " AND transaction_status = 'deny'", (rv,))[0][0] == 1,
                      what="the deny without settlement_time flagged")
        # the reconciler has heard what the flagged notification said (it
        # once took that for what kasir-order knew, and dropped the answer)
        st.wait_until(lambda: st.sql("SELECT 'status:deny' = ANY (heard) FROM recon.watch"
                                     " WHERE order_id = %s", (rv,)) == [(True,)],
                      what="the flagged deny heard by the reconciler")
        assert status(st, rv) == "PAID" and active_entitlements(st, rv) == 1
        ctl.json("reconcile", rv, "--reason", "flagged deny: the Status API decides")
        st.wait_until(lambda: status(st, rv) == "REFUNDED", timeout=60,
                      what="REFUNDED on the forced check's deny")
        st.wait_until(lambda: active_entitlements(st, rv) == 0, what="access revoked")
        assert proof(st, rv, "REFUNDED") == [("recon", "deny")]

        # ---- partly refunded before kasir saw the payment -------------------
        # every notification lost; the merchant refunds part from Midtrans's
        # dashboard; the Status API's partial_refund proves the payment
        pr = create_order(st)
        r = st.fake("POST", f"/_fake/orders/{pr}/pay", {"payment_type": "gopay",
                                                       "notify": "drop"})
        assert r.status in (200, 202), r
        r = st.fake("POST", f"/_fake/orders/{pr}/refund", {"refund_amount": 10000,
                                                          "notify": "drop"})
        assert r.status in (200, 202) and r.body["transaction_status"] == "partial_refund", r
        st.wait_until(lambda: st.sql("SELECT count(*) FROM recon.watch WHERE order_id = %s",
                                     (pr,))[0][0] == 1, what="order watched")
        ctl.json("reconcile", pr, "--reason", "customer says paid")
        st.wait_until(lambda: status(st, pr) == "PAID" and active_entitlements(st, pr) == 1,
                      timeout=60, what="PAID with access on the partial_refund answer")
        assert st.sql("SELECT partial_refund FROM orders.orders WHERE order_id = %s",
                      (pr,)) == [(True,)]
        assert proof(st, pr, "PAID") == [("recon", "partial_refund")]
        # a receipt, and the partial refund's own notice
        st.wait_until(lambda: len(mails(st, pr, "Pembayaran diterima")) == 1
                      and len(refund_mails(st, pr)) == 1, timeout=60,
                      what="receipt and partial refund notice")
        assert rupiah(10000) in refund_mails(st, pr)[0], refund_mails(st, pr)

        # ---- evidence: paid, refunded, reversed -----------------------------
        paid = create_order(st)
        pay(st, paid)
        rev = create_order(st)
        pay(st, rev)
        assert st.fake("POST", f"/_fake/orders/{rev}/reverse", {}).status in (200, 202)
        st.wait_until(lambda: status(st, rev) == "REFUNDED", timeout=60, what="reversed")
        prove(st, ctl, paid)
        prove(st, ctl, rev, "deny")

        # a forged body for the paid order: refused, kept, in the bundle
        forged = {"order_id": paid, "status_code": "200", "gross_amount": "1.00",
                  "transaction_status": "settlement", "signature_key": "0" * 128,
                  "customer_details": {"email": CUSTOMER["email"]}}
        st.fake("POST", "/_fake/notify_raw", {"body": forged, "sign": False})
        st.wait_until(lambda: st.sql("SELECT count(*) FROM ingest.quarantine WHERE"
                                     " order_id = %s", (paid,))[0][0] == 1,
                      what="forged body quarantined")
        p_paid = bundle(ctl, paid, d, role="support")
        pf = members(p_paid)
        refused = [n for n in pf if n.startswith("ingest/refused/")]
        assert len(refused) == 1 and b"[redacted]" in pf[refused[0]] and \
            b"0000000000" in pf[refused[0]], pf.get(refused[0] if refused else "")
        assert b'"signature":\t"invalid"' in pf["ingest/notifications.json"], \
            pf["ingest/notifications.json"]
        p_ref = bundle(ctl, a, d)
        p_rev = bundle(ctl, rev, d)
        for p, oid in ((p_paid, paid), (p_ref, a), (p_rev, rev)):
            files = members(p)
            names = set(files)
            assert {"MANIFEST", "MANIFEST.sig", "summary.md", "bundle.json",
                    "order/order.json", "order/transitions.json",
                    "order/evidence.json", "order/entitlement_history.json",
                    "ingest/notifications.json",
                    "reconciler/status_checks.json", "reconciler/refunds.json",
                    "reconciler/audit.json",
                    "notifier/messages.json", "kasirctl/audit.json"} <= names, names
            assert any(n.startswith("ingest/notification/") for n in names), names
            assert any(n.startswith("reconciler/status-check/") for n in names), names
            summary = files["summary.md"].decode()
            assert "Ringkasan" in summary and "Summary" in summary and oid in summary
            blob = b"".join(files.values())
            assert CUSTOMER["email"].encode() not in blob, f"{p}: e-mail not redacted"
            assert CUSTOMER["phone"].encode() not in blob, f"{p}: phone not redacted"
        ref_files = members(p_ref)
        assert b"refund_key" in ref_files["reconciler/refunds.json"]
        assert ref_files["reconciler/audit.json"].count(b'"refund.order"') >= 6
        assert inc.encode() in ref_files["kasirctl/incidents.json"] and \
            inc.encode() in ref_files["summary.md"], ref_files["kasirctl/incidents.json"]
        assert b'"REFUNDED"' in ref_files["order/transitions.json"]
        assert b'"revoke' in ref_files["order/entitlement_history.json"], \
            ref_files["order/entitlement_history.json"]
        assert b"**REFUNDED**\n" in ref_files["summary.md"]
        assert b"uncertain (-) accepted (200)" in ref_files["summary.md"], ref_files["summary.md"]
        assert st.sql("SELECT count(*) FROM ops.audit WHERE command = 'evidence'"
                      " AND target = %s AND role = 'support'", (paid,))[0][0] == 1
        p_pers = bundle(ctl, paid, d, "--include-personal")
        assert CUSTOMER["email"].encode() in b"".join(members(p_pers).values())
        n = check_tampering(ctl, p_ref, d)
        print(f"{n} single-byte changes refused", flush=True)
        rc, out, err = ctl.run("evidence", paid, "--output", p_paid)
        assert rc == 1 and "exists" in err, err
    print("kasirctl evidence + refund test passed")


if __name__ == "__main__":
    main()
