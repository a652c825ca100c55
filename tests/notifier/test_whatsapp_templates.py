"""WhatsApp is sent only as approved templates, and the Cloud API's
refusals are permanent failures with a reason an operator can act on:

- every message the fake WhatsApp recorded is a template message (the fake
  refuses free text outside the customer-service window with 131047);
- a template not registered with Meta (132001): the job is dead after one
  attempt, last_error names the code, the template and what to do; once
  registered, `jobs.requeue` delivers it;
- 131047 (re-engagement) is permanent with its reason; 130429 (throughput)
  is retried."""
import json
import os

from nstack import SRC, Stack, wait_for, pay, wa_for, snapshot

RECEIPT_WA = "sudah kami terima"


def job(s, oid, kind="receipt"):
    return s.sql("SELECT state, attempts, last_error FROM notify.job"
                 " WHERE order_id=%s AND kind=%s AND channel='whatsapp'", (oid, kind))


def registered():
    with open(os.path.join(SRC, "deploy", "whatsapp", "templates.json")) as f:
        return json.load(f)


def main():
    s = Stack({"NOTIFY_RETRY_SCHEDULE": "1s,2s,2s", "NOTIFY_POLL": "200ms",
               "NOTIFY_JITTER": "0"}, "wa-templates")
    try:
        s.start_notifier()
        tpl = registered()

        # ---- the receipt template deleted at Meta (or never approved)
        gone = dict(tpl, templates=[t for t in tpl["templates"] if t["kind"] != "receipt"])
        assert s.wa._ctl("POST", "/_fake/templates", gone) is not None
        a = "ORD-WA-132001"
        pay(s, a)
        wait_for(lambda: (job(s, a) or [[None]])[0][0] == "dead", 30, "receipt WhatsApp dead")
        state, attempts, err = job(s, a)[0]
        assert attempts == 1, "dead after %d attempts, want 1 (not retried)" % attempts
        for want in ("132001", "not registered with Meta", "kasir_bukti_pembayaran/id",
                     "docs/whatsapp.md"):
            assert want in err, "last_error lacks %r: %s" % (want, err)
        res = s.sql("SELECT a.result, a.error FROM notify.attempt a JOIN notify.job j"
                    " ON j.id = a.job_id WHERE j.order_id=%s AND j.channel='whatsapp'"
                    " AND j.kind='receipt'", (a,))
        assert res and res[-1][0] == "permanent" and "132001" in res[-1][1], res
        # the other channel and kinds are unaffected
        wait_for(lambda: s.sql("SELECT state FROM notify.job WHERE order_id=%s AND"
                               " kind='receipt' AND channel='email'", (a,)) == [("sent",)],
                 30, "receipt email sent")

        # ---- registered again: requeue delivers it, with its parameters
        assert s.wa._ctl("POST", "/_fake/templates", tpl) is not None
        r = s.admin("jobs.requeue", {"dead": True, "order_id": a, "channel": "whatsapp"},
                    reason="template approved by Meta", incident="INC-9")
        assert r["ok"] and r["result"]["requeued"] >= 1, r
        wait_for(lambda: job(s, a)[0][0] == "sent", 30, "receipt WhatsApp sent after requeue")
        got = [w for w in wa_for(s, a) if RECEIPT_WA in w["text"]]
        assert len(got) == 1, got
        assert got[0]["text"].startswith("Halo Siti Rahayu, pembayaran Rp150.000 untuk "), got[0]

        # ---- 131047: permanent, and says why
        s.wa._ctl("POST", "/_fake/mode", {"mode": "error", "code": 131047})
        b = "ORD-WA-131047"
        pay(s, b)
        wait_for(lambda: (job(s, b) or [[None]])[0][0] == "dead", 30, "131047 dead")
        state, attempts, err = job(s, b)[0]
        assert attempts == 1, attempts
        for want in ("131047", "24-hour customer-service window", "Re-engagement message"):
            assert want in err, "last_error lacks %r: %s" % (want, err)

        # ---- 130429 (throughput): retried, then delivered
        s.wa._ctl("POST", "/_fake/mode", {"mode": "error", "code": 130429})
        c = "ORD-WA-130429"
        pay(s, c)
        wait_for(lambda: (job(s, c) or [[None]])[0][0] == "retry", 30, "130429 retried")
        assert "130429" in job(s, c)[0][2], job(s, c)
        s.wa.mode = "normal"
        wait_for(lambda: job(s, c)[0][0] == "sent", 30, "sent after the throttle")

        # ---- an unpaid order: the instructions template with the Snap link
        u = "ORD-WA-UNPAID"
        s.publish("order.created", snapshot(u, "PENDING"))
        s.publish("order.payment_link", snapshot(u, "PENDING"))
        wait_for(lambda: job(s, u, "instructions") == [("sent", 1, None)], 30,
                 "instructions WhatsApp sent")
        ins = wa_for(s, u)[0]
        params = [p["text"] for p in ins["request"]["template"]["components"][0]["parameters"]]
        assert ins["request"]["template"]["name"] == "kasir_instruksi_pembayaran", ins
        assert params[0] == "Siti Rahayu" and params[5] == u and "redirection/" + u in params[4], params

        # ---- never free text: every recorded message is a template, in "id"
        msgs = s.wa.messages()
        assert msgs, "no WhatsApp message recorded"
        for m in msgs:
            req = m["request"]
            assert req["type"] == "template" and "text" not in req, req
            assert req["template"]["language"] == {"code": "id"}, req
        names = {m["request"]["template"]["name"] for m in msgs}
        assert {"kasir_instruksi_pembayaran", "kasir_bukti_pembayaran"} <= names, names
        print("ok")
    finally:
        s.close()


if __name__ == "__main__":
    main()
