"""Reminders: sent at their offset while the order is pending, cancelled
when it is paid; pausing stops reminders but not receipts; resume brings
them back.  The pause survives a restart (persisted)."""
import time

from nstack import Stack, wait_for, pay, snapshot, paid, granted, mail_for, wa_for

REMINDER = "Pengingat"


def reminders(s, oid):
    return [m for m in mail_for(s, oid) if REMINDER in str(m["Subject"])]


def main():
    s = Stack({"NOTIFY_RETRY_SCHEDULE": "1s,1s", "NOTIFY_POLL": "200ms",
               "NOTIFY_REMIND_AFTER": "3s", "NOTIFY_REMIND_BEFORE": "1h"}, "reminders")
    try:
        s.start_notifier()
        a, b = "ORD-REM-A", "ORD-REM-B"
        s.publish("order.created", snapshot(a, "PENDING"))
        s.publish("order.payment_link", snapshot(a, "PENDING"))
        s.publish("order.created", snapshot(b, "PENDING"))
        s.publish("order.payment_link", snapshot(b, "PENDING"))
        # both get a reminder job 3 s after creation (and one 1 h before
        # expiry); b is paid before it is due
        wait_for(lambda: s.sql("SELECT count(*) FROM notify.job WHERE kind='reminder'")[0][0] == 8,
                 20, "reminder jobs")
        s.publish("order.paid", paid(b))
        s.publish("access.granted", granted(b))
        wait_for(lambda: len(reminders(s, a)) == 1, 20, "reminder of the pending order")
        wait_for(lambda: len([w for w in wa_for(s, a)
                              if "belum dibayar" in w["text"]]) == 1,
                 20, "WhatsApp reminder of the pending order")
        time.sleep(2)
        assert reminders(s, b) == [], "a paid order got a reminder"
        states = s.sql("SELECT DISTINCT state FROM notify.job WHERE order_id=%s AND kind='reminder'", (b,))
        assert states == [("cancelled",)], states

        # ---- pause: reminders stop, receipts flow
        r = s.admin("reminders.pause", reason="provider complaint", incident="INC-9")
        assert r["ok"] and r["result"]["reminders_paused"] is True, r
        c, d = "ORD-REM-C", "ORD-REM-D"
        s.publish("order.created", snapshot(c, "PENDING"))
        s.publish("order.payment_link", snapshot(c, "PENDING"))
        pay(s, d)
        wait_for(lambda: len([m for m in mail_for(s, d) if "Pembayaran diterima" in str(m["Subject"])]) == 1,
                 30, "receipt while paused")
        time.sleep(5)  # c's reminder is due after 3 s
        assert reminders(s, c) == [], "reminder sent while paused"
        # the pause is persisted: it survives a restart
        s.stop_notifier()
        s.start_notifier()
        st = s.admin("status")["result"]
        assert st["reminders_paused"] is True, st
        time.sleep(2)
        assert reminders(s, c) == []
        r = s.admin("reminders.resume", reason="resolved")
        assert r["ok"] and r["result"]["reminders_paused"] is False, r
        wait_for(lambda: len(reminders(s, c)) == 1, 20, "reminder after resume")
        aud = s.sql("SELECT command, before->>'reminders_paused', after->>'reminders_paused',"
                    " incident, result FROM notify.audit ORDER BY id")
        assert aud == [("reminders.pause", "false", "true", "INC-9", "ok"),
                       ("reminders.resume", "true", "false", None, "ok")], aud
        print("ok")
    finally:
        s.close()


if __name__ == "__main__":
    main()
