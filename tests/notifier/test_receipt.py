"""A paid order produces exactly one receipt email and one WhatsApp
message with the right name, course and amount; an unpaid order never gets
a receipt, even with a receipt job forged into notify.job by SQL.  A
partial refund (order.refunded, partial) gets its own notice (variant 1)
naming the refunded amount, and none when the amount is unknown."""
import json
import os
import time
import urllib.request

import nstack
from nstack import Stack, wait_for, pay, mail_for, wa_for, snapshot


def main():
    s = Stack({"NOTIFY_RETRY_SCHEDULE": "1s,1s,2s", "NOTIFY_POLL": "200ms"}, "receipt")
    try:
        s.start_notifier()
        oid = "ORD-RCPT-1"
        pay(s, oid, name="Siti Rahayu", course="Sinematografi Dasar", amount=150000)

        def receipt_done():
            rows = s.sql("SELECT state FROM notify.job WHERE order_id=%s AND kind='receipt'", (oid,))
            return len(rows) == 2 and all(r[0] == "sent" for r in rows)
        wait_for(receipt_done, 30, "both receipt jobs sent")

        mails = [m for m in mail_for(s, oid) if "Pembayaran diterima" in str(m["Subject"])]
        assert len(mails) == 1, "want exactly one receipt email, got %d" % len(mails)
        m = mails[0]
        assert m["To"] == "<siti@example.com>" or "siti@example.com" in str(m["To"]), m["To"]
        assert str(m["Subject"]) == "Pembayaran diterima: Sinematografi Dasar (ORD-RCPT-1)", str(m["Subject"])
        assert m["Message-ID"].startswith("<job-") and m["Message-ID"].endswith("@kasir>"), m["Message-ID"]
        body = m.get_content()
        for want in ("Siti Rahayu", "Sinematografi Dasar", "Rp150.000", "ORD-RCPT-1",
                     "23 November 2027"):
            assert want in body, "receipt email lacks %r:\n%s" % (want, body)
        # the raw header is RFC 2047 encoded
        for f in os.listdir(s.smtp.maildir):
            raw = open(os.path.join(s.smtp.maildir, f), "rb").read()
            assert b"\r\nSubject: =?UTF-8?B?" in raw, raw[:400]
            assert b"\r\nContent-Type: text/plain; charset=UTF-8\r\n" in raw

        was = [w for w in wa_for(s, oid) if "sudah kami terima" in w["text"]]
        assert len(was) == 1, "want exactly one receipt WhatsApp, got %d" % len(was)
        req = was[0]["request"]
        # an approved template (the Cloud API refuses free text outside the
        # 24-hour window), its parameters in the registered order
        assert req["messaging_product"] == "whatsapp" and req["type"] == "template", req
        assert req["template"]["name"] == "kasir_bukti_pembayaran", req["template"]
        assert req["template"]["language"] == {"code": "id"}, req["template"]
        params = [p["text"] for p in req["template"]["components"][0]["parameters"]]
        assert params[:4] == ["Siti Rahayu", "Rp150.000", "Sinematografi Dasar", oid], params
        assert params[4].startswith("23 November 2027"), params
        assert req["to"] == "6281234567890", req["to"]
        for want in ("Siti Rahayu", "Sinematografi Dasar", "Rp150.000"):
            assert want in was[0]["text"], was[0]["text"]
        # the provider's id is kept
        wamid = s.sql("SELECT provider_id FROM notify.job WHERE order_id=%s AND kind='receipt'"
                      " AND channel='whatsapp'", (oid,))[0][0]
        assert wamid == was[0]["message_id"], (wamid, was[0]["message_id"])

        # ---- refunded before it was ever paid: kasir-order applies a full
        # refund seen before its settlement as PENDING -> REFUNDED and emits
        # order.refunded without order.paid (docs/state-machine.md).  The
        # customer gets the refund notice, never a payment receipt.
        rf = "ORD-REFUND-FIRST"
        s.publish("order.created", snapshot(rf, "PENDING"))
        s.publish("order.payment_link", snapshot(rf, "PENDING"))
        refunded = snapshot(rf, "REFUNDED")
        refunded.update(evidence={"source": "ingest", "ref": 2}, partial=False)
        s.publish("order.refunded", refunded)
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE order_id=%s AND"
                               " kind='refund' AND state='sent'", (rf,))[0][0] == 2,
                 30, "refund notices sent on both channels")
        kinds = s.sql("SELECT kind, state FROM notify.job WHERE order_id=%s", (rf,))
        assert not [k for k in kinds if k[0] == "receipt"], kinds
        assert not [k for k in kinds if k[0] == "reminder" and k[1] != "cancelled"], kinds
        subjects = [str(m["Subject"]) for m in mail_for(s, rf)]
        assert "Pengembalian dana pesanan %s" % rf in subjects, subjects
        assert not [x for x in subjects if "Pembayaran diterima" in x], subjects
        assert not [w for w in wa_for(s, rf) if "sudah kami terima" in w["text"]]

        # ---- partial refunds of paid orders: the one without an amount
        # first (the stream is applied in order, so once the second has its
        # jobs the first was applied too)
        nr, pr = "ORD-PARTIAL-NOAMOUNT", "ORD-PARTIAL-1"
        for o in (nr, pr):
            pay(s, o)
        for o, extra in ((nr, {}), (pr, {"refund_amount": 40000})):
            ev = snapshot(o, "PAID")
            ev.update(evidence={"source": "recon", "ref": 3}, partial=True, **extra)
            s.publish("order.refunded", ev)
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE order_id=%s AND"
                               " kind='refund' AND variant=1 AND state='sent'", (pr,))[0][0] == 2,
                 30, "partial refund notices sent on both channels")
        texts = [m.get_content() for m in mail_for(s, pr)
                 if "Pengembalian dana" in str(m["Subject"])]
        texts += [w["text"] for w in wa_for(s, pr) if "dikembalikan" in w["text"]]
        assert len(texts) == 2 and all("Rp40.000" in t and "Rp150.000" not in t
                                       for t in texts), texts
        assert s.sql("SELECT count(*) FROM notify.job WHERE order_id=%s AND kind='refund'",
                     (nr,)) == [(0,)]
        assert "partial refund without refund_amount" in s.log_text()

        # ---- an unpaid order: instructions yes, receipt never
        u = "ORD-UNPAID-1"
        s.publish("order.created", snapshot(u, "PENDING"))
        s.publish("order.payment_link", snapshot(u, "PENDING"))
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE order_id=%s AND"
                               " kind='instructions' AND state='sent'", (u,))[0][0] == 2,
                 30, "instructions sent")
        # forge receipt jobs as the service's own role would allow
        for ch, to in (("email", "siti@example.com"), ("whatsapp", "6281234567890")):
            s.sql("INSERT INTO notify.job (order_id, kind, channel, variant, recipient,"
                  " max_attempts, payload, origin) VALUES (%s, 'receipt', %s, 7, %s, 3,"
                  " %s::jsonb, 'forged')",
                  (u, ch, to, json.dumps(snapshot(u, "PAID"))),
                  user="kasir_notifier")
        # and one for an order the notifier has never heard of
        s.sql("INSERT INTO notify.job (order_id, kind, channel, recipient, max_attempts,"
              " payload, origin) VALUES ('ORD-GHOST', 'receipt', 'email', 'x@example.com',"
              " 3, '{}'::jsonb, 'forged')", user="kasir_notifier")
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE origin='forged'"
                               " AND state='cancelled'")[0][0] == 3, 30, "forged jobs cancelled")
        time.sleep(1)
        assert not [m for m in mail_for(s, u) if "Pembayaran diterima" in str(m["Subject"])], \
            "a receipt email was sent for an unpaid order"
        assert not [w for w in wa_for(s, u) if "sudah kami terima" in w["text"]], \
            "a receipt WhatsApp was sent for an unpaid order"
        assert not [m for m in s.smtp.messages() if "ORD-GHOST" in str(m["Subject"])]
        blocked = s.sql("SELECT count(*) FROM notify.attempt a JOIN notify.job j ON j.id=a.job_id"
                        " WHERE j.origin='forged' AND a.result='blocked'")[0][0]
        assert blocked == 3, blocked
        # doctor: no receipt ever sent for a non-PAID order
        facts = s.admin("doctor.facts")
        assert facts["ok"], facts
        assert facts["result"]["receipts_sent_unpaid"] == 0, facts
        # jobs.list shows the jobs with their attempts
        jl = s.admin("jobs.list", {"order_id": u})
        # 2 instructions, 4 reminders (1 h after creation, 3 h before
        # expiry, per channel) and the 2 forged receipts
        assert jl["ok"] and len(jl["result"]["jobs"]) == 8, jl
        forged = [j for j in jl["result"]["jobs"] if j["origin"] == "forged"]
        assert all(j["state"] == "cancelled" and j["attempts_log"][0]["result"] == "blocked"
                   for j in forged), forged
        assert jl["result"]["order"]["status"] == "PENDING", jl
        # the attempt log is append-only, even for the service role
        try:
            s.sql("UPDATE notify.attempt SET result='sent'", user="kasir_notifier")
            raise AssertionError("UPDATE of notify.attempt was allowed")
        except nstack.psycopg2.Error:
            pass
        # metrics count the guard
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % s.port("NOTIFIER_ADMIN"),
                                         timeout=10).read().decode()
        assert "kasir_notifier_receipt_guard_blocked_total 3" in metrics, \
            [l for l in metrics.splitlines() if "guard" in l]
        assert 'kasir_notifier_jobs{state="sent",channel="email"}' in metrics
        # replaying the same events (duplicates) creates nothing new
        n_jobs = s.sql("SELECT count(*) FROM notify.job")[0][0]
        s.stop_notifier()
        s.sql("UPDATE notify.stream_cursor SET seq = 0", user="postgres")
        s.start_notifier()
        # the replay is over once the cursor is back at the producer's head
        head = s.sql("SELECT max(seq) FROM testorders.stream_head")[0][0]
        wait_for(lambda: s.sql("SELECT max(seq) FROM notify.stream_cursor")[0][0] == head,
                 30, "the replay from seq 0 caught up with the head (%s)" % head)
        assert s.sql("SELECT count(*) FROM notify.job")[0][0] == n_jobs
        assert len([m for m in mail_for(s, oid) if "Pembayaran diterima" in str(m["Subject"])]) == 1
        print("ok")
    finally:
        s.close()


if __name__ == "__main__":
    main()
