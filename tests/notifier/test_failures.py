"""Provider failures: SMTP refusing connections for a while -> the receipt
arrives after it comes back (short backoff); WhatsApp 4xx -> dead after one
attempt, requeue after the fix delivers it exactly once; a WhatsApp timeout
after the request went out is recorded uncertain and never sent again until
an operator's audited decision (jobs.decide: resend exactly once more, or
close it as delivered); a receipt resend is refused (and audited) for an
unpaid order."""
import time

from nstack import Stack, wait_for, pay, mail_for, wa_for, snapshot

RECEIPT_MAIL = "Pembayaran diterima"
RECEIPT_WA = "sudah kami terima"


def receipts_mail(s, oid):
    return [m for m in mail_for(s, oid) if RECEIPT_MAIL in str(m["Subject"])]


def receipts_wa(s, oid):
    return [w for w in wa_for(s, oid) if RECEIPT_WA in w["text"]]


def job(s, oid, channel, kind="receipt"):
    rows = s.sql("SELECT state, attempts, last_error, uncertain FROM notify.job"
                 " WHERE order_id=%s AND kind=%s AND channel=%s ORDER BY variant", (oid, kind, channel))
    return rows


def main():
    s = Stack({"NOTIFY_RETRY_SCHEDULE": "1s,2s,2s,2s,2s,2s", "NOTIFY_POLL": "200ms",
               "NOTIFY_JITTER": "0", "NOTIFY_WA_TIMEOUT": "1s", "NOTIFY_SMTP_TIMEOUT": "2s",
               "NOTIFY_LEASE": "10s", "NOTIFY_REMIND_AFTER": "", "NOTIFY_REMIND_BEFORE": ""},
              "failures")
    try:
        s.start_notifier()

        # ---- SMTP down for a while
        s.smtp.refuse()
        a = "ORD-SMTP-DOWN"
        pay(s, a)
        wait_for(lambda: (job(s, a, "email") or [[None, 0]])[0][1] >= 2, 30,
                 "two failed email attempts")
        st = job(s, a, "email")[0]
        assert st[0] == "retry", st
        assert "connect" in (st[2] or "").lower() or "smtp" in (st[2] or "").lower(), st
        assert receipts_mail(s, a) == []
        s.smtp.accept()
        wait_for(lambda: job(s, a, "email")[0][0] == "sent", 30, "email sent after SMTP is back")
        assert len(receipts_mail(s, a)) == 1
        att = s.sql("SELECT result FROM notify.attempt a JOIN notify.job j ON j.id=a.job_id"
                    " WHERE j.order_id=%s AND j.channel='email' AND j.kind='receipt'"
                    " ORDER BY a.id", (a,))
        assert [r[0] for r in att][-1] == "sent" and all(r[0] == "transient" for r in att[:-1]), att

        # ---- SMTP 550 (invalid recipient): permanent, dead at once
        s.smtp.mode = "5xx"
        e = "ORD-SMTP-550"
        pay(s, e)
        wait_for(lambda: (job(s, e, "email") or [[None]])[0][0] == "dead", 30, "email dead")
        st = job(s, e, "email")[0]
        assert st[1] == 1 and "550" in st[2], st
        # ---- SMTP 451 on DATA: transient, retried, then delivered
        s.smtp.mode = "4xx"
        f = "ORD-SMTP-451"
        pay(s, f)
        wait_for(lambda: (job(s, f, "email") or [[None, 0]])[0][1] >= 1 and
                 job(s, f, "email")[0][0] == "retry", 30, "email retry after 451")
        assert "451" in job(s, f, "email")[0][2], job(s, f, "email")
        s.smtp.mode = "normal"
        wait_for(lambda: job(s, f, "email")[0][0] == "sent", 30, "email sent after 451")
        assert len(receipts_mail(s, f)) == 1

        # ---- WhatsApp 4xx: dead at once, requeue delivers once
        s.wa.mode = "4xx"
        b = "ORD-WA-4XX"
        pay(s, b)
        wait_for(lambda: (job(s, b, "whatsapp") or [[None]])[0][0] == "dead", 30, "whatsapp dead")
        st = job(s, b, "whatsapp")[0]
        assert st[1] == 1, "dead after %d attempts, want 1" % st[1]
        assert "400" in st[2] and "131026" in st[2], st
        assert receipts_wa(s, b) == []
        facts = s.admin("doctor.facts")["result"]
        assert facts["dead_jobs"] >= 1, facts
        s.wa.mode = "normal"
        r = s.admin("jobs.requeue", {"dead": True, "order_id": b, "channel": "whatsapp"},
                    reason="recipient allow-listed", incident="INC-7")
        # (the order's instructions job may be dead too: it is requeued and
        # then cancelled by the send-time check, the order being PAID)
        assert r["ok"] and r["result"]["requeued"] >= 1, r
        wait_for(lambda: job(s, b, "whatsapp")[0][0] == "sent", 30, "whatsapp sent after requeue")
        time.sleep(1)
        assert len(receipts_wa(s, b)) == 1, receipts_wa(s, b)
        aud = s.sql("SELECT actor, role, reason, incident, result FROM notify.audit"
                    " WHERE command='jobs.requeue'")
        assert aud and aud[-1][2] == "recipient allow-listed" and aud[-1][3] == "INC-7" \
            and aud[-1][4] == "ok", aud
        # a changing command without a reason is refused and audited
        r = s.admin("jobs.requeue", {"dead": True})
        assert not r["ok"] and r["error"]["code"] == "reason_required", r
        assert s.sql("SELECT count(*) FROM notify.audit WHERE command='jobs.requeue'"
                     " AND result='refused'")[0][0] == 1

        # ---- WhatsApp timeout after the request went out: uncertain, and
        # never sent again until an operator decides (issue 12)
        s.wa.mode = "timeout"
        s.wa.delay = 2.5
        c = "ORD-WA-TIMEOUT"
        pay(s, c)
        wait_for(lambda: (job(s, c, "whatsapp") or [[None]])[0][0] == "uncertain", 30,
                 "the WhatsApp receipt recorded uncertain")
        s.wa.mode = "normal"
        assert len(receipts_wa(s, c)) == 1, receipts_wa(s, c)  # it did arrive
        jid = s.sql("SELECT id FROM notify.job WHERE order_id=%s AND kind='receipt'"
                    " AND channel='whatsapp'", (c,))[0][0]
        # Proof it is not claimable: workers take the oldest due job first,
        # and the uncertain job's due_at is older than a receipt queued now;
        # once that later receipt is sent, the uncertain one was passed over.
        d = "ORD-AFTER-UNCERTAIN"
        pay(s, d)
        wait_for(lambda: [r[0] for r in job(s, d, "whatsapp")] == ["sent"], 30,
                 "a later receipt sent")
        assert job(s, c, "whatsapp")[0][0] == "uncertain", job(s, c, "whatsapp")
        # a bulk requeue of waiting jobs never touches it
        r = s.admin("jobs.requeue", {"dead": False}, reason="provider back")
        assert r["ok"] and jid not in r["result"]["job_ids"], r
        assert job(s, c, "whatsapp")[0][0] == "uncertain"
        # doctor's facts list it with its id
        # (an instructions WhatsApp of the same order may be uncertain too)
        facts = s.admin("doctor.facts")["result"]
        assert jid in [u["job_id"] for u in facts["uncertain"]], facts
        # the operator's decision: refused without a reason (audited), refused
        # for a job that is not uncertain, then resend exactly once more
        r = s.admin("jobs.decide", {"job_id": jid, "decision": "resend"})
        assert not r["ok"] and r["error"]["code"] == "reason_required", r
        sent_a = s.sql("SELECT id FROM notify.job WHERE order_id=%s AND kind='receipt'"
                       " AND channel='whatsapp'", (a,))[0][0]
        r = s.admin("jobs.decide", {"job_id": sent_a, "decision": "resend"}, reason="x")
        assert not r["ok"] and r["error"]["code"] == "not_uncertain", r
        assert len(receipts_wa(s, c)) == 1, receipts_wa(s, c)
        r = s.admin("jobs.decide", {"job_id": jid, "decision": "resend"},
                    reason="customer says no WhatsApp arrived", incident="INC-12")
        assert r["ok"] and r["result"]["state"] == "queued", r
        wait_for(lambda: job(s, c, "whatsapp")[0][0] == "sent", 30, "sent after the decision")
        assert len(receipts_wa(s, c)) == 2, receipts_wa(s, c)
        r = s.admin("jobs.decide", {"job_id": jid, "decision": "resend"}, reason="again")
        assert not r["ok"] and r["error"]["code"] == "not_uncertain", r
        aud = s.sql("SELECT result, error, reason, incident, before IS NOT NULL,"
                    " after->>'decision' FROM notify.audit WHERE command='jobs.decide'"
                    " ORDER BY id")
        assert aud == [("refused", "a changing command needs a reason", None, None, False, None),
                       ("refused", "not_uncertain", "x", None, True, None),
                       ("ok", None, "customer says no WhatsApp arrived", "INC-12", True,
                        "resend"),
                       ("refused", "not_uncertain", "again", None, True, None)], aud
        # the other decision: the customer confirms it arrived -> closed as sent
        s.wa.mode = "timeout"
        e = "ORD-WA-DELIVERED"
        pay(s, e)
        wait_for(lambda: (job(s, e, "whatsapp") or [[None]])[0][0] == "uncertain", 30,
                 "second uncertain receipt")
        s.wa.mode = "normal"
        jid_e = s.sql("SELECT id FROM notify.job WHERE order_id=%s AND kind='receipt'"
                      " AND channel='whatsapp'", (e,))[0][0]
        r = s.admin("jobs.decide", {"job_id": jid_e, "decision": "delivered"},
                    reason="customer confirmed the WhatsApp")
        assert r["ok"] and r["result"]["state"] == "sent", r
        assert job(s, e, "whatsapp")[0][0] == "sent" and len(receipts_wa(s, e)) == 1
        facts = s.admin("doctor.facts")["result"]
        assert not [u for u in facts["uncertain"] if u["kind"] == "receipt"], facts

        # ---- receipt resend: refused for an unpaid order, works for a paid one
        u = "ORD-RESEND-UNPAID"
        s.publish("order.created", snapshot(u, "PENDING"))
        s.publish("order.payment_link", snapshot(u, "PENDING"))
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.orders WHERE order_id=%s", (u,))[0][0] == 1,
                 20, "order recorded")
        r = s.admin("receipt.resend", {"order_id": u}, reason="customer asked")
        assert not r["ok"] and r["error"]["code"] == "order_not_paid", r
        aud = s.sql("SELECT result, error FROM notify.audit WHERE command='receipt.resend'")
        assert aud == [("refused", "order_not_paid")], aud
        r = s.admin("receipt.resend", {"order_id": a}, reason="customer lost the email")
        assert r["ok"] and len(r["result"]["jobs"]) == 2, r
        wait_for(lambda: len(receipts_mail(s, a)) == 2, 30, "resent receipt email")
        wait_for(lambda: len(receipts_wa(s, a)) == 2, 30, "resent receipt WhatsApp")
        ids = {m["Message-ID"] for m in receipts_mail(s, a)}
        assert len(ids) == 2, ids  # a resend is a new job, a new Message-ID
        print("ok")
    finally:
        s.close()


if __name__ == "__main__":
    main()
